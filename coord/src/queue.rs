//! Queue and PriorityQueue: etcd Go recipes' simple queues, with the same key layout.
//!
//! # Protocol
//! - **Queue**: an item is a key `<name>/<unix nanos>` created only if absent (a clash
//!   retries with a new timestamp), holding the payload, with no lease. Dequeue takes
//!   the item with the lowest modification revision — commit order, whatever the
//!   producers' clocks say — and deletes it in a transaction that checks the item is
//!   unchanged, so two consumers never both take it. The read returns the first few
//!   items and the transaction takes the first of them still there (nested "if the
//!   first is unchanged delete it, else if the second …"), so consumers racing for the
//!   head each get an item in one round trip instead of all but one starting over.
//! - **PriorityQueue**: an item is `<name>/<priority %05d>/<seq %016d>`; dequeue takes
//!   the lowest key, so priority 0 comes first and items of one priority come in the
//!   order of their sequence number. The sequence is "last key of that priority + 1",
//!   guarded by a marker key `__<name>/<priority %05d>` whose modification revision
//!   must not have moved since the last key was read (Go's `newSequentialKV`). A
//!   transaction that loses that race reads the last key again in its other branch,
//!   and the enqueue retries at once (backing off only after several losses).
//! - `dequeue` reads first; only an empty queue opens a watch (from now, then reads
//!   again) on `<name>/` and blocks on it; every
//!   wake-up, or a watch that breaks, closes or is compacted, leads to a fresh read —
//!   a closed watch never counts as an item and never makes the caller spin.
//!
//! # Guarantees
//! - Each item is dequeued by exactly one consumer. Prefix `jobs` never sees `jobs2`.
//! - Cancel-safe: a `dequeue` dropped while waiting takes nothing. One dropped after
//!   its delete committed puts the item back instead of losing it: at the end of a
//!   [`Queue`], at its old place (same priority, same sequence) in a
//!   [`PriorityQueue`], which orders by key — unless a newer item took that key (a
//!   drained priority restarts its sequence at 0): then it is enqueued again at its
//!   priority, never written over the newer item. A put-back that fails is logged
//!   (`warn`) with the item's key.
//!
//! # Not guaranteed
//! - **A consumer that crashes after dequeue loses the item**: the recipe deletes the
//!   item before the caller has processed it. Use [`crate::WorkQueue`] (claim, ack,
//!   redelivery) when an item must survive its consumer.
//!
//! # Go → coord
//! | etcd's Go `contrib/recipes` | coord |
//! |---|---|
//! | `NewQueue(client, keyPrefix)` | [`Queue::new`] |
//! | `Queue.Enqueue(val)` | [`Queue::enqueue`] |
//! | `Queue.Dequeue()` | [`Queue::dequeue`] |
//! | `NewPriorityQueue(client, key)` | [`PriorityQueue::new`] |
//! | `PriorityQueue.Enqueue(val, pr)` | [`PriorityQueue::enqueue`]`(val, pr)` |
//! | `PriorityQueue.Dequeue()` | [`PriorityQueue::dequeue`] |

use etcd_client::{
    Client, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchOptions, WatchStream,
};
use tokio::task::JoinHandle;
use tracing::{debug, info_span, warn, Instrument};

use crate::ownership::owned::{create_key, spawn_cleanup};
use crate::plumbing::key::{dir_prefix, header_rev, show, txn_get, unix_nanos};
use crate::plumbing::retry::{retrying, Backoff};
use crate::plumbing::watch::watch_from_now;
use crate::txn::{key_missing, mod_rev_is, unchanged_since};
use crate::{Error, Result};

/// Largest priority a [`PriorityQueue`] accepts (five digits in the key).
pub const MAX_PRIORITY: u32 = 99_999;

/// How many sequence-number races a priority-queue enqueue retries at once before it
/// starts backing off.
const SEQUENCE_RACES_BEFORE_BACKOFF: u32 = 4;

/// How many of the first items a dequeue reads and offers to take in one transaction:
/// consumers that read the same head then take different items instead of all but
/// one losing the race for the first.
const CANDIDATES: i64 = 8;

/// A FIFO queue on etcd (Go recipe layout). Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    prefix: String,
}

/// A priority queue on etcd (Go recipe layout): lower numbers first, FIFO within one.
#[derive(Clone)]
pub struct PriorityQueue {
    client: Client,
    prefix: String,
}

impl Queue {
    /// The queue named `name` (items under `name/`).
    pub fn new(client: Client, name: &str) -> Result<Queue> {
        Ok(Queue {
            client,
            prefix: dir_prefix(name)?,
        })
    }

    /// Appends an item; returns its key.
    pub async fn enqueue(&self, value: impl AsRef<[u8]>) -> Result<String> {
        let mut client = self.client.clone();
        loop {
            let key = format!("{}{}", self.prefix, unix_nanos());
            if create_key(&mut client, &key, value.as_ref(), None, &[])
                .await?
                .is_some()
            {
                return Ok(key);
            }
        }
    }

    /// Removes and returns the oldest item, waiting while the queue is empty.
    pub async fn dequeue(&self) -> Result<Vec<u8>> {
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Mod, SortOrder::Ascend)
            .with_limit(CANDIDATES);
        take_first(&self.client, &self.prefix, oldest, Order::Fifo)
            .instrument(info_span!("coord.queue.dequeue", queue = %self.prefix))
            .await
    }

    /// Items in the queue.
    pub async fn len(&self) -> Result<u64> {
        count(&self.client, &self.prefix).await
    }

    /// True when the queue holds no item.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
}

impl PriorityQueue {
    /// The priority queue named `name` (items under `name/`).
    pub fn new(client: Client, name: &str) -> Result<PriorityQueue> {
        Ok(PriorityQueue {
            client,
            prefix: dir_prefix(name)?,
        })
    }

    /// Adds an item with `priority` (0 is served first); returns its key.
    pub async fn enqueue(&self, value: impl AsRef<[u8]>, priority: u32) -> Result<String> {
        if priority > MAX_PRIORITY {
            return Err(Error::InvalidArgument(format!(
                "priority {priority} is out of range 0..={MAX_PRIORITY}"
            )));
        }
        let dir = format!("{}{priority:05}", self.prefix);
        let marker = format!("__{dir}");
        let last_key = || {
            let newest = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(1)
                .with_keys_only();
            (format!("{dir}/"), newest)
        };
        let mut client = self.client.clone();
        let (range, newest) = last_key();
        let read = client.get(range, Some(newest)).await?;
        let mut last = read.kvs().first().map(|kv| show(kv.key()));
        let mut read_at = header_rev(read.header());
        let mut backoff = Backoff::default();
        for lost in 0u32.. {
            let next = match &last {
                Some(key) => next_sequence(key)?,
                None => 0,
            };
            let key = format!("{dir}/{next:016}");
            // If the marker moved since our read, someone else allocated in between:
            // our "last + 1" may be stale (or even re-use a deleted number). Then the
            // other branch reads the last key again, so a retry needs no extra read.
            let (range, newest) = last_key();
            let txn = Txn::new()
                .when([unchanged_since(marker.as_str(), read_at)])
                .and_then([
                    TxnOp::put(marker.as_str(), "", None),
                    TxnOp::put(key.as_str(), value.as_ref(), None),
                ])
                .or_else([TxnOp::get(range, Some(newest))]);
            let resp = client.txn(txn).await?;
            if resp.succeeded() {
                return Ok(key);
            }
            last = txn_get(&resp, 0).and_then(|g| g.kvs().first().map(|kv| show(kv.key())));
            read_at = header_rev(resp.header());
            debug!(key = %key, lost, "sequence number taken; retrying");
            // A lost race means another producer just went through: try again at once
            // with what the losing transaction read. Back off only when losing keeps
            // happening (many producers on one priority).
            if lost >= SEQUENCE_RACES_BEFORE_BACKOFF {
                backoff.wait(&"sequence raced").await;
            }
        }
        unreachable!("the loop above only ends by returning")
    }

    /// Removes and returns the item with the lowest priority number (oldest first
    /// within it), waiting while the queue is empty.
    pub async fn dequeue(&self) -> Result<Vec<u8>> {
        let lowest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Ascend)
            .with_limit(CANDIDATES);
        take_first(&self.client, &self.prefix, lowest, Order::Priority)
            .instrument(info_span!("coord.priority_queue.dequeue", queue = %self.prefix))
            .await
    }

    /// Items in the queue.
    pub async fn len(&self) -> Result<u64> {
        count(&self.client, &self.prefix).await
    }

    /// True when the queue holds no item.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
}

/// The sequence number after the one that ends priority-queue key `key`
/// (`<name>/<priority>/<seq>`). A key whose suffix is not a number, or is the largest
/// one, is [`Error::Malformed`], never a panic.
pub(crate) fn next_sequence(key: &str) -> Result<u64> {
    let malformed = |reason: &str| Error::Malformed {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let seq = key.rsplit('/').next().unwrap_or_default();
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("sequence suffix is not a number"));
    }
    seq.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| malformed("sequence suffix is out of range"))
}

/// Keys under `prefix` (count only).
pub(crate) async fn count(client: &Client, prefix: &str) -> Result<u64> {
    let resp = client
        .clone()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    Ok(resp.count().max(0) as u64)
}

/// The dequeue loop both queues share: read the first items by `order` and take the
/// first of them still there in one transaction; when the queue is empty, open a watch
/// from now, read again (anything enqueued before the watch was in place shows up in
/// that read), and wait for the watch between reads.
async fn take_first(
    client: &Client,
    prefix: &str,
    order: GetOptions,
    kind: Order,
) -> Result<Vec<u8>> {
    let mut client = client.clone();
    let mut backoff = Backoff::default();
    let mut stream: Option<WatchStream> = None;
    loop {
        let first = client.get(prefix, Some(order.clone())).await?;
        if !first.kvs().is_empty() {
            if let Some(value) = TakeItem::start(&client, prefix, kind, first.kvs().to_vec())
                .finish()
                .await?
            {
                return Ok(value);
            }
            continue; // others took them all: look again at once
        }
        let Some(watch) = stream.as_mut() else {
            let options = WatchOptions::new().with_prefix();
            stream = Some(watch_from_now(&mut client, prefix.as_bytes(), options).await?);
            continue;
        };
        match watch.message().await {
            Ok(Some(resp)) if !resp.canceled() => {}
            _ => {
                backoff.wait(&"queue watch broke; re-opening").await;
                stream = None;
            }
        }
    }
}

/// The compare-and-delete of one of the first items, run in its own task. If the
/// caller is dropped after the delete committed, the item is put back instead of
/// being lost.
struct TakeItem {
    client: Client,
    prefix: String,
    kind: Order,
    candidates: Vec<KeyValue>,
    task: Option<JoinHandle<Result<Option<usize>>>>,
}

impl TakeItem {
    fn start(client: &Client, prefix: &str, kind: Order, candidates: Vec<KeyValue>) -> TakeItem {
        let mut task_client = client.clone();
        let txn = take_one_of(&candidates);
        let task = tokio::spawn(async move { Ok(taken_index(&task_client.txn(txn).await?)) });
        TakeItem {
            client: client.clone(),
            prefix: prefix.to_owned(),
            kind,
            candidates,
            task: Some(task),
        }
    }

    /// The value of the item we took, `None` if other consumers took every candidate.
    async fn finish(mut self) -> Result<Option<Vec<u8>>> {
        let task = self.task.as_mut().expect("finish() once");
        let taken = match task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(Error::Etcd(etcd_client::Error::IoError(
                std::io::Error::new(std::io::ErrorKind::Interrupted, "runtime shutting down"),
            ))),
        };
        self.task = None;
        Ok(taken?.map(|i| self.candidates[i].value().to_vec()))
    }
}

/// One transaction that deletes the first of `candidates` still unchanged: "if the
/// first is as read, delete it, else if the second is …" (etcd's nested transactions),
/// so the order of the queue is kept and a lost race costs no round trip.
fn take_one_of(candidates: &[KeyValue]) -> Txn {
    let mut inner: Option<Txn> = None;
    for kv in candidates.iter().rev() {
        let mut txn = Txn::new()
            .when([mod_rev_is(kv.key().to_vec(), kv.mod_revision())])
            .and_then([TxnOp::delete(kv.key().to_vec(), None)]);
        if let Some(next) = inner.take() {
            txn = txn.or_else([TxnOp::txn(next)]);
        }
        inner = Some(txn);
    }
    inner.expect("at least one candidate")
}

/// Which candidate a [`take_one_of`] transaction deleted, if any.
fn taken_index(resp: &TxnResponse) -> Option<usize> {
    let mut resp = resp.clone();
    for index in 0.. {
        if resp.succeeded() {
            return Some(index);
        }
        match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Txn(next)) => resp = next,
            _ => return None,
        }
    }
    None
}

impl Drop for TakeItem {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let (client, prefix, kind, candidates) = (
            self.client.clone(),
            self.prefix.clone(),
            self.kind,
            std::mem::take(&mut self.candidates),
        );
        spawn_cleanup(async move {
            if let Ok(Ok(Some(taken))) = task.await {
                let item = &candidates[taken];
                // We deleted it but nobody received it: put it back.
                match put_back(client, prefix, kind, item).await {
                    Ok(key) => {
                        debug!(key = %key, "dequeue dropped after taking an item; re-queued")
                    }
                    Err(e) => warn!(
                        key = %show(item.key()),
                        error = %e,
                        "dequeue dropped after taking an item, and putting it back failed: the item is lost"
                    ),
                }
            }
        });
    }
}

/// Which queue an item came from, i.e. how to put it back.
#[derive(Clone, Copy, Debug)]
enum Order {
    Fifo,
    Priority,
}

/// Puts a taken item back: at its old key if that key is still free (so it keeps its
/// place), else as a new item (a [`PriorityQueue`] restarts its sequence at 0 when a
/// priority drains, so a newer item may hold the old key: it is never overwritten).
async fn put_back(client: Client, prefix: String, kind: Order, item: &KeyValue) -> Result<String> {
    let key = show(item.key());
    let txn = Txn::new()
        .when([key_missing(key.as_str())])
        .and_then([TxnOp::put(key.as_str(), item.value(), None)]);
    let restored = retrying(|| {
        let (mut client, txn) = (client.clone(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await?;
    if restored.succeeded() {
        return Ok(key);
    }
    match kind {
        Order::Fifo => Queue { client, prefix }.enqueue(item.value()).await,
        Order::Priority => {
            let priority = key
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.split('/').next())
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or_else(|| Error::Malformed {
                    key: key.clone(),
                    reason: "no priority after the queue prefix".into(),
                })?;
            PriorityQueue { client, prefix }
                .enqueue(item.value(), priority)
                .await
        }
    }
}
