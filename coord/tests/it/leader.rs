//! Leader jobs: the job runs only while leading, is cancelled when leadership is lost,
//! shutdown resigns and hands over, the runner rejoins after losing its session.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::etcd_client::{Txn, TxnOp};
use coord::{run_as_leader, Election, LeaderContext, LeaderJob, LeaderOutcome};
use tokio::sync::{mpsc, oneshot};

use crate::common::{client, eventually, keys_under, session, unique};

/// Marks a job as running for as long as it exists: set on creation, cleared on drop
/// (which is how a cancelled job future ends).
struct Running {
    flag: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
}

impl Running {
    fn start(flag: &Arc<AtomicBool>, active: &Arc<AtomicUsize>) -> Running {
        flag.store(true, Ordering::SeqCst);
        active.fetch_add(1, Ordering::SeqCst);
        Running {
            flag: flag.clone(),
            active: active.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.flag.store(false, Ordering::SeqCst);
    }
}

/// A job that never finishes: marks itself running, checks it leads, then makes fenced
/// progress writes and proclaims them, and reports its context once started.
async fn endless_job(
    ctx: LeaderContext,
    who: &'static str,
    flag: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
    started: mpsc::UnboundedSender<LeaderContext>,
) {
    let _running = Running::start(&flag, &active);
    max_active.fetch_max(active.load(Ordering::SeqCst), Ordering::SeqCst);
    assert!(ctx.is_held().await.unwrap(), "job started without leading");
    let _ = started.send(ctx.clone());
    let progress = format!("{}-progress", ctx.election());
    let mut client = ctx.session().client();
    for step in 0u64.. {
        let write = Txn::new().when([ctx.is_owner()]).and_then([TxnOp::put(
            progress.as_str(),
            format!("{who}:{}:{step}", ctx.fencing_token()),
            None,
        )]);
        let _ = client.txn(write).await;
        let _ = ctx.proclaim(format!("{who}:{step}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Replica {
    flag: Arc<AtomicBool>,
    started: mpsc::UnboundedReceiver<LeaderContext>,
}

#[tokio::test]
async fn job_runs_only_while_leader_and_is_cancelled_when_the_lease_is_revoked() {
    const TTL: i64 = 5;
    let name = unique("leader-revoke");
    let (a, b) = (session(TTL).await, session(TTL).await);
    let (active, max_active) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));

    // A: one term with run_as_leader.
    let (flag_a, (tx_a, rx_a)) = (Arc::new(AtomicBool::new(false)), mpsc::unbounded_channel());
    let mut replica_a = Replica {
        flag: flag_a.clone(),
        started: rx_a,
    };
    let (a2, name2, act, max) = (a.clone(), name.clone(), active.clone(), max_active.clone());
    let runner_a = tokio::spawn(async move {
        run_as_leader(&a2, &name2, "A", std::future::pending::<()>(), move |ctx| {
            endless_job(ctx, "A", flag_a, act, max, tx_a)
        })
        .await
    });
    let ctx_a = coord::timeout(Duration::from_secs(5), async {
        Ok(replica_a.started.recv().await.unwrap())
    })
    .await
    .expect("A leads and starts its job");

    // B: a LeaderJob that would take over.
    let (flag_b, (tx_b, rx_b)) = (Arc::new(AtomicBool::new(false)), mpsc::unbounded_channel());
    let mut replica_b = Replica {
        flag: flag_b.clone(),
        started: rx_b,
    };
    let (stop_b, stopped_b) = oneshot::channel::<()>();
    let (b2, name2, act, max) = (b.clone(), name.clone(), active.clone(), max_active.clone());
    let runner_b = tokio::spawn(async move {
        LeaderJob::new(&b2, &name2, "B")
            .unwrap()
            .run(
                async move {
                    let _ = stopped_b.await;
                },
                move |ctx| {
                    endless_job(
                        ctx,
                        "B",
                        flag_b.clone(),
                        act.clone(),
                        max.clone(),
                        tx_b.clone(),
                    )
                },
            )
            .await
    });
    let observer = Election::observer(client().await, &name).unwrap();
    eventually(Duration::from_secs(5), "B is a candidate", || {
        let (cl, name) = (a.client(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 2 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !replica_b.flag.load(Ordering::SeqCst),
        "B's job must not run while A leads"
    );
    assert!(observer
        .leader()
        .await
        .unwrap()
        .value_str()
        .starts_with("A:"));

    // A's lease is revoked: A's job is cancelled and B's starts.
    client().await.lease_revoke(a.lease()).await.unwrap();
    let bound = Duration::from_secs(TTL as u64 + 1) + Duration::from_secs(3);
    let outcome_a = coord::timeout(bound, async { runner_a.await.unwrap() })
        .await
        .expect("A's runner ends");
    assert_eq!(outcome_a, LeaderOutcome::LeadershipLost);
    assert!(
        !replica_a.flag.load(Ordering::SeqCst),
        "A's job future was dropped before the runner returned"
    );
    let ctx_b = coord::timeout(bound, async { Ok(replica_b.started.recv().await.unwrap()) })
        .await
        .expect("B takes over");
    assert!(ctx_b.fencing_token() > ctx_a.fencing_token());
    assert!(replica_b.flag.load(Ordering::SeqCst));

    // A's late fenced write is rejected; B's goes through.
    let mut cl = client().await;
    let stale = cl
        .txn(Txn::new().when([ctx_a.is_owner()]).and_then([TxnOp::put(
            format!("{name}-progress"),
            "late A",
            None,
        )]))
        .await
        .unwrap();
    assert!(!stale.succeeded());
    assert!(matches!(
        ctx_a.proclaim("late A").await,
        Err(coord::Error::NotLeader(_))
    ));
    eventually(Duration::from_secs(5), "B proclaims its progress", || {
        let observer = observer.clone();
        async move {
            observer
                .leader()
                .await
                .is_ok_and(|l| l.value_str().starts_with("B:"))
        }
    })
    .await;

    stop_b.send(()).unwrap();
    let outcome_b = coord::timeout(Duration::from_secs(5), async { runner_b.await.unwrap() })
        .await
        .unwrap();
    assert_eq!(outcome_b, LeaderOutcome::Resigned);
    assert!(!replica_b.flag.load(Ordering::SeqCst));
    assert!(keys_under(&cl, &name).await.is_empty(), "B resigned");
}

#[tokio::test]
async fn shutdown_resigns_promptly_and_the_other_replica_takes_over() {
    // A long TTL: a takeover within the bound below can only come from resigning.
    const TTL: i64 = 30;
    let name = unique("leader-shutdown");
    let (a, b) = (session(TTL).await, session(TTL).await);
    let (active, max_active) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut replicas = Vec::new();
    let mut stops = Vec::new();
    let mut runners = Vec::new();
    for (who, s) in [("A", a.clone()), ("B", b.clone())] {
        let (flag, (tx, rx)) = (Arc::new(AtomicBool::new(false)), mpsc::unbounded_channel());
        replicas.push(Replica {
            flag: flag.clone(),
            started: rx,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(Some(stop));
        let (name, act, max) = (name.clone(), active.clone(), max_active.clone());
        runners.push(tokio::spawn(async move {
            LeaderJob::new(&s, &name, who)
                .unwrap()
                .run(
                    async move {
                        let _ = stopped.await;
                    },
                    move |ctx| {
                        endless_job(ctx, who, flag.clone(), act.clone(), max.clone(), tx.clone())
                    },
                )
                .await
        }));
        if who == "A" {
            // Let A win first.
            coord::timeout(Duration::from_secs(5), async {
                Ok(replicas[0].started.recv().await.unwrap())
            })
            .await
            .expect("A leads");
        }
    }
    eventually(Duration::from_secs(5), "B is a candidate", || {
        let (cl, name) = (a.client(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 2 }
    })
    .await;

    stops[0].take().unwrap().send(()).unwrap();
    let bound = Duration::from_secs(5);
    let runner_a = runners.remove(0);
    let outcome_a = coord::timeout(bound, async { runner_a.await.unwrap() })
        .await
        .expect("A shuts down promptly");
    assert_eq!(outcome_a, LeaderOutcome::Resigned);
    assert!(!replicas[0].flag.load(Ordering::SeqCst));
    coord::timeout(bound, async {
        Ok(replicas[1].started.recv().await.unwrap())
    })
    .await
    .expect("B takes over well before A's lease could expire");
    assert_eq!(
        max_active.load(Ordering::SeqCst),
        1,
        "on a graceful hand-over the jobs never overlap"
    );

    stops[1].take().unwrap().send(()).unwrap();
    let runner_b = runners.remove(0);
    assert_eq!(
        coord::timeout(bound, async { runner_b.await.unwrap() })
            .await
            .unwrap(),
        LeaderOutcome::Resigned
    );
    assert!(keys_under(&a.client(), &name).await.is_empty());
}

#[tokio::test]
async fn leader_job_campaigns_again_with_a_new_session_after_losing_its_lease() {
    const TTL: i64 = 5;
    let name = unique("leader-rejoin");
    let a = session(TTL).await;
    let (flag, (tx, mut started)) = (Arc::new(AtomicBool::new(false)), mpsc::unbounded_channel());
    let (active, max_active) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (stop, stopped) = oneshot::channel::<()>();
    let (a2, name2, flag2) = (a.clone(), name.clone(), flag.clone());
    let runner = tokio::spawn(async move {
        LeaderJob::new(&a2, &name2, "A")
            .unwrap()
            .run(
                async move {
                    let _ = stopped.await;
                },
                move |ctx| {
                    endless_job(
                        ctx,
                        "A",
                        flag2.clone(),
                        active.clone(),
                        max_active.clone(),
                        tx.clone(),
                    )
                },
            )
            .await
    });
    let first = coord::timeout(Duration::from_secs(5), async {
        Ok(started.recv().await.unwrap())
    })
    .await
    .expect("first term");
    assert_eq!(first.session().lease(), a.lease());

    client().await.lease_revoke(a.lease()).await.unwrap();
    let bound = Duration::from_secs(TTL as u64 + 1) + Duration::from_secs(5);
    let second = coord::timeout(bound, async { Ok(started.recv().await.unwrap()) })
        .await
        .expect("second term with a fresh session");
    assert_ne!(second.session().lease(), a.lease());
    assert_ne!(second.key(), first.key());
    assert!(second.fencing_token() > first.fencing_token());

    stop.send(()).unwrap();
    let outcome = coord::timeout(Duration::from_secs(5), async { runner.await.unwrap() })
        .await
        .unwrap();
    assert_eq!(outcome, LeaderOutcome::Resigned);
    assert!(!flag.load(Ordering::SeqCst));
    assert!(
        keys_under(&client().await, &name).await.is_empty(),
        "resigned, and the runner's own session was closed"
    );
}

#[tokio::test]
async fn finished_job_returns_its_output_and_hands_over() {
    let name = unique("leader-finish");
    let (a, b) = (session(10).await, session(10).await);
    let outcome = run_as_leader(
        &a,
        &name,
        "A",
        std::future::pending::<()>(),
        |ctx| async move {
            ctx.proclaim("A done").await.unwrap();
            ctx.fencing_token()
        },
    )
    .await
    .unwrap();
    let LeaderOutcome::JobFinished(token) = outcome else {
        panic!("expected JobFinished, got {outcome:?}");
    };
    assert!(token > 0);
    assert!(keys_under(&a.client(), &name).await.is_empty(), "resigned");

    // The next replica gets elected at once and sees a larger token.
    let outcome = coord::timeout(
        Duration::from_secs(5),
        run_as_leader(
            &b,
            &name,
            "B",
            std::future::pending::<()>(),
            |ctx| async move { ctx.fencing_token() },
        ),
    )
    .await
    .unwrap();
    assert!(matches!(outcome, LeaderOutcome::JobFinished(t) if t > token));
}

#[tokio::test]
async fn shutdown_while_campaigning_leaves_no_candidate_and_never_runs_the_job() {
    let name = unique("leader-shutdown-waiting");
    let (a, b) = (session(10).await, session(10).await);
    let mut leader = Election::new(&a, &name)
        .unwrap()
        .campaign("A")
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = oneshot::channel::<()>();
    let (b2, name2, ran2) = (b.clone(), name.clone(), ran.clone());
    let runner = tokio::spawn(async move {
        run_as_leader(
            &b2,
            &name2,
            "B",
            async move {
                let _ = stopped.await;
            },
            move |_ctx| async move { ran2.store(true, Ordering::SeqCst) },
        )
        .await
    });
    let cl = client().await;
    eventually(Duration::from_secs(5), "B is a candidate", || {
        let (cl, name) = (cl.clone(), name.clone());
        async move { keys_under(&cl, &name).await.len() == 2 }
    })
    .await;
    stop.send(()).unwrap();
    let outcome = coord::timeout(Duration::from_secs(5), async { runner.await.unwrap() })
        .await
        .unwrap();
    assert_eq!(outcome, LeaderOutcome::Resigned);
    eventually(
        Duration::from_secs(5),
        "B's candidate key is removed",
        || {
            let (cl, name, key) = (cl.clone(), name.clone(), leader.key().to_owned());
            async move { keys_under(&cl, &name).await == vec![key] }
        },
    )
    .await;
    assert!(!ran.load(Ordering::SeqCst));
    leader.resign().await.unwrap();
}

#[tokio::test]
async fn bad_election_name_is_invalid_argument() {
    let s = session(10).await;
    assert!(matches!(
        LeaderJob::new(&s, "", "x"),
        Err(coord::Error::InvalidArgument(_))
    ));
    let r = run_as_leader(&s, "", "x", std::future::pending::<()>(), |_ctx| async {}).await;
    assert!(matches!(r, Err(coord::Error::InvalidArgument(_))));
}
