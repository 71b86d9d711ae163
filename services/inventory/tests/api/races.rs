//! Races between requests of one order (a retried or duplicated Reserve, a Release
//! overtaking a Reserve), each held at the moment that matters through the
//! `test-hooks` feature: the service announces the moment, the test makes the other
//! request act there. Every answer must be one the order's reservation row agrees
//! with, and no race the code can name may come back as INTERNAL.

use std::time::Duration;

use inventory_service::hooks::{pause_at, Moment, Pause};
use shop_common::domain::{OrderId, Strategy};
use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{new_order_id, outcome, TestInventory};

/// Waits until the paused request is at its moment.
async fn arrived(pause: &mut Pause, what: &str) {
    tokio::time::timeout(Duration::from_secs(30), &mut pause.inside)
        .await
        .unwrap_or_else(|_| panic!("{what} never reached its moment"))
        .unwrap();
}

fn order_id(raw: &str) -> OrderId {
    OrderId::parse("order", raw).unwrap()
}

/// The order's reservation state, from the database (`None`: no row).
async fn reservation_state(app: &TestInventory, order: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1::uuid")
        .bind(order)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

/// Two Reserves of one order under `mutex`, stock equal to the cart. B has consulted
/// the order's row (nothing yet) when A reserves every unit; B then reads the stock:
/// zero. That zero is A's — the same order's — reservation, so B's answer must be
/// RESERVED. Answered "out of stock", the order would be rejected while it holds
/// every unit, and no job looks at rejected orders: leaked for good.
#[tokio::test]
async fn a_same_order_reserve_is_not_told_sold_out_by_its_own_reservation() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("plum", 2, Some(Strategy::Mutex)).await;
    let order = new_order_id();
    let mut pause = pause_at(Moment::AfterOwnRow, order_id(&order));
    let b = app.spawn_reserve(&order, &[("plum", 2)], Strategy::Mutex);
    arrived(&mut pause, "B").await;

    let a = app
        .reserve(&order, &[("plum", 2)], Strategy::Mutex)
        .await
        .unwrap();
    assert_eq!(outcome(&a), pb::ReserveOutcome::Reserved);
    assert_eq!(app.truth("plum").await.available(), 0, "A took every unit");

    pause.resume.send(()).unwrap();
    let b = b.await.unwrap().expect("B answers");
    assert_eq!(
        outcome(&b),
        pb::ReserveOutcome::Reserved,
        "B was told {:?} ({}) while its own order holds the units",
        outcome(&b),
        b.reason
    );
    let truth = app.truth("plum").await;
    truth.assert_consistent(2);
    assert_eq!((truth.reserved(), truth.promised()), (2, 2));
    app.stop().await;
}

/// An stm Reserve that etcd refused still holds the order's PREPARING claim when a
/// Release of the order arrives: the Release's tombstone insert finds the row. The
/// Reserve then withdraws its claim, before the Release locks the row it found. The
/// order reserved nothing, so the Release must leave its tombstone and succeed (it
/// once answered INTERNAL: "conflicted but is not there").
#[tokio::test]
async fn a_release_racing_a_refused_stm_reserve_leaves_a_tombstone() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("quince", 0, Some(Strategy::Stm)).await;
    let order = new_order_id();
    let mut refused = pause_at(Moment::BeforeUnprepare, order_id(&order));
    let mut found = pause_at(Moment::ReleaseFoundRow, order_id(&order));
    let reserve = app.spawn_reserve(&order, &[("quince", 1)], Strategy::Stm);
    arrived(&mut refused, "the Reserve").await;
    assert_eq!(
        reservation_state(&app, &order).await.as_deref(),
        Some("PREPARING")
    );

    let release = tokio::spawn({
        let client = app.client();
        let request = pb::ReleaseRequest {
            order_id: order.clone(),
        };
        async move {
            client
                .clone()
                .release(request)
                .await
                .map(|r| r.into_inner())
        }
    });
    arrived(&mut found, "the Release").await;
    refused.resume.send(()).unwrap();
    let reserved = reserve.await.unwrap().expect("the Reserve answers");
    assert_eq!(outcome(&reserved), pb::ReserveOutcome::OutOfStock);
    assert_eq!(
        reservation_state(&app, &order).await,
        None,
        "claim withdrawn"
    );

    found.resume.send(()).unwrap();
    let released = release.await.unwrap().unwrap_or_else(|status| {
        panic!(
            "the Release failed: {:?} {}",
            status.code(),
            status.message()
        )
    });
    assert_eq!(released.state, pb::ReservationState::Released as i32);
    assert_eq!(
        reservation_state(&app, &order).await.as_deref(),
        Some("RELEASED")
    );
    // The tombstone holds: a late Reserve of the order takes nothing.
    app.set_stock_as("quince", 1, Some(Strategy::Stm)).await;
    let late = app
        .reserve(&order, &[("quince", 1)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&late), pb::ReserveOutcome::AlreadyReleased);
    app.truth("quince").await.assert_consistent(1);
    app.stop().await;
}

/// Two stm Reserves of one order: A is refused by etcd (out of stock) and holds
/// before withdrawing the order's claim; meanwhile units come back and B takes them
/// in etcd, then holds before recording. A withdraws; B finds no claim to complete.
/// B must say so by name (ABORTED, retry) and give its etcd units back, not answer
/// INTERNAL and leave the etcd counter short of Postgres.
#[tokio::test]
async fn a_reserve_whose_stm_claim_was_withdrawn_gives_its_units_back() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("sloe", 1, Some(Strategy::Stm)).await;
    let other = new_order_id();
    let held = app
        .reserve(&other, &[("sloe", 1)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&held), pb::ReserveOutcome::Reserved);

    let order = new_order_id();
    let mut refused = pause_at(Moment::BeforeUnprepare, order_id(&order));
    let mut granted = pause_at(Moment::BeforeRecord, order_id(&order));
    let spawn_reserve = || app.spawn_reserve(&order, &[("sloe", 1)], Strategy::Stm);
    let a = spawn_reserve();
    arrived(&mut refused, "A").await;
    app.release(&other).await.unwrap();
    assert_eq!(app.stm_counter("sloe").await, Some(1), "the unit is back");
    let b = spawn_reserve();
    arrived(&mut granted, "B").await;
    assert_eq!(app.stm_counter("sloe").await, Some(0), "B took it in etcd");

    refused.resume.send(()).unwrap();
    let a = a.await.unwrap().expect("A answers");
    assert_eq!(outcome(&a), pb::ReserveOutcome::OutOfStock);
    granted.resume.send(()).unwrap();
    match b.await.unwrap() {
        Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        Ok(b) => panic!("B answered {:?}, yet its claim is gone", outcome(&b)),
    }
    assert_eq!(
        app.stm_counter("sloe").await,
        Some(1),
        "B gave its etcd unit back"
    );
    assert_eq!(reservation_state(&app, &order).await, None);
    // A retry of the order now reserves normally.
    let retry = app
        .reserve(&order, &[("sloe", 1)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&retry), pb::ReserveOutcome::Reserved);
    assert_eq!(app.stm_counter("sloe").await, Some(0));
    app.truth("sloe").await.assert_consistent(1);
    app.stop().await;
}

/// Two Reserves of one order racing a flash sale's opening (what two same-key
/// CreateOrders become), stock equal to the cart and the customer's limit equal to it
/// too: A arrives before the sale opens and is held once it has consulted the order's
/// row, before it would wait at the sale's barrier; the sale opens; B arrives and
/// reserves; A goes on through the open barrier. Both must answer RESERVED for the one
/// reservation — not "out of stock" (the units are the order's own) and not "over the
/// limit" (the purchase is the order's own, counted once).
#[tokio::test]
async fn same_order_reserves_around_a_sales_opening_make_one_reservation() {
    let app = TestInventory::spawn().await;
    for strategy in [
        Strategy::MutexUnfenced,
        Strategy::Mutex,
        Strategy::Stm,
        Strategy::Pg,
    ] {
        let (sku, sale) = (format!("fig-{strategy}"), format!("sale-{strategy}"));
        app.set_stock_as(&sku, 3, Some(strategy)).await;
        app.create_sale(&sale, 3).await;
        let order = new_order_id();
        let mut pause = pause_at(Moment::AfterOwnRow, order_id(&order));
        let a = {
            let mut client = app.client();
            let request = pb::ReserveRequest {
                customer_id: "carol".into(),
                sale_id: Some(sale.clone()),
                ..crate::helpers::reserve_request(&order, &[(&sku, 3)], strategy)
            };
            tokio::spawn(async move { client.reserve(request).await.map(|r| r.into_inner()) })
        };
        arrived(&mut pause, "A").await;

        app.open_sale(&sale).await;
        let b = app
            .reserve_in_sale(&order, &[(&sku, 3)], strategy, &sale, "carol")
            .await
            .unwrap();
        assert_eq!(
            outcome(&b),
            pb::ReserveOutcome::Reserved,
            "{strategy}: {}",
            b.reason
        );

        pause.resume.send(()).unwrap();
        let a = a.await.unwrap().expect("A answers");
        assert_eq!(
            outcome(&a),
            pb::ReserveOutcome::Reserved,
            "{strategy}: A was told {:?} ({}) for its own order's reservation",
            outcome(&a),
            a.reason
        );
        let truth = app.truth(&sku).await;
        truth.assert_consistent(3);
        assert_eq!((truth.reserved(), truth.promised()), (3, 3), "{strategy}");
        assert_eq!(
            app.purchased(&sale, "carol").await,
            3,
            "{strategy}: counted once"
        );
    }
    app.stop().await;
}

/// A Commit of an order holding SKUs A and B, sent while another order's Reserve holds
/// A's stock row (taken, the Reserve held before it takes B). The Commit must wait
/// for A without holding B: it locks stock rows in SKU order, as a Reserve does. (If
/// it held B, the Reserve would wait for B and the Commit for A: Postgres would end
/// one of them with a deadlock error.) The test lets the Reserve go on only once
/// Postgres shows the Commit waiting for a lock.
#[tokio::test]
async fn a_commit_waits_for_a_reserve_holding_its_first_sku_without_holding_the_next() {
    let app = TestInventory::spawn().await;
    for sku in ["lock-a", "lock-b"] {
        app.set_stock_as(sku, 10, Some(Strategy::Pg)).await;
    }
    let cart = [("lock-a", 1), ("lock-b", 1)];
    let held = new_order_id();
    let r = app.reserve(&held, &cart, Strategy::Pg).await.unwrap();
    assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);

    let reserving = new_order_id();
    let mut pause = pause_at(Moment::LineTaken, order_id(&reserving));
    let reserve = app.spawn_reserve(&reserving, &cart, Strategy::Pg);
    arrived(&mut pause, "the Reserve").await;
    let commit = {
        let mut client = app.client();
        let request = pb::CommitRequest {
            order_id: held.clone(),
        };
        tokio::spawn(async move { client.commit(request).await.map(|r| r.into_inner()) })
    };
    // Postgres says when the Commit waits for a lock (the Reserve's, on A).
    let waiting = "SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND query LIKE '%WITH committed AS%'";
    tokio::time::timeout(Duration::from_secs(30), async {
        while sqlx::query_scalar::<_, i64>(waiting)
            .fetch_one(&app.pool)
            .await
            .unwrap()
            == 0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the Commit waits for the Reserve's lock on A");
    pause.resume.send(()).unwrap();

    let reserved = reserve.await.unwrap().expect("the Reserve answers");
    assert_eq!(outcome(&reserved), pb::ReserveOutcome::Reserved);
    let committed = commit.await.unwrap().expect("the Commit answers");
    assert_eq!(committed.state, pb::ReservationState::Committed as i32);
    for sku in ["lock-a", "lock-b"] {
        let t = app.truth(sku).await;
        t.assert_consistent(10);
        assert_eq!((t.available(), t.reserved(), t.sold()), (8, 1, 1), "{sku}");
    }
    app.stop().await;
}
