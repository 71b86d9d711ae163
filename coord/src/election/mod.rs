//! Election: leader election with a fencing token, a proclaimed value, and an observer
//! stream that reports every leader change it can see.
//!
//! # Protocol (etcd Go client's, so Go services and `etcdctl elect` interoperate)
//! - A candidate puts its key `<name>/<lease id hex>` attached to its session's lease,
//!   with its *proclaimed value* (an address, a replica id …) as the key's value. The
//!   etcd create revision of that key is its place in line.
//! - The candidate whose key has the smallest create revision under `<name>/` is the
//!   leader; its value is what the election currently proclaims. Everyone else waits
//!   until every key ahead of theirs is gone (following up to 16 keys ahead on the
//!   session's shared delete watch, else its predecessor), then checks again.
//! - The leader changes its value with a put that is conditional on its key still
//!   being its own incarnation (compare create revision) — *proclaim*.
//! - The leader steps down by deleting its key, again only if it is still its own
//!   incarnation — *resign*. A lost lease deletes the key too, which hands leadership
//!   to the next candidate in line.
//! - Observers read the oldest key under `<name>/` and watch the prefix for changes.
//!
//! Go's names: `Campaign`, `Proclaim`, `Resign`, `Leader` and `Observe` are the methods
//! of the same names. Go's `Election.Rev()` is the leader key's create revision — the
//! fencing token: [`LeaderContext::fencing_token`] (a [`Leadership`] derefs to its
//! [`LeaderContext`], so `leadership.fencing_token()`).
//!
//! # Guarantees
//! - [`Election::campaign`] never returns a [`Leadership`] whose key is gone: our own
//!   key is confirmed together with the last predecessor check (etcd issue 11051), and a
//!   session lost while waiting yields [`Error::SessionExpired`].
//! - Cancel-safe: dropping the `campaign()` future (timeout, `select!`, task abort)
//!   removes our candidate key, also when the drop happens while the put is still in
//!   flight. An abandoned candidate never blocks the next one.
//! - [`Leadership::resign`] keeps the leadership state when the delete RPC fails, so
//!   it can be retried (etcd issue 22123); it never deletes a successor's key.
//! - [`Election::observe`] (and [`ElectionObserver::observe`]) starts with the current
//!   state, never skips the state that is current when it (re)reads (etcd issue 7815),
//!   survives compaction and broken watch streams, and reports an explicit
//!   [`LeaderEvent::NoLeader`] when the election empties. Exactly what it delivers is
//!   documented on [`ElectionObserver::observe`].
//! - Tasks sharing one session and campaigning in the same election are serialised
//!   locally (they would share one key): the second campaign waits until the first
//!   leadership is resigned or dropped.
//!
//! # Not guaranteed — read this before relying on leadership
//! Leadership is a lease, not mutual exclusion. A leader that stalls longer than its
//! TTL (GC, swap, a network cut) is replaced while it may still be running. Guard the
//! leader's writes: in etcd with [`LeaderContext::is_owner`] in the txn's `when`,
//! elsewhere by storing [`LeaderContext::fencing_token`] with each write and rejecting
//! lower ones (a [`Leadership`] derefs to its [`LeaderContext`]). [`crate::leader`] runs a job only while leadership lasts and cancels it
//! when the key or the session is lost — still not a substitute for fencing.
//!
//! # Resuming after a restart
//! A process that resumes its previous lease ([`crate::SessionBuilder::lease`]) and
//! campaigns again adopts its existing key and place in line (Go's `ResumeElection`);
//! if the value differs, the new one is proclaimed first.
//!
//! # Files
//! `mod.rs`: [`Election`] and campaigning; `leadership.rs`: [`Leadership`] and the
//! [`LeaderContext`] a leader acts through; `observer.rs`: [`ElectionObserver`], who
//! leads and the stream of leader changes.
//!
//! # Go → coord
//! | etcd's Go `clientv3/concurrency` | coord |
//! |---|---|
//! | `NewElection(s, pfx)` | [`Election::new`]`(&s, pfx)` |
//! | `ResumeElection(s, pfx, key, rev)` | [`Election::new`] with a session resumed on the old lease ([`crate::SessionBuilder::lease`]), then [`Election::campaign`] adopts the existing key |
//! | `Campaign(ctx, val)` | [`Election::campaign`] → [`Leadership`] |
//! | `Proclaim(ctx, val)` | [`LeaderContext::proclaim`] (`leadership.proclaim(..)`) |
//! | `Resign(ctx)` | [`Leadership::resign`] |
//! | `Leader(ctx)` | [`Election::leader`], [`ElectionObserver::leader`] → [`LeaderInfo`] |
//! | `Observe(ctx)` | [`Election::observe`], [`ElectionObserver::observe`] |
//! | `Rev()` | [`LeaderContext::fencing_token`] (doc alias `Rev`) |
//! | `Key()` | [`LeaderContext::key`], [`Election::key`] |

mod leadership;
mod observer;

use etcd_client::Client;
use futures::Stream;
use tracing::{debug, field, info_span, Instrument, Span};

use crate::ownership::waiters::{wait_for_turn, PendingKey};
use crate::plumbing::key::lease_key;
use crate::{Error, Result, Session};
pub use leadership::{LeaderContext, Leadership};
pub use observer::{ElectionObserver, LeaderEvent, LeaderInfo};

/// A session's handle on one election: campaign for it, read or observe its leader.
/// Cheap to clone; one per session and name.
#[derive(Clone, Debug)]
pub struct Election {
    session: Session,
    observer: ElectionObserver,
    key: String,
}

impl Election {
    /// The election named `name` (keys live under `name/`), campaigned for with
    /// `session`'s lease.
    pub fn new(session: &Session, name: &str) -> Result<Election> {
        let observer = Election::observer(session.client(), name)?;
        let key = lease_key(&observer.prefix, session.lease());
        Ok(Election {
            session: session.clone(),
            observer,
            key,
        })
    }

    /// A read-only handle for processes that only want to know who leads: needs no
    /// session (and creates no lease or key).
    pub fn observer(client: Client, name: &str) -> Result<ElectionObserver> {
        ElectionObserver::new(client, name)
    }

    /// The key this session campaigns with: `<name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The election's name (without the trailing `/`).
    pub fn name(&self) -> &str {
        &self.observer.name
    }

    /// The session campaigns run under.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Becomes a candidate proclaiming `value` and waits until this session leads.
    ///
    /// Steps: put our key (or adopt it if this lease already has one, proclaiming
    /// `value` if it differs), then wait until every older candidate is gone, checking
    /// our own key at the same revision as the last check. Fails with
    /// [`Error::SessionExpired`] if the session is lost or our key vanishes meanwhile.
    /// Dropping the future removes our candidate key (see the module docs).
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        let value = value.into();
        let span = info_span!(
            "coord.election.campaign",
            election = %self.observer.name,
            key = %self.key,
            fencing_token = field::Empty
        );
        async {
            let local = self.session.lock_locally(&self.key).await?;
            self.session.check_alive()?;
            let mut pending = PendingKey::start(
                &self.session,
                &self.observer.prefix,
                &self.key,
                value.clone(),
                local,
            );
            let entered = pending.entered().await?;
            let context =
                LeaderContext::new(&self.session, &self.observer.name, &self.key, entered.rev);
            if entered.existing_value.is_some_and(|old| old != value) {
                debug!("adopting this lease's existing key; proclaiming the new value");
                context.proclaim(value).await.map_err(|e| match e {
                    // Our key vanished between the enter and the proclaim: the lease is gone.
                    Error::NotLeader(_) => Error::SessionExpired(self.session.lease()),
                    other => other,
                })?;
            }
            if !entered.first {
                // Returns Ok only once etcd showed our own key present and no older one
                // at the same revision (a read, or the deletes that followed it).
                wait_for_turn(&self.session, &self.observer.prefix, entered.rev).await?;
            }
            Span::current().record("fencing_token", entered.rev);
            Ok(Leadership::new(context, pending.keep()))
        }
        .instrument(span)
        .await
    }

    /// The current leader, or [`Error::NoLeader`]. See [`ElectionObserver::leader`].
    pub async fn leader(&self) -> Result<LeaderInfo> {
        self.observer.leader().await
    }

    /// Leader changes as a stream. See [`ElectionObserver::observe`].
    pub fn observe(&self) -> impl Stream<Item = Result<LeaderEvent>> + Send + 'static {
        self.observer.observe()
    }
}
