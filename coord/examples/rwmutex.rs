//! Three readers share a config key while one writer updates it exclusively; a reader
//! that arrives while the writer waits lines up behind it.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example rwmutex
//! ```

use std::time::Duration;

use coord::etcd_client::{Txn, TxnOp};
use coord::{RwMutex, Session};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/rwmutex/{}", std::process::id());
    let config = format!("{name}-config");
    client.clone().put(config.as_str(), "v1", None).await?;

    // snippet-start: usage
    let mut tasks = Vec::new();
    for reader in 0..3 {
        let (client, name, config) = (client.clone(), name.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            // Reader 2 arrives after the writer has queued.
            if reader == 2 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let session = Session::builder(client).ttl(10).build().await?;
            let guard = RwMutex::new(&session, &name)?.read_lock().await?;
            let resp = session.client().get(config.as_str(), None).await?;
            let value = String::from_utf8_lossy(resp.kvs()[0].value()).into_owned();
            println!("reader {reader} holds a read lock and sees config = {value}");
            tokio::time::sleep(Duration::from_millis(400)).await;
            guard.unlock().await?;
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    let writer = {
        let (client, name, config) = (client.clone(), name.clone(), config.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let session = Session::builder(client).ttl(10).build().await?;
            let guard = RwMutex::new(&session, &name)?.write_lock().await?;
            println!(
                "writer holds the write lock (fencing token {}), no reader inside",
                guard.fencing_token()
            );
            // The update only lands while we still own the lock.
            let resp = session
                .client()
                .txn(Txn::new().when([guard.is_owner()]).and_then([TxnOp::put(
                    config.as_str(),
                    "v2",
                    None,
                )]))
                .await?;
            assert!(resp.succeeded());
            println!("writer updated config to v2");
            guard.unlock().await?;
            session.close().await?;
            anyhow::Ok(())
        })
    };
    tasks.push(writer);
    // snippet-end: usage
    for t in tasks {
        t.await??;
    }
    client.clone().delete(config.as_str(), None).await?;
    println!("readers 0 and 1 shared the lock, the writer waited for them, reader 2 waited for the writer");
    Ok(())
}
