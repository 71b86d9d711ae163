//! The leader-elected `expire-reservations` job: it cancels orders whose payment never
//! came, exactly one replica runs it, and another takes over when the leader dies or
//! shuts down.

use std::time::Duration;

use order_service::expiry;
use shop_common::domain::Strategy;
use shop_common::testing::{
    check_leader_failover, test_settings, unique_etcd_prefix, RunningServer, TestDatabase,
};
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
    let ttl = Duration::from_secs(2);
    let start = |replica: &'static str| {
        let mut settings =
            order_service::Settings::with_common(test_settings(ServiceName::Order, &db, &prefix));
        settings.common.etcd.session_ttl = ttl.as_secs() as i64;
        settings.common.jobs.interval = Duration::from_millis(200);
        settings.common.jobs.replica_id = replica.into();
        async move {
            let app = order_service::Application::build(settings).await.unwrap();
            RunningServer::spawn(app.local_addr(), |s| app.run_until_stopped(s))
        }
    };
    check_leader_failover(ServiceName::Order, &prefix, expiry::JOB, ttl, start).await;
}
