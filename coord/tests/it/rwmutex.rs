//! RwMutex: shared readers, exclusive writers, writer fairness, expiry, cancellation,
//! Go key layout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::etcd_client::{Txn, TxnOp};
use coord::{Access, Error, RwMutex};

use crate::common::{client, eventually, keys_under, session, unique};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn many_readers_hold_at_once_with_go_key_layout() {
    let name = unique("rw-readers");
    let mut guards = Vec::new();
    for _ in 0..4 {
        let s = session(10).await;
        let rw = RwMutex::new(&s, &name).unwrap();
        // Every earlier reader still holds: a reader only waits for writers.
        let g = coord::timeout(LIMIT, rw.read_lock()).await.unwrap();
        assert_eq!(g.access(), Access::Read);
        guards.push(g);
    }
    // Go's layout: <name>/read/<unix nanos>.
    let keys = keys_under(&client().await, &name).await;
    assert_eq!(keys.len(), 4);
    for key in &keys {
        let nanos = key
            .strip_prefix(&format!("{name}/read/"))
            .unwrap_or_else(|| panic!("{key} is not a read key"));
        assert!(
            nanos.parse::<u128>().is_ok(),
            "{key}: suffix is not decimal"
        );
    }
    for g in guards {
        g.unlock().await.unwrap();
    }
    assert!(keys_under(&client().await, &name).await.is_empty());
}

#[tokio::test]
async fn writers_exclude_readers_and_writers() {
    let name = unique("rw-exclusion");
    let readers_in = Arc::new(AtomicUsize::new(0));
    let writers_in = Arc::new(AtomicUsize::new(0));
    let max_readers = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (name, readers_in, writers_in, max_readers) = (
            name.clone(),
            readers_in.clone(),
            writers_in.clone(),
            max_readers.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let s = session(10).await;
            let rw = RwMutex::new(&s, &name).unwrap();
            for _ in 0..8 {
                if i % 2 == 0 {
                    let g = rw.write_lock().await.unwrap();
                    assert_eq!(writers_in.fetch_add(1, Ordering::SeqCst), 0, "two writers");
                    assert_eq!(readers_in.load(Ordering::SeqCst), 0, "reader during write");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    assert_eq!(readers_in.load(Ordering::SeqCst), 0, "reader during write");
                    writers_in.fetch_sub(1, Ordering::SeqCst);
                    g.unlock().await.unwrap();
                } else {
                    let g = rw.read_lock().await.unwrap();
                    let now = readers_in.fetch_add(1, Ordering::SeqCst) + 1;
                    max_readers.fetch_max(now, Ordering::SeqCst);
                    assert_eq!(writers_in.load(Ordering::SeqCst), 0, "writer during read");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    assert_eq!(writers_in.load(Ordering::SeqCst), 0, "writer during read");
                    readers_in.fetch_sub(1, Ordering::SeqCst);
                    g.unlock().await.unwrap();
                }
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
    assert!(keys_under(&client().await, &name).await.is_empty());
}

#[tokio::test]
async fn a_reader_arriving_after_a_waiting_writer_waits_for_it() {
    let name = unique("rw-fairness");
    let (a, w, b) = (session(10).await, session(10).await, session(10).await);
    let reader_a = RwMutex::new(&a, &name).unwrap().read_lock().await.unwrap();

    // The writer queues behind reader A.
    let rw_w = RwMutex::new(&w, &name).unwrap();
    let writer = tokio::spawn(async move { rw_w.write_lock().await });
    let cl = client().await;
    eventually(LIMIT, "the writer's key is queued", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 2 }
    })
    .await;

    // A reader arriving now must not overtake the waiting writer.
    let rw_b = RwMutex::new(&b, &name).unwrap();
    let err = rw_b.try_read_lock().await.unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    let reader_b = tokio::spawn(async move { rw_b.read_lock().await });
    eventually(LIMIT, "reader B's key is queued", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 3 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "writer must wait for reader A");
    assert!(
        !reader_b.is_finished(),
        "reader B must wait behind the writer"
    );

    reader_a.unlock().await.unwrap();
    let write = coord::timeout(LIMIT, async { writer.await.unwrap() })
        .await
        .expect("writer gets the lock after reader A");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !reader_b.is_finished(),
        "reader B must wait while the writer holds"
    );
    write.unlock().await.unwrap();
    let read_b = coord::timeout(LIMIT, async { reader_b.await.unwrap() })
        .await
        .expect("reader B gets the lock after the writer");
    read_b.unlock().await.unwrap();
}

#[tokio::test]
async fn waiters_whose_lease_is_revoked_get_session_expired_not_the_lock() {
    let name = unique("rw-expiry");
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let writer = RwMutex::new(&a, &name).unwrap().write_lock().await.unwrap();
    let rw_b = RwMutex::new(&b, &name).unwrap();
    let rw_c = RwMutex::new(&c, &name).unwrap();
    let read_waiter =
        tokio::spawn(async move { rw_b.read_lock().await.map(|g| g.key().to_owned()) });
    let write_waiter =
        tokio::spawn(async move { rw_c.write_lock().await.map(|g| g.key().to_owned()) });
    let cl = client().await;
    eventually(LIMIT, "both waiters queued", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 3 }
    })
    .await;
    let mut admin = client().await;
    admin.lease_revoke(b.lease()).await.unwrap();
    admin.lease_revoke(c.lease()).await.unwrap();
    for waiter in [read_waiter, write_waiter] {
        let result = coord::timeout(LIMIT, async { waiter.await.unwrap() }).await;
        assert!(
            matches!(result, Err(Error::SessionExpired(_))),
            "expected SessionExpired, got {result:?}"
        );
    }
    writer.unlock().await.unwrap();
    let err = RwMutex::new(&b, &name)
        .unwrap()
        .read_lock()
        .await
        .unwrap_err();
    assert!(err.is_session_expired(), "{err:?}");
}

#[tokio::test]
async fn dropped_pending_locks_leave_no_key_and_block_nobody() {
    let name = unique("rw-cancel");
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let writer = RwMutex::new(&a, &name).unwrap().write_lock().await.unwrap();
    let rw_b = RwMutex::new(&b, &name).unwrap();
    let err = coord::timeout(Duration::from_millis(300), rw_b.read_lock())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    let err = coord::timeout(Duration::from_millis(300), rw_b.write_lock())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    // Drops while the put may still be in flight.
    for i in 0..20 {
        let _ = if i % 2 == 0 {
            tokio::time::timeout(Duration::from_micros(50), rw_b.read_lock())
                .await
                .map(drop)
        } else {
            tokio::time::timeout(Duration::from_micros(50), rw_b.write_lock())
                .await
                .map(drop)
        };
    }
    let cl = client().await;
    eventually(LIMIT, "only the writer's key remains", || {
        let (cl, name, key) = (cl.clone(), name.clone(), writer.key().to_owned());
        async move { keys_under(&cl, &name).await == vec![key] }
    })
    .await;
    // A later writer queues behind the holder only.
    let rw_c = RwMutex::new(&c, &name).unwrap();
    let next = tokio::spawn(async move { rw_c.write_lock().await });
    writer.unlock().await.unwrap();
    coord::timeout(LIMIT, async { next.await.unwrap() })
        .await
        .expect("C gets the lock once A releases")
        .unlock()
        .await
        .unwrap();
}

#[tokio::test]
async fn try_locks_fail_fast_and_leave_nothing() {
    let name = unique("rw-try");
    let (a, b) = (session(10).await, session(10).await);
    let reader = RwMutex::new(&a, &name)
        .unwrap()
        .try_read_lock()
        .await
        .unwrap();
    let rw_b = RwMutex::new(&b, &name).unwrap();
    // Readers share; a writer is refused.
    let second_reader = rw_b.try_read_lock().await.unwrap();
    let err = rw_b.try_write_lock().await.unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    let cl = client().await;
    eventually(LIMIT, "the refused writer's key is gone", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 2 }
    })
    .await;
    reader.unlock().await.unwrap();
    second_reader.unlock().await.unwrap();
    let writer = rw_b.try_write_lock().await.unwrap();
    assert!(writer.key().starts_with(&format!("{name}/write/")));
    let err = RwMutex::new(&a, &name)
        .unwrap()
        .try_read_lock()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err:?}");
    writer.unlock().await.unwrap();
}

#[tokio::test]
async fn revoked_writer_is_fenced_and_its_unlock_reports_ownership_lost() {
    let name = unique("rw-fence");
    let data = format!("{name}-data");
    let (a, b) = (session(10).await, session(10).await);
    let stale = RwMutex::new(&a, &name).unwrap().write_lock().await.unwrap();
    client().await.lease_revoke(a.lease()).await.unwrap();
    let fresh = coord::timeout(LIMIT, RwMutex::new(&b, &name).unwrap().write_lock())
        .await
        .unwrap();
    assert!(fresh.fencing_token() > stale.fencing_token());
    let resp = a
        .client()
        .txn(Txn::new().when([stale.is_owner()]).and_then([TxnOp::put(
            data.as_str(),
            "stale",
            None,
        )]))
        .await
        .unwrap();
    assert!(
        !resp.succeeded(),
        "the stale writer's fenced write is rejected"
    );
    assert!(!stale.is_held().await.unwrap());
    let err = stale.unlock().await.unwrap_err();
    assert!(matches!(err, Error::OwnershipLost(_)), "{err:?}");
    assert!(fresh.is_held().await.unwrap());
    fresh.unlock().await.unwrap();
}

#[tokio::test]
async fn dropped_guard_releases_in_the_background() {
    let name = unique("rw-drop-guard");
    let (a, b) = (session(10).await, session(10).await);
    drop(RwMutex::new(&a, &name).unwrap().write_lock().await.unwrap());
    coord::timeout(LIMIT, RwMutex::new(&b, &name).unwrap().write_lock())
        .await
        .expect("released by drop")
        .unlock()
        .await
        .unwrap();
}

#[tokio::test]
async fn empty_name_is_invalid_argument() {
    let s = session(10).await;
    assert!(matches!(
        RwMutex::new(&s, ""),
        Err(Error::InvalidArgument(_))
    ));
}
