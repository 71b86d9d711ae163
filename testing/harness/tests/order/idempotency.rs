//! One idempotency key, one order — sequentially and under a race.

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{attempt_through, status, unique_key, TestShop};

#[tokio::test]
async fn the_same_key_twice_is_one_order() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let key = unique_key();
    let first = shop
        .create(&key, &[("tea", 3)], Strategy::Pg)
        .await
        .unwrap();
    let second = shop
        .create(&key, &[("tea", 3)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(first.order_id, second.order_id);
    assert_eq!(status(&second), pb::OrderStatus::Reserved);
    assert_eq!(shop.order_count().await, 1);
    assert_eq!(
        shop.truth("tea").await.level.reserved,
        3,
        "stock taken once"
    );
    shop.stop().await;
}

#[tokio::test]
async fn the_same_key_from_twenty_racing_clients_is_one_order() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 100).await;
    for strategy in [Strategy::Mutex, Strategy::Pg] {
        shop.set_strategy("tea", strategy).await;
        let key = unique_key();
        let racers = (0..20).map(|_| shop.create(&key, &[("tea", 2)], strategy));
        let orders: Vec<pb::Order> = futures::future::join_all(racers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for order in &orders {
            assert_eq!(order.order_id, orders[0].order_id, "{strategy}");
            assert_eq!(status(order), pb::OrderStatus::Reserved, "{strategy}");
        }
    }
    assert_eq!(shop.order_count().await, 2);
    let t = shop.truth("tea").await;
    assert_eq!(t.level.reserved, 4, "each order's stock taken once");
    t.check(100).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn the_same_key_with_a_different_cart_is_refused() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let key = unique_key();
    let first = shop
        .create(&key, &[("tea", 1)], Strategy::Pg)
        .await
        .unwrap();
    let err = shop
        .create(&key, &[("tea", 2)], Strategy::Pg)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&first.order_id), "{err:?}");
    assert!(err.message().contains("use a new key"), "{err:?}");
    assert_eq!(shop.truth("tea").await.level.reserved, 1);
    shop.stop().await;
}

#[tokio::test]
async fn one_key_from_two_customers_is_two_orders_and_leaks_nothing() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let key = unique_key();
    let alice = shop
        .create(&key, &[("tea", 1)], Strategy::Pg)
        .await
        .unwrap();
    let mut request = crate::helpers::create_request(&key, &[("tea", 2)], Strategy::Pg);
    request.customer_id = "bob".into();
    let bob = shop
        .orders
        .clone()
        .create_order(request)
        .await
        .map(tonic::Response::into_inner);
    let bob = match bob {
        Ok(bob) => bob,
        Err(err) => {
            assert!(
                !err.message().contains(&alice.order_id),
                "bob's answer names alice's order: {err:?}"
            );
            panic!("bob's first order with his own key was refused: {err:?}");
        }
    };
    assert_ne!(bob.order_id, alice.order_id);
    assert_eq!(status(&bob), pb::OrderStatus::Reserved);
    assert_eq!(shop.order_count().await, 2);
    assert_eq!(shop.truth("tea").await.level.reserved, 3);
    shop.stop().await;
}

/// Attempt A's Reserve fails (its link to inventory is cut) while attempt B with the
/// same key reserves: A must not release B's units. A announces the moment through the
/// saga's test hook, so the interleaving is exact.
#[tokio::test]
async fn a_failed_attempt_does_not_release_the_units_a_concurrent_one_reserved() {
    use shop_test_support::TcpProxy;

    let shop = TestShop::spawn().await;
    shop.set_stock_as("tea", 3, Some(Strategy::Pg)).await;
    let proxy = TcpProxy::start(shop.inventory().addr()).await;
    proxy.cut();
    let (a, failed, go) = attempt_through(&proxy, &shop, std::time::Duration::from_secs(5));
    let key = unique_key();
    let new = alices_tea_order(&key, Strategy::Pg);
    let attempt_a = tokio::spawn(async move { a.create_order(new).await });
    failed.notified().await;
    proxy.restore();
    let b = shop
        .create(&key, &[("tea", 3)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(status(&b), pb::OrderStatus::Reserved);
    go.notify_one();
    let a = attempt_a.await.unwrap();
    let t = shop.truth("tea").await;
    assert_eq!(
        (t.level.available, t.level.reserved),
        (0, 3),
        "A released the units B reserved for the RESERVED order (A answered {a:?})"
    );
    let a = a.expect("A answers with the order B reserved");
    assert_eq!(a.id.to_string(), b.order_id);
    assert_eq!(shop.order_count().await, 1);
    shop.stop().await;
}

/// Attempt A with a key has found the order PENDING and is in inventory (held just
/// after its Reserve consulted the order's row) while the stock, equal to the cart,
/// is held by another order. Attempt B with the same key is answered out of stock and
/// rejects the order. The other order's payment fails and its units come back; A
/// resumes and reserves them. The order is REJECTED — B's answer stands — so A must
/// give the units back: a REJECTED order holding units is a leak no job repairs.
#[tokio::test]
async fn a_reserve_that_lands_after_a_same_key_rejection_gives_its_units_back() {
    use inventory_service::hooks::{pause_at, Moment};
    use order_service::payment::PaymentQueueNotWired;
    use order_service::repository::{Inserted, OrdersDb};
    use order_service::saga::Saga;
    use std::sync::Arc;

    let shop = TestShop::spawn().await;
    shop.set_stock_as("tea", 3, Some(Strategy::Mutex)).await;
    let holder = shop
        .create(&unique_key(), &[("tea", 3)], Strategy::Mutex)
        .await
        .unwrap();
    assert_eq!(status(&holder), pb::OrderStatus::Reserved);

    let key = unique_key();
    let new = alices_tea_order(&key, Strategy::Mutex);
    // Attempt A: its own saga, on the real inventory; the order row is created first
    // so that the test knows the id to hold A's Reserve at.
    let a = Saga::new(
        OrdersDb::new(shop.order_pool.clone()),
        shop_proto::v1::inventory_service_client::InventoryServiceClient::new(
            shop_common::propagation::traced_channel(
                &shop.inventory().uri(),
                std::time::Duration::from_secs(2),
                std::time::Duration::from_secs(30),
            )
            .unwrap(),
        ),
        Arc::new(PaymentQueueNotWired),
    );
    let Inserted::New(pending) = a.db().insert_pending(&new).await.unwrap() else {
        panic!("a fresh key")
    };
    let mut pause = pause_at(Moment::AfterOwnRow, pending.id);
    let attempt_a = tokio::spawn(async move { a.create_order(new).await });
    tokio::time::timeout(std::time::Duration::from_secs(30), &mut pause.inside)
        .await
        .expect("A reaches inventory")
        .unwrap();

    let b = shop
        .create(&key, &[("tea", 3)], Strategy::Mutex)
        .await
        .unwrap();
    assert_eq!(b.order_id, pending.id.to_string());
    assert_eq!(status(&b), pb::OrderStatus::Rejected, "{b:?}");
    shop.payment_failed(&holder.order_id, "declined")
        .await
        .unwrap();
    assert_eq!(
        shop.truth("tea").await.level.available,
        3,
        "the units are back"
    );

    pause.resume.send(()).unwrap();
    let a = attempt_a.await.unwrap().expect("A answers");
    assert_eq!(a.status, order_service::domain::OrderStatus::Rejected);
    let t = shop.truth("tea").await;
    assert_eq!(
        (t.level.available, t.level.reserved, t.lines_reserved),
        (3, 0, 0),
        "units reserved for the REJECTED order {} stay taken",
        b.order_id
    );
    t.check(3).unwrap();
    shop.stop().await;
}

/// Alice's order of three tea under `key`, as the saga takes it (the tests that drive
/// an attempt through a saga of their own).
pub(crate) fn alices_tea_order(key: &str, strategy: Strategy) -> order_service::domain::NewOrder {
    use order_service::domain::{CustomerTier, IdempotencyKey, NewOrder};
    use shop_common::domain::{Cart, CustomerId};
    NewOrder {
        idempotency_key: IdempotencyKey::parse("key", key).unwrap(),
        customer_id: CustomerId::parse("customer", "alice").unwrap(),
        customer_tier: CustomerTier::Gold,
        cart: Cart::parse("items", [("tea", 3)]).unwrap(),
        strategy: Some(strategy),
        sale_id: None,
    }
}
