//! The three services for one test, in-process: inventory, order pointing at it and
//! payment pointing at order, each on port 0 with its own fresh database, all under
//! one etcd prefix, with clients of order and inventory and direct pools on the three
//! databases ([`Services`]). The load-tester suite builds its `Shop` on it, and so do
//! this crate's own suites (`tests/`): the order service against a real inventory,
//! the payment saga, traces and metrics across the three services, OTLP export.
//!
//! Its own crate because it depends on all three services (shop-common cannot: they
//! depend on it). The suites that need more than one service live here rather than
//! in a service's crate, so that no crate dev-depends on a crate that depends on it;
//! a service's own `tests/` test it alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use payment_service::provider::SimulatedProvider;
use shop_common::domain::Strategy;
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_test_support::{
    init_test_logging, test_settings, unique_etcd_prefix, RunningServer, TestDatabase,
};
use sqlx::PgPool;
use tonic::transport::Channel;

/// The settings the three services are built from; [`Services::spawn`] lets a test
/// adjust them first.
pub struct ShopSettings {
    pub inventory: inventory_service::Settings,
    pub order: order_service::Settings,
    /// Payment's, with a 5 ms provider.
    pub payment: payment_service::Settings,
}

/// Field order matters: servers stop, then pools close, before the databases drop.
pub struct Services {
    /// `None` until [`Services::start_payment`].
    pub payment: Option<RunningServer>,
    pub order: RunningServer,
    /// `None` while stopped ([`Services::stop_inventory`]).
    pub inventory: Option<RunningServer>,
    pub orders: OrderServiceClient<Channel>,
    pub stock: InventoryServiceClient<Channel>,
    /// Direct pools: the truth behind the APIs.
    pub order_pool: PgPool,
    pub inventory_pool: PgPool,
    pub payment_pool: PgPool,
    pub etcd_prefix: String,
    /// What [`Services::restart_inventory`] starts again (on the same address).
    pub inventory_settings: inventory_service::Settings,
    /// What [`Services::start_payment`] builds the payment service from.
    pub payment_settings: payment_service::Settings,
    /// The running payment service's simulated provider.
    pub provider: Option<Arc<SimulatedProvider>>,
    /// The running payment service's `/metrics` address, when its settings asked for one.
    pub payment_metrics: Option<SocketAddr>,
    pub payment_db: TestDatabase,
    pub order_db: TestDatabase,
    pub inventory_db: TestDatabase,
}

impl Services {
    /// Starts inventory and order with the settings `adjust`ed; starts payment too
    /// unless `start_payment` is false. `name` goes into the etcd prefix.
    pub async fn spawn(
        name: &str,
        adjust: impl FnOnce(&mut ShopSettings),
        start_payment: bool,
    ) -> Services {
        init_test_logging();
        let etcd_prefix = unique_etcd_prefix(name);
        let inventory_db = TestDatabase::create("inventory").await;
        let order_db = TestDatabase::create("order").await;
        let payment_db = TestDatabase::create("payment").await;
        let settings = |service, db| test_settings(service, db, &etcd_prefix);
        let mut payment =
            payment_service::Settings::with_common(settings(ServiceName::Payment, &payment_db));
        payment.provider.latency = Duration::from_millis(5);
        let mut shop = ShopSettings {
            inventory: inventory_service::Settings::with_common(settings(
                ServiceName::Inventory,
                &inventory_db,
            )),
            order: order_service::Settings::with_common(settings(ServiceName::Order, &order_db)),
            payment,
        };
        adjust(&mut shop);
        let ShopSettings {
            mut inventory,
            mut order,
            mut payment,
        } = shop;

        let inventory_server = start_inventory(inventory.clone()).await;
        // A restart comes back where clients already point.
        inventory.common.grpc_addr = inventory_server.addr();
        order.common.peers.inventory = inventory_server.uri();
        let app = order_service::Application::build(order)
            .await
            .expect("build the order service");
        let order_server = RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s));
        payment.common.peers.order = order_server.uri();

        let mut services = Services {
            payment: None,
            orders: OrderServiceClient::connect(order_server.uri())
                .await
                .expect("connect to the order service"),
            stock: InventoryServiceClient::connect(inventory_server.uri())
                .await
                .expect("connect to the inventory service"),
            order: order_server,
            inventory: Some(inventory_server),
            order_pool: order_db.pool().await,
            inventory_pool: inventory_db.pool().await,
            payment_pool: payment_db.pool().await,
            etcd_prefix,
            inventory_settings: inventory,
            payment_settings: payment,
            provider: None,
            payment_metrics: None,
            payment_db,
            order_db,
            inventory_db,
        };
        if start_payment {
            services.start_payment().await;
        }
        services
    }

    /// Builds and starts the payment service (workers begin taking items).
    pub async fn start_payment(&mut self) {
        let app = payment_service::Application::build(self.payment_settings.clone())
            .await
            .expect("build the payment service");
        self.provider = Some(app.provider());
        self.payment_metrics = app.metrics_addr();
        self.payment = Some(RunningServer::spawn(app.local_addr(), |s| {
            app.run_until_stopped(s)
        }));
    }

    /// The running payment service.
    pub fn payment(&self) -> &RunningServer {
        self.payment.as_ref().expect("payment running")
    }

    /// The running inventory service.
    pub fn inventory(&self) -> &RunningServer {
        self.inventory.as_ref().expect("inventory running")
    }

    /// Stops the inventory service (an outage).
    pub async fn stop_inventory(&mut self) {
        if let Some(inventory) = self.inventory.take() {
            inventory.stop().await.unwrap();
        }
    }

    /// Starts the inventory service again, on the same address and database.
    pub async fn restart_inventory(&mut self) {
        self.inventory = Some(start_inventory(self.inventory_settings.clone()).await);
    }

    /// Sets `sku`'s stock through the inventory service (a new SKU gets the
    /// inventory's `default_strategy`).
    pub async fn set_stock(&self, sku: &str, available: i64) {
        self.set_stock_as(sku, available, None).await;
    }

    /// Sets `sku`'s stock and strategy (`None`: keep it).
    pub async fn set_stock_as(&self, sku: &str, available: i64, strategy: Option<Strategy>) {
        let strategy = strategy.map_or(pb::Strategy::Unspecified, Strategy::to_proto);
        set_stock(&self.stock, sku, available, strategy).await;
    }

    /// Changes `sku`'s strategy, keeping its units.
    pub async fn set_strategy(&self, sku: &str, strategy: Strategy) {
        let available: i64 = sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.inventory_pool)
            .await
            .expect("a stocked SKU");
        self.set_stock_as(sku, available, Some(strategy)).await;
    }

    /// Stops every service that runs, checking each ran cleanly.
    pub async fn stop(mut self) {
        if let Some(payment) = self.payment.take() {
            payment.stop().await.expect("payment service ran cleanly");
        }
        self.order.stop().await.expect("order service ran cleanly");
        if let Some(inventory) = self.inventory.take() {
            inventory
                .stop()
                .await
                .expect("inventory service ran cleanly");
        }
    }
}

async fn start_inventory(settings: inventory_service::Settings) -> RunningServer {
    let app = inventory_service::Application::build(settings)
        .await
        .expect("build the inventory service");
    RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s))
}

/// Sets `sku`'s stock and strategy (UNSPECIFIED: keep it) through the inventory
/// service at the other end of `stock`.
pub async fn set_stock(
    stock: &InventoryServiceClient<Channel>,
    sku: &str,
    available: i64,
    strategy: pb::Strategy,
) {
    stock
        .clone()
        .set_stock(pb::SetStockRequest {
            sku: sku.into(),
            available,
            strategy: strategy as i32,
        })
        .await
        .expect("set stock");
}
