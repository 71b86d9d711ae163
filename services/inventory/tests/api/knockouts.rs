//! Knockouts: each guard is shown to carry the weight. Built with a test-only feature
//! `knockout-<guard>` (never in a normal build) that removes exactly that guard, each
//! test runs the load the guard exists for and asserts that the auditor — the
//! conservation and oversell checks on the database — reports a violation. Without
//! the feature a test does not exist. `scripts/knockouts.sh` builds and runs each one
//! and prints what the auditor saw (the `KNOCKOUT` line each test prints).

#![allow(dead_code)]

use std::time::Duration;

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;

use crate::helpers::{new_order_id, outcome, TestInventory, Truth};

/// What the auditor found on one SKU stocked with `stocked` units: SKUs whose
/// counters do not add up (0 or 1) plus units promised beyond the stock.
pub(crate) fn violations(truth: &Truth, stocked: i64) -> i64 {
    let broken = i64::from(truth.check(stocked).is_err());
    broken + (truth.promised() - stocked).max(0)
}

/// Prints the line `scripts/knockouts.sh` reads, and asserts the auditor caught it.
pub(crate) fn report(guard: &str, scenario: &str, truth: &Truth, stocked: i64) {
    let found = violations(truth, stocked);
    eprintln!("KNOCKOUT guard={guard} scenario={scenario:?} violations={found}");
    assert!(
        found > 0,
        "{guard} knocked out, yet the auditor saw nothing: {:?}",
        truth.check(stocked)
    );
}

/// `buyers` concurrent Reserves of one unit each of one SKU stocked with `stock`,
/// asking for `asked(i)`; the SKU guarded by `guard`. Returns the SKU's truth.
async fn rush(
    app: &TestInventory,
    sku: &str,
    guard: Strategy,
    stock: i64,
    buyers: usize,
    asked: impl Fn(usize) -> Strategy,
) -> Truth {
    app.set_stock_as(sku, stock, Some(guard)).await;
    let replies = futures::future::join_all((0..buyers).map(|i| {
        let strategy = asked(i);
        async move { app.reserve(&new_order_id(), &[(sku, 1)], strategy).await }
    }))
    .await;
    let reserved = replies
        .iter()
        .filter(|r| matches!(r, Ok(r) if outcome(r) == pb::ReserveOutcome::Reserved))
        .count();
    let failed = replies.iter().filter(|r| r.is_err()).count();
    eprintln!("{sku}: {reserved} of {buyers} Reserves reserved, {failed} failed, stock {stock}");
    app.truth(sku).await
}

/// A think time that makes overlapping critical sections certain, not lucky.
async fn spawn_slow() -> TestInventory {
    TestInventory::spawn_with(|s| s.think_time = Duration::from_millis(20)).await
}

/// The etcd lock of `mutex-unfenced`: without it, its critical section is `none`'s.
#[cfg(feature = "knockout-lock")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_etcd_lock_mutex_unfenced_oversells() {
    let app = spawn_slow().await;
    let truth = rush(&app, "ko-lock", Strategy::MutexUnfenced, 10, 40, |_| {
        Strategy::MutexUnfenced
    })
    .await;
    report(
        "etcd-lock",
        "flash sale, 40 Reserves for 10 units",
        &truth,
        10,
    );
    app.stop().await;
}

/// The fencing token of `mutex`: the in-section pause oversells without it.
#[cfg(feature = "knockout-fencing")]
#[tokio::test]
async fn without_the_fencing_token_a_paused_holder_oversells() {
    let run = crate::fencing::pause_inside_the_critical_section(Strategy::Mutex).await;
    report(
        "fencing-token",
        "holder paused inside its section past its lease",
        &run.truth,
        1,
    );
    run.app.stop().await;
}

/// The SKU's own strategy: without it, a client's `none` undoes a guarded SKU's
/// decrements (the scenario).
#[cfg(feature = "knockout-sku-strategy")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_skus_strategy_mixed_requests_oversell() {
    let app = spawn_slow().await;
    let truth = rush(&app, "ko-mixed", Strategy::Pg, 50, 120, |i| {
        if i % 6 == 0 {
            Strategy::None
        } else {
            Strategy::Pg
        }
    })
    .await;
    report(
        "sku-strategy",
        "120 Reserves for 50 pg units, every sixth asking for none",
        &truth,
        50,
    );
    app.stop().await;
}

/// `pg`'s conditional update. Knocked out alone, the `available >= 0` CHECK still
/// refuses the oversell (the CHECK is a second guard); with the CHECK dropped as well
/// (in this test's own database) the auditor sees it.
#[cfg(feature = "knockout-pg-condition")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_conditional_update_pg_oversells() {
    let app = spawn_slow().await;
    sqlx::query("ALTER TABLE stock DROP CONSTRAINT stock_available_check")
        .execute(&app.pool)
        .await
        .unwrap();
    let truth = rush(&app, "ko-pg", Strategy::Pg, 10, 40, |_| Strategy::Pg).await;
    report(
        "pg-conditional-update",
        "flash sale, 40 Reserves for 10 units (CHECK dropped too)",
        &truth,
        10,
    );
    app.stop().await;
}

/// STM's revision compare: without it, two Reserves that read the same etcd counter
/// both commit their decrement (a lost update in etcd). Within one process stm
/// Reserves of a SKU take turns, so the race is between replicas: the Reserves
/// alternate between two. Postgres's `available >= 0` CHECK is the stm strategy's
/// backstop and would refuse the excess, so it is dropped in this test's own database
/// too.
#[cfg(feature = "knockout-stm-compare")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_revision_compare_stm_oversells() {
    let app = spawn_slow().await;
    let (replica, replica_client) = app.spawn_replica().await;
    sqlx::query("ALTER TABLE stock DROP CONSTRAINT stock_available_check")
        .execute(&app.pool)
        .await
        .unwrap();
    app.set_stock_as("ko-stm", 10, Some(Strategy::Stm)).await;
    let clients = [app.client(), replica_client];
    futures::future::join_all((0..40).map(|i| {
        let mut client = clients[i % 2].clone();
        async move {
            client
                .reserve(crate::helpers::reserve_request(
                    &new_order_id(),
                    &[("ko-stm", 1)],
                    Strategy::Stm,
                ))
                .await
        }
    }))
    .await;
    let truth = app.truth("ko-stm").await;
    report(
        "stm-revision-compare",
        "flash sale on two replicas, 40 Reserves for 10 units (CHECK dropped too)",
        &truth,
        10,
    );
    replica.stop().await.unwrap();
    app.stop().await;
}

/// The same knockout under `mutex`: the fencing token alone keeps it from
/// overselling — concurrent holders refuse each other (ABORTED) instead. Fencing makes
/// the strategy safe; the lock makes it live.
#[cfg(feature = "knockout-lock")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_etcd_lock_mutex_is_still_safe_by_its_fencing() {
    let app = spawn_slow().await;
    let truth = rush(&app, "ko-lock-fenced", Strategy::Mutex, 10, 40, |_| {
        Strategy::Mutex
    })
    .await;
    eprintln!(
        "mutex without its lock: violations={}",
        violations(&truth, 10)
    );
    assert_eq!(violations(&truth, 10), 0, "{:?}", truth.check(10));
    app.stop().await;
}
