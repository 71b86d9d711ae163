//! The `stm` strategy: etcd counters decided by one STM transaction per Reserve, the
//! Postgres ledger kept in step, and every way a reservation can be cut off between
//! the two.

use std::sync::Arc;
use std::time::Duration;

use inventory_service::reconcile::sweep_stm_holds;
use inventory_service::repository::{InventoryDb, ReserveInput};
use inventory_service::reservation::Reserver;
use inventory_service::sales::Sales;
use inventory_service::stm::{StmStock, Taken};
use shop_common::coordination::SharedSession;
use shop_common::domain::{Cart, OrderId, Strategy};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_test_support::test_settings;

use crate::helpers::{new_order_id, outcome, reserve_request, TestInventory};

#[tokio::test]
async fn stm_reserves_commits_and_releases_with_the_etcd_counter_in_step() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("kiwi", 5, Some(Strategy::Stm)).await;

    let a = new_order_id();
    let r = app
        .reserve(&a, &[("kiwi", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);
    assert_eq!(r.strategy, pb::Strategy::Stm as i32);
    assert_eq!(app.stm_counter("kiwi").await, Some(3));
    let t = app.truth("kiwi").await;
    assert_eq!((t.available(), t.reserved()), (3, 2));

    // A retry is the same reservation: nothing more is taken anywhere.
    let again = app
        .reserve(&a, &[("kiwi", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&again), pb::ReserveOutcome::Reserved);
    assert_eq!(app.stm_counter("kiwi").await, Some(3));

    // Release gives the units back in both places, once.
    app.release(&a).await.unwrap();
    app.release(&a).await.unwrap();
    assert_eq!(app.stm_counter("kiwi").await, Some(5));
    app.truth("kiwi").await.assert_consistent(5);

    // Commit keeps them taken and drops the hold.
    let b = new_order_id();
    app.reserve(&b, &[("kiwi", 4)], Strategy::Stm)
        .await
        .unwrap();
    app.commit(&b).await.unwrap();
    assert_eq!(app.stm_counter("kiwi").await, Some(1));
    assert_eq!(app.etcd_value(&format!("stm/holds/{b}")).await, None);
    let t = app.truth("kiwi").await;
    assert_eq!((t.available(), t.reserved(), t.sold()), (1, 0, 4));
    t.assert_consistent(5);

    // Out of stock takes nothing and keeps no reservation row.
    let c = new_order_id();
    let short = app
        .reserve(&c, &[("kiwi", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&short), pb::ReserveOutcome::OutOfStock);
    assert!(
        short.reason.contains("kiwi (wanted 2, 1 available)"),
        "{short:?}"
    );
    assert_eq!(app.stm_counter("kiwi").await, Some(1));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations WHERE order_id = $1")
        .bind(uuid::Uuid::parse_str(&c).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_multi_sku_stm_order_takes_every_line_or_none() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("fig", 3, Some(Strategy::Stm)).await;
    app.set_stock_as("lime", 1, Some(Strategy::Stm)).await;
    let short = app
        .reserve(&new_order_id(), &[("fig", 2), ("lime", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&short), pb::ReserveOutcome::OutOfStock);
    // Neither counter moved: the transaction wrote nothing.
    assert_eq!(app.stm_counter("fig").await, None);
    assert_eq!(app.stm_counter("lime").await, None);
    let ok = app
        .reserve(&new_order_id(), &[("fig", 2), ("lime", 1)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&ok), pb::ReserveOutcome::Reserved);
    assert_eq!(app.stm_counter("fig").await, Some(1));
    assert_eq!(app.stm_counter("lime").await, Some(0));
    app.truth("fig").await.assert_consistent(3);
    app.truth("lime").await.assert_consistent(1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stm_sells_exactly_the_stock_across_two_replicas() {
    const BUYERS: usize = 200;
    const STOCK: i64 = 50;
    let app = TestInventory::spawn().await;
    let (replica, replica_client) = app.spawn_replica().await;
    app.set_stock_as("hot-stm", STOCK, Some(Strategy::Stm))
        .await;
    let clients = [app.client(), replica_client];
    let replies = futures::future::join_all((0..BUYERS).map(|i| {
        let mut client = clients[i % 2].clone();
        async move {
            client
                .reserve(reserve_request(
                    &new_order_id(),
                    &[("hot-stm", 1)],
                    Strategy::Stm,
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    }))
    .await;
    let mut reserved = 0;
    for reply in replies {
        match outcome(&reply.expect("every Reserve is answered")) {
            pb::ReserveOutcome::Reserved => reserved += 1,
            pb::ReserveOutcome::OutOfStock => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(
        reserved, STOCK,
        "exactly the stock is sold, across both replicas"
    );
    assert_eq!(app.stm_counter("hot-stm").await, Some(0));
    app.truth("hot-stm").await.assert_consistent(STOCK);
    replica.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_release_that_overtakes_an_stm_reserve_leaves_the_counter_alone() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("pear", 4, Some(Strategy::Stm)).await;
    let order = new_order_id();
    app.release(&order).await.unwrap();
    let late = app
        .reserve(&order, &[("pear", 1)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&late), pb::ReserveOutcome::AlreadyReleased);
    assert_eq!(app.stm_counter("pear").await, None, "etcd was never asked");
    app.truth("pear").await.assert_consistent(4);
    app.stop().await;
}

#[tokio::test]
async fn set_stock_reseeds_the_stm_counter() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("plum", 5, Some(Strategy::Stm)).await;
    let first = new_order_id();
    app.reserve(&first, &[("plum", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(app.stm_counter("plum").await, Some(3));
    // Restock: Postgres now says 10 available (2 still reserved). The counter is from
    // the old stock setting and is re-seeded by the next Reserve.
    app.set_stock_as("plum", 10, Some(Strategy::Stm)).await;
    app.reserve(&new_order_id(), &[("plum", 1)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(app.stm_counter("plum").await, Some(9));
    // The old reservation's release goes to Postgres; etcd's seed already counted
    // it as taken, so the counter does not grow for it.
    app.release(&first).await.unwrap();
    let t = app.truth("plum").await;
    assert_eq!((t.available(), t.reserved()), (11, 1));
    assert_eq!(app.stm_counter("plum").await, Some(9));
    app.stop().await;
}

/// The pieces of the service a test drives step by step, as a Reserve cut off
/// between its Postgres and etcd steps would have left them.
struct Parts {
    db: InventoryDb,
    reserver: Reserver,
    stm: StmStock,
}

async fn parts(app: &TestInventory) -> Parts {
    let settings = test_settings(ServiceName::Inventory, &app.db, &app.etcd_prefix);
    let session = Arc::new(SharedSession::new(settings.etcd));
    let db = InventoryDb::new(app.pool.clone());
    let sales = Arc::new(Sales::new(
        app.pool.clone(),
        session.clone(),
        Duration::from_secs(1),
    ));
    Parts {
        reserver: Reserver::new(
            db.clone(),
            session.clone(),
            sales,
            Duration::ZERO,
            Duration::from_secs(5),
        ),
        stm: StmStock::new(session),
        db,
    }
}

/// Steps 1 and 2 of an stm Reserve (claim, take in etcd), then the "crash".
async fn take_and_crash(parts: &Parts, order: OrderId, cart: &Cart) {
    let input = ReserveInput {
        order,
        cart,
        strategy: Strategy::Stm,
        buyer: None,
    };
    assert!(parts.db.prepare(input).await.unwrap().is_none());
    let seeds = parts.db.stock_snapshot(cart).await.unwrap();
    let taken = parts.stm.take(order, cart, &seeds, None).await.unwrap();
    assert_eq!(taken, Taken::Taken);
}

#[tokio::test]
async fn an_stm_reserve_cut_off_after_etcd_is_undone_by_release_or_finished_by_a_retry() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("date", 6, Some(Strategy::Stm)).await;
    let parts = parts(&app).await;
    let cart = Cart::parse("items", [("date", 2)]).unwrap();

    // Cut off, then the saga compensates: Release gives the etcd units back.
    let undone = OrderId::new_random();
    take_and_crash(&parts, undone, &cart).await;
    assert_eq!(app.stm_counter("date").await, Some(4));
    let released = app.release(&undone.to_string()).await.unwrap();
    assert_eq!(released.state, pb::ReservationState::Released as i32);
    assert_eq!(app.stm_counter("date").await, Some(6));
    // The late end of the cut-off Reserve finds the release and takes nothing.
    let late = app
        .reserve(&undone.to_string(), &[("date", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&late), pb::ReserveOutcome::AlreadyReleased);
    assert_eq!(app.stm_counter("date").await, Some(6));

    // Cut off, then the saga retries: the retry finds its own hold and records it,
    // without taking twice.
    let finished = OrderId::new_random();
    take_and_crash(&parts, finished, &cart).await;
    let retry = app
        .reserve(&finished.to_string(), &[("date", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(outcome(&retry), pb::ReserveOutcome::Reserved);
    assert_eq!(app.stm_counter("date").await, Some(4));
    let t = app.truth("date").await;
    assert_eq!((t.available(), t.reserved()), (4, 2));
    t.assert_consistent(6);
    app.stop().await;
}

#[tokio::test]
async fn the_reconcile_sweep_gives_back_holds_a_crash_left_behind() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("yuzu", 5, Some(Strategy::Stm)).await;
    let parts = parts(&app).await;
    let cart = Cart::parse("items", [("yuzu", 1)]).unwrap();

    // Released in Postgres, but the process died before giving the etcd units back.
    let orphan = OrderId::new_random();
    take_and_crash(&parts, orphan, &cart).await;
    parts.db.release(orphan, None).await.unwrap();
    // Committed, but the hold was never deleted.
    let sold = OrderId::new_random();
    let r = parts
        .reserver
        .reserve(&inventory_service::reservation::ReserveRequest {
            order: sold,
            cart: cart.clone(),
            strategy: Some(Strategy::Stm),
            sale: None,
        })
        .await
        .unwrap();
    assert_eq!(r.1, inventory_service::repository::ReserveOutcome::Reserved);
    parts.db.commit(sold).await.unwrap();
    // Still reserving: must be left alone.
    let holding = OrderId::new_random();
    take_and_crash(&parts, holding, &cart).await;

    // The service's own reconcile job may sweep at the same moment: giving back is
    // one transaction that deletes the hold, so between the two it happens once.
    let settled = sweep_stm_holds(&parts.db, &parts.reserver).await.unwrap();
    assert!(
        settled <= 2,
        "the orphan's and the committed order's holds at most"
    );
    assert_eq!(
        app.stm_counter("yuzu").await,
        Some(3),
        "the orphan's unit is back"
    );
    let hold = |o: OrderId| format!("stm/holds/{o}");
    assert_eq!(app.etcd_value(&hold(orphan)).await, None);
    assert_eq!(app.etcd_value(&hold(sold)).await, None);
    assert!(app.etcd_value(&hold(holding)).await.is_some());
    // A second sweep changes nothing.
    assert_eq!(
        sweep_stm_holds(&parts.db, &parts.reserver).await.unwrap(),
        0
    );
    assert_eq!(app.stm_counter("yuzu").await, Some(3));
    app.stop().await;
}

#[tokio::test]
async fn stm_refuses_when_etcd_is_unreachable_and_writes_nothing() {
    let app = TestInventory::spawn_with(|s| {
        s.common.etcd.config =
            coord::EtcdConfig::new("127.0.0.1:1").expect("an endpoint that refuses");
        s.lock_timeout = Duration::from_millis(500);
    })
    .await;
    app.set_stock_as("fig", 3, Some(Strategy::Stm)).await;
    let order = new_order_id();
    let err = app
        .reserve(&order, &[("fig", 1)], Strategy::Stm)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("nothing was reserved"), "{err:?}");
    let t = app.truth("fig").await;
    assert_eq!((t.available(), t.reserved()), (3, 0));
    app.stop().await;
}
