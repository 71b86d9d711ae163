//! Outages of etcd, Postgres and the inventory service: every failure is UNAVAILABLE,
//! leaves nothing half-done that a retry with the same key cannot finish, and the
//! shop recovers when the dependency is back.

use std::time::Duration;

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use shop_test_support::TcpProxy;
use tonic::Code;

use crate::helpers::{postgres_proxy, status, unique_key, TestShop};

/// Which service reaches Postgres through the proxy.
#[derive(Clone, Copy)]
enum Behind {
    Order,
    Inventory,
}

/// A shop whose `behind` service reaches Postgres through a proxy the test can cut.
async fn shop_with_postgres_proxy(behind: Behind) -> (TestShop, TcpProxy) {
    let proxy = postgres_proxy().await;
    let port = proxy.addr().port();
    let shop = TestShop::spawn_with(|inventory, order| {
        let database = match behind {
            Behind::Order => &mut order.common.database,
            Behind::Inventory => &mut inventory.common.database,
        };
        database.options = database.options.clone().port(port);
        database.acquire_timeout = Duration::from_secs(1);
    })
    .await;
    (shop, proxy)
}

#[tokio::test]
async fn etcd_unavailable_is_unavailable_with_nothing_written() {
    let shop = TestShop::spawn_with(|inventory, _| {
        inventory.common.etcd.config = coord::EtcdConfig::new("127.0.0.1:1").unwrap();
        inventory.common.etcd.config.connect_timeout = std::time::Duration::from_millis(200);
        inventory.lock_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    shop.set_stock_as("tea", 5, Some(Strategy::Mutex)).await;
    let err = shop
        .create(&unique_key(), &[("tea", 1)], Strategy::Mutex)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("nothing was reserved"), "{err:?}");
    assert_eq!(shop.order_count().await, 0, "no order left behind");
    let t = shop.truth("tea").await;
    assert_eq!(
        (t.level.available, t.level.reserved),
        (5, 0),
        "no stock taken"
    );
    shop.stop().await;
}

#[tokio::test]
async fn an_inventory_outage_leaves_a_pending_order_that_a_retry_completes() {
    let mut shop = TestShop::spawn().await;
    shop.set_stock("tea", 5).await;
    shop.stop_inventory().await;
    let key = unique_key();
    let err = shop
        .create(&key, &[("tea", 1)], Strategy::Pg)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("stays PENDING"), "{err:?}");

    shop.restart_inventory().await;
    let order = shop
        .create(&key, &[("tea", 1)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    assert_eq!(
        shop.order_count().await,
        1,
        "the retry resumed the same order"
    );
    shop.truth("tea").await.check(5).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn order_database_down_is_unavailable_and_a_retry_after_recovery_completes() {
    let (shop, proxy) = shop_with_postgres_proxy(Behind::Order).await;
    shop.set_stock("tea", 5).await;
    proxy.cut();
    let key = unique_key();
    let err = shop
        .create(&key, &[("tea", 1)], Strategy::Pg)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("database is unavailable"), "{err:?}");
    assert_eq!(shop.order_count().await, 0, "no order written");
    assert_eq!(shop.truth("tea").await.level.reserved, 0, "no stock taken");

    proxy.restore();
    let order = shop
        .create(&key, &[("tea", 1)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    assert_eq!(shop.order_count().await, 1);
    shop.stop().await;
}

#[tokio::test]
async fn inventory_database_down_is_unavailable_and_a_retry_after_recovery_completes() {
    let (shop, proxy) = shop_with_postgres_proxy(Behind::Inventory).await;
    shop.set_stock("tea", 5).await;
    proxy.cut();
    let key = unique_key();
    for strategy in [Strategy::Mutex, Strategy::Pg] {
        let key = format!("{key}-{strategy}");
        let err = shop
            .create(&key, &[("tea", 1)], strategy)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{strategy}: {err:?}");
        // Inventory could not even record the compensation, so the order waits.
        assert!(
            err.message().contains("stays PENDING"),
            "{strategy}: {err:?}"
        );
    }
    proxy.restore();
    for strategy in [Strategy::Mutex, Strategy::Pg] {
        shop.set_strategy("tea", strategy).await;
        let key = format!("{key}-{strategy}");
        let order = shop.create(&key, &[("tea", 1)], strategy).await.unwrap();
        assert_eq!(status(&order), pb::OrderStatus::Reserved, "{strategy}");
    }
    assert_eq!(shop.order_count().await, 2);
    shop.truth("tea").await.check(5).unwrap();
    shop.stop().await;
}
