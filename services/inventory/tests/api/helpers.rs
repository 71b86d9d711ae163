//! Starting an inventory service for a test and reading the truth behind it.

#![allow(dead_code)]

use inventory_service::repository::{InventoryDb, StockAudit};
use inventory_service::{Application, Settings};
use shop_common::domain::{Sku, Strategy};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_test_support::{
    init_test_logging, test_settings, unique_etcd_prefix, RunningServer, TestDatabase,
};
use sqlx::PgPool;
use tonic::transport::Channel;

/// A running inventory service with its own database and etcd prefix.
/// Field order matters: the server stops before its database is dropped.
pub struct TestInventory {
    pub server: RunningServer,
    pub client: InventoryServiceClient<Channel>,
    /// A direct pool on the service's database: the truth, not the API's word.
    pub pool: PgPool,
    pub etcd_prefix: String,
    pub db: TestDatabase,
}

impl TestInventory {
    pub async fn spawn() -> TestInventory {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the service with settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestInventory {
        init_test_logging();
        let db = TestDatabase::create("inventory").await;
        let etcd_prefix = unique_etcd_prefix("inventory");
        let mut settings =
            Settings::with_common(test_settings(ServiceName::Inventory, &db, &etcd_prefix));
        adjust(&mut settings);
        let (server, client) = start(settings).await;
        let pool = db.pool().await;
        TestInventory {
            server,
            client,
            pool,
            etcd_prefix,
            db,
        }
    }

    /// A fresh connection to the service, for clients of other gRPC services on it.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.server.uri())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A second replica of the service: same database, same etcd prefix, its own
    /// process state (its own etcd session). Stop it before `self`.
    pub async fn spawn_replica(&self) -> (RunningServer, InventoryServiceClient<Channel>) {
        let settings = Settings::with_common(test_settings(
            ServiceName::Inventory,
            &self.db,
            &self.etcd_prefix,
        ));
        start(settings).await
    }

    pub fn client(&self) -> InventoryServiceClient<Channel> {
        self.client.clone()
    }

    /// Stocks a SKU (a new one gets the service's default strategy, `mutex`).
    pub async fn set_stock(&self, sku: &str, available: i64) -> pb::Stock {
        self.set_stock_as(sku, available, None).await
    }

    /// Stocks a SKU and sets its strategy (`None`: keep it).
    pub async fn set_stock_as(
        &self,
        sku: &str,
        available: i64,
        strategy: Option<Strategy>,
    ) -> pb::Stock {
        self.client()
            .set_stock(pb::SetStockRequest {
                sku: sku.into(),
                available,
                strategy: strategy.map_or(0, |s| s.to_proto() as i32),
            })
            .await
            .expect("set stock")
            .into_inner()
    }

    pub async fn reserve(
        &self,
        order_id: &str,
        items: &[(&str, i32)],
        strategy: Strategy,
    ) -> Result<pb::ReserveResponse, tonic::Status> {
        self.send_reserve(reserve_request(order_id, items, strategy))
            .await
    }

    /// Sends a Reserve in a task of its own (for a test that holds it at a moment and
    /// acts meanwhile).
    pub fn spawn_reserve(
        &self,
        order_id: &str,
        items: &[(&str, i32)],
        strategy: Strategy,
    ) -> tokio::task::JoinHandle<Result<pb::ReserveResponse, tonic::Status>> {
        let mut client = self.client();
        let request = reserve_request(order_id, items, strategy);
        tokio::spawn(async move { client.reserve(request).await.map(|r| r.into_inner()) })
    }

    /// What GetStock answers about a SKU.
    pub async fn get_stock(&self, sku: &str) -> pb::Stock {
        self.client()
            .get_stock(pb::GetStockRequest { sku: sku.into() })
            .await
            .expect("get stock")
            .into_inner()
    }

    /// Reserve of an order in a sale, for a customer.
    pub async fn reserve_in_sale(
        &self,
        order_id: &str,
        items: &[(&str, i32)],
        strategy: Strategy,
        sale: &str,
        customer: &str,
    ) -> Result<pb::ReserveResponse, tonic::Status> {
        self.send_reserve(pb::ReserveRequest {
            customer_id: customer.into(),
            sale_id: Some(sale.into()),
            ..reserve_request(order_id, items, strategy)
        })
        .await
    }

    /// Sends `request` with its strategy field replaced by `strategy` (e.g. UNSPECIFIED).
    pub async fn send_raw_reserve(
        &self,
        request: pb::ReserveRequest,
        strategy: pb::Strategy,
    ) -> Result<pb::ReserveResponse, tonic::Status> {
        self.send_reserve(pb::ReserveRequest {
            strategy: strategy as i32,
            ..request
        })
        .await
    }

    async fn send_reserve(
        &self,
        request: pb::ReserveRequest,
    ) -> Result<pb::ReserveResponse, tonic::Status> {
        self.client()
            .reserve(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// One SetPrices giving every SKU of `skus` the same unit price.
    pub async fn set_prices(&self, skus: &[&str], price: i64) -> Result<i64, tonic::Status> {
        self.client()
            .set_prices(pb::SetPricesRequest {
                prices: skus
                    .iter()
                    .map(|sku| pb::Price {
                        sku: (*sku).into(),
                        unit_price_minor: price,
                    })
                    .collect(),
            })
            .await
            .map(|r| r.into_inner().catalog_version)
    }

    pub async fn create_sale(&self, sale: &str, per_customer_limit: i32) -> pb::Sale {
        self.client()
            .create_sale(pb::CreateSaleRequest {
                sale_id: sale.into(),
                per_customer_limit,
            })
            .await
            .expect("create sale")
            .into_inner()
    }

    pub async fn open_sale(&self, sale: &str) -> pb::Sale {
        self.client()
            .open_sale(pb::OpenSaleRequest {
                sale_id: sale.into(),
            })
            .await
            .expect("open sale")
            .into_inner()
    }

    /// A direct etcd client: the coordination state itself, not the API's word.
    pub async fn etcd(&self) -> coord::etcd_client::Client {
        shop_test_support::etcd_client().await
    }

    /// The raw value of an etcd key under this service's prefix (`None` if absent).
    pub async fn etcd_value(&self, key: &str) -> Option<String> {
        let key = format!("{}/{key}", self.etcd_prefix);
        let found = self.etcd().await.get(key, None).await.unwrap();
        found
            .kvs()
            .first()
            .map(|kv| kv.value_str().unwrap().to_owned())
    }

    /// Units the stm counter of a SKU says are left (`None`: never seeded).
    pub async fn stm_counter(&self, sku: &str) -> Option<i64> {
        let raw = self.etcd_value(&format!("stock/{sku}")).await?;
        Some(raw.split_once(':').unwrap().1.parse().unwrap())
    }

    /// Units the customer holds in the sale according to the inventory database.
    pub async fn purchased(&self, sale: &str, customer: &str) -> i64 {
        InventoryDb::new(self.pool.clone())
            .purchased(sale, customer)
            .await
            .unwrap()
    }

    pub async fn commit(&self, order_id: &str) -> Result<pb::ReservationResponse, tonic::Status> {
        self.client()
            .commit(pb::CommitRequest {
                order_id: order_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn release(&self, order_id: &str) -> Result<pb::ReservationResponse, tonic::Status> {
        self.client()
            .release(pb::ReleaseRequest {
                order_id: order_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// What the database says about a SKU.
    pub async fn truth(&self, sku: &str) -> Truth {
        truth(&self.pool, sku).await
    }

    pub async fn stop(self) {
        self.server.stop().await.expect("server ran cleanly");
    }
}

/// Builds the service from `settings` and runs it in the test, with a client of it.
async fn start(settings: Settings) -> (RunningServer, InventoryServiceClient<Channel>) {
    let app = Application::build(settings)
        .await
        .expect("build the inventory service");
    let server = RunningServer::spawn(app.local_addr(), |shutdown| app.run_until_stopped(shutdown));
    let client = InventoryServiceClient::connect(server.uri())
        .await
        .expect("connect to the inventory service");
    (server, client)
}

/// A Reserve of `items` outside any sale.
pub fn reserve_request(
    order_id: &str,
    items: &[(&str, i32)],
    strategy: Strategy,
) -> pb::ReserveRequest {
    pb::ReserveRequest {
        order_id: order_id.into(),
        items: lines(items),
        strategy: strategy.to_proto() as i32,
        ..Default::default()
    }
}

pub fn lines(items: &[(&str, i32)]) -> Vec<pb::LineItem> {
    items
        .iter()
        .map(|(sku, quantity)| pb::LineItem {
            sku: (*sku).into(),
            quantity: *quantity,
        })
        .collect()
}

pub fn new_order_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A SKU's counters and reservation rows, from the database.
pub async fn truth(pool: &PgPool, sku: &str) -> Truth {
    let sku = Sku::parse("sku", sku).unwrap();
    Truth(
        InventoryDb::new(pool.clone())
            .audit(&sku)
            .await
            .unwrap()
            .expect("known SKU"),
    )
}

/// [`StockAudit`] with the assertions the tests make.
#[derive(Debug, Clone)]
pub struct Truth(pub StockAudit);

impl std::ops::Deref for Truth {
    type Target = StockAudit;
    fn deref(&self) -> &StockAudit {
        &self.0
    }
}

impl Truth {
    pub fn available(&self) -> i64 {
        self.level.available
    }
    pub fn reserved(&self) -> i64 {
        self.level.reserved
    }
    pub fn sold(&self) -> i64 {
        self.level.sold
    }

    /// Counters agree with the rows, and nothing was created or lost.
    #[track_caller]
    pub fn assert_consistent(&self, initial: i64) {
        if let Err(problems) = self.check(initial) {
            panic!("{problems}");
        }
    }
}

/// The outcome enum of a Reserve response.
pub fn outcome(r: &pb::ReserveResponse) -> pb::ReserveOutcome {
    pb::ReserveOutcome::try_from(r.outcome).expect("known outcome")
}
