//! Two replicas run the same background job; only the elected one works at a time.
//! The example then "crashes" the working replica (revokes its lease): its job is
//! cancelled and the other replica takes over, while the crashed one rejoins with a
//! new session. Finally it shuts the working replica down: it resigns and the other
//! takes over at once. Then everything shuts down.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example leader_job
//! ```

use std::time::Duration;

use coord::etcd_client::{Txn, TxnOp};
use coord::{Election, LeaderContext, LeaderJob, LeaderOutcome, Session};
use tokio::sync::watch;

/// The job: every 200 ms, a fenced write of its progress, proclaimed in the election.
async fn reindex(ctx: LeaderContext, replica: usize) {
    println!(
        "replica-{replica}: elected (token {}), starting the job",
        ctx.fencing_token()
    );
    // Printed when the job future is dropped, i.e. cancelled.
    struct Stopped(usize);
    impl Drop for Stopped {
        fn drop(&mut self) {
            println!("replica-{}: job stopped", self.0);
        }
    }
    let _stopped = Stopped(replica);
    let progress = format!("{}-progress", ctx.election());
    let mut client = ctx.session().client();
    for step in 1.. {
        let write = Txn::new().when([ctx.is_owner()]).and_then([TxnOp::put(
            progress.as_str(),
            format!(
                "replica-{replica} step {step} token {}",
                ctx.fencing_token()
            ),
            None,
        )]);
        match client.txn(write).await {
            Ok(resp) if resp.succeeded() => println!("replica-{replica}: step {step}"),
            Ok(_) => println!("replica-{replica}: step {step} rejected: no longer leader"),
            Err(e) => println!("replica-{replica}: step {step} failed: {e}"),
        }
        let _ = ctx.proclaim(format!("replica-{replica}")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/leader-job/{}", std::process::id());

    let mut shutdowns = Vec::new();
    let mut runners = Vec::new();
    // snippet-start: usage
    for replica in 1..=2 {
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        shutdowns.push(shutdown_tx);
        let session = Session::builder(client.clone()).ttl(5).build().await?;
        let job = LeaderJob::new(&session, &name, format!("replica-{replica}"))?;
        runners.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
            };
            let outcome = job.run(shutdown, |ctx| reindex(ctx, replica)).await;
            let _ = session.close().await;
            outcome
        }));
    }
    // snippet-end: usage

    let observer = Election::observer(client.clone(), &name)?;
    let leader = wait_for_leader(&observer, None).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Crash the leader: its lease disappears, as if the process had died.
    println!(
        "-- revoking the lease of {} (simulated crash)",
        leader.value_str()
    );
    client.clone().lease_revoke(leader.lease).await?;
    let successor = wait_for_leader(&observer, Some(&leader.key)).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Shut the new leader down gracefully: it resigns, the rejoined replica takes over.
    println!("-- shutting down {}", successor.value_str());
    let index = replica_index(&successor.value_str())?;
    shutdowns[index].send(true)?;
    let outcome = (&mut runners[index]).await??;
    println!("{}: runner ended: {outcome:?}", successor.value_str());
    assert_eq!(outcome, LeaderOutcome::Resigned);
    let third = wait_for_leader(&observer, Some(&successor.key)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("-- shutting down {}", third.value_str());
    let index = replica_index(&third.value_str())?;
    shutdowns[index].send(true)?;
    let outcome = (&mut runners[index]).await??;
    println!("{}: runner ended: {outcome:?}", third.value_str());
    println!("done: the job moved from replica to replica twice and stopped on shutdown");
    Ok(())
}

/// Polls until someone other than `previous` leads (bounded, so the example always ends).
async fn wait_for_leader(
    observer: &coord::ElectionObserver,
    previous: Option<&str>,
) -> anyhow::Result<coord::LeaderInfo> {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(leader) = observer.leader().await {
                if Some(leader.key.as_str()) != previous {
                    return leader;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    println!("-- leader now: {} (token {})", found.value_str(), found.rev);
    Ok(found)
}

fn replica_index(value: &str) -> anyhow::Result<usize> {
    let number: usize = value
        .strip_prefix("replica-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected leader value {value:?}"))?;
    Ok(number - 1)
}
