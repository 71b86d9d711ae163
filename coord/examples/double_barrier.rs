//! Four workers run a phase together: nobody starts before all four have arrived, and
//! nobody moves on before all four have finished.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example double_barrier
//! ```

use std::time::Duration;

use coord::{DoubleBarrier, Session};

const WORKERS: usize = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/double-barrier/{}", std::process::id());

    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (client, name) = (client.clone(), name.clone());
        workers.push(tokio::spawn(async move {
            // snippet-start: usage
            let session = Session::builder(client).ttl(10).build().await?;
            // Workers arrive at different times.
            tokio::time::sleep(Duration::from_millis(150 * worker as u64)).await;
            let barrier = DoubleBarrier::new(&session, &name, WORKERS)?;
            println!("worker {worker} arrives");
            let inside = coord::timeout(Duration::from_secs(30), barrier.enter()).await?;
            println!(
                "worker {worker} starts the phase (round {})",
                inside.round()
            );
            // Workers finish at different times.
            tokio::time::sleep(Duration::from_millis(100 * (WORKERS - worker) as u64)).await;
            println!("worker {worker} finished its part; waiting for the others");
            coord::timeout(Duration::from_secs(30), inside.leave()).await?;
            // snippet-end: usage
            println!("worker {worker} moves on");
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    println!("all {WORKERS} workers entered together and left together");
    Ok(())
}
