//! Keys a primitive creates and owns: creating them cancel-safely ([`PendingPut`],
//! [`create_key`], [`create_unique`]), holding them ([`OwnedKey`]) and releasing them
//! with a compare-and-delete on their create revision ([`compare_delete`]), explicitly
//! or in the background from a destructor ([`spawn_cleanup`]).

use etcd_client::{Client, Compare, GetOptions, PutOptions, Txn, TxnOp, TxnResponse};
use tokio::sync::OwnedMutexGuard;
use tracing::debug;

use crate::plumbing::key::{txn_get, txn_rev};
use crate::plumbing::retry::retrying;
use crate::txn::{create_rev_is, key_missing};
use crate::{Error, Result, Session};

/// A key we created and the revision that created it (our place in line, and the
/// fencing token of whatever the key stands for).
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    pub key: String,
    pub rev: i64,
}

impl Placed {
    /// True while this incarnation of the key exists, inside a txn.
    pub(crate) fn is_owner(&self) -> Compare {
        create_rev_is(self.key.as_str(), self.rev)
    }

    /// Compare-and-deletes this incarnation in the background: what a destructor does
    /// with a key it still owns.
    pub(crate) fn delete_in_background(&self, client: &Client) {
        let (mut client, placed) = (client.clone(), self.clone());
        spawn_cleanup(async move {
            let _ = compare_delete(&mut client, &placed.key, placed.rev).await;
        });
    }
}

/// Asks etcd whether `key` is still the incarnation created at revision `rev` (what a
/// guard's `is_held` answers; stale on arrival).
pub(crate) async fn incarnation_exists(client: &Client, key: &str, rev: i64) -> Result<bool> {
    let resp = client.clone().get(key, None).await?;
    Ok(resp
        .kvs()
        .first()
        .is_some_and(|kv| kv.create_revision() == rev))
}

/// Puts `key` = `value` (attached to `lease` when given) only if it does not exist, and
/// runs `reads` in the same transaction right after the put (so they see our key at
/// the revision that created it). Returns `None` when the key already existed.
///
/// A put under a lease etcd no longer knows fails with [`Error::SessionExpired`].
pub(crate) async fn create_key(
    client: &mut Client,
    key: &str,
    value: &[u8],
    lease: Option<i64>,
    reads: &[TxnOp],
) -> Result<Option<(Placed, TxnResponse)>> {
    let options = lease.map(|id| PutOptions::new().with_lease(id));
    let mut ops = vec![TxnOp::put(key, value, options)];
    ops.extend(reads.iter().cloned());
    let txn = Txn::new().when([key_missing(key)]).and_then(ops);
    let resp = client.txn(txn).await.map_err(|e| match (lease, e) {
        (Some(id), etcd_client::Error::GRpcStatus(s))
            if s.message().contains("lease not found") =>
        {
            Error::SessionExpired(id)
        }
        (_, other) => other.into(),
    })?;
    if !resp.succeeded() {
        return Ok(None);
    }
    let placed = Placed {
        key: key.to_owned(),
        rev: txn_rev(&resp),
    };
    Ok(Some((placed, resp)))
}

/// Creates a new key named by `name_key` (called again on a collision, so it must
/// produce a fresh name each time, e.g. with [`unix_nanos`](crate::plumbing::key::unix_nanos)) under the session's
/// lease, with `reads` in the same transaction. Go's `newUniqueEphemeralKV`.
pub(crate) async fn create_unique(
    session: &Session,
    mut name_key: impl FnMut() -> String,
    value: &[u8],
    reads: &[TxnOp],
) -> Result<(Placed, TxnResponse)> {
    let mut client = session.client();
    loop {
        let key = name_key();
        if let Some(created) =
            create_key(&mut client, &key, value, Some(session.lease()), reads).await?
        {
            return Ok(created);
        }
        debug!(key = %key, "unique key collided; trying a fresh one");
    }
}

/// A key being created whose fate is not settled yet. The put runs inline in the
/// caller's task (no task hop on the common path); if the caller is dropped before
/// [`PendingPut::keep`], the key is deleted in the background — and a put still in
/// flight is not abandoned: it is moved into that background task and finished first,
/// so the delete cannot overtake it. A put that was never polled sent nothing and is
/// simply dropped.
///
/// An optional local lock (see `Session::local_lock`) is released only after that
/// cleanup, so the next same-session user of the name starts clean.
///
/// If the put itself fails with an error, whether it landed is unknown (e.g. the
/// connection broke after the commit); such a key stays until its lease expires.
pub(crate) struct PendingPut<T: Send + 'static> {
    client: Client,
    put: Option<PutFuture<T>>,
    /// True once the put was polled: from then on a request may be on its way.
    started: bool,
    placed: Option<Placed>,
    local: Option<OwnedMutexGuard<()>>,
    kept: bool,
    /// What undoes the put when its key is not kept, if more than deleting the key.
    undo: Option<Undo>,
}

/// Builds the transaction that undoes a put (see [`PendingPut::with_undo`]).
type Undo = Box<dyn FnOnce(&Placed) -> etcd_client::Txn + Send>;

type PutFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Placed, T)>> + Send>>;

impl<T: Send + 'static> PendingPut<T> {
    /// Prepares `create` (which must create exactly the key it returns);
    /// [`PendingPut::placed`] runs it.
    pub(crate) fn start(
        client: Client,
        create: impl std::future::Future<Output = Result<(Placed, T)>> + Send + 'static,
    ) -> Self {
        PendingPut {
            client,
            put: Some(Box::pin(create)),
            started: false,
            placed: None,
            local: None,
            kept: false,
            undo: None,
        }
    }

    /// Undoes the put with `undo(placed)` instead of a plain compare-and-delete of the
    /// key, when the put also changed other keys (a claim raises its item's attempt
    /// counter). If that transaction's conditions fail, the key is compare-deleted.
    pub(crate) fn with_undo(
        mut self,
        undo: impl FnOnce(&Placed) -> etcd_client::Txn + Send + 'static,
    ) -> Self {
        self.undo = Some(Box::new(undo));
        self
    }

    /// Holds `local` until the key is kept or cleaned up.
    pub(crate) fn with_local(mut self, local: OwnedMutexGuard<()>) -> Self {
        self.local = Some(local);
        self
    }

    /// Runs the put and returns the key with what the creator returned. Once.
    pub(crate) async fn placed(&mut self) -> Result<(Placed, T)> {
        let put = self.put.as_mut().expect("placed() is called once");
        self.started = true;
        let outcome = put.await;
        self.put = None;
        let (placed, extra) = outcome?;
        self.placed = Some(placed.clone());
        Ok((placed, extra))
    }

    /// Deletes the placed key inline (compare-and-delete on its revision), then frees
    /// the local lock. On failure or cancellation `Drop` cleans up in the background.
    pub(crate) async fn remove(mut self) -> Result<()> {
        if let Some(placed) = &self.placed {
            compare_delete(&mut self.client.clone(), &placed.key, placed.rev).await?;
        }
        self.kept = true; // settled: nothing left for `Drop` to undo
        Ok(())
    }

    /// Keeps the key: its owner is now a guard (or the key is meant to stay).
    pub(crate) fn keep(self) -> Placed {
        self.keep_with_local().0
    }

    /// Like [`PendingPut::keep`], also handing over the local lock.
    pub(crate) fn keep_with_local(mut self) -> (Placed, Option<OwnedMutexGuard<()>>) {
        self.kept = true;
        let placed = self.placed.take().expect("keep() after placed()");
        (placed, self.local.take())
    }
}

impl<T: Send + 'static> Drop for PendingPut<T> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (mut client, placed, local, undo) = (
            self.client.clone(),
            self.placed.take(),
            self.local.take(),
            self.undo.take(),
        );
        let put = self.put.take().filter(|_| self.started);
        if placed.is_none() && put.is_none() && local.is_none() {
            return; // nothing was sent, nothing to undo
        }
        spawn_cleanup(async move {
            let placed = match (placed, put) {
                (Some(placed), _) => Some(placed),
                (None, Some(put)) => put.await.ok().map(|(placed, _)| placed),
                (None, None) => None,
            };
            if let Some(placed) = placed {
                let undone = match undo.map(|undo| undo(&placed)) {
                    Some(txn) => retrying(|| {
                        let (mut client, txn) = (client.clone(), txn.clone());
                        async move { client.txn(txn).await }
                    })
                    .await
                    .is_ok_and(|resp| resp.succeeded()),
                    None => false,
                };
                if !undone {
                    let _ = compare_delete(&mut client, &placed.key, placed.rev).await;
                }
            }
            drop(local);
        });
    }
}

/// A key a guard owns (a read/write lock, a permit, a barrier seat). Released by
/// compare-and-delete on its create revision, explicitly or in the background on drop.
pub(crate) struct OwnedKey {
    client: Client,
    placed: Placed,
    deleted: bool,
}

impl OwnedKey {
    pub(crate) fn new(client: Client, placed: Placed) -> OwnedKey {
        OwnedKey {
            client,
            placed,
            deleted: false,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.placed.key
    }

    pub(crate) fn rev(&self) -> i64 {
        self.placed.rev
    }

    /// True while our incarnation of the key exists, inside a txn.
    pub(crate) fn is_owner(&self) -> Compare {
        self.placed.is_owner()
    }

    /// Asks etcd whether our incarnation of the key still exists.
    pub(crate) async fn exists(&self) -> Result<bool> {
        incarnation_exists(&self.client, &self.placed.key, self.placed.rev).await
    }

    /// Compare-and-deletes the key; returns what it found. After this call (whatever
    /// it returns) the destructor does nothing.
    pub(crate) async fn delete(&mut self) -> Result<Release> {
        let deleted = compare_delete(&mut self.client, &self.placed.key, self.placed.rev).await;
        if deleted.is_ok() {
            self.deleted = true;
        }
        deleted
    }

    /// Like [`OwnedKey::delete`], failing with [`Error::OwnershipLost`] when the key
    /// was no longer ours ([`Error::ReleaseUnconfirmed`] when that is unknown).
    pub(crate) async fn release(mut self) -> Result<()> {
        self.delete().await?.into_result(&self.placed.key)
    }

    /// Marks the key as gone without deleting it (someone else deleted it for us, e.g.
    /// a transaction that deleted it along with other keys).
    pub(crate) fn forget(&mut self) {
        self.deleted = true;
    }
}

impl std::fmt::Debug for OwnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedKey")
            .field("key", &self.placed.key)
            .field("rev", &self.placed.rev)
            .finish()
    }
}

impl Drop for OwnedKey {
    fn drop(&mut self) {
        if !self.deleted {
            self.placed.delete_in_background(&self.client);
        }
    }
}

/// What a compare-and-delete found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Our incarnation was there and this call deleted it.
    Deleted,
    /// Not ours any more: the key was gone at the first attempt, or is another
    /// incarnation (the lease expired; someone else may hold it now).
    Lost,
    /// A retry (after an attempt that failed) found the key gone: our earlier attempt
    /// may have deleted it, or it went on its own. Released, but not known to be ours.
    Unconfirmed,
}

impl Release {
    /// `Ok` only for [`Release::Deleted`]; the others as [`Error::OwnershipLost`] and
    /// [`Error::ReleaseUnconfirmed`].
    pub(crate) fn into_result(self, key: &str) -> Result<()> {
        match self {
            Release::Deleted => Ok(()),
            Release::Lost => Err(Error::OwnershipLost(key.to_owned())),
            Release::Unconfirmed => Err(Error::ReleaseUnconfirmed(key.to_owned())),
        }
    }
}

/// Deletes `key` only if it is still the incarnation created at `rev`. This is how
/// every owner releases: an unconditional delete could remove a newer incarnation of
/// the same key — the same session took it again after a release whose reply was
/// lost, and the retried delete lands on the new one (etcd issue 22082). When the
/// lease expired the key is simply gone ([`Release::Lost`]).
pub(crate) async fn compare_delete(client: &mut Client, key: &str, rev: i64) -> Result<Release> {
    let txn = Txn::new()
        .when([create_rev_is(key, rev)])
        .and_then([TxnOp::delete(key, None)])
        .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
    // Retried on transient failures (a call routed to a dead etcd member fails at once).
    // An attempt that looked failed may in fact have applied, so a retry that finds the
    // key gone cannot tell our delete from the key going on its own: `Unconfirmed`.
    let mut attempts = 0;
    let resp = retrying(|| {
        attempts += 1;
        let (mut client, txn) = (client.clone(), txn.clone());
        #[cfg(feature = "test-hooks")]
        let key = key.to_owned();
        async move {
            #[cfg(feature = "test-hooks")]
            if let Some(lost) = crate::test_hooks::compare_delete_attempt(&key).await {
                return Err(lost);
            }
            client.txn(txn).await
        }
    })
    .await?;
    if resp.succeeded() {
        return Ok(Release::Deleted);
    }
    let gone = txn_get(&resp, 0).is_some_and(|g| g.count() == 0);
    Ok(if attempts > 1 && gone {
        Release::Unconfirmed
    } else {
        Release::Lost
    })
}

/// Spawns `fut` on the current Tokio runtime, if there is one. Destructors use it to
/// release keys in the background; without a runtime the lease expiry cleans up.
pub(crate) fn spawn_cleanup(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(fut);
        }
        Err(_) => debug!("no runtime in drop; the key is left to the lease TTL"),
    }
}
