//! The etcd operations the queue-of-waiters primitives (Mutex, Election)
//! share: enter the queue, wait for your turn, leave it.
//!
//! # How a waiter waits (and why coord is faster than Go's client here)
//! Go's client watches its predecessor key *from an old revision*. etcd serves such a
//! watch from its "unsynced" group, which it catches up only every 100 ms, so each
//! lock hand-off costs ~100 ms. coord instead watches *from now* (the synced group,
//! notified as soon as the delete commits) and only then reads who is ahead.
//! Watch-then-read closes the race the old revision was there for: a delete before
//! the read is seen by the read, a delete after it by the watch.
//!
//! Two refinements make a hand-off cost no request at all (see [`wait_for_turn`]):
//! - the waiter reads *every* key ahead of it (up to [`FOLLOW_AHEAD`]) and counts them
//!   off as their deletes arrive, instead of reading again after each delete;
//! - the watch is not opened per wait: each session keeps one watch per prefix
//!   ([`DeleteFeeds`](crate::plumbing::delete_feed::DeleteFeeds)) that consecutive waits share. Besides saving a round trip, this
//!   sidesteps an etcd 3.5 race in which a watch "from now" that is registered while a
//!   write commits lands in the 100 ms unsynced group after all.
//!
//! The key layout is unchanged, so Go and coord waiters still queue behind each other
//! correctly.

use std::collections::HashSet;

use etcd_client::{GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use tokio::sync::OwnedMutexGuard;
use tracing::debug;

use super::owned::{compare_delete, spawn_cleanup, PendingPut, Placed};
use crate::plumbing::delete_feed::Subscription;
use crate::plumbing::key::{header_rev, show, txn_get, txn_rev};
use crate::plumbing::retry::retrying;
use crate::plumbing::watch::wait_deleted;
use crate::txn::key_missing;
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
        .when([key_missing(key)])
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

/// A waiter key being entered (Mutex, Election): [`enter`] run as a [`PendingPut`],
/// carrying the session's local lock for the key (see `Session::local_lock`), which is
/// released only once the key is settled, so the next same-session user starts clean.
pub(crate) struct PendingKey(PendingPut<Entered>);

impl PendingKey {
    /// Prepares [`enter`] for `key` under `prefix` with `value`; [`PendingKey::entered`]
    /// runs it.
    pub(crate) fn start(
        session: &Session,
        prefix: &str,
        key: &str,
        value: Vec<u8>,
        local: OwnedMutexGuard<()>,
    ) -> PendingKey {
        let (task_session, prefix, task_key) = (session.clone(), prefix.to_owned(), key.to_owned());
        PendingKey(
            PendingPut::start(session.client(), async move {
                let entered = enter(&task_session, &prefix, &task_key, &value).await?;
                let placed = Placed {
                    key: task_key,
                    rev: entered.rev,
                };
                Ok((placed, entered))
            })
            .with_local(local),
        )
    }

    /// Runs the put to completion and returns where we entered. Called once.
    pub(crate) async fn entered(&mut self) -> Result<Entered> {
        Ok(self.0.placed().await?.1)
    }

    /// Deletes the entered key now (compare-and-delete) and frees the local lock after.
    /// If this is cancelled or fails, dropping `self` still removes the key in the
    /// background.
    pub(crate) async fn remove(self) -> Result<()> {
        self.0.remove().await
    }

    /// Keeps the key (it now belongs to a guard) and hands over the local lock, which
    /// the guard must hold until it releases the key.
    pub(crate) fn keep(self) -> Option<OwnedMutexGuard<()>> {
        self.0.keep_with_local().1
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

/// How many keys ahead of ours a waiter follows itself. Up to this many, the
/// session's delete feed for the prefix and the waiter's own bookkeeping replace a
/// read per hand-off; a waiter further back waits for its predecessor alone (as Go's
/// client does), so a long line does not make every release an event for every waiter.
const FOLLOW_AHEAD: usize = 16;

/// Waits until every key under `prefix` created before `my_rev` is gone, i.e. until
/// the waiter whose key has create revision `my_rev` is first in line.
///
/// Fails with [`Error::SessionExpired`] if our own key disappears while we wait
/// (lease expired or revoked): a waiter must never report success without its key.
/// Also returns early with that error when the session is lost.
///
/// How: subscribe to the session's feed of deletes under the prefix (see
/// [`DeleteFeeds`](crate::plumbing::delete_feed::DeleteFeeds); a live etcd watch), then read our key and the keys ahead of it
/// (created before it, newest first) at some revision R. Nothing can join ahead of us
/// later — a new key gets a newer create revision — so the keys ahead can only leave.
/// Each delete after R removes one of them; when none is left we are first, with no
/// read on the hand-off path. The feed delivers deletes in revision order and covers
/// our own key too, so "the last one ahead left at revision D and our key was still
/// there at D" is exactly what a read at D would have said. With more than
/// [`FOLLOW_AHEAD`] keys ahead: wait for the nearest one to go, then look again.
pub(crate) async fn wait_for_turn(session: &Session, prefix: &str, my_rev: i64) -> Result<()> {
    let lost = session.done();
    tokio::pin!(lost);
    let turn = async {
        let mut client = session.client();
        let mut feed: Option<Subscription> = None;
        let mut long_line = false;
        loop {
            // 1. Deletes under the prefix from now on (unless we only wait for the
            //    predecessor, in a long line).
            if feed.is_none() && !long_line {
                feed = Some(session.delete_feeds().subscribe(&client, prefix).await);
            }
            // 2. Our key and the keys ahead of it, newest first (ours must be first).
            let options = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(my_rev)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(FOLLOW_AHEAD as i64 + 2)
                .with_keys_only();
            let resp = retrying(|| {
                let mut client = client.clone();
                let options = options.clone();
                async move { client.get(prefix, Some(options)).await }
            })
            .await?;
            let read_rev = header_rev(resp.header());
            let kvs = resp.kvs();
            let own_key = match kvs.first() {
                Some(kv) if kv.create_revision() == my_rev => kv.key(),
                _ => return Err(Error::SessionExpired(session.lease())),
            };
            let ahead = &kvs[1..];
            let Some(predecessor) = ahead.first() else {
                return Ok(());
            };
            if ahead.len() > FOLLOW_AHEAD {
                if let Some(feed) = feed.take() {
                    feed.close();
                }
                long_line = true;
                debug!(
                    predecessor = %show(predecessor.key()),
                    "long line: waiting for the predecessor alone"
                );
                wait_deleted(
                    &mut client,
                    predecessor.key(),
                    predecessor.create_revision(),
                )
                .await?;
                continue;
            }
            let Some(deletes) = feed.as_mut() else {
                // Short enough now, but the read came before any feed: subscribe, re-read.
                long_line = false;
                continue;
            };
            // 3. Follow the deletes until nobody is ahead.
            debug!(
                ahead = ahead.len(),
                predecessor = %show(predecessor.key()),
                "waiting for the keys ahead to go"
            );
            let mut waiting_for: HashSet<&[u8]> = ahead.iter().map(|kv| kv.key()).collect();
            while let Some(batch) = deletes.next().await {
                for deleted in batch.iter().filter(|d| d.rev > read_rev) {
                    if deleted.key == own_key {
                        return Err(Error::SessionExpired(session.lease()));
                    }
                    waiting_for.remove(deleted.key.as_slice());
                }
                // Checked only after the whole batch: a delete of our own key in the
                // same batch wins.
                if waiting_for.is_empty() {
                    return Ok(());
                }
            }
            // The feed broke or we fell behind it: start over with a fresh read.
            debug!("delete feed interrupted; reading again");
            feed = None;
        }
    };
    tokio::select! {
        result = turn => result,
        _ = &mut lost => Err(Error::SessionExpired(session.lease())),
    }
}
