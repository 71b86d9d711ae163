//! Property tests of bad input for every order RPC (see
//! `shop_test_support::properties`): one real order service (with its inventory)
//! per property; each answer matches the request's fields, and a refused request
//! leaves both databases as they were. `bad_input.rs` pins the exact messages.

use shop_proto::v1 as pb;
use shop_test_support::properties::{
    check_requests, enum_value, id, id_from, lines, order_id, single_field, text, Case, Field,
    Snapshot,
};
use shop_test_support::proptest::prelude::*;

use crate::helpers::TestShop;

const SKUS: [&str; 3] = ["tea", "cup", "pot"];

fn skus() -> Vec<String> {
    SKUS.map(String::from).to_vec()
}

async fn seeded() -> TestShop {
    let shop = TestShop::spawn().await;
    for sku in SKUS {
        shop.set_stock(sku, 1_000_000).await;
    }
    shop
}

/// A printable-ASCII token of `1..=max` characters (idempotency keys, payment ids),
/// or one that is empty (when `empty_ok` is false), too long, or has a space or a
/// character outside ASCII.
fn token(max: usize, empty_ok: bool) -> impl Strategy<Value = Field<String>> {
    let ok =
        || shop_test_support::proptest::string::string_regex(&format!("[!-~]{{1,{max}}}")).unwrap();
    prop_oneof![
        4 => ok().prop_map(|value| Field { value, valid: true }),
        1 => Just(Field { value: String::new(), valid: empty_ok }),
        1 => shop_test_support::proptest::string::string_regex(&format!("[!-~]{{{},{}}}", max + 1, max * 2))
            .unwrap()
            .prop_map(|value| Field { value, valid: false }),
        1 => (ok(), prop_oneof![Just(' '), Just('\t'), Just('é'), Just('\u{0}'), Just('🦀')])
            .prop_map(|(head, bad)| Field { value: format!("{head}{bad}"), valid: false }),
    ]
}

/// Runs one RPC's property against a freshly seeded shop.
macro_rules! property {
    ($name:literal, $strategy:expr, $rpc:ident) => {{
        let shop = seeded().await;
        check_requests(
            $name,
            $strategy,
            || Snapshot::take([&shop.order_pool, &shop.inventory_pool], None),
            |request| {
                let mut client = shop.orders.clone();
                async move { client.$rpc(request).await }
            },
        );
        shop.stop().await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_order_answers_every_request_cleanly() {
    let strategy = (
        token(128, false),
        id(),
        enum_value(0..=3),
        lines("items", skus()),
        enum_value(0..=4),
        shop_test_support::proptest::option::of(id_from(vec!["no-such-sale".into()])),
    )
        .prop_map(|(key, customer, tier, cart, strategy, sale)| {
            let mut invalid = cart.invalid;
            let request = pb::CreateOrderRequest {
                idempotency_key: key.note("idempotency_key", &mut invalid),
                customer_id: customer.note("customer_id", &mut invalid),
                customer_tier: tier.note("customer_tier", &mut invalid),
                items: cart.request,
                strategy: strategy.note("strategy", &mut invalid),
                sale_id: sale.map(|s| s.note("sale_id", &mut invalid)),
            };
            Case { request, invalid }
        });
    property!("CreateOrder", strategy, create_order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_order_answers_every_request_cleanly() {
    let strategy = single_field("order_id", order_id(), |order_id| pb::GetOrderRequest {
        order_id,
    });
    property!("GetOrder", strategy, get_order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_result_answers_every_request_cleanly() {
    let strategy = (order_id(), any::<bool>(), token(128, true), text(500)).prop_map(
        |(order, ok, payment_id, reason)| {
            let mut invalid = Vec::new();
            let order_id = order.note("order_id", &mut invalid);
            // A capture must say which payment paid.
            let payment_ok = payment_id.valid && !(ok && payment_id.value.is_empty());
            let payment_id = Field {
                valid: payment_ok,
                value: payment_id.value,
            }
            .note("payment_id", &mut invalid);
            let reason = reason.note("reason", &mut invalid);
            Case {
                request: pb::PaymentResultRequest {
                    order_id,
                    ok,
                    payment_id,
                    reason,
                },
                invalid,
            }
        },
    );
    property!("PaymentResult", strategy, payment_result);
}
