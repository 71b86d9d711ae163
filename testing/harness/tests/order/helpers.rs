//! A shop for the order suites: inventory + order services, their databases, clients.

#![allow(dead_code)]

use inventory_service::repository::{InventoryDb, StockAudit};
use shop_common::domain::{Sku, Strategy};
use std::net::SocketAddr;

use shop_harness::Services;
use shop_proto::v1 as pb;
use shop_test_support::TcpProxy;

/// Inventory and order ([`Services`], payment not started: tests report payment
/// results by hand), with what the order suites ask of them.
pub struct TestShop {
    pub services: Services,
}

impl std::ops::Deref for TestShop {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

impl std::ops::DerefMut for TestShop {
    fn deref_mut(&mut self) -> &mut Services {
        &mut self.services
    }
}

impl TestShop {
    pub async fn spawn() -> TestShop {
        Self::spawn_with(|_, _| {}).await
    }

    /// Starts both services, with settings adjusted by `adjust`.
    pub async fn spawn_with(
        adjust: impl FnOnce(&mut inventory_service::Settings, &mut order_service::Settings),
    ) -> TestShop {
        let services = Services::spawn(
            "order",
            |s| {
                // Most tests here order with `pg`: the SKUs they stock get it.
                s.inventory.default_strategy = Strategy::Pg;
                adjust(&mut s.inventory, &mut s.order)
            },
            false,
        )
        .await;
        TestShop { services }
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

    pub async fn stop(self) {
        self.services.stop().await;
    }
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

/// A proxy in front of the tests' Postgres, to cut a service off from its database.
pub async fn postgres_proxy() -> TcpProxy {
    let server = shop_test_support::server_options();
    proxy_to(server.get_host(), server.get_port()).await
}

/// A proxy in front of the tests' etcd (its first endpoint).
pub async fn etcd_proxy() -> TcpProxy {
    let endpoints = shop_test_support::etcd_endpoints();
    let first = endpoints.split(',').next().unwrap_or_default();
    let first = first.split_once("://").map_or(first, |(_, rest)| rest);
    let (host, port) = first.rsplit_once(':').expect("host:port");
    proxy_to(host, port.parse().expect("etcd port")).await
}

async fn proxy_to(host: &str, port: u16) -> TcpProxy {
    let target: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .unwrap()
        .next()
        .expect("an address");
    TcpProxy::start(target).await
}

/// A lazily connecting channel to `uri`.
pub fn channel(uri: String) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(uri)
        .unwrap()
        .connect_lazy()
}

pub fn unique_key() -> String {
    format!("key-{}", uuid::Uuid::new_v4())
}

pub fn status(order: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(order.status).expect("known status")
}

/// Attempt A of a same-key race: a saga of its own whose calls to inventory go through
/// `proxy` (each bounded by `call_timeout`) and which, once its Reserve has failed,
/// announces it on `failed` and waits for `go` before it compensates.
pub fn attempt_through(
    proxy: &TcpProxy,
    shop: &TestShop,
    call_timeout: std::time::Duration,
) -> (
    order_service::saga::Saga,
    std::sync::Arc<tokio::sync::Notify>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use order_service::payment::PaymentQueueNotWired;
    use order_service::repository::OrdersDb;
    use order_service::saga::Saga;
    use std::sync::Arc;
    use tokio::sync::Notify;

    let (failed, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let hook = {
        let (failed, go) = (failed.clone(), go.clone());
        move || {
            let (failed, go) = (failed.clone(), go.clone());
            Box::pin(async move {
                failed.notify_one();
                go.notified().await;
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        }
    };
    let inventory = pb::inventory_service_client::InventoryServiceClient::new(
        shop_common::propagation::traced_channel(
            &format!("http://{}", proxy.addr()),
            std::time::Duration::from_secs(2),
            call_timeout,
        )
        .unwrap(),
    );
    let saga = Saga::new(
        OrdersDb::new(shop.order_pool.clone()),
        inventory,
        Arc::new(PaymentQueueNotWired),
    )
    .with_reserve_failed_hook(Arc::new(hook));
    (saga, failed, go)
}
