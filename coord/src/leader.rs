//! Leader jobs: run a piece of work on exactly one replica at a time, hand it to
//! another replica when the leader goes away.
//!
//! # How it works
//! Every replica calls the same runner with the same election name. The runner
//! campaigns in an [`Election`]; the replica that wins runs the job future. While the
//! job runs, the runner also watches for the end of the leadership:
//! - our election key is deleted (lease expired or revoked, someone removed it), or
//! - the session is lost ([`Session::done`], which fires no later than etcd expires
//!   the lease, and also when keepalives go unacknowledged for a TTL).
//!
//! The moment either happens, the job future is **dropped** (that is how it is
//! cancelled: at its next `.await`). On shutdown the job is dropped first and then the
//! runner resigns, so the next replica's job starts only after ours has stopped.
//!
//! Two entry points:
//! - [`run_as_leader`]: one term. Campaign, run the job once, report how it ended
//!   ([`LeaderOutcome`]).
//! - [`LeaderJob::run`]: the shop's way of running a background job on one replica:
//!   terms in a loop. After losing leadership it campaigns again (with a fresh session
//!   if the old one is gone), until shutdown or until the job finishes.
//!
//! # Guarantees
//! - The job is started only after `campaign` confirmed we lead, and is dropped as
//!   soon as the runner learns leadership is lost.
//! - Shutdown while campaigning leaves no candidate key; shutdown while leading
//!   cancels the job, then resigns (the next leader takes over at once, not after a TTL).
//! - When the job finishes by itself, the runner resigns and returns its output.
//!
//! # Not guaranteed
//! Cancellation is local and prompt, not instantaneous: between etcd deleting our key
//! (say the lease expired during a long GC pause) and our watch reporting it, another
//! replica may already lead and run its job. The job's **writes** must be fenced with
//! [`LeaderContext::is_owner`] (etcd) or [`LeaderContext::fencing_token`] (elsewhere).
//! A job that blocks a thread without reaching an `.await` cannot be cancelled.

use std::future::Future;
use std::pin::Pin;

use tracing::{info, info_span, warn, Instrument};

pub use crate::election::LeaderContext;
use crate::election::{Election, Leadership};
use crate::metrics;
use crate::plumbing::retry::Backoff;
use crate::{Error, Result, Session};

/// How a leader job run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaderOutcome<T> {
    /// Shutdown was requested. If we led, the job was cancelled and we resigned; if we
    /// were still campaigning, our candidate key was removed.
    Resigned,
    /// Leadership was lost while the job ran (our key deleted or the session lost);
    /// the job was cancelled. Only [`run_as_leader`] returns this; [`LeaderJob::run`]
    /// campaigns again instead.
    LeadershipLost,
    /// The job future completed with this output; we resigned afterwards.
    JobFinished(T),
}

/// Runs `job` once as the leader of `election_name`, proclaiming `value`.
///
/// Campaigns with `session`; once elected, calls `job` with a [`LeaderContext`] and
/// runs the returned future until the first of:
/// - it completes → resign, [`LeaderOutcome::JobFinished`] with its output;
/// - leadership or the session is lost → the future is dropped,
///   [`LeaderOutcome::LeadershipLost`];
/// - `shutdown` resolves → the future is dropped, then we resign,
///   [`LeaderOutcome::Resigned`] (also when shutdown comes while still campaigning).
///
/// Errors: campaign failures ([`Error::SessionExpired`], etcd errors, bad name) and a
/// resign on shutdown that kept failing (the key is then released in the background
/// or by the lease TTL).
pub async fn run_as_leader<S, F, Fut>(
    session: &Session,
    election_name: &str,
    value: impl Into<Vec<u8>>,
    shutdown: S,
    job: F,
) -> Result<LeaderOutcome<Fut::Output>>
where
    S: Future<Output = ()>,
    F: FnOnce(LeaderContext) -> Fut,
    Fut: Future,
{
    let election = Election::new(session, election_name)?;
    let value = value.into();
    tokio::pin!(shutdown);
    serve_term(&election, &value, shutdown.as_mut(), job).await
}

/// A background job that one replica runs at a time, handed over when that replica
/// goes away: `LeaderJob::new(&session, "/shop/jobs/reindex", "replica-1")?.run(shutdown, job)`.
#[derive(Clone, Debug)]
pub struct LeaderJob {
    session: Session,
    election_name: String,
    value: Vec<u8>,
}

impl LeaderJob {
    /// A runner for `election_name`, proclaiming `value` (say, the replica's id) while
    /// it leads. Validates the name at once.
    pub fn new(
        session: &Session,
        election_name: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<LeaderJob> {
        Election::new(session, election_name)?;
        Ok(LeaderJob {
            session: session.clone(),
            election_name: election_name.to_owned(),
            value: value.into(),
        })
    }

    /// Campaigns and runs `job` whenever this replica leads, until `shutdown` resolves
    /// or a run of the job completes.
    ///
    /// Each term is [`run_as_leader`]'s. After a lost term it campaigns again: with the
    /// same session if it is alive, else with a new session of the same TTL on the same
    /// client (closed when `run` returns; the caller's session is never closed here).
    /// Transient etcd failures are retried with backoff.
    ///
    /// Returns [`LeaderOutcome::Resigned`] on shutdown, [`LeaderOutcome::JobFinished`]
    /// when a run of the job completes (we resigned), or an error that retrying cannot
    /// fix (permission denied …). Never returns `LeadershipLost`.
    pub async fn run<S, F, Fut>(
        &self,
        shutdown: S,
        mut job: F,
    ) -> Result<LeaderOutcome<Fut::Output>>
    where
        S: Future<Output = ()>,
        F: FnMut(LeaderContext) -> Fut,
        Fut: Future,
    {
        tokio::pin!(shutdown);
        let span = info_span!("coord.leader.job", election = %self.election_name);
        // Candidates report 0, so each replica running the job has the gauge.
        metrics::leader(self.election_name.trim_end_matches('/'), false);
        let mut session = self.session.clone();
        let mut own_session: Option<Session> = None;
        let result = async {
            let mut backoff = Backoff::default();
            loop {
                let election = Election::new(&session, &self.election_name)?;
                let term = serve_term(&election, &self.value, shutdown.as_mut(), &mut job);
                let mut lease_gone = session.is_expired();
                match term.await {
                    Ok(LeaderOutcome::LeadershipLost) => {
                        info!("leadership lost; campaigning again");
                        backoff = Backoff::default();
                    }
                    Ok(done) => return Ok(done),
                    // Our lease is gone, or our key vanished while we waited: either
                    // way this session's candidacy is over; start with a fresh one.
                    Err(e) if e.is_session_expired() => lease_gone = true,
                    Err(e) if e.is_retryable() => {
                        tokio::select! {
                            _ = shutdown.as_mut() => return Ok(LeaderOutcome::Resigned),
                            _ = backoff.wait(&e) => {}
                        }
                    }
                    Err(e) => return Err(e),
                }
                while lease_gone || session.is_expired() {
                    let fresh = Session::builder(session.client())
                        .ttl(session.ttl())
                        .build();
                    let fresh = tokio::select! {
                        _ = shutdown.as_mut() => return Ok(LeaderOutcome::Resigned),
                        fresh = fresh => fresh,
                    };
                    match fresh {
                        Ok(fresh) => {
                            info!(lease = format_args!("{:x}", fresh.lease()), "new session");
                            if let Some(old) = own_session.replace(fresh.clone()) {
                                let _ = old.close().await;
                            }
                            session = fresh;
                            lease_gone = false;
                        }
                        Err(e) if e.is_retryable() => tokio::select! {
                            _ = shutdown.as_mut() => return Ok(LeaderOutcome::Resigned),
                            _ = backoff.wait(&e) => {}
                        },
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        .instrument(span)
        .await;
        if let Some(own) = own_session {
            let _ = own.close().await;
        }
        result
    }
}

/// One term: campaign (abandoned on shutdown), then run the job until it finishes,
/// leadership is lost, or shutdown.
async fn serve_term<S, F, Fut>(
    election: &Election,
    value: &[u8],
    mut shutdown: Pin<&mut S>,
    job: F,
) -> Result<LeaderOutcome<Fut::Output>>
where
    S: Future<Output = ()>,
    F: FnOnce(LeaderContext) -> Fut,
    Fut: Future,
{
    let mut leadership = tokio::select! {
        biased;
        _ = shutdown.as_mut() => return Ok(LeaderOutcome::Resigned),
        won = election.campaign(value.to_vec()) => won?,
    };
    let span = info_span!(
        "coord.leader.term",
        key = %leadership.key(),
        fencing_token = leadership.fencing_token()
    );
    // 1 for the whole term; back to 0 however the term ends (even if this future is
    // dropped), so a scrape never shows two replicas leading for longer than a term
    // overlaps.
    let _leading = LeaderGauge::up(election.name());
    async {
        info!("elected; starting the job");
        let lost = leadership.lost();
        let ctx = leadership.context();
        let ended = {
            let running = job(ctx);
            tokio::select! {
                biased;
                _ = lost => Ended::Lost,
                _ = shutdown.as_mut() => Ended::Shutdown,
                output = running => Ended::Finished(output),
            }
            // The job future is dropped here, before any resign below.
        };
        match ended {
            Ended::Lost => {
                warn!("leadership lost; job cancelled");
                // Dropping the leadership compare-deletes our key in the background in
                // case only the session was presumed lost and the key still exists.
                Ok(LeaderOutcome::LeadershipLost)
            }
            Ended::Shutdown => {
                info!("shutdown; job cancelled, resigning");
                match resign_with_retries(&mut leadership).await {
                    Ok(()) | Err(Error::OwnershipLost(_)) => Ok(LeaderOutcome::Resigned),
                    Err(e) => Err(e),
                }
            }
            Ended::Finished(output) => {
                info!("job finished; resigning");
                if let Err(e) = resign_with_retries(&mut leadership).await {
                    // The output matters more; the key goes in the background or with the TTL.
                    warn!(error = %e, "resign after the job finished failed");
                }
                Ok(LeaderOutcome::JobFinished(output))
            }
        }
    }
    .instrument(span)
    .await
}

/// Sets `coord_leader{election}` to 1 while alive, 0 when dropped.
struct LeaderGauge<'a>(&'a str);

impl<'a> LeaderGauge<'a> {
    fn up(election: &'a str) -> LeaderGauge<'a> {
        metrics::leader(election, true);
        LeaderGauge(election)
    }
}

impl Drop for LeaderGauge<'_> {
    fn drop(&mut self) {
        metrics::leader(self.0, false);
    }
}

enum Ended<T> {
    Lost,
    Shutdown,
    Finished(T),
}

/// Resigns, retrying transient failures a few times (the leadership keeps its state
/// between attempts, see [`Leadership::resign`]).
async fn resign_with_retries(leadership: &mut Leadership) -> Result<()> {
    let mut backoff = Backoff::default();
    let mut attempts = 0;
    loop {
        match leadership.resign().await {
            Err(e) if e.is_retryable() && attempts < 5 => {
                attempts += 1;
                backoff.wait(&e).await;
            }
            other => return other,
        }
    }
}
