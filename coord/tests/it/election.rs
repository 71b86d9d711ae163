//! Election: campaign/proclaim/resign semantics, replacement of a revoked leader,
//! cancellation, observe (first item, changes, compaction, empty election), resign
//! retries, interop with `etcdctl elect`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use coord::etcd_client::{Client, PutOptions, Txn, TxnOp};
use coord::{Election, Error, LeaderEvent, Result, Session};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::{
    client, endpoints, etcdctl, eventually, keys_under, revoke_and_expect_expired, session, unique,
};

type Events = Pin<Box<dyn Stream<Item = Result<LeaderEvent>> + Send>>;

/// The next observe item, which must come within a generous bound.
#[track_caller]
fn next_event(events: &mut Events) -> impl std::future::Future<Output = LeaderEvent> + '_ {
    let caller = std::panic::Location::caller();
    async move {
        let item = coord::timeout(Duration::from_secs(10), async { Ok(events.next().await) })
            .await
            .unwrap_or_else(|e| panic!("{caller}: no observe item: {e}"));
        item.unwrap_or_else(|| panic!("{caller}: observe ended"))
            .unwrap_or_else(|e| panic!("{caller}: observe failed: {e}"))
    }
}

/// Skips observe items until the leader proclaims `value` (intermediate states may or
/// may not be delivered, per the documented coalescing).
async fn until_leader_value(events: &mut Events, value: &str) -> coord::LeaderInfo {
    loop {
        if let LeaderEvent::Leader(info) = next_event(events).await {
            if info.value == value.as_bytes() {
                return info;
            }
        }
    }
}

fn leader_value(event: &LeaderEvent) -> Option<String> {
    match event {
        LeaderEvent::Leader(info) => Some(info.value_str().into_owned()),
        LeaderEvent::NoLeader => None,
    }
}

#[tokio::test]
async fn campaign_leader_proclaim_resign() {
    let name = unique("election-basics");
    let (a, b) = (session(10).await, session(10).await);
    let ea = Election::new(&a, &name).unwrap();
    assert_eq!(ea.key(), format!("{name}/{:x}", a.lease()));

    let mut la = ea.campaign("a-1").await.unwrap();
    let leader = ea.leader().await.unwrap();
    assert_eq!(leader.key, ea.key());
    assert_eq!(leader.value, b"a-1");
    assert_eq!(leader.rev, la.fencing_token());
    // Go's `Election.Rev()`: the leader key's create revision, read from etcd itself.
    let key = a.client().get(ea.key(), None).await.unwrap();
    assert_eq!(key.kvs()[0].create_revision(), la.fencing_token());
    assert_eq!(leader.lease, a.lease());
    assert!(la.is_held().await.unwrap());

    la.proclaim("a-2").await.unwrap();
    assert_eq!(ea.leader().await.unwrap().value, b"a-2");

    // B queues behind A and is not elected while A leads.
    let eb = Election::new(&b, &name).unwrap();
    let eb2 = eb.clone();
    let waiting_b = tokio::spawn(async move { eb2.campaign("b-1").await });
    let cl = client().await;
    eventually(Duration::from_secs(5), "B's candidate key exists", || {
        let (cl, name, key) = (cl.clone(), name.clone(), eb.key().to_owned());
        async move { keys_under(&cl, &name).await.contains(&key) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting_b.is_finished(), "B must wait while A leads");
    assert_eq!(eb.leader().await.unwrap().key, ea.key());

    la.resign().await.unwrap();
    let mut lb = coord::timeout(Duration::from_secs(5), async { waiting_b.await.unwrap() })
        .await
        .expect("B is elected once A resigns");
    assert!(lb.fencing_token() > la.fencing_token(), "tokens increase");
    let leader = eb.leader().await.unwrap();
    assert_eq!(
        (leader.key.as_str(), leader.value.as_slice()),
        (eb.key(), &b"b-1"[..])
    );

    // The resigned leader can neither proclaim nor resign anything away from B.
    assert!(matches!(
        la.proclaim("late").await,
        Err(Error::NotLeader(_))
    ));
    la.resign().await.expect("resigning twice is a no-op");
    assert!(!la.is_held().await.unwrap());
    assert_eq!(eb.leader().await.unwrap().value, b"b-1");

    lb.resign().await.unwrap();
    assert!(matches!(eb.leader().await, Err(Error::NoLeader(_))));
}

#[tokio::test]
async fn empty_election_has_no_leader_and_bad_names_are_rejected() {
    let name = unique("election-empty");
    let s = session(10).await;
    let e = Election::new(&s, &name).unwrap();
    assert!(matches!(e.leader().await, Err(Error::NoLeader(_))));
    let observer = Election::observer(client().await, &name).unwrap();
    assert!(matches!(observer.leader().await, Err(Error::NoLeader(_))));
    assert!(matches!(
        Election::new(&s, ""),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Election::observer(client().await, ""),
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn deposed_leader_cannot_proclaim_or_write_fenced() {
    let name = unique("election-deposed");
    let (a, b) = (session(10).await, session(10).await);
    let la = Election::new(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    client().await.lease_revoke(a.lease()).await.unwrap();
    let eb = Election::new(&b, &name).unwrap();
    let lb = coord::timeout(Duration::from_secs(5), eb.campaign("b"))
        .await
        .unwrap();

    let err = la.proclaim("a again").await.unwrap_err();
    assert!(matches!(err, Error::NotLeader(_)), "{err:?}");
    let stale = b
        .client()
        .txn(Txn::new().when([la.is_owner()]).and_then([TxnOp::put(
            format!("{name}-data"),
            "from A",
            None,
        )]))
        .await
        .unwrap();
    assert!(
        !stale.succeeded(),
        "deposed leader's fenced write is rejected"
    );
    assert_eq!(eb.leader().await.unwrap().value, b"b");
    drop(lb);
}

#[tokio::test]
async fn revoked_leader_is_replaced_and_observe_reports_it() {
    const TTL: i64 = 5;
    let name = unique("election-revoke");
    let (a, b) = (session(TTL).await, session(TTL).await);
    let ea = Election::new(&a, &name).unwrap();
    let la = ea.campaign("a").await.unwrap();
    let mut events: Events = Box::pin(Election::observer(client().await, &name).unwrap().observe());
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("a")
    );

    let eb = Election::new(&b, &name).unwrap();
    let campaign_b = tokio::spawn(async move { eb.campaign("b").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!campaign_b.is_finished());

    client().await.lease_revoke(a.lease()).await.unwrap();
    let bound = Duration::from_secs(TTL as u64 + 1) + Duration::from_secs(3);
    let lb = coord::timeout(bound, async { campaign_b.await.unwrap() })
        .await
        .expect("B replaces the revoked leader");
    assert!(lb.fencing_token() > la.fencing_token());

    let seen = until_leader_value(&mut events, "b").await;
    assert_eq!(seen.key, lb.key());
    assert_eq!(seen.rev, lb.fencing_token());
    assert!(!la.is_held().await.unwrap());
}

#[tokio::test]
async fn dropped_campaign_leaves_no_candidate_and_blocks_nobody() {
    let name = unique("election-cancel");
    let (a, b, c) = (session(10).await, session(10).await, session(10).await);
    let mut la = Election::new(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();

    let eb = Election::new(&b, &name).unwrap();
    let err = coord::timeout(Duration::from_millis(300), eb.campaign("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    let cl = client().await;
    eventually(
        Duration::from_secs(5),
        "B's candidate key is removed",
        || {
            let (cl, name, key) = (cl.clone(), name.clone(), eb.key().to_owned());
            async move { !keys_under(&cl, &name).await.contains(&key) }
        },
    )
    .await;
    // Early drops (put possibly still in flight) clean up too.
    for _ in 0..10 {
        let _ = tokio::time::timeout(Duration::from_micros(50), eb.campaign("b")).await;
    }
    eventually(Duration::from_secs(5), "only A's key remains", || {
        let (cl, name, key) = (cl.clone(), name.clone(), la.key().to_owned());
        async move { keys_under(&cl, &name).await == vec![key] }
    })
    .await;

    // C queues behind A only and is elected as soon as A resigns.
    let ec = Election::new(&c, &name).unwrap();
    let campaign_c = tokio::spawn(async move { ec.campaign("c").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    la.resign().await.unwrap();
    let lc = coord::timeout(Duration::from_secs(5), async { campaign_c.await.unwrap() })
        .await
        .expect("C is elected after A resigns");
    assert_eq!(
        Election::observer(cl.clone(), &name)
            .unwrap()
            .leader()
            .await
            .unwrap()
            .key,
        lc.key()
    );
}

#[tokio::test]
async fn waiting_candidate_whose_session_expires_gets_an_error_not_leadership() {
    let name = unique("election-waiter-expiry");
    let (a, b) = (session(10).await, session(10).await);
    let la = Election::new(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let eb = Election::new(&b, &name).unwrap();
    let waiting = tokio::spawn(async move { eb.campaign("b").await.map(|l| l.fencing_token()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    client().await.lease_revoke(b.lease()).await.unwrap();
    let result = coord::timeout(Duration::from_secs(10), async { waiting.await.unwrap() }).await;
    assert!(
        matches!(result, Err(Error::SessionExpired(_))),
        "expected SessionExpired, got {result:?}"
    );
    assert!(la.is_held().await.unwrap());
}

#[tokio::test]
async fn campaign_adopts_this_leases_existing_key_and_proclaims_the_new_value() {
    // As after a restart that resumed its lease: the key exists with an old value.
    let name = unique("election-adopt");
    let a = session(10).await;
    let e = Election::new(&a, &name).unwrap();
    let put = a
        .client()
        .put(
            e.key(),
            "old",
            Some(PutOptions::new().with_lease(a.lease())),
        )
        .await
        .unwrap();
    let created = put.header().unwrap().revision();
    let l = e.campaign("new").await.unwrap();
    assert_eq!(
        l.fencing_token(),
        created,
        "the existing key keeps its place"
    );
    let leader = e.leader().await.unwrap();
    assert_eq!(leader.value, b"new");
    assert_eq!(leader.rev, created);
}

#[tokio::test]
async fn observe_starts_with_the_current_state_and_reports_each_change() {
    let name = unique("election-observe");
    let (a, b) = (session(10).await, session(10).await);
    let observer = Election::observer(client().await, &name).unwrap();

    // Empty election: the first item says so.
    let mut empty: Events = Box::pin(observer.observe());
    assert_eq!(next_event(&mut empty).await, LeaderEvent::NoLeader);

    let mut la = Election::new(&a, &name)
        .unwrap()
        .campaign("a-1")
        .await
        .unwrap();
    match next_event(&mut empty).await {
        LeaderEvent::Leader(info) => {
            assert_eq!(info.key, la.key());
            assert_eq!(info.value, b"a-1");
        }
        other => panic!("expected A, got {other:?}"),
    }

    // A stream opened while A leads delivers A first (etcd 7815), then proclamations
    // in order, and nothing for a candidate queueing behind.
    let mut events: Events = Box::pin(observer.observe());
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("a-1")
    );
    let eb = Election::new(&b, &name).unwrap();
    let campaign_b = tokio::spawn(async move { eb.campaign("b").await });
    la.proclaim("a-2").await.unwrap();
    la.proclaim("a-2").await.unwrap(); // same value again: not a change
    la.proclaim("a-3").await.unwrap();
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("a-2")
    );
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("a-3")
    );

    la.resign().await.unwrap();
    let mut lb = coord::timeout(Duration::from_secs(5), async { campaign_b.await.unwrap() })
        .await
        .unwrap();
    match next_event(&mut events).await {
        LeaderEvent::Leader(info) => {
            assert_eq!(info.key, lb.key());
            assert_eq!(info.rev, lb.fencing_token());
        }
        other => panic!("expected B, got {other:?}"),
    }

    // The last leader resigns and nobody else campaigns: an explicit NoLeader.
    lb.resign().await.unwrap();
    assert_eq!(next_event(&mut events).await, LeaderEvent::NoLeader);
    assert_eq!(until_no_leader(&mut empty).await, LeaderEvent::NoLeader);
}

async fn until_no_leader(events: &mut Events) -> LeaderEvent {
    loop {
        let event = next_event(events).await;
        if event == LeaderEvent::NoLeader {
            return event;
        }
    }
}

#[tokio::test]
async fn observe_survives_compaction() {
    let name = unique("election-compact");
    let (a, b) = (session(10).await, session(10).await);
    let mut la = Election::new(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let mut events: Events = Box::pin(Election::observer(client().await, &name).unwrap().observe());
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("a")
    );

    // Move the store well past the revision the watch started at, then compact it.
    let mut cl = client().await;
    for i in 0..5 {
        cl.put(format!("{name}-filler"), i.to_string(), None)
            .await
            .unwrap();
    }
    let rev = cl
        .get(format!("{name}-filler"), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cl.compact(rev, None).await.unwrap();

    // Changes after the compaction are still delivered.
    la.proclaim("a-after-compaction").await.unwrap();
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("a-after-compaction")
    );
    let eb = Election::new(&b, &name).unwrap();
    let campaign_b = tokio::spawn(async move { eb.campaign("b").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    la.resign().await.unwrap();
    let lb = coord::timeout(Duration::from_secs(5), async { campaign_b.await.unwrap() })
        .await
        .unwrap();
    let seen = until_leader_value(&mut events, "b").await;
    assert_eq!(seen.key, lb.key());
}

#[tokio::test]
async fn resign_after_session_loss_reports_it_without_panicking() {
    let name = unique("election-resign-lost");
    let a = session(10).await;
    let mut la = Election::new(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    client().await.lease_revoke(a.lease()).await.unwrap();
    let err = la.resign().await.unwrap_err();
    assert!(matches!(err, Error::OwnershipLost(_)), "{err:?}");
    // Settled: retrying has nothing left to do, proclaim says we do not lead.
    la.resign().await.unwrap();
    assert!(matches!(la.proclaim("x").await, Err(Error::NotLeader(_))));
    drop(la);
    // And campaigning on the dead session fails with a typed error.
    eventually(
        Duration::from_secs(10),
        "session notices the revoke",
        || {
            let a = a.clone();
            async move { a.is_expired() }
        },
    )
    .await;
    let err = Election::new(&a, &name)
        .unwrap()
        .campaign("again")
        .await
        .unwrap_err();
    assert!(err.is_session_expired(), "{err:?}");
}

/// A TCP proxy in front of etcd that can be cut and restored, so that RPCs fail for
/// real (connection refused/reset) while etcd itself stays up.
struct CuttableLink {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<StdMutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CuttableLink {
    async fn start() -> CuttableLink {
        let target = endpoints()[0].trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<StdMutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(link);
            }
        });
        CuttableLink {
            addr,
            up,
            links,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CuttableLink {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn failed_resign_keeps_leadership_so_it_can_be_retried() {
    let name = unique("election-resign-retry");
    let link = CuttableLink::start().await;
    let via_link = Client::connect([link.addr.to_string()], None)
        .await
        .unwrap();
    let a = Session::builder(via_link).ttl(10).build().await.unwrap();
    let mut la = Election::new(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();

    link.cut();
    let failed = coord::timeout(Duration::from_secs(5), la.resign()).await;
    assert!(
        failed.is_err(),
        "resign cannot succeed while etcd is unreachable"
    );
    let direct = Election::observer(client().await, &name).unwrap();
    assert_eq!(direct.leader().await.unwrap().key, la.key(), "still leader");

    link.restore();
    // The state was kept: proclaim still works and resign can be retried.
    let mut attempts = 0;
    loop {
        match la.proclaim("still here").await {
            Ok(()) => break,
            Err(e) => {
                attempts += 1;
                assert!(attempts < 50, "proclaim never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(direct.leader().await.unwrap().value, b"still here");
    coord::timeout(Duration::from_secs(5), la.resign())
        .await
        .expect("retried resign succeeds");
    assert!(matches!(direct.leader().await, Err(Error::NoLeader(_))));
}

/// Reads lines of `etcdctl elect -l` output until `value` is printed.
async fn until_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    value: &str,
) {
    coord::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == value {
                return Ok(());
            }
        }
        panic!("etcdctl elect -l ended before printing {value}");
    })
    .await
    .unwrap_or_else(|e| panic!("etcdctl elect -l did not print {value}: {e}"));
}

#[tokio::test]
async fn etcdctl_elect_leader_is_seen_by_leader_and_observe() {
    let name = unique("election-etcdctl-leader");
    let endpoints = endpoints().join(",");
    let mut elect = tokio::process::Command::new(etcdctl())
        .args(["--endpoints", &endpoints, "elect", &name, "from-etcdctl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("etcdctl must be installed (scripts/install-deps.sh) or ETCDCTL set");
    let observer = Election::observer(client().await, &name).unwrap();
    eventually(Duration::from_secs(10), "etcdctl is elected", || {
        let observer = observer.clone();
        async move { observer.leader().await.is_ok() }
    })
    .await;
    let ctl = observer.leader().await.unwrap();
    assert_eq!(ctl.value, b"from-etcdctl");
    assert_eq!(
        ctl.key,
        format!("{name}/{:x}", ctl.lease),
        "Go's key layout"
    );
    let mut events: Events = Box::pin(observer.observe());
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("from-etcdctl")
    );

    // A coord candidate queues behind etcdctl and takes over when its lease goes.
    let s = session(10).await;
    let e = Election::new(&s, &name).unwrap();
    let e2 = e.clone();
    let campaign = tokio::spawn(async move { e2.campaign("from-coord").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!campaign.is_finished(), "coord waits behind etcdctl");
    client().await.lease_revoke(ctl.lease).await.unwrap();
    let mut l = coord::timeout(Duration::from_secs(5), async { campaign.await.unwrap() })
        .await
        .expect("coord takes over from etcdctl");
    assert_eq!(
        until_leader_value(&mut events, "from-coord").await.key,
        e.key()
    );
    // etcdctl only notices its revoked lease at its next keepalive (TTL/3 = 20 s).
    elect.start_kill().unwrap();
    let _ = elect.wait().await;
    l.resign().await.unwrap();
}

#[tokio::test]
async fn coord_leader_is_seen_by_etcdctl_elect_listen_and_etcdctl_queues_behind() {
    let name = unique("election-etcdctl-listen");
    let endpoints = endpoints().join(",");
    let s = session(10).await;
    let e = Election::new(&s, &name).unwrap();
    let mut l = e.campaign("coord-1").await.unwrap();

    let mut listen = tokio::process::Command::new(etcdctl())
        .args(["--endpoints", &endpoints, "elect", "-l", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("etcdctl must be installed (scripts/install-deps.sh) or ETCDCTL set");
    let mut lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    until_line(&mut lines, "coord-1").await;
    l.proclaim("coord-2").await.unwrap();
    until_line(&mut lines, "coord-2").await;

    // An etcdctl candidate waits behind coord and is elected when coord resigns.
    let mut candidate = tokio::process::Command::new(etcdctl())
        .args(["--endpoints", &endpoints, "elect", &name, "ctl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let cl = client().await;
    eventually(
        Duration::from_secs(10),
        "etcdctl queues as a candidate",
        || {
            let (cl, name) = (cl.clone(), name.clone());
            async move { keys_under(&cl, &name).await.len() == 2 }
        },
    )
    .await;
    assert_eq!(e.leader().await.unwrap().value, b"coord-2");
    l.resign().await.unwrap();
    until_line(&mut lines, "ctl").await;
    let ctl = e.leader().await.unwrap();
    assert_eq!(ctl.value, b"ctl");

    client().await.lease_revoke(ctl.lease).await.unwrap();
    candidate.start_kill().unwrap();
    let _ = candidate.wait().await;
    listen.start_kill().unwrap();
    let _ = listen.wait().await;
}

#[tokio::test]
async fn observe_recovers_from_a_broken_watch_stream() {
    let name = unique("election-observe-broken");
    let (a, b) = (session(10).await, session(10).await);
    let mut la = Election::new(&a, &name)
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let link = CuttableLink::start().await;
    let via_link = Client::connect([link.addr.to_string()], None)
        .await
        .unwrap();
    let mut events: Events = Box::pin(Election::observer(via_link, &name).unwrap().observe());
    assert_eq!(
        leader_value(&next_event(&mut events).await).as_deref(),
        Some("a")
    );

    // The observer's connection breaks; meanwhile the leader changes hands.
    link.cut();
    let eb = Election::new(&b, &name).unwrap();
    let campaign_b = tokio::spawn(async move { eb.campaign("b").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    la.resign().await.unwrap();
    let mut lb = coord::timeout(Duration::from_secs(5), async { campaign_b.await.unwrap() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.restore();

    // The stream re-opens its watch and delivers the state it re-reads.
    let seen = until_leader_value(&mut events, "b").await;
    assert_eq!(seen.key, lb.key());
    // And keeps following changes on the new watch.
    lb.resign().await.unwrap();
    assert_eq!(until_no_leader(&mut events).await, LeaderEvent::NoLeader);
}

#[tokio::test]
async fn campaigns_sharing_one_session_are_serialised() {
    // Both would use the same key; the second waits for the first leadership to end.
    let name = unique("election-shared-session");
    let s = session(10).await;
    let e = Election::new(&s, &name).unwrap();
    let mut first = e.campaign("first").await.unwrap();
    let e2 = e.clone();
    let second = tokio::spawn(async move { e2.campaign("second").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second campaign waits locally");
    assert_eq!(e.leader().await.unwrap().value, b"first");
    first.resign().await.unwrap();
    let mut second = coord::timeout(Duration::from_secs(5), async { second.await.unwrap() })
        .await
        .unwrap();
    assert!(
        second.fencing_token() > first.fencing_token(),
        "a new incarnation"
    );
    assert_eq!(e.leader().await.unwrap().value, b"second");
    second.resign().await.unwrap();
}

/// Issue 16, defect 7 (as for Mutex): a campaign waiting for the session's local lock
/// (another task of the same session leads) returns when the session is lost.
#[tokio::test]
async fn local_campaign_wait_ends_when_the_session_is_lost() {
    let s = session(30).await;
    let name = unique("election-local-wait-lost");
    let e = Election::new(&s, &name).unwrap();
    let _leading = e.campaign("first").await.unwrap();
    let waiter = tokio::spawn({
        let e = e.clone();
        async move { e.campaign("second").await.map(|_| ()) }
    });
    revoke_and_expect_expired(&s, waiter).await;
}

/// Asking who leads survives a member that is down: with one endpoint that answers
/// nothing beside a live one, every `leader()` answers (a read that failed on the dead
/// endpoint is tried again, and reaches the live one). Seen in the compose suite: a
/// `ListLeaders` right after an etcd member restarted answered UNAVAILABLE.
#[tokio::test]
async fn the_leader_is_read_with_a_member_down() {
    // A port nothing listens on, for the member that is down.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_endpoint = dead.local_addr().unwrap().to_string();
    drop(dead);
    let mut with_dead = vec![dead_endpoint];
    with_dead.extend(endpoints());
    let name = unique("election-member-down");
    let s = session(10).await;
    let _leader = Election::new(&s, &name)
        .unwrap()
        .campaign("me")
        .await
        .unwrap();
    let observer =
        Election::observer(Client::connect(with_dead, None).await.unwrap(), &name).unwrap();
    for _ in 0..20 {
        let leader = observer.leader().await.expect("the live member answers");
        assert_eq!(leader.value_str(), "me");
    }
}
