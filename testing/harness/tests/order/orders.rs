//! CreateOrder and GetOrder: reserve, reject, refuse.

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{status, unique_key, TestShop};

#[tokio::test]
async fn create_order_reserves_stock() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    shop.set_stock("cup", 10).await;
    let order = shop
        .create(&unique_key(), &[("tea", 2), ("cup", 1)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    assert_eq!(order.strategy, pb::Strategy::Pg as i32);
    assert_eq!(order.customer_tier, pb::CustomerTier::Gold as i32);
    assert_eq!(order.items.len(), 2);
    assert_eq!(shop.truth("tea").await.level.reserved, 2);
    assert_eq!(shop.truth("cup").await.level.reserved, 1);
    assert_eq!(shop.get(&order.order_id).await.unwrap(), order);
    shop.stop().await;
}

#[tokio::test]
async fn an_unspecified_strategy_is_the_skus() {
    let shop = TestShop::spawn().await;
    shop.set_stock_as("tea", 1, Some(Strategy::Stm)).await;
    let mut request = crate::helpers::create_request(&unique_key(), &[("tea", 1)], Strategy::Pg);
    request.strategy = pb::Strategy::Unspecified as i32;
    let order = shop
        .orders
        .clone()
        .create_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.strategy, pb::Strategy::Stm as i32);
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    // Repeating the request (strategy still unspecified) is the same order.
    let again = shop
        .orders
        .clone()
        .create_order(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.order_id, order.order_id);
    shop.stop().await;
}

#[tokio::test]
async fn an_order_asking_for_another_strategy_than_the_skus_is_refused() {
    let shop = TestShop::spawn().await;
    shop.set_stock_as("tea", 5, Some(Strategy::Mutex)).await;
    let err = shop
        .create(&unique_key(), &[("tea", 1)], Strategy::None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .starts_with("SKU tea is guarded by strategy mutex, the request asked for none"),
        "{}",
        err.message()
    );
    assert_eq!(shop.order_count().await, 0, "no order kept");
    assert_eq!(
        shop.truth("tea").await.level.available,
        5,
        "nothing reserved"
    );
    shop.stop().await;
}

#[tokio::test]
async fn out_of_stock_is_a_rejected_order_with_a_reason() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 1).await;
    let key = unique_key();
    for strategy in [Strategy::Mutex, Strategy::Pg] {
        shop.set_strategy("tea", strategy).await;
        let key = format!("{key}-{strategy}");
        let order = shop.create(&key, &[("tea", 2)], strategy).await.unwrap();
        assert_eq!(status(&order), pb::OrderStatus::Rejected);
        assert_eq!(
            order.status_reason,
            "out of stock: tea (wanted 2, 1 available)"
        );
        // Asking again with the key gives the same answer, not a second attempt.
        let again = shop.create(&key, &[("tea", 2)], strategy).await.unwrap();
        assert_eq!(again.order_id, order.order_id);
        assert_eq!(status(&again), pb::OrderStatus::Rejected);
    }
    shop.truth("tea").await.check(1).unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn an_unknown_sku_is_not_found_and_keeps_no_order() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 5).await;
    let key = unique_key();
    let err = shop
        .create(&key, &[("tea", 1), ("ghost", 1)], Strategy::Pg)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "unknown SKU(s): ghost");
    assert_eq!(shop.order_count().await, 0, "no order kept");
    assert_eq!(
        shop.truth("tea").await.level.available,
        5,
        "nothing reserved"
    );
    // Once the SKU exists, the same key goes through.
    shop.set_stock("ghost", 1).await;
    let order = shop
        .create(&key, &[("tea", 1), ("ghost", 1)], Strategy::Pg)
        .await
        .unwrap();
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    shop.stop().await;
}

#[tokio::test]
async fn an_stm_order_is_reserved_like_any_other() {
    let shop = TestShop::spawn().await;
    shop.set_stock_as("tea", 5, Some(Strategy::Stm)).await;
    let order = shop
        .create(&unique_key(), &[("tea", 2)], Strategy::Stm)
        .await
        .unwrap();
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    assert_eq!(order.strategy, pb::Strategy::Stm as i32);
    let t = shop.truth("tea").await;
    assert_eq!((t.level.available, t.level.reserved), (3, 2));
    shop.stop().await;
}

#[tokio::test]
async fn get_order_of_an_unknown_id_is_not_found() {
    let shop = TestShop::spawn().await;
    let id = uuid::Uuid::new_v4().to_string();
    let err = shop.get(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), format!("order {id} does not exist"));
    shop.stop().await;
}

#[tokio::test]
async fn list_leaders_reports_the_expiry_job() {
    let shop = TestShop::spawn().await;
    let leaders = shop
        .orders
        .clone()
        .list_leaders(pb::ListLeadersRequest {})
        .await
        .unwrap()
        .into_inner();
    let jobs: Vec<_> = leaders.leaders.iter().map(|l| l.job.as_str()).collect();
    assert_eq!(jobs, ["expire-reservations"]);
    shop.stop().await;
}
