//! A priority queue with Go's recipe layout: lower numbers are served first, FIFO
//! within a priority.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example priority_queue
//! ```

use coord::PriorityQueue;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    // snippet-start: usage
    let queue = PriorityQueue::new(client, &format!("/examples/pq/{}", std::process::id()))?;
    for (item, priority) in [
        ("standard order", 2),
        ("gold order", 1),
        ("platinum order", 0),
        ("another standard", 2),
    ] {
        let key = queue.enqueue(item, priority).await?;
        println!("enqueued {item:?} as {key}");
    }
    while !queue.is_empty().await? {
        println!(
            "dequeued {}",
            String::from_utf8_lossy(&queue.dequeue().await?)
        );
    }
    // snippet-end: usage
    Ok(())
}
