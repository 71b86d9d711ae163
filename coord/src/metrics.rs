//! What coord measures, through the [`metrics`] facade.
//!
//! coord is a library, so it only *records*: with no recorder installed (the
//! application never called `metrics::set_global_recorder`) every call below is a
//! relaxed atomic load and a return, and nothing is allocated. The application picks the
//! exporter (the shop renders them for Prometheus, see `shop_common::metrics`). Names
//! follow Prometheus conventions; durations are seconds.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `coord_lock_wait_seconds` | histogram | `primitive` | time from asking for a lock/permit until holding it (successful waits only) |
//! | `coord_lock_hold_seconds` | histogram | `primitive` | time from holding a lock/permit until its guard is released or dropped |
//! | `coord_lock_wait_failures_total` | counter | `primitive` | waits that ended in an error (lost session, etcd down); cancelled waits are not counted |
//! | `coord_stm_transactions_total` | counter | `isolation`, `outcome` | STM runs: `committed`, `aborted` (the closure's own error), `conflicts_exhausted`, `error` |
//! | `coord_stm_retries_total` | counter | `isolation` | STM attempts re-run after a conflict (or compacted snapshot) |
//! | `coord_queue_enqueued_total` | counter | `queue` | items put on a work queue (a duplicate id counts once) |
//! | `coord_queue_claims_total` | counter | `queue` | deliveries claimed |
//! | `coord_queue_acks_total` | counter | `queue` | deliveries acknowledged (done) |
//! | `coord_queue_nacks_total` | counter | `queue` | deliveries given back for redelivery |
//! | `coord_queue_depth` | gauge | `queue` | items not yet acked (waiting or claimed), at the last [`WorkQueue::record_gauges`](crate::WorkQueue::record_gauges) |
//! | `coord_queue_in_flight` | gauge | `queue` | items claimed and not yet acked, likewise |
//! | `coord_queue_oldest_item_age_seconds` | gauge | `queue` | age of the oldest item not yet acked (0 when empty), likewise |
//! | `coord_leader` | gauge | `election` | 1 while this process leads the election through a `LeaderJob`, else 0 |
//!
//! `primitive` is `mutex`, `rwmutex_read`, `rwmutex_write` or `semaphore`; lock names
//! are deliberately not a label (one per SKU would be unbounded). `queue` and
//! `election` are the etcd prefixes, which a deployment has a handful of.

use std::time::Instant;

use metrics::{counter, gauge, histogram};

pub(crate) const LOCK_WAIT: &str = "coord_lock_wait_seconds";
pub(crate) const LOCK_HOLD: &str = "coord_lock_hold_seconds";
pub(crate) const LOCK_WAIT_FAILURES: &str = "coord_lock_wait_failures_total";
pub(crate) const STM_TRANSACTIONS: &str = "coord_stm_transactions_total";
pub(crate) const STM_RETRIES: &str = "coord_stm_retries_total";
pub(crate) const QUEUE_ENQUEUED: &str = "coord_queue_enqueued_total";
pub(crate) const QUEUE_CLAIMS: &str = "coord_queue_claims_total";
pub(crate) const QUEUE_ACKS: &str = "coord_queue_acks_total";
pub(crate) const QUEUE_NACKS: &str = "coord_queue_nacks_total";
pub(crate) const QUEUE_DEPTH: &str = "coord_queue_depth";
pub(crate) const QUEUE_IN_FLIGHT: &str = "coord_queue_in_flight";
pub(crate) const QUEUE_OLDEST_AGE: &str = "coord_queue_oldest_item_age_seconds";
pub(crate) const LEADER: &str = "coord_leader";

/// Kept by a guard; records the hold time when the guard goes (released or dropped).
#[derive(Debug)]
pub(crate) struct LockHold {
    primitive: &'static str,
    since: Instant,
}

impl Drop for LockHold {
    fn drop(&mut self) {
        histogram!(LOCK_HOLD, "primitive" => self.primitive)
            .record(self.since.elapsed().as_secs_f64());
    }
}

/// Times one wait for a lock or permit: start it before waiting, [`LockWait::finish`]
/// it with the wait's result. A success is a sample of `coord_lock_wait_seconds` and
/// gives the [`LockHold`] the guard keeps; an error other than a try-lock's `Locked` is
/// counted; a wait dropped before it finished (timeout, `select!`) leaves no sample.
/// (A plain timer rather than a wrapper future: wrapping the wait would make every lock
/// future larger.)
pub(crate) struct LockWait {
    primitive: &'static str,
    started: Instant,
}

impl LockWait {
    pub(crate) fn start(primitive: &'static str) -> LockWait {
        LockWait {
            primitive,
            started: Instant::now(),
        }
    }

    pub(crate) fn finish<T>(self, waited: crate::Result<T>) -> crate::Result<(T, LockHold)> {
        match waited {
            Ok(value) => {
                histogram!(LOCK_WAIT, "primitive" => self.primitive)
                    .record(self.started.elapsed().as_secs_f64());
                let hold = LockHold {
                    primitive: self.primitive,
                    since: Instant::now(),
                };
                Ok((value, hold))
            }
            Err(e) => {
                if !matches!(e, crate::Error::Locked(_)) {
                    counter!(LOCK_WAIT_FAILURES, "primitive" => self.primitive).increment(1);
                }
                Err(e)
            }
        }
    }
}

pub(crate) fn stm_finished(isolation: &'static str, outcome: &'static str) {
    counter!(STM_TRANSACTIONS, "isolation" => isolation, "outcome" => outcome).increment(1);
}

pub(crate) fn stm_retried(isolation: &'static str) {
    counter!(STM_RETRIES, "isolation" => isolation).increment(1);
}

pub(crate) fn queue_event(name: &'static str, queue: &str) {
    counter!(name, "queue" => queue.to_owned()).increment(1);
}

pub(crate) fn queue_gauges(queue: &str, depth: u64, in_flight: u64, oldest_age_secs: f64) {
    gauge!(QUEUE_DEPTH, "queue" => queue.to_owned()).set(depth as f64);
    gauge!(QUEUE_IN_FLIGHT, "queue" => queue.to_owned()).set(in_flight as f64);
    gauge!(QUEUE_OLDEST_AGE, "queue" => queue.to_owned()).set(oldest_age_secs);
}

pub(crate) fn leader(election: &str, leading: bool) {
    gauge!(LEADER, "election" => election.to_owned()).set(if leading { 1.0 } else { 0.0 });
}
