//! DoubleBarrier: a group of exactly `count` participants enters together and leaves
//! together.
//!
//! # Protocol (etcd Go recipe `DoubleBarrier`, same keys, so Go and coord participants
//! share a barrier)
//! - Each participant that calls [`DoubleBarrier::enter`] puts a waiter key
//!   `<name>/waiters/<unique>` attached to its session's lease (`<unique>` is the wall
//!   clock in nanoseconds, Go's format; a collision retries with a fresh one). The
//!   create revision orders the participants.
//! - The participant whose key is the `count`-th one puts `<name>/ready` (no lease, as
//!   in Go). Everyone else waits for that put. Passing `enter` therefore means: `count`
//!   participants had registered.
//! - [`DoubleBarrierGuard::leave`]: the participant with the *lowest* key waits until
//!   every other member's key is gone (it waits for the highest, then looks again);
//!   every other member deletes its own key and waits for the lowest to go. The lowest,
//!   when it is the only one left, deletes `ready` and its own key in one transaction.
//!   So nobody returns from `leave` before everyone has called it.
//!
//! # When is a participant "too many"? ([`Error::TooManyClients`])
//! As in Go: if `count` participants are already registered before we register, or if
//! after registering our key is later than the `count`-th. coord adds one rule: a
//! **round in progress** (its `ready` key was put after the oldest waiter still
//! registered, i.e. the members have entered and not all left yet) rejects newcomers
//! until its last member has left. Go would let a newcomer register while a round is
//! leaving and count it in both rounds. A `ready` key with no older waiter (left behind
//! by a participant that died or gave up while leaving) is stale and ignored.
//!
//! # Session loss
//! - A participant whose session dies *while waiting in `enter`* loses its key; its
//!   `enter` fails with [`Error::SessionExpired`], and the barrier needs another
//!   participant to reach `count`.
//! - A participant whose session dies *between `enter` and `leave`* (or during
//!   `leave`) loses its key, which for everyone else counts as having left: the other
//!   members' `leave` completes without it. Its own `leave` fails with
//!   [`Error::SessionExpired`]. If the lowest member dies, the next lowest takes over.
//! - If a participant dies just after it registered as the `count`-th but before it put
//!   `ready`, the others keep waiting (as in Go) until another participant arrives.
//!
//! # Cancellation (what remains when a future or guard is dropped)
//! - `enter()` dropped: our waiter key is deleted in the background (after an in-flight
//!   put lands). If we had already put `ready`, the other members pass `enter` and
//!   treat us as having left.
//! - `leave()` dropped, or the guard dropped without `leave()`: our waiter key is deleted
//!   in the background, i.e. we leave without waiting for the others. If we were the last
//!   member, the `ready` key stays behind — harmless, see above.
//!
//! # Not guaranteed
//! The usual lease caveat: a participant paused longer than its TTL is dropped from the
//! barrier while it may still run.
//!
//! # Go → coord
//! | etcd's Go `contrib/recipes` | coord |
//! |---|---|
//! | `NewDoubleBarrier(s, key, count)` | [`DoubleBarrier::new`] |
//! | `Enter()` | [`DoubleBarrier::enter`] → [`DoubleBarrierGuard`] |
//! | `Leave()` | [`DoubleBarrierGuard::leave`] |

use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnResponse};
use tracing::{debug, field, info_span, Instrument, Span};

use crate::ownership::owned::{create_unique, OwnedKey, PendingPut, Placed, Release};
use crate::plumbing::key::{dir_prefix, show, txn_get, txn_rev, unix_nanos};
use crate::plumbing::retry::retrying;
use crate::plumbing::watch::{wait_deleted, wait_key};
use crate::txn::{create_rev_is, mod_rev_is};
use crate::{Error, Result, Session};

/// A double barrier for `count` participants, bound to a session. Cheap to create.
#[derive(Clone, Debug)]
pub struct DoubleBarrier {
    session: Session,
    name: String,
    ready_key: String,
    /// `<name>/waiters/`
    waiters_dir: String,
    count: usize,
}

/// What `<name>/ready` and the waiter keys looked like at one revision.
struct Snapshot {
    /// Mod revision of the ready key, if it exists.
    ready: Option<i64>,
    /// Waiter keys, oldest first.
    waiters: Vec<KeyValue>,
}

impl Snapshot {
    /// Reads the results of [`DoubleBarrier::snapshot_reads`] at `first` in a txn.
    fn from_txn(resp: &TxnResponse, first: usize) -> Snapshot {
        let ready = txn_get(resp, first).and_then(|g| g.kvs().first().map(|kv| kv.mod_revision()));
        let waiters = txn_get(resp, first + 1)
            .map(|g| g.kvs().to_vec())
            .unwrap_or_default();
        Snapshot { ready, waiters }
    }

    /// A round is in progress when `ready` was put after a waiter that is still there
    /// (other than `except`, our own fresh key).
    fn round_in_progress(&self, except: Option<&str>) -> bool {
        let Some(ready) = self.ready else {
            return false;
        };
        self.waiters
            .iter()
            .filter(|kv| except.is_none_or(|k| kv.key() != k.as_bytes()))
            .any(|kv| kv.create_revision() < ready)
    }
}

impl DoubleBarrier {
    /// A double barrier named `name` for `count` participants. Fails with
    /// [`Error::InvalidArgument`] for an empty name or a count of 0.
    pub fn new(session: &Session, name: &str, count: usize) -> Result<DoubleBarrier> {
        if count == 0 {
            return Err(Error::InvalidArgument(
                "a double barrier needs a count of at least 1".into(),
            ));
        }
        let prefix = dir_prefix(name)?;
        Ok(DoubleBarrier {
            session: session.clone(),
            name: prefix.trim_end_matches('/').to_owned(),
            ready_key: format!("{prefix}ready"),
            waiters_dir: format!("{prefix}waiters/"),
            count,
        })
    }

    /// How many participants the barrier waits for.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The key whose put releases `enter` (`<name>/ready`).
    pub fn ready_key(&self) -> &str {
        &self.ready_key
    }

    /// Registers as a participant and waits until `count` participants have. See the
    /// module docs for [`Error::TooManyClients`], session loss and cancellation.
    pub async fn enter(&self) -> Result<DoubleBarrierGuard> {
        let span = info_span!(
            "coord.double_barrier.enter",
            name = %self.name,
            count = self.count,
            key = field::Empty,
        );
        async {
            self.session.check_alive()?;
            let mut client = self.session.client();
            // Go's early check: don't even register if the barrier is full.
            let reads = self.snapshot_reads();
            let txn = Txn::new().and_then(reads.clone());
            let resp = retrying(|| {
                let (mut client, txn) = (client.clone(), txn.clone());
                async move { client.txn(txn).await }
            })
            .await?;
            let before = Snapshot::from_txn(&resp, 0);
            if before.round_in_progress(None) || before.waiters.len() >= self.count {
                return Err(Error::TooManyClients(self.name.clone()));
            }

            let (session, dir) = (self.session.clone(), self.waiters_dir.clone());
            let mut pending = PendingPut::start(self.session.client(), async move {
                create_unique(&session, || format!("{dir}{}", unix_nanos()), b"", &reads).await
            });
            let (mine, resp) = pending.placed().await?;
            Span::current().record("key", mine.key.as_str());
            // The snapshot read right after our put: everyone but us is older.
            let at_entry = Snapshot::from_txn(&resp, 1);
            if at_entry.round_in_progress(Some(&mine.key)) {
                return Err(Error::TooManyClients(self.name.clone())); // drops our key
            }
            let position = at_entry
                .waiters
                .iter()
                .position(|kv| kv.key() == mine.key.as_bytes())
                .ok_or(Error::SessionExpired(self.session.lease()))?;
            if position >= self.count {
                return Err(Error::TooManyClients(self.name.clone())); // drops our key
            }
            let round = if position + 1 == self.count {
                debug!("we complete the group; putting the ready key");
                self.put_ready(&mut client, &mine, at_entry.ready).await?
            } else {
                debug!(position, "waiting for the group to fill");
                self.wait_ready(&mut client, &mine).await?
            };
            // Never report "entered" without our key.
            let ours = client.get(mine.key.as_str(), None).await?;
            let still_ours = ours.kvs().first().map(|kv| kv.create_revision()) == Some(mine.rev);
            if !still_ours {
                return Err(Error::SessionExpired(self.session.lease()));
            }
            Ok(self.guard(pending.keep(), round))
        }
        .instrument(span)
        .await
    }

    /// The reads a snapshot is made of: the ready key, then the waiter keys oldest first.
    fn snapshot_reads(&self) -> [TxnOp; 2] {
        let oldest_first = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_keys_only();
        [
            TxnOp::get(
                self.ready_key.as_str(),
                Some(GetOptions::new().with_keys_only()),
            ),
            TxnOp::get(self.waiters_dir.as_str(), Some(oldest_first)),
        ]
    }

    /// Puts the ready key unless someone already put it after we registered; returns
    /// the revision of the put that released our round. The put is conditional on the
    /// ready key being as we saw it at registration, so a round is released once.
    async fn put_ready(
        &self,
        client: &mut etcd_client::Client,
        mine: &Placed,
        mut seen: Option<i64>,
    ) -> Result<i64> {
        loop {
            let ready = self.ready_key.as_str();
            let txn = Txn::new()
                .when([mod_rev_is(ready, seen.unwrap_or(0))])
                .and_then([TxnOp::put(ready, "", None)])
                .or_else([TxnOp::get(ready, None)]);
            let resp = client.txn(txn).await?;
            if resp.succeeded() {
                return Ok(txn_rev(&resp));
            }
            seen = txn_get(&resp, 0).and_then(|g| g.kvs().first().map(|kv| kv.mod_revision()));
            match seen {
                // Put after we registered: our round is released already.
                Some(rev) if rev > mine.rev => return Ok(rev),
                // Otherwise a stale ready key changed under us; try again against it.
                _ => continue,
            }
        }
    }

    /// Waits for a put of the ready key after our registration; returns its revision.
    async fn wait_ready(&self, client: &mut etcd_client::Client, mine: &Placed) -> Result<i64> {
        self.session
            .until_lost(wait_key(client, self.ready_key.as_bytes(), |ready| {
                ready
                    .map(|kv| kv.mod_revision())
                    .filter(|&rev| rev > mine.rev)
            }))
            .await
    }

    fn guard(&self, mine: Placed, round: i64) -> DoubleBarrierGuard {
        let inside = info_span!(
            "coord.double_barrier.inside",
            name = %self.name,
            key = %mine.key,
            round
        );
        DoubleBarrierGuard {
            session: self.session.clone(),
            name: self.name.clone(),
            ready_key: self.ready_key.clone(),
            waiters_dir: self.waiters_dir.clone(),
            key: OwnedKey::new(self.session.client(), mine),
            round,
            _inside: inside,
        }
    }
}

/// Proof of having entered a [`DoubleBarrier`]. Call [`DoubleBarrierGuard::leave`];
/// dropping it instead leaves without waiting (our key is deleted in the background).
#[derive(Debug)]
pub struct DoubleBarrierGuard {
    session: Session,
    name: String,
    ready_key: String,
    waiters_dir: String,
    key: OwnedKey,
    /// Revision of the ready put that released our round; members were registered before it.
    round: i64,
    _inside: Span,
}

impl DoubleBarrierGuard {
    /// Our waiter key.
    pub fn key(&self) -> &str {
        self.key.key()
    }

    /// The revision at which `<name>/ready` was put for this round. Every member of
    /// the round has the same one; it identifies the round.
    pub fn round(&self) -> i64 {
        self.round
    }

    /// Waits until every member of the round has called `leave` (or lost its session),
    /// then returns. Iterative (no recursion, unlike Go's: etcd issue 14603). Fails with
    /// [`Error::SessionExpired`] if our key disappeared before we removed it.
    pub async fn leave(mut self) -> Result<()> {
        let span =
            info_span!("coord.double_barrier.leave", name = %self.name, key = %self.key.key());
        async {
            let mut client = self.session.client();
            let (my_key, my_rev) = (self.key.key().to_owned(), self.key.rev());
            // Members of our round: waiters registered before the ready put.
            let members = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(self.round - 1)
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_keys_only();
            let mut removed_ourselves = false;
            loop {
                let txn = Txn::new().and_then([
                    TxnOp::get(my_key.as_str(), Some(GetOptions::new().with_keys_only())),
                    TxnOp::get(self.waiters_dir.as_str(), Some(members.clone())),
                ]);
                let resp = retrying(|| {
                    let (mut client, txn) = (client.clone(), txn.clone());
                    async move { client.txn(txn).await }
                })
                .await?;
                let present = txn_get(&resp, 0).is_some_and(|g| {
                    g.kvs()
                        .first()
                        .is_some_and(|kv| kv.create_revision() == my_rev)
                });
                if !present && !removed_ourselves {
                    self.key.forget();
                    return Err(Error::SessionExpired(self.session.lease()));
                }
                let remaining = txn_get(&resp, 1)
                    .map(|g| g.kvs().to_vec())
                    .unwrap_or_default();
                let (Some(lowest), Some(highest)) = (remaining.first(), remaining.last()) else {
                    return Ok(()); // everyone has left
                };
                if !present {
                    // We are out; the lowest goes last, once everyone else is out.
                    debug!(lowest = %show(lowest.key()), "waiting for the lowest member to leave");
                    wait_deleted(&mut client, lowest.key(), lowest.create_revision()).await?;
                    continue;
                }
                if remaining.len() == 1 {
                    // Only we are left: take the ready key down (if it is still our
                    // round's) and leave, atomically.
                    let take_down_ready = Txn::new()
                        .when([mod_rev_is(self.ready_key.as_str(), self.round)])
                        .and_then([TxnOp::delete(self.ready_key.as_str(), None)]);
                    let txn = Txn::new()
                        .when([create_rev_is(my_key.as_str(), my_rev)])
                        .and_then([
                            TxnOp::delete(my_key.as_str(), None),
                            TxnOp::txn(take_down_ready),
                        ]);
                    let resp = client.txn(txn).await?;
                    self.key.forget();
                    return if resp.succeeded() {
                        Ok(())
                    } else {
                        Err(Error::SessionExpired(self.session.lease()))
                    };
                }
                if lowest.key() == my_key.as_bytes() {
                    debug!(highest = %show(highest.key()), "lowest member waits for the others");
                    self.session
                        .until_lost(wait_deleted(
                            &mut client,
                            highest.key(),
                            highest.create_revision(),
                        ))
                        .await?;
                } else {
                    match self.key.delete().await? {
                        Release::Deleted => removed_ourselves = true,
                        // Gone after a retry while our lease lives: leaving is done
                        // either way, and nothing here depends on who deleted it.
                        Release::Unconfirmed if !self.session.is_expired() => {
                            removed_ourselves = true
                        }
                        _ => return Err(Error::SessionExpired(self.session.lease())),
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}
