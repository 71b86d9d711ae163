//! RwMutex: a distributed readers–writer lock — many readers or one writer.
//!
//! # Protocol (etcd Go recipe `RWMutex`, same keys, so Go and coord users share a lock)
//! - A reader puts `<name>/read/<unique>`, a writer `<name>/write/<unique>`, each
//!   attached to the session's lease. `<unique>` is the wall clock in nanoseconds
//!   (Go's format); the put only succeeds if the key is new, and a collision simply
//!   retries with a fresh timestamp. The etcd create revision of the key is the
//!   caller's place in one line shared by readers and writers.
//! - A **reader** may go once no *write* key older than its own exists: readers that
//!   arrived together share the lock.
//! - A **writer** may go once no key at all (read or write) older than its own exists.
//! - Everyone waits for the newest key that still blocks it to be deleted, then looks
//!   again (an older blocker may still be there).
//! - Unlock deletes the key, but only our incarnation of it (compare create revision).
//!
//! Because a waiting writer's key is older than any reader that arrives after it,
//! those readers queue behind the writer: a steady stream of readers cannot starve a
//! writer (FIFO fairness between the two kinds).
//!
//! # Guarantees
//! - `read_lock()`/`write_lock()` never return a guard whose key is gone: if our key
//!   disappears while we wait (lease expired or revoked) or the session is lost, they
//!   fail with [`Error::SessionExpired`] (etcd issue 16221: Go's recipe reports the
//!   lock as taken in that case).
//! - Cancel-safe: dropping a pending `read_lock()`/`write_lock()` future removes its
//!   key (also when the drop lands while the put is in flight), so nobody queues
//!   behind an abandoned waiter.
//! - Waiters are woken at commit time of the blocker's delete (a watch opened from the
//!   current revision, then a read), not on etcd's 100 ms catch-up loop.
//! - Each acquisition uses a fresh key, so several tasks of one session can hold read
//!   locks at once, and a session's writer queues behind the same session's readers.
//!
//! # Not guaranteed
//! Like every lease-based lock, this is not mutual exclusion by itself: a holder
//! paused longer than the TTL loses its key while it still runs. Guard writes with
//! [`RwMutexGuard::is_owner`] (etcd txns) or [`RwMutexGuard::fencing_token`]
//! (elsewhere). A reader and a writer of the same session are *not* upgraded or
//! downgraded into each other: taking the write lock while holding a read lock of the
//! same name deadlocks until the read guard is released, as with any RW lock.
//!
//! # Go → coord
//! | etcd's Go `contrib/recipes` | coord |
//! |---|---|
//! | `NewRWMutex(s, prefix)` | [`RwMutex::new`] |
//! | `RLock()` | [`RwMutex::read_lock`] (and [`RwMutex::try_read_lock`], not in Go) |
//! | `Lock()` | [`RwMutex::write_lock`] (and [`RwMutex::try_write_lock`], not in Go) |
//! | `RUnlock()`, `Unlock()` | [`RwMutexGuard::unlock`] (or drop the guard) |

use etcd_client::{Compare, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use tracing::{debug, field, info_span, Instrument, Span};

use crate::metrics::{LockHold, LockWait};
use crate::ownership::owned::{create_unique, OwnedKey, PendingPut, Placed};
use crate::plumbing::key::{dir_prefix, show, txn_get, unix_nanos};
use crate::plumbing::retry::retrying;
use crate::plumbing::watch::wait_deleted;
use crate::{Error, Result, Session};

/// Which side of a [`RwMutex`] a guard holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Shared: other readers may hold the lock at the same time.
    Read,
    /// Exclusive: nobody else holds the lock.
    Write,
}

impl Access {
    fn dir(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// A named distributed readers–writer lock bound to a session. Cheap to create.
#[derive(Clone, Debug)]
pub struct RwMutex {
    session: Session,
    /// `<name>/`: every key of the lock lives under it.
    prefix: String,
}

impl RwMutex {
    /// A readers–writer lock named `name` (keys live under `name/read/` and
    /// `name/write/`). Fails with [`Error::InvalidArgument`] for an empty name.
    pub fn new(session: &Session, name: &str) -> Result<RwMutex> {
        Ok(RwMutex {
            session: session.clone(),
            prefix: dir_prefix(name)?,
        })
    }

    /// The directory all keys of this lock live under (`<name>/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Waits until the lock is held for reading: no writer that arrived earlier
    /// still holds or waits for it.
    pub async fn read_lock(&self) -> Result<RwMutexGuard> {
        self.lock(Access::Read, true).await
    }

    /// Waits until the lock is held for writing: everyone who arrived earlier
    /// (readers and writers) is gone.
    pub async fn write_lock(&self) -> Result<RwMutexGuard> {
        self.lock(Access::Write, true).await
    }

    /// Takes a read lock if no writer holds or waits for it, else fails with
    /// [`Error::Locked`] at once (leaving no key behind).
    pub async fn try_read_lock(&self) -> Result<RwMutexGuard> {
        self.lock(Access::Read, false).await
    }

    /// Takes the write lock if nobody holds or waits for the lock, else fails with
    /// [`Error::Locked`] at once (leaving no key behind).
    pub async fn try_write_lock(&self) -> Result<RwMutexGuard> {
        self.lock(Access::Write, false).await
    }

    /// The keys that block `access`: older writers for a reader, everything older for
    /// a writer.
    fn blockers(&self, access: Access) -> String {
        match access {
            Access::Read => format!("{}write/", self.prefix),
            Access::Write => self.prefix.clone(),
        }
    }

    async fn lock(&self, access: Access, wait: bool) -> Result<RwMutexGuard> {
        let span = info_span!(
            "coord.rwmutex.lock",
            prefix = %self.prefix,
            access = ?access,
            wait,
            key = field::Empty,
            fencing_token = field::Empty,
        );
        let primitive = match access {
            Access::Read => "rwmutex_read",
            Access::Write => "rwmutex_write",
        };
        let timer = LockWait::start(primitive);
        let waited = async {
            self.session.check_alive()?;
            let blockers = self.blockers(access);
            let mut pending = self.enter(access, &blockers);
            let (placed, blocked) = pending.placed().await?;
            Span::current().record("key", placed.key.as_str());
            Span::current().record("fencing_token", placed.rev);
            if blocked {
                if !wait {
                    // Dropping `pending` removes our key.
                    return Err(Error::Locked(self.prefix.clone()));
                }
                wait_no_older(&self.session, &placed, &blockers).await?;
            }
            Ok(pending.keep())
        }
        .instrument(span)
        .await;
        let (placed, timing) = timer.finish(waited)?;
        Ok(self.guard(access, placed, timing))
    }

    /// Starts putting our key; the same txn reads the two newest keys that could block
    /// us, so an uncontended lock costs one round trip.
    fn enter(&self, access: Access, blockers: &str) -> PendingPut<bool> {
        let session = self.session.clone();
        let dir = format!("{}{}/", self.prefix, access.dir());
        let newest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(2)
            .with_keys_only();
        let reads = [TxnOp::get(blockers, Some(newest))];
        PendingPut::start(self.session.client(), async move {
            let (placed, resp) =
                create_unique(&session, || format!("{dir}{}", unix_nanos()), b"", &reads).await?;
            // The read ran right after our put, so every key but ours is older than it.
            let blocked = txn_get(&resp, 1)
                .is_some_and(|g| g.kvs().iter().any(|kv| kv.key() != placed.key.as_bytes()));
            Ok((placed, blocked))
        })
    }

    fn guard(&self, access: Access, placed: Placed, timing: LockHold) -> RwMutexGuard {
        let hold = info_span!(
            "coord.rwmutex.hold",
            key = %placed.key,
            access = ?access,
            fencing_token = placed.rev
        );
        RwMutexGuard {
            session: self.session.clone(),
            access,
            key: OwnedKey::new(self.session.client(), placed),
            _hold: hold,
            _timing: timing,
        }
    }
}

/// Proof of holding a [`RwMutex`] for reading or writing. Release with
/// [`RwMutexGuard::unlock`]; if dropped instead, the key is deleted in the background
/// (or expires with the lease).
#[derive(Debug)]
pub struct RwMutexGuard {
    session: Session,
    access: Access,
    key: OwnedKey,
    _hold: Span,
    /// Records `coord_lock_hold_seconds` when the guard goes.
    _timing: LockHold,
}

impl RwMutexGuard {
    /// Whether this guard holds the lock for reading or for writing.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The fencing token: the create revision of our key. A writer's token is larger
    /// than that of every reader or writer that held the lock before it.
    pub fn fencing_token(&self) -> i64 {
        self.key.rev()
    }

    /// Our key (`<name>/read/<unique>` or `<name>/write/<unique>`).
    pub fn key(&self) -> &str {
        self.key.key()
    }

    /// The session the lock is held under.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A txn comparison that is true only while we still hold the lock. Put it in the
    /// `when` of every etcd write the lock protects.
    pub fn is_owner(&self) -> Compare {
        self.key.is_owner()
    }

    /// Asks etcd whether our key is still there. A `true` is already stale when it
    /// arrives; use [`RwMutexGuard::is_owner`] in a txn to act on it.
    pub async fn is_held(&self) -> Result<bool> {
        self.key.exists().await
    }

    /// Releases the lock. Fails with [`Error::OwnershipLost`] if our key was already
    /// gone (the lease expired, so others may have taken the lock meanwhile).
    pub async fn unlock(self) -> Result<()> {
        self.key.release().await
    }
}

/// Waits until no key under `blockers` (a directory prefix) was created before our key
/// `mine`: the RWMutex rule (a reader is blocked by older writers, a writer by every
/// older key). Each round reads our key and the newest older blocker in one txn, then
/// waits for that blocker to go (synced watch) and looks again.
///
/// Fails with [`Error::SessionExpired`] if our key disappears or the session is lost.
async fn wait_no_older(session: &Session, mine: &Placed, blockers: &str) -> Result<()> {
    session
        .until_lost(async {
            let mut client = session.client();
            let newest_older = GetOptions::new()
                .with_prefix()
                // Our rev is at least 2 (the first write of a cluster); 0 would mean "no bound".
                .with_max_create_revision((mine.rev - 1).max(1))
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1)
                .with_keys_only();
            loop {
                let txn = Txn::new().and_then([
                    TxnOp::get(mine.key.as_str(), Some(GetOptions::new().with_keys_only())),
                    TxnOp::get(blockers, Some(newest_older.clone())),
                ]);
                let resp = retrying(|| {
                    let (mut client, txn) = (client.clone(), txn.clone());
                    async move { client.txn(txn).await }
                })
                .await?;
                let ours =
                    txn_get(&resp, 0).and_then(|g| g.kvs().first().map(|kv| kv.create_revision()));
                if ours != Some(mine.rev) {
                    return Err(Error::SessionExpired(session.lease()));
                }
                let blocker = txn_get(&resp, 1).and_then(|g| g.kvs().first().cloned());
                let Some(blocker) = blocker else {
                    return Ok(());
                };
                debug!(blocker = %show(blocker.key()), "waiting for an older key to go");
                wait_deleted(&mut client, blocker.key(), blocker.create_revision()).await?;
            }
        })
        .await
}
