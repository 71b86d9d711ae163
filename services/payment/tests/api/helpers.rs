//! A whole shop for one test: inventory, order and payment, each with its database.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use payment_service::provider::SimulatedProvider;
use shop_common::testing::{
    init_test_logging, test_settings, unique_etcd_prefix, RunningServer, TestDatabase,
};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::payment_service_client::PaymentServiceClient;
use sqlx::PgPool;
use tonic::transport::Channel;

/// Field order matters: servers stop before their databases are dropped.
pub struct Shop {
    pub payment: Option<RunningServer>,
    pub order: RunningServer,
    pub inventory: RunningServer,
    pub orders: OrderServiceClient<Channel>,
    pub stock: InventoryServiceClient<Channel>,
    pub payment_pool: PgPool,
    pub etcd_prefix: String,
    pub payment_settings: payment_service::Settings,
    pub provider: Option<Arc<SimulatedProvider>>,
    payment_db: TestDatabase,
    order_db: TestDatabase,
    inventory_db: TestDatabase,
}

impl Shop {
    /// Inventory and order running; the payment service built with `adjust`ed settings
    /// and started unless `start_payment` is false (see [`Shop::start_payment`]).
    pub async fn spawn(
        adjust: impl FnOnce(&mut payment_service::Settings),
        start_payment: bool,
    ) -> Shop {
        init_test_logging();
        let etcd_prefix = unique_etcd_prefix("payment");
        let inventory_db = TestDatabase::create("inventory").await;
        let order_db = TestDatabase::create("order").await;
        let payment_db = TestDatabase::create("payment").await;

        let inventory_app =
            inventory_service::Application::build(inventory_service::Settings::with_common(
                test_settings(ServiceName::Inventory, &inventory_db, &etcd_prefix),
            ))
            .await
            .expect("inventory");
        let inventory = RunningServer::spawn(inventory_app.local_addr(), |s| {
            inventory_app.run_until_stopped(s)
        });

        let mut order_settings = order_service::Settings::with_common(test_settings(
            ServiceName::Order,
            &order_db,
            &etcd_prefix,
        ));
        order_settings.common.peers.inventory = inventory.uri();
        let order_app = order_service::Application::build(order_settings)
            .await
            .expect("order");
        let order =
            RunningServer::spawn(order_app.local_addr(), |s| order_app.run_until_stopped(s));

        let mut payment_settings = payment_service::Settings::with_common(test_settings(
            ServiceName::Payment,
            &payment_db,
            &etcd_prefix,
        ));
        payment_settings.common.peers.order = order.uri();
        payment_settings.provider.latency = Duration::from_millis(5);
        adjust(&mut payment_settings);

        let mut shop = Shop {
            payment: None,
            orders: OrderServiceClient::connect(order.uri()).await.unwrap(),
            stock: InventoryServiceClient::connect(inventory.uri())
                .await
                .unwrap(),
            order,
            inventory,
            payment_pool: payment_db.pool().await,
            etcd_prefix,
            payment_settings,
            provider: None,
            payment_db,
            order_db,
            inventory_db,
        };
        if start_payment {
            shop.start_payment().await;
        }
        shop
    }

    /// Builds and starts the payment service (workers begin taking items).
    pub async fn start_payment(&mut self) {
        let app = payment_service::Application::build(self.payment_settings.clone())
            .await
            .expect("payment");
        self.provider = Some(app.provider());
        self.payment = Some(RunningServer::spawn(app.local_addr(), |s| {
            app.run_until_stopped(s)
        }));
    }

    pub async fn payments(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::connect(self.payment.as_ref().expect("payment running").uri())
            .await
            .unwrap()
    }

    pub async fn set_stock(&self, sku: &str, available: i64) {
        self.stock
            .clone()
            .set_stock(pb::SetStockRequest {
                sku: sku.into(),
                available,
            })
            .await
            .unwrap();
    }

    pub async fn stock_of(&self, sku: &str) -> pb::Stock {
        self.stock
            .clone()
            .get_stock(pb::GetStockRequest { sku: sku.into() })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn buy(
        &self,
        key: &str,
        customer: &str,
        tier: pb::CustomerTier,
        sku: &str,
        quantity: i32,
    ) -> pb::Order {
        self.orders
            .clone()
            .create_order(pb::CreateOrderRequest {
                idempotency_key: key.into(),
                customer_id: customer.into(),
                customer_tier: tier as i32,
                items: vec![pb::LineItem {
                    sku: sku.into(),
                    quantity,
                }],
                strategy: pb::Strategy::Pg as i32,
                sale_id: None,
            })
            .await
            .expect("CreateOrder")
            .into_inner()
    }

    /// Polls the order until it is PAID or CANCELLED (bounded).
    pub async fn settled(&self, order_id: &str) -> pb::Order {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let order = self
                .orders
                .clone()
                .get_order(pb::GetOrderRequest {
                    order_id: order_id.into(),
                })
                .await
                .unwrap()
                .into_inner();
            let status = pb::OrderStatus::try_from(order.status).unwrap();
            if matches!(status, pb::OrderStatus::Paid | pb::OrderStatus::Cancelled) {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} stuck in {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rows of the provider's ledger for an order (charges performed).
    pub async fn provider_charges(&self, order_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM provider_charges WHERE order_id = $1::uuid")
            .bind(order_id)
            .fetch_one(&self.payment_pool)
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(payment) = self.payment.take() {
            payment.stop().await.expect("payment ran cleanly");
        }
    }
}
