//! A session is one etcd lease kept alive in the background. This shows the three ways
//! one ends: lost (the lease is revoked behind its back), orphaned then resumed by
//! another process, and closed.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example session
//! ```

use std::time::Duration;

use coord::Session;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;

    // snippet-start: usage
    // 1. Lost: someone revokes the lease; `done()` resolves and the session says so.
    let session = Session::builder(client.clone()).ttl(5).build().await?;
    println!(
        "session {:x} granted with TTL {}s",
        session.lease(),
        session.ttl()
    );
    client.clone().lease_revoke(session.lease()).await?;
    coord::timeout(Duration::from_secs(10), async {
        session.done().await;
        Ok(())
    })
    .await?;
    println!(
        "lease revoked elsewhere -> done() resolved, expired = {}",
        session.is_expired()
    );

    // 2. Orphaned: keepalives stop but the lease (and its keys) stay until the TTL
    //    runs out; another process can pick the lease up again.
    let first = Session::builder(client.clone()).ttl(5).build().await?;
    let lease = first.lease();
    first.orphan();
    let resumed = Session::builder(client.clone())
        .lease(lease)
        .build()
        .await?;
    println!(
        "lease {lease:x} orphaned and resumed by a new session (TTL {}s)",
        resumed.ttl()
    );

    // 3. Closed: the lease is revoked, and with it every key attached to it.
    resumed.close().await?;
    let gone = Session::builder(client).lease(lease).build().await;
    println!("after close, resuming fails: {}", gone.unwrap_err());
    // snippet-end: usage
    Ok(())
}
