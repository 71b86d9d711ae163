//! A session's shared delete feeds: one live etcd watch per prefix its waiters wait
//! under, broadcasting each batch of deletes to the waits that subscribe (see
//! [`DeleteFeeds`] for why a watch is not opened per wait).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use etcd_client::{Client, EventType, WatchFilterType, WatchOptions, WatchStream};
use tokio::sync::{broadcast, watch, Notify};
use tracing::debug;

use super::retry::Backoff;
use super::watch::watch_from_now;
use crate::Result;

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
