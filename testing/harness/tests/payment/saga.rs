//! The saga through the payment service.

use std::time::Duration;

use coord::Session;
use payment_service::worker::charge_order;
use shop_common::payments::payment_queue;
use shop_proto::v1 as pb;
use shop_proto::v1::CustomerTier;

use crate::helpers::{sku, Shop};

#[tokio::test]
async fn a_reserved_order_is_paid_and_its_stock_sold() {
    let shop = Shop::spawn(|_| {}, true).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 5).await;
    let order = shop.buy("k1", "alice", CustomerTier::Gold, &tea, 2).await;
    assert_eq!(order.status, pb::OrderStatus::Reserved as i32);
    let order = shop.settled(&order.order_id).await;
    assert_eq!(order.status, pb::OrderStatus::Paid as i32, "{order:?}");
    let stock = shop.stock_of(&tea).await;
    assert_eq!((stock.available, stock.reserved, stock.sold), (3, 0, 2));
    let payment = shop
        .payments()
        .await
        .get_payment(pb::GetPaymentRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.status, pb::PaymentStatus::Captured as i32);
    assert_eq!(
        payment.amount_minor,
        2 * shop_common::payments::UNIT_PRICE_MINOR
    );
    assert_eq!(payment.payment_id, order.payment_id);
    shop.stop().await;
}

#[tokio::test]
async fn with_30_percent_declines_every_order_ends_paid_or_cancelled_with_stock_back() {
    let shop = Shop::spawn(
        |s| {
            s.provider.failure_rate = 0.3;
            s.provider.seed = 7;
        },
        true,
    )
    .await;
    let tea = sku("tea");
    shop.set_stock(&tea, 100).await;
    let mut orders = Vec::new();
    for i in 0..30 {
        orders.push(
            shop.buy(
                &format!("k{i}"),
                &format!("c{i}"),
                CustomerTier::Standard,
                &tea,
                1,
            )
            .await,
        );
    }
    let provider = shop.provider.clone().unwrap();
    let (mut paid, mut cancelled) = (0, 0);
    for order in &orders {
        let settled = shop.settled(&order.order_id).await;
        let declined = provider.declines(order.order_id.parse().unwrap());
        if declined {
            assert_eq!(
                settled.status,
                pb::OrderStatus::Cancelled as i32,
                "{settled:?}"
            );
            cancelled += 1;
        } else {
            assert_eq!(settled.status, pb::OrderStatus::Paid as i32, "{settled:?}");
            paid += 1;
        }
        assert_eq!(
            shop.provider_charges(&order.order_id).await,
            1,
            "one charge per order"
        );
    }
    assert!(
        cancelled > 0 && paid > 0,
        "a 30% failure rate declines some: {paid} paid, {cancelled} cancelled"
    );
    let stock = shop.stock_of(&tea).await;
    assert_eq!(stock.sold, paid, "paid orders' units are sold");
    assert_eq!(stock.reserved, 0, "no reservation left behind");
    assert_eq!(
        stock.available,
        100 - paid,
        "cancelled orders' units came back"
    );
    shop.stop().await;
}

#[tokio::test]
async fn a_worker_that_dies_after_charging_does_not_cause_a_second_charge() {
    let mut shop = Shop::spawn(|_| {}, false).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 1).await;
    let order = shop.buy("k", "bob", CustomerTier::Standard, &tea, 1).await;

    // A worker of an earlier process: claims the item, gets the provider to charge,
    // and dies before recording or acking (its lease is revoked; no destructor runs).
    let client = coord::EtcdConfig::new(&shop_test_support::etcd_endpoints())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let doomed = Session::builder(client.clone())
        .ttl(10)
        .build()
        .await
        .unwrap();
    let queue = payment_queue(client.clone(), &shop.etcd_prefix).unwrap();
    let item = coord::timeout(Duration::from_secs(5), queue.claim(&doomed))
        .await
        .unwrap();
    assert_eq!(item.id(), order.order_id);
    shop.start_payment().await;
    let provider = shop.provider.clone().unwrap();
    let first = charge_order(&provider, order.order_id.parse().unwrap(), 1000)
        .await
        .unwrap();
    let before = provider.charges();
    client.clone().lease_revoke(doomed.lease()).await.unwrap();
    std::mem::forget(item);

    // The running service's workers get the item again and finish the payment.
    let settled = shop.settled(&order.order_id).await;
    assert_eq!(settled.status, pb::OrderStatus::Paid as i32);
    assert_eq!(
        settled.payment_id, first.charge_id,
        "the first charge is the payment"
    );
    assert_eq!(
        shop.provider_charges(&order.order_id).await,
        1,
        "charged exactly once"
    );
    assert_eq!(
        provider.charges(),
        before,
        "the redelivery charged nothing new"
    );
    shop.stop().await;
}

#[tokio::test]
async fn the_provider_never_sees_more_charges_at_once_than_its_semaphore_allows() {
    let shop = Shop::spawn(
        |s| {
            s.workers = 8;
            s.provider.concurrency = 2;
            s.provider.latency = Duration::from_millis(60);
        },
        true,
    )
    .await;
    let tea = sku("tea");
    shop.set_stock(&tea, 16).await;
    let mut ids = Vec::new();
    for i in 0..16 {
        ids.push(
            shop.buy(&format!("k{i}"), "c", CustomerTier::Standard, &tea, 1)
                .await
                .order_id,
        );
    }
    for id in &ids {
        shop.settled(id).await;
    }
    let max = shop.provider.as_ref().unwrap().max_in_flight();
    assert!(max <= 2, "at most 2 charges in flight, saw {max}");
    assert!(max >= 1);
    shop.stop().await;
}

#[tokio::test]
async fn platinum_and_gold_customers_are_charged_before_standard_ones() {
    let mut shop = Shop::spawn(|s| s.workers = 1, false).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 10).await;
    let mut standard = Vec::new();
    for i in 0..3 {
        standard.push(
            shop.buy(&format!("s{i}"), "s", CustomerTier::Standard, &tea, 1)
                .await
                .order_id,
        );
    }
    let gold = shop
        .buy("g", "g", CustomerTier::Gold, &tea, 1)
        .await
        .order_id;
    let platinum = shop
        .buy("p", "p", CustomerTier::Platinum, &tea, 1)
        .await
        .order_id;
    let depth = shop_common::payments::payment_queue(
        coord::EtcdConfig::new(&shop_test_support::etcd_endpoints())
            .unwrap()
            .connect()
            .await
            .unwrap(),
        &shop.etcd_prefix,
    )
    .unwrap()
    .depth()
    .await
    .unwrap();
    assert_eq!(depth, 5);
    shop.start_payment().await;
    for id in standard.iter().chain([&gold, &platinum]) {
        shop.settled(id).await;
    }
    let order: Vec<String> =
        sqlx::query_scalar("SELECT order_id::text FROM payments ORDER BY created_at, order_id")
            .fetch_all(&shop.payment_pool)
            .await
            .unwrap();
    assert_eq!(order[0], platinum, "platinum first");
    assert_eq!(order[1], gold, "then gold");
    let queue_depth = shop
        .payments()
        .await
        .queue_depth(pb::QueueDepthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue_depth.total, 0);
    shop.stop().await;
}

#[tokio::test]
async fn bad_input_is_rejected_with_a_clear_message() {
    let shop = Shop::spawn(|_| {}, true).await;
    let mut payments = shop.payments().await;
    let err = payments
        .get_payment(pb::GetPaymentRequest {
            order_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("order_id"), "{}", err.message());
    let err = payments
        .get_payment(pb::GetPaymentRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    shop.stop().await;
}
