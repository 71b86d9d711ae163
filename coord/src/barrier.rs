//! Barrier: hold a group of processes at a point until someone lets them all go.
//!
//! # Protocol (etcd Go recipe `Barrier`, same key, so Go and coord users share it)
//! - The barrier is one etcd key: the barrier's name itself (no directory below it).
//! - [`Barrier::hold`] creates the key, only if it does not exist; by default it has
//!   no lease (as in Go), so the barrier stays up until someone releases it.
//!   [`Barrier::hold_while_alive`] attaches it to a session's lease instead, so the
//!   barrier also drops if the holder dies.
//! - [`Barrier::release`] deletes the key. Anyone may release, not only the holder.
//! - [`Barrier::wait`] returns as soon as the key does not exist: at once if it is
//!   absent, otherwise when its delete is committed.
//!
//! # Guarantees
//! - `wait()` returns only after it has *seen* the key absent (a read or a delete
//!   event). A watch that closes, breaks or is canceled by etcd (compaction, leader
//!   change, a dropped connection) is not a release: the waiter reopens its watch and
//!   reads the key again (Go's recipe returns from `Wait` in that case).
//! - `hold()` fails with [`Error::KeyExists`] if the barrier is already held.
//! - Cancel-safe: dropping `wait()` leaves nothing behind; dropping `hold()` while its
//!   put is in flight deletes the key again once the put lands (a dropped hold does
//!   not leave the barrier up); dropping `release()` may or may not have deleted it.
//!
//! # Not guaranteed
//! - A waiter is released by the key being absent, not by a particular `release()`
//!   call: a waiter that arrives after a release and before the next hold passes.
//!   If the barrier is released and held again quickly, a waiter whose watch was being
//!   reopened at that moment may see only the second hold and keep waiting.
//! - Waiters are not counted; use [`crate::DoubleBarrier`] to wait for a group size.
//!
//! # Go → coord
//! | etcd's Go `contrib/recipes` | coord |
//! |---|---|
//! | `NewBarrier(client, key)` | [`Barrier::new`] |
//! | `Hold()` | [`Barrier::hold`] (and [`Barrier::hold_while_alive`], not in Go) |
//! | `Release()` | [`Barrier::release`] |
//! | `Wait()` | [`Barrier::wait`] |

use etcd_client::Client;
use tracing::{info_span, Instrument};

use crate::ownership::owned::{create_key, PendingPut, Placed};
use crate::plumbing::watch::wait_key;
use crate::{Error, Result, Session};

/// A barrier on one etcd key. Cheap to create and clone.
#[derive(Clone)]
pub struct Barrier {
    client: Client,
    key: String,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier").field("key", &self.key).finish()
    }
}

impl Barrier {
    /// A barrier on the key `name` (used exactly as given, like Go's recipe). Fails with
    /// [`Error::InvalidArgument`] for an empty name or one containing a NUL byte.
    pub fn new(client: Client, name: &str) -> Result<Barrier> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "barrier name must not be empty".into(),
            ));
        }
        if name.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "barrier name {name:?} contains a NUL byte"
            )));
        }
        Ok(Barrier {
            client,
            key: name.to_owned(),
        })
    }

    /// The barrier's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Raises the barrier: creates its key (without a lease; it stays until
    /// [`Barrier::release`]). Fails with [`Error::KeyExists`] if it is already up.
    /// Returns the revision that created the key.
    pub async fn hold(&self) -> Result<i64> {
        self.put(None).await
    }

    /// Raises the barrier with its key attached to `session`'s lease: it comes down on
    /// [`Barrier::release`] or when the session ends, whichever is first. Fails with
    /// [`Error::KeyExists`] if it is already up, [`Error::SessionExpired`] if the
    /// session is gone.
    pub async fn hold_while_alive(&self, session: &Session) -> Result<i64> {
        session.check_alive()?;
        self.put(Some(session.lease())).await
    }

    async fn put(&self, lease: Option<i64>) -> Result<i64> {
        let span = info_span!("coord.barrier.hold", key = %self.key);
        async {
            let (mut client, key) = (self.client.clone(), self.key.clone());
            // Runs inline; if we are dropped mid-put, the pending guard finishes the put
            // in the background and deletes what it created.
            let mut pending = PendingPut::start(self.client.clone(), async move {
                match create_key(&mut client, &key, b"", lease, &[]).await? {
                    Some((placed, _)) => Ok((placed, true)),
                    // Not created. Revision 0 makes a cleanup compare-delete a no-op
                    // on the existing key (its create revision is not 0).
                    None => Ok((Placed { key, rev: 0 }, false)),
                }
            });
            let (_, created) = pending.placed().await?;
            let placed = pending.keep();
            if created {
                Ok(placed.rev)
            } else {
                Err(Error::KeyExists(self.key.clone()))
            }
        }
        .instrument(span)
        .await
    }

    /// Lowers the barrier: deletes its key, letting every waiter go. Anyone may
    /// release. Returns whether the barrier was up.
    pub async fn release(&self) -> Result<bool> {
        let resp = self.client.clone().delete(self.key.as_str(), None).await?;
        Ok(resp.deleted() > 0)
    }

    /// Waits until the barrier is down (its key does not exist). Returns at once if it
    /// is not up.
    pub async fn wait(&self) -> Result<()> {
        let span = info_span!("coord.barrier.wait", key = %self.key);
        let mut client = self.client.clone();
        wait_key(&mut client, self.key.as_bytes(), |current| {
            current.is_none().then_some(())
        })
        .instrument(span)
        .await
    }

    /// Asks etcd whether the barrier is up right now (its key exists, so [`Barrier::wait`]
    /// would wait).
    pub async fn is_up(&self) -> Result<bool> {
        let resp = self.client.clone().get(self.key.as_str(), None).await?;
        Ok(!resp.kvs().is_empty())
    }
}
