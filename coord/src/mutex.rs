//! Mutex: a distributed lock with a fencing token.
//!
//! # Protocol (etcd Go client's, so Go services and `etcdctl lock` interoperate)
//! - Every contender puts its key `<name>/<lease id hex>` attached to its session's
//!   lease; the etcd create revision of that key is its place in line.
//! - The contender whose key has the smallest create revision under `<name>/` holds
//!   the lock. Everyone else waits until every key ahead of theirs is gone, then
//!   checks again (a waiter ahead may have given up, which does not make us owner if
//!   someone is still ahead of it). How it waits is private to coord: it follows up
//!   to 16 keys ahead through the session's shared delete watch, and in a longer line
//!   watches its predecessor (see `ownership::waiters`).
//! - Unlock deletes the key — but only if it is still *our* incarnation of it
//!   (compare create revision): a retried unlock whose first reply was lost can never
//!   delete the same session's next lock on the name (etcd issue 22082), and a holder
//!   whose lease expired learns it ([`Error::OwnershipLost`]) instead of a silent
//!   success.
//!
//! # Guarantees
//! - `lock()` never returns a guard whose key is gone: if our key disappears while we
//!   wait (lease expired, revoked), it returns [`Error::SessionExpired`].
//! - Cancel-safe: dropping the `lock()` future (timeout, `select!`, task abort) removes
//!   the waiter key, also when the drop happens while the put is still in flight.
//!   A later waiter is never blocked by an abandoned one.
//! - Tasks sharing one session and locking the same name are serialised locally
//!   first (Go's client would let both believe they hold it, since they share a key).
//!
//! # Not guaranteed — read this before relying on the lock
//! A lease-based lock is **not** mutual exclusion by itself. If the holder stalls
//! (GC, swap, `docker pause`, a network cut) longer than the TTL, etcd expires the
//! lease and gives the lock to the next waiter while the old holder may still run
//! (Jepsen, etcd 3.4.3). Make writes safe with the fencing token:
//! - writes to etcd: put them in a txn guarded by [`MutexGuard::is_owner`];
//! - writes elsewhere (a database): store [`MutexGuard::fencing_token`] with the data and
//!   reject a write whose token is lower than the last one accepted.
//!
//! # Go → coord
//! | etcd's Go `clientv3/concurrency` | coord |
//! |---|---|
//! | `NewMutex(s, pfx)` | [`Mutex::new`]`(&s, pfx)` (same keys: `pfx + "/" + lease hex`) |
//! | `Lock(ctx)` | [`Mutex::lock`] (cancel with a timeout or by dropping the future) |
//! | `TryLock(ctx)` | [`Mutex::try_lock`] ([`Error::Locked`] for Go's `ErrLocked`) |
//! | `Unlock(ctx)` | [`MutexGuard::unlock`] (or drop the guard) |
//! | `IsOwner()` | [`MutexGuard::is_owner`] |
//! | `Key()` | [`Mutex::key`], [`MutexGuard::key`] |
//! | `Header().Revision` / the lock key's create revision | [`MutexGuard::fencing_token`] |
//! | `NewLocker(s, pfx)` (`sync.Locker`: `Lock()`, `Unlock()`) | [`crate::Locker::new`], [`crate::Locker::lock`], [`crate::Locker::unlock`] (blocking, for code that is not async) |

use etcd_client::Compare;
use tokio::sync::OwnedMutexGuard;
use tracing::{field, info_span, Instrument, Span};

use crate::metrics::{LockHold, LockWait};
use crate::ownership::owned::{compare_delete, incarnation_exists};
use crate::ownership::waiters::{release_in_background, wait_for_turn, PendingKey};
use crate::plumbing::key::{dir_prefix, lease_key};
use crate::txn::create_rev_is;
use crate::{Error, Result, Session};

/// A named distributed lock bound to a session. Cheap to create; one per name.
#[derive(Clone, Debug)]
pub struct Mutex {
    session: Session,
    prefix: String,
    key: String,
}

impl Mutex {
    /// A lock named `name` (keys live under `name/`).
    pub fn new(session: &Session, name: &str) -> Result<Mutex> {
        let prefix = dir_prefix(name)?;
        let key = lease_key(&prefix, session.lease());
        Ok(Mutex {
            session: session.clone(),
            prefix,
            key,
        })
    }

    /// The key this session uses for this lock: `<name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits until the lock is held. See the module docs for what that guarantees.
    pub async fn lock(&self) -> Result<MutexGuard> {
        let span = info_span!("coord.mutex.lock", key = %self.key, fencing_token = field::Empty);
        let timer = LockWait::start("mutex");
        let waited = async {
            let local = self.session.lock_locally(&self.key).await?;
            self.session.check_alive()?;
            let mut pending = self.enter(local);
            let entered = pending.entered().await?;
            if !entered.first {
                wait_for_turn(&self.session, &self.prefix, entered.rev).await?;
            }
            Span::current().record("fencing_token", entered.rev);
            Ok((pending, entered.rev))
        }
        .instrument(span)
        .await;
        let ((pending, rev), timing) = timer.finish(waited)?;
        Ok(self.guard(pending, rev, timing))
    }

    /// Takes the lock if nobody holds it, else fails with [`Error::Locked`] at once
    /// (leaving no key behind).
    pub async fn try_lock(&self) -> Result<MutexGuard> {
        let timer = LockWait::start("mutex");
        let waited = async {
            let local = self
                .session
                .local_lock(&self.key)
                .try_lock_owned()
                .map_err(|_| Error::Locked(self.prefix.clone()))?;
            self.session.check_alive()?;
            let mut pending = self.enter(local);
            let entered = pending.entered().await?;
            if entered.first {
                Ok((pending, entered.rev))
            } else {
                // Removed before we answer, not by a spawned task: a runtime that shuts
                // down right after `Err(Locked)` must not leave our key for a TTL. If
                // this is cancelled, dropping `pending` still removes it in the background.
                pending.remove().await?;
                Err(Error::Locked(self.prefix.clone()))
            }
        }
        .await;
        let ((pending, rev), timing) = timer.finish(waited)?;
        Ok(self.guard(pending, rev, timing))
    }

    /// Puts our (empty-valued) waiter key; dropping the result before it is kept
    /// removes the key again.
    fn enter(&self, local: OwnedMutexGuard<()>) -> PendingKey {
        PendingKey::start(&self.session, &self.prefix, &self.key, Vec::new(), local)
    }

    /// Turns a pending key that reached the front of the line into a guard.
    fn guard(&self, pending: PendingKey, rev: i64, timing: LockHold) -> MutexGuard {
        let hold = info_span!("coord.mutex.hold", key = %self.key, fencing_token = rev);
        MutexGuard {
            session: self.session.clone(),
            key: self.key.clone(),
            rev,
            local: pending.keep(),
            released: false,
            _hold: hold,
            _timing: timing,
        }
    }
}

/// Proof of holding a [`Mutex`]. Release with [`MutexGuard::unlock`]; if dropped
/// instead, the key is deleted in the background (or expires with the lease).
#[derive(Debug)]
pub struct MutexGuard {
    session: Session,
    key: String,
    rev: i64,
    local: Option<OwnedMutexGuard<()>>,
    released: bool,
    _hold: Span,
    /// Records `coord_lock_hold_seconds` when the guard goes.
    _timing: LockHold,
}

impl MutexGuard {
    /// The fencing token: the create revision of our lock key. It increases with
    /// every acquisition of the lock name, so storing it with each protected write and
    /// rejecting lower ones makes a stale holder's late write harmless.
    pub fn fencing_token(&self) -> i64 {
        self.rev
    }

    /// The lock key we hold.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The session the lock is held under.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A txn comparison that is true only while we still hold the lock. Put it in the
    /// `when` of every etcd write the lock protects.
    pub fn is_owner(&self) -> Compare {
        create_rev_is(self.key.as_str(), self.rev)
    }

    /// Asks etcd whether our key is still there (the lock is still ours). A `true` is
    /// already stale when it arrives; use [`MutexGuard::is_owner`] in a txn to act on it.
    pub async fn is_held(&self) -> Result<bool> {
        incarnation_exists(&self.session.client(), &self.key, self.rev).await
    }

    /// Releases the lock. Fails with [`Error::OwnershipLost`] if the key was no longer
    /// ours (our lease expired and someone else may hold the lock now), and with
    /// [`Error::ReleaseUnconfirmed`] if a retried delete found it gone (released, but
    /// not known to have been ours until then).
    pub async fn unlock(mut self) -> Result<()> {
        // Marked released only once the delete has answered: if it fails or this future
        // is dropped first, `Drop` still releases the key in the background.
        let found = compare_delete(&mut self.session.client(), &self.key, self.rev).await?;
        self.released = true;
        self.local.take();
        found.into_result(&self.key)
    }
}

impl Drop for MutexGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        release_in_background(
            &self.session,
            std::mem::take(&mut self.key),
            self.rev,
            self.local.take(),
        );
    }
}
