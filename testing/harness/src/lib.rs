//! The three services for one test, in-process: inventory, order pointing at it and
//! payment pointing at order, each on port 0 with its own fresh database, all under
//! one etcd prefix. The load-tester suite builds its `Shop` on it, and so do this
//! crate's own suites (`tests/`): the payment saga, traces and metrics across the
//! three services, OTLP export.
//!
//! Its own crate because it depends on all three services (shop-common cannot: they
//! depend on it). The suites that need the whole shop live here rather than in
//! `payment-service`, so that no crate dev-depends on a crate that depends on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use payment_service::provider::SimulatedProvider;
use shop_common::ServiceName;
use shop_test_support::{
    init_test_logging, test_settings, unique_etcd_prefix, RunningServer, TestDatabase,
};

/// Field order matters: servers stop before their databases are dropped.
pub struct Services {
    /// `None` until [`Services::start_payment`].
    pub payment: Option<RunningServer>,
    pub order: RunningServer,
    pub inventory: RunningServer,
    pub etcd_prefix: String,
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
    /// Starts inventory (settings `adjust_inventory`ed) and order; prepares payment's
    /// settings (a 5 ms provider, then `adjust_payment`) and starts it unless
    /// `start_payment` is false. `name` goes into the etcd prefix.
    pub async fn spawn(
        name: &str,
        adjust_inventory: impl FnOnce(&mut inventory_service::Settings),
        adjust_payment: impl FnOnce(&mut payment_service::Settings),
        start_payment: bool,
    ) -> Services {
        init_test_logging();
        let etcd_prefix = unique_etcd_prefix(name);
        let inventory_db = TestDatabase::create("inventory").await;
        let order_db = TestDatabase::create("order").await;
        let payment_db = TestDatabase::create("payment").await;

        let mut inventory_settings = inventory_service::Settings::with_common(test_settings(
            ServiceName::Inventory,
            &inventory_db,
            &etcd_prefix,
        ));
        adjust_inventory(&mut inventory_settings);
        let app = inventory_service::Application::build(inventory_settings)
            .await
            .expect("inventory");
        let inventory = RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s));

        let mut order_settings = order_service::Settings::with_common(test_settings(
            ServiceName::Order,
            &order_db,
            &etcd_prefix,
        ));
        order_settings.common.peers.inventory = inventory.uri();
        let app = order_service::Application::build(order_settings)
            .await
            .expect("order");
        let order = RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s));

        let mut payment_settings = payment_service::Settings::with_common(test_settings(
            ServiceName::Payment,
            &payment_db,
            &etcd_prefix,
        ));
        payment_settings.common.peers.order = order.uri();
        payment_settings.provider.latency = Duration::from_millis(5);
        adjust_payment(&mut payment_settings);

        let mut services = Services {
            payment: None,
            order,
            inventory,
            etcd_prefix,
            payment_settings,
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
            .expect("payment");
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
}
