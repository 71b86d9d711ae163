//! A coordinator holds a barrier while it prepares; three workers wait at the barrier
//! and all start together when it is released.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example barrier
//! ```

use std::time::Duration;

use coord::Barrier;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/barrier/{}", std::process::id());

    // snippet-start: usage
    let coordinator = Barrier::new(client.clone(), &name)?;
    coordinator.hold().await?;
    println!("coordinator holds {name}");

    let mut workers = Vec::new();
    for worker in 0..3 {
        let barrier = Barrier::new(client.clone(), &name)?;
        workers.push(tokio::spawn(async move {
            println!("worker {worker} waits at the barrier");
            coord::timeout(Duration::from_secs(30), barrier.wait()).await?;
            println!("worker {worker} passed the barrier");
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("coordinator is ready; releasing");
    coordinator.release().await?;
    // snippet-end: usage
    for w in workers {
        w.await??;
    }
    println!("all workers started after the release");
    Ok(())
}
