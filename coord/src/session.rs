//! Session: one etcd lease kept alive in the background — the liveness every other
//! primitive hangs its keys on.
//!
//! # Guarantees
//! - While [`Session::is_expired`] is false and `done()` has not resolved, the lease
//!   was confirmed alive by etcd less than one TTL ago.
//! - `done()` resolves when the lease is revoked or expires, **and also** when
//!   keepalives stop being acknowledged for a whole TTL (a silent stream, a network
//!   cut, a process paused by the OS). The local deadline is the time the last
//!   acknowledged keepalive was *sent* plus the TTL etcd granted (for a resumed lease,
//!   before its first acknowledged keepalive: the time `LeaseTimeToLive` was sent plus
//!   the remaining TTL it reported), so the session declares itself lost no later than
//!   etcd expires the lease.
//! - A broken keepalive stream is re-opened (with backoff) until the deadline passes.
//!
//! # Not guaranteed
//! - A lease is not a clock-free guarantee. A process that is paused longer than the
//!   TTL keeps running its code when it wakes; it only learns of the loss afterwards.
//!   That is why the locks hand out a fencing token: guard writes with it.
//!
//! # Key facts
//! - `Session` is a cheap `Clone` handle; the lease is kept alive until `close()`,
//!   `orphan()`, or until the last handle is dropped (then the keepalive stops and
//!   etcd expires the lease after its TTL — nothing is revoked from a destructor).
//!
//! # Go → coord
//! | etcd's Go `clientv3/concurrency` | coord |
//! |---|---|
//! | `NewSession(client, WithTTL(t), WithLease(id))` | [`Session::builder`]`(client).ttl(t).lease(id).build()` ([`Session::new`] for the defaults) |
//! | `Lease()` | [`Session::lease`] |
//! | `Client()` | [`Session::client`] |
//! | `Done()` | [`Session::done`] (and [`Session::is_expired`]) |
//! | `Orphan()` | [`Session::orphan`] |
//! | `Close()` | [`Session::close`] |

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use etcd_client::{Client, LeaseTimeToLiveOptions};
use tokio::sync::{watch, Mutex as AsyncMutex, Notify, OwnedMutexGuard};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::{debug, warn};

use crate::plumbing::delete_feed::DeleteFeeds;
use crate::{Error, Result};

/// The TTL a session asks for when none is given, as in Go's client.
pub const DEFAULT_TTL: i64 = 60;

/// A lease kept alive in the background. See the module docs.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    lease: i64,
    ttl: i64,
    /// Flips to `true` once, when the lease is known or presumed lost.
    lost: watch::Receiver<bool>,
    /// Stops the keepalive task (orphan, close, last handle dropped).
    stop: Arc<Notify>,
    /// Per-name local locks: two tasks that share a session and lock the same name
    /// would map to the same etcd key and both believe they own it (Go's client has
    /// this trap). Serialising them here first makes a shared session safe.
    local_locks: StdMutex<HashMap<String, Weak<AsyncMutex<()>>>>,
    /// Live watches its waiters share (see `plumbing::delete_feed`).
    delete_feeds: DeleteFeeds,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// Builds a [`Session`]: `Session::builder(client).ttl(10).build().await`.
pub struct SessionBuilder {
    client: Client,
    ttl: i64,
    lease: Option<i64>,
}

impl SessionBuilder {
    /// Lease TTL in seconds (etcd rounds very small TTLs up to its minimum, about 2 s
    /// with default settings). Default [`DEFAULT_TTL`].
    pub fn ttl(mut self, seconds: i64) -> Self {
        self.ttl = seconds;
        self
    }

    /// Resume an existing lease (for example one a previous process orphaned)
    /// instead of granting a new one. Fails with [`Error::SessionExpired`] if it is gone.
    pub fn lease(mut self, id: i64) -> Self {
        self.lease = Some(id);
        self
    }

    /// Grants (or checks) the lease and starts keeping it alive.
    pub async fn build(self) -> Result<Session> {
        if self.ttl <= 0 {
            return Err(Error::InvalidArgument(format!(
                "session TTL must be positive, got {}",
                self.ttl
            )));
        }
        let mut client = self.client;
        let sent = Instant::now();
        // `remaining`: what etcd still gives the lease now. A resumed lease may be close
        // to expiry, so the local deadline starts from its remaining TTL, not the
        // granted one (else the session could believe it is alive after etcd expired it).
        let (lease, ttl, remaining) = match self.lease {
            Some(id) => {
                let resp = client
                    .lease_time_to_live(id, Option::<LeaseTimeToLiveOptions>::None)
                    .await?;
                if resp.ttl() <= 0 {
                    return Err(Error::SessionExpired(id));
                }
                (id, resp.granted_ttl().max(1), resp.ttl())
            }
            None => {
                let resp = client.lease_grant(self.ttl, None).await?;
                (resp.id(), resp.ttl(), resp.ttl())
            }
        };
        let (lost_tx, lost_rx) = watch::channel(false);
        let stop = Arc::new(Notify::new());
        tokio::spawn(keep_alive(
            client.clone(),
            lease,
            ttl,
            sent + Duration::from_secs(remaining as u64),
            lost_tx,
            stop.clone(),
        ));
        debug!(lease = format_args!("{lease:x}"), ttl, "session started");
        Ok(Session {
            inner: Arc::new(Inner {
                client,
                lease,
                ttl,
                lost: lost_rx,
                stop,
                local_locks: StdMutex::new(HashMap::new()),
                delete_feeds: Default::default(),
            }),
        })
    }
}

impl Session {
    /// A session with a fresh lease of [`DEFAULT_TTL`] seconds.
    pub async fn new(client: Client) -> Result<Session> {
        Self::builder(client).build().await
    }

    /// Options: TTL, resuming a lease.
    pub fn builder(client: Client) -> SessionBuilder {
        SessionBuilder {
            client,
            ttl: DEFAULT_TTL,
            lease: None,
        }
    }

    /// The etcd client this session uses (a cheap clone).
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The lease id.
    pub fn lease(&self) -> i64 {
        self.inner.lease
    }

    /// The TTL etcd granted, in seconds.
    pub fn ttl(&self) -> i64 {
        self.inner.ttl
    }

    /// True once the lease is known or presumed lost.
    pub fn is_expired(&self) -> bool {
        *self.inner.lost.borrow()
    }

    /// Resolves when the lease is lost (revoked, expired, or not confirmed for a TTL),
    /// and also once the session is closed or orphaned (it keeps nothing alive any
    /// more). Resolves immediately if it already is. The future owns what it needs, so it can
    /// be moved into a `select!` or a task.
    pub fn done(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut lost = self.inner.lost.clone();
        async move {
            // An error means the keepalive task is gone, which only happens once it
            // has published `true` or been stopped (orphan/close): both end liveness.
            let _ = lost.wait_for(|lost| *lost).await;
        }
    }

    /// Fails fast with [`Error::SessionExpired`] when the session is already lost.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.is_expired() {
            Err(Error::SessionExpired(self.lease()))
        } else {
            Ok(())
        }
    }

    /// Stops keeping the lease alive without revoking it: the keys stay until the
    /// TTL runs out, or until another process resumes the lease with
    /// [`SessionBuilder::lease`].
    pub fn orphan(&self) {
        self.inner.stop.notify_one();
    }

    /// Stops the keepalive and revokes the lease, deleting every key attached to it
    /// (locks held, election candidacy, ephemeral queue keys) at once.
    pub async fn close(self) -> Result<()> {
        self.inner.stop.notify_one();
        match self
            .inner
            .client
            .clone()
            .lease_revoke(self.inner.lease)
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: closing an expired session is not an error.
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("not found") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The session's shared watches for waiters (see `plumbing::delete_feed`).
    pub(crate) fn delete_feeds(&self) -> &DeleteFeeds {
        &self.inner.delete_feeds
    }

    /// Runs `fut` unless the session is lost first, in which case it is dropped and
    /// [`Error::SessionExpired`] returned.
    pub(crate) async fn until_lost<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let lost = self.done();
        tokio::select! {
            result = fut => result,
            _ = lost => Err(Error::SessionExpired(self.lease())),
        }
    }

    /// Waits for the local lock of `key` (see [`Session::local_lock`]), unless the
    /// session is lost first ([`Error::SessionExpired`]): the same-session holder may
    /// never let go, and a waiter must not outlive its session.
    pub(crate) async fn lock_locally(&self, key: &str) -> Result<OwnedMutexGuard<()>> {
        let local = self.local_lock(key);
        self.until_lost(async { Ok(local.lock_owned().await) })
            .await
    }

    /// The local lock that serialises same-name users of this session (see `Inner`).
    pub(crate) fn local_lock(&self, key: &str) -> Arc<AsyncMutex<()>> {
        let mut map = self
            .inner
            .local_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let fresh = Arc::new(AsyncMutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&fresh));
        fresh
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.inner.lease))
            .field("ttl", &self.inner.ttl)
            .field("expired", &self.is_expired())
            .finish()
    }
}

/// Keeps `lease` alive until stopped or lost.
///
/// Protocol: every TTL/3, send one keepalive on the stream and wait for its answer.
/// An answer with TTL > 0 moves the deadline to (send time + TTL). An answer with
/// TTL ≤ 0 means etcd no longer has the lease. A stream that errors or ends is
/// re-opened after a short backoff. If the deadline passes first, the lease is
/// presumed lost: etcd will have expired it by then.
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: i64,
    mut deadline: Instant,
    lost: watch::Sender<bool>,
    stop: Arc<Notify>,
) {
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
    let mut backoff = Duration::from_millis(50);
    let outcome = 'session: loop {
        #[cfg(feature = "test-hooks")]
        if crate::test_hooks::keepalives_silenced(lease) {
            tokio::select! {
                _ = stop.notified() => break 'session "stopped",
                _ = sleep_until(deadline) => break 'session "keepalive not acknowledged within TTL",
            }
        }
        let opened = tokio::select! {
            _ = stop.notified() => break 'session "stopped",
            _ = sleep_until(deadline) => break 'session "deadline passed while reconnecting",
            opened = client.lease_keep_alive(lease) => opened,
        };
        let (mut keeper, mut stream) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                debug!(error = %e, "keepalive stream could not be opened; retrying");
                tokio::select! {
                    _ = stop.notified() => break 'session "stopped",
                    _ = sleep_until(deadline) => break 'session "deadline passed while reconnecting",
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        loop {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                continue 'session;
            }
            let answer = tokio::select! {
                _ = stop.notified() => break 'session "stopped",
                _ = sleep_until(deadline) => break 'session "keepalive not acknowledged within TTL",
                answer = timeout(period, stream.message()) => answer,
            };
            match answer {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    deadline = sent + Duration::from_secs(resp.ttl() as u64);
                    backoff = Duration::from_millis(50);
                }
                Ok(Ok(Some(_))) => break 'session "etcd reports the lease expired or revoked",
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    // Stream ended, failed, or is silent: open a new one.
                    debug!("keepalive stream broke; re-opening");
                    continue 'session;
                }
            }
            tokio::select! {
                _ = stop.notified() => break 'session "stopped",
                _ = sleep(period) => {}
            }
        }
    };
    if outcome == "stopped" {
        debug!(lease = format_args!("{lease:x}"), "keepalive stopped");
        // Orphaned or closed: liveness is no longer maintained by this process.
    } else {
        warn!(
            lease = format_args!("{lease:x}"),
            reason = outcome,
            "session lost"
        );
    }
    let _ = lost.send(true);
}
