//! The console's model of real coord primitives, built by the real library on a real
//! etcd under a random prefix: what `/api/state` and the event stream say about them.

use std::time::Duration;

use coord::{Election, Mutex, Semaphore, Session};
use serde_json::Value;
use shop_common::payments::{payment_queue, tier_priority, PaymentItem};
use shop_test_support::{etcd_client, unique_etcd_prefix, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{eventually, session, start_console, state, state_where, Sources};

fn lock<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["model"]["locks"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
}

fn election<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["model"]["elections"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn lease(session: &Session) -> String {
    format!("{:x}", session.lease())
}

#[tokio::test]
async fn a_mutex_with_waiters_an_election_a_work_queue_and_a_semaphore_as_the_console_sees_them() {
    let prefix = unique_etcd_prefix("console-model");
    let console = start_console(&prefix, Sources::default()).await;
    let addr = console.addr();
    let (a, b, c) = (session().await, session().await, session().await);

    // A mutex held by A, with B then C waiting.
    let name = format!("{prefix}/locks/sku/tea");
    let held = Mutex::new(&a, &name).unwrap().lock().await.unwrap();
    let mutex_b = Mutex::new(&b, &name).unwrap();
    let mutex_c = Mutex::new(&c, &name).unwrap();
    let wait_b = tokio::spawn(async move { mutex_b.lock().await });
    state_where(addr, "B in line", |s| {
        lock(s, "sku/tea").is_some_and(|l| l["waiters"].as_array().unwrap().len() == 1)
    })
    .await;
    let wait_c = tokio::spawn(async move { mutex_c.lock().await });
    let s = state_where(addr, "B and C in line", |s| {
        lock(s, "sku/tea").is_some_and(|l| l["waiters"].as_array().unwrap().len() == 2)
    })
    .await;
    let tea = lock(&s, "sku/tea").unwrap();
    assert_eq!(tea["sku"], "tea");
    assert_eq!(tea["holder"]["lease"], lease(&a));
    assert_eq!(tea["holder"]["revision"], held.fencing_token());
    let waiters: Vec<&Value> = tea["waiters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["lease"])
        .collect();
    assert_eq!(waiters, [&Value::from(lease(&b)), &Value::from(lease(&c))]);
    let ttl = tea["holder"]["ttl"].as_i64();
    assert!(ttl.is_none() || (1..=10).contains(&ttl.unwrap()), "{tea}");

    // Unlock: B holds (its token is its key's create revision), C still waits.
    held.unlock().await.unwrap();
    let held_b = wait_b.await.unwrap().unwrap();
    let token_b = held_b.fencing_token();
    let s = state_where(addr, "B holds", |s| {
        lock(s, "sku/tea").is_some_and(|l| l["holder"]["lease"] == lease(&b))
    })
    .await;
    assert_eq!(lock(&s, "sku/tea").unwrap()["holder"]["revision"], token_b);
    assert_eq!(
        lock(&s, "sku/tea").unwrap()["waiters"][0]["lease"],
        lease(&c)
    );

    // An election: replica-1 leads, replica-2 waits; replica-1 resigns.
    let job = format!("{prefix}/elections/order/expire-reservations");
    let mut leading = Election::new(&a, &job)
        .unwrap()
        .campaign("replica-1")
        .await
        .unwrap();
    let second = Election::new(&b, &job).unwrap();
    let campaign = tokio::spawn(async move { second.campaign("replica-2").await });
    let s = state_where(addr, "two candidates", |s| {
        election(s, "order/expire-reservations")
            .is_some_and(|e| e["candidates"].as_array().unwrap().len() == 1)
    })
    .await;
    let e = election(&s, "order/expire-reservations").unwrap();
    assert_eq!(e["leader"]["replica"], "replica-1");
    assert_eq!(e["leader"]["revision"], leading.fencing_token());
    assert_eq!(e["candidates"][0]["replica"], "replica-2");
    // The lease of a lock's holder is named by its election key (B campaigns as replica-2).
    assert_eq!(
        lock(&s, "sku/tea").unwrap()["holder"]["replica"],
        "replica-2"
    );
    leading.resign().await.unwrap();
    let _leadership = campaign.await.unwrap().unwrap();
    let s = state_where(addr, "replica-2 leads", |s| {
        election(s, "order/expire-reservations")
            .is_some_and(|e| e["leader"]["replica"] == "replica-2")
    })
    .await;
    let history: Vec<&Value> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["leader"])
        .collect();
    assert_eq!(
        history,
        [&Value::from("replica-1"), &Value::from("replica-2")]
    );

    // The payment queue: three items at three tiers, one claimed by C.
    let client = etcd_client().await;
    for (order, tier) in [
        ("o-standard", "standard"),
        ("o-gold", "gold"),
        ("o-platinum", "platinum"),
    ] {
        let item = PaymentItem {
            order_id: order.into(),
            customer_id: format!("{tier}-buyer"),
            tier: tier.into(),
            amount_minor: 1000,
            trace: Default::default(),
            amount_seal: None,
        };
        payment_queue(client.clone(), &prefix)
            .unwrap()
            .enqueue_with_id(&item.order_id, &item.encode(), tier_priority(&item.tier))
            .await
            .unwrap();
    }
    let claimed = payment_queue(client.clone(), &prefix)
        .unwrap()
        .claim(&c)
        .await
        .unwrap();
    assert_eq!(claimed.id(), "o-platinum");
    let s = state_where(addr, "a claimed item", |s| {
        s["model"]["queues"][0]["claimed"] == 1
    })
    .await;
    let q = &s["model"]["queues"][0];
    assert_eq!(q["name"], "payments");
    assert_eq!(q["total"], 3);
    assert_eq!(q["depth"], serde_json::json!({"0": 1, "1": 1, "2": 1}));
    assert_eq!(q["items"][0]["id"], "o-platinum");
    assert_eq!(q["items"][0]["claim"]["lease"], lease(&c));
    assert_eq!(q["items"][1]["customer"], "gold-buyer");
    claimed.ack().await.unwrap();
    state_where(addr, "the ack", |s| s["model"]["queues"][0]["total"] == 2).await;

    // The provider's semaphore: 2 permits, one held.
    let permit = Semaphore::new(&a, &format!("{prefix}/semaphores/provider"), 2)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let s = state_where(addr, "a permit", |s| {
        s["model"]["semaphores"][0]["holders"]
            .as_array()
            .is_some_and(|h| h.len() == 1)
    })
    .await;
    assert_eq!(s["model"]["semaphores"][0]["permits"], 2);
    permit.release().await.unwrap();

    // The recent events, filtered by primitive: lock keys only, revisions rising.
    let (status, _, body) =
        crate::support::http(addr, "GET", "/api/events/recent?primitive=lock&limit=1000").await;
    assert_eq!(status, 200);
    let events: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(events.len() >= 4, "{body}");
    assert!(events
        .iter()
        .all(|e| e["primitive"] == "lock"
            && e["key"].as_str().unwrap().starts_with("locks/sku/tea/")));
    assert!(events
        .windows(2)
        .all(|w| w[0]["revision"].as_i64() <= w[1]["revision"].as_i64()));
    assert!(events
        .iter()
        .any(|e| e["kind"] == "delete" && e["key"] == format!("locks/sku/tea/{}", lease(&a))));

    drop(wait_c);
    console.stop().await.unwrap();
}

/// Reads an SSE stream until `want` appears in what arrived, or times out.
async fn sse_until(addr: std::net::SocketAddr, target: &str, want: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !seen.contains(want) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in the stream; got:\n{seen}"))
            .unwrap();
        assert!(n > 0, "stream closed; got:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[tokio::test]
async fn the_event_stream_sends_a_snapshot_then_the_watch_events_of_the_chosen_primitive() {
    let prefix = unique_etcd_prefix("console-sse");
    let console = start_console(&prefix, Sources::default()).await;
    let addr = console.addr();
    state_where(addr, "etcd followed", |s| s["etcd"]["ok"] == true).await;
    let a = session().await;
    let reader = tokio::spawn(async move {
        sse_until(addr, "/api/events?primitive=election", "\"kind\":\"put\"").await
    });
    // Whether the reader subscribes before or after the events, it gets them: live, or
    // among the recent events a new stream starts with.
    let _queue = payment_queue(etcd_client().await, &prefix)
        .unwrap()
        .enqueue(b"{}", 1)
        .await
        .unwrap();
    let _leader = Election::new(&a, &format!("{prefix}/elections/payment/settle-payments"))
        .unwrap()
        .campaign("payment-1")
        .await
        .unwrap();
    let seen = reader.await.unwrap();
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(seen.contains("event: snapshot\ndata: {"), "{seen}");
    let watch = seen
        .split("event: watch\ndata: ")
        .nth(1)
        .expect("a watch event");
    let event: Value = serde_json::from_str(watch.lines().next().unwrap()).unwrap();
    assert_eq!(event["primitive"], "election");
    assert_eq!(
        event["key"],
        format!("elections/payment/settle-payments/{}", lease(&a))
    );
    assert_eq!(event["lease"], lease(&a));
    assert!(
        !seen.contains("\"primitive\":\"queue\""),
        "filtered out: {seen}"
    );
    console.stop().await.unwrap();
}

#[tokio::test]
async fn while_etcd_is_unreachable_the_state_says_so_and_the_console_catches_up_after() {
    let prefix = unique_etcd_prefix("console-outage");
    let endpoint = testkit::etcd_endpoints();
    let target = endpoint
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("http://");
    let proxy = TcpProxy::start(target.parse().expect("ETCD_ENDPOINTS as host:port")).await;
    let console = start_console(
        &prefix,
        Sources {
            etcd_endpoints: Some(proxy.addr().to_string()),
            ..Sources::default()
        },
    )
    .await;
    let addr = console.addr();
    state_where(addr, "etcd followed", |s| s["etcd"]["ok"] == true).await;

    proxy.cut();
    let s = state_where(addr, "etcd reported down", |s| s["etcd"]["ok"] == false).await;
    assert!(
        !s["etcd"]["message"].as_str().unwrap().is_empty(),
        "{}",
        s["etcd"]
    );
    // Meanwhile a lock is taken; the console sees it once etcd is back.
    let a = session().await;
    let _guard = Mutex::new(&a, &format!("{prefix}/locks/sku/tea"))
        .unwrap()
        .lock()
        .await
        .unwrap();
    proxy.restore();
    let s = eventually(
        "the console back on etcd",
        Duration::from_secs(20),
        || async {
            let s = state(addr).await;
            if s["etcd"]["ok"] == true && lock(&s, "sku/tea").is_some() {
                Ok(s)
            } else {
                Err(s["etcd"].to_string())
            }
        },
    )
    .await;
    assert_eq!(lock(&s, "sku/tea").unwrap()["holder"]["lease"], lease(&a));
    console.stop().await.unwrap();
}
