//! [`ElectionObserver`]: who leads an election, and a stream of its leader changes,
//! without a session.

use std::collections::VecDeque;

use etcd_client::{
    Client, Event, EventType, GetOptions, KeyValue, SortOrder, SortTarget, WatchOptions,
    WatchStream,
};
use futures::Stream;
use tracing::{debug, info_span, Instrument};

use crate::plumbing::key::{dir_prefix, header_rev, show};
use crate::plumbing::retry::{retrying, Backoff};
use crate::{Error, Result};

/// Read-only access to an election ([`Election::observer`](super::Election::observer)): who leads, and a stream of
/// leader changes. Needs no session.
#[derive(Clone)]
pub struct ElectionObserver {
    client: Client,
    /// The name as given, without the trailing `/` (used in errors and spans).
    pub(super) name: String,
    /// `name/`: every read and watch uses it, so `jobs` never sees `jobs2`.
    pub(super) prefix: String,
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
    /// See [`super::Election::observer`].
    pub(super) fn new(client: Client, name: &str) -> Result<ElectionObserver> {
        let prefix = dir_prefix(name)?;
        Ok(ElectionObserver {
            client,
            name: prefix.trim_end_matches('/').to_owned(),
            prefix,
        })
    }

    /// The election's name (without the trailing `/`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current leader (the oldest key under `<name>/`), or [`Error::NoLeader`].
    /// Already stale when it arrives; a leader acts on [`LeaderContext::is_owner`](super::LeaderContext::is_owner) instead.
    /// A failure that may pass (a member down or restarting) is retried a few times
    /// with backoff before it is returned.
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
    // A read, so safe to repeat: a failure that passes (a member that is down or
    // restarting answers Unavailable) is tried again, and may reach another member.
    let resp = retrying(|| {
        let (mut client, oldest) = (client.clone(), oldest.clone());
        async move { client.get(prefix, Some(oldest)).await }
    })
    .await?;
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
