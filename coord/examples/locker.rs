//! Blocking code (plain threads, no async) takes turns on one lock through a
//! `Locker`, Go's `NewLocker`; the etcd calls run on a runtime started for them.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example locker
//! ```

use std::sync::Arc;

use coord::{Locker, Session};

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let name = format!("/examples/locker/{}", std::process::id());
    let client = runtime.block_on(coord::connect_from_env())?;
    let session = runtime.block_on(Session::builder(client).ttl(10).build())?;

    // snippet-start: usage
    // Called from plain threads: lock() and unlock() block; inside an async task
    // they refuse with Error::BlockingInAsync instead of stalling the runtime.
    let locker = Arc::new(Locker::new(&session, &name, runtime.handle().clone())?);
    let threads: Vec<_> = (0..2)
        .map(|worker| {
            let locker = locker.clone();
            std::thread::spawn(move || -> coord::Result<()> {
                locker.lock()?;
                println!(
                    "thread {worker} holds the lock with fencing token {}",
                    locker.fencing_token().unwrap_or_default()
                );
                locker.unlock()
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread")?;
    }
    // snippet-end: usage
    drop(locker);
    runtime.block_on(session.close())?;
    println!("both threads ran their critical sections one at a time");
    Ok(())
}
