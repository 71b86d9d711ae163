//! Fencing: a lock holder whose lease expired while it was paused must not write.
//!
//! The deterministic experiment: a holder is held *inside* its critical section
//! (after its read, before its write; the service announces the moment through the
//! `test-hooks` feature), its lease is revoked (what expiry does, on demand), a second
//! holder takes the lock and sells, then the first resumes. `mutex-unfenced` then
//! oversells (conservation breaks); `mutex` refuses the stale write.

use std::collections::BTreeMap;
use std::time::Duration;

use coord::etcd_client::GetOptions;
use coord::{EtcdConfig, Session};
use inventory_service::hooks::pause_in_section;
use inventory_service::repository::{Guard, InventoryDb, ReserveDbError, ReserveInput, StockCheck};
use shop_common::domain::{Cart, OrderId, Sku, Strategy};
use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{new_order_id, outcome, TestInventory, Truth};

#[tokio::test]
async fn a_stale_lock_holder_is_refused_by_its_read() {
    let app = TestInventory::spawn().await;
    app.set_stock("melon", 10).await;
    let lock_name = format!("{}/locks/sku/melon", app.etcd_prefix);

    // Holder A takes the SKU's lock (the same name the service's mutex strategy uses);
    // then it "pauses" before it even reads.
    let mut etcd = EtcdConfig::new(&shop_test_support::etcd_endpoints())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let session_a = Session::builder(etcd.clone())
        .ttl(30)
        .build()
        .await
        .unwrap();
    let guard_a = coord::Mutex::new(&session_a, &lock_name)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let stale_token = guard_a.fencing_token();

    // While A is paused its lease runs out. Revoking it is the same event, on demand:
    // etcd deletes A's lock key and the lock passes on.
    etcd.lease_revoke(session_a.lease()).await.unwrap();

    // B (the service, under its own session) now gets the lock and sells with a
    // newer token.
    let order_b = new_order_id();
    let r = coord::timeout(Duration::from_secs(10), async {
        Ok(app
            .reserve(&order_b, &[("melon", 1)], Strategy::Mutex)
            .await)
    })
    .await
    .expect("B gets the lock once A's lease is gone")
    .unwrap();
    assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);
    let after_b = app.get_stock("melon").await;
    assert!(
        after_b.fence_token > stale_token,
        "B's token {} must exceed A's {stale_token}",
        after_b.fence_token
    );

    // A wakes up, still believing it holds the lock, and runs its critical section
    // with its token: the row already knows a newer one, so A's read is refused and
    // nothing of A's reservation is stored.
    let db = InventoryDb::new(app.pool.clone());
    let order_a = OrderId::new_random();
    let cart = Cart::parse("items", [("melon", 2)]).unwrap();
    let tokens = BTreeMap::from([(Sku::parse("sku", "melon").unwrap(), stale_token)]);
    let err = db
        .reserve(
            ReserveInput {
                order: order_a,
                cart: &cart,
                strategy: Strategy::Mutex,
                buyer: None,
            },
            StockCheck::Section {
                guard: Guard::Fenced(&tokens),
                think_time: Duration::ZERO,
            },
        )
        .await
        .unwrap_err();
    match err {
        ReserveDbError::StaleFencingToken { token, current, .. } => {
            assert_eq!(token, stale_token);
            assert_eq!(current, after_b.fence_token);
        }
        other => panic!("expected a stale-token rejection, got {other:?}"),
    }
    let t = app.truth("melon").await;
    assert_eq!(
        (t.available(), t.reserved()),
        (9, 1),
        "only B's unit is taken"
    );
    t.assert_consistent(10);
    assert_eq!(
        db.reservation_state(order_a).await.unwrap(),
        None,
        "A left no reservation"
    );

    // A's unlock reports what happened instead of deleting B's key.
    let unlocked = guard_a.unlock().await;
    assert!(
        matches!(unlocked, Err(coord::Error::OwnershipLost(_))),
        "{unlocked:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_current_token_writes_and_is_recorded() {
    let app = TestInventory::spawn().await;
    app.set_stock("grape", 3).await;
    let r = app
        .reserve(&new_order_id(), &[("grape", 1)], Strategy::Mutex)
        .await
        .unwrap();
    assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved);
    let first = app.truth("grape").await;
    let token_1: i64 = sqlx::query_scalar("SELECT fence_token FROM stock WHERE sku = 'grape'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(token_1 > 0);
    app.reserve(&new_order_id(), &[("grape", 1)], Strategy::Mutex)
        .await
        .unwrap();
    let token_2: i64 = sqlx::query_scalar("SELECT fence_token FROM stock WHERE sku = 'grape'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(token_2 > token_1, "every acquisition carries a newer token");
    assert_eq!(first.available(), 2);
    app.stop().await;
}

/// What happened in one run of the in-section pause.
pub(crate) struct PausedRun {
    pub app: TestInventory,
    /// The paused holder's Reserve, once resumed.
    pub first: Result<pb::ReserveResponse, tonic::Status>,
    pub truth: Truth,
}

/// One unit of a SKU guarded by `strategy`. Holder A's Reserve is held inside its
/// critical section (it has read the one unit); its lease is revoked; holder B
/// reserves (retrying while the service notices its session is gone and starts a
/// new one) and gets the unit; then A resumes and makes its write.
pub(crate) async fn pause_inside_the_critical_section(strategy: Strategy) -> PausedRun {
    let app = TestInventory::spawn().await;
    app.set_stock_as("kiwi", 1, Some(strategy)).await;

    let order_a = new_order_id();
    let pause = pause_in_section(OrderId::parse("order", &order_a).unwrap());
    let first = app.spawn_reserve(&order_a, &[("kiwi", 1)], strategy);
    tokio::time::timeout(Duration::from_secs(30), pause.inside)
        .await
        .expect("A reaches its critical section")
        .unwrap();

    // A holds the lock and has read "1 available". Its lease expires now.
    let mut etcd = app.etcd().await;
    let lock_prefix = format!("{}/locks/sku/kiwi/", app.etcd_prefix);
    let held = etcd
        .get(lock_prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let lease = held.kvs().first().expect("A's lock key").lease();
    etcd.lease_revoke(lease).await.unwrap();

    // B takes the lock under the service's next session and sells the unit.
    let order_b = new_order_id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match app.reserve(&order_b, &[("kiwi", 1)], strategy).await {
            Ok(r) => {
                assert_eq!(outcome(&r), pb::ReserveOutcome::Reserved, "{r:?}");
                break;
            }
            Err(status) if tokio::time::Instant::now() < deadline => {
                tracing::info!(?status, "B: not yet (the old session is still in use)");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("B never reserved: {status:?}"),
        }
    }

    // A wakes up, still believing it holds the lock, and writes.
    pause.resume.send(()).unwrap();
    let first = first.await.unwrap();
    let truth = app.truth("kiwi").await;
    PausedRun { app, first, truth }
}

#[tokio::test]
async fn unfenced_a_holder_paused_past_its_lease_oversells() {
    let run = pause_inside_the_critical_section(Strategy::MutexUnfenced).await;
    let first = run.first.expect("nothing stops A's write");
    assert_eq!(outcome(&first), pb::ReserveOutcome::Reserved);
    // Two buyers hold the one unit: the auditor's conservation check says so.
    let broken = run.truth.check(1).unwrap_err();
    assert!(
        broken.contains("available 0 + reserved 2 + sold 0 != 1 stocked"),
        "{broken}"
    );
    assert_eq!(run.truth.promised(), 2, "two reservations of the one unit");
    run.app.stop().await;
}

#[tokio::test]
async fn fenced_the_paused_holders_stale_write_is_refused() {
    let run = pause_inside_the_critical_section(Strategy::Mutex).await;
    let refused = run.first.expect_err("A's write carries a stale token");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(
        refused.message().contains("stale fencing token"),
        "{}",
        refused.message()
    );
    run.truth.check(1).unwrap();
    assert_eq!((run.truth.available(), run.truth.reserved()), (0, 1));
    run.app.stop().await;
}
