//! PaymentResult: PAID + commit, CANCELLED + release; duplicates, reordering, outages.

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{status, unique_key, TestShop};

async fn reserved_order(shop: &TestShop, sku: &str, quantity: i32) -> pb::Order {
    let order = shop
        .create(&unique_key(), &[(sku, quantity)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    order
}

#[tokio::test]
async fn a_captured_payment_pays_the_order_and_commits_its_stock_once() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let order = reserved_order(&shop, "tea", 2).await;
    for _ in 0..3 {
        let paid = shop.paid(&order.order_id, "pay-1").await.unwrap();
        assert_eq!(status(&paid), pb::OrderStatus::Paid);
        assert_eq!(paid.payment_id, "pay-1");
    }
    let t = shop.truth("tea").await;
    assert_eq!(
        (t.level.available, t.level.reserved, t.level.sold),
        (8, 0, 2)
    );
    t.check(10).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn a_failed_payment_cancels_the_order_and_releases_its_stock_once() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let order = reserved_order(&shop, "tea", 4).await;
    for _ in 0..3 {
        let cancelled = shop
            .payment_failed(&order.order_id, "card declined")
            .await
            .unwrap();
        assert_eq!(status(&cancelled), pb::OrderStatus::Cancelled);
        assert_eq!(cancelled.status_reason, "card declined");
    }
    let t = shop.truth("tea").await;
    assert_eq!(
        (t.level.available, t.level.reserved, t.level.sold),
        (10, 0, 0)
    );
    t.check(10).unwrap();
    shop.stop().await;
}

/// A provider's reason is free text, and Postgres text cannot hold NUL: a failure whose
/// reason contains one still cancels the order (NUL kept as U+FFFD), instead of failing
/// on the database for ever while the payment worker retries it.
#[tokio::test]
async fn a_failed_payment_whose_reason_holds_a_nul_cancels_the_order() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let order = reserved_order(&shop, "tea", 2).await;
    let cancelled = shop
        .payment_failed(&order.order_id, "card\0declined")
        .await
        .unwrap();
    assert_eq!(status(&cancelled), pb::OrderStatus::Cancelled);
    assert_eq!(cancelled.status_reason, "card\u{FFFD}declined");
    shop.truth("tea").await.check(10).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn racing_duplicates_of_a_result_settle_once() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let order = reserved_order(&shop, "tea", 3).await;
    let racers = (0..10).map(|_| shop.paid(&order.order_id, "pay-1"));
    for result in futures::future::join_all(racers).await {
        assert_eq!(status(&result.unwrap()), pb::OrderStatus::Paid);
    }
    let t = shop.truth("tea").await;
    assert_eq!(t.level.sold, 3);
    t.check(10).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn contradicting_results_are_conflicts_and_change_nothing() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;

    // Paid first: a late failure cannot cancel it, a second charge is flagged.
    let paid = reserved_order(&shop, "tea", 1).await;
    shop.paid(&paid.order_id, "pay-1").await.unwrap();
    let err = shop
        .payment_failed(&paid.order_id, "timeout")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("already PAID (payment pay-1)"),
        "{err:?}"
    );
    let err = shop.paid(&paid.order_id, "pay-2").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("second charge"), "{err:?}");

    // Failed first (reordered delivery): a late capture must be refunded.
    let cancelled = reserved_order(&shop, "tea", 1).await;
    shop.payment_failed(&cancelled.order_id, "declined")
        .await
        .unwrap();
    let err = shop.paid(&cancelled.order_id, "pay-3").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("must be refunded"), "{err:?}");

    assert_eq!(
        status(&shop.get(&paid.order_id).await.unwrap()),
        pb::OrderStatus::Paid
    );
    assert_eq!(
        status(&shop.get(&cancelled.order_id).await.unwrap()),
        pb::OrderStatus::Cancelled
    );
    let t = shop.truth("tea").await;
    assert_eq!((t.level.available, t.level.sold), (9, 1));
    t.check(10).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn results_for_orders_without_a_reservation_are_refused() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 1).await;
    let rejected = shop
        .create(&unique_key(), &[("tea", 5)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(status(&rejected), pb::OrderStatus::Rejected);
    let err = shop.paid(&rejected.order_id, "pay-1").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("REJECTED"), "{err:?}");

    let unknown = uuid::Uuid::new_v4().to_string();
    let err = shop.paid(&unknown, "pay-1").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    shop.stop().await;
}

#[tokio::test]
async fn a_result_during_an_inventory_outage_is_recorded_and_settled_by_a_retry() {
    let mut shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let order = reserved_order(&shop, "tea", 2).await;
    shop.stop_inventory().await;
    let err = shop.paid(&order.order_id, "pay-1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry PaymentResult"), "{err:?}");
    // The decision is durable even though the stock is not committed yet.
    assert_eq!(
        status(&shop.get(&order.order_id).await.unwrap()),
        pb::OrderStatus::Paid
    );

    shop.restart_inventory().await;
    let paid = shop.paid(&order.order_id, "pay-1").await.unwrap();
    assert_eq!(status(&paid), pb::OrderStatus::Paid);
    let t = shop.truth("tea").await;
    assert_eq!((t.level.reserved, t.level.sold), (0, 2));
    t.check(10).unwrap();
    shop.stop().await;
}
