//! A reliable work queue: a consumer crashes mid-item and the item is delivered again.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example work_queue
//! ```

use coord::{Session, WorkQueue};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    // snippet-start: usage
    let queue = WorkQueue::new(
        client.clone(),
        &format!("/examples/work-queue/{}", std::process::id()),
    )?;
    queue
        .enqueue_with_id("order-1", br#"{"order":"order-1","amount":42}"#, 1)
        .await?;
    queue
        .enqueue_with_id("order-2", br#"{"order":"order-2","amount":7}"#, 0)
        .await?;
    println!("queued 2 items (order-2 has the higher priority: 0 is served first)");

    // Consumer A claims the most urgent item (order-2, priority 0) and "crashes"
    // before acking: its lease is revoked.
    let consumer_a = Session::builder(client.clone()).ttl(10).build().await?;
    let item = queue.claim(&consumer_a).await?;
    println!(
        "consumer A claimed {} (attempt {}) and crashes",
        item.id(),
        item.attempt()
    );
    client.clone().lease_revoke(consumer_a.lease()).await?;
    std::mem::forget(item); // a crash runs no destructor

    // Consumer B gets it again, then the other one, and acks both.
    let consumer_b = Session::builder(client).ttl(10).build().await?;
    for _ in 0..2 {
        let item = queue.claim(&consumer_b).await?;
        println!(
            "consumer B claimed {} (attempt {}): {}",
            item.id(),
            item.attempt(),
            String::from_utf8_lossy(item.payload())
        );
        item.ack().await?;
    }
    println!("queue depth now {}", queue.depth().await?);
    // snippet-end: usage
    consumer_b.close().await?;
    Ok(())
}
