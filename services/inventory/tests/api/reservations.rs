//! Reserve / Commit / Release: all-or-nothing, idempotent, and safe against reordering.

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{new_order_id, outcome, TestInventory};

const COORDINATED: [Strategy; 2] = [Strategy::Mutex, Strategy::Pg];

#[tokio::test]
async fn reserve_then_commit_moves_units_to_sold_once() {
    let app = TestInventory::spawn().await;
    for strategy in COORDINATED {
        let sku = format!("kiwi-{strategy}");
        app.set_stock_as(&sku, 10, Some(strategy)).await;
        let order = new_order_id();
        let r = app.reserve(&order, &[(&sku, 3)], strategy).await.unwrap();
        assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);
        assert_eq!(r.strategy, strategy.to_proto() as i32);
        let t = app.truth(&sku).await;
        assert_eq!((t.available(), t.reserved(), t.sold()), (7, 3, 0));
        for _ in 0..2 {
            let c = app.commit(&order).await.unwrap();
            assert_eq!(c.state, pb::ReservationState::Committed as i32);
        }
        let t = app.truth(&sku).await;
        assert_eq!((t.available(), t.reserved(), t.sold()), (7, 0, 3));
        t.assert_consistent(10);
        // Releasing a sale is not a compensation any more.
        let err = app.release(&order).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("Committed"), "{err:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn release_returns_units_once_and_blocks_a_later_commit() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("plum", 4, Some(Strategy::Pg)).await;
    let order = new_order_id();
    app.reserve(&order, &[("plum", 4)], Strategy::Pg)
        .await
        .unwrap();
    for _ in 0..3 {
        let r = app.release(&order).await.unwrap();
        assert_eq!(r.state, pb::ReservationState::Released as i32);
    }
    let t = app.truth("plum").await;
    assert_eq!(
        (t.available(), t.reserved()),
        (4, 0),
        "released exactly once"
    );
    t.assert_consistent(4);
    let err = app.commit(&order).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    app.stop().await;
}

#[tokio::test]
async fn release_before_reserve_makes_the_late_reserve_take_nothing() {
    let app = TestInventory::spawn().await;
    for strategy in [Strategy::None, Strategy::Mutex, Strategy::Pg] {
        let sku = format!("fig-{strategy}");
        app.set_stock_as(&sku, 5, Some(strategy)).await;
        let order = new_order_id();
        // The compensation overtakes the action it compensates (a retry storm, a slow
        // network): it succeeds and leaves a tombstone.
        let r = app.release(&order).await.unwrap();
        assert_eq!(r.state, pb::ReservationState::Released as i32);
        let late = app.reserve(&order, &[(&sku, 2)], strategy).await.unwrap();
        assert_eq!(
            outcome(&late),
            pb::ReserveOutcome::AlreadyReleased,
            "{strategy}"
        );
        assert!(late.reason.contains("released"), "{late:?}");
        let t = app.truth(&sku).await;
        assert_eq!(
            (t.available(), t.reserved()),
            (5, 0),
            "{strategy}: nothing taken"
        );
        t.assert_consistent(5);
    }
    app.stop().await;
}

#[tokio::test]
async fn reserve_is_idempotent_also_when_duplicates_race() {
    let app = TestInventory::spawn().await;
    for strategy in [Strategy::None, Strategy::Mutex, Strategy::Pg] {
        let sku = format!("lime-{strategy}");
        app.set_stock_as(&sku, 10, Some(strategy)).await;
        let order = new_order_id();
        let duplicates = (0..8).map(|_| {
            let (app, order, sku) = (&app, order.clone(), sku.clone());
            async move { app.reserve(&order, &[(&sku, 2)], strategy).await.unwrap() }
        });
        for r in futures::future::join_all(duplicates).await {
            assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved, "{strategy}");
        }
        let again = app.reserve(&order, &[(&sku, 2)], strategy).await.unwrap();
        assert_eq!(outcome(&again), pb::ReserveOutcome::Reserved);
        let t = app.truth(&sku).await;
        assert_eq!(
            (t.available(), t.reserved()),
            (8, 2),
            "{strategy}: reserved once"
        );
        t.assert_consistent(10);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_short_line_reserves_nothing_of_the_whole_cart() {
    let app = TestInventory::spawn().await;
    for strategy in [Strategy::None, Strategy::Mutex, Strategy::Pg] {
        let (a, b) = (format!("a-{strategy}"), format!("b-{strategy}"));
        app.set_stock_as(&a, 5, Some(strategy)).await;
        app.set_stock_as(&b, 1, Some(strategy)).await;
        let order = new_order_id();
        let r = app
            .reserve(&order, &[(&a, 2), (&b, 3)], strategy)
            .await
            .unwrap();
        assert_eq!(outcome(&r), pb::ReserveOutcome::OutOfStock, "{strategy}");
        assert!(
            r.reason.contains(&b)
                && r.reason.contains("wanted 3")
                && r.reason.contains("1 available"),
            "{r:?}"
        );
        app.truth(&a).await.assert_consistent(5);
        assert_eq!(
            app.truth(&a).await.available(),
            5,
            "{strategy}: first line rolled back"
        );
        assert_eq!(app.truth(&b).await.available(), 1);
        // Nothing was recorded, so the order can still be released (tombstone).
        app.release(&order).await.unwrap();
    }
    app.stop().await;
}

#[tokio::test]
async fn overlapping_multi_sku_carts_never_deadlock_or_oversell() {
    let app = TestInventory::spawn().await;
    let skus = ["m-1", "m-2", "m-3"];
    for strategy in COORDINATED {
        let skus: Vec<String> = skus.iter().map(|s| format!("{s}-{strategy}")).collect();
        for sku in &skus {
            app.set_stock_as(sku, 20, Some(strategy)).await;
        }
        // 30 carts, each wanting two of the three SKUs in a different listed order.
        let buyers = (0..30).map(|i| {
            let (x, y) = (&skus[i % 3], &skus[(i + 1) % 3]);
            let items = if i % 2 == 0 {
                [(x, 1), (y, 1)]
            } else {
                [(y, 1), (x, 1)]
            };
            let app = &app;
            async move {
                let items: Vec<(&str, i32)> = items.iter().map(|(s, q)| (s.as_str(), *q)).collect();
                app.reserve(&new_order_id(), &items, strategy)
                    .await
                    .unwrap()
            }
        });
        let results = futures::future::join_all(buyers).await;
        let reserved = results
            .iter()
            .filter(|r| outcome(r) == pb::ReserveOutcome::Reserved)
            .count();
        assert_eq!(reserved, 30, "{strategy}: 60 units wanted of 60");
        for sku in &skus {
            let t = app.truth(sku).await;
            t.assert_consistent(20);
            assert_eq!(t.available(), 0, "{strategy} {sku}");
        }
    }
    app.stop().await;
}

/// Commits and Releases of orders holding overlapping pairs of SKUs, all at once, while
/// new Reserves take the same rows: a Commit locks the order's row and then its stock
/// rows in SKU order, as the others do, so none waits for another in a cycle (Postgres
/// would end one with a deadlock error, and its call would fail).
#[tokio::test]
async fn commits_releases_and_reserves_of_overlapping_carts_never_deadlock() {
    let app = TestInventory::spawn().await;
    let skus: Vec<String> = (1..=3).map(|i| format!("settle-{i}")).collect();
    for sku in &skus {
        app.set_stock_as(sku, 100, Some(Strategy::Pg)).await;
    }
    // Each cart wants two of the three SKUs, listed in either order.
    let cart = |i: usize| {
        let (x, y) = (skus[i % 3].as_str(), skus[(i + 1) % 3].as_str());
        if i.is_multiple_of(2) {
            [(x, 1), (y, 1)]
        } else {
            [(y, 1), (x, 1)]
        }
    };
    let mut held = Vec::new();
    for i in 0..60 {
        let order = new_order_id();
        let r = app.reserve(&order, &cart(i), Strategy::Pg).await.unwrap();
        assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);
        held.push(order);
    }
    let settles = held.iter().enumerate().map(|(i, order)| {
        let app = &app;
        async move {
            let settled = if i % 2 == 0 {
                app.commit(order).await
            } else {
                app.release(order).await
            };
            settled.map(|_| ())
        }
    });
    let reserves = (0..30).map(|i| {
        let app = &app;
        async move {
            app.reserve(&new_order_id(), &cart(i), Strategy::Pg)
                .await
                .map(|_| ())
        }
    });
    let (settled, reserved) = tokio::join!(
        futures::future::join_all(settles),
        futures::future::join_all(reserves)
    );
    for result in settled.iter().chain(&reserved) {
        assert!(result.is_ok(), "{result:?}");
    }
    for sku in &skus {
        let t = app.truth(sku).await;
        t.assert_consistent(100);
        // Each SKU is in 40 of the 60 held carts, half committed, half released; and in
        // 20 of the 30 new ones.
        assert_eq!((t.sold(), t.reserved()), (20, 20), "{sku}");
    }
    app.stop().await;
}

/// A Commit and a Release of the same order, sent at once, many times over: exactly
/// one of the two decides, the other is refused with the state it decided, and the
/// units go where the winner says.
#[tokio::test]
async fn a_commit_and_a_release_of_one_order_racing_end_in_exactly_one_of_them() {
    let app = TestInventory::spawn().await;
    let sku = "settle-race";
    app.set_stock_as(sku, 40, Some(Strategy::Pg)).await;
    let mut committed = 0;
    for _ in 0..40 {
        let order = new_order_id();
        app.reserve(&order, &[(sku, 1)], Strategy::Pg)
            .await
            .unwrap();
        let (commit, release) = tokio::join!(app.commit(&order), app.release(&order));
        match (commit, release) {
            (Ok(_), Err(e)) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert!(e.message().contains("Committed"), "{e:?}");
                committed += 1;
            }
            (Err(e), Ok(_)) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert!(e.message().contains("Released"), "{e:?}");
            }
            both => panic!("one of the two must decide: {both:?}"),
        }
    }
    let t = app.truth(sku).await;
    t.assert_consistent(40);
    assert_eq!((t.sold(), t.reserved()), (committed, 0));
    assert_eq!(t.available(), 40 - committed);
    app.stop().await;
}

#[tokio::test]
async fn commit_of_an_order_that_reserved_nothing_is_not_found() {
    let app = TestInventory::spawn().await;
    let err = app.commit(&new_order_id()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("has no reservation"), "{err:?}");
    app.stop().await;
}
