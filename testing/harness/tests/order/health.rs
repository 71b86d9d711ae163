//! Health follows the dependencies: a service reports NOT_SERVING on `grpc.health.v1`
//! while it cannot reach its database or etcd, and SERVING again once it can. The
//! outages are real (a proxy between the service and Postgres or etcd, cut and
//! restored); the test polls health until a deadline, it does not sleep and hope.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::{channel, etcd_proxy, postgres_proxy, TestShop};

/// Polls `uri`'s health (the server's and inventory's) until both are `want`; panics
/// naming `why` after 30 s.
async fn wait_for(uri: String, want: ServingStatus, why: &str) {
    let mut health = HealthClient::new(channel(uri));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for service in ["", "shop.v1.InventoryService"] {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status);
            seen.push(answer.map_err(|e| e.code()));
        }
        if seen.iter().all(|s| *s == Ok(want as i32)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: health is still {seen:?} (want {want:?}) after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_or_etcd_is_cut_off() {
    let (postgres, etcd) = (postgres_proxy().await, etcd_proxy().await);
    let shop = TestShop::spawn_with(|inventory, _| {
        let common = &mut inventory.common;
        common.database.options = common
            .database
            .options
            .clone()
            .host("127.0.0.1")
            .port(postgres.addr().port());
        common.database.acquire_timeout = Duration::from_secs(1);
        common.etcd.config.endpoints = vec![etcd.addr().to_string()];
        common.etcd.config.connect_timeout = Duration::from_millis(500);
        common.health_probe_interval = Duration::from_millis(100);
    })
    .await;
    let uri = shop.inventory().uri();
    wait_for(uri.clone(), ServingStatus::Serving, "at start").await;

    postgres.cut();
    wait_for(uri.clone(), ServingStatus::NotServing, "Postgres cut off").await;
    postgres.restore();
    wait_for(uri.clone(), ServingStatus::Serving, "Postgres back").await;

    etcd.cut();
    wait_for(uri.clone(), ServingStatus::NotServing, "etcd cut off").await;
    etcd.restore();
    wait_for(uri, ServingStatus::Serving, "etcd back").await;
    shop.stop().await;
}
