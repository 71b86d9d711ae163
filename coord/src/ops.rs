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
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchFilterType, WatchOptions,
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
    let mut backoff = Backoff::default();
    loop {
        // 1. Watch from now: a synced watcher, notified at commit time.
        let options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
        let mut stream = match client.watch_client().watch(key, Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        };
        match stream.message().await {
            Ok(Some(resp)) if resp.created() && !resp.canceled() => {}
            Ok(_) => {
                backoff.wait(&"watch was not created").await;
                continue;
            }
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        }
        // 2. Only now read: anything deleted before the watch started shows here.
        match client.get(key, None).await {
            Ok(resp) => match resp.kvs().first() {
                Some(kv) if kv.create_revision() == create_rev => {}
                _ => return Ok(()),
            },
            Err(e) => {
                backoff.wait(&e).await;
                continue;
            }
        }
        // 3. Wait for the delete event. A broken stream starts over at step 1.
        while let Ok(Some(resp)) = stream.message().await {
            if resp
                .events()
                .iter()
                .any(|ev| ev.event_type() == EventType::Delete)
            {
                return Ok(());
            }
            if resp.canceled() {
                break;
            }
        }
    }
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
