//! Starting an inventory service for a test and reading the truth behind it.

#![allow(dead_code)]

use inventory_service::{Application, Settings};
use shop_common::domain::Strategy;
use shop_common::testing::{
    init_test_logging, test_settings, unique_etcd_prefix, RunningServer, TestDatabase,
};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
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
        let app = Application::build(settings)
            .await
            .expect("build the inventory service");
        let server = RunningServer::spawn(app.local_addr(), |shutdown| {
            app.run_until_stopped(shutdown)
        });
        let client = InventoryServiceClient::connect(server.uri())
            .await
            .expect("connect to the inventory service");
        let pool = db.pool().await;
        TestInventory {
            server,
            client,
            pool,
            etcd_prefix,
            db,
        }
    }

    pub fn client(&self) -> InventoryServiceClient<Channel> {
        self.client.clone()
    }

    pub async fn set_stock(&self, sku: &str, available: i64) -> pb::Stock {
        self.client()
            .set_stock(pb::SetStockRequest {
                sku: sku.into(),
                available,
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
        self.client()
            .reserve(pb::ReserveRequest {
                order_id: order_id.into(),
                items: lines(items),
                strategy: strategy.to_proto() as i32,
            })
            .await
            .map(tonic::Response::into_inner)
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

/// A SKU's counters and the reservation lines held against it, from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truth {
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    /// Units on lines of RESERVED reservations.
    pub lines_reserved: i64,
    /// Units on lines of COMMITTED reservations.
    pub lines_committed: i64,
}

impl Truth {
    /// Units promised to buyers (reserved or sold), according to the reservation rows.
    pub fn promised(&self) -> i64 {
        self.lines_reserved + self.lines_committed
    }

    /// Counters agree with the rows and nothing was created or lost.
    #[track_caller]
    pub fn assert_consistent(&self, initial: i64) {
        assert_eq!(self.reserved, self.lines_reserved, "reserved counter vs rows: {self:?}");
        assert_eq!(self.sold, self.lines_committed, "sold counter vs rows: {self:?}");
        assert_eq!(
            self.available + self.reserved + self.sold,
            initial,
            "available + reserved + sold must equal the initial stock: {self:?}"
        );
    }
}

pub async fn truth(pool: &PgPool, sku: &str) -> Truth {
    let (available, reserved, sold): (i64, i64, i64) =
        sqlx::query_as("SELECT available, reserved, sold FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(pool)
            .await
            .expect("stock row");
    let (lines_reserved, lines_committed): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)::bigint,
                COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)::bigint
         FROM reservation_lines l JOIN reservations r USING (order_id)
         WHERE l.sku = $1",
    )
    .bind(sku)
    .fetch_one(pool)
    .await
    .expect("reservation lines");
    Truth {
        available,
        reserved,
        sold,
        lines_reserved,
        lines_committed,
    }
}

/// The outcome enum of a Reserve response.
pub fn outcome(r: &pb::ReserveResponse) -> pb::ReserveOutcome {
    pb::ReserveOutcome::try_from(r.outcome).expect("known outcome")
}
