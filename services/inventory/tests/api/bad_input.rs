//! Every RPC refuses bad input with the right code and a message naming the field.

use shop_proto::v1 as pb;
use tonic::Code;

use shop_test_support::{assert_rejections, only_status};

use crate::helpers::{lines, new_order_id, TestInventory};

fn reserve(order_id: &str, items: &[(&str, i32)], strategy: i32) -> pb::ReserveRequest {
    pb::ReserveRequest {
        order_id: order_id.into(),
        items: lines(items),
        strategy,
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_input_is_rejected_with_a_clear_message() {
    let app = TestInventory::spawn().await;
    app.set_stock("known", 10).await;
    let c = app.client();
    let ok_id = new_order_id();
    let pg = pb::Strategy::Pg as i32;
    let long_sku = "x".repeat(65);
    let many: Vec<(String, i32)> = (0..51).map(|i| (format!("s{i}"), 1)).collect();
    let many: Vec<(&str, i32)> = many.iter().map(|(s, q)| (s.as_str(), *q)).collect();

    assert_rejections(vec![
        (
            "set_stock empty sku",
            only_status(
                c.clone()
                    .set_stock(pb::SetStockRequest {
                        sku: "".into(),
                        available: 1,
                        strategy: 0,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "sku: must not be empty",
        ),
        (
            "set_stock sku with slash",
            only_status(
                c.clone()
                    .set_stock(pb::SetStockRequest {
                        sku: "a/b".into(),
                        available: 1,
                        strategy: 0,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "sku: \"a/b\" contains '/'",
        ),
        (
            "set_stock long sku",
            only_status(
                c.clone()
                    .set_stock(pb::SetStockRequest {
                        sku: long_sku.clone(),
                        available: 1,
                        strategy: 0,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "at most 64 characters",
        ),
        (
            "set_stock negative",
            only_status(
                c.clone()
                    .set_stock(pb::SetStockRequest {
                        sku: "known".into(),
                        available: -1,
                        strategy: 0,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "available: must be between 0",
        ),
        (
            "get_stock empty sku",
            only_status(
                c.clone()
                    .get_stock(pb::GetStockRequest { sku: "".into() })
                    .await,
            ),
            Code::InvalidArgument,
            "sku: must not be empty",
        ),
        (
            "get_stock unknown sku",
            only_status(
                c.clone()
                    .get_stock(pb::GetStockRequest { sku: "nope".into() })
                    .await,
            ),
            Code::NotFound,
            "unknown SKU nope",
        ),
        (
            "reserve malformed order id",
            only_status(
                c.clone()
                    .reserve(reserve("order-1", &[("known", 1)], pg))
                    .await,
            ),
            Code::InvalidArgument,
            "order_id: \"order-1\" is not a UUID",
        ),
        (
            "reserve empty order id",
            only_status(c.clone().reserve(reserve("", &[("known", 1)], pg)).await),
            Code::InvalidArgument,
            "order_id: must not be empty",
        ),
        (
            "reserve empty cart",
            only_status(c.clone().reserve(reserve(&ok_id, &[], pg)).await),
            Code::InvalidArgument,
            "items: must have at least one line",
        ),
        (
            "reserve zero quantity",
            only_status(
                c.clone()
                    .reserve(reserve(&ok_id, &[("known", 0)], pg))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].quantity: must be at least 1, got 0",
        ),
        (
            "reserve negative quantity",
            only_status(
                c.clone()
                    .reserve(reserve(&ok_id, &[("known", -3)], pg))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].quantity: must be at least 1, got -3",
        ),
        (
            "reserve huge quantity",
            only_status(
                c.clone()
                    .reserve(reserve(&ok_id, &[("known", 1001)], pg))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].quantity: must be at most 1000",
        ),
        (
            "reserve duplicate sku",
            only_status(
                c.clone()
                    .reserve(reserve(&ok_id, &[("known", 1), ("known", 2)], pg))
                    .await,
            ),
            Code::InvalidArgument,
            "items[1].sku: known appears on more than one line",
        ),
        (
            "reserve oversized cart",
            only_status(c.clone().reserve(reserve(&ok_id, &many, pg)).await),
            Code::InvalidArgument,
            "items: at most 50 lines",
        ),
        (
            "reserve bad sku",
            only_status(
                c.clone()
                    .reserve(reserve(&ok_id, &[("bad sku", 1)], pg))
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].sku",
        ),
        (
            "reserve unknown strategy",
            only_status(
                c.clone()
                    .reserve(reserve(&ok_id, &[("known", 1)], 42))
                    .await,
            ),
            Code::InvalidArgument,
            "strategy: 42 is not a strategy",
        ),
        (
            "reserve unknown skus",
            only_status(
                c.clone()
                    .reserve(reserve(
                        &ok_id,
                        &[("known", 1), ("ghost", 1), ("phantom", 1)],
                        pg,
                    ))
                    .await,
            ),
            Code::NotFound,
            "unknown SKU(s): ghost, phantom",
        ),
        (
            "commit malformed id",
            only_status(
                c.clone()
                    .commit(pb::CommitRequest {
                        order_id: "42".into(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "order_id: \"42\" is not a UUID",
        ),
        (
            "release malformed id",
            only_status(
                c.clone()
                    .release(pb::ReleaseRequest {
                        order_id: "".into(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "order_id: must not be empty",
        ),
        (
            "reserve in a sale without a customer",
            only_status(
                c.clone()
                    .reserve(pb::ReserveRequest {
                        sale_id: Some("s1".into()),
                        ..reserve(&ok_id, &[("known", 1)], pg)
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "customer_id: must not be empty",
        ),
        (
            "reserve with a malformed sale id",
            only_status(
                c.clone()
                    .reserve(pb::ReserveRequest {
                        sale_id: Some("a b".into()),
                        customer_id: "c1".into(),
                        ..reserve(&ok_id, &[("known", 1)], pg)
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "sale_id: \"a b\" contains ' '",
        ),
        (
            "create_sale negative limit",
            only_status(
                c.clone()
                    .create_sale(pb::CreateSaleRequest {
                        sale_id: "s1".into(),
                        per_customer_limit: -1,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "per_customer_limit: must be 0 (no limit) or more, got -1",
        ),
        (
            "create_sale empty id",
            only_status(
                c.clone()
                    .create_sale(pb::CreateSaleRequest {
                        sale_id: "".into(),
                        per_customer_limit: 1,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "sale_id: must not be empty",
        ),
        (
            "open_sale unknown",
            only_status(
                c.clone()
                    .open_sale(pb::OpenSaleRequest {
                        sale_id: "never-created".into(),
                    })
                    .await,
            ),
            Code::NotFound,
            "unknown sale never-created",
        ),
        (
            "set_prices empty",
            only_status(
                c.clone()
                    .set_prices(pb::SetPricesRequest { prices: vec![] })
                    .await,
            ),
            Code::InvalidArgument,
            "prices: must have at least one price",
        ),
        (
            "set_prices negative",
            only_status(
                c.clone()
                    .set_prices(pb::SetPricesRequest {
                        prices: vec![pb::Price {
                            sku: "known".into(),
                            unit_price_minor: -5,
                        }],
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "prices[0].unit_price_minor: must be between 0 and",
        ),
        (
            "set_prices duplicate",
            only_status(
                c.clone()
                    .set_prices(pb::SetPricesRequest {
                        prices: vec![
                            pb::Price {
                                sku: "known".into(),
                                unit_price_minor: 5,
                            },
                            pb::Price {
                                sku: "known".into(),
                                unit_price_minor: 6,
                            },
                        ],
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "prices[1].sku: known appears more than once",
        ),
        (
            "quote zero quantity",
            only_status(
                c.clone()
                    .quote(pb::QuoteRequest {
                        items: lines(&[("known", 0)]),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "items[0].quantity: must be at least 1, got 0",
        ),
        (
            "quote empty cart",
            only_status(c.clone().quote(pb::QuoteRequest { items: vec![] }).await),
            Code::InvalidArgument,
            "items: must have at least one line",
        ),
    ]);

    // None of it touched the stock or left a reservation.
    let t = app.truth("known").await;
    assert_eq!((t.available(), t.reserved()), (10, 0));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    app.stop().await;
}
