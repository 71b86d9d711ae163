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
//! <name>/seq                                  the sequence counter
//! <name>/dead/<priority %05d>/<seq %020d>     items that failed max_attempts times
//! ```
//! Lower priority numbers are served first (like Go's PriorityQueue); FIFO within a
//! priority, by the sequence number taken at enqueue. An item's value is one header
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
//!   side effects with [`Claimed::is_claim_held`] or an idempotency key.
//! - A value under `items/` that this crate did not write (or a key outside the
//!   layout) is moved to `dead/` as it is, with a warning, instead of failing every
//!   claim; its `ids/` key, unreadable, stays behind.
//! - Finding the next item reads up to 64 items and all claims per round, so the cost
//!   grows with the number of items *in flight* at the head of the queue, not with the
//!   queue's length; a queue whose head is full of delayed (nacked) items costs more.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, field, info_span, Instrument, Span};

use crate::internal::key::{dir_prefix, show, txn_get, txn_rev};
use crate::internal::owned::{compare_delete, spawn_cleanup, PendingPut, Placed};
use crate::internal::retry::{retrying, Backoff};
use crate::internal::watch::watch_from_now;
use crate::metrics;
use crate::{Error, Result, Session};

/// Items read per round when looking for a claimable one.
const BATCH: i64 = 64;
pub use crate::queue::MAX_PRIORITY;
/// Default number of deliveries before an item is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const HEADER_TAG: &str = "coord-wq/1 ";

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

/// The metadata stored in front of every payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Caller-visible id, unique among queued items.
    pub id: String,
    /// Deliveries so far (raised by each claim).
    pub attempts: u32,
    /// When it was enqueued, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Not to be delivered before this time (ms since the Unix epoch); set by `nack_after`.
    #[serde(default)]
    pub not_before_ms: u64,
}

/// Splits a stored item into its envelope and payload; anything that is not an item
/// this crate wrote is [`Error::Malformed`], never a panic. Public so that tools (and
/// the fuzz target `queue_items`) can decode what they read.
pub fn decode_item(key: &str, value: &[u8]) -> Result<(Envelope, Vec<u8>)> {
    let malformed = |reason: &str| Error::Malformed {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let newline = value
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| malformed("no header line"))?;
    let header =
        std::str::from_utf8(&value[..newline]).map_err(|_| malformed("header is not UTF-8"))?;
    let json = header
        .strip_prefix(HEADER_TAG)
        .ok_or_else(|| malformed("not a coord work-queue item (unknown header)"))?;
    let envelope: Envelope =
        serde_json::from_str(json).map_err(|e| malformed(&format!("bad header: {e}")))?;
    Ok((envelope, value[newline + 1..].to_vec()))
}

/// The stored form of an item: the header line, then the payload unchanged.
/// [`decode_item`] gives back exactly `envelope` and `payload`.
pub fn encode_item(envelope: &Envelope, payload: &[u8]) -> Vec<u8> {
    let mut out = HEADER_TAG.as_bytes().to_vec();
    out.extend(serde_json::to_vec(envelope).expect("envelope serialises"));
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Parses an item's slot, `<priority %05d>/<seq %020d>` (the part of its key after
/// `<name>/items/`), into priority and sequence number. A key this crate did not
/// write is [`Error::Malformed`], never a panic.
pub fn parse_slot(slot: &str) -> Result<(u32, u64)> {
    let malformed = |reason: &str| Error::Malformed {
        key: slot.to_owned(),
        reason: reason.to_owned(),
    };
    let (priority, seq) = slot
        .split_once('/')
        .ok_or_else(|| malformed("no <priority>/<seq> in the key"))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(priority) || !digits(seq) {
        return Err(malformed("priority and sequence must be decimal digits"));
    }
    let priority: u32 = priority
        .parse()
        .ok()
        .filter(|p| *p <= MAX_PRIORITY)
        .ok_or_else(|| malformed("priority out of range"))?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| malformed("sequence number out of range"))?;
    Ok((priority, seq))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
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
    fn seq_key(&self) -> String {
        format!("{}seq", self.prefix)
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
        let (id_key, seq_key) = (self.id_key(id), self.seq_key());
        let mut backoff = Backoff::default();
        loop {
            // Take the next sequence number with a compare-and-swap on the counter, in
            // the same txn that checks the id is new and writes the item.
            let seq_now = self.client.clone().get(seq_key.as_str(), None).await?;
            let (seq, seq_rev) = match seq_now.kvs().first() {
                Some(kv) => (
                    std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| Error::Malformed {
                            key: seq_key.clone(),
                            reason: "sequence counter is not a number".into(),
                        })?,
                    kv.mod_revision(),
                ),
                None => (0, 0),
            };
            let next = seq + 1;
            let item_key = format!("{}{priority:05}/{next:020}", self.items());
            let envelope = Envelope {
                id: id.to_owned(),
                attempts: 0,
                enqueued_ms: now_ms(),
                not_before_ms: 0,
            };
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(seq_key.as_str(), CompareOp::Equal, seq_rev),
                    Compare::version(id_key.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(seq_key.as_str(), next.to_string(), None),
                    TxnOp::put(id_key.as_str(), item_key.as_str(), None),
                    TxnOp::put(item_key.as_str(), encode_item(&envelope, payload), None),
                ])
                .or_else([TxnOp::get(id_key.as_str(), None)]);
            let resp = self.client.clone().txn(txn).await?;
            if resp.succeeded() {
                debug!(id, item = %item_key, "enqueued");
                Span::current().record("created", true);
                metrics::queue_event(metrics::QUEUE_ENQUEUED, &self.prefix);
                return Ok(Enqueued {
                    id: id.to_owned(),
                    created: true,
                });
            }
            if txn_get(&resp, 0).is_some_and(|g| g.count() > 0) {
                Span::current().record("created", false);
                return Ok(Enqueued {
                    id: id.to_owned(),
                    created: false,
                });
            }
            backoff.wait(&"sequence counter moved; retrying").await; // another producer won
        }
    }

    /// Claims the next deliverable item for `session`'s consumer, waiting until there
    /// is one. Cancel-safe: dropping the future leaves no claim behind.
    pub async fn claim(&self, session: &Session) -> Result<Claimed> {
        let span = info_span!("coord.queue.claim", queue = %self.prefix, id = field::Empty, attempt = field::Empty);
        async {
            session.check_alive()?;
            let mut client = self.client.clone();
            let lost = session.done();
            tokio::pin!(lost);
            let mut backoff = Backoff::default();
            // Watch first, then look: whatever changes after the look is in the stream.
            let mut stream = watch_from_now(
                &mut client,
                self.prefix.as_bytes(),
                WatchOptions::new().with_prefix(),
            )
            .await?;
            loop {
                let (claimed, wake_at) = self.try_claim_round(session).await?;
                if let Some(claimed) = claimed {
                    Span::current().record("id", claimed.id());
                    Span::current().record("attempt", claimed.attempt());
                    return Ok(claimed);
                }
                let delay = wake_at
                    .map(|ms| Duration::from_millis(ms.saturating_sub(now_ms())))
                    .unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    message = stream.message() => match message {
                        // Something under the queue changed (an item, a claim gone): look again.
                        Ok(Some(resp)) if !resp.canceled() => {}
                        // A broken, closed or canceled watch says nothing about the queue:
                        // re-open it and look again.
                        _ => {
                            backoff.wait(&"queue watch broke; re-opening").await;
                            stream = watch_from_now(
                                &mut client,
                                self.prefix.as_bytes(),
                                WatchOptions::new().with_prefix(),
                            )
                            .await?;
                        }
                    },
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut lost => return Err(Error::SessionExpired(session.lease())),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Claims the next deliverable item if there is one, without waiting.
    pub async fn try_claim(&self, session: &Session) -> Result<Option<Claimed>> {
        session.check_alive()?;
        Ok(self.try_claim_round(session).await?.0)
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

    /// One pass over the head of the queue. Returns the claim, or when the earliest
    /// delayed item becomes deliverable (ms since epoch), if any.
    async fn try_claim_round(&self, session: &Session) -> Result<(Option<Claimed>, Option<u64>)> {
        let mut client = self.client.clone();
        let items_end = prefix_end(&self.items());
        let mut from = self.items().into_bytes();
        let mut wake_at: Option<u64> = None;
        loop {
            // Items and claims at one revision.
            let page = Txn::new().and_then([
                TxnOp::get(
                    from.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(items_end.clone())
                            .with_sort(SortTarget::Key, SortOrder::Ascend)
                            .with_limit(BATCH),
                    ),
                ),
                TxnOp::get(
                    self.claims(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                ),
            ]);
            let resp = retrying(|| {
                let (mut c, t) = (client.clone(), page.clone());
                async move { c.txn(t).await }
            })
            .await?;
            let items = txn_get(&resp, 0)
                .map(|g| g.kvs().to_vec())
                .unwrap_or_default();
            let claimed_slots: HashSet<String> = txn_get(&resp, 1)
                .map(|g| {
                    g.kvs()
                        .iter()
                        .map(|kv| show(kv.key())[self.claims().len()..].to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let now = now_ms();
            for kv in &items {
                let item_key = show(kv.key());
                let slot = self.slot_of(&item_key).to_owned();
                if claimed_slots.contains(&slot) {
                    continue;
                }
                let decoded = parse_slot(&slot).and_then(|(priority, _)| {
                    decode_item(&item_key, kv.value()).map(|(e, p)| (e, p, priority))
                });
                let (envelope, payload, priority) = match decoded {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        // Not an item of ours: set it aside rather than let it block
                        // every consumer of the queue.
                        tracing::warn!(key = %item_key, error = %e, "malformed queue item dead-lettered");
                        self.dead_letter(&mut client, &item_key, &slot, kv, None)
                            .await?;
                        continue;
                    }
                };
                if envelope.not_before_ms > now {
                    wake_at = Some(
                        wake_at.map_or(envelope.not_before_ms, |w| w.min(envelope.not_before_ms)),
                    );
                    continue;
                }
                if envelope.attempts >= self.max_attempts {
                    self.dead_letter(&mut client, &item_key, &slot, kv, Some(&envelope))
                        .await?;
                    continue;
                }
                if let Some(claimed) = self
                    .claim_item(
                        session,
                        &item_key,
                        &slot,
                        kv.mod_revision(),
                        (envelope, payload, priority),
                    )
                    .await?
                {
                    return Ok((Some(claimed), wake_at));
                }
            }
            if (items.len() as i64) < BATCH {
                return Ok((None, wake_at));
            }
            // Every item of this page is taken or delayed: look further down the queue.
            from = kv_after(items.last().expect("a full page").key());
        }
    }

    /// Claims one item: creates the claim key under the consumer's lease and raises the
    /// item's attempt counter, only if the item is unchanged and unclaimed.
    async fn claim_item(
        &self,
        session: &Session,
        item_key: &str,
        slot: &str,
        item_rev: i64,
        (mut envelope, payload, priority): (Envelope, Vec<u8>, u32),
    ) -> Result<Option<Claimed>> {
        envelope.attempts = envelope.attempts.saturating_add(1);
        let claim_key = format!("{}{slot}", self.claims());
        let claim_value = serde_json::json!({
            "lease": format!("{:x}", session.lease()),
            "attempt": envelope.attempts,
            "claimed_ms": now_ms(),
        })
        .to_string();
        let txn = Txn::new()
            .when([
                Compare::mod_revision(item_key, CompareOp::Equal, item_rev),
                Compare::version(claim_key.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(
                    claim_key.as_str(),
                    claim_value,
                    Some(PutOptions::new().with_lease(session.lease())),
                ),
                TxnOp::put(item_key, encode_item(&envelope, &payload), None),
            ]);
        let (mut client, lease, task_key) =
            (self.client.clone(), session.lease(), claim_key.clone());
        // The claim txn runs inline; if this future is dropped mid-flight, the pending
        // guard finishes it in the background and undoes the claim (never left behind).
        let mut pending = PendingPut::start(self.client.clone(), async move {
            let resp = client.txn(txn).await.map_err(|e| match e {
                etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found") => {
                    Error::SessionExpired(lease)
                }
                other => other.into(),
            })?;
            if resp.succeeded() {
                Ok((
                    Placed {
                        key: task_key,
                        rev: txn_rev(&resp),
                    },
                    (),
                ))
            } else {
                // Someone claimed or changed it first: not ours, nothing created.
                Err(Error::Locked(task_key))
            }
        });
        match pending.placed().await {
            Ok(_) => {}
            Err(Error::Locked(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let claim = pending.keep();
        debug!(id = %envelope.id, attempt = envelope.attempts, "claimed");
        metrics::queue_event(metrics::QUEUE_CLAIMS, &self.prefix);
        Ok(Some(Claimed {
            client: self.client.clone(),
            item_key: item_key.to_owned(),
            id_key: self.id_key(&envelope.id),
            claim,
            envelope,
            payload,
            priority,
            settled: false,
            queue: self.prefix.clone(),
        }))
    }

    /// Moves an item that used up its attempts to the dead-letter area: the item and
    /// its id key are deleted and the dead key written in **one** transaction, and only
    /// if the item is unchanged and unclaimed — so an item is never lost between the
    /// two areas, and a concurrent claim or nack wins over the move.
    async fn dead_letter(
        &self,
        client: &mut Client,
        item_key: &str,
        slot: &str,
        item: &etcd_client::KeyValue,
        envelope: Option<&Envelope>,
    ) -> Result<()> {
        let claim_key = format!("{}{slot}", self.claims());
        let dead_key = format!("{}{slot}", self.dead());
        let mut ops = vec![
            TxnOp::put(dead_key.as_str(), item.value().to_vec(), None),
            TxnOp::delete(item_key, None),
        ];
        // A malformed item has no readable id; its id key (if any) is left behind.
        if let Some(envelope) = envelope {
            ops.push(TxnOp::delete(self.id_key(&envelope.id), None));
        }
        let txn = Txn::new()
            .when([
                Compare::mod_revision(item_key, CompareOp::Equal, item.mod_revision()),
                Compare::version(claim_key.as_str(), CompareOp::Equal, 0),
            ])
            .and_then(ops);
        if client.txn(txn).await?.succeeded() {
            if let Some(envelope) = envelope {
                tracing::warn!(id = %envelope.id, attempts = envelope.attempts, "item dead-lettered");
            }
        }
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

/// The first key after `key` (for paging through a range).
fn kv_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// An item this consumer holds. Finish it with [`Claimed::ack`] (done) or
/// [`Claimed::nack`] (give it back); if dropped unsettled, the claim is released in
/// the background and the item is delivered again.
pub struct Claimed {
    client: Client,
    item_key: String,
    id_key: String,
    claim: Placed,
    envelope: Envelope,
    payload: Vec<u8>,
    priority: u32,
    settled: bool,
    /// The queue's prefix, the `queue` label of its metrics.
    queue: String,
}

impl Claimed {
    /// The item's id.
    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// The payload, as enqueued.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Which delivery this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.envelope.attempts
    }

    /// The item's priority (lower is served first).
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// When the item was enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.envelope.enqueued_ms)
    }

    /// The claim's create revision: a fencing token for side effects of this delivery.
    pub fn fencing_token(&self) -> i64 {
        self.claim.rev
    }

    /// A txn comparison true only while this claim is still ours.
    pub fn is_claim_held(&self) -> Compare {
        Compare::create_revision(self.claim.key.as_str(), CompareOp::Equal, self.claim.rev)
    }

    /// Done: deletes the item (and its claim and id) — only if the claim is still ours.
    /// [`Error::OwnershipLost`] means the claim expired and the item was (or will be)
    /// delivered to someone else; it is not deleted.
    pub async fn ack(mut self) -> Result<()> {
        let span =
            info_span!("coord.queue.ack", id = %self.envelope.id, attempt = self.envelope.attempts);
        let txn = Txn::new().when([self.is_claim_held()]).and_then([
            TxnOp::delete(self.item_key.as_str(), None),
            TxnOp::delete(self.claim.key.as_str(), None),
            TxnOp::delete(self.id_key.as_str(), None),
        ]);
        let resp = self.client.txn(txn).instrument(span).await?;
        self.settled = true;
        if resp.succeeded() {
            metrics::queue_event(metrics::QUEUE_ACKS, &self.queue);
            Ok(())
        } else {
            Err(Error::OwnershipLost(self.claim.key.clone()))
        }
    }

    /// Gives the item back for redelivery now.
    pub async fn nack(self) -> Result<()> {
        self.nack_after(Duration::ZERO).await
    }

    /// Gives the item back, deliverable again after `delay` (a retry backoff).
    pub async fn nack_after(mut self, delay: Duration) -> Result<()> {
        let span = info_span!("coord.queue.nack", id = %self.envelope.id, attempt = self.envelope.attempts, ?delay);
        let mut envelope = self.envelope.clone();
        envelope.not_before_ms = now_ms() + delay.as_millis() as u64;
        let txn = Txn::new().when([self.is_claim_held()]).and_then([
            TxnOp::put(
                self.item_key.as_str(),
                encode_item(&envelope, &self.payload),
                None,
            ),
            TxnOp::delete(self.claim.key.as_str(), None),
        ]);
        let resp = self.client.txn(txn).instrument(span).await?;
        self.settled = true;
        if resp.succeeded() {
            metrics::queue_event(metrics::QUEUE_NACKS, &self.queue);
            Ok(())
        } else {
            Err(Error::OwnershipLost(self.claim.key.clone()))
        }
    }
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("item", &self.item_key)
            .field("envelope", &self.envelope)
            .field("claim_rev", &self.claim.rev)
            .finish()
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

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (mut client, claim) = (self.client.clone(), self.claim.clone());
        spawn_cleanup(async move {
            let _ = compare_delete(&mut client, &claim.key, claim.rev).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_garbage_is_malformed_not_a_panic() {
        let envelope = Envelope {
            id: "order-1".into(),
            attempts: 2,
            enqueued_ms: 5,
            not_before_ms: 0,
        };
        let stored = encode_item(&envelope, b"{\"amount\":3}\nsecond line");
        let (back, payload) = decode_item("k", &stored).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(payload, b"{\"amount\":3}\nsecond line");
        for bad in [
            &b""[..],
            b"no newline",
            b"coord-wq/1 {not json}\n",
            b"other/1 {}\n",
            b"\xff\xfe\n",
            b"coord-wq/1 {\"id\":1}\n",
        ] {
            assert!(matches!(
                decode_item("k", bad),
                Err(Error::Malformed { .. })
            ));
        }
    }

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
