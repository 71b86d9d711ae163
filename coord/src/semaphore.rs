//! Semaphore: `N` permits shared by sessions; a permit dies with its session.
//!
//! etcd's Go client has no semaphore (Curator's `InterProcessSemaphoreV2` and
//! Redisson's `RSemaphore` do); this is coord's own design on the same building
//! blocks as the mutex, so it inherits its guarantees.
//!
//! # Protocol
//! - Key layout: one key per acquisition, `<name>/<lease id hex>_<unique>`, attached to
//!   the session's lease (`<unique>` is the wall clock in nanoseconds; a collision
//!   retries). Its value is the permit count `N` in decimal; its create revision is its
//!   place in line. Several permits of one session are several keys.
//! - A key **holds a permit** while fewer than `N` keys under `<name>/` are older than
//!   it: the `N` oldest keys hold the permits, everyone else waits in FIFO order. A
//!   key's number of older keys only shrinks (new keys are always younger), so once a
//!   key holds a permit it keeps it until it is deleted.
//! - Waiting without a thundering herd or polling: the *first* waiter (exactly `N`
//!   older keys) watches the directory for deletes, since any holder leaving frees its
//!   permit. Every later waiter watches only the key just ahead of it. When a waiter
//!   becomes a holder it rewrites its key once (same value, same lease), which wakes
//!   the next waiter to become the new first waiter. Each watch is opened from the
//!   current revision and followed by a read (no missed event, no compaction issue).
//! - Release deletes our key, only our incarnation of it (compare create revision).
//!
//! # Permit count agreement
//! `N` is not stored separately: every key carries it. On entry a caller reads all keys
//! of the semaphore in the same transaction that creates its own; if any of them says
//! a different `N`, the caller removes its key and fails with
//! [`Error::InvalidArgument`]. So of two users that disagree, the one that arrives later
//! gets the error; users that already hold or wait are unaffected. Once every key is
//! gone, the next user may pick a new `N`.
//!
//! # Guarantees
//! - At most `N` keys hold a permit at any revision.
//! - `acquire()` never returns a permit whose key is gone: if the key disappears while
//!   waiting, or the session is lost, it fails with [`Error::SessionExpired`].
//! - Permits are released by [`Permit::release`], by dropping the [`Permit`] (in the
//!   background) and, if the process dies, when its session's lease expires.
//! - Cancel-safe: dropping `acquire()` (timeout, `select!`) removes its key, also when
//!   the put is still in flight; nobody queues behind an abandoned waiter.
//!
//! # Not guaranteed
//! The lease caveat of every lock: a holder paused longer than its TTL loses its permit
//! while it still runs, so briefly `N + 1` processes may believe they hold one. Guard
//! writes with [`Permit::is_owner`] or store [`Permit::fencing_token`] with them.
//!
//! # Go → coord
//! etcd's Go client has no semaphore (neither `concurrency` nor the recipes): there is
//! nothing to map; see the protocol above for the key layout.

use etcd_client::{
    Compare, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchFilterType,
    WatchOptions, WatchStream,
};
use tracing::{debug, field, info_span, Instrument, Span};

use crate::metrics::{LockHold, LockWait};
use crate::ownership::owned::{create_unique, OwnedKey, PendingPut, Placed};
use crate::plumbing::key::{dir_prefix, show, txn_get, unix_nanos};
use crate::plumbing::retry::{retrying, Backoff};
use crate::plumbing::watch::watch_from_now;
use crate::txn::create_rev_is;
use crate::{Error, Result, Session};

/// A named counting semaphore with `permits` permits, bound to a session.
#[derive(Clone, Debug)]
pub struct Semaphore {
    session: Session,
    prefix: String,
    permits: usize,
    /// What every key of this semaphore stores: the permit count in decimal.
    value: String,
}

/// What a waiter has to wait for, decided from one read.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// Fewer than N keys are older than ours: we hold a permit.
    Holding,
    /// Exactly N older keys, all holders: any of them leaving frees a permit for us.
    FirstWaiter,
    /// More than N older keys: wait for the key just ahead of ours to change (deleted,
    /// or rewritten when it becomes a holder).
    Behind { key: Vec<u8>, rev: i64 },
}

impl Semaphore {
    /// A semaphore named `name` (keys live under `name/`) with `permits` permits.
    /// Fails with [`Error::InvalidArgument`] for an empty name or zero permits.
    pub fn new(session: &Session, name: &str, permits: usize) -> Result<Semaphore> {
        if permits == 0 {
            return Err(Error::InvalidArgument(
                "a semaphore needs at least 1 permit".into(),
            ));
        }
        Ok(Semaphore {
            session: session.clone(),
            prefix: dir_prefix(name)?,
            permits,
            value: permits.to_string(),
        })
    }

    /// The number of permits.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Waits for a permit (FIFO among waiters). See the module docs.
    pub async fn acquire(&self) -> Result<Permit> {
        self.take(true).await
    }

    /// Takes a permit if one is free right now and nobody waits ahead of us; else
    /// fails with [`Error::Locked`] at once, leaving no key behind.
    pub async fn try_acquire(&self) -> Result<Permit> {
        self.take(false).await
    }

    /// How many permits are taken right now (a snapshot, stale on arrival).
    pub async fn in_use(&self) -> Result<usize> {
        let resp = self
            .session
            .client()
            .get(
                self.prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok(usize::try_from(resp.count()).unwrap_or(0).min(self.permits))
    }

    async fn take(&self, wait: bool) -> Result<Permit> {
        let span = info_span!(
            "coord.semaphore.acquire",
            prefix = %self.prefix,
            permits = self.permits,
            wait,
            key = field::Empty,
            fencing_token = field::Empty,
        );
        let timer = LockWait::start("semaphore");
        let waited = async {
            self.session.check_alive()?;
            let mut pending = self.enter();
            let (mine, everyone) = pending.placed().await?;
            Span::current().record("key", mine.key.as_str());
            Span::current().record("fencing_token", mine.rev);
            self.check_agreement(&everyone)?;
            let older = everyone
                .iter()
                .take_while(|kv| kv.key() != mine.key.as_bytes())
                .count();
            if older >= self.permits {
                if !wait {
                    return Err(Error::Locked(self.prefix.clone())); // drops our key
                }
                self.wait_for_permit(&mine).await?;
            }
            Ok(pending.keep())
        }
        .instrument(span)
        .await;
        let (mine, timing) = timer.finish(waited)?;
        Ok(self.permit(mine, timing))
    }

    /// Starts putting our key; the same txn reads every key of the semaphore (oldest
    /// first, with values) for the agreement check and our position.
    fn enter(&self) -> PendingPut<Vec<KeyValue>> {
        let (session, prefix, value) = (
            self.session.clone(),
            self.prefix.clone(),
            self.value.clone(),
        );
        let lease = self.session.lease();
        let oldest_first = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let reads = [TxnOp::get(prefix.as_str(), Some(oldest_first))];
        PendingPut::start(self.session.client(), async move {
            let (placed, resp) = create_unique(
                &session,
                || format!("{prefix}{lease:x}_{}", unix_nanos()),
                value.as_bytes(),
                &reads,
            )
            .await?;
            let everyone = txn_get(&resp, 1)
                .map(|g| g.kvs().to_vec())
                .unwrap_or_default();
            Ok((placed, everyone))
        })
    }

    /// Fails if any key of the semaphore was written with a different permit count.
    fn check_agreement(&self, everyone: &[KeyValue]) -> Result<()> {
        match everyone
            .iter()
            .find(|kv| kv.value() != self.value.as_bytes())
        {
            Some(other) => Err(Error::InvalidArgument(format!(
                "semaphore {} is in use with {:?} permits (key {}), but this handle has {}",
                self.prefix.trim_end_matches('/'),
                show(other.value()),
                show(other.key()),
                self.permits
            ))),
            None => Ok(()),
        }
    }

    /// Waits until fewer than N keys are older than ours, then tells the waiter behind
    /// us (if any) by rewriting our key.
    async fn wait_for_permit(&self, mine: &Placed) -> Result<()> {
        self.session.until_lost(async {
            let mut client = self.session.client();
            let mut backoff = Backoff::default();
            let mut turn = self.turn(mine).await?;
            loop {
                let (watched, options) = match &turn {
                    Turn::Holding => break,
                    Turn::FirstWaiter => (
                        self.prefix.as_bytes().to_vec(),
                        WatchOptions::new()
                            .with_prefix()
                            .with_filters([WatchFilterType::NoPut]),
                    ),
                    Turn::Behind { key, .. } => (key.clone(), WatchOptions::new()),
                };
                debug!(turn = ?turn_label(&turn), watched = %show(&watched), "waiting for a permit");
                let mut stream = watch_from_now(&mut client, &watched, options).await?;
                // Read only once the watch exists: a change before this read shows in
                // it, a change after it on the watch.
                let fresh = self.turn(mine).await?;
                if fresh == turn {
                    next_change(&mut stream, &mut backoff).await;
                    turn = self.turn(mine).await?;
                } else {
                    turn = fresh;
                }
            }
            // We became a holder: wake whoever watches our key from behind.
            let touch = Txn::new()
                .when([create_rev_is(mine.key.as_str(), mine.rev)])
                .and_then([TxnOp::put(
                    mine.key.as_str(),
                    self.value.as_str(),
                    Some(PutOptions::new().with_lease(self.session.lease())),
                )]);
            if client.txn(touch).await?.succeeded() {
                Ok(())
            } else {
                Err(Error::SessionExpired(self.session.lease()))
            }
        })
        .await
    }

    /// One read: our key and up to N+1 keys older than it, newest first.
    async fn turn(&self, mine: &Placed) -> Result<Turn> {
        let limit = i64::try_from(self.permits)
            .unwrap_or(i64::MAX - 2)
            .saturating_add(2);
        let options = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(mine.rev)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(limit)
            .with_keys_only();
        let client = self.session.client();
        let resp = retrying(|| {
            let (mut client, options) = (client.clone(), options.clone());
            async move { client.get(self.prefix.as_str(), Some(options)).await }
        })
        .await?;
        let kvs = resp.kvs();
        match kvs.first() {
            Some(kv) if kv.create_revision() == mine.rev => {}
            _ => return Err(Error::SessionExpired(self.session.lease())),
        }
        let older = kvs.len() - 1;
        Ok(if older < self.permits {
            Turn::Holding
        } else if older == self.permits {
            Turn::FirstWaiter
        } else {
            Turn::Behind {
                key: kvs[1].key().to_vec(),
                rev: kvs[1].create_revision(),
            }
        })
    }

    fn permit(&self, mine: Placed, timing: LockHold) -> Permit {
        let hold = info_span!(
            "coord.semaphore.hold",
            key = %mine.key,
            fencing_token = mine.rev
        );
        Permit {
            session: self.session.clone(),
            key: OwnedKey::new(self.session.client(), mine),
            _hold: hold,
            _timing: timing,
        }
    }
}

fn turn_label(turn: &Turn) -> &'static str {
    match turn {
        Turn::Holding => "holding",
        Turn::FirstWaiter => "first waiter",
        Turn::Behind { .. } => "behind another waiter",
    }
}

/// One permit of a [`Semaphore`]. Release with [`Permit::release`]; if dropped instead,
/// the key is deleted in the background (or expires with the lease).
#[derive(Debug)]
pub struct Permit {
    session: Session,
    key: OwnedKey,
    _hold: Span,
    /// Records `coord_lock_hold_seconds` when the permit goes.
    _timing: LockHold,
}

impl Permit {
    /// The fencing token: the create revision of our key, larger than that of every
    /// permit acquired before ours was requested.
    pub fn fencing_token(&self) -> i64 {
        self.key.rev()
    }

    /// Our key (`<name>/<lease hex>_<unique>`).
    pub fn key(&self) -> &str {
        self.key.key()
    }

    /// The session the permit is held under.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A txn comparison that is true only while we still hold the permit.
    pub fn is_owner(&self) -> Compare {
        self.key.is_owner()
    }

    /// Asks etcd whether our key is still there (stale on arrival; prefer
    /// [`Permit::is_owner`] in a txn).
    pub async fn is_held(&self) -> Result<bool> {
        self.key.exists().await
    }

    /// Gives the permit back. Fails with [`Error::OwnershipLost`] if our key was already
    /// gone (the lease expired and someone else may have our permit now).
    pub async fn release(self) -> Result<()> {
        self.key.release().await
    }
}

/// Waits until the next response with events arrives on `stream`, or the stream ends,
/// breaks or is canceled. Callers re-read etcd afterwards, so every outcome is just a
/// hint to look again; a stream that ends without events is followed by a short
/// backoff so that a flapping connection cannot make the caller spin.
async fn next_change(stream: &mut WatchStream, backoff: &mut Backoff) {
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
