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
//! leader's writes: in etcd with [`Leadership::is_leader`] in the txn's `when`,
//! elsewhere by storing [`Leadership::fencing_token`] with each write and rejecting
//! lower ones. [`crate::leader`] runs a job only while leadership lasts and cancels it
//! when the key or the session is lost — still not a substitute for fencing.
//!
//! # Resuming after a restart
//! A process that resumes its previous lease ([`crate::SessionBuilder::lease`]) and
//! campaigns again adopts its existing key and place in line (Go's `ResumeElection`);
//! if the value differs, the new one is proclaimed first.

use std::collections::VecDeque;
use std::future::Future;

use etcd_client::{
    Client, Compare, CompareOp, Event, EventType, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, WatchOptions, WatchStream,
};
use futures::Stream;
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, field, info_span, Instrument, Span};

use crate::internal::key::{dir_prefix, header_rev, lease_key, show};
use crate::internal::owned::compare_delete;
use crate::internal::retry::Backoff;
use crate::internal::waiters::{release_in_background, wait_for_turn, PendingKey};
use crate::internal::watch::wait_deleted;
use crate::{Error, Result, Session};

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
        let prefix = dir_prefix(name)?;
        Ok(ElectionObserver {
            client,
            name: prefix.trim_end_matches('/').to_owned(),
            prefix,
        })
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
            let local = self.session.local_lock(&self.key).lock_owned().await;
            self.session.check_alive()?;
            let mut pending = PendingKey::start(
                &self.session,
                &self.observer.prefix,
                &self.key,
                value.clone(),
                local,
            );
            let entered = pending.entered().await?;
            let seat = Seat {
                session: self.session.clone(),
                election: self.observer.name.clone(),
                key: self.key.clone(),
                rev: entered.rev,
            };
            if entered.existing_value.is_some_and(|old| old != value) {
                debug!("adopting this lease's existing key; proclaiming the new value");
                seat.proclaim(value).await.map_err(|e| match e {
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
            Ok(Leadership::new(seat, pending.keep()))
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

/// Read-only access to an election ([`Election::observer`]): who leads, and a stream of
/// leader changes. Needs no session.
#[derive(Clone)]
pub struct ElectionObserver {
    client: Client,
    /// The name as given, without the trailing `/` (used in errors and spans).
    name: String,
    /// `name/`: every read and watch uses it, so `jobs` never sees `jobs2`.
    prefix: String,
}

impl std::fmt::Debug for ElectionObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectionObserver")
            .field("name", &self.name)
            .finish()
    }
}

/// The leader of an election as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's key, `<name>/<lease hex>`.
    pub key: String,
    /// The value the leader proclaims.
    pub value: Vec<u8>,
    /// Create revision of the leader's key: its fencing token. It grows with every new
    /// leadership, so it also tells leaderships apart.
    pub rev: i64,
    /// The lease the leader's key is attached to (its session).
    pub lease: i64,
    /// Revision of the leader's latest proclamation (the key's mod revision).
    pub mod_rev: i64,
}

impl LeaderInfo {
    fn from_kv(kv: &KeyValue) -> LeaderInfo {
        LeaderInfo {
            key: show(kv.key()),
            value: kv.value().to_vec(),
            rev: kv.create_revision(),
            lease: kv.lease(),
            mod_rev: kv.mod_revision(),
        }
    }

    /// The value as text (invalid UTF-8 replaced), for logs and displays.
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }

    /// Same leadership (key incarnation) proclaiming the same value.
    fn same_as(&self, other: &LeaderInfo) -> bool {
        self.key == other.key && self.rev == other.rev && self.value == other.value
    }
}

/// One item of [`ElectionObserver::observe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderEvent {
    /// This is the leader now: a new leader, or the same one proclaiming a new value.
    Leader(LeaderInfo),
    /// Nobody leads: the election has no candidates.
    NoLeader,
}

impl LeaderEvent {
    fn same_as(&self, other: &LeaderEvent) -> bool {
        match (self, other) {
            (LeaderEvent::Leader(a), LeaderEvent::Leader(b)) => a.same_as(b),
            (LeaderEvent::NoLeader, LeaderEvent::NoLeader) => true,
            _ => false,
        }
    }
}

impl ElectionObserver {
    /// The election's name (without the trailing `/`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current leader (the oldest key under `<name>/`), or [`Error::NoLeader`].
    /// Already stale when it arrives; a leader acts on [`Leadership::is_leader`] instead.
    pub async fn leader(&self) -> Result<LeaderInfo> {
        let (leader, _) = read_leader(&self.client, &self.prefix).await?;
        leader.ok_or_else(|| Error::NoLeader(self.name.clone()))
    }

    /// A stream of the election's leader, starting with the current state.
    ///
    /// # What is delivered
    /// - The **first item** is the state when the stream first reads etcd:
    ///   [`LeaderEvent::Leader`] with the current leader, or [`LeaderEvent::NoLeader`].
    /// - After that, one item for every change the stream sees, in etcd revision order:
    ///   a new leader, the same leader proclaiming a different value, or `NoLeader`
    ///   when the last candidate leaves. Consecutive items always differ; candidates
    ///   queueing or leaving behind the leader produce no items, and a proclamation of
    ///   the value already delivered produces none either.
    /// - **Eventually the latest state**: once the election stops changing, the last
    ///   item delivered is its current state (as long as etcd is reachable).
    ///
    /// # What may be coalesced
    /// Changes seen on the watch are delivered one by one. When the leader's key is
    /// deleted, the next leader is not in the watch event and the stream re-reads the
    /// election; when the watch breaks (etcd restart, network, compaction) it re-opens
    /// the watch and re-reads. A leader or value that came **and went** between the
    /// deletion (or the break) and that re-read is not delivered; the re-read state
    /// always is.
    ///
    /// # Errors and ending
    /// Failures that may pass (etcd unavailable, a broken or cancelled watch,
    /// compaction) are retried with backoff (20 ms doubling to 1 s) and never end the
    /// stream; during an outage it simply delivers nothing, then the state it re-reads.
    /// A failure retrying cannot fix (permission denied, unauthenticated, a request
    /// etcd rejects as invalid) is yielded as an `Err` item and then the stream ends. It never ends otherwise;
    /// drop it to stop observing (nothing is left behind in etcd).
    ///
    /// # How (watch from now, then read)
    /// The stream opens a prefix watch *from the current revision* (served in etcd's
    /// synced group, so notified at commit time), then reads the oldest key. Watch
    /// events at or below the read's revision are already reflected in the read and
    /// are skipped; later ones are applied in order, so nothing between the read and
    /// the watch can be missed.
    pub fn observe(&self) -> impl Stream<Item = Result<LeaderEvent>> + Send + 'static {
        let span = info_span!("coord.election.observe", election = %self.name);
        let state = Observing {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            watch: None,
            current: None,
            synced_rev: 0,
            delivered: None,
            ready: VecDeque::new(),
            backoff: Backoff::default(),
            ended: false,
        };
        futures::stream::unfold(state, move |mut state| {
            let span = span.clone();
            async move {
                let item = state.next_item().await?;
                Some((item, state))
            }
            .instrument(span)
        })
    }
}

/// Reads the oldest key under `prefix` and the revision the read saw.
async fn read_leader(client: &Client, prefix: &str) -> Result<(Option<LeaderInfo>, i64)> {
    let oldest = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let resp = client.clone().get(prefix, Some(oldest)).await?;
    let leader = resp.kvs().first().map(LeaderInfo::from_kv);
    Ok((leader, header_rev(resp.header())))
}

/// The state behind an observe stream.
struct Observing {
    client: Client,
    prefix: String,
    /// The prefix watch; `None` until (re)opened and synced with a read.
    watch: Option<WatchStream>,
    /// The leader as of `synced_rev`.
    current: Option<LeaderInfo>,
    /// Every change up to this revision is reflected in `current`.
    synced_rev: i64,
    /// The last item handed to the subscriber (`None` before the first).
    delivered: Option<LeaderEvent>,
    /// Items found but not yet handed out.
    ready: VecDeque<LeaderEvent>,
    backoff: Backoff,
    /// Set after a fatal error was yielded.
    ended: bool,
}

/// A failed step: retry after backoff, or give up and yield the error.
enum StepError {
    Retry(String),
    Fatal(Error),
}

impl From<etcd_client::Error> for StepError {
    /// An observer is meant to outlive outages, so everything is retried except
    /// failures that retrying cannot fix: the request or the credentials are refused.
    fn from(e: etcd_client::Error) -> Self {
        use tonic::Code;
        let hopeless = match &e {
            etcd_client::Error::GRpcStatus(status) => matches!(
                status.code(),
                Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::InvalidArgument
                    | Code::Unimplemented
            ),
            etcd_client::Error::InvalidArgs(_)
            | etcd_client::Error::InvalidUri(_)
            | etcd_client::Error::EndpointError(_) => true,
            _ => false,
        };
        if hopeless {
            StepError::Fatal(e.into())
        } else {
            StepError::Retry(e.to_string())
        }
    }
}

impl Observing {
    async fn next_item(&mut self) -> Option<Result<LeaderEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match self.step().await {
                Ok(()) => {}
                Err(StepError::Retry(why)) => {
                    self.watch = None;
                    self.backoff.wait(&why).await;
                }
                Err(StepError::Fatal(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// One unit of progress: (re)sync, or handle one watch response.
    async fn step(&mut self) -> Result<(), StepError> {
        let Some(watch) = self.watch.as_mut() else {
            return self.resync().await;
        };
        let resp = match watch.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Err(StepError::Retry("watch stream ended".into())),
            // A broken stream is re-opened; a refusal would show when re-opening.
            Err(e) => return Err(StepError::Retry(e.to_string())),
        };
        if resp.canceled() {
            // Compaction overtook a slow watcher, or etcd cancelled it: what happened
            // meanwhile is unknown, so start over from a fresh read.
            debug!(
                compact_revision = resp.compact_revision(),
                reason = resp.cancel_reason(),
                "observe watch cancelled; re-syncing"
            );
            self.watch = None;
            if resp.compact_revision() == 0 {
                return Err(StepError::Retry(format!(
                    "watch cancelled: {}",
                    resp.cancel_reason()
                )));
            }
            return Ok(());
        }
        for event in resp.events() {
            self.apply(event).await?;
        }
        Ok(())
    }

    /// Opens the watch from now, then reads the leader (see `observe`'s docs).
    async fn resync(&mut self) -> Result<(), StepError> {
        let options = WatchOptions::new().with_prefix();
        let mut watch = self
            .client
            .watch_client()
            .watch(self.prefix.as_str(), Some(options))
            .await?;
        match watch.message().await? {
            Some(resp) if resp.created() && !resp.canceled() => {}
            Some(resp) if resp.canceled() => {
                // Refused at creation (permission denied …): retrying will not help.
                let reason = format!("etcd refused the watch: {}", resp.cancel_reason());
                let status = tonic::Status::cancelled(reason);
                return Err(StepError::Fatal(
                    etcd_client::Error::GRpcStatus(status).into(),
                ));
            }
            _ => return Err(StepError::Retry("watch was not created".into())),
        }
        self.reread().await?;
        self.watch = Some(watch);
        self.backoff = Backoff::default();
        Ok(())
    }

    /// Replaces the state with a fresh read and publishes it if it changed.
    async fn reread(&mut self) -> Result<(), StepError> {
        let (leader, rev) = read_leader(&self.client, &self.prefix)
            .await
            .map_err(|e| match e {
                Error::Etcd(e) => StepError::from(e),
                other => StepError::Fatal(other),
            })?;
        self.current = leader;
        self.synced_rev = rev;
        self.publish();
        Ok(())
    }

    /// Applies one watch event newer than the synced state.
    async fn apply(&mut self, event: &Event) -> Result<(), StepError> {
        let Some(kv) = event.kv() else {
            return Ok(());
        };
        if kv.mod_revision() <= self.synced_rev {
            return Ok(()); // already part of the state we read
        }
        self.synced_rev = kv.mod_revision();
        let put = event.event_type() == EventType::Put;
        let reread = match (&self.current, put) {
            // The first key put into an empty election leads.
            (None, true) if kv.create_revision() == kv.mod_revision() => {
                self.current = Some(LeaderInfo::from_kv(kv));
                false
            }
            // A key older than what we knew: our picture was wrong; read it again.
            (None, true) => true,
            (Some(leader), true) if leader.key.as_bytes() == kv.key() => {
                if kv.create_revision() == leader.rev {
                    self.current = Some(LeaderInfo::from_kv(kv)); // a proclamation
                    false
                } else {
                    true // recreated without a delete we saw
                }
            }
            (Some(leader), true) => kv.create_revision() < leader.rev,
            // The leader's key went away: the next leader needs a read.
            (Some(leader), false) => leader.key.as_bytes() == kv.key(),
            (None, false) => false,
        };
        if reread {
            self.reread().await
        } else {
            self.publish();
            Ok(())
        }
    }

    /// Queues the current state for the subscriber unless it is what they saw last.
    fn publish(&mut self) {
        let now = match &self.current {
            Some(leader) => LeaderEvent::Leader(leader.clone()),
            None => LeaderEvent::NoLeader,
        };
        if self
            .delivered
            .as_ref()
            .is_some_and(|seen| seen.same_as(&now))
        {
            return;
        }
        self.delivered = Some(now.clone());
        self.ready.push_back(now);
    }
}

/// What a leader needs to act as one: its session and its key's incarnation.
/// Shared by [`Leadership`] and [`crate::leader::LeaderContext`].
#[derive(Clone, Debug)]
pub(crate) struct Seat {
    session: Session,
    election: String,
    key: String,
    rev: i64,
}

impl Seat {
    pub(crate) fn rev(&self) -> i64 {
        self.rev
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn election(&self) -> &str {
        &self.election
    }

    pub(crate) fn is_leader(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.rev)
    }

    pub(crate) async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let put = TxnOp::put(
            self.key.as_str(),
            value,
            Some(PutOptions::new().with_lease(self.session.lease())),
        );
        let txn = Txn::new().when([self.is_leader()]).and_then([put]);
        if self.session.client().txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(Error::NotLeader(self.election.clone()))
        }
    }

    pub(crate) async fn still_leader(&self) -> Result<bool> {
        let resp = self.session.client().get(self.key.as_str(), None).await?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == self.rev))
    }

    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let session_lost = self.session.done();
        let (mut client, key, rev) = (self.session.client(), self.key.clone(), self.rev);
        async move {
            // wait_deleted retries transient failures itself and only returns once the
            // key is gone or is another incarnation.
            let key_gone = async move {
                let _ = wait_deleted(&mut client, key.as_bytes(), rev).await;
            };
            tokio::select! {
                _ = session_lost => {}
                _ = key_gone => {}
            }
        }
    }
}

/// Proof of having won an election: the fencing token, conditional writes, and
/// resign. Obtain it from [`Election::campaign`].
///
/// Leadership lasts until [`Leadership::resign`] succeeds, the session is lost, or the
/// key is deleted by someone else. If dropped without resigning, the key is deleted in
/// the background (or expires with the lease), which hands leadership on.
#[derive(Debug)]
pub struct Leadership {
    seat: Seat,
    local: Option<OwnedMutexGuard<()>>,
    /// Set once resign reached a definite outcome (deleted, or the key was not ours).
    settled: bool,
    _span: Span,
}

impl Leadership {
    fn new(seat: Seat, local: Option<OwnedMutexGuard<()>>) -> Leadership {
        let span = info_span!(
            "coord.election.leadership",
            election = %seat.election,
            key = %seat.key,
            fencing_token = seat.rev
        );
        Leadership {
            seat,
            local,
            settled: false,
            _span: span,
        }
    }

    pub(crate) fn seat(&self) -> &Seat {
        &self.seat
    }

    /// The fencing token: create revision of our key. Every new leadership of this
    /// election gets a larger one, so storing it with each write the leader makes and
    /// rejecting lower ones makes a deposed leader's late writes harmless.
    pub fn fencing_token(&self) -> i64 {
        self.seat.rev
    }

    /// Same as [`Leadership::fencing_token`], under Go's name (`Election.Rev`).
    pub fn rev(&self) -> i64 {
        self.seat.rev
    }

    /// Our leader key, `<name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.seat.key
    }

    /// The session the leadership hangs on.
    pub fn session(&self) -> &Session {
        &self.seat.session
    }

    /// A txn comparison that holds only while we still lead. Put it in the `when` of
    /// every etcd write only the leader may make.
    pub fn is_leader(&self) -> Compare {
        self.seat.is_leader()
    }

    /// Replaces the value the election proclaims, without a new election. Fails with
    /// [`Error::NotLeader`] if we no longer lead (our key is gone or resigned).
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        if self.settled {
            return Err(Error::NotLeader(self.seat.election.clone()));
        }
        self.seat.proclaim(value).await
    }

    /// Asks etcd whether our key is still there. A `true` is stale on arrival; act on
    /// [`Leadership::is_leader`] in a txn instead.
    pub async fn still_leader(&self) -> Result<bool> {
        if self.settled {
            return Ok(false);
        }
        self.seat.still_leader().await
    }

    /// Resolves when leadership is lost: our key is deleted (lease expired or revoked,
    /// someone removed it) or the session is lost. Resolves at once if already so.
    /// Owns what it needs; can be moved into `select!` or a task.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.seat.lost()
    }

    /// Steps down: deletes our key if it is still our incarnation, so the next
    /// candidate leads.
    ///
    /// - `Ok(())`: resigned (also when called again after that — nothing is left to do).
    /// - [`Error::OwnershipLost`]: we had already lost leadership (the key was gone or
    ///   not ours); nothing was deleted. Leadership is settled either way.
    /// - Any other error (etcd unreachable …): **nothing changed** — call `resign`
    ///   again to retry. Dropping the leadership instead retries in the background.
    ///
    /// Cancel-safe: dropping the future leaves the leadership unsettled, as on error.
    pub async fn resign(&mut self) -> Result<()> {
        if self.settled {
            return Ok(());
        }
        let mut client = self.seat.session.client();
        let deleted = compare_delete(&mut client, &self.seat.key, self.seat.rev).await?;
        self.settled = true;
        self.local.take();
        if deleted {
            debug!(key = %self.seat.key, "resigned");
            Ok(())
        } else {
            Err(Error::OwnershipLost(self.seat.key.clone()))
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        release_in_background(
            &self.seat.session,
            std::mem::take(&mut self.seat.key),
            self.seat.rev,
            self.local.take(),
        );
    }
}
