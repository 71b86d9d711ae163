//! Every RPC refuses bad input with the right code and a message naming the field,
//! and leaves nothing behind.

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use tonic::Code;

use shop_test_support::{assert_rejections, only_status};

use crate::helpers::{create_request, unique_key, TestShop};

#[tokio::test]
async fn bad_input_is_rejected_with_a_clear_message() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 10).await;
    let c = shop.orders.clone();
    let good = || create_request(&unique_key(), &[("tea", 1)], Strategy::Pg);
    let with = |f: fn(&mut pb::CreateOrderRequest)| {
        let mut r = good();
        f(&mut r);
        r
    };
    let many: Vec<pb::LineItem> = (0..51)
        .map(|i| pb::LineItem {
            sku: format!("s{i}"),
            quantity: 1,
        })
        .collect();
    let too_many = {
        let mut r = good();
        r.items = many;
        r
    };
    let id = uuid::Uuid::new_v4().to_string();
    let result =
        |order_id: &str, ok: bool, payment_id: &str, reason: &str| pb::PaymentResultRequest {
            order_id: order_id.into(),
            ok,
            payment_id: payment_id.into(),
            reason: reason.into(),
        };

    assert_rejections(vec![
        (
            "empty key",
            only_status(
                c.clone()
                    .create_order(with(|r| r.idempotency_key.clear()))
                    .await,
            ),
            Code::InvalidArgument,
            "idempotency_key: must not be empty",
        ),
        (
            "key with space",
            only_status(
                c.clone()
                    .create_order(with(|r| r.idempotency_key = "a b".into()))
                    .await,
            ),
            Code::InvalidArgument,
            "idempotency_key: must be printable ASCII",
        ),
        (
            "key too long",
            only_status(
                c.clone()
                    .create_order(with(|r| r.idempotency_key = "k".repeat(129)))
                    .await,
            ),
            Code::InvalidArgument,
            "idempotency_key: must be at most 128 characters",
        ),
        (
            "empty customer",
            only_status(
                c.clone()
                    .create_order(with(|r| r.customer_id.clear()))
                    .await,
            ),
            Code::InvalidArgument,
            "customer_id: must not be empty",
        ),
        (
            "bad customer",
            only_status(
                c.clone()
                    .create_order(with(|r| r.customer_id = "bob/../x".into()))
                    .await,
            ),
            Code::InvalidArgument,
            "customer_id:",
        ),
        (
            "unknown tier",
            only_status(c.clone().create_order(with(|r| r.customer_tier = 9)).await),
            Code::InvalidArgument,
            "customer_tier: 9 is not a tier",
        ),
        (
            "empty cart",
            only_status(c.clone().create_order(with(|r| r.items.clear())).await),
            Code::InvalidArgument,
            "items: must have at least one line",
        ),
        (
            "oversized cart",
            only_status(c.clone().create_order(too_many).await),
            Code::InvalidArgument,
            "items: at most 50 lines",
        ),
        (
            "zero quantity",
            only_status(
                c.clone()
                    .create_order(with(|r| r.items[0].quantity = 0))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].quantity: must be at least 1, got 0",
        ),
        (
            "negative quantity",
            only_status(
                c.clone()
                    .create_order(with(|r| r.items[0].quantity = -5))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].quantity: must be at least 1, got -5",
        ),
        (
            "huge quantity",
            only_status(
                c.clone()
                    .create_order(with(|r| r.items[0].quantity = i32::MAX))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].quantity: must be at most 1000",
        ),
        (
            "empty sku",
            only_status(
                c.clone()
                    .create_order(with(|r| r.items[0].sku.clear()))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].sku: must not be empty",
        ),
        (
            "duplicate sku",
            only_status(
                c.clone()
                    .create_order(with(|r| r.items.push(r.items[0].clone())))
                    .await,
            ),
            Code::InvalidArgument,
            "items[1].sku: tea appears on more than one line",
        ),
        (
            "unknown strategy",
            only_status(c.clone().create_order(with(|r| r.strategy = -1)).await),
            Code::InvalidArgument,
            "strategy: -1 is not a strategy",
        ),
        (
            "bad sale id",
            only_status(
                c.clone()
                    .create_order(with(|r| r.sale_id = Some(String::new())))
                    .await,
            ),
            Code::InvalidArgument,
            "sale_id: must not be empty",
        ),
        (
            "get: malformed id",
            only_status(
                c.clone()
                    .get_order(pb::GetOrderRequest {
                        order_id: "abc".into(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "order_id: \"abc\" is not a UUID",
        ),
        (
            "get: empty id",
            only_status(
                c.clone()
                    .get_order(pb::GetOrderRequest {
                        order_id: "".into(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "order_id: must not be empty",
        ),
        (
            "result: malformed id",
            only_status(c.clone().payment_result(result("123", true, "p", "")).await),
            Code::InvalidArgument,
            "order_id: \"123\" is not a UUID",
        ),
        (
            "result: ok without payment id",
            only_status(c.clone().payment_result(result(&id, true, "", "")).await),
            Code::InvalidArgument,
            "payment_id: is required when ok is true",
        ),
        (
            "result: payment id too long",
            only_status(
                c.clone()
                    .payment_result(result(&id, true, &"p".repeat(129), ""))
                    .await,
            ),
            Code::InvalidArgument,
            "payment_id: must be at most 128 characters",
        ),
        (
            "result: reason too long",
            only_status(
                c.clone()
                    .payment_result(result(&id, false, "", &"r".repeat(501)))
                    .await,
            ),
            Code::InvalidArgument,
            "reason: must be at most 500 characters",
        ),
    ]);
    assert_eq!(shop.order_count().await, 0, "no order was created");
    assert_eq!(
        shop.truth("tea").await.level.reserved,
        0,
        "no stock was taken"
    );
    shop.stop().await;
}
