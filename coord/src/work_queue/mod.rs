//! WorkQueue: a reliable priority work queue — nothing is lost when a consumer dies.
//!
//! etcd's Go recipes have a Queue whose `Dequeue` deletes the item and then returns
//! it: a consumer that crashes between the two loses the item. This queue never
//! deletes an item before its consumer says it is done. A consumer *claims* an item
//! (a claim key attached to the consumer's session lease), works on it, and *acks*
//! it (item and claim deleted in one transaction). If the consumer dies, its lease
//! expires, the claim key vanishes with it, and the item is claimable again:
//! redelivery, with the attempt counter already raised.
//!
//! # Key layout (under `<name>/`)
//! ```text
//! <name>/items/<priority %05d>/<seq %020d>    envelope + payload (no lease)
//! <name>/claims/<priority %05d>/<seq %020d>   who works on it (consumer's lease)
//! <name>/ids/<id>                             item key, for idempotent enqueue by id
//! <name>/dead/<priority %05d>/<seq %020d>     items that failed max_attempts times
//! ```
//! Lower priority numbers are served first (like Go's PriorityQueue); within a
//! priority, in the order of the sequence numbers taken at enqueue. A sequence number
//! is the producer's clock in nanoseconds (strictly increasing within one process), so
//! one producer's items are served in the order it enqueued them, and items from
//! different producers by their enqueue times, within the clocks' skew. (Earlier builds
//! numbered items from a shared `<name>/seq` counter that every enqueue had to
//! compare-and-swap, so concurrent producers retried each other; their items sort
//! before clock-numbered ones and are served first, and the counter is no longer
//! written.) An item's value is one header
//! line (`coord-wq/1 {json}`) followed by the payload bytes unchanged, so a JSON payload
//! stays readable in `etcdctl get`.
//!
//! # Guarantees
//! - An enqueued item is delivered until it is acked (or dead-lettered after
//!   `max_attempts` deliveries): at-least-once. A consumer crash, a lease expiry, a
//!   dropped `Claimed`, a `nack` all make it claimable again.
//! - Two consumers never hold a claim on one item at the same time (claim = create
//!   the claim key only if absent, in a txn that also checks the item is unchanged).
//! - `ack` deletes the item only while the claim is still ours; a consumer whose claim
//!   expired gets [`Error::OwnershipLost`] and the item stays for whoever has it now.
//!   [`Claimed::ack_and_claim_next`] does the same and claims the next item in the same
//!   transaction (nested, so the claim keeps its own conditions): one write per item
//!   for a consumer that goes straight on.
//! - Enqueue by id is idempotent: the same id twice is one item (while it is queued).
//! - Waiting consumers are woken by a watch opened from now (commit-time wake-up);
//!   a broken or compacted watch is re-opened and the queue re-read, never trusted.
//!
//! # Not guaranteed
//! - **Exactly-once processing.** A consumer can finish the work and die before its
//!   ack: the item is delivered again. Make processing idempotent on the item id (the
//!   shop's payment worker relies on a unique payment per order in its database).
//! - A claim outlives a stalled consumer by up to the session TTL; a consumer paused
//!   longer than that may find, when it wakes, that someone else has the item. Guard
//!   side effects with [`Claimed::is_owner`] or an idempotency key.
//! - A value under `items/` that this crate did not write (or a key outside the
//!   layout) is moved to `dead/` as it is, with a warning, instead of failing every
//!   claim; its `ids/` key, unreadable, stays behind.
//! - Strict order under several consumers. A claim sends one transaction that tries
//!   the next (up to 8) deliverable items it read, in queue order, and takes the first
//!   still free when it commits; so items start in queue order as each claimer saw the
//!   queue, but an item enqueued (or given back) after a claimer's read waits for a
//!   later claim even if it is more urgent.
//! - Finding the next item reads up to 64 items and all claims per round, so the cost
//!   grows with the number of items *in flight* at the head of the queue, not with the
//!   queue's length; a queue whose head is full of delayed (nacked) items costs more.
//!
//! # Files
//! `mod.rs`: [`WorkQueue`], enqueueing and the queue's counts; `claim.rs`: claiming
//! (and dead-lettering on the way); `claimed.rs`: [`Claimed`], ack (alone or with the
//! next claim) and nack; `wire.rs`:
//! the stored form of an item and its slot (crate-private); `inspect.rs`:
//! [`StoredItem`], a read-only view of one stored item for tools that watch a queue.

mod claim;
mod claimed;
mod inspect;
pub(crate) mod wire;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions, SortOrder, SortTarget};
use tracing::{debug, field, info_span, Instrument, Span};

use crate::metrics;
use crate::plumbing::key::{dir_prefix, show};
use crate::txn::{key_missing, Ops, Txn};
use crate::{Error, Result};
pub use claimed::Claimed;
pub use inspect::StoredItem;
use wire::{decode_item, encode_item, Envelope};

pub use crate::queue::MAX_PRIORITY;
/// Default number of deliveries before an item is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// A reliable work queue named `name`. Cheap to clone.
#[derive(Clone)]
pub struct WorkQueue {
    client: Client,
    prefix: String,
    max_attempts: u32,
}

/// What an enqueue did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The item's id (given or generated).
    pub id: String,
    /// False when an item with this id was already queued (nothing was added).
    pub created: bool,
}

/// The next sequence number for an item's slot: the wall clock in nanoseconds since
/// the epoch, strictly increasing within this process (a clock that stands still or
/// steps back continues from the last number). Producers in different processes take
/// numbers from their own clocks, so their items interleave by enqueue time, within
/// the clocks' skew.
fn next_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl WorkQueue {
    /// The queue named `name` (keys under `name/`).
    pub fn new(client: Client, name: &str) -> Result<WorkQueue> {
        Ok(WorkQueue {
            client,
            prefix: dir_prefix(name)?,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// Deliveries after which an item goes to the dead-letter area instead.
    pub fn with_max_attempts(mut self, attempts: u32) -> Result<WorkQueue> {
        if attempts == 0 {
            return Err(Error::InvalidArgument(
                "max_attempts must be at least 1".into(),
            ));
        }
        self.max_attempts = attempts;
        Ok(self)
    }

    fn items(&self) -> String {
        format!("{}items/", self.prefix)
    }
    fn claims(&self) -> String {
        format!("{}claims/", self.prefix)
    }
    fn dead(&self) -> String {
        format!("{}dead/", self.prefix)
    }
    fn id_key(&self, id: &str) -> String {
        format!("{}ids/{id}", self.prefix)
    }
    /// `<priority>/<seq>`, the part item, claim and dead keys share.
    fn slot_of<'k>(&self, item_key: &'k str) -> &'k str {
        &item_key[self.items().len()..]
    }

    /// Enqueues `payload` with a generated id.
    pub async fn enqueue(&self, payload: &[u8], priority: u32) -> Result<Enqueued> {
        let id = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        self.enqueue_with_id(&id, payload, priority).await
    }

    /// Enqueues `payload` under `id` unless an item with that id is already queued
    /// (then nothing changes and `created` is false). The shop enqueues one payment
    /// request per order id this way.
    pub async fn enqueue_with_id(
        &self,
        id: &str,
        payload: &[u8],
        priority: u32,
    ) -> Result<Enqueued> {
        if id.is_empty() || id.contains('/') || id.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "item id {id:?} must be non-empty without '/' or NUL"
            )));
        }
        if priority > MAX_PRIORITY {
            return Err(Error::InvalidArgument(format!(
                "priority {priority} is out of range 0..={MAX_PRIORITY}"
            )));
        }
        let span = info_span!("coord.queue.enqueue", queue = %self.prefix, id, priority, created = field::Empty);
        self.enqueue_new(id, payload, priority)
            .instrument(span)
            .await
    }

    async fn enqueue_new(&self, id: &str, payload: &[u8], priority: u32) -> Result<Enqueued> {
        let id_key = self.id_key(id);
        loop {
            // One txn: the id is new and the slot is free, then the id and the item.
            // The slot's sequence number comes from the clock (no shared counter to
            // compare-and-swap, so concurrent producers never retry each other); the
            // slot's own compare catches two producers picking the same number.
            let item_key = format!("{}{priority:05}/{:020}", self.items(), next_seq());
            let envelope = Envelope {
                id: id.to_owned(),
                attempts: 0,
                enqueued_ms: now_ms(),
                not_before_ms: 0,
            };
            let outcome = Txn::new()
                .when(key_missing(id_key.as_str()))
                .when(key_missing(item_key.as_str()))
                .then(
                    Ops::new()
                        .put(id_key.as_str(), item_key.as_str())
                        .put(item_key.as_str(), encode_item(&envelope, payload)),
                )
                .or_else(Ops::new().get(id_key.as_str()))
                .commit(&self.client)
                .await?;
            if outcome.succeeded() {
                debug!(id, item = %item_key, "enqueued");
                Span::current().record("created", true);
                metrics::queue_event(metrics::QUEUE_ENQUEUED, &self.prefix);
                return Ok(Enqueued {
                    id: id.to_owned(),
                    created: true,
                });
            }
            if outcome.kv(id_key.as_str())?.is_some() {
                Span::current().record("created", false);
                return Ok(Enqueued {
                    id: id.to_owned(),
                    created: false,
                });
            }
            // Another producer took this very slot: the next number is a new one.
            debug!(id, item = %item_key, "slot taken by another producer; picking the next");
        }
    }

    /// Reads the queue's depth, in-flight count and oldest item's age and sets the
    /// gauges `coord_queue_depth`, `coord_queue_in_flight` and
    /// `coord_queue_oldest_item_age_seconds` (see [`crate::metrics`]). The queue lives in
    /// etcd, so any process may sample it; every sampler reports the same numbers.
    pub async fn record_gauges(&self) -> Result<()> {
        let (depth, in_flight, oldest) =
            tokio::try_join!(self.depth(), self.in_flight(), self.oldest_age())?;
        let oldest = oldest.map_or(0.0, |age| age.as_secs_f64());
        metrics::queue_gauges(&self.prefix, depth, in_flight, oldest);
        Ok(())
    }

    /// Items waiting or in flight (not dead-lettered).
    pub async fn depth(&self) -> Result<u64> {
        self.count(&self.items()).await
    }

    /// Items of one priority waiting or in flight.
    pub async fn depth_at(&self, priority: u32) -> Result<u64> {
        self.count(&format!("{}{priority:05}/", self.items())).await
    }

    /// Items currently claimed by a live consumer.
    pub async fn in_flight(&self) -> Result<u64> {
        self.count(&self.claims()).await
    }

    /// Items moved aside after `max_attempts` deliveries.
    pub async fn dead_lettered(&self) -> Result<u64> {
        self.count(&self.dead()).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        crate::queue::count(&self.client, prefix).await
    }

    /// How long the oldest queued item has been waiting (`None` when empty).
    pub async fn oldest_age(&self) -> Result<Option<Duration>> {
        let resp = self
            .client
            .clone()
            .get(
                self.items(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_limit(1),
                ),
            )
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let (envelope, _) = decode_item(&show(kv.key()), kv.value())?;
        Ok(Some(Duration::from_millis(
            now_ms().saturating_sub(envelope.enqueued_ms),
        )))
    }
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("prefix", &self.prefix)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}
