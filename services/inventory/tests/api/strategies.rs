//! A SKU's guard is the shop's decision: SetStock sets the strategy, GetStock shows
//! it, and no Reserve can take a SKU under another one.

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{new_order_id, outcome, TestInventory};

#[tokio::test]
async fn the_strategy_is_the_skus_set_by_set_stock_and_shown_by_get_stock() {
    let app = TestInventory::spawn().await;
    // A new SKU stocked without one gets the service's DEFAULT_STRATEGY (mutex).
    let stock = app.set_stock("tea", 5).await;
    assert_eq!(stock.strategy, pb::Strategy::Mutex as i32);
    // Setting it changes it; re-stocking without one keeps it.
    let stock = app.set_stock_as("tea", 5, Some(Strategy::Pg)).await;
    assert_eq!(stock.strategy, pb::Strategy::Pg as i32);
    let stock = app.set_stock("tea", 6).await;
    assert_eq!(stock.strategy, pb::Strategy::Pg as i32);
    assert_eq!(app.get_stock("tea").await.strategy, pb::Strategy::Pg as i32);
    // A Reserve that names none runs under it, and says so.
    let r = app
        .send_raw_reserve(
            crate::helpers::reserve_request(&new_order_id(), &[("tea", 1)], Strategy::Pg),
            pb::Strategy::Unspecified,
        )
        .await
        .unwrap();
    assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);
    assert_eq!(r.strategy, pb::Strategy::Pg as i32);
    app.stop().await;
}

#[tokio::test]
async fn a_reserve_asking_for_a_weaker_guard_is_refused_and_takes_nothing() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("tea", 5, Some(Strategy::Mutex)).await;
    let order = new_order_id();
    let err = app
        .reserve(&order, &[("tea", 1)], Strategy::None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        "SKU tea is guarded by strategy mutex, the request asked for none; a SKU's strategy is set with SetStock, leave it unspecified to use it; nothing was reserved"
    );
    let t = app.truth("tea").await;
    assert_eq!((t.available(), t.reserved()), (5, 0));
    // The same order under the SKU's strategy goes through.
    let r = app
        .reserve(&order, &[("tea", 1)], Strategy::Mutex)
        .await
        .unwrap();
    assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);
    app.stop().await;
}

#[tokio::test]
async fn a_cart_mixing_strategies_is_refused_and_takes_nothing() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("cup", 5, Some(Strategy::Pg)).await;
    app.set_stock_as("tea", 5, Some(Strategy::None)).await;
    let err = app
        .send_raw_reserve(
            crate::helpers::reserve_request(
                &new_order_id(),
                &[("tea", 1), ("cup", 1)],
                Strategy::Pg,
            ),
            pb::Strategy::Unspecified,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        "the cart's SKUs have different strategies (cup: pg, tea: none); order them separately; nothing was reserved"
    );
    for sku in ["cup", "tea"] {
        assert_eq!(app.truth(sku).await.reserved(), 0, "{sku}");
    }
    app.stop().await;
}

/// The scenario: one SKU stocked with 50, 120 concurrent Reserves, every
/// sixth asking for `none`, the rest for the SKU's own strategy. Before the strategy
/// was the SKU's, `none`'s stale absolute writes undid the guarded decrements (120
/// reserved of 50). Now the `none` requests are refused and nothing is oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_strategy_requests_cannot_oversell_a_guarded_sku() {
    let app = TestInventory::spawn().await;
    for guard in [Strategy::Pg, Strategy::Mutex] {
        let sku = format!("hot-{guard}");
        app.set_stock_as(&sku, 50, Some(guard)).await;
        let buyers = (0..120).map(|i| {
            let (app, sku) = (&app, sku.clone());
            let asked = if i % 6 == 0 { Strategy::None } else { guard };
            async move {
                (
                    asked,
                    app.reserve(&new_order_id(), &[(&sku, 1)], asked).await,
                )
            }
        });
        let (mut reserved, mut refused) = (0, 0);
        for (asked, reply) in futures::future::join_all(buyers).await {
            match reply {
                Ok(r) if outcome(&r) == pb::ReserveOutcome::Reserved => reserved += 1,
                Ok(r) => assert_eq!(outcome(&r), pb::ReserveOutcome::OutOfStock),
                Err(status) => {
                    assert_eq!(asked, Strategy::None, "{status:?}");
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 20, "{guard}: every `none` request is refused");
        assert_eq!(reserved, 50, "{guard}: exactly the stock is reserved");
        let t = app.truth(&sku).await;
        t.check(50).unwrap();
        assert_eq!((t.available(), t.reserved(), t.promised()), (0, 50, 50));
    }
    app.stop().await;
}
