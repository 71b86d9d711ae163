//! DoubleBarrier: enter together, leave together, too many clients, rounds, session
//! loss, cancellation, Go key layout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::{DoubleBarrier, Error, Session};
use tokio::sync::oneshot;

use crate::common::{client, eventually, keys_under, session, unique};

const LIMIT: Duration = Duration::from_secs(10);

/// The create revision of a waiter key (the lowest member leaves last).
async fn create_rev(cl: &coord::etcd_client::Client, key: &str) -> i64 {
    let resp = cl.clone().get(key, None).await.unwrap();
    resp.kvs()[0].create_revision()
}

/// Starts a participant: enter, count it, wait for the go-ahead, leave, count it.
fn participant(
    s: Session,
    name: String,
    count: usize,
    entered: Arc<AtomicUsize>,
    left: Arc<AtomicUsize>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<coord::Result<()>>,
) {
    let (go, leave_now) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let barrier = DoubleBarrier::new(&s, &name, count)?;
        let inside = barrier.enter().await?;
        entered.fetch_add(1, Ordering::SeqCst);
        let _ = leave_now.await;
        inside.leave().await?;
        left.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    (go, task)
}

#[tokio::test]
async fn all_pass_enter_together_and_leave_together() {
    const N: usize = 5;
    let name = unique("dbarrier-together");
    let (entered, left) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let cl = client().await;
    let mut gos = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..N - 1 {
        let (go, task) = participant(
            session(10).await,
            name.clone(),
            N,
            entered.clone(),
            left.clone(),
        );
        gos.push(go);
        tasks.push(task);
        eventually(LIMIT, "the participant registered", || {
            let (cl, name) = (cl.clone(), name.clone());
            async move { keys_under(&cl, &format!("{name}/waiters")).await.len() == i + 1 }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        entered.load(Ordering::SeqCst),
        0,
        "nobody passes before the N-th"
    );

    // Go's layout: <name>/waiters/<unix nanos>, and <name>/ready once full.
    for key in keys_under(&cl, &format!("{name}/waiters")).await {
        let suffix = key.strip_prefix(&format!("{name}/waiters/")).unwrap();
        assert!(suffix.parse::<u128>().is_ok(), "{key}");
    }

    let (go, task) = participant(
        session(10).await,
        name.clone(),
        N,
        entered.clone(),
        left.clone(),
    );
    gos.push(go);
    tasks.push(task);
    eventually(LIMIT, "all N passed enter", || {
        let entered = entered.clone();
        async move { entered.load(Ordering::SeqCst) == N }
    })
    .await;
    assert!(keys_under(&cl, &name)
        .await
        .contains(&format!("{name}/ready")));

    // All but one leave: nobody gets out before the last one calls leave.
    let last = gos.remove(2); // a middle one, neither lowest nor highest
    for go in gos {
        go.send(()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        left.load(Ordering::SeqCst),
        0,
        "nobody leaves before all called leave"
    );
    last.send(()).unwrap();
    for task in tasks {
        coord::timeout(LIMIT, async { task.await.unwrap() })
            .await
            .expect("everyone leaves");
    }
    assert_eq!(left.load(Ordering::SeqCst), N);
    assert!(
        keys_under(&cl, &name).await.is_empty(),
        "waiters and ready are gone"
    );
}

#[tokio::test]
async fn the_extra_participant_is_too_many_and_the_barrier_is_reusable() {
    let name = unique("dbarrier-full");
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let ba = DoubleBarrier::new(&a, &name, 2).unwrap();
    let bb = DoubleBarrier::new(&b, &name, 2).unwrap();
    let bc = DoubleBarrier::new(&c, &name, 2).unwrap();
    let (ia, ib) = coord::timeout(LIMIT, async {
        let (ia, ib) = tokio::join!(ba.enter(), bb.enter());
        Ok((ia?, ib?))
    })
    .await
    .unwrap();
    assert_eq!(ia.round(), ib.round());
    let err = bc.enter().await.unwrap_err();
    assert!(matches!(err, Error::TooManyClients(_)), "{err:?}");
    let cl = client().await;
    eventually(LIMIT, "the refused participant left no key", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &format!("{name}/waiters")).await.len() == 2 }
    })
    .await;

    // The higher member leaves first and waits; while the round is leaving, C is still
    // refused (Go would let C join the leaving round).
    let (ia, ib) = if create_rev(&cl, ia.key()).await < create_rev(&cl, ib.key()).await {
        (ia, ib)
    } else {
        (ib, ia)
    };
    let leaving_b = tokio::spawn(ib.leave());
    eventually(LIMIT, "the higher member removed its key", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &format!("{name}/waiters")).await.len() == 1 }
    })
    .await;
    let err = bc.enter().await.unwrap_err();
    assert!(matches!(err, Error::TooManyClients(_)), "{err:?}");
    assert!(
        !leaving_b.is_finished(),
        "the higher member waits for the lowest"
    );
    coord::timeout(LIMIT, ia.leave()).await.unwrap();
    coord::timeout(LIMIT, async { leaving_b.await.unwrap() })
        .await
        .unwrap();
    assert!(keys_under(&cl, &name).await.is_empty());

    // A new round on the same name.
    let (ic, ia) = coord::timeout(LIMIT, async {
        let (ic, ia) = tokio::join!(bc.enter(), ba.enter());
        Ok((ic?, ia?))
    })
    .await
    .unwrap();
    coord::timeout(LIMIT, async {
        let (x, y) = tokio::join!(ic.leave(), ia.leave());
        x.and(y)
    })
    .await
    .unwrap();
    assert!(keys_under(&cl, &name).await.is_empty());
}

#[tokio::test]
async fn a_member_whose_session_dies_inside_does_not_block_the_others() {
    let name = unique("dbarrier-death-inside");
    let sessions = [session(10).await, session(10).await, session(10).await];
    let mut inside = Vec::new();
    let enters: Vec<_> = sessions
        .iter()
        .map(|s| {
            let b = DoubleBarrier::new(s, &name, 3).unwrap();
            tokio::spawn(async move { b.enter().await })
        })
        .collect();
    for e in enters {
        inside.push(
            coord::timeout(LIMIT, async { e.await.unwrap() })
                .await
                .unwrap(),
        );
    }
    // The lowest member dies: the next lowest must take over its role in leave.
    let cl = client().await;
    let mut revs = Vec::new();
    for g in &inside {
        revs.push(create_rev(&cl, g.key()).await);
    }
    let lowest = (0..revs.len()).min_by_key(|&i| revs[i]).unwrap();
    let dead = inside.remove(lowest);
    client()
        .await
        .lease_revoke(sessions[lowest].lease())
        .await
        .unwrap();
    let leaves: Vec<_> = inside
        .into_iter()
        .map(|g| tokio::spawn(g.leave()))
        .collect();
    for l in leaves {
        coord::timeout(LIMIT, async { l.await.unwrap() })
            .await
            .expect("the survivors leave without the dead member");
    }
    let err = dead.leave().await.unwrap_err();
    assert!(err.is_session_expired(), "{err:?}");
    assert!(keys_under(&cl, &format!("{name}/waiters")).await.is_empty());
}

#[tokio::test]
async fn a_waiter_whose_session_dies_in_enter_gets_session_expired() {
    let name = unique("dbarrier-death-enter");
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let ba = DoubleBarrier::new(&a, &name, 2).unwrap();
    let waiting = tokio::spawn(async move { ba.enter().await.map(|_| ()) });
    let cl = client().await;
    eventually(LIMIT, "A registered", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &format!("{name}/waiters")).await.len() == 1 }
    })
    .await;
    client().await.lease_revoke(a.lease()).await.unwrap();
    let result = coord::timeout(LIMIT, async { waiting.await.unwrap() }).await;
    assert!(
        matches!(result, Err(Error::SessionExpired(_))),
        "expected SessionExpired, got {result:?}"
    );
    // A's departure does not count: B and C still need each other.
    let bb = DoubleBarrier::new(&b, &name, 2).unwrap();
    let b_enter = tokio::spawn(async move { bb.enter().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b_enter.is_finished(),
        "B alone must not pass a barrier for 2"
    );
    let ic = coord::timeout(LIMIT, DoubleBarrier::new(&c, &name, 2).unwrap().enter())
        .await
        .unwrap();
    let ib = coord::timeout(LIMIT, async { b_enter.await.unwrap() })
        .await
        .unwrap();
    coord::timeout(LIMIT, async {
        let (x, y) = tokio::join!(ib.leave(), ic.leave());
        x.and(y)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropped_enter_and_dropped_guard_leave_no_key() {
    let name = unique("dbarrier-cancel");
    let (a, b) = (session(10).await, session(10).await);
    let ba = DoubleBarrier::new(&a, &name, 3).unwrap();
    let err = coord::timeout(Duration::from_millis(300), ba.enter())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    for _ in 0..10 {
        let _ = tokio::time::timeout(Duration::from_micros(50), ba.enter()).await;
    }
    let cl = client().await;
    eventually(LIMIT, "no waiter key is left behind", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.is_empty() }
    })
    .await;

    // A guard dropped without leave counts as having left.
    let (ga, gb) = coord::timeout(LIMIT, async {
        let one_a = DoubleBarrier::new(&a, &name, 2).unwrap();
        let one_b = DoubleBarrier::new(&b, &name, 2).unwrap();
        let (x, y) = tokio::join!(one_a.enter(), one_b.enter());
        Ok((x?, y?))
    })
    .await
    .unwrap();
    drop(ga);
    coord::timeout(LIMIT, gb.leave())
        .await
        .expect("B leaves once A's dropped guard removed its key");
}

#[tokio::test]
async fn zero_count_and_empty_name_are_invalid() {
    let s = session(10).await;
    assert!(matches!(
        DoubleBarrier::new(&s, &unique("dbarrier-zero"), 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        DoubleBarrier::new(&s, "", 2),
        Err(Error::InvalidArgument(_))
    ));
    // A barrier for one passes at once and leaves nothing.
    let name = unique("dbarrier-one");
    let g = coord::timeout(LIMIT, DoubleBarrier::new(&s, &name, 1).unwrap().enter())
        .await
        .unwrap();
    coord::timeout(LIMIT, g.leave()).await.unwrap();
    assert!(keys_under(&s.client(), &name).await.is_empty());
}
