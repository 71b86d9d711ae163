//! Two workers take turns on one lock and use the fencing token to guard the write
//! they make under it.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example mutex
//! ```

use coord::etcd_client::{Txn, TxnOp};
use coord::{Mutex, Session};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/mutex/{}", std::process::id());

    let mut workers = Vec::new();
    for worker in 0..2 {
        let (client, name) = (client.clone(), name.clone());
        workers.push(tokio::spawn(async move {
            // snippet-start: usage
            let session = Session::builder(client).ttl(10).build().await?;
            let lock = Mutex::new(&session, &name)?;
            let guard = lock.lock().await?;
            println!(
                "worker {worker} holds {name} with fencing token {}",
                guard.fencing_token()
            );
            // A write that only lands while we still own the lock.
            let resp = session
                .client()
                .txn(Txn::new().when([guard.is_owner()]).and_then([TxnOp::put(
                    format!("{name}-owner"),
                    format!("worker {worker}"),
                    None,
                )]))
                .await?;
            assert!(resp.succeeded());
            guard.unlock().await?;
            // snippet-end: usage
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    println!("both workers ran their critical sections one at a time");
    Ok(())
}
