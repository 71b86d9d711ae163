//! Six jobs share a pool of two licenses: at most two run at a time, and a license
//! held by a crashed process returns when its session's lease expires.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example semaphore
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::{Semaphore, Session};

const LICENSES: usize = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/semaphore/{}", std::process::id());
    let running = Arc::new(AtomicUsize::new(0));

    let mut jobs = Vec::new();
    for job in 0..6 {
        let (client, name, running) = (client.clone(), name.clone(), running.clone());
        jobs.push(tokio::spawn(async move {
            // snippet-start: usage
            let session = Session::builder(client).ttl(10).build().await?;
            let licenses = Semaphore::new(&session, &name, LICENSES)?;
            let permit = coord::timeout(Duration::from_secs(30), licenses.acquire()).await?;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            println!(
                "job {job} runs with license token {} ({now} of {LICENSES} in use)",
                permit.fencing_token()
            );
            assert!(now <= LICENSES);
            tokio::time::sleep(Duration::from_millis(200)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            permit.release().await?;
            session.close().await?;
            // snippet-end: usage
            anyhow::Ok(())
        }));
    }
    for j in jobs {
        j.await??;
    }

    // A process that dies holding a license: its lease is revoked (here by hand; a
    // crash would let it expire after the TTL) and the license comes back.
    let crashed = Session::builder(client.clone()).ttl(10).build().await?;
    let held = Semaphore::new(&crashed, &name, LICENSES)?;
    let _a = held.acquire().await?;
    let _b = held.acquire().await?;
    let survivor = Session::builder(client.clone()).ttl(10).build().await?;
    let licenses = Semaphore::new(&survivor, &name, LICENSES)?;
    println!(
        "a crashed process holds both licenses; try_acquire says: {}",
        licenses.try_acquire().await.unwrap_err()
    );
    crashed.close().await?; // stands in for the lease running out
    let permit = coord::timeout(Duration::from_secs(30), licenses.acquire()).await?;
    println!(
        "the survivor got a license back (token {})",
        permit.fencing_token()
    );
    permit.release().await?;
    survivor.close().await?;
    Ok(())
}
