//! The leader-elected `expire-reservations` job: it cancels orders whose payment never
//! came, exactly one replica runs it, and another takes over when the leader dies or
//! shuts down.

use std::time::Duration;

use shop_common::domain::Strategy;
use shop_common::testing::{test_settings, unique_etcd_prefix, RunningServer, TestDatabase};
use shop_common::ServiceName;
use shop_proto::v1 as pb;
use shop_proto::v1::order_service_client::OrderServiceClient;

use crate::helpers::TestShop;

async fn leaders(orders: &mut OrderServiceClient<tonic::transport::Channel>) -> Vec<pb::Leader> {
    orders
        .list_leaders(pb::ListLeadersRequest {})
        .await
        .expect("ListLeaders")
        .into_inner()
        .leaders
}

#[tokio::test]
async fn an_order_whose_payment_never_comes_is_cancelled_and_its_stock_released() {
    let shop = TestShop::spawn_with(|_, order| {
        order.reservation_ttl = Duration::from_secs(1);
        order.common.jobs.interval = Duration::from_millis(200);
        order.common.jobs.replica_id = "order-under-test".into();
    })
    .await;
    shop.set_stock("tea", 3).await;
    let order = shop.create("k", &[("tea", 2)], Strategy::Pg).await.unwrap();
    assert_eq!(order.status, pb::OrderStatus::Reserved as i32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let cancelled = loop {
        let now = shop.get(&order.order_id).await.unwrap();
        if now.status == pb::OrderStatus::Cancelled as i32 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never expired: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(cancelled.status_reason.contains("expired"), "{cancelled:?}");
    let truth = shop.truth("tea").await;
    assert_eq!(truth.level.available, 3, "the reserved units came back");
    assert_eq!(truth.level.reserved, 0);
    let listed = leaders(&mut shop.orders.clone()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job, "expire-reservations");
    assert!(listed[0].holder.contains("order-under-test"), "{listed:?}");
    assert!(listed[0].revision > 0);
    shop.stop().await;
}

#[tokio::test]
async fn one_replica_runs_the_job_and_another_takes_over_on_death_and_on_shutdown() {
    let db = TestDatabase::create("order").await;
    let prefix = unique_etcd_prefix("order-jobs");
    let start = |replica: &'static str| {
        let mut settings =
            order_service::Settings::with_common(test_settings(ServiceName::Order, &db, &prefix));
        settings.common.etcd.session_ttl = 2;
        settings.common.jobs.interval = Duration::from_millis(200);
        settings.common.jobs.replica_id = replica.into();
        async move {
            let app = order_service::Application::build(settings).await.unwrap();
            RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s))
        }
    };
    let a = start("replica-a").await;
    let b = start("replica-b").await;
    // One election, one leader: a started first, so a campaigns first.
    leads(&a, "replica-a", Duration::from_secs(5)).await;
    // Graceful shutdown: a resigns, b leads at once (well within 1 s).
    a.stop().await.unwrap();
    leads(&b, "replica-b", Duration::from_secs(1)).await;
    // A third replica queues behind b; b "dies" (its lease is revoked, no resignation):
    // c leads within the TTL + 1 s.
    let c = start("replica-c").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let etcd = coord::EtcdConfig::new(&shop_common::testing::etcd_endpoints())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let election =
        shop_common::jobs::election_name(&prefix, ServiceName::Order, "expire-reservations");
    let leader = coord::Election::observer(etcd.clone(), &election)
        .unwrap()
        .leader()
        .await
        .unwrap();
    etcd.clone().lease_revoke(leader.lease).await.unwrap();
    leads(&c, "replica-c", Duration::from_secs(3)).await; // TTL (2 s) + 1 s
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}

/// Polls `ListLeaders` on `server` until `replica` leads the job, failing after `limit`.
async fn leads(server: &RunningServer, replica: &str, limit: Duration) {
    let mut client = OrderServiceClient::connect(server.uri()).await.unwrap();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let holder = leaders(&mut client)
            .await
            .first()
            .map(|l| l.holder.clone())
            .unwrap_or_default();
        if holder.contains(replica) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{replica} did not lead within {limit:?}; the leader is {holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
