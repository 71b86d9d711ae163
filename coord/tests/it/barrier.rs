//! Barrier: released exactly on release, not by compaction or a broken watch,
//! hold twice, absent barrier, lease-bound holds, cancellation.

use std::time::Duration;

use coord::{Barrier, Error};

use crate::common::{client, eventually, session, unique};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn wait_on_an_absent_barrier_returns_at_once() {
    let barrier = Barrier::new(client().await, &unique("barrier-absent")).unwrap();
    coord::timeout(LIMIT, barrier.wait()).await.unwrap();
    assert!(!barrier.is_up().await.unwrap());
}

#[tokio::test]
async fn waiters_are_released_by_release_and_not_before() {
    let name = unique("barrier-release");
    let holder = Barrier::new(client().await, &name).unwrap();
    holder.hold().await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let barrier = Barrier::new(client().await, &name).unwrap();
        waiters.push(tokio::spawn(async move { barrier.wait().await }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "no waiter may pass a held barrier"
    );
    assert!(holder.release().await.unwrap(), "the barrier was up");
    for w in waiters {
        coord::timeout(LIMIT, async { w.await.unwrap() })
            .await
            .expect("released");
    }
    assert!(!holder.release().await.unwrap(), "already down");
}

#[tokio::test]
async fn compaction_during_wait_is_not_a_release() {
    let name = unique("barrier-compact");
    let holder = Barrier::new(client().await, &name).unwrap();
    holder.hold().await.unwrap();
    let barrier = Barrier::new(client().await, &name).unwrap();
    let waiter = tokio::spawn(async move { barrier.wait().await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Write some history, then compact it all away while the waiter waits.
    let mut admin = client().await;
    let mut rev = 0;
    for i in 0..5 {
        let resp = admin
            .put(format!("{name}-noise"), i.to_string(), None)
            .await
            .unwrap();
        rev = resp.header().unwrap().revision();
    }
    admin.compact(rev, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(holder.is_up().await.unwrap());
    assert!(
        !waiter.is_finished(),
        "compaction must not release a waiter while the barrier key exists: {:?}",
        waiter.is_finished()
    );
    holder.release().await.unwrap();
    coord::timeout(LIMIT, async { waiter.await.unwrap() })
        .await
        .expect("released after compaction");
}

#[tokio::test]
async fn holding_a_held_barrier_is_key_exists() {
    let name = unique("barrier-twice");
    let a = Barrier::new(client().await, &name).unwrap();
    let b = Barrier::new(client().await, &name).unwrap();
    let rev = a.hold().await.unwrap();
    assert!(rev > 0);
    let err = b.hold().await.unwrap_err();
    assert!(
        matches!(err, Error::KeyExists(ref k) if *k == name),
        "{err:?}"
    );
    assert!(b.release().await.unwrap(), "anyone may release");
    b.hold().await.unwrap();
    a.release().await.unwrap();
}

#[tokio::test]
async fn a_barrier_held_while_alive_drops_with_its_session() {
    let name = unique("barrier-lease");
    let s = session(10).await;
    let holder = Barrier::new(s.client(), &name).unwrap();
    holder.hold_while_alive(&s).await.unwrap();
    let barrier = Barrier::new(client().await, &name).unwrap();
    let waiter = tokio::spawn(async move { barrier.wait().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    client().await.lease_revoke(s.lease()).await.unwrap();
    coord::timeout(LIMIT, async { waiter.await.unwrap() })
        .await
        .expect("the barrier comes down with the holder's lease");
}

#[tokio::test]
async fn dropped_hold_does_not_leave_the_barrier_up() {
    let name = unique("barrier-cancel");
    let barrier = Barrier::new(client().await, &name).unwrap();
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_micros(50), barrier.hold()).await {
            // Completed in time: a real hold, take it down again.
            Ok(Ok(_)) => {
                barrier.release().await.unwrap();
            }
            // An earlier dropped hold's key not cleaned up yet: fine.
            Ok(Err(Error::KeyExists(_))) => {}
            Ok(Err(e)) => panic!("{e:?}"),
            Err(_) => {}
        }
    }
    let cl = client().await;
    eventually(LIMIT, "no barrier key is left behind", || {
        let b = Barrier::new(cl.clone(), &name).unwrap();
        async move { !b.is_up().await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn dropped_wait_leaves_nothing_and_invalid_names_are_rejected() {
    let name = unique("barrier-wait-cancel");
    let barrier = Barrier::new(client().await, &name).unwrap();
    barrier.hold().await.unwrap();
    let err = coord::timeout(Duration::from_millis(200), barrier.wait())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    assert!(barrier.is_up().await.unwrap());
    barrier.release().await.unwrap();
    assert!(matches!(
        Barrier::new(client().await, ""),
        Err(Error::InvalidArgument(_))
    ));
}
