//! Watching one key (or a prefix) from now, for the waits that are not a plain queue
//! of waiters: open a watch etcd has confirmed, wait for a key to reach a state, wait
//! for one incarnation of a key to go.
//!
//! A watch opened *from now* is served from etcd's synced group: it is notified at
//! commit time and cannot hit a compacted revision. Every wait here is watch-then-read,
//! and a watch that breaks is never taken as a change: the key is read again.

use etcd_client::{Client, EventType, KeyValue, WatchOptions, WatchStream};

use super::retry::Backoff;
use crate::Result;

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
