//! Property test of bad input for the payment service's one RPC with input,
//! GetPayment (QueueDepth and ListLeaders take no fields): see
//! `shop_test_support::properties`. A refused request changes nothing stored.

use shop_proto::v1 as pb;
use shop_test_support::properties::{check_requests, order_id, single_field, Snapshot};

use crate::helpers::Shop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_payment_answers_every_request_cleanly() {
    let shop = Shop::spawn(|_| {}, true).await;
    let payments = shop.payments().await;
    check_requests(
        "GetPayment",
        single_field("order_id", order_id(), |order_id| pb::GetPaymentRequest {
            order_id,
        }),
        || Snapshot::take([&shop.payment_pool], None),
        |request| {
            let mut client = payments.clone();
            async move { client.get_payment(request).await }
        },
    );
    shop.stop().await;
}
