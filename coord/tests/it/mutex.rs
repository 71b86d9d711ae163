//! Mutex: exclusion, fencing, expiry, cancellation, interop with etcdctl.

use std::process::Stdio;
use std::time::Duration;

use coord::etcd_client::{Txn, TxnOp};
use coord::{Error, Mutex};

use crate::common::{
    client, etcdctl, eventually, keys_under, read_counter, revoke_and_expect_expired, session,
    unique,
};

#[tokio::test]
async fn eight_tasks_times_100_unprotected_increments_end_exact() {
    let name = unique("mutex-counter");
    let counter = format!("{name}-counter");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (name, counter) = (name.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let s = session(10).await;
            let m = Mutex::new(&s, &name).unwrap();
            let mut c = s.client();
            for _ in 0..100 {
                let guard = m.lock().await.unwrap();
                // Read-modify-write with no etcd-side protection: only the lock
                // keeps this from losing updates.
                let v = read_counter(&c, &counter).await;
                c.put(counter.as_str(), (v + 1).to_string(), None)
                    .await
                    .unwrap();
                guard.unlock().await.unwrap();
            }
            s.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(read_counter(&client().await, &counter).await, 800);
}

#[tokio::test]
async fn tasks_sharing_one_session_are_serialised() {
    let name = unique("mutex-shared-session");
    let counter = format!("{name}-counter");
    let s = session(10).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, name, counter) = (s.clone(), name.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let m = Mutex::new(&s, &name).unwrap();
            let mut c = s.client();
            for _ in 0..25 {
                let guard = m.lock().await.unwrap();
                let v = read_counter(&c, &counter).await;
                tokio::task::yield_now().await;
                c.put(counter.as_str(), (v + 1).to_string(), None)
                    .await
                    .unwrap();
                guard.unlock().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(read_counter(&s.client(), &counter).await, 100);
}

#[tokio::test]
async fn key_layout_is_go_compatible() {
    let s = session(10).await;
    let name = unique("mutex-layout");
    let m = Mutex::new(&s, &name).unwrap();
    assert_eq!(m.key(), format!("{name}/{:x}", s.lease()));
    let g = m.lock().await.unwrap();
    assert_eq!(
        keys_under(&s.client(), &name).await,
        vec![m.key().to_owned()]
    );
    g.unlock().await.unwrap();
    assert!(keys_under(&s.client(), &name).await.is_empty());
}

#[tokio::test]
async fn revoked_holder_loses_ownership_and_its_fenced_write_is_rejected() {
    let name = unique("mutex-revoke");
    let data = format!("{name}-data");
    let a = session(10).await;
    let b = session(10).await;
    let guard_a = Mutex::new(&a, &name).unwrap().lock().await.unwrap();
    let token_a = guard_a.fencing_token();

    // A's lease vanishes behind its back (as if it had been paused past its TTL).
    client().await.lease_revoke(a.lease()).await.unwrap();

    let guard_b = coord::timeout(
        Duration::from_secs(5),
        Mutex::new(&b, &name).unwrap().lock(),
    )
    .await
    .expect("B gets the lock once A's lease is gone");
    assert!(guard_b.fencing_token() > token_a, "tokens increase");

    // A, unaware, writes guarded by is_owner: rejected.
    let stale = a
        .client()
        .txn(Txn::new().when([guard_a.is_owner()]).and_then([TxnOp::put(
            data.as_str(),
            "from A",
            None,
        )]))
        .await
        .unwrap();
    assert!(!stale.succeeded(), "stale holder's write must be rejected");
    assert!(!guard_a.is_held().await.unwrap());
    // A's unlock leaves B's key alone and reports that A's ownership was lost.
    let err = guard_a.unlock().await.unwrap_err();
    assert!(matches!(err, Error::OwnershipLost(_)), "{err:?}");
    assert!(guard_b.is_held().await.unwrap());

    let fresh = b
        .client()
        .txn(Txn::new().when([guard_b.is_owner()]).and_then([TxnOp::put(
            data.as_str(),
            "from B",
            None,
        )]))
        .await
        .unwrap();
    assert!(fresh.succeeded());
    guard_b.unlock().await.unwrap();
}

#[tokio::test]
async fn dropped_lock_future_leaves_no_waiter_and_blocks_nobody() {
    let name = unique("mutex-cancel");
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let guard_a = Mutex::new(&a, &name).unwrap().lock().await.unwrap();

    let mb = Mutex::new(&b, &name).unwrap();
    let err = coord::timeout(Duration::from_millis(300), mb.lock())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    let cl = client().await;
    eventually(Duration::from_secs(5), "B's waiter key is removed", || {
        let (cl, name, key) = (cl.clone(), name.clone(), mb.key().to_owned());
        async move { !keys_under(&cl, &name).await.contains(&key) }
    })
    .await;

    // C queues behind A only; when A releases, C gets it (B's abandoned slot is gone).
    let mc = Mutex::new(&c, &name).unwrap();
    let waiter = tokio::spawn(async move { mc.lock().await.map(|g| g.fencing_token()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    guard_a.unlock().await.unwrap();
    let token = coord::timeout(Duration::from_secs(5), async { waiter.await.unwrap() })
        .await
        .expect("C acquires after A");
    assert!(token > 0);
}

#[tokio::test]
async fn dropping_the_future_right_after_it_starts_still_cleans_up() {
    // Drop while the put may still be in flight: the cleanup waits for the put.
    let name = unique("mutex-cancel-early");
    let a = session(10).await;
    let holder = Mutex::new(&a, &name).unwrap().lock().await.unwrap();
    let b = session(10).await;
    let mb = Mutex::new(&b, &name).unwrap();
    for _ in 0..20 {
        let _ = tokio::time::timeout(Duration::from_micros(50), mb.lock()).await;
    }
    let cl = client().await;
    eventually(
        Duration::from_secs(5),
        "only the holder's key remains",
        || {
            let (cl, name, key) = (cl.clone(), name.clone(), holder.key().to_owned());
            async move { keys_under(&cl, &name).await == vec![key] }
        },
    )
    .await;
    holder.unlock().await.unwrap();
}

#[tokio::test]
async fn waiter_whose_session_expires_gets_an_error_not_the_lock() {
    let name = unique("mutex-waiter-expiry");
    let a = session(10).await;
    let b = session(10).await;
    let guard_a = Mutex::new(&a, &name).unwrap().lock().await.unwrap();
    let mb = Mutex::new(&b, &name).unwrap();
    let waiting = tokio::spawn(async move { mb.lock().await.map(|g| g.fencing_token()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    client().await.lease_revoke(b.lease()).await.unwrap();
    let result = coord::timeout(Duration::from_secs(10), async { waiting.await.unwrap() }).await;
    assert!(
        matches!(result, Err(Error::SessionExpired(_))),
        "expected SessionExpired, got {result:?}"
    );
    guard_a.unlock().await.unwrap();
    // And a lock() on an expired session fails at once.
    let err = Mutex::new(&b, &name).unwrap().lock().await.unwrap_err();
    assert!(err.is_session_expired());
}

#[tokio::test]
async fn try_lock_fails_fast_and_leaves_nothing() {
    let name = unique("mutex-try");
    let (a, b) = (session(10).await, session(10).await);
    let guard = Mutex::new(&a, &name).unwrap().try_lock().await.unwrap();
    let err = Mutex::new(&b, &name).unwrap().try_lock().await.unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    let cl = client().await;
    eventually(Duration::from_secs(5), "loser's key removed", || {
        let (cl, name, key) = (cl.clone(), name.clone(), guard.key().to_owned());
        async move { keys_under(&cl, &name).await == vec![key] }
    })
    .await;
    guard.unlock().await.unwrap();
    Mutex::new(&b, &name)
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
}

#[tokio::test]
async fn dropped_guard_releases_in_the_background() {
    let name = unique("mutex-drop-guard");
    let (a, b) = (session(10).await, session(10).await);
    drop(Mutex::new(&a, &name).unwrap().lock().await.unwrap());
    let g = coord::timeout(
        Duration::from_secs(5),
        Mutex::new(&b, &name).unwrap().lock(),
    )
    .await
    .expect("released by drop");
    g.unlock().await.unwrap();
}

#[tokio::test]
async fn empty_name_is_invalid_argument() {
    let s = session(10).await;
    assert!(matches!(Mutex::new(&s, ""), Err(Error::InvalidArgument(_))));
}

#[tokio::test]
async fn excludes_and_is_excluded_by_etcdctl_lock() {
    let name = unique("mutex-etcdctl");
    let endpoints = crate::common::endpoints().join(",");
    // etcdctl holds the lock while its command (sleep 2) runs.
    let mut child = tokio::process::Command::new(etcdctl())
        .args(["--endpoints", &endpoints, "lock", &name, "sleep", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl must be installed (scripts/install-deps.sh) or ETCDCTL set");
    let cl = client().await;
    eventually(Duration::from_secs(10), "etcdctl holds the lock", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { !keys_under(&cl, &name).await.is_empty() }
    })
    .await;
    let s = session(10).await;
    let m = Mutex::new(&s, &name).unwrap();
    assert!(matches!(m.try_lock().await, Err(Error::Locked(_))));
    let guard = coord::timeout(Duration::from_secs(15), m.lock())
        .await
        .expect("coord gets the lock after etcdctl releases");
    assert!(child.wait().await.unwrap().success());

    // Now the other way round: etcdctl must wait for coord.
    let start = std::time::Instant::now();
    let waiter = tokio::process::Command::new(etcdctl())
        .args(["--endpoints", &endpoints, "lock", &name, "true"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let held_for = start.elapsed();
    guard.unlock().await.unwrap();
    let out = waiter.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert!(
        start.elapsed() >= held_for,
        "etcdctl finished only after coord unlocked"
    );
}

#[tokio::test]
async fn waiter_whose_key_is_deleted_gets_an_error_even_while_its_lease_lives() {
    let name = unique("mutex-waiter-key-deleted");
    let (a, b) = (session(10).await, session(10).await);
    let guard_a = Mutex::new(&a, &name).unwrap().lock().await.unwrap();
    let mb = Mutex::new(&b, &name).unwrap();
    let b_key = mb.key().to_owned();
    let waiting = tokio::spawn(async move { mb.lock().await.map(|g| g.fencing_token()) });
    let cl = client().await;
    eventually(Duration::from_secs(5), "B is queued", || {
        let (cl, name, key) = (cl.clone(), name.clone(), b_key.clone());
        async move { keys_under(&cl, &name).await.contains(&key) }
    })
    .await;
    // Someone removes B's key behind its back; B's lease is untouched.
    cl.clone().delete(b_key.as_str(), None).await.unwrap();
    guard_a.unlock().await.unwrap();
    let result = coord::timeout(Duration::from_secs(10), async { waiting.await.unwrap() }).await;
    assert!(
        matches!(result, Err(Error::SessionExpired(_))),
        "a waiter without its key must not get the lock, got {result:?}"
    );
    assert!(!b.is_expired());
}

#[tokio::test]
async fn a_long_line_is_served_in_order_one_at_a_time() {
    // More waiters than a waiter follows by itself (16), so the ones at the back wait
    // for their predecessor alone until they move up.
    const WAITERS: usize = 20;
    let name = unique("mutex-long-line");
    let counter = format!("{name}-counter");
    let holder = session(10).await;
    let first = Mutex::new(&holder, &name).unwrap().lock().await.unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..WAITERS {
        let (name, counter, order) = (name.clone(), counter.clone(), order.clone());
        let s = session(10).await;
        tasks.push(tokio::spawn(async move {
            let guard = Mutex::new(&s, &name).unwrap().lock().await.unwrap();
            order.lock().unwrap().push(guard.fencing_token());
            let mut c = s.client();
            let v = read_counter(&c, &counter).await;
            c.put(counter.as_str(), (v + 1).to_string(), None)
                .await
                .unwrap();
            guard.unlock().await.unwrap();
            s.close().await.unwrap();
        }));
    }
    let cl = client().await;
    eventually(Duration::from_secs(10), "all waiters are queued", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == WAITERS + 1 }
    })
    .await;
    first.unlock().await.unwrap();
    coord::timeout(Duration::from_secs(20), async {
        for t in tasks {
            t.await.unwrap();
        }
        Ok(())
    })
    .await
    .expect("every waiter gets its turn");
    assert_eq!(read_counter(&cl, &counter).await, WAITERS as i64);
    let order = order.lock().unwrap().clone();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "turns follow the queue order: {order:?}"
    );
    assert!(keys_under(&cl, &name).await.is_empty());
}

/// Issue 16, defect 1: an `unlock` dropped while its delete is in flight must still
/// release the key (in the background), not leave it for the session's whole life.
#[tokio::test]
async fn unlock_dropped_in_flight_still_releases_the_key() {
    use futures::FutureExt;
    let s = session(30).await;
    let name = unique("mutex-unlock-dropped");
    let m = Mutex::new(&s, &name).unwrap();
    let guard = m.lock().await.unwrap();
    // Poll once (the delete is started), then drop the future.
    let mut unlock = Box::pin(guard.unlock());
    assert!((&mut unlock).now_or_never().is_none());
    drop(unlock);
    eventually(
        Duration::from_secs(5),
        "the lock key is released",
        || async { keys_under(&s.client(), &name).await.is_empty() },
    )
    .await;
    // And the same session can take the lock again at once.
    let again = tokio::time::timeout(Duration::from_secs(5), m.lock())
        .await
        .expect("relock does not hang")
        .unwrap();
    again.unlock().await.unwrap();
}

/// Issue 16, defect 6: the losing key of `try_lock` is gone when `Err(Locked)` is
/// returned, even if the runtime shuts down right after.
#[test]
fn try_lock_loser_leaves_no_key_after_runtime_shutdown() {
    let name = unique("mutex-try-lock-shutdown");
    let holder_rt = tokio::runtime::Runtime::new().unwrap();
    let (holder, _guard) = holder_rt.block_on(async {
        let s = session(30).await;
        let g = Mutex::new(&s, &name).unwrap().lock().await.unwrap();
        (s, g)
    });
    let loser_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let loser_key = loser_rt.block_on(async {
        let s = session(30).await;
        let m = Mutex::new(&s, &name).unwrap();
        assert!(matches!(m.try_lock().await, Err(Error::Locked(_))));
        m.key().to_owned()
    });
    drop(loser_rt); // runtime shutdown right after Err(Locked)
    let keys = holder_rt.block_on(keys_under(&holder.client(), &name));
    assert!(
        !keys.contains(&loser_key),
        "loser's key left behind: {keys:?}"
    );
}

/// Issue 16, defect 7: a task waiting for the session's local lock (another task of
/// the same session holds the name) returns when the session is lost.
#[tokio::test]
async fn local_lock_wait_ends_when_the_session_is_lost() {
    let s = session(30).await;
    let name = unique("mutex-local-wait-lost");
    let m = Mutex::new(&s, &name).unwrap();
    let _held = m.lock().await.unwrap();
    let waiter = tokio::spawn({
        let m = m.clone();
        async move { m.lock().await.map(|_| ()) }
    });
    revoke_and_expect_expired(&s, waiter).await;
}

/// Issue 16, defect 4: Go uses `name + "/"` verbatim, so a name ending in `/` keeps
/// its slash (etcdctl lock /x/ and coord's Mutex::new(s, "/x/") share keys).
#[tokio::test]
async fn trailing_slash_names_use_go_keys_and_exclude_etcdctl() {
    let s = session(10).await;
    let name = format!("{}/", unique("mutex-trailing-slash"));
    let endpoints = crate::common::endpoints().join(",");
    let m = Mutex::new(&s, &name).unwrap();
    assert_eq!(m.key(), format!("{name}/{:x}", s.lease()));
    let mut child = tokio::process::Command::new(etcdctl())
        .args(["--endpoints", &endpoints, "lock", &name, "sleep", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl");
    let c = s.client();
    eventually(Duration::from_secs(10), "etcdctl holds the lock", || {
        let (c, p) = (c.clone(), format!("{name}/"));
        async move { !keys_under(&c, &p).await.is_empty() }
    })
    .await;
    assert!(matches!(m.try_lock().await, Err(Error::Locked(_))));
    child.wait().await.unwrap();
}

#[tokio::test]
async fn an_unlock_whose_retry_finds_the_key_gone_does_not_claim_it_deleted_the_key() {
    let name = unique("mutex-unlock-vanished");
    let s = session(10).await;
    let guard = Mutex::new(&s, &name).unwrap().lock().await.unwrap();
    let key = guard.key().to_owned();
    // The unlock's first attempt "loses its answer"; before its retry the key goes by
    // someone else's hand, so the retry finds nothing to delete.
    let (retrying, go_on) = coord::test_hooks::lose_first_compare_delete(&key);
    let unlock = tokio::spawn(guard.unlock());
    retrying.await.expect("the unlock announces its retry");
    let mut other = client().await;
    let removed = other.delete(key.as_str(), None).await.unwrap();
    assert_eq!(removed.deleted(), 1, "the key was there until now");
    go_on.send(()).unwrap();
    match unlock.await.unwrap() {
        Err(Error::ReleaseUnconfirmed(k)) => assert_eq!(k, key),
        other => panic!("the unlock cannot know it deleted the key, yet returned {other:?}"),
    }
    assert!(keys_under(&s.client(), &name).await.is_empty());
    s.close().await.unwrap();
}
