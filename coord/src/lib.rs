//! # coord — etcd's distributed concurrency primitives in async Rust
//!
//! `coord` ports etcd's Go `clientv3/concurrency` package and its recipes to async
//! Rust, keeping the **same etcd key layout**, so a Rust service, a Go service and
//! `etcdctl lock`/`etcdctl elect` cooperate on the same names. Where the Go
//! originals have known traps, coord closes them: every wait notices a lost session,
//! every future is cancel-safe, locks hand out fencing tokens and release with a
//! compare-and-delete, and waiters are woken at commit time instead of on etcd's
//! 100 ms catch-up loop.
//!
//! # Layout
//! | module | file(s) under `src/` | what it is for |
//! |---|---|---|
//! | [`session`] | `session.rs` | a lease kept alive in the background; the liveness every primitive uses |
//! | [`mutex`] | `mutex.rs` | distributed lock with a fencing token |
//! | [`locker`] | `locker.rs` | a blocking lock/unlock over a Mutex for code that is not async (Go's `NewLocker`) |
//! | [`election`] | `election/`: `mod.rs` (campaign), `leadership.rs` ([`Leadership`], [`LeaderContext`]), `observer.rs` ([`ElectionObserver`]) | leader election: campaign, proclaim, resign, observe leader changes |
//! | [`leader`] | `leader.rs` | run a job on one replica at a time; cancel it when leadership is lost |
//! | [`stm`] | `stm/`: `mod.rs` (options, [`stm::run`]), `handle.rs` (the [`stm::Stm`] a closure uses), `commit.rs` (an attempt and its commit txn) | software transactional memory: read, decide, write atomically, retried on conflict |
//! | [`txn`] | `txn.rs` | a typed builder for plain etcd transactions, with the named comparisons the primitives use too |
//! | [`rwmutex`] | `rwmutex.rs` | readers–writer lock: many readers or one writer, writer-fair |
//! | [`barrier`] | `barrier.rs` | hold processes at a point until the barrier is released |
//! | [`double_barrier`] | `double_barrier.rs` | `count` participants enter together and leave together |
//! | [`semaphore`] | `semaphore.rs` | N permits shared by sessions, released when a holder dies |
//! | [`queue`] | `queue.rs` | Queue and PriorityQueue with Go recipes' layouts (an item leaves the queue when dequeued) |
//! | [`work_queue`] | `work_queue/`: `mod.rs` (enqueue, stats), `claim.rs` (claiming, dead-lettering), `claimed.rs` ([`Claimed`]: ack, ack-and-claim-next, nack), `wire.rs` (the stored item format, crate-private) | reliable priority work queue: claim under a lease, ack/nack, redelivery when a consumer dies |
//! | [`config`] | `config.rs` | connecting to etcd (endpoints, credentials) from code or the environment |
//! | [`error`] | `error.rs` | the crate's one error type and the `timeout` helper |
//! | [`metrics`] | `metrics.rs` | what coord measures (lock wait/hold, STM retries, queue depth, leadership) through the `metrics` facade |
//! | `plumbing` (private) | `plumbing/`: `key.rs`, `retry.rs`, `watch.rs`, `delete_feed.rs` (its `mod.rs` says what each holds) | talking to etcd below any session: key layout, retries, watches, the shared delete watches a session keeps |
//! | `ownership` (private) | `ownership/`: `owned.rs`, `waiters.rs` | keys a session holds for a primitive (created cancel-safely, released by compare-and-delete) and the queue of waiters Mutex and Election share |
//!
//! Uses between modules point one way, never back: `plumbing` ← [`session`] ←
//! `ownership` ← the primitives; [`txn`] (on `plumbing`) ← the primitives and [`stm`];
//! [`election`] ← [`leader`]; [`mutex`] ← [`locker`]; [`queue`] ← [`work_queue`]; [`error`] is used by all and
//! uses nothing.
//!
//! # One vocabulary
//! Whatever a primitive hands its holder (a [`MutexGuard`], an [`RwMutexGuard`], a
//! [`Permit`], a [`Leadership`] or [`LeaderContext`], a [`Claimed`] item) answers the
//! same questions with the same names:
//! - `fencing_token()`: the create revision of the holder's key, larger for every new
//!   holder;
//! - `is_owner()`: an etcd `Compare` that holds only while it is still ours — put it in
//!   the `when` of a txn;
//! - `is_held()` (locks, permits, leadership): asks etcd now — stale on arrival, so
//!   fence with the two above instead.
//!
//! # What every primitive states
//! Each module opens with what it guarantees and what it does **not**. The short
//! version: a lease is a timeout, not a proof of liveness. Anything protected by a
//! lock or leadership must be written with the fencing token (or the `is_owner`
//! comparison), because a paused holder can outlive its lease.

pub mod barrier;
pub mod config;
pub mod double_barrier;
pub mod election;
pub mod error;
pub mod leader;
pub mod locker;
pub mod metrics;
pub mod mutex;
mod ownership;
mod plumbing;
pub mod queue;
pub mod rwmutex;
pub mod semaphore;
pub mod session;
pub mod stm;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod txn;
pub mod work_queue;

pub use barrier::Barrier;
pub use config::{connect_from_env, EtcdConfig, EtcdTls};
pub use double_barrier::{DoubleBarrier, DoubleBarrierGuard};
pub use election::{Election, ElectionObserver, LeaderEvent, LeaderInfo, Leadership};
pub use error::{timeout, Error, Result};
pub use etcd_client;
pub use leader::{run_as_leader, LeaderContext, LeaderJob, LeaderOutcome};
pub use locker::Locker;
pub use mutex::{Mutex, MutexGuard};
pub use queue::{PriorityQueue, Queue};
pub use rwmutex::{Access, RwMutex, RwMutexGuard};
pub use semaphore::{Permit, Semaphore};
pub use session::{Session, SessionBuilder};
pub use txn::{Ops, Txn, TxnOutcome};
pub use work_queue::{Claimed, Enqueued, WorkQueue};

/// The decoders of stored queue data, for the fuzz target `queue_items` in `fuzz/`
/// (which holds the checks). cargo-fuzz builds with `--cfg fuzzing`; no normal build
/// has this module.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz_entry {
    pub use crate::work_queue::wire::{decode_item, encode_item, parse_slot, Envelope};
    pub use crate::work_queue::MAX_PRIORITY;

    /// The sequence number after a `PriorityQueue` key's (see `queue::next_sequence`).
    pub fn next_sequence(key: &str) -> crate::Result<u64> {
        crate::queue::next_sequence(key)
    }
}
