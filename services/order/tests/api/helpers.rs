//! A shop for one test: inventory + order services, their databases, clients.

#![allow(dead_code)]

use std::net::SocketAddr;

use inventory_service::repository::{InventoryDb, StockAudit};
use shop_common::domain::{Sku, Strategy};
use shop_common::testing::{
    init_test_logging, test_settings, unique_etcd_prefix, RunningServer, TestDatabase,
};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use sqlx::PgPool;
use tonic::transport::Channel;

/// Field order matters: servers stop before their databases are dropped.
pub struct TestShop {
    pub order: RunningServer,
    pub inventory: Option<RunningServer>,
    pub orders: OrderServiceClient<Channel>,
    pub stock: InventoryServiceClient<Channel>,
    /// Direct pools: the truth behind the APIs.
    pub order_pool: PgPool,
    pub inventory_pool: PgPool,
    /// The etcd prefix both services use (the payment queue is under it).
    pub etcd_prefix: String,
    inventory_addr: SocketAddr,
    inventory_settings: inventory_service::Settings,
    order_db: TestDatabase,
    inventory_db: TestDatabase,
}

impl TestShop {
    /// Where inventory listens (for a second saga, or a proxy in front of it).
    pub fn inventory_addr(&self) -> SocketAddr {
        self.inventory_addr
    }

    pub async fn spawn() -> TestShop {
        Self::spawn_with(|_, _| {}).await
    }

    /// Starts both services, with settings adjusted by `adjust`.
    pub async fn spawn_with(
        adjust: impl FnOnce(&mut inventory_service::Settings, &mut order_service::Settings),
    ) -> TestShop {
        init_test_logging();
        let etcd_prefix = unique_etcd_prefix("order");
        let inventory_db = TestDatabase::create("inventory").await;
        let order_db = TestDatabase::create("order").await;
        let mut inventory_settings = inventory_service::Settings::with_common(test_settings(
            ServiceName::Inventory,
            &inventory_db,
            &etcd_prefix,
        ));
        let mut order_settings = order_service::Settings::with_common(test_settings(
            ServiceName::Order,
            &order_db,
            &etcd_prefix,
        ));
        adjust(&mut inventory_settings, &mut order_settings);

        let (inventory, inventory_addr) = start_inventory(inventory_settings.clone()).await;
        inventory_settings.common.grpc_addr = inventory_addr;
        if order_settings.common.peers.inventory == "http://127.0.0.1:50052" {
            order_settings.common.peers.inventory = inventory.uri();
        }
        let order_app = order_service::Application::build(order_settings)
            .await
            .expect("build the order service");
        let order = RunningServer::spawn(order_app.local_addr(), |shutdown| {
            order_app.run_until_stopped(shutdown)
        });
        TestShop {
            orders: OrderServiceClient::connect(order.uri()).await.unwrap(),
            stock: InventoryServiceClient::connect(inventory.uri())
                .await
                .unwrap(),
            order,
            inventory: Some(inventory),
            order_pool: order_db.pool().await,
            inventory_pool: inventory_db.pool().await,
            etcd_prefix,
            inventory_addr,
            inventory_settings,
            order_db,
            inventory_db,
        }
    }

    /// Stops the inventory service (an outage).
    pub async fn stop_inventory(&mut self) {
        if let Some(inventory) = self.inventory.take() {
            inventory.stop().await.unwrap();
        }
    }

    /// Starts the inventory service again, on the same address and database.
    pub async fn restart_inventory(&mut self) {
        let (inventory, _) = start_inventory(self.inventory_settings.clone()).await;
        self.inventory = Some(inventory);
    }

    pub async fn set_stock(&self, sku: &str, available: i64) {
        self.stock
            .clone()
            .set_stock(pb::SetStockRequest {
                sku: sku.into(),
                available,
            })
            .await
            .expect("set stock");
    }

    pub async fn create(
        &self,
        key: &str,
        items: &[(&str, i32)],
        strategy: Strategy,
    ) -> Result<pb::Order, tonic::Status> {
        self.orders
            .clone()
            .create_order(create_request(key, items, strategy))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn paid(&self, order_id: &str, payment_id: &str) -> Result<pb::Order, tonic::Status> {
        self.payment_result(order_id, true, payment_id, "").await
    }

    pub async fn payment_failed(
        &self,
        order_id: &str,
        reason: &str,
    ) -> Result<pb::Order, tonic::Status> {
        self.payment_result(order_id, false, "", reason).await
    }

    pub async fn payment_result(
        &self,
        order_id: &str,
        ok: bool,
        payment_id: &str,
        reason: &str,
    ) -> Result<pb::Order, tonic::Status> {
        self.orders
            .clone()
            .payment_result(pb::PaymentResultRequest {
                order_id: order_id.into(),
                ok,
                payment_id: payment_id.into(),
                reason: reason.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get(&self, order_id: &str) -> Result<pb::Order, tonic::Status> {
        self.orders
            .clone()
            .get_order(pb::GetOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Rows in the orders table.
    pub async fn order_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.order_pool)
            .await
            .unwrap()
    }

    /// Stock counters and reservation rows of a SKU, from the inventory database.
    pub async fn truth(&self, sku: &str) -> StockAudit {
        let sku = Sku::parse("sku", sku).unwrap();
        InventoryDb::new(self.inventory_pool.clone())
            .audit(&sku)
            .await
            .unwrap()
            .expect("known SKU")
    }

    pub async fn stop(mut self) {
        self.order.stop().await.expect("order service ran cleanly");
        if let Some(inventory) = self.inventory.take() {
            inventory
                .stop()
                .await
                .expect("inventory service ran cleanly");
        }
    }
}

async fn start_inventory(settings: inventory_service::Settings) -> (RunningServer, SocketAddr) {
    let app = inventory_service::Application::build(settings)
        .await
        .expect("build the inventory service");
    let addr = app.local_addr();
    let server = RunningServer::spawn(addr, |shutdown| app.run_until_stopped(shutdown));
    (server, addr)
}

pub fn create_request(
    key: &str,
    items: &[(&str, i32)],
    strategy: Strategy,
) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        idempotency_key: key.into(),
        customer_id: "alice".into(),
        customer_tier: pb::CustomerTier::Gold as i32,
        items: items
            .iter()
            .map(|(sku, quantity)| pb::LineItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        strategy: strategy.to_proto() as i32,
        sale_id: None,
    }
}

pub fn unique_key() -> String {
    format!("key-{}", uuid::Uuid::new_v4())
}

pub fn status(order: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(order.status).expect("known status")
}
