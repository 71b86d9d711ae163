//! Shared helpers for the integration tests.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use coord::etcd_client::{Client, GetOptions};
use coord::Session;

/// The etcd endpoints to test against: `ETCD_ENDPOINTS`, else a container
/// (see the `testkit` crate).
pub fn endpoints() -> Vec<String> {
    testkit::etcd_endpoints()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A fresh client (each simulated process gets its own connection).
#[track_caller]
pub fn client() -> impl Future<Output = Client> {
    let caller = std::panic::Location::caller();
    async move {
        Client::connect(endpoints(), None)
            .await
            .unwrap_or_else(|e| panic!("{caller}: cannot reach etcd at {:?}: {e}", endpoints()))
    }
}

/// A session with the given TTL on a fresh client.
pub async fn session(ttl: i64) -> Session {
    Session::builder(client().await)
        .ttl(ttl)
        .build()
        .await
        .expect("session")
}

/// A key prefix no other test uses: `/coord-test/<name>/<random>`.
pub fn unique(name: &str) -> String {
    format!("/coord-test/{name}/{:016x}", rand::random::<u64>())
}

/// The keys under `prefix/`, oldest first.
pub async fn keys_under(client: &Client, prefix: &str) -> Vec<String> {
    let resp = client
        .clone()
        .get(
            format!("{}/", prefix.trim_end_matches('/')),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(
                        coord::etcd_client::SortTarget::Create,
                        coord::etcd_client::SortOrder::Ascend,
                    )
                    .with_keys_only(),
            ),
        )
        .await
        .expect("get");
    resp.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`.
/// (A condition with a generous bound, not a timing assertion.)
#[track_caller]
pub fn eventually<F, Fut>(
    limit: Duration,
    what: &'static str,
    mut check: F,
) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if check().await {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{caller}: not true within {limit:?}: {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads an integer counter key (0 when absent).
pub async fn read_counter(client: &Client, key: &str) -> i64 {
    let resp = client.clone().get(key, None).await.expect("get");
    resp.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).parse().expect("number"))
        .unwrap_or(0)
}

/// The etcdctl binary: `ETCDCTL` if set, else the one on PATH
/// (`eval "$(scripts/install-deps.sh --env)"` puts etcd 3.5's there).
pub fn etcdctl() -> String {
    std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".to_owned())
}

/// Revokes `session`'s lease from another client; `waiter` (a task blocked under that
/// session) must then end, within a generous bound, with `Error::SessionExpired`.
pub async fn revoke_and_expect_expired(
    session: &Session,
    waiter: tokio::task::JoinHandle<coord::Result<()>>,
) {
    client().await.lease_revoke(session.lease()).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the wait ends when the session is lost")
        .unwrap();
    assert!(
        matches!(result, Err(coord::Error::SessionExpired(_))),
        "{result:?}"
    );
}
