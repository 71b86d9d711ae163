//! Clients back off: against a service that cannot be reached, the shop's retry
//! helper makes a bounded number of calls in a window (exponential pauses with full
//! jitter), not a tight loop. The outage is real: a proxy in front of the inventory
//! service, cut. The bound is exact for the seeded jitter: no more calls than the
//! pauses drawn with the same seed leave room for in the window (drawn by the test from
//! the policy's definition, not by the helper it checks).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use shop_common::retry::Backoff;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_test_support::TcpProxy;

use crate::helpers::{attempt_through, channel, unique_key, TestShop};
use crate::idempotency::alices_tea_order;

const SEED: u64 = 42;

fn policy(window: Duration) -> Backoff {
    Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(2),
        u32::MAX,
        window,
    )
    .seeded(SEED)
}

#[tokio::test]
async fn a_client_backs_off_while_its_service_is_cut_off() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 1).await;
    let proxy = TcpProxy::start(shop.inventory().addr()).await;
    let client = InventoryServiceClient::new(channel(format!("http://{}", proxy.addr())));
    let get = pb::GetStockRequest { sku: "tea".into() };
    client
        .clone()
        .get_stock(get.clone())
        .await
        .expect("reachable through the proxy");

    proxy.cut();
    let window = Duration::from_secs(2);
    let calls = AtomicU32::new(0);
    let answer = policy(window)
        .retry(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            let (mut client, get) = (client.clone(), get.clone());
            async move { client.get_stock(get).await }
        })
        .await;
    let err = answer.unwrap_err();
    assert!(shop_common::retry::is_retryable(&err), "{err:?}");

    // The most calls the window has room for: the pauses alone must fit. The pauses
    // are drawn here from the policy's definition — exponential from 50 ms, capped at
    // 2 s, full jitter from the same seed — not asked of the helper, so a helper that
    // stopped pausing (or paused a fixed millisecond) exceeds the bound.
    let mut jitter = StdRng::seed_from_u64(SEED);
    let (mut paused, mut most) = (Duration::ZERO, 1u32);
    loop {
        let ceiling =
            (Duration::from_millis(50) * 2u32.pow(most.min(16) - 1)).min(Duration::from_secs(2));
        let pause = ceiling.mul_f64(jitter.random::<f64>());
        if paused + pause >= window {
            break;
        }
        paused += pause;
        most += 1;
    }
    let calls = calls.into_inner();
    eprintln!("BACKOFF calls={calls} bound={most} window={window:?}");
    assert!(calls >= 2, "UNAVAILABLE was retried ({calls} calls)");
    assert!(
        calls <= most,
        "{calls} calls in {window:?}: more than back-off allows ({most})"
    );
    proxy.restore();
    shop.stop().await;
}

/// The order service's own calls go through the same policy: a CreateOrder whose link
/// to inventory is cut retries its Reserve (and the compensating Release) a bounded
/// number of times — counted as connections the client opened to the cut proxy.
#[tokio::test]
async fn the_order_services_calls_to_inventory_retry_a_bounded_number_of_times() {
    let shop = TestShop::spawn().await;
    shop.set_stock("tea", 3).await;
    let proxy = TcpProxy::start(shop.inventory().addr()).await;
    let (saga, _failed, go) = attempt_through(&proxy, &shop, Duration::from_secs(2));
    go.notify_one(); // the saga's failure hook goes straight on
    proxy.cut();
    let before = proxy.connections();
    let answer = saga
        .create_order(alices_tea_order(
            &unique_key(),
            shop_common::domain::Strategy::Pg,
        ))
        .await;
    assert!(answer.is_err(), "inventory was cut off: {answer:?}");
    let tries = proxy.connections() - before;
    // Each failed call opens one connection; two spare for a reconnect the channel
    // makes by itself. A client retrying in a loop would open thousands.
    let most = 2 * u64::from(Backoff::default().max_attempts) + 2;
    eprintln!("BACKOFF order→inventory connections={tries} most={most}");
    assert!(tries >= 3, "the Reserve was retried ({tries} connections)");
    assert!(
        tries <= most,
        "{tries} connections: more than Reserve's and Release's retries allow ({most})"
    );
    proxy.restore();
    shop.stop().await;
}
