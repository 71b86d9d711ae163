//! The leader-elected `expire-reservations` job: it cancels orders whose payment never
//! came and orders a crash left PENDING, requests lost payments again, exactly one
//! replica runs it, and another takes over when the leader dies or shuts down.

use std::time::Duration;

use coord::Session;
use order_service::domain::{CustomerTier, IdempotencyKey, NewOrder};
use order_service::expiry;
use order_service::repository::{Inserted, OrdersDb};
use shop_common::domain::{Cart, CustomerId, OrderId, Strategy};
use shop_common::payments::{payment_queue, PaymentItem, UNIT_PRICE_MINOR};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_test_support::{
    check_leader_failover, etcd_client, unique_etcd_prefix, RunningServer, TestDatabase,
};

use crate::helpers::{create_request, unique_key, TestShop};

async fn leaders(orders: &mut OrderServiceClient<tonic::transport::Channel>) -> Vec<pb::Leader> {
    orders
        .list_leaders(pb::ListLeadersRequest {})
        .await
        .expect("ListLeaders")
        .into_inner()
        .leaders
}

#[tokio::test]
async fn an_order_whose_payment_never_comes_is_cancelled_and_its_stock_released() {
    let shop = TestShop::spawn_with(|_, order| {
        order.reservation_ttl = Duration::from_secs(1);
        order.common.jobs.interval = Duration::from_millis(200);
        order.common.jobs.replica_id = "order-under-test".into();
    })
    .await;
    shop.set_stock("tea", 3).await;
    let order = shop.create("k", &[("tea", 2)], Strategy::Pg).await.unwrap();
    assert_eq!(order.status, pb::OrderStatus::Reserved as i32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // The job writes CANCELLED before it calls Release (the status first, so a
    // crash in between leaves the order to the job's next pass): wait for both.
    let (cancelled, truth) = loop {
        let now = shop.get(&order.order_id).await.unwrap();
        let truth = shop.truth("tea").await;
        if now.status == pb::OrderStatus::Cancelled as i32 && truth.level.reserved == 0 {
            break (now, truth);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never expired and released: {now:?}, {truth:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(cancelled.status_reason.contains("expired"), "{cancelled:?}");
    assert_eq!(truth.level.available, 3, "the reserved units came back");
    let listed = leaders(&mut shop.orders.clone()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job, "expire-reservations");
    assert!(listed[0].holder.contains("order-under-test"), "{listed:?}");
    assert!(listed[0].revision > 0);
    shop.stop().await;
}

#[tokio::test]
async fn one_replica_runs_the_job_and_another_takes_over_on_death_and_on_shutdown() {
    let db = TestDatabase::create("order").await;
    let prefix = unique_etcd_prefix("order-jobs");
    let ttl = Duration::from_secs(2);
    let start = |common| async move {
        let app = order_service::Application::build(order_service::Settings::with_common(common))
            .await
            .unwrap();
        RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s))
    };
    check_leader_failover(ServiceName::Order, &db, &prefix, expiry::JOB, ttl, start).await;
}

/// Inserts a PENDING order the way the saga does (its first step), for `quantity` tea.
async fn pending_order(shop: &TestShop, key: &str, quantity: i32) -> OrderId {
    let request = create_request(key, &[("tea", quantity)], Strategy::Pg);
    let new = NewOrder {
        idempotency_key: IdempotencyKey::parse("key", &request.idempotency_key).unwrap(),
        customer_id: CustomerId::parse("customer", &request.customer_id).unwrap(),
        customer_tier: CustomerTier::Gold,
        cart: Cart::parse("items", [("tea", quantity)]).unwrap(),
        strategy: Some(Strategy::Pg),
        sale_id: None,
    };
    match OrdersDb::new(shop.order_pool.clone())
        .insert_pending(&new)
        .await
        .unwrap()
    {
        Inserted::New(order) => order.id,
        Inserted::Existing(order) => panic!("key {key} was used before: {order:?}"),
    }
}

/// The saga's second step for `order`, sent straight to inventory.
async fn reserve(shop: &TestShop, order: OrderId, quantity: i32) -> pb::ReserveOutcome {
    let response = shop
        .stock
        .clone()
        .reserve(pb::ReserveRequest {
            order_id: order.to_string(),
            items: vec![pb::LineItem {
                sku: "tea".into(),
                quantity,
            }],
            strategy: pb::Strategy::Pg as i32,
            ..Default::default()
        })
        .await
        .expect("Reserve")
        .into_inner();
    pb::ReserveOutcome::try_from(response.outcome).unwrap()
}

/// Polls the order until it is in `status` (bounded).
async fn reaches(shop: &TestShop, order: OrderId, status: pb::OrderStatus) -> pb::Order {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = shop.get(&order.to_string()).await.unwrap();
        if now.status == status as i32 {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became {status:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn orders_a_crash_left_pending_end_cancelled_holding_no_stock_and_a_late_reserve_takes_nothing(
) {
    let shop = TestShop::spawn_with(|_, order| {
        order.reservation_ttl = Duration::from_secs(1);
        order.common.jobs.interval = Duration::from_millis(200);
    })
    .await;
    shop.set_stock("tea", 5).await;
    // The saga inserted the order and inventory reserved it; the process died before
    // recording RESERVED.
    let reserved = pending_order(&shop, "crash-after-reserve", 2).await;
    assert_eq!(
        reserve(&shop, reserved, 2).await,
        pb::ReserveOutcome::Reserved
    );
    // The saga inserted the order and died before its Reserve arrived.
    let unreserved = pending_order(&shop, "crash-before-reserve", 1).await;
    assert_eq!(shop.truth("tea").await.level.reserved, 2);

    for id in [reserved, unreserved] {
        let cancelled = reaches(&shop, id, pb::OrderStatus::Cancelled).await;
        assert!(
            cancelled.status_reason.contains("abandoned"),
            "{cancelled:?}"
        );
    }
    let truth = shop.truth("tea").await;
    assert_eq!(truth.level.available, 5, "the reserved units came back");
    assert_eq!(truth.level.reserved, 0, "a CANCELLED order holds no stock");
    // Reserves arriving late (a retry, or the one still on the wire) take nothing.
    for (id, quantity) in [(reserved, 2), (unreserved, 1)] {
        assert_eq!(
            reserve(&shop, id, quantity).await,
            pb::ReserveOutcome::AlreadyReleased
        );
    }
    let truth = shop.truth("tea").await;
    assert_eq!((truth.level.available, truth.level.reserved), (5, 0));
    assert!(truth.drift().is_empty(), "{truth:?}");
    // The client retrying its key gets the cancelled order, not a new one.
    let retried = shop
        .create("crash-before-reserve", &[("tea", 1)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(retried.order_id, unreserved.to_string());
    assert_eq!(retried.status, pb::OrderStatus::Cancelled as i32);
    shop.stop().await;
}

#[tokio::test]
async fn a_reserved_order_whose_payment_request_was_lost_is_requested_again_and_paid() {
    let shop = TestShop::spawn_with(|_, order| {
        order.reservation_ttl = Duration::from_secs(60);
        order.payment_redrive = Duration::from_secs(1);
        order.common.jobs.interval = Duration::from_millis(200);
    })
    .await;
    shop.set_stock("tea", 3).await;
    let order = shop
        .create(&unique_key(), &[("tea", 2)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(order.status, pb::OrderStatus::Reserved as i32);

    // The request never reaches a worker (as if the process died between RESERVED and
    // the hand-off): it is taken off the queue.
    let client = etcd_client().await;
    let queue = payment_queue(client.clone(), &shop.etcd_prefix).unwrap();
    let worker = Session::builder(client).ttl(10).build().await.unwrap();
    let lost = coord::timeout(Duration::from_secs(5), queue.claim(&worker))
        .await
        .unwrap();
    assert_eq!(lost.id(), order.order_id);
    lost.ack().await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 0);

    // The expiry job hands the order over again; the test is the payment worker.
    let again = coord::timeout(Duration::from_secs(10), queue.claim(&worker))
        .await
        .expect("the payment was requested again");
    assert_eq!(again.id(), order.order_id);
    let request = PaymentItem::decode(again.payload()).unwrap();
    assert_eq!(request.amount_minor, 2 * UNIT_PRICE_MINOR);
    assert_eq!(
        (request.customer_id.as_str(), request.tier.as_str()),
        ("alice", "gold")
    );
    let paid = shop.paid(&order.order_id, "pay-1").await.unwrap();
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    again.ack().await.unwrap();
    let truth = shop.truth("tea").await;
    assert_eq!(
        (
            truth.level.available,
            truth.level.reserved,
            truth.level.sold
        ),
        (1, 0, 2)
    );
    // Paid orders are not requested again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(queue.depth().await.unwrap(), 0);
    worker.close().await.unwrap();
    shop.stop().await;
}

/// A shop whose expiry job runs every 200 ms, and a 3 × tea order (of 10) whose payment
/// was recorded while inventory was down: PAID, its Commit never confirmed. Inventory
/// is still down when this returns.
async fn paid_while_inventory_is_down() -> (TestShop, pb::Order) {
    let mut shop = TestShop::spawn_with(|_, order| {
        order.payment_redrive = Duration::from_secs(1);
        order.common.jobs.interval = Duration::from_millis(200);
    })
    .await;
    shop.set_stock("tea", 10).await;
    let order = shop
        .create(&unique_key(), &[("tea", 3)], Strategy::Pg)
        .await
        .unwrap();
    shop.stop_inventory().await;
    let err = shop.paid(&order.order_id, "pay-1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    (shop, order)
}

#[tokio::test]
async fn stock_inventory_never_confirmed_for_a_paid_order_is_committed_by_the_job() {
    // The payment is recorded while inventory is down, and nobody retries it.
    let (mut shop, order) = paid_while_inventory_is_down().await;
    shop.restart_inventory().await;
    // The job repeats the Commit; the order records inventory's confirmation after it.
    wait_settled(
        &shop,
        &order.order_id,
        Duration::from_secs(20),
        "the commit was never repeated",
    )
    .await;
    let truth = shop.truth("tea").await;
    assert_eq!(
        (
            truth.level.available,
            truth.level.reserved,
            truth.level.sold
        ),
        (7, 0, 3)
    );
    truth.check(10).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn orders_whose_settle_keeps_failing_do_not_hide_later_ones() {
    // The payment is recorded while inventory is down, and nobody retries it.
    let (mut shop, order) = paid_while_inventory_is_down().await;
    // More PAID orders than one pass takes, older than ours, whose Commit inventory
    // refuses for good (it never reserved anything for them).
    let failing = 3 * 100 / 2;
    sqlx::query(
        "WITH o AS (
           INSERT INTO orders (order_id, idempotency_key, customer_id, customer_tier, strategy,
                               status, created_at, updated_at)
           SELECT gen_random_uuid(), 'starve-' || g, 'starver', 'gold', 'pg', 'PAID',
                  now() - interval '1 hour', now() - interval '1 hour'
           FROM generate_series(1, $1) g
           RETURNING order_id)
         INSERT INTO order_lines (order_id, sku, quantity) SELECT order_id, 'tea', 1 FROM o",
    )
    .bind(failing)
    .execute(&shop.order_pool)
    .await
    .unwrap();
    shop.restart_inventory().await;
    let behind = format!("the order behind {failing} failing ones was never settled");
    wait_settled(&shop, &order.order_id, Duration::from_secs(30), &behind).await;
    assert_eq!(shop.truth("tea").await.level.sold, 3);
    shop.stop().await;
}

/// Waits until inventory's confirmation of the order's Commit/Release is recorded.
async fn wait_settled(shop: &TestShop, order_id: &str, within: Duration, failure: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let settled: bool =
            sqlx::query_scalar("SELECT stock_settled FROM orders WHERE order_id = $1::uuid")
                .bind(order_id)
                .fetch_one(&shop.order_pool)
                .await
                .unwrap();
        if settled {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
