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
//!   ([`DeleteFeeds`]) that consecutive waits share. Besides saving a round trip, this
//!   sidesteps an etcd 3.5 race in which a watch "from now" that is registered while a
//!   write commits lands in the 100 ms unsynced group after all.
//!
//! The key layout is unchanged, so Go and coord waiters still queue behind each other
//! correctly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnResponse, WatchFilterType, WatchOptions, WatchStream,
};
use tokio::sync::{broadcast, watch, Notify, OwnedMutexGuard};
use tokio::time::sleep;
use tracing::debug;

use crate::key::{header_rev, show, txn_get, txn_rev};
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
/// [`DeleteFeeds`]; a live etcd watch), then read our key and the keys ahead of it
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

/// How often a feed checks whether anyone still listens.
const FEED_IDLE_CHECK: Duration = Duration::from_millis(500);
/// A feed nobody listened to for this many checks in a row is closed.
const FEED_IDLE_CHECKS: u32 = 2;

/// A session's live watches on the prefixes its waiters wait under, one per prefix,
/// shared by consecutive waits (a session that locks the same name again and again
/// keeps using one watch).
///
/// Why not open a watch per wait: a watch costs a round trip to create, and etcd
/// (3.5) puts a watch "from now" into its slow "unsynced" group — caught up only every
/// 100 ms — whenever a write commits while the watch is being registered (the
/// server takes the current revision before it takes the store lock). Under
/// contention writes are constant, so a few percent of fresh watches delivered their
/// delete ~100 ms late. A feed pays that at most once, when it is created.
///
/// A feed is an etcd watch for deletes under the prefix, run by a task of its own that
/// broadcasts each batch of deletes to the current subscribers. If the watch breaks,
/// subscribers are told to start over (their view may have missed deletes) and the
/// task opens a new watch. A feed nobody subscribed to for about a second closes; so
/// does one whose last user asks for it ([`Subscription::close`]).
#[derive(Default)]
pub(crate) struct DeleteFeeds {
    feeds: Arc<StdMutex<HashMap<String, Arc<Feed>>>>,
}

type FeedRegistry = StdMutex<HashMap<String, Arc<Feed>>>;

/// A key deleted under a watched prefix, at revision `rev`.
#[derive(Debug)]
pub(crate) struct Deleted {
    pub key: Vec<u8>,
    pub rev: i64,
}

#[derive(Clone, Debug)]
enum FeedMessage {
    Deleted(Arc<[Deleted]>),
    /// The watch broke; deletes may have been missed.
    Broken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FeedState {
    /// No watch in place (starting, or re-opening after a break).
    Opening,
    /// A watch is in place: every delete from now on is broadcast.
    Live,
    /// The task ended; subscribe to a new feed.
    Ended,
}

struct Feed {
    events: broadcast::Sender<FeedMessage>,
    state: watch::Receiver<FeedState>,
    close: Notify,
}

/// A waiter's place on a feed. Dropping it leaves the feed running for the next wait.
pub(crate) struct Subscription {
    feed: Arc<Feed>,
    events: broadcast::Receiver<FeedMessage>,
}

impl DeleteFeeds {
    /// Subscribes to the deletes under `prefix`, starting a feed if there is none, and
    /// returns once its watch is live: every delete committed after this returns is
    /// delivered. Waits as long as etcd cannot be watched (callers bound the wait).
    pub(crate) async fn subscribe(&self, client: &Client, prefix: &str) -> Subscription {
        loop {
            let (feed, events) = {
                let mut feeds = lock_registry(&self.feeds);
                let feed = feeds
                    .entry(prefix.to_owned())
                    .or_insert_with(|| Feed::start(client.clone(), prefix.to_owned(), &self.feeds))
                    .clone();
                // Subscribed under the registry lock: a feed only closes itself, under
                // the same lock, when it has no subscribers.
                let events = feed.events.subscribe();
                (feed, events)
            };
            let mut state = feed.state.clone();
            let state = state
                .wait_for(|s| *s != FeedState::Opening)
                .await
                .map(|s| *s)
                .unwrap_or(FeedState::Ended);
            if state == FeedState::Live {
                return Subscription { feed, events };
            }
            // The feed's task is gone (runtime shut down): forget it and start another.
            let mut feeds = lock_registry(&self.feeds);
            if feeds.get(prefix).is_some_and(|f| Arc::ptr_eq(f, &feed)) {
                feeds.remove(prefix);
            }
        }
    }
}

fn lock_registry(registry: &FeedRegistry) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Feed>>> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subscription {
    /// The next batch of deletes, in revision order; `None` when the feed broke or we
    /// fell behind it — deletes may have been missed, so the caller starts over.
    pub(crate) async fn next(&mut self) -> Option<Arc<[Deleted]>> {
        match self.events.recv().await {
            Ok(FeedMessage::Deleted(batch)) => Some(batch),
            Ok(FeedMessage::Broken) | Err(_) => None,
        }
    }

    /// Leaves the feed and closes it now if nobody else listens (instead of letting it
    /// run idle for a while).
    pub(crate) fn close(self) {
        let Subscription { feed, events } = self;
        drop(events);
        feed.close.notify_one();
    }
}

impl Feed {
    fn start(client: Client, prefix: String, registry: &Arc<FeedRegistry>) -> Arc<Feed> {
        let (events, _) = broadcast::channel(256);
        let (state_tx, state) = watch::channel(FeedState::Opening);
        let feed = Arc::new(Feed {
            events,
            state,
            close: Notify::new(),
        });
        let registry = Arc::downgrade(registry);
        tokio::spawn(run_feed(client, prefix, feed.clone(), state_tx, registry));
        feed
    }

    /// Ends the feed if nobody subscribes to it: removes it from the registry and
    /// marks it ended. Atomic with respect to [`DeleteFeeds::subscribe`].
    fn retire(
        self: &Arc<Feed>,
        prefix: &str,
        registry: &Weak<FeedRegistry>,
        state: &watch::Sender<FeedState>,
    ) -> bool {
        let Some(registry) = registry.upgrade() else {
            // The session is gone; nobody can subscribe any more.
            if self.events.receiver_count() > 0 {
                return false;
            }
            state.send_replace(FeedState::Ended);
            return true;
        };
        let mut feeds = lock_registry(&registry);
        if self.events.receiver_count() > 0 {
            return false;
        }
        if feeds.get(prefix).is_some_and(|f| Arc::ptr_eq(f, self)) {
            feeds.remove(prefix);
        }
        state.send_replace(FeedState::Ended);
        true
    }
}

/// What a feed's task waited for.
enum FeedStep {
    Opened(Result<WatchStream>),
    Message(std::result::Result<Option<etcd_client::WatchResponse>, etcd_client::Error>),
}

/// The task behind a [`Feed`]: keeps a watch for deletes under `prefix` open and
/// broadcasts what it reports, until nobody has listened for a while.
async fn run_feed(
    mut client: Client,
    prefix: String,
    feed: Arc<Feed>,
    state: watch::Sender<FeedState>,
    registry: Weak<FeedRegistry>,
) {
    let mut stream: Option<WatchStream> = None;
    let mut backoff = Backoff::default();
    let mut idle_checks = 0;
    let mut idle_check = tokio::time::interval(FEED_IDLE_CHECK);
    loop {
        let step = tokio::select! {
            _ = feed.close.notified() => {
                if feed.retire(&prefix, &registry, &state) {
                    break;
                }
                continue;
            }
            _ = idle_check.tick() => {
                if feed.events.receiver_count() > 0 {
                    idle_checks = 0;
                } else {
                    idle_checks += 1;
                    if idle_checks >= FEED_IDLE_CHECKS && feed.retire(&prefix, &registry, &state) {
                        break;
                    }
                }
                continue;
            }
            step = async {
                match stream.as_mut() {
                    None => FeedStep::Opened(open_watch(&mut client, prefix.as_bytes(), true).await),
                    Some(stream) => FeedStep::Message(stream.message().await),
                }
            } => step,
        };
        match step {
            FeedStep::Opened(Ok(opened)) => {
                stream = Some(opened);
                backoff = Backoff::default();
                state.send_replace(FeedState::Live);
            }
            FeedStep::Opened(Err(e)) => backoff.wait(&e).await,
            FeedStep::Message(Ok(Some(resp))) if !resp.canceled() => {
                let batch: Arc<[Deleted]> = resp
                    .events()
                    .iter()
                    .filter(|ev| ev.event_type() == EventType::Delete)
                    .filter_map(|ev| ev.kv())
                    .map(|kv| Deleted {
                        key: kv.key().to_vec(),
                        rev: kv.mod_revision(),
                    })
                    .collect();
                if !batch.is_empty() {
                    // No subscribers is fine: nobody is waiting right now.
                    let _ = feed.events.send(FeedMessage::Deleted(batch));
                }
            }
            FeedStep::Message(_) => {
                // Broken, ended or cancelled by etcd. State first, then the message: a
                // subscriber that still saw `Live` is subscribed and gets `Broken`.
                debug!(prefix, "delete feed's watch broke; re-opening");
                stream = None;
                state.send_replace(FeedState::Opening);
                let _ = feed.events.send(FeedMessage::Broken);
            }
        }
    }
    debug!(prefix, "delete feed closed");
}

/// Opens a watch for deletes of `key` (or of every key under it, with `prefix`) from
/// the current revision, and waits until etcd confirms it is in place: a delete
/// committed after this returns is reported.
async fn open_watch(client: &mut Client, key: &[u8], prefix: bool) -> Result<WatchStream> {
    let mut options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
    if prefix {
        options = options.with_prefix();
    }
    watch_from_now(client, key, options).await
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
/// could remove a newer incarnation of the same key — the same session took it again
/// after a release whose reply was lost, and the retried delete lands on the new one
/// (etcd issue 22082). When the lease expired the key is simply gone, and `false`
/// lets the caller report the lost ownership.
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
}

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
        }
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
        let (mut client, placed, local) =
            (self.client.clone(), self.placed.take(), self.local.take());
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
                let _ = compare_delete(&mut client, &placed.key, placed.rev).await;
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
