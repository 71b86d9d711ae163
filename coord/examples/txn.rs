//! Plain etcd transactions with `coord::Txn`: create-if-missing, a compare-and-swap
//! on a counter, and a write fenced by a lock.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example txn
//! ```

use coord::txn::{key_missing, mod_rev_is, Ops, Txn};
use coord::{Mutex, Session};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let base = format!("/examples/txn/{}", std::process::id());
    let stock = format!("{base}/stock");

    // snippet-start: usage
    // 1. Create the stock counter unless it exists; read it back either way.
    for round in 1..=2 {
        let outcome = Txn::new()
            .when(key_missing(stock.as_str()))
            .then(Ops::new().put(stock.as_str(), "10").get(stock.as_str()))
            .or_else(Ops::new().get(stock.as_str()))
            .commit(&client)
            .await?;
        println!(
            "round {round}: created = {}, stock = {:?} (revision {})",
            outcome.succeeded(),
            outcome.parse::<i64>(&stock)?,
            outcome.revision()
        );
    }

    // 2. Compare-and-swap: take 3 from stock only if nobody changed it since we read it.
    loop {
        let read = Txn::new()
            .then(Ops::new().get(stock.as_str()))
            .commit(&client)
            .await?;
        let kv = read.kv(&stock)?.expect("created above");
        let current: i64 = kv.value_str()?.parse()?;
        let swapped = Txn::new()
            .when(mod_rev_is(stock.as_str(), kv.mod_revision()))
            .then(Ops::new().put(stock.as_str(), (current - 3).to_string()))
            .commit(&client)
            .await?;
        if swapped.succeeded() {
            println!("took 3: stock {current} -> {}", current - 3);
            break;
        }
        println!("stock changed under us; reading again");
    }

    // 3. A write that lands only while we hold the lock (fenced by is_owner()).
    let session = Session::builder(client.clone()).ttl(10).build().await?;
    let lock = Mutex::new(&session, &format!("{base}/lock"))?;
    let guard = lock.lock().await?;
    let fenced = Txn::new()
        .when(guard.is_owner())
        .then(
            Ops::new()
                .put(format!("{base}/restocked-by"), "example")
                .put(stock.as_str(), "20"),
        )
        .commit(&client)
        .await?;
    println!(
        "fenced restock with token {}: applied = {}",
        guard.fencing_token(),
        fenced.succeeded()
    );
    guard.unlock().await?;
    // snippet-end: usage
    session.close().await?;

    // Clean up.
    let removed = Txn::new()
        .then(Ops::new().delete_prefix(format!("{base}/")))
        .commit(&client)
        .await?;
    println!("removed {} keys", removed.deleted(format!("{base}/"))?);
    Ok(())
}
