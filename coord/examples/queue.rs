//! A FIFO queue with Go's recipe layout: two producers, one consumer that blocks
//! until items arrive.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example queue
//! ```

use coord::Queue;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/queue/{}", std::process::id());
    // snippet-start: usage
    let queue = Queue::new(client, &name)?;

    let consumer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for _ in 0..4 {
                let item = queue.dequeue().await?; // blocks while empty
                println!("consumer got {}", String::from_utf8_lossy(&item));
            }
            anyhow::Ok(())
        })
    };
    for producer in ["a", "b"] {
        for i in 0..2 {
            let key = queue.enqueue(format!("{producer}{i}")).await?;
            println!("producer {producer} enqueued {key}");
        }
    }
    consumer.await??;
    // snippet-end: usage
    println!("queue empty: {}", queue.is_empty().await?);
    Ok(())
}
