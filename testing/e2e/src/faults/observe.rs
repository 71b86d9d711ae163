//! What the stack's coordination state says around a fault: whose lease holds the hot
//! SKU's lock, when a lease is gone, who leads etcd and the order service's job.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use coord::etcd_client::{Client as EtcdClient, GetOptions};
use shop_proto::v1 as pb;

use crate::Stack;

/// `inventory-1`'s session lease and where it stands in the hot SKU's lock line.
pub(super) async fn lock_holder(
    etcd: &mut EtcdClient,
    locks: &str,
) -> anyhow::Result<(i64, String)> {
    let lease = replica_lease(etcd, "inventory", "inventory-1").await?;
    Ok((lease, in_line(etcd, locks, lease).await?))
}

/// Keys under `prefix` now.
pub(super) async fn keys_under(
    etcd: &mut EtcdClient,
    prefix: &str,
) -> anyhow::Result<BTreeSet<Vec<u8>>> {
    let found = etcd
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(found.kvs().iter().map(|kv| kv.key().to_vec()).collect())
}

/// The lease of a replica's etcd session: the one the replica's leader-job
/// candidacies are under (every process keeps one session; its election value is
/// its replica id).
pub(super) async fn replica_lease(
    etcd: &mut EtcdClient,
    service: &str,
    replica: &str,
) -> anyhow::Result<i64> {
    let found = etcd
        .get(
            format!("/shop/elections/{service}/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    found
        .kvs()
        .iter()
        .find(|kv| {
            // The value is the job's proclaimed progress, `{"replica":"<id>",...}`,
            // or the bare replica id before the first proclaim.
            let value = String::from_utf8_lossy(kv.value());
            value == replica || value.contains(&format!("\"replica\":\"{replica}\""))
        })
        .map(|kv| kv.lease())
        .with_context(|| format!("{replica} has no election key (is it up?)"))
}

/// ", holding the hot SKU's lock" / ", queued for …" / "": where the lease stood.
pub(super) async fn in_line(
    etcd: &mut EtcdClient,
    locks: &str,
    lease: i64,
) -> anyhow::Result<String> {
    let found = etcd
        .get(
            locks,
            Some(GetOptions::new().with_prefix().with_sort(
                coord::etcd_client::SortTarget::Create,
                coord::etcd_client::SortOrder::Ascend,
            )),
        )
        .await?;
    Ok(
        match found.kvs().iter().position(|kv| kv.lease() == lease) {
            Some(0) => ", holding the hot SKU's lock".to_owned(),
            Some(n) => format!(", queued {n} behind the hot SKU's lock holder"),
            None => ", between locks".to_owned(),
        },
    )
}

/// How long until `lease` has expired (`None`: not within `limit`).
pub(super) async fn lease_gone(
    etcd: &mut EtcdClient,
    lease: i64,
    limit: Duration,
) -> anyhow::Result<Option<Duration>> {
    let at = Instant::now();
    while at.elapsed() < limit {
        let ttl = etcd.lease_time_to_live(lease, None).await?.ttl();
        if ttl < 0 {
            return Ok(Some(at.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// A client of every etcd member.
pub(super) async fn etcd_of(members: &[(String, String)]) -> anyhow::Result<EtcdClient> {
    let endpoints: Vec<String> = members.iter().map(|(_, e)| e.clone()).collect();
    EtcdClient::connect(endpoints, None).await.context("etcd")
}

/// The member name (`etcd1`…) of the current etcd leader, asked of `members`.
pub(super) async fn etcd_leader(members: &[(String, String)]) -> anyhow::Result<String> {
    let statuses = member_statuses(members).await?;
    Ok(leader_among(&statuses)?.name.clone())
}

/// The status of the member the answering members call their leader.
pub(super) fn leader_among(statuses: &[MemberStatus]) -> anyhow::Result<&MemberStatus> {
    let leader = statuses
        .iter()
        .map(|s| s.leader)
        .find(|leader| *leader != 0)
        .context("no etcd member knows a leader")?;
    statuses
        .iter()
        .find(|s| s.id == leader)
        .context("the leader is not among the members asked")
}

/// What one etcd member says of itself.
pub(super) struct MemberStatus {
    pub name: String,
    pub endpoint: String,
    pub id: u64,
    /// The leader this member knows (0: none).
    pub leader: u64,
}

/// The status of every member that answers.
pub(super) async fn member_statuses(
    members: &[(String, String)],
) -> anyhow::Result<Vec<MemberStatus>> {
    let mut statuses = Vec::new();
    for (name, endpoint) in members {
        let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(2),
            EtcdClient::connect([endpoint.clone()], None),
        )
        .await
        else {
            continue;
        };
        let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), client.status()).await
        else {
            continue;
        };
        if let Some(header) = status.header() {
            statuses.push(MemberStatus {
                name: name.clone(),
                endpoint: endpoint.clone(),
                id: header.member_id(),
                leader: status.leader(),
            });
        }
    }
    anyhow::ensure!(!statuses.is_empty(), "no etcd member answered");
    Ok(statuses)
}

/// Who leads the order service's `expire-reservations` job, asked of `service`.
pub(super) async fn job_leader(stack: &Stack, service: &str) -> String {
    let Ok(channel) = stack.channel(service, 50051).await else {
        return String::new();
    };
    pb::order_service_client::OrderServiceClient::new(channel)
        .list_leaders(pb::ListLeadersRequest {})
        .await
        .map(|r| {
            r.into_inner()
                .leaders
                .into_iter()
                .find(|l| l.job == "expire-reservations")
                .map(|l| l.holder)
                .unwrap_or_default()
        })
        .unwrap_or_default()
}
