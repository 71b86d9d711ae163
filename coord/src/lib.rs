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
//! | module | what it is for |
//! |---|---|
//! | [`session`] | a lease kept alive in the background; the liveness every primitive uses |
//! | [`mutex`] | distributed lock with a fencing token |
//! | [`locker`] | a blocking lock/unlock over a Mutex for code that is not async (Go's `NewLocker`) |
//! | [`election`] | leader election: campaign, proclaim, resign, observe leader changes |
//! | [`leader`] | run a job on one replica at a time; cancel it when leadership is lost |
//! | [`stm`] | software transactional memory: read, decide, write atomically, retried on conflict |
//! | [`txn`] | a typed builder for plain etcd transactions, with named comparison helpers |
//! | [`rwmutex`] | readers–writer lock: many readers or one writer, writer-fair |
//! | [`barrier`] | hold processes at a point until the barrier is released |
//! | [`double_barrier`] | `count` participants enter together and leave together |
//! | [`semaphore`] | N permits shared by sessions, released when a holder dies |
//! | [`queue`] | Queue and PriorityQueue with Go recipes' layouts (an item leaves the queue when dequeued) |
//! | [`work_queue`] | reliable priority work queue: claim under a lease, ack/nack, redelivery when a consumer dies |
//! | [`config`] | connecting to etcd (endpoints, credentials) from code or the environment |
//! | [`error`] | the crate's one error type and the `timeout` helper |
//! | [`metrics`] | what coord measures (lock wait/hold, STM retries, queue depth, leadership) through the `metrics` facade |
//! | `internal` (private) | what the primitives share: key layout, retry, watches, the delete feeds, owned keys, the queue of waiters (its `mod.rs` lists the files) |
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
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod internal;
pub mod leader;
pub mod locker;
pub mod metrics;
pub mod mutex;
pub mod queue;
pub mod rwmutex;
pub mod semaphore;
pub mod session;
pub mod stm;
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
