//! Locker: a blocking lock/unlock over a [`Mutex`], for code that is not async —
//! the Rust counterpart of Go's `concurrency.NewLocker` (a `sync.Locker`).
//!
//! # How it works
//! A [`Locker`] owns a [`Mutex`] and a handle to a Tokio runtime that runs elsewhere
//! (a multi-threaded runtime: its worker threads drive the etcd connection).
//! [`Locker::lock`] and [`Locker::unlock`] block the calling thread on that runtime
//! until the async call finishes. Like Go's `sync.Locker`, lock and unlock are two
//! calls on one shared value: a second `lock` (from another thread) waits until the
//! first holder calls `unlock`.
//!
//! # Guarantees
//! - Everything the [`Mutex`] guarantees (fencing token, cancel-safe waits, a lost
//!   session ends the wait with [`Error::SessionExpired`]).
//! - **Never deadlocks a runtime**: called on a thread that is inside a Tokio runtime
//!   (an async task, `block_on`, `spawn_blocking`), it refuses at once with
//!   [`Error::BlockingInAsync`] instead of blocking the thread the runtime needs. Call
//!   it from plain threads (`std::thread`, a synchronous library's callbacks); async
//!   code uses [`Mutex`] directly.
//! - Dropping a `Locker` that still holds the lock releases it in the background on
//!   its runtime (or the lease expiry does, if the runtime is gone).
//!
//! # Go → coord
//! | Go (`clientv3/concurrency`) | coord |
//! |---|---|
//! | `NewLocker(s, pfx)` | [`Locker::new`]`(&session, pfx, runtime)` |
//! | `Lock()` (panics on error) | [`Locker::lock`] (returns [`Result`]) |
//! | `Unlock()` (panics on error) | [`Locker::unlock`] (returns [`Result`]) |

use std::sync::Mutex as StdMutex;

use tokio::runtime::Handle;

use crate::{Error, Mutex, MutexGuard, Result, Session};

/// A blocking lock over a [`Mutex`] (Go's `NewLocker`). See the module docs.
#[derive(Debug)]
pub struct Locker {
    mutex: Mutex,
    runtime: Handle,
    held: StdMutex<Option<MutexGuard>>,
}

impl Locker {
    /// A blocking lock named `name` under `session`, whose etcd calls run on `runtime`
    /// (a multi-threaded runtime; a current-thread one only makes progress while its
    /// own `block_on` runs).
    #[doc(alias = "NewLocker")]
    pub fn new(session: &Session, name: &str, runtime: Handle) -> Result<Locker> {
        Ok(Locker {
            mutex: Mutex::new(session, name)?,
            runtime,
            held: StdMutex::new(None),
        })
    }

    /// The [`Mutex`] underneath (its key, and async use elsewhere).
    pub fn mutex(&self) -> &Mutex {
        &self.mutex
    }

    /// Blocks until the lock is held. Fails with [`Error::BlockingInAsync`] when called
    /// inside a Tokio runtime.
    #[doc(alias = "Lock")]
    pub fn lock(&self) -> Result<()> {
        refuse_inside_runtime("Locker::lock")?;
        let guard = self.runtime.block_on(self.mutex.lock())?;
        *self.held() = Some(guard);
        Ok(())
    }

    /// Releases the lock (compare-and-delete, as [`MutexGuard::unlock`]). Fails with
    /// [`Error::InvalidArgument`] when the lock is not held, [`Error::OwnershipLost`]
    /// when the key was no longer ours, [`Error::BlockingInAsync`] inside a runtime.
    #[doc(alias = "Unlock")]
    pub fn unlock(&self) -> Result<()> {
        refuse_inside_runtime("Locker::unlock")?;
        let guard = self.held().take().ok_or_else(|| {
            Error::InvalidArgument(format!("unlock of unlocked Locker {}", self.mutex.key()))
        })?;
        self.runtime.block_on(guard.unlock())
    }

    /// The fencing token of the current hold, if the lock is held.
    pub fn fencing_token(&self) -> Option<i64> {
        self.held().as_ref().map(MutexGuard::fencing_token)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<MutexGuard>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        // The guard's background release needs a runtime context.
        let _entered = self.runtime.enter();
        self.held().take();
    }
}

/// Blocking on the runtime from a thread inside a runtime would stall that thread's
/// tasks (or deadlock a current-thread runtime): refuse with a typed error.
fn refuse_inside_runtime(call: &'static str) -> Result<()> {
    match Handle::try_current() {
        Ok(_) => Err(Error::BlockingInAsync(call)),
        Err(_) => Ok(()),
    }
}
