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
//!
//! # Files
//! `mod.rs`: [`Options`], [`Abort`] and [`run`], the retry loop; `handle.rs`: [`Stm`],
//! the reads (pinned to a snapshot) and buffered writes of one attempt; `commit.rs`:
//! what an attempt recorded and the one transaction that commits it.
//!
//! # Go → coord
//! | etcd's Go `clientv3/concurrency` | coord |
//! |---|---|
//! | `NewSTM(client, apply, opts...)` | [`run`]`(&client, Options, |stm| async { .. })` |
//! | `WithIsolation(SerializableSnapshot \| Serializable \| RepeatableReads \| ReadCommitted)` | [`Options::isolation`]`(`[`Isolation`]`::..)`, same four levels |
//! | `WithPrefetch(keys...)` | [`Options::prefetch`] |
//! | `WithAbortContext(ctx)` | drop the future, or return [`abort`] from the closure |
//! | `stm.Get(keys...)` | [`Stm::get`], [`Stm::get_many`] (and typed `get_string`, `get_as`) |
//! | `stm.Put(key, val, opts...)` | [`Stm::put`], [`Stm::put_with_lease`] |
//! | `stm.Rev(key)` | [`Stm::rev`] |
//! | `stm.Del(key)` | [`Stm::del`] |

mod commit;
mod handle;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use etcd_client::Client;
use tracing::{debug, field, info_span, Instrument, Span};

use crate::metrics;
use crate::{Error, Result};
use commit::{commit, CommitResult};
pub use handle::Stm;

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
            let (tx, end) = Stm::begin(
                client,
                options.isolation,
                number,
                std::mem::take(&mut seeds),
            );
            let result = if options.prefetch.is_empty() {
                body(tx).await
            } else {
                match tx.get_many(&options.prefetch).await {
                    Ok(_) => body(tx).await,
                    Err(e) => Err(E::from(e)),
                }
            };
            // End the attempt: from here on a leaked handle cannot change it.
            let attempt = end.take();

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
