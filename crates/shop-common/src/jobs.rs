//! Leader-elected background jobs, and `ListLeaders` answered from the elections.
//!
//! Every replica of a service runs the same job loop; coord's [`LeaderJob`] makes sure
//! exactly one of them runs the job at a time (`<ETCD_PREFIX>/elections/<service>/<job>`,
//! the election value is the replica id). When the leader's process dies its lease
//! expires and another replica takes over within the session TTL; on shutdown the
//! leader resigns, so the next one starts at once. A job proclaims its progress as the
//! election value, so `ListLeaders` shows who runs it and how far it got.
//!
//! Cancellation is prompt but not instantaneous (see `coord::leader`): a job's writes
//! must be safe if two leaders overlap for a moment — fenced with the leader's token,
//! or idempotent, as the order service's expiry is (its status changes are
//! compare-and-set).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coord::{Election, Error, LeaderContext, LeaderJob, LeaderOutcome};
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::config::ServiceName;
use crate::coordination::SharedSession;
use crate::leaders::{JobLeader, LeaderDirectory};

/// The election a job's replicas campaign in.
pub fn election_name(etcd_prefix: &str, service: ServiceName, job: &str) -> String {
    format!("{etcd_prefix}/elections/{}/{job}", service.as_str())
}

/// Runs `job` whenever this replica leads `service`'s election for `name`, until
/// `stop` turns true (then a leading replica resigns). Transient etcd trouble is
/// retried; the loop never ends on its own.
pub fn spawn_leader_job<F, Fut>(
    session: Arc<SharedSession>,
    service: ServiceName,
    name: &'static str,
    replica: String,
    mut stop: watch::Receiver<bool>,
    mut job: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(LeaderContext) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let election = election_name(session.prefix(), service, name);
        while !*stop.borrow() {
            let live = tokio::select! {
                live = session.get() => live,
                _ = stop.wait_for(|s| *s) => break,
            };
            let outcome = match live.and_then(|s| LeaderJob::new(&s, &election, replica.as_bytes()))
            {
                Ok(runner) => {
                    let mut stopped = stop.clone();
                    runner
                        .run(
                            async move {
                                let _ = stopped.wait_for(|s| *s).await;
                            },
                            // Boxed: the runner's own futures stay small (a job's
                            // future can be tens of kilobytes, copied at every level
                            // in debug builds).
                            |context| -> BoxFuture<'_, ()> { Box::pin(job(context)) },
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(LeaderOutcome::Resigned) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "leader job runner failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            }
        }
        tracing::debug!(job = name, "leader job stopped");
    })
}

/// One leadership term of a periodic job: runs `pass` every `interval` until the
/// term's future is dropped (leadership lost, shutdown). After each pass it proclaims
/// the replica, the pass number, the term's fencing token and the running totals of
/// the counters the passes returned, as JSON:
/// `{"replica":"payment-1","pass":12,"token":4711,"reported":3,"refunded":1}`.
/// A failed proclaim (the term is ending) is logged and the next pass proceeds; the
/// runner cancels the job soon after.
pub async fn run_passes<F, Fut>(
    context: LeaderContext,
    replica: &str,
    interval: Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<(&'static str, u64)>>,
{
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut passes: u64 = 0;
    loop {
        passes += 1;
        // Boxed for the same reason as the job in `spawn_leader_job`.
        for (counter, n) in Box::pin(pass()).await {
            *totals.entry(counter).or_default() += n;
        }
        let mut progress = serde_json::Map::new();
        progress.insert("replica".into(), replica.into());
        progress.insert("pass".into(), passes.into());
        progress.insert("token".into(), context.fencing_token().into());
        for (counter, n) in &totals {
            progress.insert((*counter).into(), (*n).into());
        }
        let progress = serde_json::Value::Object(progress).to_string();
        if let Err(e) = context.proclaim(progress).await {
            tracing::debug!(error = %e, "could not proclaim progress (leadership ending?)");
        }
        tokio::time::sleep(interval).await;
    }
}

/// `ListLeaders` from the elections themselves: who leads each job right now and the
/// progress it last proclaimed.
pub struct ElectionDirectory {
    session: Arc<SharedSession>,
    service: ServiceName,
    jobs: Vec<&'static str>,
}

impl ElectionDirectory {
    pub fn new(session: Arc<SharedSession>, service: ServiceName, jobs: Vec<&'static str>) -> Self {
        ElectionDirectory {
            session,
            service,
            jobs,
        }
    }
}

impl LeaderDirectory for ElectionDirectory {
    fn leaders(&self) -> BoxFuture<'_, anyhow::Result<Vec<JobLeader>>> {
        Box::pin(async move {
            let client = self.session.client().await?;
            let mut leaders = Vec::new();
            for job in &self.jobs {
                let name = election_name(self.session.prefix(), self.service, job);
                let observer = Election::observer(client.clone(), &name)?;
                let (holder, revision) = match observer.leader().await {
                    Ok(leader) => (leader.value_str().into_owned(), leader.rev),
                    Err(Error::NoLeader(_)) => (String::new(), 0),
                    Err(e) => return Err(e.into()),
                };
                leaders.push(JobLeader {
                    job: (*job).to_owned(),
                    holder,
                    revision,
                });
            }
            Ok(leaders)
        })
    }
}
