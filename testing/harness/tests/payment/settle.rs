//! The leader-elected `settle-payments` job: exactly one replica runs it, another takes
//! over on a crash and on shutdown, and it finishes what crashed workers left — an
//! unconfirmed result, a PROCESSING payment whose request is gone, a capture for an
//! order that was cancelled meanwhile.

use std::time::Duration;

use payment_service::repository::PaymentState;
use payment_service::settle;
use payment_service::worker::{charge_order, idempotency_key};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::CustomerTier;
use shop_test_support::{
    check_leader_failover, listed_holder, unique_etcd_prefix, RunningServer, TestDatabase,
};

use crate::helpers::{sku, Shop};

/// Payment settings with the job stepping in after 1 s, a pass every 200 ms.
fn eager_settlement(settings: &mut payment_service::Settings) {
    settings.settle_after = Duration::from_secs(1);
    settings.common.jobs.interval = Duration::from_millis(200);
    settings.common.jobs.replica_id = "payment-under-test".into();
}

#[tokio::test]
async fn exactly_one_payment_replica_runs_settle_payments_and_another_takes_over() {
    let db = TestDatabase::create("payment").await;
    let prefix = unique_etcd_prefix("payment-jobs");
    let ttl = Duration::from_secs(2);
    let start = |common| {
        let mut settings = payment_service::Settings::with_common(common);
        settings.workers = 1;
        async move {
            let app = payment_service::Application::build(settings).await.unwrap();
            RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s))
        }
    };
    check_leader_failover(ServiceName::Payment, &db, &prefix, settle::JOB, ttl, start).await;
}

#[tokio::test]
async fn results_the_order_service_never_confirmed_are_reported_again() {
    let mut shop = Shop::spawn(eager_settlement, false).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 5).await;
    let paid = shop.buy("k1", "alice", CustomerTier::Gold, &tea, 2).await;
    let declined = shop.buy("k2", "bob", CustomerTier::Standard, &tea, 1).await;

    // A worker records both outcomes, dies before reporting either, and the requests
    // run out of deliveries: only the payments table knows.
    let worker = shop.crashing_worker().await;
    let mut claims = Vec::new();
    for _ in 0..2 {
        let (claim, request) = worker.claim().await;
        let order_id = request.order_id.parse().unwrap();
        worker
            .db
            .begin(order_id, &request, request.amount_minor)
            .await
            .unwrap();
        if request.order_id == paid.order_id {
            let charge = charge_order(&worker.provider, order_id, request.amount_minor)
                .await
                .unwrap();
            assert!(charge.ok());
            worker
                .db
                .finish(order_id, true, &charge.charge_id, "")
                .await
                .unwrap();
        } else {
            worker
                .db
                .finish(order_id, false, "", "card declined (simulated)")
                .await
                .unwrap();
        }
        claims.push(claim);
    }
    worker.die_and_dead_letter(claims).await;
    assert_eq!(shop.payment_row(&paid.order_id).await.reported_at, None);

    shop.start_payment().await;
    for order in [&paid, &declined] {
        let row = shop.payment_confirmed(&order.order_id).await;
        assert_eq!(row.report_refusal, "", "accepted: {row:?}");
    }
    let paid_now = shop.settled(&paid.order_id).await;
    assert_eq!(
        paid_now.status,
        pb::OrderStatus::Paid as i32,
        "{paid_now:?}"
    );
    let declined_now = shop.settled(&declined.order_id).await;
    assert_eq!(
        declined_now.status,
        pb::OrderStatus::Cancelled as i32,
        "{declined_now:?}"
    );
    assert!(declined_now.status_reason.contains("declined"));
    let stock = shop.stock_of(&tea).await;
    assert_eq!(
        (stock.available, stock.reserved, stock.sold),
        (3, 0, 2),
        "paid units sold, declined units back"
    );
    assert_eq!(shop.provider_charges(&paid.order_id).await, 1);
    assert_eq!(
        shop.provider.as_ref().unwrap().charges(),
        0,
        "nothing charged anew"
    );
    shop.stop().await;
}

#[tokio::test]
async fn a_processing_payment_whose_request_was_dead_lettered_is_driven_again_and_charged_once() {
    let mut shop = Shop::spawn(eager_settlement, false).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 3).await;
    let order = shop
        .buy("k", "carol", CustomerTier::Platinum, &tea, 1)
        .await;

    // A worker begins the payment and gets the provider to charge, then dies before
    // recording the answer; the request runs out of deliveries.
    let worker = shop.crashing_worker().await;
    let (claim, request) = worker.claim().await;
    let first = worker.begin_and_charge(&request).await;
    worker.die_and_dead_letter(vec![claim]).await;
    assert_eq!(
        shop.payment_row(&order.order_id).await.state,
        PaymentState::Processing
    );

    shop.start_payment().await;
    let row = shop.payment_confirmed(&order.order_id).await;
    let settled = shop.settled(&order.order_id).await;
    assert_eq!(settled.status, pb::OrderStatus::Paid as i32, "{settled:?}");
    assert_eq!(
        settled.payment_id, first.charge_id,
        "the crashed worker's charge is the payment"
    );
    assert_eq!(
        shop.provider_charges(&order.order_id).await,
        1,
        "charged once"
    );
    assert_eq!(
        shop.provider.as_ref().unwrap().charges(),
        0,
        "the re-driven request charged nothing new"
    );
    assert_eq!(row.state, PaymentState::Captured);
    assert_eq!(row.deliveries, 2, "delivered once more, by the re-drive");
    assert_eq!(row.tier, "platinum", "re-driven at the customer's priority");
    let stock = shop.stock_of(&tea).await;
    assert_eq!((stock.available, stock.reserved, stock.sold), (2, 0, 1));
    // The job says what it did in its proclaimed progress (after the pass ends).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let holder = listed_holder(
            ServiceName::Payment,
            shop.payment.as_ref().unwrap(),
            settle::JOB,
        )
        .await;
        if holder.contains(r#""redriven":1"#) {
            assert!(holder.contains("payment-under-test"), "{holder}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "progress never showed the re-drive: {holder}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shop.stop().await;
}

#[tokio::test]
async fn a_capture_for_an_order_cancelled_meanwhile_is_refunded_exactly_once() {
    let mut shop = Shop::spawn(eager_settlement, false).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 4).await;
    let order = shop.buy("k", "dave", CustomerTier::Gold, &tea, 2).await;

    // A worker holds the request for so long that the order expires (the order
    // service cancels it and releases the stock), then dies.
    let worker = shop.crashing_worker().await;
    let (claim, _) = worker.claim().await;
    let cancelled = shop
        .orders
        .clone()
        .payment_result(pb::PaymentResultRequest {
            order_id: order.order_id.clone(),
            ok: false,
            payment_id: String::new(),
            reason: "reservation expired".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::OrderStatus::Cancelled as i32);
    worker.die(vec![claim]).await;

    // The service's worker gets the request again, charges, and the order service
    // refuses the capture ("must be refunded"); the job refunds it.
    shop.start_payment().await;
    let payment = shop
        .payment_reaches(&order.order_id, pb::PaymentStatus::Refunded)
        .await;
    assert!(payment.reason.contains("refunded"), "{payment:?}");
    assert_eq!(
        shop.provider_charges(&order.order_id).await,
        1,
        "one charge"
    );
    assert_eq!(
        shop.provider_refunds(&order.order_id).await,
        1,
        "one refund"
    );
    let refunded: i64 = sqlx::query_scalar(
        "SELECT r.amount_minor FROM provider_refunds r JOIN provider_charges c USING (charge_id)
         WHERE c.order_id = $1::uuid",
    )
    .bind(&order.order_id)
    .fetch_one(&shop.payment_pool)
    .await
    .unwrap();
    assert_eq!(refunded, payment.amount_minor, "the whole charge came back");
    // Asking the provider again (an overlapping leader would) refunds nothing more.
    let provider = shop.provider.clone().unwrap();
    let order_id = order.order_id.parse().unwrap();
    let key = idempotency_key(order_id, "refund");
    let again = provider
        .refund(&payment.payment_id, key.as_deref())
        .await
        .unwrap();
    assert!(
        payment.reason.contains(&again.refund_id),
        "{payment:?} vs {again:?}"
    );
    assert_eq!(provider.refunds(), 1);
    assert_eq!(shop.provider_refunds(&order.order_id).await, 1);
    let now = shop.settled(&order.order_id).await;
    assert_eq!(
        now.status,
        pb::OrderStatus::Cancelled as i32,
        "stays cancelled"
    );
    let stock = shop.stock_of(&tea).await;
    assert_eq!((stock.available, stock.reserved, stock.sold), (4, 0, 0));
    shop.stop().await;
}
