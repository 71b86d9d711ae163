//! Retrying etcd calls: [`retrying`] runs a call again on transient failures, with
//! [`Backoff`] (exponential, with jitter) between attempts.

use std::time::Duration;

use tokio::time::sleep;
use tracing::debug;

use crate::Result;

/// Runs `op` again on transient failures, a few times, with backoff.
pub(crate) async fn retrying<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if backoff.attempts < 8 && crate::error::is_transient(&e) => {
                backoff.wait(&e).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Exponential backoff with jitter, 20 ms doubling to 1 s.
#[derive(Default)]
pub(crate) struct Backoff {
    attempts: u32,
}

impl Backoff {
    pub(crate) async fn wait(&mut self, why: &(dyn std::fmt::Display + Sync)) {
        let base = 20u64 << self.attempts.min(6);
        let jitter = rand::random::<u64>() % (base / 2 + 1);
        self.attempts += 1;
        debug!(attempt = self.attempts, reason = %why, "retrying etcd call");
        sleep(Duration::from_millis((base + jitter).min(1000))).await;
    }
}
