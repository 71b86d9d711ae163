//! Leader-elected jobs seen from a test: who leads, who campaigns, a leader's crash, and
//! the failover contract every such job keeps.

use std::future::Future;

use shop_common::config::CommonSettings;
use shop_common::ServiceName;

use crate::backends::{etcd_client, test_settings, TestDatabase};
use crate::servers::RunningServer;

/// Who `ListLeaders` of `service` at `server` says leads `job` (its proclaimed value;
/// empty when nobody leads).
pub async fn listed_holder(service: ServiceName, server: &RunningServer, job: &str) -> String {
    use shop_proto::v1::inventory_service_client::InventoryServiceClient;
    use shop_proto::v1::order_service_client::OrderServiceClient;
    use shop_proto::v1::payment_service_client::PaymentServiceClient;
    use shop_proto::v1::ListLeadersRequest;
    let request = ListLeadersRequest {};
    let uri = server.uri();
    let listed = match service {
        ServiceName::Order => {
            OrderServiceClient::connect(uri)
                .await
                .expect("connect")
                .list_leaders(request)
                .await
        }
        ServiceName::Inventory => {
            InventoryServiceClient::connect(uri)
                .await
                .expect("connect")
                .list_leaders(request)
                .await
        }
        ServiceName::Payment => {
            PaymentServiceClient::connect(uri)
                .await
                .expect("connect")
                .list_leaders(request)
                .await
        }
    };
    listed
        .expect("ListLeaders")
        .into_inner()
        .leaders
        .into_iter()
        .find(|leader| leader.job == job)
        .map(|leader| leader.holder)
        .unwrap_or_default()
}

/// Polls `server`'s `ListLeaders` until `replica` leads `job`; panics after `limit`.
pub async fn wait_until_leading(
    service: ServiceName,
    server: &RunningServer,
    job: &str,
    replica: &str,
    limit: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let holder = listed_holder(service, server, job).await;
        if holder.contains(replica) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{replica} did not lead {job} within {limit:?}; the leader is {holder:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Replicas campaigning for `job` (leader included): the keys under its election.
pub async fn job_candidates(service: ServiceName, etcd_prefix: &str, job: &str) -> usize {
    let election = shop_common::jobs::election_name(etcd_prefix, service, job);
    let keys = etcd_client()
        .await
        .get(
            format!("{election}/"),
            Some(
                coord::etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("read the election");
    keys.kvs().len()
}

/// Makes the leader of `job` "crash": its lease is revoked, which is what etcd does
/// when a dead process's lease runs out — its election key goes, it never resigns.
pub async fn crash_leader(service: ServiceName, etcd_prefix: &str, job: &str) {
    let client = etcd_client().await;
    let election = shop_common::jobs::election_name(etcd_prefix, service, job);
    let leader = coord::Election::observer(client.clone(), &election)
        .expect("election name")
        .leader()
        .await
        .expect("someone leads");
    client
        .clone()
        .lease_revoke(leader.lease)
        .await
        .expect("revoke the leader's lease");
}

/// The failover contract of a leader-elected job, checked on two replicas of
/// `service` on `db`, each started by `start(settings)` from settings of its own
/// (replica id `replica-a` / `replica-b`, an `ETCD_SESSION_TTL` of `session_ttl`, jobs
/// every 200 ms, under `etcd_prefix`):
/// 1. exactly one of them leads `job`, and both say so (one leader, two candidates);
/// 2. the leader crashes (lease gone, no resignation): the other leads within
///    `session_ttl` + 1 s, and the crashed one campaigns again with a new session;
/// 3. the new leader shuts down gracefully (resigns): the other leads within 1 s.
pub async fn check_leader_failover<F, Fut>(
    service: ServiceName,
    db: &TestDatabase,
    etcd_prefix: &str,
    job: &str,
    session_ttl: std::time::Duration,
    start: F,
) where
    F: Fn(CommonSettings) -> Fut,
    Fut: Future<Output = RunningServer>,
{
    use std::time::Duration;
    let replica = |name: &str| {
        let mut settings = test_settings(service, db, etcd_prefix);
        settings.etcd.session_ttl = session_ttl.as_secs() as i64;
        settings.jobs.interval = Duration::from_millis(200);
        settings.jobs.replica_id = name.into();
        start(settings)
    };
    let replicas = [
        ("replica-a", replica("replica-a").await),
        ("replica-b", replica("replica-b").await),
    ];
    // 1. One leader: wait for a leader and for the other replica's candidacy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let holder = listed_holder(service, &replicas[0].1, job).await;
        let candidates = job_candidates(service, etcd_prefix, job).await;
        if let Some(index) = replicas.iter().position(|(name, _)| holder.contains(name)) {
            if candidates == 2 {
                break index;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader of {job} among two campaigning replicas: holder {holder:?}, {candidates} candidates"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (leader_name, other) = (replicas[leader].0, 1 - leader);
    let seen_by_other = listed_holder(service, &replicas[other].1, job).await;
    assert!(
        seen_by_other.contains(leader_name),
        "both replicas name one leader: {leader_name} vs {seen_by_other:?}"
    );
    // 2. The leader crashes: the other takes over within the TTL + 1 s.
    crash_leader(service, etcd_prefix, job).await;
    wait_until_leading(
        service,
        &replicas[other].1,
        job,
        replicas[other].0,
        session_ttl + Duration::from_secs(1),
    )
    .await;
    // The crashed replica's process lives on and campaigns again (new session).
    let deadline = tokio::time::Instant::now() + session_ttl + Duration::from_secs(5);
    while job_candidates(service, etcd_prefix, job).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{leader_name} did not campaign again after its lease was lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 3. The new leader shuts down gracefully: it resigns, the first leads within 1 s.
    let [first, second] = replicas;
    let ((survivor_name, survivor), (_, stopping)) = if leader == 0 {
        (first, second)
    } else {
        (second, first)
    };
    stopping.stop().await.expect("the replica stopped cleanly");
    wait_until_leading(
        service,
        &survivor,
        job,
        survivor_name,
        Duration::from_secs(1),
    )
    .await;
    survivor.stop().await.expect("the replica stopped cleanly");
}
