//! Crash + etcd leader change (issue 15): a lock holder (or a job leader) is killed,
//! and while its lease is running out the etcd leader is moved (`move-leader`). etcd
//! does not checkpoint a lease's remaining TTL by default: a new leader renews every
//! lease on taking over, so the dead process's lease lives on past its TTL. The faults
//! time that: from the kill until the lease's keys are gone (or another replica leads).
//!
//! The move is made at a moment etcd announces, not after a guessed sleep: once the
//! dead lease's remaining TTL (as `LeaseTimeToLive` reports it) has fallen below the
//! full TTL, so part of it is already used up when the new leader renews it.

use std::time::{Duration, Instant};

use anyhow::Context;
use coord::etcd_client::Client as EtcdClient;

use super::observe::{
    etcd_of, job_leader, leader_among, lock_holder, member_statuses, replica_lease,
};
use super::report::seconds;
use super::stack::{docker_on, start_again};
use crate::{Stack, TTL};

/// What was done, and the fault's hand-over time.
type Injected = (String, Option<Duration>);

/// How long to watch for a hand-over before calling it missing.
const LIMIT: Duration = Duration::from_secs(30);

/// `docker kill` the inventory replica in the hot SKU's lock line, then move the etcd
/// leader; times until its lease (and its lock keys) are gone.
pub(super) async fn kill_lock_holder_move_leader(
    stack: &Stack,
    members: &[(String, String)],
    locks: &str,
) -> anyhow::Result<Injected> {
    let mut client = etcd_of(members).await?;
    let (lease, queued) = lock_holder(&mut client, locks).await?;
    let at = Instant::now();
    docker_on(stack, &["kill"], "inventory-1").await?;
    let moved = move_leader_while_lease_runs_out(members, &mut client, lease, at).await?;
    let gone = wait_lease_gone(&mut client, lease, at).await?;
    start_again(stack, "inventory-1").await?;
    Ok((
        format!(
            "inventory-1 killed{queued}; {}; its lease expired {} after the kill (TTL {}s); restarted",
            moved.describe(),
            seconds(gone),
            TTL.as_secs()
        ),
        gone,
    ))
}

/// `docker kill` the order replica leading `expire-reservations`, then move the etcd
/// leader; times until the other replica leads.
pub(super) async fn kill_job_leader_move_leader(
    stack: &Stack,
    members: &[(String, String)],
) -> anyhow::Result<Injected> {
    let leader = job_leader(stack, "order-2").await;
    let (victim, survivor) = if leader.contains("order-1") {
        ("order-1", "order-2")
    } else {
        ("order-2", "order-1")
    };
    let mut client = etcd_of(members).await?;
    let lease = replica_lease(&mut client, "order", victim).await?;
    let at = Instant::now();
    docker_on(stack, &["kill"], victim).await?;
    let moved = move_leader_while_lease_runs_out(members, &mut client, lease, at).await?;
    let mut failover = None;
    while at.elapsed() < LIMIT {
        if job_leader(stack, survivor).await.contains(survivor) {
            failover = Some(at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = wait_lease_gone(&mut client, lease, at).await?;
    start_again(stack, victim).await?;
    Ok((
        format!(
            "{victim} led expire-reservations, killed; {}; its lease expired {} and {survivor} led {} after the kill (TTL {}s); {victim} restarted",
            moved.describe(),
            seconds(gone),
            seconds(failover),
            TTL.as_secs()
        ),
        failover,
    ))
}

/// The leader move, as it happened.
struct Moved {
    from: String,
    to: String,
    /// The dead lease's remaining TTL when the move was asked for.
    remaining_ttl: i64,
    /// From the kill until the new leader was in place.
    done: Duration,
}

impl Moved {
    fn describe(&self) -> String {
        format!(
            "while its lease ran out (LeaseTimeToLive: {}s left) the etcd leader moved {} → {}, in place {:.2}s after the kill",
            self.remaining_ttl,
            self.from,
            self.to,
            self.done.as_secs_f64()
        )
    }
}

/// Waits until `lease` has used up part of its TTL (the kill stopped its keepalives),
/// then moves the etcd leader to a follower and waits until the follower leads.
async fn move_leader_while_lease_runs_out(
    members: &[(String, String)],
    etcd: &mut EtcdClient,
    lease: i64,
    kill: Instant,
) -> anyhow::Result<Moved> {
    let remaining_ttl = loop {
        let ttl = etcd.lease_time_to_live(lease, None).await?.ttl();
        if ttl < TTL.as_secs() as i64 {
            break ttl;
        }
        anyhow::ensure!(
            kill.elapsed() < LIMIT,
            "the killed process's lease {lease:x} kept its full TTL for {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(
        remaining_ttl >= 0,
        "the lease {lease:x} expired before the leader could be moved"
    );
    let statuses = member_statuses(members).await?;
    let leader = leader_among(&statuses)?;
    let follower = statuses
        .iter()
        .find(|s| s.id != leader.id)
        .context("no follower to move the leadership to")?;
    let mut on_leader = EtcdClient::connect([leader.endpoint.clone()], None)
        .await
        .context("etcd leader")?;
    on_leader
        .move_leader(follower.id)
        .await
        .context("move-leader")?;
    loop {
        let now = member_statuses(members).await?;
        if now.iter().any(|s| s.leader == follower.id) {
            break;
        }
        anyhow::ensure!(
            kill.elapsed() < LIMIT,
            "{} did not become the etcd leader",
            follower.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Moved {
        from: leader.name.clone(),
        to: follower.name.clone(),
        remaining_ttl,
        done: kill.elapsed(),
    })
}

/// From `kill` until `lease` is gone (`None`: not within [`LIMIT`]).
async fn wait_lease_gone(
    etcd: &mut EtcdClient,
    lease: i64,
    kill: Instant,
) -> anyhow::Result<Option<Duration>> {
    while kill.elapsed() < LIMIT {
        // Any member may answer; one that is electing errs for a moment.
        if let Ok(response) = etcd.lease_time_to_live(lease, None).await {
            if response.ttl() < 0 {
                return Ok(Some(kill.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}
