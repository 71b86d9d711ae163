//! The order service's knockout (see `services/inventory/tests/api/knockouts.rs` and
//! `scripts/knockouts.sh`): compiled only with the test-only feature that removes the
//! guard.

#![allow(unused_imports)]

use shop_common::domain::Strategy;

use crate::helpers::{unique_key, TestShop};

/// The idempotency key: twenty clients racing with one key must make one order. With
/// the key's guard removed (the insert no longer yields to an existing key, and the
/// test drops the unique index in its own database) each makes its own.
#[cfg(feature = "knockout-idempotency-key")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_idempotency_key_one_key_makes_many_orders() {
    let shop = TestShop::spawn().await;
    sqlx::query("ALTER TABLE orders DROP CONSTRAINT orders_customer_idempotency_key")
        .execute(&shop.order_pool)
        .await
        .unwrap();
    shop.set_stock("tea", 100).await;
    let key = unique_key();
    let racers = (0..20).map(|_| shop.create(&key, &[("tea", 2)], Strategy::Pg));
    futures::future::join_all(racers).await;
    // The auditor's question: orders beyond the first per idempotency key.
    let extra: i64 =
        sqlx::query_scalar("SELECT count(*) - count(DISTINCT idempotency_key) FROM orders")
            .fetch_one(&shop.order_pool)
            .await
            .unwrap();
    eprintln!("KNOCKOUT guard=idempotency-key scenario=\"20 CreateOrders racing with one key\" violations={extra}");
    assert!(extra > 0, "the key knocked out, yet one order");
    shop.stop().await;
}
