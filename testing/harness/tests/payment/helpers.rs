//! A whole shop for one test: inventory, order and payment, each with its database.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use coord::{Claimed, Session, WorkQueue};
use payment_service::ledger::LedgerAudit;
use payment_service::provider::{Charge, ProviderSettings, SimulatedProvider};
use payment_service::repository::{PaymentRow, PaymentsDb};
use payment_service::worker::charge_order;
use shop_common::coordination::SharedSession;
use shop_common::payments::{payment_queue, PaymentItem};
use shop_harness::{Services, ShopSettings};
use shop_proto::v1 as pb;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::payment_service_client::PaymentServiceClient;
use sqlx::PgPool;
use tonic::transport::Channel;

/// The three services ([`Services`]), with what the payment suites ask of them.
pub struct Shop {
    pub services: Services,
}

impl std::ops::Deref for Shop {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

impl std::ops::DerefMut for Shop {
    fn deref_mut(&mut self) -> &mut Services {
        &mut self.services
    }
}

impl Shop {
    /// Inventory and order running; the payment service built with `adjust`ed settings
    /// and started unless `start_payment` is false (see [`Services::start_payment`]).
    pub async fn spawn(
        adjust: impl FnOnce(&mut payment_service::Settings),
        start_payment: bool,
    ) -> Shop {
        Shop::spawn_with(|s| adjust(&mut s.payment), start_payment).await
    }

    /// [`Shop::spawn`] with every service's settings `adjust`ed.
    pub async fn spawn_with(adjust: impl FnOnce(&mut ShopSettings), start_payment: bool) -> Shop {
        let services = Services::spawn(
            "payment",
            |s| {
                // `buy` orders with `pg`: the SKUs the tests stock get it.
                s.inventory.default_strategy = shop_common::domain::Strategy::Pg;
                adjust(s)
            },
            start_payment,
        )
        .await;
        Shop { services }
    }

    pub async fn payments(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::connect(self.payment().uri())
            .await
            .unwrap()
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
        self.buy_with(pb::Strategy::Pg, key, customer, tier, sku, quantity)
            .await
    }

    /// [`Shop::buy`] with a reservation strategy.
    pub async fn buy_with(
        &self,
        strategy: pb::Strategy,
        key: &str,
        customer: &str,
        tier: pb::CustomerTier,
        sku: &str,
        quantity: i32,
    ) -> pb::Order {
        create_order(&self.orders, strategy, key, customer, tier, sku, quantity).await
    }

    /// Polls the order until it is PAID or CANCELLED (bounded).
    /// The order once it is PAID or CANCELLED *and* inventory has confirmed its
    /// Commit or Release: the order service records the status first, so stock read
    /// right after the status alone may not have moved yet.
    pub async fn settled(&self, order_id: &str) -> pb::Order {
        let order = settled(&self.orders, order_id).await;
        let pool = self.order_db.pool().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stock_settled: bool =
                sqlx::query_scalar("SELECT stock_settled FROM orders WHERE order_id = $1::uuid")
                    .bind(order_id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if stock_settled {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id}'s stock never settled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Charges the provider's ledger holds for an order (accepted or declined).
    pub async fn provider_charges(&self, order_id: &str) -> i64 {
        self.ledger_rows("provider_charges c", order_id).await
    }

    /// Refunds the provider's ledger holds on an order's charges.
    pub async fn provider_refunds(&self, order_id: &str) -> i64 {
        self.ledger_rows(
            "provider_refunds JOIN provider_charges c USING (charge_id)",
            order_id,
        )
        .await
    }

    async fn ledger_rows(&self, ledger: &'static str, order_id: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {ledger} WHERE c.order_id = $1::uuid"
        ))
        .bind(order_id)
        .fetch_one(&self.payment_pool)
        .await
        .unwrap()
    }

    /// The auditors' reading of the provider's ledger for `orders`.
    pub async fn ledger(&self, orders: &[&str]) -> LedgerAudit {
        let ids: Vec<uuid::Uuid> = orders.iter().map(|id| id.parse().unwrap()).collect();
        LedgerAudit::read(&self.payment_pool, &ids).await.unwrap()
    }

    /// The payment row of an order, from the database.
    pub async fn payment_row(&self, order_id: &str) -> PaymentRow {
        PaymentsDb::new(self.payment_pool.clone())
            .get(order_id.parse().unwrap())
            .await
            .unwrap()
            .expect("a payment row")
    }

    /// Polls the payment row until the order service has confirmed its result
    /// (`reported_at`; it does so after Commit/Release), bounded.
    pub async fn payment_confirmed(&self, order_id: &str) -> PaymentRow {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.payment_row(order_id).await;
            if row.reported_at.is_some() {
                return row;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the result of {order_id} was never confirmed: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls GetPayment until the order's payment is in `status` (bounded).
    pub async fn payment_reaches(&self, order_id: &str, status: pb::PaymentStatus) -> pb::Payment {
        let mut payments = self.payments().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let payment = payments
                .get_payment(pb::GetPaymentRequest {
                    order_id: order_id.into(),
                })
                .await
                .map(tonic::Response::into_inner);
            if let Ok(payment) = &payment {
                if payment.status == status as i32 {
                    return payment.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payment of {order_id} never became {status:?}: {payment:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A provider of another process: the payment database (migrated if the service
    /// has not started yet) and an etcd session of its own, as a payment replica has.
    pub async fn provider_of_its_own(
        &self,
        adjust: impl FnOnce(&mut ProviderSettings),
    ) -> (SimulatedProvider, PgPool, Arc<SharedSession>) {
        let settings = &self.payment_settings;
        let mut provider_settings = settings.provider.clone();
        adjust(&mut provider_settings);
        let pool = shop_common::db::connect_and_migrate(
            &settings.common.database,
            &payment_service::startup::MIGRATOR,
        )
        .await
        .expect("payment database");
        let etcd = Arc::new(SharedSession::new(settings.common.etcd.clone()));
        let provider = SimulatedProvider::new(pool.clone(), provider_settings, etcd.clone());
        (provider, pool, etcd)
    }

    /// A payment worker of another process, driven by the test step by step, that can
    /// die between any two steps (see [`CrashingWorker`]).
    pub async fn crashing_worker(&self) -> CrashingWorker {
        let (provider, pool, etcd) = self.provider_of_its_own(|_| {}).await;
        let client = etcd.client().await.unwrap();
        CrashingWorker {
            db: PaymentsDb::new(pool),
            provider,
            queue: payment_queue(client.clone(), &self.etcd_prefix).unwrap(),
            session: Session::builder(client.clone())
                .ttl(10)
                .build()
                .await
                .unwrap(),
            etcd_prefix: self.etcd_prefix.clone(),
            client,
            etcd,
        }
    }

    pub async fn stop(mut self) {
        if let Some(payment) = self.payment.take() {
            payment.stop().await.expect("payment ran cleanly");
        }
    }
}

/// The pieces of a payment worker (its database, the provider, the queue under its own
/// session) so a test can stop it between saga steps: claim, begin, charge, finish —
/// then [`CrashingWorker::die`], with or without its items dead-lettered.
pub struct CrashingWorker {
    pub db: PaymentsDb,
    pub provider: SimulatedProvider,
    pub queue: WorkQueue,
    session: Session,
    client: coord::etcd_client::Client,
    etcd: Arc<SharedSession>,
    etcd_prefix: String,
}

impl CrashingWorker {
    /// Claims the next payment request (bounded wait).
    pub async fn claim(&self) -> (Claimed, PaymentItem) {
        let item = coord::timeout(Duration::from_secs(10), self.queue.claim(&self.session))
            .await
            .expect("a payment request is queued");
        let request = PaymentItem::decode(item.payload()).unwrap();
        (item, request)
    }

    /// Begins the payment of `request` and gets the provider to charge it, as a worker
    /// does (the order's idempotency key), without recording the answer.
    pub async fn begin_and_charge(&self, request: &PaymentItem) -> Charge {
        let order_id = request.order_id.parse().unwrap();
        self.db
            .begin(order_id, request, request.amount_minor)
            .await
            .unwrap();
        charge_order(&self.provider, order_id, request.amount_minor)
            .await
            .unwrap()
    }

    /// Dies holding `claims`: the lease is revoked (no destructor runs, no nack), so
    /// the items are claimable again, as when a crashed process's lease runs out.
    pub async fn die(self, claims: Vec<Claimed>) {
        self.client
            .clone()
            .lease_revoke(self.session.lease())
            .await
            .unwrap();
        for claim in claims {
            std::mem::forget(claim);
        }
        self.etcd.close().await;
    }

    /// Dies holding `claims`, and the items then run out of deliveries: they are
    /// dead-lettered, so no worker will see them again.
    pub async fn die_and_dead_letter(self, claims: Vec<Claimed>) {
        let (client, prefix) = (self.client.clone(), self.etcd_prefix.clone());
        let count = claims.len() as u64;
        self.die(claims).await;
        let out_of_attempts = payment_queue(client.clone(), &prefix)
            .unwrap()
            .with_max_attempts(1)
            .unwrap();
        let session = Session::builder(client).ttl(5).build().await.unwrap();
        // One round over the queue moves every item delivered once to the dead letters.
        assert!(out_of_attempts.try_claim(&session).await.unwrap().is_none());
        assert_eq!(out_of_attempts.dead_lettered().await.unwrap(), count);
        assert_eq!(
            out_of_attempts.depth().await.unwrap(),
            0,
            "no request left queued"
        );
        session.close().await.unwrap();
    }
}

/// One CreateOrder of `quantity` × `sku` (panics if the call fails).
pub async fn create_order(
    orders: &OrderServiceClient<Channel>,
    strategy: pb::Strategy,
    key: &str,
    customer: &str,
    tier: pb::CustomerTier,
    sku: &str,
    quantity: i32,
) -> pb::Order {
    orders
        .clone()
        .create_order(pb::CreateOrderRequest {
            idempotency_key: key.into(),
            customer_id: customer.into(),
            customer_tier: tier as i32,
            items: vec![pb::LineItem {
                sku: sku.into(),
                quantity,
            }],
            strategy: strategy as i32,
            sale_id: None,
        })
        .await
        .expect("CreateOrder")
        .into_inner()
}

/// Polls the order until it is PAID or CANCELLED (bounded).
pub async fn settled(orders: &OrderServiceClient<Channel>, order_id: &str) -> pb::Order {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let order = orders
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

/// A SKU no other test uses: `<label>-<random>`.
pub fn sku(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}
