//! `ListLeaders`: which replica runs each leader-elected background job.
//!
//! A service hands its gRPC layer a [`LeaderDirectory`]; the services use the `jobs`
//! module's `ElectionDirectory`, which reads the elections themselves. The jobs (see
//! docs/architecture.md): order `expire-reservations`, inventory `reconcile-stock`,
//! payment `settle-payments`.

use futures::future::BoxFuture;
use shop_proto::v1::{Leader, ListLeadersResponse};

/// One leader-elected job and who leads it (one entry of `ListLeaders`). Not
/// `coord::LeaderInfo`, which describes one election's leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLeader {
    pub job: String,
    /// The leader's election value (replica id); empty when nobody leads.
    pub holder: String,
    /// The leader key's create revision: the fencing token of the job's writes.
    pub revision: i64,
}

/// Something that knows the service's leader-elected jobs (the election runner).
pub trait LeaderDirectory: Send + Sync + 'static {
    fn leaders(&self) -> BoxFuture<'_, anyhow::Result<Vec<JobLeader>>>;
}

/// Answers a `ListLeaders` call from a directory.
pub async fn list_leaders(
    directory: &dyn LeaderDirectory,
) -> Result<ListLeadersResponse, tonic::Status> {
    let leaders = directory.leaders().await.map_err(|e| {
        tracing::error!(error = ?e, "listing leaders failed");
        tonic::Status::unavailable(format!("cannot list leaders: {e}"))
    })?;
    Ok(ListLeadersResponse {
        leaders: leaders
            .into_iter()
            .map(|l| Leader {
                job: l.job,
                holder: l.holder,
                revision: l.revision,
            })
            .collect(),
    })
}
