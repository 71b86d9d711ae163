//! STM: software transactional memory over etcd — read some keys, decide, write some
//! keys, and have it all commit atomically as if nobody else ran at the same time.
//!
//! # How it works (optimistic concurrency, as in etcd's Go `concurrency.NewSTM`)
//! You hand [`run`] a closure. [`run`] calls it with a fresh [`Stm`] handle:
//! 1. **Reads** ([`Stm::get`], [`Stm::get_many`], [`Stm::rev`]) go to etcd the first time
//!    a key is read and are remembered: reading the same key again in this attempt
//!    answers from memory. Each remembered read carries the key's *mod revision* (the
//!    revision of its last write; 0 if absent).
//! 2. **Writes** ([`Stm::put`], [`Stm::del`]) only go into a buffer. Reading a key you
//!    wrote in this attempt gives back your buffered value (or `None` after `del`).
//! 3. When the closure returns `Ok`, everything is sent as **one etcd transaction**: the
//!    comparisons check that what you read is still what etcd holds (the isolation
//!    level decides which checks), and if they hold, all buffered writes apply at once.
//! 4. If a check fails, somebody changed what you based your decision on: nothing was
//!    written, and [`run`] calls your closure **again** with a fresh handle. The failed
//!    commit also brings back the current values of what you checked; the first retry
//!    starts at once from those (no extra round trip). Later retries first wait an
//!    exponentially growing, randomised delay and then read afresh — values fetched
//!    before a wait are stale after it, and would only conflict again.
//!
//! STM uses your keys only: it creates no keys, leases or locks of its own. A Go
//! service using `concurrency.NewSTM` on the same keys is checked against the same
//! mod revisions, so the two interoperate.
//!
//! # Isolation levels
//! | level | what reads see | checked at commit |
//! |---|---|---|
//! | [`Isolation::SerializableSnapshot`] (default) | one snapshot: the revision of the attempt's first read | every key read is unchanged; every key written was not modified after the snapshot |
//! | [`Isolation::Serializable`] | one snapshot, as above | every key read is unchanged |
//! | [`Isolation::RepeatableReads`] | each key as of when it was first read (possibly from a lagging member) | every key read is unchanged |
//! | [`Isolation::ReadCommitted`] | each key as of when it was first read (possibly from a lagging member) | nothing: the last writer wins |
//!
//! In more words:
//! - **SerializableSnapshot** adds a *write-write* check to Serializable: a key you write
//!   without reading it (a "blind" write) still conflicts if someone else wrote it after
//!   your snapshot. With no reads there is no snapshot and so no check.
//! - **Serializable**: the closure never sees a mix of old and new state, and a
//!   committed transaction behaves as if it ran alone at its commit revision. Blind
//!   writes simply overwrite.
//! - **RepeatableReads**: commits are still checked, so what commits is consistent; but
//!   *during* an attempt that will fail, the closure may see keys from different
//!   moments (e.g. both sides of a transfer, or neither). Don't act on that outside etcd.
//! - **ReadCommitted**: no checks. Two closures that read a counter and write it + 1
//!   may both commit, and one increment is lost. Only for writes that do not depend on
//!   what was read.
//!
//! # The closure
//! `run(&client, options, |tx| async move { ... })`: the closure takes the [`Stm`]
//! handle **by value**, so the future it returns owns it — no lifetime puzzles, and the
//! closure may freely borrow from the surrounding scope. It returns `Result<T, E>`:
//! - `Ok(value)` commits; [`run`] returns [`Committed`] with `value`, the commit revision
//!   and the number of attempts.
//! - `Err(e)` **aborts**: nothing is written, the closure is not run again, and [`run`]
//!   returns `Err(e)`. Use it for domain outcomes ("out of stock"). `E` is any type with
//!   `From<coord::Error>`, so `?` works on the handle's calls; your own error enum works,
//!   or use [`Abort`] to carry a reason without defining one.
//!
//! ```no_run
//! # async fn demo(client: &coord::etcd_client::Client) -> Result<(), coord::stm::Abort<String>> {
//! use coord::stm::{self, Abort, Options};
//!
//! let done = stm::run(client, Options::default(), |tx| async move {
//!     let stock: i64 = tx.get_as("/shop/stock/sku-1").await?.unwrap_or(0);
//!     if stock < 1 {
//!         return stm::abort("out of stock".to_string());
//!     }
//!     tx.put("/shop/stock/sku-1", (stock - 1).to_string());
//!     tx.put("/shop/orders/42", "sku-1");
//!     Ok(stock - 1)
//! })
//! .await?;
//! println!("{} left, committed at revision {}", done.value, done.revision);
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//! - All of an attempt's writes commit in one etcd transaction, or none do.
//! - With `SerializableSnapshot` and `Serializable`, a committed attempt read a single
//!   consistent snapshot and nothing it read changed before its commit.
//! - Retries are **bounded**: after [`Options::max_attempts`] (default 30) conflicting
//!   attempts, [`run`] fails with [`Error::TooManyConflicts`]. From the second conflict
//!   on it waits an exponentially growing, randomised delay before trying again
//!   (jitter spreads contenders apart).
//! - **Cancel-safe**: dropping the [`run`] future writes nothing partial. Before the
//!   commit request is sent, nothing was written; once it is in flight, etcd applies
//!   all of it or none of it (which one is unknown to the canceller — as with any etcd
//!   request). No keys or leases are left behind.
//! - A read of a pinned snapshot that etcd compacted away returns
//!   [`Error::Compacted`] to the closure; if the closure then returns an error, the
//!   attempt counts as a conflict and is run again on fresh data.
//! - A handle used after its attempt ended (moved into a spawned task, say) cannot
//!   leak into the next attempt: its reads fail with [`Error::InvalidArgument`] and its
//!   writes are discarded (with a warning in the log).
//!
//! # Not guaranteed
//! - **The closure may run several times.** Side effects outside etcd (sending mail,
//!   charging a card) belong after [`run`] returns, or must be idempotent.
//! - Progress is not fair: under heavy contention on one key an unlucky caller can
//!   lose every round and get [`Error::TooManyConflicts`]. Raise the limit, or use a
//!   [`crate::Mutex`] for hot spots.
//! - Only single keys: there are no range reads (a key added under a prefix you
//!   "scanned" yourself would not conflict).
//! - etcd caps a transaction at 128 comparisons and 128 operations by default
//!   (`--max-txn-ops`); an attempt that reads or writes more keys fails with
//!   [`Error::Etcd`].
//! - A transport failure of the commit request is returned as is, not retried: the
//!   transaction may or may not have applied. Failed *reads* are retried a few times
//!   internally (reads are idempotent) before the error reaches the closure.
//! - If the closure catches a read error and returns `Ok` anyway, the attempt commits
//!   with the reads that did succeed (those are still checked).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tracing::{debug, field, info_span, warn, Instrument, Span};

use crate::internal::key::{show, txn_rev};
use crate::internal::retry::retrying;
use crate::metrics;
use crate::{Error, Result};

/// How concurrent transactions may interfere; see the [module docs](self) for the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// One snapshot for all reads; reads and writes checked at commit. The default.
    #[default]
    SerializableSnapshot,
    /// One snapshot for all reads; reads checked at commit.
    Serializable,
    /// Each key read once and remembered; reads checked at commit.
    RepeatableReads,
    /// Each key read once and remembered; nothing checked (last writer wins).
    ReadCommitted,
}

impl Isolation {
    /// The `isolation` label of coord's STM metrics.
    pub fn label(self) -> &'static str {
        match self {
            Isolation::SerializableSnapshot => "serializable_snapshot",
            Isolation::Serializable => "serializable",
            Isolation::RepeatableReads => "repeatable_reads",
            Isolation::ReadCommitted => "read_committed",
        }
    }

    /// Whether the first read fixes the revision every later read uses.
    fn pins_snapshot(self) -> bool {
        matches!(
            self,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    }
}

/// How [`run`] behaves: isolation, prefetch, retry limit and back-off.
#[derive(Clone, Debug)]
pub struct Options {
    isolation: Isolation,
    prefetch: Vec<Vec<u8>>,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            isolation: Isolation::default(),
            prefetch: Vec::new(),
            max_attempts: 30,
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(200),
        }
    }
}

impl Options {
    /// The defaults: [`Isolation::SerializableSnapshot`], no prefetch, 30 attempts,
    /// first retry at once, then back-off from 2 ms doubling up to 200 ms.
    pub fn new() -> Options {
        Options::default()
    }

    /// Sets the isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> Options {
        self.isolation = isolation;
        self
    }

    /// Keys every attempt reads in one request before the closure runs. Use it for the
    /// keys the closure always reads: it saves a round trip per key. Prefetched keys
    /// count as read (they are checked at commit) even if the closure ignores them.
    pub fn prefetch<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> Options {
        self.prefetch
            .extend(keys.into_iter().map(|k| k.as_ref().to_vec()));
        self
    }

    /// How many attempts in total before giving up with [`Error::TooManyConflicts`]
    /// (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Options {
        self.max_attempts = attempts;
        self
    }

    /// The delay after the second conflict (`base`, with jitter), doubling after each
    /// further conflict up to `max`. (The first conflict is retried at once.)
    pub fn backoff(mut self, base: Duration, max: Duration) -> Options {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::InvalidArgument(
                "stm max_attempts must be at least 1".into(),
            ));
        }
        if self.prefetch.iter().any(Vec::is_empty) {
            return Err(Error::InvalidArgument(
                "stm prefetch keys must not be empty".into(),
            ));
        }
        if self.backoff_base > self.backoff_max {
            return Err(Error::InvalidArgument(format!(
                "stm backoff base {:?} exceeds its max {:?}",
                self.backoff_base, self.backoff_max
            )));
        }
        Ok(())
    }

    /// The pause after `conflicts` conflicting attempts: none after the first, then half
    /// the current step plus a random part of the other half ("equal jitter").
    fn delay(&self, conflicts: u32) -> Duration {
        if conflicts <= 1 {
            return Duration::ZERO;
        }
        let step = self
            .backoff_base
            .saturating_mul(1u32 << conflicts.saturating_sub(2).min(20))
            .min(self.backoff_max);
        let half = step.as_micros() as u64 / 2;
        Duration::from_micros(half + rand::random::<u64>() % (half + 1))
    }
}

/// What a successful [`run`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed<T> {
    /// The value the closure returned on its committing attempt.
    pub value: T,
    /// The revision of the commit: the revision of the writes, or for a transaction
    /// that wrote nothing, the revision at which its reads were confirmed current.
    pub revision: i64,
    /// How many times the closure ran (1 when there was no conflict).
    pub attempts: u32,
}

/// A ready-made closure error for callers without an error type of their own: either
/// the closure's reason to abort, or a `coord` failure (including
/// [`Error::TooManyConflicts`]).
#[derive(Debug)]
pub enum Abort<R> {
    /// The closure gave up on purpose; nothing was written.
    Reason(R),
    /// The transaction failed (etcd error, too many conflicts, bad input).
    Failed(Error),
}

impl<R> From<Error> for Abort<R> {
    fn from(e: Error) -> Abort<R> {
        Abort::Failed(e)
    }
}

impl<R: std::fmt::Display> std::fmt::Display for Abort<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abort::Reason(r) => write!(f, "transaction aborted: {r}"),
            Abort::Failed(e) => write!(f, "transaction failed: {e}"),
        }
    }
}

impl<R: std::fmt::Debug + std::fmt::Display> std::error::Error for Abort<R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Abort::Reason(_) => None,
            Abort::Failed(e) => Some(e),
        }
    }
}

/// `Err(Abort::Reason(reason))`: leave the closure without committing.
pub fn abort<T, R>(reason: R) -> std::result::Result<T, Abort<R>> {
    Err(Abort::Reason(reason))
}

/// One remembered read.
#[derive(Clone, Debug)]
struct Read {
    value: Option<Vec<u8>>,
    mod_rev: i64,
    /// The revision of the store this read describes.
    as_of: i64,
}

#[derive(Clone, Debug)]
enum Write {
    Put { value: Vec<u8>, lease: i64 },
    Delete,
}

/// The state of one attempt. Taken out (leaving `None`) when the attempt ends.
#[derive(Debug)]
struct Attempt {
    /// Snapshot revision, once the first read has fixed it (snapshot levels only).
    pin: Option<i64>,
    reads: HashMap<Vec<u8>, Read>,
    /// Values the previous attempt's failed commit brought back, all of one revision.
    /// They become reads when the closure asks for them.
    seeds: HashMap<Vec<u8>, Read>,
    writes: BTreeMap<Vec<u8>, Write>,
    /// A pinned read hit compaction; the attempt should start over on fresh data.
    snapshot_compacted: bool,
    /// A write had unusable input; the attempt must not commit.
    invalid: Option<String>,
}

#[derive(Debug)]
struct Shared {
    /// Serialises reads within the attempt, so that the first read alone fixes the
    /// snapshot and no key is fetched twice.
    reading: tokio::sync::Mutex<()>,
    attempt: std::sync::Mutex<Option<Attempt>>,
}

/// The handle a transaction closure reads and writes through. One per attempt; see the
/// [module docs](self).
pub struct Stm {
    client: Client,
    isolation: Isolation,
    number: u32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Stm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stm")
            .field("isolation", &self.isolation)
            .field("attempt", &self.number)
            .finish_non_exhaustive()
    }
}

fn ended() -> Error {
    Error::InvalidArgument("this STM handle belongs to an attempt that has ended".into())
}

fn empty_key() -> Error {
    Error::InvalidArgument("STM keys must not be empty".into())
}

impl Stm {
    /// Which attempt this handle belongs to (1 for the first run of the closure).
    pub fn attempt(&self) -> u32 {
        self.number
    }

    /// The isolation level of this transaction.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Runs `f` on the attempt state, unless the attempt has ended.
    fn with<R>(&self, f: impl FnOnce(&mut Attempt) -> R) -> Option<R> {
        let mut guard = self
            .shared
            .attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_mut().map(f)
    }

    /// The value of `key`, or `None` if it does not exist. A key this attempt wrote
    /// reads as written; otherwise the key joins the read set (see the module docs).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let mut values = self.get_many(&[key]).await?;
        Ok(values.pop().flatten())
    }

    /// The values of several keys, in order, fetching all not yet known in one request.
    pub async fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(empty_key());
        }
        let _reading = self.shared.reading.lock().await;
        let buffered: Vec<Option<Write>> = self
            .with(|a| keys.iter().map(|k| a.writes.get(*k).cloned()).collect())
            .ok_or_else(ended)?;
        let unwritten: Vec<&[u8]> = keys
            .iter()
            .zip(&buffered)
            .filter(|(_, w)| w.is_none())
            .map(|(k, _)| *k)
            .collect();
        let mut reads = self.read(&unwritten).await?.into_iter();
        Ok(buffered
            .into_iter()
            .map(|w| match w {
                Some(Write::Put { value, .. }) => Some(value),
                Some(Write::Delete) => None,
                None => reads.next().and_then(|r| r.value),
            })
            .collect())
    }

    /// [`Stm::get`] as UTF-8 text ([`Error::Malformed`] if it is not).
    pub async fn get_string(&self, key: impl AsRef<[u8]>) -> Result<Option<String>> {
        let key = key.as_ref();
        self.get(key)
            .await?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|e| Error::Malformed {
                    key: show(key),
                    reason: format!("value is not UTF-8: {e}"),
                })
            })
            .transpose()
    }

    /// [`Stm::get`] parsed with [`FromStr`], e.g. a balance as `i64`
    /// ([`Error::Malformed`] if it does not parse).
    pub async fn get_as<T>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let key = key.as_ref();
        self.get_string(key)
            .await?
            .map(|text| {
                text.parse().map_err(|e| Error::Malformed {
                    key: show(key),
                    reason: format!("cannot parse {text:?}: {e}"),
                })
            })
            .transpose()
    }

    /// The mod revision (revision of the last write) of `key` as this transaction
    /// reads it, or 0 if it does not exist there. It always describes the stored key,
    /// never this attempt's own buffered write (which has no revision yet), and it puts
    /// the key in the read set.
    pub async fn rev(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        let key = key.as_ref();
        if key.is_empty() {
            return Err(empty_key());
        }
        let _reading = self.shared.reading.lock().await;
        let read = self.read(&[key]).await?;
        Ok(read.first().map_or(0, |r| r.mod_rev))
    }

    /// Buffers a write of `value` to `key`; it commits with the transaction.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.write(
            key.as_ref(),
            Write::Put {
                value: value.into(),
                lease: 0,
            },
        );
    }

    /// Buffers a write attached to `lease` (e.g. a [`crate::Session`]'s): the key
    /// vanishes when the lease does.
    pub fn put_with_lease(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>, lease: i64) {
        self.write(
            key.as_ref(),
            Write::Put {
                value: value.into(),
                lease,
            },
        );
    }

    /// Buffers the deletion of `key`; reading it in this attempt now gives `None`.
    pub fn del(&self, key: impl AsRef<[u8]>) {
        self.write(key.as_ref(), Write::Delete);
    }

    fn write(&self, key: &[u8], write: Write) {
        let done = self.with(|a| {
            if key.is_empty() {
                a.invalid = Some("STM keys must not be empty (in put or del)".into());
            } else {
                a.writes.insert(key.to_vec(), write);
            }
        });
        if done.is_none() {
            warn!(
                key = %show(key),
                attempt = self.number,
                "write through an STM handle whose attempt has ended; discarded"
            );
        }
    }

    /// The committed state of `keys` as this attempt sees it: remembered reads, seeds
    /// from the last failed commit, or one fetch for the rest. Call with `reading` held.
    async fn read(&self, keys: &[&[u8]]) -> Result<Vec<Read>> {
        let pins = self.isolation.pins_snapshot();
        let (mut missing, pin) = self
            .with(|a| {
                // Values seeded by the last failed commit all describe one revision;
                // make it this attempt's snapshot so every read agrees with them.
                if pins && a.pin.is_none() {
                    a.pin = a.seeds.values().next().map(|seed| seed.as_of);
                }
                let mut missing: Vec<Vec<u8>> = Vec::new();
                for key in keys {
                    if a.reads.contains_key(*key) {
                        continue;
                    }
                    if let Some(seed) = a.seeds.remove(*key) {
                        a.reads.insert(key.to_vec(), seed);
                    } else {
                        missing.push(key.to_vec());
                    }
                }
                (missing, a.pin)
            })
            .ok_or_else(ended)?;
        missing.sort();
        missing.dedup();

        if !missing.is_empty() {
            let (fetched, at) = match self.fetch(&missing, pin, pins).await {
                Err(Error::Compacted(rev)) => {
                    self.with(|a| a.snapshot_compacted = true);
                    return Err(Error::Compacted(rev));
                }
                other => other?,
            };
            self.with(|a| {
                let as_of = match (pins, a.pin) {
                    (true, Some(pin)) => pin,
                    (true, None) => {
                        a.pin = Some(at);
                        at
                    }
                    (false, _) => at,
                };
                for (key, kv) in missing.into_iter().zip(fetched) {
                    let (value, mod_rev) = match kv {
                        Some((value, mod_rev)) => (Some(value), mod_rev),
                        None => (None, 0),
                    };
                    a.reads.entry(key).or_insert(Read {
                        value,
                        mod_rev,
                        as_of,
                    });
                }
            })
            .ok_or_else(ended)?;
        }

        self.with(|a| keys.iter().map(|k| a.reads[*k].clone()).collect())
            .ok_or_else(ended)
    }

    /// Reads `keys` in one transaction: at the pinned revision if there is one, else at
    /// the latest (linearizable for the first read of a snapshot level, member-local
    /// for the levels that check or ignore staleness anyway, like Go's client). Returns
    /// each key's (value, mod revision) and the revision the reads reflect.
    #[allow(clippy::type_complexity)]
    async fn fetch(
        &self,
        keys: &[Vec<u8>],
        pin: Option<i64>,
        pins: bool,
    ) -> Result<(Vec<Option<(Vec<u8>, i64)>>, i64)> {
        let options = |local: bool| {
            let mut options = GetOptions::new();
            if let Some(rev) = pin {
                options = options.with_revision(rev);
            }
            if local {
                options = options.with_serializable();
            }
            options
        };
        let build = |local: bool| {
            Txn::new().and_then(
                keys.iter()
                    .map(|k| TxnOp::get(k.clone(), Some(options(local))))
                    .collect::<Vec<_>>(),
            )
        };
        // Member-local reads are fine for data at a fixed past revision and for the
        // levels without a snapshot; the first snapshot read must be current.
        let local = pin.is_some() || !pins;
        let send = |txn: Txn| {
            let client = self.client.clone();
            retrying(move || {
                let (mut client, txn) = (client.clone(), txn.clone());
                async move { client.txn(txn).await }
            })
        };
        let resp = match send(build(local)).await {
            Ok(resp) => resp,
            Err(Error::Etcd(e)) if mentions(&e, "compacted") => {
                return Err(Error::Compacted(pin.unwrap_or(0)))
            }
            // A lagging member has not applied the pinned revision yet: ask the leader.
            Err(Error::Etcd(e)) if local && mentions(&e, "future revision") => {
                send(build(false)).await?
            }
            Err(e) => return Err(e),
        };
        let at = pin.unwrap_or_else(|| txn_rev(&resp));
        let values = resp
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
                _ => None,
            })
            .collect();
        Ok((values, at))
    }
}

/// Whether an etcd error's status message contains `what` (etcd reports compaction
/// and future revisions as OutOfRange with a fixed text).
fn mentions(e: &etcd_client::Error, what: &str) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.message().contains(what),
        _ => false,
    }
}

/// How a commit ended.
enum CommitResult {
    Done(i64),
    Conflict {
        reason: String,
        seeds: HashMap<Vec<u8>, Read>,
    },
}

/// Sends the attempt's single commit transaction.
async fn commit(client: &Client, isolation: Isolation, attempt: Attempt) -> Result<CommitResult> {
    let Attempt { reads, writes, .. } = attempt;
    let snapshot = reads.values().map(|r| r.as_of).min();

    // The keys whose state the commit depends on, each with its check.
    let mut checked: Vec<(Vec<u8>, Check)> = Vec::new();
    if isolation != Isolation::ReadCommitted {
        for (key, read) in &reads {
            checked.push((key.clone(), Check::Unchanged(read.mod_rev)));
        }
    }
    if isolation == Isolation::SerializableSnapshot {
        if let Some(snapshot) = snapshot {
            for key in writes.keys().filter(|k| !reads.contains_key(*k)) {
                checked.push((key.clone(), Check::NotWrittenAfter(snapshot)));
            }
        }
    }
    checked.sort_by(|a, b| a.0.cmp(&b.0));

    let compares: Vec<Compare> = checked
        .iter()
        .map(|(key, check)| match *check {
            Check::Unchanged(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
            Check::NotWrittenAfter(rev) => {
                Compare::mod_revision(key.clone(), CompareOp::Less, rev + 1)
            }
        })
        .collect();
    let puts: Vec<TxnOp> = writes
        .into_iter()
        .map(|(key, write)| match write {
            Write::Put { value, lease: 0 } => TxnOp::put(key, value, None),
            Write::Put { value, lease } => {
                TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))
            }
            Write::Delete => TxnOp::delete(key, None),
        })
        .collect();
    // On failure, read back every checked key: it says which check failed, and the
    // values seed the next attempt.
    let rereads: Vec<TxnOp> = checked
        .iter()
        .map(|(key, _)| TxnOp::get(key.clone(), None))
        .collect();

    let txn = Txn::new().when(compares).and_then(puts).or_else(rereads);
    let resp = client.clone().txn(txn).await?;
    if resp.succeeded() {
        return Ok(CommitResult::Done(txn_rev(&resp)));
    }

    let at = txn_rev(&resp);
    let mut changed = Vec::new();
    let mut seeds = HashMap::new();
    for ((key, check), op) in checked.into_iter().zip(resp.op_responses()) {
        let TxnOpResponse::Get(get) = op else {
            continue;
        };
        let (value, mod_rev) = match get.kvs().first() {
            Some(kv) => (Some(kv.value().to_vec()), kv.mod_revision()),
            None => (None, 0),
        };
        let failed = match check {
            Check::Unchanged(rev) => mod_rev != rev,
            Check::NotWrittenAfter(rev) => mod_rev > rev,
        };
        if failed {
            changed.push(show(&key));
        }
        seeds.insert(
            key,
            Read {
                value,
                mod_rev,
                as_of: at,
            },
        );
    }
    let mut reason = match changed.len() {
        0 => "a checked key changed".to_owned(),
        n if n > 5 => format!("{} and {} more changed", changed[..5].join(", "), n - 5),
        _ => format!("{} changed", changed.join(", ")),
    };
    if let Some(snapshot) = snapshot {
        reason.push_str(&format!(" since revision {snapshot}"));
    }
    if !isolation.pins_snapshot() {
        seeds.clear();
    }
    Ok(CommitResult::Conflict { reason, seeds })
}

enum Check {
    /// Mod revision still equals the one read.
    Unchanged(i64),
    /// Mod revision at most the snapshot revision.
    NotWrittenAfter(i64),
}

/// Runs `body` as a transaction (see the [module docs](self)): calls it with a fresh
/// [`Stm`] handle, commits its buffered writes if its reads still hold, and calls it
/// again on conflict, up to [`Options::max_attempts`] times.
///
/// Returns the closure's value with the commit revision, the closure's own error if it
/// aborted, or `E::from(coord::Error)`: [`Error::TooManyConflicts`] when the attempts
/// ran out, [`Error::InvalidArgument`] for bad options or keys, [`Error::Etcd`] when etcd
/// failed.
pub async fn run<T, E, F, Fut>(
    client: &Client,
    options: Options,
    mut body: F,
) -> Result<Committed<T>, E>
where
    F: FnMut(Stm) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: From<Error>,
{
    options.validate()?;
    let isolation = options.isolation.label();
    let span = info_span!(
        "coord.stm",
        isolation = ?options.isolation,
        attempts = field::Empty,
        revision = field::Empty,
    );
    async move {
        let mut seeds = HashMap::new();
        let mut number = 0u32;
        loop {
            number += 1;
            Span::current().record("attempts", number);
            let shared = Arc::new(Shared {
                reading: tokio::sync::Mutex::new(()),
                attempt: std::sync::Mutex::new(Some(Attempt {
                    pin: None,
                    reads: HashMap::new(),
                    seeds: std::mem::take(&mut seeds),
                    writes: BTreeMap::new(),
                    snapshot_compacted: false,
                    invalid: None,
                })),
            });
            let tx = Stm {
                client: client.clone(),
                isolation: options.isolation,
                number,
                shared: shared.clone(),
            };
            let result = if options.prefetch.is_empty() {
                body(tx).await
            } else {
                match tx.get_many(&options.prefetch).await {
                    Ok(_) => body(tx).await,
                    Err(e) => Err(E::from(e)),
                }
            };
            // End the attempt: from here on a leaked handle cannot change it.
            let attempt = shared
                .attempt
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
                .expect("only run() ends an attempt");

            let reason = match result {
                Err(e) if !attempt.snapshot_compacted || number >= options.max_attempts => {
                    debug!(attempt = number, "stm closure aborted; nothing written");
                    metrics::stm_finished(isolation, "aborted");
                    return Err(e);
                }
                Err(_) => "the snapshot revision was compacted".to_owned(),
                Ok(value) => {
                    if let Some(message) = attempt.invalid {
                        metrics::stm_finished(isolation, "error");
                        return Err(E::from(Error::InvalidArgument(message)));
                    }
                    let committed = commit(client, options.isolation, attempt).await;
                    if committed.is_err() {
                        metrics::stm_finished(isolation, "error");
                    }
                    match committed? {
                        CommitResult::Done(revision) => {
                            Span::current().record("revision", revision);
                            debug!(attempt = number, revision, "stm committed");
                            metrics::stm_finished(isolation, "committed");
                            return Ok(Committed {
                                value,
                                revision,
                                attempts: number,
                            });
                        }
                        CommitResult::Conflict { reason, seeds: s } => {
                            seeds = s;
                            reason
                        }
                    }
                }
            };
            if number >= options.max_attempts {
                debug!(attempt = number, %reason, "stm gave up");
                metrics::stm_finished(isolation, "conflicts_exhausted");
                return Err(E::from(Error::TooManyConflicts(number)));
            }
            let delay = options.delay(number);
            // A span event on `coord.stm` (the shop's trace layer keeps coord's debug
            // events), and a count of retries.
            debug!(attempt = number, %reason, ?delay, "stm conflict; running the closure again");
            metrics::stm_retried(isolation);
            if !delay.is_zero() {
                // The seeds describe the moment of the failed commit; after a pause
                // they are stale, so the next attempt reads afresh.
                seeds.clear();
                tokio::time::sleep(delay).await;
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_is_immediate_then_backoff_grows_to_its_cap() {
        let options = Options::new().backoff(Duration::from_millis(4), Duration::from_millis(50));
        assert_eq!(options.delay(1), Duration::ZERO);
        let second = options.delay(2);
        assert!(second >= Duration::from_millis(2) && second <= Duration::from_millis(4));
        for conflicts in 3..40 {
            assert!(options.delay(conflicts) <= Duration::from_millis(50));
        }
        assert!(options.delay(39) >= Duration::from_millis(25));
    }

    #[test]
    fn options_are_validated() {
        assert!(Options::new().max_attempts(0).validate().is_err());
        assert!(Options::new().prefetch([""]).validate().is_err());
        assert!(Options::new()
            .backoff(Duration::from_secs(1), Duration::from_millis(1))
            .validate()
            .is_err());
        assert!(Options::new().prefetch(["a", "b"]).validate().is_ok());
    }
}
