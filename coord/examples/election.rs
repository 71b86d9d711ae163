//! Two candidates take turns leading one election while an observer prints every
//! leader change, down to the election becoming empty.
//!
//! ```text
//! scripts/etcd.sh start && cargo run -p coord --example election
//! ```

use std::time::Duration;

use coord::{Election, LeaderEvent, Session};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = coord::connect_from_env().await?;
    let name = format!("/examples/election/{}", std::process::id());

    // The observer needs no session. Its first item is the current state.
    let mut changes = Box::pin(Election::observer(client.clone(), &name)?.observe());
    let first = changes
        .next()
        .await
        .expect("observe never ends by itself")?;
    println!("observer: at start: {}", describe(&first));
    let observer = tokio::spawn(async move {
        // A new leader is printed once: observers see the latest value, so a value
        // proclaimed and replaced quickly may never be seen (an election is no log).
        let mut leader_key: Option<String> = None;
        let mut leaders_seen = 0;
        while let Some(change) = changes.next().await {
            match change? {
                LeaderEvent::Leader(leader) => {
                    if leader_key.as_deref() != Some(leader.key.as_str()) {
                        leaders_seen += 1;
                        println!(
                            "observer: leader number {leaders_seen} (key {}, token {})",
                            leader.key, leader.rev
                        );
                        leader_key = Some(leader.key.clone());
                    }
                }
                LeaderEvent::NoLeader if leaders_seen > 0 => {
                    println!("observer: no leader");
                    break;
                }
                LeaderEvent::NoLeader => {}
            }
        }
        anyhow::Ok(())
    });

    let first_elected = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut candidates = Vec::new();
    for id in 1..=2 {
        let (client, name, elected) = (client.clone(), name.clone(), first_elected.clone());
        candidates.push(tokio::spawn(async move {
            let session = Session::builder(client).ttl(10).build().await?;
            let election = Election::new(&session, &name)?;
            let mut leadership = election.campaign(format!("candidate-{id}")).await?;
            println!(
                "candidate-{id}: elected with fencing token {}",
                leadership.fencing_token()
            );
            elected.notify_one();
            leadership
                .proclaim(format!("candidate-{id} (working)"))
                .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            leadership.resign().await?;
            println!("candidate-{id}: resigned");
            session.close().await?;
            anyhow::Ok(())
        }));
        if id == 1 {
            // Let candidate 1 win, so candidate 2 visibly waits its turn.
            first_elected.notified().await;
        }
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        for candidate in candidates {
            candidate.await??;
        }
        observer.await?
    })
    .await??;
    println!("both candidates led in turn; the election is empty again");
    Ok(())
}

fn describe(event: &LeaderEvent) -> String {
    match event {
        LeaderEvent::Leader(leader) => format!(
            "leader is {:?} (key {}, token {})",
            leader.value_str(),
            leader.key,
            leader.rev
        ),
        LeaderEvent::NoLeader => "no leader".to_owned(),
    }
}
