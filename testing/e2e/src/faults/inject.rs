//! Injecting a fault (and undoing it) while the load runs: [`inject`] picks the
//! function of the fault's kind; each returns what it did, for the report, and the
//! hand-over time it measured where the fault has one.

use std::time::{Duration, Instant};

use coord::etcd_client::{Client as EtcdClient, CompactionOptions, GetOptions};

use super::catalogue::Fault;
use super::leader_change::{kill_job_leader_move_leader, kill_lock_holder_move_leader};
use super::observe::{
    etcd_leader, etcd_of, job_leader, keys_under, lease_gone, lock_holder, replica_lease,
};
use super::replay::replay_saga_messages;
use super::report::{seconds, Injection};
use super::section::pause_in_section;
use super::stack::{docker_on, start_again, HOLD, PROJECT};
use crate::{Stack, TTL};

/// What was done, and the fault's hand-over time.
type Injected = (String, Option<Duration>);

/// Where a fault lands: the stack, its etcd members (name, endpoint), the run's hot SKU.
struct Target<'a> {
    stack: &'a Stack,
    members: &'a [(String, String)],
    hot_sku: &'a str,
}

impl Target<'_> {
    /// A client of every etcd member.
    async fn etcd(&self) -> anyhow::Result<EtcdClient> {
        etcd_of(self.members).await
    }

    /// The hot SKU's lock keys.
    fn locks(&self) -> String {
        format!("/shop/locks/sku/{}/", self.hot_sku)
    }
}

/// Injects `fault` (and undoes it). A fault that cannot be injected is recorded, not
/// returned as an error: the load still runs to its end, so the next run starts on a
/// quiet stack.
pub(super) async fn inject(
    stack: &Stack,
    fault: Fault,
    members: &[(String, String)],
    hot_sku: &str,
) -> Injection {
    if fault == Fault::PauseInSection {
        // An experiment of its own, with its own verdict.
        return pause_in_section(stack, members).await;
    }
    let target = Target {
        stack,
        members,
        hot_sku,
    };
    match inject_kind(&target, fault).await {
        Ok((action, failover)) => Injection {
            action,
            failover,
            error: None,
        },
        Err(e) => Injection {
            action: format!("injection failed: {e:#}"),
            failover: None,
            error: Some(format!("the fault could not be injected: {e:#}")),
        },
    }
}

/// The function of `fault`'s kind.
async fn inject_kind(target: &Target<'_>, fault: Fault) -> anyhow::Result<Injected> {
    match fault {
        Fault::PauseLockHolder => pause_lock_holder(target).await,
        Fault::KillLockHolder => kill_lock_holder(target).await,
        Fault::KillJobLeader => stop_job_leader(target, true).await,
        Fault::StopJobLeader => stop_job_leader(target, false).await,
        Fault::StopEtcdMember => stop_etcd_member(target).await,
        Fault::KillEtcdLeader => kill_etcd_leader(target).await,
        Fault::RestartPostgres => restart_postgres(target).await,
        Fault::KillPaymentWorker => kill_payment_worker(target).await,
        Fault::CutOffFromEtcd => cut_off_from_etcd(target).await,
        Fault::DuplicateMessages => Ok((
            replay_saga_messages(target.stack, target.hot_sku).await?,
            None,
        )),
        Fault::CompactEtcd => compact_etcd(target).await,
        Fault::KillLockHolderMoveLeader => {
            kill_lock_holder_move_leader(target.stack, target.members, &target.locks()).await
        }
        Fault::KillJobLeaderMoveLeader => {
            kill_job_leader_move_leader(target.stack, target.members).await
        }
        Fault::PauseInSection => unreachable!("handled by `inject`"),
    }
}

/// `docker pause` the inventory replica in the hot SKU's lock line past its TTL.
async fn pause_lock_holder(target: &Target<'_>) -> anyhow::Result<Injected> {
    let mut client = target.etcd().await?;
    let (lease, queued) = lock_holder(&mut client, &target.locks()).await?;
    docker_on(target.stack, &["pause"], "inventory-1").await?;
    let gone = lease_gone(&mut client, lease, TTL + HOLD).await?;
    tokio::time::sleep(HOLD.saturating_sub(gone.unwrap_or(HOLD))).await;
    docker_on(target.stack, &["unpause"], "inventory-1").await?;
    Ok((
        format!(
            "inventory-1 paused {}s (TTL {}s){queued}; its lease expired after {} and its locks passed on; unpaused",
            HOLD.as_secs(),
            TTL.as_secs(),
            seconds(gone)
        ),
        gone,
    ))
}

/// `docker kill` the inventory replica in the hot SKU's lock line.
async fn kill_lock_holder(target: &Target<'_>) -> anyhow::Result<Injected> {
    let mut client = target.etcd().await?;
    let (lease, queued) = lock_holder(&mut client, &target.locks()).await?;
    let gone = kill_until_lease_gone(target.stack, &mut client, "inventory-1", lease).await?;
    Ok((
        format!(
            "inventory-1 killed{queued}; its lease expired after {}; restarted",
            seconds(gone)
        ),
        gone,
    ))
}

/// `docker kill` (`kill`) or `docker stop` (SIGTERM) the order replica leading
/// `expire-reservations`; times until the other one leads.
async fn stop_job_leader(target: &Target<'_>, kill: bool) -> anyhow::Result<Injected> {
    let stack = target.stack;
    let leader = job_leader(stack, "order-2").await;
    let (victim, survivor): (&'static str, &'static str) = if leader.contains("order-1") {
        ("order-1", "order-2")
    } else {
        ("order-2", "order-1")
    };
    let verb: &'static [&'static str] = if kill {
        &["kill"]
    } else {
        &["stop", "-t", "10"]
    };
    let at = Instant::now();
    let stopping = stack.docker_on(verb, victim);
    let waiting = async {
        let limit = TTL + Duration::from_secs(10);
        while at.elapsed() < limit {
            if job_leader(stack, survivor).await.contains(survivor) {
                return Some(at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    let (stopped, failover) = tokio::join!(stopping, waiting);
    stopped.map_err(anyhow::Error::msg)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    start_again(stack, victim).await?;
    Ok((
        format!(
            "{victim} ({}) led expire-reservations; {survivor} led after {}; {victim} restarted",
            if kill { "docker kill" } else { "SIGTERM" },
            seconds(failover)
        ),
        failover,
    ))
}

/// `docker stop` one etcd follower for [`HOLD`].
async fn stop_etcd_member(target: &Target<'_>) -> anyhow::Result<Injected> {
    let leader = etcd_leader(target.members).await?;
    let victim = ["etcd3", "etcd2", "etcd1"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("a follower");
    docker_on(target.stack, &["stop", "-t", "2"], victim).await?;
    tokio::time::sleep(HOLD).await;
    docker_on(target.stack, &["start"], victim).await?;
    Ok((
        format!(
            "follower {victim} stopped for {}s, started again",
            HOLD.as_secs()
        ),
        None,
    ))
}

/// `docker kill` the etcd leader; times until the survivors elect another.
async fn kill_etcd_leader(target: &Target<'_>) -> anyhow::Result<Injected> {
    let leader = etcd_leader(target.members).await?;
    let at = Instant::now();
    docker_on(target.stack, &["kill"], &leader).await?;
    let survivors: Vec<(String, String)> = target
        .members
        .iter()
        .filter(|(m, _)| *m != leader)
        .cloned()
        .collect();
    let mut elected = None;
    while at.elapsed() < Duration::from_secs(20) {
        if let Ok(now) = etcd_leader(&survivors).await {
            if now != leader {
                elected = Some((now, at.elapsed()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(HOLD).await;
    docker_on(target.stack, &["start"], &leader).await?;
    Ok(match elected {
        Some((now, after)) => (
            format!(
                "leader {leader} killed; {now} elected after {after:.2?}; {leader} started again"
            ),
            Some(after),
        ),
        None => (
            format!("leader {leader} killed; no new leader within 20 s"),
            None,
        ),
    })
}

/// `docker restart` the inventory's Postgres.
async fn restart_postgres(target: &Target<'_>) -> anyhow::Result<Injected> {
    let at = Instant::now();
    docker_on(target.stack, &["restart", "-t", "2"], "pg-inventory").await?;
    Ok((
        format!(
            "pg-inventory restarted ({:.1}s until the restart returned)",
            at.elapsed().as_secs_f64()
        ),
        None,
    ))
}

/// `docker kill` a payment replica while its workers hold queue items.
async fn kill_payment_worker(target: &Target<'_>) -> anyhow::Result<Injected> {
    let mut client = target.etcd().await?;
    let lease = replica_lease(&mut client, "payment", "payment-1").await?;
    let claims = keys_under(&mut client, "/shop/queues/payments/claims/")
        .await?
        .len();
    let gone = kill_until_lease_gone(target.stack, &mut client, "payment-1", lease).await?;
    Ok((
        format!(
            "payment-1 killed with {claims} claim(s) in flight on the queue; its lease (and claims) expired after {}, the items went to payment-2; restarted",
            seconds(gone)
        ),
        gone,
    ))
}

/// `docker network disconnect` an inventory replica (etcd, Postgres, peers) for
/// [`HOLD`] or until its lease is gone, then connect it again under its aliases.
async fn cut_off_from_etcd(target: &Target<'_>) -> anyhow::Result<Injected> {
    let network = format!("{PROJECT}_default");
    let container = target.stack.container("inventory-1");
    let mut client = target.etcd().await?;
    let (lease, queued) = lock_holder(&mut client, &target.locks()).await?;
    crate::docker(&["network", "disconnect", &network, &container])
        .await
        .map_err(anyhow::Error::msg)?;
    let gone = lease_gone(&mut client, lease, TTL + HOLD).await?;
    tokio::time::sleep(HOLD.saturating_sub(gone.unwrap_or(HOLD))).await;
    crate::docker(&[
        "network",
        "connect",
        "--alias",
        "inventory",
        "--alias",
        "inventory-1",
        &network,
        &container,
    ])
    .await
    .map_err(anyhow::Error::msg)?;
    Ok((
        format!(
            "inventory-1 disconnected from the network for {}s (etcd, Postgres, peers){queued}; its lease expired after {}; reconnected",
            HOLD.as_secs(),
            seconds(gone)
        ),
        gone,
    ))
}

/// Compacts etcd to its current revision every 500 ms for [`HOLD`] while waiters watch.
async fn compact_etcd(target: &Target<'_>) -> anyhow::Result<Injected> {
    let mut client = target.etcd().await?;
    let mut compactions = 0;
    let until = Instant::now() + HOLD;
    while Instant::now() < until {
        let rev = client
            .get("/shop", Some(GetOptions::new().with_count_only()))
            .await?
            .header()
            .map(|h| h.revision())
            .unwrap_or(0);
        if rev > 1 {
            client
                .compact(rev, Some(CompactionOptions::new().with_physical()))
                .await?;
            compactions += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((
        format!(
            "etcd compacted to its current revision {compactions} times in {}s while locks, the queue and elections waited",
            HOLD.as_secs()
        ),
        None,
    ))
}

/// `docker kill`s `service` (it cannot clean up), waits for its lease to expire, and
/// starts it again 2 s later; returns how long the lease outlived the process.
async fn kill_until_lease_gone(
    stack: &Stack,
    etcd: &mut EtcdClient,
    service: &str,
    lease: i64,
) -> anyhow::Result<Option<Duration>> {
    docker_on(stack, &["kill"], service).await?;
    let gone = lease_gone(etcd, lease, TTL + HOLD).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    start_again(stack, service).await?;
    Ok(gone)
}
