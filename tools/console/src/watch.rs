//! Following etcd: read the prefix, then watch it from the next revision, and every
//! second ask etcd how long the leases in view have left (which doubles as the check
//! that etcd still answers: a silent watch is normal, a failed read is not). Any
//! failure puts the banner up and starts again from a fresh read after a pause. Only
//! reads: get, watch, lease time-to-live.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use coord::etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use coord::EtcdConfig;

use crate::model::Kv;
use crate::state::Hub;

fn kv(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        lease: kv.lease(),
        create_rev: kv.create_revision(),
        mod_rev: kv.mod_revision(),
    }
}

/// Follows etcd forever (the task is aborted at shutdown).
pub async fn follow(config: EtcdConfig, hub: Arc<Hub>) {
    let mut pause = Duration::from_millis(250);
    loop {
        let started = tokio::time::Instant::now();
        let outcome = match config.connect().await {
            Ok(client) => follow_once(client, &hub).await,
            Err(e) => Err(format!("cannot connect to etcd: {e}")),
        };
        if let Err(message) = outcome {
            tracing::warn!(%message, "etcd: following again after a pause");
            hub.etcd_failed(message);
        }
        // A watch that ran a while starts the back-off again.
        if started.elapsed() > Duration::from_secs(5) {
            pause = Duration::from_millis(250);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One read + watch, until something fails.
async fn follow_once(mut client: Client, hub: &Hub) -> Result<(), String> {
    let dir = format!("{}/", hub.prefix());
    let read = client
        .get(dir.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("etcd read failed: {e}"))?;
    let revision = read.header().map(|h| h.revision()).unwrap_or(0);
    hub.resync(read.kvs().iter().map(kv).collect(), revision);
    let mut stream = client
        .watch(
            dir.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(|e| format!("etcd watch failed: {e}"))?;
    let mut probe = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return Err("etcd closed the watch".into()),
                    Err(e) => return Err(format!("etcd watch broke: {e}")),
                };
                if response.canceled() {
                    return Err(format!("etcd cancelled the watch: {}", response.cancel_reason()));
                }
                let events = response
                    .events()
                    .iter()
                    .filter_map(|event| {
                        let kv = event.kv()?;
                        let revision = kv.mod_revision();
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        Some(match event.event_type() {
                            EventType::Put => (key, Some(self::kv(kv)), revision),
                            EventType::Delete => (key, None, revision),
                        })
                    })
                    .collect::<Vec<_>>();
                if !events.is_empty() {
                    hub.apply(events);
                }
            }
            _ = probe.tick() => {
                let mut ttl = HashMap::new();
                for lease in hub.leases() {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.lease_time_to_live(lease, None),
                    )
                    .await
                    .map_err(|_| "etcd did not answer within 2 s".to_owned())?
                    .map_err(|e| format!("etcd lease read failed: {e}"))?;
                    ttl.insert(lease, answer.ttl());
                }
                // With no lease in view, a cheap read checks that etcd answers.
                if ttl.is_empty() {
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        client.get(dir.as_str(), Some(GetOptions::new().with_prefix().with_count_only())),
                    )
                    .await
                    .map_err(|_| "etcd did not answer within 2 s".to_owned())?
                    .map_err(|e| format!("etcd read failed: {e}"))?;
                }
                hub.set_ttls(ttl);
            }
        }
    }
}
