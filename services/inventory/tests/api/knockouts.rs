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

/// Drops the `available >= 0` CHECK in this test's own database: the second guard of
/// `pg` and `stm`, which would otherwise hide their first guard's knockout.
async fn drop_the_available_check(app: &TestInventory) {
    sqlx::query("ALTER TABLE stock DROP CONSTRAINT stock_available_check")
        .execute(&app.pool)
        .await
        .unwrap();
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
    drop_the_available_check(&app).await;
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
    drop_the_available_check(&app).await;
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

/// The per-customer limit (`pg`, `mutex`: the conditional upsert on the customer's
/// count): one customer's concurrent orders in a sale with a limit of 2.
#[cfg(feature = "knockout-customer-limit")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_limit_one_customer_buys_past_it() {
    let app = spawn_slow().await;
    app.set_stock_as("ko-limit", 100, Some(Strategy::Pg)).await;
    app.create_sale("ko-sale", 2).await;
    app.open_sale("ko-sale").await;
    futures::future::join_all((0..10).map(|_| {
        let app = &app;
        async move {
            app.reserve_in_sale(
                &new_order_id(),
                &[("ko-limit", 1)],
                Strategy::Pg,
                "ko-sale",
                "greedy",
            )
            .await
        }
    }))
    .await;
    // The auditor's question, asked of inventory's reservations: customers holding
    // more than the limit in the sale.
    let over: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT r.customer_id FROM reservations r JOIN reservation_lines l USING (order_id)
             WHERE r.sale_id = 'ko-sale' AND r.state IN ('RESERVED', 'COMMITTED')
             GROUP BY r.customer_id HAVING sum(l.quantity) > 2) over",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    eprintln!("KNOCKOUT guard=customer-limit scenario=\"10 concurrent orders of one customer, limit 2\" violations={over}");
    assert!(
        over > 0,
        "the limit knocked out, yet no customer is over it"
    );
    app.stop().await;
}

/// The reservation tombstone: a Release that overtakes its Reserve must leave a
/// RELEASED row, so the late Reserve takes nothing (no hanging reservation).
#[cfg(feature = "knockout-tombstone")]
#[tokio::test]
async fn without_the_tombstone_a_late_reserve_hangs_on_to_stock() {
    let app = TestInventory::spawn().await;
    app.set_stock_as("ko-tomb", 20, Some(Strategy::Pg)).await;
    let mut hanging = 0;
    for _ in 0..10 {
        let order = new_order_id();
        let released = app.release(&order).await.unwrap();
        assert_eq!(released.state, pb::ReservationState::Released as i32);
        app.reserve(&order, &[("ko-tomb", 1)], Strategy::Pg)
            .await
            .unwrap();
        // Status agreement: an order whose Release was answered RELEASED holds nothing.
        let held: Option<String> =
            sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1::uuid")
                .bind(&order)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if held.as_deref() == Some("RESERVED") {
            hanging += 1;
        }
    }
    eprintln!("KNOCKOUT guard=reservation-tombstone scenario=\"10 Releases overtaking their Reserve\" violations={hanging}");
    assert!(hanging > 0, "the tombstone knocked out, yet nothing hangs");
    app.stop().await;
}
