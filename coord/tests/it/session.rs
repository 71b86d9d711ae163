//! Session: keepalive, loss detection, orphan/resume, close.

use std::time::Duration;

use coord::etcd_client::PutOptions;
use coord::{Error, Session};

use crate::common::{client, keys_under, session, unique};

#[tokio::test]
async fn keepalive_holds_the_lease_past_its_ttl() {
    let s = session(2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!s.is_expired());
    let ttl = s
        .client()
        .lease_time_to_live(s.lease(), None)
        .await
        .unwrap()
        .ttl();
    assert!(ttl > 0, "lease should still be alive, ttl={ttl}");
}

#[tokio::test]
async fn done_resolves_when_the_lease_is_revoked_elsewhere() {
    let s = session(10).await;
    assert!(!s.is_expired());
    client().await.lease_revoke(s.lease()).await.unwrap();
    coord::timeout(Duration::from_secs(10), async {
        s.done().await;
        Ok(())
    })
    .await
    .expect("done() resolves after revoke");
    assert!(s.is_expired());
}

#[tokio::test]
async fn close_revokes_and_deletes_attached_keys() {
    let s = session(10).await;
    let prefix = unique("session-close");
    let key = format!("{prefix}/k");
    s.client()
        .put(
            key.as_str(),
            "v",
            Some(PutOptions::new().with_lease(s.lease())),
        )
        .await
        .unwrap();
    let c = s.client();
    s.close().await.unwrap();
    assert!(keys_under(&c, &prefix).await.is_empty());
}

#[tokio::test]
async fn orphaned_lease_can_be_resumed_by_another_session() {
    let first = session(5).await;
    let lease = first.lease();
    first.orphan();
    first.done().await; // orphaning ends this handle's liveness
    let resumed = Session::builder(client().await)
        .lease(lease)
        .build()
        .await
        .expect("resume");
    assert_eq!(resumed.lease(), lease);
    assert_eq!(resumed.ttl(), 5);
    // The resumed session keeps it alive beyond the original TTL.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!resumed.is_expired());
    resumed.close().await.unwrap();
}

#[tokio::test]
async fn resuming_a_missing_lease_is_a_typed_error() {
    let err = Session::builder(client().await)
        .lease(0x7fff_0000_dead)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SessionExpired(_)), "{err:?}");
}

#[tokio::test]
async fn bad_ttl_is_invalid_argument() {
    let err = Session::builder(client().await)
        .ttl(0)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn a_resumed_session_with_no_keepalive_through_is_lost_no_later_than_its_lease() {
    // A lease granted 4 s, resumed once etcd gives it at most 2 s more.
    let mut c = client().await;
    let lease = c.lease_grant(4, None).await.unwrap().id();
    loop {
        let left = c.lease_time_to_live(lease, None).await.unwrap().ttl();
        if left <= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No keepalive of the resumed session gets through: it lives on its local deadline.
    coord::test_hooks::silence_keepalives(lease);
    let resumed = Session::builder(c.clone())
        .lease(lease)
        .build()
        .await
        .unwrap();
    // The moment: etcd has expired the lease (TTL -1; 0 means under a second left).
    loop {
        if c.lease_time_to_live(lease, None).await.unwrap().ttl() < 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        resumed.is_expired(),
        "etcd expired the lease but the resumed session still believes it is alive \
         (its deadline came from the granted TTL, not the remaining one)"
    );
}
