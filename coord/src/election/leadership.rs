//! What winning an election gives: a [`Leadership`] (it resigns, and releases the key
//! when dropped) and, inside it, the [`LeaderContext`] every leader acts through —
//! the fencing token, the "still mine?" comparison, proclaim, and the end of the term.
//! [`crate::leader`] hands the same context to a leader job.

use std::future::Future;
use std::ops::Deref;

use etcd_client::Compare;
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, info_span, Span};

use crate::ownership::owned::{compare_delete, incarnation_exists};
use crate::ownership::waiters::release_in_background;
use crate::plumbing::watch::wait_deleted;
use crate::txn::{create_rev_is, Ops, Txn};
use crate::{Error, Result, Session};

/// One term of leadership: the session it hangs on and the incarnation of the leader
/// key. What a leader acts through — as [`Leadership`] (which derefs to it) or, in a
/// job run by [`crate::leader`], directly. Cheap to clone, so a job can hand it to the
/// tasks it spawns.
#[derive(Clone, Debug)]
pub struct LeaderContext {
    session: Session,
    election: String,
    key: String,
    rev: i64,
}

impl LeaderContext {
    pub(super) fn new(session: &Session, election: &str, key: &str, rev: i64) -> LeaderContext {
        LeaderContext {
            session: session.clone(),
            election: election.to_owned(),
            key: key.to_owned(),
            rev,
        }
    }

    /// The fencing token: create revision of our leader key. Every new term of this
    /// election gets a larger one, so storing it with each write made outside etcd and
    /// rejecting lower ones makes a deposed leader's late writes harmless. Go's
    /// `Election.Rev()` returns the same number.
    #[doc(alias = "Rev")]
    pub fn fencing_token(&self) -> i64 {
        self.rev
    }

    /// A txn comparison that holds only while this term lasts (our key is still the
    /// incarnation we created). Put it in the `when` of every etcd write only the
    /// leader may make.
    pub fn is_owner(&self) -> Compare {
        create_rev_is(self.key.as_str(), self.rev)
    }

    /// Our leader key, `<name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The election's name.
    pub fn election(&self) -> &str {
        &self.election
    }

    /// The session the term hangs on.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Replaces the value the election proclaims (seen by `leader()`, observers and
    /// `etcdctl elect -l`), without a new election. Fails with [`Error::NotLeader`] once
    /// the term is over (our key is gone, resigned, or another incarnation).
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let outcome = Txn::new()
            .when(self.is_owner())
            .then(Ops::new().put_with_lease(self.key.as_str(), value, self.session.lease()))
            .commit(&self.session.client())
            .await?;
        if outcome.succeeded() {
            Ok(())
        } else {
            Err(Error::NotLeader(self.election.clone()))
        }
    }

    /// Asks etcd whether this term still lasts. A `true` is stale on arrival; act on
    /// [`LeaderContext::is_owner`] in a txn instead.
    pub async fn is_held(&self) -> Result<bool> {
        incarnation_exists(&self.session.client(), &self.key, self.rev).await
    }

    /// Resolves when the term ends: our key is deleted (lease expired or revoked,
    /// someone removed it) or the session is lost. Resolves at once if already so.
    /// Owns what it needs; can be moved into `select!` or a task (the leader job runner
    /// cancels the job future itself, not what it spawned).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
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

/// Proof of having won an election: resign, or drop it to hand leadership on. Obtain
/// it from [`Election::campaign`](super::Election::campaign).
///
/// Everything a leader does while leading is on its [`LeaderContext`], which a
/// `Leadership` derefs to: [`fencing_token`](LeaderContext::fencing_token),
/// [`is_owner`](LeaderContext::is_owner), [`proclaim`](LeaderContext::proclaim),
/// [`is_held`](LeaderContext::is_held), [`lost`](LeaderContext::lost), `key`,
/// `session`. [`Leadership::context`] clones it for tasks of their own.
///
/// Leadership lasts until [`Leadership::resign`] succeeds, the session is lost, or the
/// key is deleted by someone else. If dropped without resigning, the key is deleted in
/// the background (or expires with the lease), which hands leadership on.
#[derive(Debug)]
pub struct Leadership {
    context: LeaderContext,
    local: Option<OwnedMutexGuard<()>>,
    /// Set once resign reached a definite outcome (deleted, or the key was not ours).
    settled: bool,
    _span: Span,
}

impl Deref for Leadership {
    type Target = LeaderContext;

    fn deref(&self) -> &LeaderContext {
        &self.context
    }
}

impl Leadership {
    pub(super) fn new(context: LeaderContext, local: Option<OwnedMutexGuard<()>>) -> Leadership {
        let span = info_span!(
            "coord.election.leadership",
            election = %context.election,
            key = %context.key,
            fencing_token = context.rev
        );
        Leadership {
            context,
            local,
            settled: false,
            _span: span,
        }
    }

    /// The context of this term, for a task that outlives the borrow (it does not keep
    /// the leadership: resigning or dropping the `Leadership` still ends the term).
    pub fn context(&self) -> LeaderContext {
        self.context.clone()
    }

    /// Steps down: deletes our key if it is still our incarnation, so the next
    /// candidate leads.
    ///
    /// - `Ok(())`: resigned (also when called again after that — nothing is left to do).
    /// - [`Error::OwnershipLost`]: we had already lost leadership (the key was gone or
    ///   not ours); nothing was deleted. Leadership is settled either way.
    /// - [`Error::ReleaseUnconfirmed`]: a retried delete found the key gone; settled,
    ///   but whether we led until then is unknown.
    /// - Any other error (etcd unreachable …): **nothing changed** — call `resign`
    ///   again to retry. Dropping the leadership instead retries in the background.
    ///
    /// Cancel-safe: dropping the future leaves the leadership unsettled, as on error.
    pub async fn resign(&mut self) -> Result<()> {
        if self.settled {
            return Ok(());
        }
        let mut client = self.context.session.client();
        let found = compare_delete(&mut client, &self.context.key, self.context.rev).await?;
        self.settled = true;
        self.local.take();
        debug!(key = %self.context.key, ?found, "resigned");
        found.into_result(&self.context.key)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        release_in_background(
            &self.context.session,
            std::mem::take(&mut self.context.key),
            self.context.rev,
            self.local.take(),
        );
    }
}
