//! What winning an election gives: [`Leadership`] (fencing token, conditional writes,
//! resign) and the [`Seat`] it shares with [`crate::leader::LeaderContext`].

use std::future::Future;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, info_span, Span};

use crate::internal::owned::compare_delete;
use crate::internal::waiters::release_in_background;
use crate::internal::watch::wait_deleted;
use crate::{Error, Result, Session};

/// What a leader needs to act as one: its session and its key's incarnation.
/// Shared by [`Leadership`] and [`crate::leader::LeaderContext`].
#[derive(Clone, Debug)]
pub(crate) struct Seat {
    session: Session,
    election: String,
    key: String,
    rev: i64,
}

impl Seat {
    pub(super) fn new(session: &Session, election: &str, key: &str, rev: i64) -> Seat {
        Seat {
            session: session.clone(),
            election: election.to_owned(),
            key: key.to_owned(),
            rev,
        }
    }

    pub(crate) fn rev(&self) -> i64 {
        self.rev
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn election(&self) -> &str {
        &self.election
    }

    pub(crate) fn is_leader(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.rev)
    }

    pub(crate) async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let put = TxnOp::put(
            self.key.as_str(),
            value,
            Some(PutOptions::new().with_lease(self.session.lease())),
        );
        let txn = Txn::new().when([self.is_leader()]).and_then([put]);
        if self.session.client().txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(Error::NotLeader(self.election.clone()))
        }
    }

    pub(crate) async fn still_leader(&self) -> Result<bool> {
        let resp = self.session.client().get(self.key.as_str(), None).await?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == self.rev))
    }

    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let session_lost = self.session.done();
        let (mut client, key, rev) = (self.session.client(), self.key.clone(), self.rev);
        async move {
            // wait_deleted retries transient failures itself and only returns once the
            // key is gone or is another incarnation.
            let key_gone = async move {
                let _ = wait_deleted(&mut client, key.as_bytes(), rev).await;
            };
            tokio::select! {
                _ = session_lost => {}
                _ = key_gone => {}
            }
        }
    }
}

/// Proof of having won an election: the fencing token, conditional writes, and
/// resign. Obtain it from [`Election::campaign`](super::Election::campaign).
///
/// Leadership lasts until [`Leadership::resign`] succeeds, the session is lost, or the
/// key is deleted by someone else. If dropped without resigning, the key is deleted in
/// the background (or expires with the lease), which hands leadership on.
#[derive(Debug)]
pub struct Leadership {
    seat: Seat,
    local: Option<OwnedMutexGuard<()>>,
    /// Set once resign reached a definite outcome (deleted, or the key was not ours).
    settled: bool,
    _span: Span,
}

impl Leadership {
    pub(super) fn new(seat: Seat, local: Option<OwnedMutexGuard<()>>) -> Leadership {
        let span = info_span!(
            "coord.election.leadership",
            election = %seat.election,
            key = %seat.key,
            fencing_token = seat.rev
        );
        Leadership {
            seat,
            local,
            settled: false,
            _span: span,
        }
    }

    pub(crate) fn seat(&self) -> &Seat {
        &self.seat
    }

    /// The fencing token: create revision of our key. Every new leadership of this
    /// election gets a larger one, so storing it with each write the leader makes and
    /// rejecting lower ones makes a deposed leader's late writes harmless.
    pub fn fencing_token(&self) -> i64 {
        self.seat.rev
    }

    /// Same as [`Leadership::fencing_token`], under Go's name (`Election.Rev`).
    pub fn rev(&self) -> i64 {
        self.seat.rev
    }

    /// Our leader key, `<name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.seat.key
    }

    /// The session the leadership hangs on.
    pub fn session(&self) -> &Session {
        &self.seat.session
    }

    /// A txn comparison that holds only while we still lead. Put it in the `when` of
    /// every etcd write only the leader may make.
    pub fn is_leader(&self) -> Compare {
        self.seat.is_leader()
    }

    /// Replaces the value the election proclaims, without a new election. Fails with
    /// [`Error::NotLeader`] if we no longer lead (our key is gone or resigned).
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        if self.settled {
            return Err(Error::NotLeader(self.seat.election.clone()));
        }
        self.seat.proclaim(value).await
    }

    /// Asks etcd whether our key is still there. A `true` is stale on arrival; act on
    /// [`Leadership::is_leader`] in a txn instead.
    pub async fn still_leader(&self) -> Result<bool> {
        if self.settled {
            return Ok(false);
        }
        self.seat.still_leader().await
    }

    /// Resolves when leadership is lost: our key is deleted (lease expired or revoked,
    /// someone removed it) or the session is lost. Resolves at once if already so.
    /// Owns what it needs; can be moved into `select!` or a task.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.seat.lost()
    }

    /// Steps down: deletes our key if it is still our incarnation, so the next
    /// candidate leads.
    ///
    /// - `Ok(())`: resigned (also when called again after that — nothing is left to do).
    /// - [`Error::OwnershipLost`]: we had already lost leadership (the key was gone or
    ///   not ours); nothing was deleted. Leadership is settled either way.
    /// - Any other error (etcd unreachable …): **nothing changed** — call `resign`
    ///   again to retry. Dropping the leadership instead retries in the background.
    ///
    /// Cancel-safe: dropping the future leaves the leadership unsettled, as on error.
    pub async fn resign(&mut self) -> Result<()> {
        if self.settled {
            return Ok(());
        }
        let mut client = self.seat.session.client();
        let deleted = compare_delete(&mut client, &self.seat.key, self.seat.rev).await?;
        self.settled = true;
        self.local.take();
        if deleted {
            debug!(key = %self.seat.key, "resigned");
            Ok(())
        } else {
            Err(Error::OwnershipLost(self.seat.key.clone()))
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        release_in_background(
            &self.seat.session,
            std::mem::take(&mut self.seat.key),
            self.seat.rev,
            self.local.take(),
        );
    }
}
