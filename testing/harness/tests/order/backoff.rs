//! Clients back off: against a service that cannot be reached, the shop's retry
//! helper makes a bounded number of calls in a window (exponential pauses with full
//! jitter), not a tight loop. The outage is real: a proxy in front of the inventory
//! service, cut. The bound is exact for the seeded jitter: no more calls than the
//! pauses drawn with the same seed leave room for in the window.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shop_common::retry::Backoff;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_test_support::TcpProxy;

use crate::helpers::{channel, TestShop};

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

    // The most calls the window has room for: the pauses alone (same seed) must fit.
    let schedule = policy(window);
    let (mut paused, mut most) = (Duration::ZERO, 1);
    loop {
        let pause = schedule.pause(most);
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
