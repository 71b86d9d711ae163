//! The provider permits a process keeps across charges (`payment_service::permits`),
//! checked in etcd's own record of writes: one permit taken for a run of charges and
//! given back after `MAX_USES`, given back when idle, never used again once the
//! session it was taken under is lost.

use std::future::Future;
use std::time::Duration;

use coord::etcd_client::{Client, EventType, GetOptions, WatchOptions};
use payment_service::permits::MAX_USES;
use payment_service::provider::{ChargeRequest, SimulatedProvider};
use uuid::Uuid;

use crate::helpers::Shop;

/// The puts and deletes etcd committed under `dir` (the provider semaphore's keys)
/// while `work` ran: a watch opened before it, read up to a marker key written after it.
async fn writes_under<F: Future>(
    client: &Client,
    dir: &str,
    work: F,
) -> (F::Output, Vec<(EventType, i64)>) {
    let parent = dir
        .trim_end_matches('/')
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string()
        + "/";
    let mut client = client.clone();
    let mut stream = client
        .watch(parent.clone(), Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let output = work.await;
    let marker = format!("{parent}~marker-{}", Uuid::new_v4());
    client.put(marker.clone(), "", None).await.unwrap();
    let mut seen = Vec::new();
    'read: while let Some(message) = stream.message().await.unwrap() {
        for event in message.events() {
            let kv = event.kv().unwrap();
            let key = kv.key_str().unwrap();
            if key == marker {
                break 'read;
            }
            if key.starts_with(dir) {
                seen.push((event.event_type(), kv.lease()));
            }
        }
    }
    client.delete(marker, None).await.unwrap();
    (output, seen)
}

fn puts(seen: &[(EventType, i64)]) -> usize {
    seen.iter().filter(|(t, _)| *t == EventType::Put).count()
}

fn deletes(seen: &[(EventType, i64)]) -> usize {
    seen.iter().filter(|(t, _)| *t == EventType::Delete).count()
}

async fn charge(provider: &SimulatedProvider) {
    let charge = provider
        .authorize(&ChargeRequest {
            order_id: Uuid::new_v4(),
            amount_minor: 500,
            capture: true,
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert!(charge.ok(), "{charge:?}");
}

/// An idle time no step of a test reaches: the permit stays kept however long the
/// process takes to notice its lost session.
const KEPT_THROUGH_THE_TEST: Duration = Duration::from_secs(600);

fn semaphore_dir(shop: &Shop) -> String {
    format!("{}/semaphores/provider/", shop.etcd_prefix)
}

#[tokio::test]
async fn back_to_back_charges_take_one_permit_from_etcd_per_max_uses() {
    let shop = Shop::spawn(|_| {}, false).await;
    let (provider, _pool, etcd) = shop.provider_of_its_own(|_| {}).await;
    let client = etcd.client().await.unwrap();
    let dir = semaphore_dir(&shop);

    let n = MAX_USES as usize + 2;
    let ((), seen) = writes_under(&client, &dir, async {
        for _ in 0..n {
            charge(&provider).await;
        }
    })
    .await;
    // Taken once, given back after MAX_USES charges, taken again for the last two —
    // instead of a take and a give-back per charge (2 × n writes).
    assert_eq!(
        (puts(&seen), deletes(&seen)),
        (2, 1),
        "{n} charges: {seen:?}"
    );
    assert_eq!(
        provider.permits().kept(),
        1,
        "the last permit is kept for the next charge"
    );
    etcd.close().await;
    shop.stop().await;
}

#[tokio::test]
async fn a_kept_permit_goes_back_to_etcd_once_idle() {
    let shop = Shop::spawn(|_| {}, false).await;
    let (provider, _pool, etcd) = shop.provider_of_its_own(|_| {}).await;
    let mut client = etcd.client().await.unwrap();
    let dir = semaphore_dir(&shop);

    charge(&provider).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = client
            .get(
                dir.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap()
            .count();
        if held == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "an idle process still holds {held} provider permit(s) after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(provider.permits().kept(), 0);
    etcd.close().await;
    shop.stop().await;
}

#[tokio::test]
async fn a_permit_kept_under_a_lost_session_is_not_used_again() {
    let shop = Shop::spawn(|_| {}, false).await;
    let (provider, _pool, etcd) = shop
        .provider_of_its_own(|p| p.permit_idle = KEPT_THROUGH_THE_TEST)
        .await;
    let mut client = etcd.client().await.unwrap();
    let dir = semaphore_dir(&shop);

    charge(&provider).await;
    let kept = client
        .get(dir.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let old_lease = kept.kvs().first().expect("the kept permit's key").lease();
    assert_eq!(provider.permits().kept(), 1);
    client.lease_revoke(old_lease).await.unwrap();
    // The process notices (its keepalive is refused) and starts a new session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let new_lease = loop {
        let lease = etcd.get().await.unwrap().lease();
        if lease != old_lease {
            break lease;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let ((), seen) = writes_under(&client, &dir, charge(&provider)).await;
    // The kept permit's key went with the old lease (another process may hold that
    // permit now): the charge must take a new one under the new session.
    assert_eq!(
        seen.iter()
            .filter(|(t, lease)| *t == EventType::Put && *lease == new_lease)
            .count(),
        1,
        "a new permit under the new session: {seen:?}"
    );
    etcd.close().await;
    shop.stop().await;
}
