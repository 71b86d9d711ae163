//! Fencing: a lock holder whose lease expired while it was paused must not write.

use std::collections::BTreeMap;
use std::time::Duration;

use coord::{EtcdConfig, Session};
use inventory_service::repository::{InventoryDb, ReserveDbError, ReserveInput, StockCheck};
use shop_common::domain::{Cart, OrderId, Sku, Strategy};
use shop_proto::v1 as pb;

use crate::helpers::{new_order_id, outcome, TestInventory};

#[tokio::test]
async fn a_stale_lock_holder_is_rejected_by_the_fenced_write() {
    let app = TestInventory::spawn().await;
    app.set_stock("melon", 10).await;
    let lock_name = format!("{}/locks/sku/melon", app.etcd_prefix);

    // Holder A takes the SKU's lock (the same name the service's mutex strategy uses)
    // and reads the stock; then it "pauses".
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

    // B (the service, under its own session) now gets the lock and writes with a
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
    let after_b = app
        .client()
        .get_stock(pb::GetStockRequest {
            sku: "melon".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        after_b.fence_token > stale_token,
        "B's token {} must exceed A's {stale_token}",
        after_b.fence_token
    );

    // A wakes up, still believing it holds the lock, and makes its write with its
    // token: the database rejects it and nothing of A's reservation is stored.
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
            StockCheck::Fenced {
                tokens: &tokens,
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
