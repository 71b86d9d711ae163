//! The service as a process: health, reflection-ready bootstrap, stock admin, shutdown.

use shop_proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::TestInventory;

#[tokio::test]
async fn health_reports_the_inventory_service_serving() {
    let app = TestInventory::spawn().await;
    let channel = app.channel().await;
    let mut health = HealthClient::new(channel);
    for service in ["", "shop.v1.InventoryService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_shop_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let app = TestInventory::spawn().await;
    let channel = app.channel().await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "shop.v1.InventoryService"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn set_stock_creates_and_updates_a_sku() {
    let app = TestInventory::spawn().await;
    let stock = app.set_stock("apple", 5).await;
    assert_eq!(
        (
            stock.sku.as_str(),
            stock.available,
            stock.reserved,
            stock.sold
        ),
        ("apple", 5, 0, 0)
    );
    app.set_stock("apple", 7).await;
    let stock = app
        .client()
        .get_stock(pb::GetStockRequest {
            sku: "apple".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stock.available, 7);
    app.stop().await;
}

#[tokio::test]
async fn the_reconcile_job_reports_the_drift_that_strategy_none_leaves() {
    let app = TestInventory::spawn_with(|s| {
        s.common.jobs.interval = std::time::Duration::from_millis(200);
        s.common.jobs.replica_id = "inventory-under-test".into();
    })
    .await;
    app.set_stock_as("tea", 10, Some(shop_common::domain::Strategy::None))
        .await;
    // Lost updates: concurrent read-modify-write leaves counters that disagree with
    // the reservation rows.
    let racers = (0..20).map(|i| {
        let app = &app;
        async move {
            let _ = app
                .reserve(
                    &uuid::Uuid::new_v4().to_string(),
                    &[("tea", 1)],
                    shop_common::domain::Strategy::None,
                )
                .await;
            i
        }
    });
    futures::future::join_all(racers).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let leaders = app
            .client()
            .list_leaders(pb::ListLeadersRequest {})
            .await
            .unwrap()
            .into_inner()
            .leaders;
        assert_eq!(leaders.len(), 1);
        assert_eq!(leaders[0].job, "reconcile-stock");
        if leaders[0].holder.contains(r#""drifted_skus":1"#) {
            assert!(leaders[0].holder.contains("inventory-under-test"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drift never reported: {leaders:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn etcd_unreachable_makes_mutex_unavailable_and_writes_nothing() {
    let app = TestInventory::spawn_with(|s| {
        // Nothing listens on port 1: every etcd call fails or hangs.
        s.common.etcd.config = coord::EtcdConfig::new("127.0.0.1:1").unwrap();
        s.common.etcd.config.connect_timeout = std::time::Duration::from_millis(200);
        s.lock_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    app.set_stock("pear", 3).await;
    let order = crate::helpers::new_order_id();
    let err = app
        .reserve(&order, &[("pear", 1)], shop_common::domain::Strategy::Mutex)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("nothing was reserved"), "{err:?}");
    let truth = app.truth("pear").await;
    assert_eq!(
        (truth.available(), truth.reserved()),
        (3, 0),
        "nothing written"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    // The strategy that needs no etcd still works (the shop re-stocks the SKU under it).
    app.set_stock_as("pear", 3, Some(shop_common::domain::Strategy::Pg))
        .await;
    let ok = app
        .reserve(&order, &[("pear", 1)], shop_common::domain::Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(crate::helpers::outcome(&ok), pb::ReserveOutcome::Reserved);
    app.stop().await;
}
