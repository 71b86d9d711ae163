//! Same-key races where attempt A's Reserve **times out**: the request reached
//! inventory and took the units, but A's deadline passed before the answer came back
//! (the proxy between them holds the replies). A cannot tell this from a failure, so
//! A must not undo what a concurrent attempt B with the same key has finished. The
//! stock equals the cart, so a unit released twice or kept twice shows in the counts.

use std::time::Duration;

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use shop_test_support::TcpProxy;

use crate::helpers::{attempt_through, status, unique_key, TestShop};
use crate::idempotency::alices_tea_order;

/// A's Reserve takes the 3 units (of 3) at inventory, its answer held in the proxy
/// until A's 1 s deadline passes; A announces the failure and waits. B with the same
/// key arrives, finds the order's reservation and moves it to RESERVED. A goes on: it
/// must lose the claim (the order is no longer PENDING) and answer with B's order,
/// releasing nothing.
#[tokio::test]
async fn an_attempt_whose_reserve_timed_out_does_not_release_what_a_same_key_attempt_finished() {
    for strategy in [Strategy::Pg, Strategy::Mutex] {
        let shop = TestShop::spawn().await;
        shop.set_stock_as("tea", 3, Some(strategy)).await;
        let proxy = TcpProxy::start(shop.inventory().addr()).await;
        let (a, failed, go) = attempt_through(&proxy, &shop, Duration::from_secs(1));
        // One order on another SKU first, so A's HTTP/2 connection is set up before
        // the replies are held (a held handshake would fail A before its Reserve).
        shop.set_stock_as("mint", 1, Some(strategy)).await;
        let mut warm_up = alices_tea_order(&unique_key(), strategy);
        warm_up.cart = shop_common::domain::Cart::parse("items", [("mint", 1)]).unwrap();
        let warm_up = a.create_order(warm_up).await;
        assert!(warm_up.is_ok(), "{strategy}: {warm_up:?}");
        proxy.hold_replies();

        let key = unique_key();
        let new = alices_tea_order(&key, strategy);
        let attempt_a = tokio::spawn(async move { a.create_order(new).await });
        failed.notified().await;
        // A's Reserve did take the units; only its answer is missing.
        let t = shop.truth("tea").await;
        assert_eq!(
            (t.level.available, t.level.reserved),
            (0, 3),
            "{strategy}: A's Reserve reached inventory"
        );

        let b = shop.create(&key, &[("tea", 3)], strategy).await.unwrap();
        assert_eq!(status(&b), pb::OrderStatus::Reserved, "{strategy}");
        go.notify_one();
        let a = attempt_a.await.unwrap();
        proxy.release_replies();

        let t = shop.truth("tea").await;
        assert_eq!(
            (t.level.available, t.level.reserved),
            (0, 3),
            "{strategy}: A released the units of the RESERVED order (A answered {a:?})"
        );
        t.check(3).unwrap();
        let a = a.expect("A answers with the order B finished");
        assert_eq!(a.id.to_string(), b.order_id, "{strategy}");
        assert_eq!(
            shop.order_count().await,
            2,
            "{strategy}: the warm-up's and this one"
        );
        shop.stop().await;
    }
}
