//! The etcd operations the queue-of-waiters primitives (Mutex, Election, Semaphore)
//! share: enter the queue, wait for your turn, leave it.
//!
//! # How a waiter waits (and why coord is faster than Go's client here)
//! Go's client watches its predecessor key *from an old revision*. etcd serves such a
//! watch from its "unsynced" group, which it catches up only every 100 ms, so each
//! lock hand-off costs ~100 ms. coord instead opens the watch *from now* (always in
//! the synced group, notified as soon as the delete commits) and only then reads
//! whether the predecessor still exists. Watch-then-read closes the race the old
//! revision was there for: a delete before the read is seen by the read, a delete
//! after it by the watch. The key layout is unchanged, so Go and coord waiters
//! still queue behind each other correctly.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnResponse, WatchOptions, WatchStream,
};
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tracing::debug;

use crate::key::{show, txn_get, txn_rev};
use crate::{Error, Result, Session};

/// Where a freshly entered waiter stands.
pub(crate) struct Entered {
    /// Create revision of our key: our place in the queue and the fencing token.
    pub rev: i64,
    /// True when our key is the oldest under the prefix, i.e. we hold it already.
    pub first: bool,
    /// The value our key had if it already existed (the txn's else branch).
    pub existing_value: Option<Vec<u8>>,
}

/// Puts `key` (attached to the session's lease) unless it exists, and reads the
/// oldest key under `prefix`, in one transaction — Go's `tryAcquire`.
pub(crate) async fn enter(
    session: &Session,
    prefix: &str,
    key: &str,
    value: &[u8],
) -> Result<Entered> {
    let oldest = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(session.lease())),
            ),
            TxnOp::get(prefix, Some(oldest.clone())),
        ])
        .or_else([TxnOp::get(key, None), TxnOp::get(prefix, Some(oldest))]);
    // Safe to retry: if a lost attempt did apply, the retry takes the else branch and
    // adopts the key it created. Retrying matters when an etcd member is down: the
    // client's balancer may still route a call to it and fail it at once.
    let resp = retrying(|| {
        let (mut client, txn) = (session.client(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await
    .map_err(|e| match e {
        // The lease is gone but the keepalive has not noticed yet.
        Error::Etcd(etcd_client::Error::GRpcStatus(s))
            if s.message().contains("lease not found") =>
        {
            Error::SessionExpired(session.lease())
        }
        other => other,
    })?;
    let (rev, existing_value) = if resp.succeeded() {
        (txn_rev(&resp), None)
    } else {
        let mine = txn_get(&resp, 0).and_then(|g| g.kvs().first().cloned());
        match mine {
            Some(kv) => (kv.create_revision(), Some(kv.value().to_vec())),
            // Deleted between the compare and the read cannot happen inside one txn.
            None => return Err(Error::OwnershipLost(key.to_owned())),
        }
    };
    let first = txn_get(&resp, 1)
        .and_then(|g| g.kvs().first().map(|kv| kv.create_revision() == rev))
        .unwrap_or(false);
    Ok(Entered {
        rev,
        first,
        existing_value,
    })
}

/// A queue key whose fate is not settled yet: entering is in flight or done, but the
/// caller has not decided to keep the key. If dropped before [`PendingKey::keep`], it
/// deletes the key in the background — after the in-flight put has finished, so the
/// delete cannot race ahead of the put and miss it. This is what makes `lock()` and
/// `campaign()` cancel-safe.
///
/// It also carries the session's local lock for the key (see `Session::local_lock`),
/// released only once the key is gone, so the next same-session user starts clean.
pub(crate) struct PendingKey {
    session: Session,
    key: String,
    local: Option<OwnedMutexGuard<()>>,
    put: Option<JoinHandle<Result<Entered>>>,
    rev: Option<i64>,
}

impl PendingKey {
    /// Starts [`enter`] for `key` under `prefix` with `value`, in a task of its own so
    /// that the put completes (and can be undone) even if the caller is dropped.
    pub(crate) fn start(
        session: &Session,
        prefix: &str,
        key: &str,
        value: Vec<u8>,
        local: OwnedMutexGuard<()>,
    ) -> PendingKey {
        let (task_session, prefix, task_key) = (session.clone(), prefix.to_owned(), key.to_owned());
        let put =
            tokio::spawn(async move { enter(&task_session, &prefix, &task_key, &value).await });
        PendingKey {
            session: session.clone(),
            key: key.to_owned(),
            local: Some(local),
            put: Some(put),
            rev: None,
        }
    }

    /// Waits for the put to finish and returns where we entered. Called once.
    pub(crate) async fn entered(&mut self) -> Result<Entered> {
        let put = self.put.as_mut().expect("entered() is called once");
        let entered = match put.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(Error::Etcd(etcd_client::Error::IoError(
                std::io::Error::new(std::io::ErrorKind::Interrupted, "runtime shutting down"),
            ))),
        };
        self.put = None;
        let entered = entered?;
        self.rev = Some(entered.rev);
        Ok(entered)
    }

    /// Keeps the key (it now belongs to a guard) and hands over the local lock, which
    /// the guard must hold until it releases the key.
    pub(crate) fn keep(mut self) -> Option<OwnedMutexGuard<()>> {
        self.local.take()
    }
}

impl Drop for PendingKey {
    fn drop(&mut self) {
        let Some(local) = self.local.take() else {
            return; // kept by a guard
        };
        let (mut client, key) = (self.session.client(), std::mem::take(&mut self.key));
        let (put, rev) = (self.put.take(), self.rev);
        spawn_cleanup(async move {
            let rev = match (rev, put) {
                (Some(rev), _) => Some(rev),
                (None, Some(put)) => put.await.ok().and_then(|r| r.ok()).map(|e| e.rev),
                (None, None) => None,
            };
            if let Some(rev) = rev {
                let _ = compare_delete(&mut client, &key, rev).await;
            }
            // Only now may the next local user of this name enter.
            drop(local);
        });
    }
}

/// What a guard's destructor does when it was not released explicitly: compare-delete
/// its key in the background, then free the session's local lock for the name.
pub(crate) fn release_in_background(
    session: &Session,
    key: String,
    rev: i64,
    local: Option<OwnedMutexGuard<()>>,
) {
    let mut client = session.client();
    spawn_cleanup(async move {
        let _ = compare_delete(&mut client, &key, rev).await;
        drop(local);
    });
}

/// Waits until every key under `prefix` created before `my_rev` is gone, i.e. until
/// the waiter whose key has create revision `my_rev` is first in line.
///
/// Fails with [`Error::SessionExpired`] if our own key disappears while we wait
/// (lease expired or revoked): a waiter must never report success without its key.
/// Also returns early with that error when the session is lost.
pub(crate) async fn wait_for_turn(session: &Session, prefix: &str, my_rev: i64) -> Result<()> {
    let lost = session.done();
    tokio::pin!(lost);
    let turn = async {
        let mut client = session.client();
        loop {
            // Our own key and our predecessor in one read: the keys created up to
            // my_rev, newest first. Ours must be first; the second is whom we wait for.
            let options = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(my_rev)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(2)
                .with_keys_only();
            let resp = retrying(|| {
                let mut client = client.clone();
                let options = options.clone();
                async move { client.get(prefix, Some(options)).await }
            })
            .await?;
            let kvs = resp.kvs();
            match kvs.first() {
                Some(kv) if kv.create_revision() == my_rev => {}
                _ => return Err(Error::SessionExpired(session.lease())),
            }
            let Some(predecessor) = kvs.get(1) else {
                return Ok(());
            };
            debug!(
                predecessor = %show(predecessor.key()),
                "waiting for predecessor to release"
            );
            wait_deleted(
                &mut client,
                predecessor.key(),
                predecessor.create_revision(),
            )
            .await?;
        }
    };
    tokio::select! {
        result = turn => result,
        _ = &mut lost => Err(Error::SessionExpired(session.lease())),
    }
}

/// Returns once `key` with create revision `create_rev` no longer exists (deleted,
/// expired, or replaced by a newer incarnation). Transient etcd failures are retried
/// with backoff; callers bound the wait with the session's `done()` or a timeout.
pub(crate) async fn wait_deleted(client: &mut Client, key: &[u8], create_rev: i64) -> Result<()> {
    wait_key(client, key, |current| match current {
        Some(kv) if kv.create_revision() == create_rev => None,
        _ => Some(()),
    })
    .await
}

/// Deletes `key` only if it is still the incarnation created at `rev`. Returns
/// whether it deleted. This is how every owner releases: an unconditional delete
/// could remove a key a newer owner created after ours expired (etcd issue 22082).
pub(crate) async fn compare_delete(client: &mut Client, key: &str, rev: i64) -> Result<bool> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::delete(key, None)])
        .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
    // Retried on transient failures (a call routed to a dead etcd member fails at once).
    // If an attempt that looked failed had in fact applied, the retry finds the key
    // gone: after a retry, "gone" counts as deleted by us.
    let mut attempts = 0;
    let resp = retrying(|| {
        attempts += 1;
        let (mut client, txn) = (client.clone(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await?;
    if resp.succeeded() {
        return Ok(true);
    }
    let gone = txn_get(&resp, 0).is_some_and(|g| g.count() == 0);
    Ok(attempts > 1 && gone)
}

/// Runs `op` again on transient failures, a few times, with backoff.
pub(crate) async fn retrying<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if backoff.attempts < 8 && crate::error::is_transient(&e) => {
                backoff.wait(&e).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Exponential backoff with jitter, 20 ms doubling to 1 s.
#[derive(Default)]
pub(crate) struct Backoff {
    attempts: u32,
}

impl Backoff {
    pub(crate) async fn wait(&mut self, why: &(dyn std::fmt::Display + Sync)) {
        let base = 20u64 << self.attempts.min(6);
        let jitter = rand::random::<u64>() % (base / 2 + 1);
        self.attempts += 1;
        debug!(attempt = self.attempts, reason = %why, "retrying etcd call");
        sleep(Duration::from_millis((base + jitter).min(1000))).await;
    }
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

// ---------------------------------------------------------------------------------
// Watching one key (or a prefix) from now, for the waits that are not a plain queue.
// ---------------------------------------------------------------------------------

/// Opens a watch on `key` (with `options`, e.g. a prefix range or filters) starting at
/// the current revision, and returns once etcd has confirmed it is created. A watch
/// from now is served from etcd's synced group, so it is notified at commit time and
/// cannot hit a compacted revision. Transient failures are retried with backoff.
pub(crate) async fn watch_from_now(
    client: &mut Client,
    key: &[u8],
    options: WatchOptions,
) -> Result<WatchStream> {
    let mut backoff = Backoff::default();
    loop {
        let failure: Box<dyn std::fmt::Display + Send + Sync> = match client
            .watch_client()
            .watch(key, Some(options.clone()))
            .await
        {
            Ok(mut stream) => match stream.message().await {
                Ok(Some(resp)) if resp.created() && !resp.canceled() => return Ok(stream),
                Ok(_) => Box::new("watch was not created"),
                Err(e) if crate::error::is_transient(&e) => Box::new(e),
                Err(e) => return Err(e.into()),
            },
            Err(e) if crate::error::is_transient(&e) => Box::new(e),
            Err(e) => return Err(e.into()),
        };
        backoff.wait(&*failure).await;
    }
}

/// Waits until the next response with events arrives on `stream`, or the stream ends,
/// breaks or is canceled. Callers re-read etcd afterwards, so every outcome is just a
/// hint to look again; a stream that ends without events is followed by a short
/// backoff so that a flapping connection cannot make the caller spin.
pub(crate) async fn next_change(stream: &mut WatchStream, backoff: &mut Backoff) {
    loop {
        match stream.message().await {
            Ok(Some(resp)) if !resp.events().is_empty() => return,
            Ok(Some(resp)) if !resp.canceled() => continue, // progress notification
            Ok(Some(_)) => {
                backoff.wait(&"watch canceled by etcd").await;
                return;
            }
            Ok(None) => {
                backoff.wait(&"watch stream ended").await;
                return;
            }
            Err(e) => {
                backoff.wait(&e).await;
                return;
            }
        }
    }
}

/// Waits until `check` accepts the state of `key` (`None` = the key does not exist)
/// and returns what it returned.
///
/// Watch-then-read: the watch is opened from now, then the key is read, then every
/// event is fed to `check`. A watch that breaks, closes or is canceled (compaction,
/// leader change, a dropped connection) is **never** taken as a state change: the
/// whole sequence starts over and the key is read again.
pub(crate) async fn wait_key<T>(
    client: &mut Client,
    key: &[u8],
    mut check: impl FnMut(Option<&KeyValue>) -> Option<T>,
) -> Result<T> {
    let mut backoff = Backoff::default();
    loop {
        let mut stream = watch_from_now(client, key, WatchOptions::new()).await?;
        match client.get(key, None).await {
            Ok(resp) => {
                if let Some(done) = check(resp.kvs().first()) {
                    return Ok(done);
                }
            }
            Err(e) if crate::error::is_transient(&e) => {
                backoff.wait(&e).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        'events: loop {
            match stream.message().await {
                Ok(Some(resp)) if resp.canceled() => break 'events,
                Ok(Some(resp)) => {
                    for event in resp.events() {
                        let state = match event.event_type() {
                            EventType::Put => event.kv(),
                            EventType::Delete => None,
                        };
                        if let Some(done) = check(state) {
                            return Ok(done);
                        }
                    }
                }
                Ok(None) | Err(_) => break 'events,
            }
        }
        backoff.wait(&"watch ended; re-reading").await;
    }
}

/// Runs `fut` unless the session is lost first, in which case it is dropped and
/// [`Error::SessionExpired`] returned.
pub(crate) async fn until_lost<T>(
    session: &Session,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let lost = session.done();
    tokio::select! {
        result = fut => result,
        _ = lost => Err(Error::SessionExpired(session.lease())),
    }
}

// ---------------------------------------------------------------------------------
// Creating keys cancel-safely, and owning them (RWMutex, barriers, Semaphore).
// ---------------------------------------------------------------------------------

/// A key we created and the revision that created it (our place in line, and the
/// fencing token of whatever the key stands for).
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    pub key: String,
    pub rev: i64,
}

/// The suffix Go's recipes use for unique keys: the wall clock in nanoseconds since
/// the Unix epoch, in decimal. Uniqueness comes from the create-if-absent put, which
/// retries with a fresh timestamp on a collision.
pub(crate) fn unix_nanos() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
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
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then(ops);
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
/// produce a fresh name each time, e.g. with [`unix_nanos`]) under the session's
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

/// A key being created whose fate is not settled: the put runs in a task of its own
/// (so it completes, and can be undone, even if the caller is dropped mid-flight). If
/// the `PendingPut` is dropped before [`PendingPut::keep`], the key is deleted in the
/// background — after the put has finished, so the delete cannot overtake it.
///
/// If the put itself fails with an error, whether it landed is unknown (e.g. the
/// connection broke after the commit); such a key stays until its lease expires.
pub(crate) struct PendingPut<T: Send + 'static> {
    client: Client,
    task: Option<JoinHandle<Result<(Placed, T)>>>,
    placed: Option<Placed>,
    kept: bool,
}

impl<T: Send + 'static> PendingPut<T> {
    /// Starts `create` (which must create exactly the key it returns) in a task.
    pub(crate) fn start(
        client: Client,
        create: impl std::future::Future<Output = Result<(Placed, T)>> + Send + 'static,
    ) -> Self {
        PendingPut {
            client,
            task: Some(tokio::spawn(create)),
            placed: None,
            kept: false,
        }
    }

    /// Waits for the put and returns the key with what the creator returned. Once.
    pub(crate) async fn placed(&mut self) -> Result<(Placed, T)> {
        let task = self.task.as_mut().expect("placed() is called once");
        let outcome = match task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(Error::Etcd(etcd_client::Error::IoError(
                std::io::Error::new(std::io::ErrorKind::Interrupted, "runtime shutting down"),
            ))),
        };
        self.task = None;
        let (placed, extra) = outcome?;
        self.placed = Some(placed.clone());
        Ok((placed, extra))
    }

    /// Keeps the key: its owner is now a guard (or the key is meant to stay).
    pub(crate) fn keep(mut self) -> Placed {
        self.kept = true;
        self.placed.take().expect("keep() after placed()")
    }
}

impl<T: Send + 'static> Drop for PendingPut<T> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (mut client, placed, task) =
            (self.client.clone(), self.placed.take(), self.task.take());
        spawn_cleanup(async move {
            let placed = match (placed, task) {
                (Some(placed), _) => Some(placed),
                (None, Some(task)) => task.await.ok().and_then(|r| r.ok()).map(|(p, _)| p),
                (None, None) => None,
            };
            if let Some(placed) = placed {
                let _ = compare_delete(&mut client, &placed.key, placed.rev).await;
            }
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
        Compare::create_revision(self.placed.key.as_str(), CompareOp::Equal, self.placed.rev)
    }

    /// Asks etcd whether our incarnation of the key still exists.
    pub(crate) async fn exists(&self) -> Result<bool> {
        let resp = self
            .client
            .clone()
            .get(self.placed.key.as_str(), None)
            .await?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == self.placed.rev))
    }

    /// Compare-and-deletes the key; returns whether it was still ours. After this call
    /// (whatever it returns) the destructor does nothing.
    pub(crate) async fn delete(&mut self) -> Result<bool> {
        let deleted = compare_delete(&mut self.client, &self.placed.key, self.placed.rev).await;
        if deleted.is_ok() {
            self.deleted = true;
        }
        deleted
    }

    /// Like [`OwnedKey::delete`], failing with [`Error::OwnershipLost`] when the key
    /// was no longer ours.
    pub(crate) async fn release(mut self) -> Result<()> {
        if self.delete().await? {
            Ok(())
        } else {
            Err(Error::OwnershipLost(self.placed.key.clone()))
        }
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
        if self.deleted {
            return;
        }
        let (mut client, placed) = (self.client.clone(), self.placed.clone());
        spawn_cleanup(async move {
            let _ = compare_delete(&mut client, &placed.key, placed.rev).await;
        });
    }
}

/// Waits until no key under `blockers` (a directory prefix) was created before our key
/// `mine`: the RWMutex rule (a reader is blocked by older writers, a writer by every
/// older key). Each round reads our key and the newest older blocker in one txn, then
/// waits for that blocker to go (synced watch) and looks again.
///
/// Fails with [`Error::SessionExpired`] if our key disappears or the session is lost.
pub(crate) async fn wait_no_older(session: &Session, mine: &Placed, blockers: &str) -> Result<()> {
    until_lost(session, async {
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
