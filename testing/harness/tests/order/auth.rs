//! The customer API and the internal API: a customer reaches CreateOrder, GetOrder and
//! the read-only queries; PaymentResult, Reserve/Commit/Release and the admin calls
//! need the internal token, and a call without it changes nothing. The services call
//! each other with the token (order → inventory here), the operator's client with it.

use shop_common::auth::InternalToken;
use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use tonic::Code;

use crate::helpers::{channel, status, unique_key, TestShop};

/// The order's status and its SKU's stock, straight from the two databases.
async fn state(
    shop: &TestShop,
    order_id: &str,
) -> (String, inventory_service::repository::StockAudit) {
    let order: String = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1::uuid")
        .bind(order_id)
        .fetch_one(&shop.order_pool)
        .await
        .unwrap();
    (order, shop.truth("tea").await)
}

#[tokio::test]
async fn a_customer_cannot_call_payment_result_commit_or_admin_calls_and_nothing_changes() {
    let token = InternalToken::random();
    let shop = TestShop::spawn_with(|inventory, order| {
        inventory.common.internal_token = Some(token.clone());
        order.common.internal_token = Some(token.clone());
    })
    .await;
    let operator_stock = InventoryServiceClient::with_interceptor(
        channel(shop.inventory().uri()),
        token.interceptor(),
    );
    operator_stock
        .clone()
        .set_stock(pb::SetStockRequest {
            sku: "tea".into(),
            available: 5,
            strategy: Strategy::Pg.to_proto() as i32,
        })
        .await
        .expect("the operator stocks with the token");

    // The customer's own calls work (and order → inventory's Reserve carried the token).
    let order = shop
        .create(&unique_key(), &[("tea", 2)], Strategy::Pg)
        .await
        .expect("a customer orders");
    assert_eq!(status(&order), pb::OrderStatus::Reserved);
    shop.get(&order.order_id)
        .await
        .expect("a customer reads its order");
    shop.stock
        .clone()
        .get_stock(pb::GetStockRequest { sku: "tea".into() })
        .await
        .expect("a customer reads stock");
    let before = state(&shop, &order.order_id).await;

    // A customer (no token) and an impostor (a wrong token).
    let impostor = InternalToken::random();
    let impostor_orders =
        OrderServiceClient::with_interceptor(channel(shop.order.uri()), impostor.interceptor());
    let impostor_stock = InventoryServiceClient::with_interceptor(
        channel(shop.inventory().uri()),
        impostor.interceptor(),
    );
    let paid = pb::PaymentResultRequest {
        order_id: order.order_id.clone(),
        ok: true,
        payment_id: "forged".into(),
        reason: String::new(),
    };
    let commit = pb::CommitRequest {
        order_id: order.order_id.clone(),
    };
    let refusals = [
        (
            "PaymentResult",
            shop.orders
                .clone()
                .payment_result(paid.clone())
                .await
                .map(drop),
        ),
        (
            "Commit",
            shop.stock.clone().commit(commit.clone()).await.map(drop),
        ),
        (
            "Release",
            shop.stock
                .clone()
                .release(pb::ReleaseRequest {
                    order_id: order.order_id.clone(),
                })
                .await
                .map(drop),
        ),
        (
            "SetStock",
            shop.stock
                .clone()
                .set_stock(pb::SetStockRequest {
                    sku: "tea".into(),
                    available: 1000,
                    strategy: 0,
                })
                .await
                .map(drop),
        ),
        (
            "Reserve",
            shop.stock
                .clone()
                .reserve(pb::ReserveRequest {
                    order_id: uuid::Uuid::new_v4().to_string(),
                    items: vec![pb::LineItem {
                        sku: "tea".into(),
                        quantity: 3,
                    }],
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
    ];
    for (call, answer) in refusals {
        let err = answer.expect_err(call);
        assert_eq!(
            err.code(),
            Code::Unauthenticated,
            "{call} without a token: {err:?}"
        );
    }
    for (call, answer) in [
        (
            "PaymentResult",
            impostor_orders
                .clone()
                .payment_result(paid.clone())
                .await
                .map(drop),
        ),
        (
            "Commit",
            impostor_stock
                .clone()
                .commit(commit.clone())
                .await
                .map(drop),
        ),
    ] {
        let err = answer.expect_err(call);
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{call} with a wrong token: {err:?}"
        );
    }
    assert_eq!(
        state(&shop, &order.order_id).await,
        before,
        "the refused calls changed nothing: the order is still RESERVED, the stock as it was"
    );

    // The same call with the token goes through: the refusals were about the caller.
    let operator_orders =
        OrderServiceClient::with_interceptor(channel(shop.order.uri()), token.interceptor());
    let order = operator_orders
        .clone()
        .payment_result(paid)
        .await
        .expect("PaymentResult with the token")
        .into_inner();
    assert_eq!(status(&order), pb::OrderStatus::Paid);
    shop.stop().await;
}
