//! Queue and PriorityQueue: FIFO across producers, priority order, exactly-once
//! dequeue, blocking without spinning, cancellation, compaction, prefix hygiene.

use std::collections::HashSet;
use std::time::Duration;

use coord::{Error, PriorityQueue, Queue};

use crate::common::{client, keys_under, unique};

#[tokio::test]
async fn fifo_across_producers_in_commit_order() {
    let name = unique("queue-fifo");
    let q = Queue::new(client().await, &name).unwrap();
    let (a, b) = (Queue::new(client().await, &name).unwrap(), q.clone());
    for i in 0..5 {
        a.enqueue(format!("a{i}")).await.unwrap();
        b.enqueue(format!("b{i}")).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(String::from_utf8(q.dequeue().await.unwrap()).unwrap());
    }
    let expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    assert_eq!(got, expected);
    assert!(q.is_empty().await.unwrap());
}

#[tokio::test]
async fn keys_match_go_recipes() {
    let name = unique("queue-layout");
    let q = Queue::new(client().await, &name).unwrap();
    let key = q.enqueue("x").await.unwrap();
    let suffix = key.strip_prefix(&format!("{name}/")).unwrap();
    assert!(suffix.parse::<u128>().is_ok(), "unix nanos: {key}");
    let pq = PriorityQueue::new(client().await, &format!("{name}-pq")).unwrap();
    let key = pq.enqueue("y", 7).await.unwrap();
    assert_eq!(key, format!("{name}-pq/00007/0000000000000000"));
    let key = pq.enqueue("z", 7).await.unwrap();
    assert_eq!(key, format!("{name}-pq/00007/0000000000000001"));
}

#[tokio::test]
async fn priority_order_and_fifo_within_a_priority() {
    let name = unique("pq-order");
    let pq = PriorityQueue::new(client().await, &name).unwrap();
    for (v, p) in [
        ("low-1", 9),
        ("high-1", 1),
        ("low-2", 9),
        ("top", 0),
        ("high-2", 1),
    ] {
        pq.enqueue(v, p).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(String::from_utf8(pq.dequeue().await.unwrap()).unwrap());
    }
    assert_eq!(got, ["top", "high-1", "high-2", "low-1", "low-2"]);
    assert!(matches!(
        pq.enqueue("x", 100_000).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn concurrent_producers_and_consumers_each_item_once() {
    let name = unique("queue-concurrent");
    let q = Queue::new(client().await, &name).unwrap();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let q = q.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    q.enqueue(format!("{p}-{i}")).await.unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let name = name.clone();
            tokio::spawn(async move {
                let q = Queue::new(client().await, &name).unwrap();
                let mut got = Vec::new();
                for _ in 0..50 {
                    got.push(String::from_utf8(q.dequeue().await.unwrap()).unwrap());
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(
            coord::timeout(Duration::from_secs(20), async { Ok(c.await.unwrap()) })
                .await
                .unwrap(),
        );
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(distinct.len(), 200);
}

#[tokio::test]
async fn blocked_dequeue_wakes_on_enqueue_and_a_dropped_one_takes_nothing() {
    let name = unique("queue-block");
    let q = Queue::new(client().await, &name).unwrap();
    let err = coord::timeout(Duration::from_millis(200), q.dequeue())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.dequeue().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    q.enqueue("wake").await.unwrap();
    let got = coord::timeout(Duration::from_secs(5), async { waiter.await.unwrap() })
        .await
        .unwrap();
    assert_eq!(got, b"wake");
    // Items enqueued while nobody waits are all still there.
    q.enqueue("kept").await.unwrap();
    assert_eq!(q.len().await.unwrap(), 1);
}

#[tokio::test]
async fn compaction_and_prefix_neighbours_do_not_fool_a_waiting_dequeue() {
    let base = unique("queue-compact");
    let jobs = Queue::new(client().await, &format!("{base}/jobs")).unwrap();
    let jobs2 = Queue::new(client().await, &format!("{base}/jobs2")).unwrap();
    let waiter = {
        let jobs = jobs.clone();
        tokio::spawn(async move { jobs.dequeue().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    jobs2.enqueue("not for jobs").await.unwrap();
    let mut c = client().await;
    let rev = c.get("/", None).await.unwrap().header().unwrap().revision();
    c.compact(rev, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "neither jobs2 nor a compaction is an item"
    );
    jobs.enqueue("for jobs").await.unwrap();
    let got = coord::timeout(Duration::from_secs(5), async { waiter.await.unwrap() })
        .await
        .unwrap();
    assert_eq!(got, b"for jobs");
    assert_eq!(keys_under(&c, &format!("{base}/jobs2")).await.len(), 1);
}

/// Issue 16, defect 2: a PriorityQueue `dequeue` dropped after its delete committed
/// puts the item back, but never over a newer item that took the same sequence number
/// (sequences restart at 0 when a priority drains). Deterministic: the dequeue runs on
/// a current-thread runtime that only moves when the test lets it.
#[test]
fn priority_put_back_never_overwrites_a_newer_item() {
    use std::future::Future;
    use std::task::Poll;
    let main = tokio::runtime::Runtime::new().unwrap();
    let name = unique("pq-put-back");
    let pq = main.block_on(async { PriorityQueue::new(client().await, &name).unwrap() });
    let first = main.block_on(pq.enqueue("A", 0)).unwrap();
    let side = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let alive = || side.metrics().num_alive_tasks();
    let baseline = alive();
    // 1. Poll dequeue until it has spawned its delete task, then stop polling it.
    let mut dequeue = Box::pin(pq.dequeue());
    side.block_on(std::future::poll_fn(|cx| {
        if dequeue.as_mut().poll(cx).is_ready() {
            panic!("dequeue finished before its delete task ran");
        }
        if alive() > baseline {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    // 2. Let the delete task run to the end (the dequeue future is not polled).
    side.block_on(async {
        while alive() > baseline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(main
        .block_on(keys_under(&client_on(&main), &name))
        .is_empty());
    // 3. Drop the dequeue (its put-back is spawned on `side`, not run yet); a newer
    //    item takes the drained priority's sequence 0.
    {
        let _side = side.enter();
        drop(dequeue);
    }
    let newer = main.block_on(pq.enqueue("B", 0)).unwrap();
    assert_eq!(newer, first, "the sequence restarted at 0");
    // 4. Let the put-back run; both items must be there.
    side.block_on(async {
        while alive() > baseline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut got = HashSet::new();
    for _ in 0..2 {
        let item = main
            .block_on(coord::timeout(Duration::from_secs(5), pq.dequeue()))
            .expect("both items are in the queue");
        got.insert(String::from_utf8(item).unwrap());
    }
    assert_eq!(got, HashSet::from(["A".to_owned(), "B".to_owned()]));
}

fn client_on(rt: &tokio::runtime::Runtime) -> coord::etcd_client::Client {
    rt.block_on(client())
}
