//! Semaphore: at most N holders, FIFO hand-off, release on lease loss, cancellation,
//! try_acquire, permit-count agreement, invalid input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::etcd_client::{Txn, TxnOp};
use coord::{Error, Permit, Semaphore};

use crate::common::{client, eventually, keys_under, session, unique};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn never_more_than_n_holders_and_n_is_reached() {
    const N: usize = 3;
    let name = unique("sem-concurrency");
    let (current, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (name, current, max) = (name.clone(), current.clone(), max.clone());
        tasks.push(tokio::spawn(async move {
            let s = session(10).await;
            let sem = Semaphore::new(&s, &name, N).unwrap();
            for _ in 0..4 {
                let permit = sem.acquire().await.unwrap();
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                assert!(now <= N, "{now} holders of {N} permits");
                tokio::time::sleep(Duration::from_millis(30)).await;
                current.fetch_sub(1, Ordering::SeqCst);
                permit.release().await.unwrap();
            }
            s.close().await.unwrap();
        }));
    }
    for t in tasks {
        coord::timeout(Duration::from_secs(30), async {
            t.await.unwrap();
            Ok(())
        })
        .await
        .unwrap();
    }
    let max = max.load(Ordering::SeqCst);
    assert!(max <= N);
    assert_eq!(
        max, N,
        "with 8 contenders all {N} permits were in use at once"
    );
    assert!(keys_under(&client().await, &name).await.is_empty());
}

/// Spawns `acquire()` and waits until its key is queued (so spawn order is queue order).
async fn queue_waiter(
    sem: Semaphore,
    name: &str,
    keys_before: usize,
) -> tokio::task::JoinHandle<coord::Result<Permit>> {
    let waiter = tokio::spawn(async move { sem.acquire().await });
    let cl = client().await;
    eventually(LIMIT, "the waiter is queued", || {
        let (cl, name) = (cl.clone(), name.to_owned());
        async move { keys_under(&cl, &name).await.len() == keys_before + 1 }
    })
    .await;
    waiter
}

#[tokio::test]
async fn any_holder_leaving_lets_the_first_waiter_in_and_the_line_moves_up() {
    let name = unique("sem-fifo");
    let s = session(10).await;
    let sem = Semaphore::new(&s, &name, 2).unwrap();
    let oldest = sem.acquire().await.unwrap();
    let younger = sem.acquire().await.unwrap();
    let mut waiters = Vec::new();
    for i in 0..3 {
        let other = session(10).await;
        waiters.push(queue_waiter(Semaphore::new(&other, &name, 2).unwrap(), &name, 2 + i).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(waiters.iter().all(|w| !w.is_finished()));

    // The *younger* holder leaves: the first waiter must notice (it watches all holders,
    // not just the oldest).
    younger.release().await.unwrap();
    let first = waiters.remove(0);
    let p1 = coord::timeout(LIMIT, async { first.await.unwrap() })
        .await
        .expect("first waiter gets the freed permit");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "still only 2 permits"
    );

    // The second waiter has become first; the oldest holder leaves and it gets in.
    oldest.release().await.unwrap();
    let second = waiters.remove(0);
    let p2 = coord::timeout(LIMIT, async { second.await.unwrap() })
        .await
        .expect("second waiter moves up and gets in");
    assert!(p2.fencing_token() > p1.fencing_token());
    assert!(!waiters[0].is_finished());
    p1.release().await.unwrap();
    let third = waiters.remove(0);
    let p3 = coord::timeout(LIMIT, async { third.await.unwrap() })
        .await
        .expect("third waiter gets in");
    p2.release().await.unwrap();
    p3.release().await.unwrap();
    assert!(keys_under(&client().await, &name).await.is_empty());
}

#[tokio::test]
async fn permits_are_released_when_the_holders_lease_is_revoked() {
    let name = unique("sem-revoke");
    let (a, b) = (session(10).await, session(10).await);
    let sem_a = Semaphore::new(&a, &name, 3).unwrap();
    let held: Vec<Permit> = vec![
        sem_a.acquire().await.unwrap(),
        sem_a.acquire().await.unwrap(),
        sem_a.acquire().await.unwrap(),
    ];
    let sem_b = Semaphore::new(&b, &name, 3).unwrap();
    let err = sem_b.try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    assert_eq!(sem_b.in_use().await.unwrap(), 3);
    let waiter = queue_waiter(sem_b.clone(), &name, 3).await;
    client().await.lease_revoke(a.lease()).await.unwrap();
    let permit = coord::timeout(LIMIT, async { waiter.await.unwrap() })
        .await
        .expect("B gets a permit once A's lease is gone");
    // A's permits are fenced off and report the loss.
    let fenced = b
        .client()
        .txn(Txn::new().when([held[0].is_owner()]).and_then([TxnOp::put(
            format!("{name}-data"),
            "stale",
            None,
        )]))
        .await
        .unwrap();
    assert!(!fenced.succeeded());
    for p in held {
        assert!(matches!(p.release().await, Err(Error::OwnershipLost(_))));
    }
    // Two more permits are free now.
    let more = [
        sem_b.try_acquire().await.unwrap(),
        sem_b.try_acquire().await.unwrap(),
    ];
    assert!(matches!(sem_b.try_acquire().await, Err(Error::Locked(_))));
    permit.release().await.unwrap();
    for p in more {
        p.release().await.unwrap();
    }
}

#[tokio::test]
async fn a_waiter_whose_lease_is_revoked_gets_session_expired() {
    let name = unique("sem-waiter-expiry");
    let (a, b) = (session(10).await, session(10).await);
    let holder = Semaphore::new(&a, &name, 1)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let waiter = queue_waiter(Semaphore::new(&b, &name, 1).unwrap(), &name, 1).await;
    client().await.lease_revoke(b.lease()).await.unwrap();
    let result = coord::timeout(LIMIT, async { waiter.await.unwrap() }).await;
    assert!(
        matches!(result, Err(Error::SessionExpired(_))),
        "expected SessionExpired, got {result:?}"
    );
    holder.release().await.unwrap();
}

#[tokio::test]
async fn dropped_acquire_leaves_nothing_and_blocks_nobody() {
    let name = unique("sem-cancel");
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let holder = Semaphore::new(&a, &name, 1)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let sem_b = Semaphore::new(&b, &name, 1).unwrap();
    let err = coord::timeout(Duration::from_millis(300), sem_b.acquire())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    for _ in 0..20 {
        let _ = tokio::time::timeout(Duration::from_micros(50), sem_b.acquire()).await;
    }
    let cl = client().await;
    eventually(LIMIT, "only the holder's key remains", || {
        let (cl, name, key) = (cl.clone(), name.clone(), holder.key().to_owned());
        async move { keys_under(&cl, &name).await == vec![key] }
    })
    .await;
    let waiter = queue_waiter(Semaphore::new(&c, &name, 1).unwrap(), &name, 1).await;
    drop(holder); // released in the background
    coord::timeout(LIMIT, async { waiter.await.unwrap() })
        .await
        .expect("C gets the permit")
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn try_acquire_fails_fast_when_full_and_leaves_nothing() {
    let name = unique("sem-try");
    let (a, b) = (session(10).await, session(10).await);
    let sem_a = Semaphore::new(&a, &name, 2).unwrap();
    let p1 = sem_a.try_acquire().await.unwrap();
    let p2 = sem_a.try_acquire().await.unwrap();
    // Key layout: <name>/<lease hex>_<unique>, value = permit count.
    assert!(p1.key().starts_with(&format!("{name}/{:x}_", a.lease())));
    let err = Semaphore::new(&b, &name, 2)
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    let cl = client().await;
    eventually(LIMIT, "the refused key is gone", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 2 }
    })
    .await;
    p1.release().await.unwrap();
    let p3 = Semaphore::new(&b, &name, 2)
        .unwrap()
        .try_acquire()
        .await
        .unwrap();
    p2.release().await.unwrap();
    p3.release().await.unwrap();
}

#[tokio::test]
async fn a_user_with_a_different_permit_count_is_refused() {
    let name = unique("sem-disagree");
    let (a, b) = (session(10).await, session(10).await);
    let p = Semaphore::new(&a, &name, 2)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let sem_b = Semaphore::new(&b, &name, 3).unwrap();
    for result in [sem_b.try_acquire().await, sem_b.acquire().await] {
        match result {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains('2'), "{msg}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    let cl = client().await;
    eventually(LIMIT, "the refused keys are gone", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 1 }
    })
    .await;
    p.release().await.unwrap();
    // Once nobody uses it, a new count may be chosen.
    sem_b.try_acquire().await.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn zero_permits_and_empty_names_are_invalid() {
    let s = session(10).await;
    assert!(matches!(
        Semaphore::new(&s, &unique("sem-zero"), 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Semaphore::new(&s, "", 1),
        Err(Error::InvalidArgument(_))
    ));
}
