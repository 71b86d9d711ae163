//! Property tests of bad input, one per RPC: arbitrary and adversarial requests (see
//! `shop_test_support::properties`) against one real inventory service per
//! property. Each request is answered as its fields deserve — INVALID_ARGUMENT naming
//! a wrong field, or for a valid one success or a refusal that names its reason —
//! never INTERNAL, UNKNOWN or a broken connection; a refused request changes nothing
//! in the database or in etcd. The table test in `bad_input.rs` pins the exact
//! messages; these cover the space around them.

use std::time::Duration;

use inventory_service::catalog::{MAX_PRICES, MAX_PRICE_MINOR};
use inventory_service::grpc::MAX_STOCK;
use shop_proto::v1 as pb;
use shop_test_support::properties::{
    bounded_i64, check_requests, enum_value, id, id_from, keyed_list, lines, order_id,
    single_field, Case, Field, Snapshot,
};
use shop_test_support::proptest::prelude::*;

use crate::helpers::TestInventory;

const SKUS: [&str; 3] = ["tea", "cup", "pot"];
const OPEN_SALE: &str = "open-sale";
const CLOSED_SALE: &str = "closed-sale";

fn skus() -> Vec<String> {
    SKUS.map(String::from).to_vec()
}

fn sales() -> Vec<String> {
    vec![OPEN_SALE.into(), CLOSED_SALE.into()]
}

/// A service with stock and prices for [`SKUS`], an open and a closed sale; a sale
/// order waits only briefly for a closed sale.
async fn seeded() -> TestInventory {
    let app = TestInventory::spawn_with(|s| s.sale_wait = Duration::from_millis(50)).await;
    for sku in SKUS {
        app.set_stock(sku, 1_000_000).await;
    }
    app.set_prices(&SKUS, 250).await.unwrap();
    app.create_sale(OPEN_SALE, 5).await;
    app.open_sale(OPEN_SALE).await;
    app.create_sale(CLOSED_SALE, 0).await;
    app
}

/// The database and the etcd keys of `app`.
async fn snapshot(app: &TestInventory, etcd: &coord::etcd_client::Client) -> Snapshot {
    Snapshot::take([&app.pool], Some((etcd, &app.etcd_prefix))).await
}

/// Runs one RPC's property against a freshly seeded service.
macro_rules! property {
    ($name:literal, $strategy:expr, $rpc:ident) => {{
        let app = seeded().await;
        let etcd = app.etcd().await;
        check_requests(
            $name,
            $strategy,
            || snapshot(&app, &etcd),
            |request| {
                let mut client = app.client();
                async move { client.$rpc(request).await }
            },
        );
        app.stop().await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_stock_answers_every_request_cleanly() {
    let strategy = (id_from(skus()), bounded_i64(0..=MAX_STOCK)).prop_map(|(sku, available)| {
        let mut invalid = Vec::new();
        let request = pb::SetStockRequest {
            sku: sku.note("sku", &mut invalid),
            available: available.note("available", &mut invalid),
            strategy: 0,
        };
        Case { request, invalid }
    });
    property!("SetStock", strategy, set_stock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_stock_answers_every_request_cleanly() {
    let strategy = single_field("sku", id_from(skus()), |sku| pb::GetStockRequest { sku });
    property!("GetStock", strategy, get_stock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_answers_every_request_cleanly() {
    let strategy = (
        order_id(),
        lines("items", skus()),
        enum_value(0..=4),
        shop_test_support::proptest::option::of(id_from(sales())),
        prop_oneof![Just(String::new()), "[a-z]{1,8}"],
        id(),
    )
        .prop_map(|(order, cart, strategy, sale, plain_customer, customer)| {
            let mut invalid = cart.invalid;
            let order_id = order.note("order_id", &mut invalid);
            let strategy = strategy.note("strategy", &mut invalid);
            // Without a sale the customer may be empty; with one it must be valid.
            let (sale_id, customer_id) = match sale {
                Some(sale) => (
                    Some(sale.note("sale_id", &mut invalid)),
                    customer.note("customer_id", &mut invalid),
                ),
                None if customer.value.is_empty() => (None, plain_customer),
                None => (None, customer.note("customer_id", &mut invalid)),
            };
            Case {
                request: pb::ReserveRequest {
                    order_id,
                    items: cart.request,
                    strategy,
                    customer_id,
                    sale_id,
                },
                invalid,
            }
        });
    property!("Reserve", strategy, reserve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_answers_every_request_cleanly() {
    let strategy = single_field("order_id", order_id(), |order_id| pb::CommitRequest {
        order_id,
    });
    property!("Commit", strategy, commit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_answers_every_request_cleanly() {
    let strategy = single_field("order_id", order_id(), |order_id| pb::ReleaseRequest {
        order_id,
    });
    property!("Release", strategy, release);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sale_answers_every_request_cleanly() {
    let strategy = (
        id_from(sales()),
        bounded_i64(0..=i64::from(i32::MAX)).prop_filter_map("fits i32", |limit| {
            // The field is an int32: only the low end can be out of range on the wire.
            i32::try_from(limit.value).ok().map(|value| Field {
                value,
                valid: limit.valid,
            })
        }),
    )
        .prop_map(|(sale, limit)| {
            let mut invalid = Vec::new();
            let request = pb::CreateSaleRequest {
                sale_id: sale.note("sale_id", &mut invalid),
                per_customer_limit: limit.note("per_customer_limit", &mut invalid),
            };
            Case { request, invalid }
        });
    property!("CreateSale", strategy, create_sale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sale_answers_every_request_cleanly() {
    let strategy = single_field("sale_id", id_from(sales()), |sale_id| pb::OpenSaleRequest {
        sale_id,
    });
    property!("OpenSale", strategy, open_sale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sale_answers_every_request_cleanly() {
    let strategy = single_field("sale_id", id_from(sales()), |sale_id| pb::GetSaleRequest {
        sale_id,
    });
    property!("GetSale", strategy, get_sale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_prices_answers_every_request_cleanly() {
    let strategy = keyed_list(
        "prices",
        skus(),
        bounded_i64(0..=MAX_PRICE_MINOR),
        "unit_price_minor",
        MAX_PRICES,
    )
    .prop_map(|case| Case {
        request: pb::SetPricesRequest {
            prices: case
                .request
                .into_iter()
                .map(|(sku, unit_price_minor)| pb::Price {
                    sku,
                    unit_price_minor,
                })
                .collect(),
        },
        invalid: case.invalid,
    });
    property!("SetPrices", strategy, set_prices);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_answers_every_request_cleanly() {
    let strategy = lines("items", skus()).prop_map(|cart| Case {
        request: pb::QuoteRequest {
            items: cart.request,
        },
        invalid: cart.invalid,
    });
    property!("Quote", strategy, quote);
}
