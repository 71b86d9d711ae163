//! The fault suite: the flash-sale load runs against the compose stack while one fault
//! at a time is injected; the services' own databases then say what was oversold,
//! lost or paid twice, and a probe says how long the shop stopped answering.
//!
//! Each run:
//! 1. Two load-test "processes" (in this process, joined by the load tester's coord
//!    DoubleBarrier) order through `order-1` and `order-2` for `--duration`, on fresh
//!    SKUs with plenty of stock, in a flash sale that opens for both at once.
//! 2. A probe places one order every 100 ms, alternating between the order replicas,
//!    on a SKU of its own: the longest gap between answered probes around the fault is
//!    the **stall**, what a customer would have felt.
//! 3. After a warm-up, the fault is injected (and undone) while the load runs. Where a
//!    fault has a hand-over, its **failover** is timed: the paused/killed holder's lock
//!    keys gone, a new job leader, a new etcd leader, the killed worker's claims gone.
//! 4. When the load ends, the load tester waits until every accepted order is PAID or
//!    CANCELLED (the leader jobs run with short timings: docker/compose.faults.yaml)
//!    and audits the databases.
//!
//! The suite never asserts timing; it records. A run fails when an invariant breaks:
//! oversold units, lost orders, duplicate payments, payments that disagree with their
//! order.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use coord::etcd_client::{Client as EtcdClient, GetOptions};
use loadtest::config::{Amount, Cluster, Databases, Endpoints, Scenario};
use loadtest::{RunConfig, StrategyReport};
use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use sqlx::postgres::PgConnectOptions;
use tonic::transport::Channel;

use crate::{step, Stack, TTL};

/// The compose project the suite runs as (apart from the e2e suite's).
pub const PROJECT: &str = "coord-shop-faults";
/// Host ports of the suite's stack. Fixed, not random: a container the suite restarts
/// (a killed replica, a restarted Postgres, an etcd member) must come back on the port
/// the load and the auditor already use.
const FIXED_PORTS: [(&str, &str); 13] = [
    ("ETCD_HOST_PORT", "56379"),
    ("ETCD2_HOST_PORT", "56380"),
    ("ETCD3_HOST_PORT", "56381"),
    ("ORDER_HOST_PORT", "56051"),
    ("ORDER2_HOST_PORT", "56061"),
    ("INVENTORY_HOST_PORT", "56052"),
    ("INVENTORY2_HOST_PORT", "56062"),
    ("PAYMENT_HOST_PORT", "56053"),
    ("PAYMENT2_HOST_PORT", "56063"),
    ("PG_ORDER_HOST_PORT", "56432"),
    ("PG_INVENTORY_HOST_PORT", "56433"),
    ("PG_PAYMENT_HOST_PORT", "56434"),
    ("JAEGER_HOST_PORT", "0"),
];

/// How long a fault lasts before it is undone (a pause, a stopped member, a cut).
const HOLD: Duration = Duration::from_secs(6);
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// The faults, one per run, in the order of issue 7's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// `docker pause` an inventory replica (lock holder) past its lease TTL.
    PauseLockHolder,
    /// `docker kill` an inventory replica (lock holder).
    KillLockHolder,
    /// `docker kill` the order replica leading `expire-reservations`.
    KillJobLeader,
    /// `docker stop` (SIGTERM) the order replica leading `expire-reservations`.
    StopJobLeader,
    /// `docker stop` one etcd member (a follower).
    StopEtcdMember,
    /// `docker kill` the etcd leader.
    KillEtcdLeader,
    /// `docker restart` the inventory's Postgres.
    RestartPostgres,
    /// `docker kill` a payment replica while its workers hold items.
    KillPaymentWorker,
    /// `docker network disconnect` an inventory replica: cut off from etcd (and all).
    CutOffFromEtcd,
    /// Replay saga messages: duplicate CreateOrder/Reserve/Commit/Release, and a
    /// Release before its Reserve.
    DuplicateMessages,
    /// Compact etcd's history repeatedly while waiters watch.
    CompactEtcd,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::PauseLockHolder,
        Fault::KillLockHolder,
        Fault::KillJobLeader,
        Fault::StopJobLeader,
        Fault::StopEtcdMember,
        Fault::KillEtcdLeader,
        Fault::RestartPostgres,
        Fault::KillPaymentWorker,
        Fault::CutOffFromEtcd,
        Fault::DuplicateMessages,
        Fault::CompactEtcd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PauseLockHolder => "pause-lock-holder",
            Fault::KillLockHolder => "kill-lock-holder",
            Fault::KillJobLeader => "kill-job-leader",
            Fault::StopJobLeader => "sigterm-job-leader",
            Fault::StopEtcdMember => "stop-etcd-member",
            Fault::KillEtcdLeader => "kill-etcd-leader",
            Fault::RestartPostgres => "restart-postgres",
            Fault::KillPaymentWorker => "kill-payment-worker",
            Fault::CutOffFromEtcd => "cut-off-from-etcd",
            Fault::DuplicateMessages => "duplicate-messages",
            Fault::CompactEtcd => "compact-etcd",
        }
    }
}

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub strategy: Strategy,
    /// Buyers per load process (two processes).
    pub buyers: usize,
    /// How long the buyers keep ordering.
    pub duration: Duration,
    /// Load before the fault is injected.
    pub warmup: Duration,
}

/// What one run recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultRun {
    pub fault: &'static str,
    pub strategy: String,
    /// What was done, and what the fault's own measurement saw.
    pub action: String,
    pub orders: usize,
    pub accepted: usize,
    pub failed_calls: usize,
    pub oversold: i64,
    pub lost_orders: i64,
    pub duplicate_payments: i64,
    pub payment_mismatches: i64,
    /// Longest time no probe order was answered, around the fault.
    pub stall_s: Option<f64>,
    /// The fault's hand-over time, where it has one.
    pub failover_s: Option<f64>,
    /// Broken invariants (empty: the run passed).
    pub violations: Vec<String>,
}

impl FaultRun {
    /// A run that could not be carried out at all (setup or injection failed).
    pub fn failed(fault: Fault, strategy: Strategy, why: String) -> FaultRun {
        FaultRun {
            fault: fault.name(),
            strategy: strategy.as_str().to_owned(),
            action: "the run could not be carried out".into(),
            orders: 0,
            accepted: 0,
            failed_calls: 0,
            oversold: 0,
            lost_orders: 0,
            duplicate_payments: 0,
            payment_mismatches: 0,
            stall_s: None,
            failover_s: None,
            violations: vec![why],
        }
    }
}

/// Brings the stack up with the suite's overrides.
pub async fn stack_up() -> anyhow::Result<Stack> {
    let overrides = crate::repo_root().join("docker/compose.faults.yaml");
    // A stack left over from an interrupted run would carry its state; start clean.
    let _ = crate::docker(&["compose", "-p", PROJECT, "down", "-v", "-t", "1"]).await;
    Stack::up(PROJECT, &[overrides], &FIXED_PORTS)
        .await
        .map_err(anyhow::Error::msg)
}

/// The databases of the stack, as the load tester's auditor reaches them.
async fn databases(stack: &Stack) -> anyhow::Result<Databases> {
    let db = |service: &'static str, name: &'static str| async move {
        let port = stack
            .port(service, 5432)
            .await
            .map_err(anyhow::Error::msg)?;
        PgConnectOptions::from_str(&format!("postgres://postgres@127.0.0.1:{port}/{name}"))
            .context("database URL")
    };
    Ok(Databases {
        order: db("pg-order", "order").await?,
        inventory: db("pg-inventory", "inventory").await?,
        payment: db("pg-payment", "payment").await?,
    })
}

async fn etcd_endpoints(stack: &Stack) -> anyhow::Result<Vec<(String, String)>> {
    let mut endpoints = Vec::new();
    for member in ["etcd1", "etcd2", "etcd3"] {
        let port = stack.port(member, 2379).await.map_err(anyhow::Error::msg)?;
        endpoints.push((member.to_owned(), format!("127.0.0.1:{port}")));
    }
    Ok(endpoints)
}

/// Runs one fault under load and records what happened.
pub async fn run_fault(
    stack: &mut Stack,
    fault: Fault,
    options: &Options,
    started: Instant,
) -> anyhow::Result<FaultRun> {
    let run_id = format!("{}-{:06x}", fault.name(), rand::random::<u32>() & 0xff_ffff);
    let members = etcd_endpoints(stack).await?;
    let etcd = coord::EtcdConfig::new(
        &members
            .iter()
            .map(|(_, e)| e.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )?;
    let databases = databases(stack).await?;
    let inventory_url = stack
        .url("inventory-2", 50052)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut configs = Vec::new();
    for (index, order) in ["order-1", "order-2"].into_iter().enumerate() {
        configs.push(RunConfig {
            scenario: Scenario::FlashSale,
            strategies: vec![options.strategy],
            buyers: options.buyers,
            // Plenty: the fault, not the stock running out, should decide.
            stock: 100_000,
            skus: 1,
            zipf_exponent: 0.0,
            max_lines: 1,
            max_quantity: 1,
            per_customer_limit: 0,
            customers: options.buyers * 2,
            amount: Amount::Duration(options.duration),
            use_sale: true,
            direct_reserve: false,
            endpoints: Endpoints {
                order: stack.url(order, 50051).await.map_err(anyhow::Error::msg)?,
                inventory: inventory_url.clone(),
            },
            databases: databases.clone(),
            cluster: Cluster {
                run_id: run_id.clone(),
                processes: 2,
                index,
                etcd: etcd.clone(),
                etcd_prefix: "/shop".into(),
            },
            settle_timeout: Duration::from_secs(120),
            join_timeout: Duration::from_secs(30),
            progress: false,
            sample_stock: false,
            seed: index as u64,
        });
    }
    let hot_sku = format!("lt-{run_id}-{}-sku0", options.strategy.as_str());
    let probe = Probe::start(stack, &run_id, options.strategy).await?;
    let loads: Vec<_> = configs
        .into_iter()
        .map(|config| tokio::spawn(async move { loadtest::run(&config).await }))
        .collect();
    // The sale opens once both processes' first orders are stored: a few seconds.
    tokio::time::sleep(options.warmup).await;
    step(started, &format!("  {}: injecting", fault.name()));
    let fault_at = Instant::now();
    // A fault that cannot be injected is recorded; the load still runs to its end, so
    // the next run starts on a quiet stack.
    let (action, failover, injection_error) = match inject(stack, fault, &members, &hot_sku).await {
        Ok((action, failover)) => (action, failover, None),
        Err(e) => (
            format!("injection failed: {e:#}"),
            None,
            Some(format!("the fault could not be injected: {e:#}")),
        ),
    };
    step(started, &format!("  {}: {action}", fault.name()));
    let mut reports: Vec<StrategyReport> = Vec::new();
    let mut load_error = None;
    for load in loads {
        match load
            .await
            .context("load task")
            .and_then(|r| r.context("load run"))
        {
            Ok(mut played) => reports.append(&mut played),
            Err(e) => load_error = Some(e),
        }
    }
    let probe = probe.stop(fault_at).await;
    if let Some(e) = load_error {
        return Err(e);
    }
    let coordinator = reports
        .first()
        .context("the coordinating load process reported nothing")?;
    let audit = &coordinator.audit;
    let mut violations = Vec::new();
    for report in &reports {
        violations.extend(report.violations());
    }
    violations.extend(probe.violations);
    violations.extend(injection_error);
    let violations: Vec<String> = violations
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(FaultRun {
        fault: fault.name(),
        strategy: options.strategy.as_str().to_owned(),
        action,
        orders: reports.iter().map(|r| r.orders).sum(),
        accepted: reports.iter().map(|r| r.orders_accepted).sum(),
        failed_calls: reports.iter().map(|r| r.orders_failed).sum(),
        oversold: audit.oversold + probe.audit.oversold,
        lost_orders: audit.lost_orders + probe.audit.lost_orders,
        duplicate_payments: audit.duplicate_payments + probe.audit.duplicate_payments,
        payment_mismatches: audit.payment_mismatches + probe.audit.payment_mismatches,
        stall_s: probe.stall.map(|d| d.as_secs_f64()),
        failover_s: failover.map(|d| d.as_secs_f64()),
        violations,
    })
}

/// Injects `fault` (and undoes it); returns what was done and its hand-over time.
async fn inject(
    stack: &mut Stack,
    fault: Fault,
    members: &[(String, String)],
    hot_sku: &str,
) -> anyhow::Result<(String, Option<Duration>)> {
    let etcd = || async {
        EtcdClient::connect(
            members.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            None,
        )
        .await
        .context("etcd")
    };
    let locks = format!("/shop/locks/sku/{hot_sku}/");
    Ok(match fault {
        Fault::PauseLockHolder => {
            let mut client = etcd().await?;
            let (lease, queued) = lock_holder(&mut client, &locks).await?;
            docker_on(stack, &["pause"], "inventory-1").await?;
            let gone = lease_gone(&mut client, lease, TTL + HOLD).await?;
            tokio::time::sleep(HOLD.saturating_sub(gone.unwrap_or(HOLD))).await;
            docker_on(stack, &["unpause"], "inventory-1").await?;
            (
                format!(
                    "inventory-1 paused {}s (TTL {}s){queued}; its lease expired after {} and its locks passed on; unpaused",
                    HOLD.as_secs(),
                    TTL.as_secs(),
                    seconds(gone)
                ),
                gone,
            )
        }
        Fault::KillLockHolder => {
            let mut client = etcd().await?;
            let (lease, queued) = lock_holder(&mut client, &locks).await?;
            let gone = kill_until_lease_gone(stack, &mut client, "inventory-1", lease).await?;
            (
                format!(
                    "inventory-1 killed{queued}; its lease expired after {}; restarted",
                    seconds(gone)
                ),
                gone,
            )
        }
        Fault::KillJobLeader | Fault::StopJobLeader => {
            let leader = job_leader(stack, "order-2").await;
            let (victim, survivor): (&'static str, &'static str) = if leader.contains("order-1") {
                ("order-1", "order-2")
            } else {
                ("order-2", "order-1")
            };
            let verb: &'static [&'static str] = if fault == Fault::KillJobLeader {
                &["kill"]
            } else {
                &["stop", "-t", "10"]
            };
            let at = Instant::now();
            let stopping = {
                let stack = &*stack;
                async move { stack.docker_on(verb, victim).await }
            };
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
            (
                format!(
                    "{victim} ({}) led expire-reservations; {survivor} led after {}; {victim} restarted",
                    if fault == Fault::KillJobLeader { "docker kill" } else { "SIGTERM" },
                    seconds(failover)
                ),
                failover,
            )
        }
        Fault::StopEtcdMember => {
            let leader = etcd_leader(members).await?;
            let victim = ["etcd3", "etcd2", "etcd1"]
                .into_iter()
                .find(|m| *m != leader)
                .expect("a follower");
            docker_on(stack, &["stop", "-t", "2"], victim).await?;
            tokio::time::sleep(HOLD).await;
            docker_on(stack, &["start"], victim).await?;
            (
                format!(
                    "follower {victim} stopped for {}s, started again",
                    HOLD.as_secs()
                ),
                None,
            )
        }
        Fault::KillEtcdLeader => {
            let leader = etcd_leader(members).await?;
            let at = Instant::now();
            docker_on(stack, &["kill"], &leader).await?;
            let survivors: Vec<(String, String)> = members
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
            docker_on(stack, &["start"], &leader).await?;
            match elected {
                Some((now, after)) => (
                    format!("leader {leader} killed; {now} elected after {after:.2?}; {leader} started again"),
                    Some(after),
                ),
                None => (format!("leader {leader} killed; no new leader within 20 s"), None),
            }
        }
        Fault::RestartPostgres => {
            let at = Instant::now();
            docker_on(stack, &["restart", "-t", "2"], "pg-inventory").await?;
            (
                format!(
                    "pg-inventory restarted ({:.1}s until the restart returned)",
                    at.elapsed().as_secs_f64()
                ),
                None,
            )
        }
        Fault::KillPaymentWorker => {
            let mut client = etcd().await?;
            let lease = replica_lease(&mut client, "payment", "payment-1").await?;
            let claims = keys_under(&mut client, "/shop/queues/payments/claims/")
                .await?
                .len();
            let gone = kill_until_lease_gone(stack, &mut client, "payment-1", lease).await?;
            (
                format!(
                    "payment-1 killed with {claims} claim(s) in flight on the queue; its lease (and claims) expired after {}, the items went to payment-2; restarted",
                    seconds(gone)
                ),
                gone,
            )
        }
        Fault::CutOffFromEtcd => {
            let network = format!("{PROJECT}_default");
            let container = stack.container("inventory-1");
            let mut client = etcd().await?;
            let (lease, queued) = lock_holder(&mut client, &locks).await?;
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
            (
                format!(
                    "inventory-1 disconnected from the network for {}s (etcd, Postgres, peers){queued}; its lease expired after {}; reconnected",
                    HOLD.as_secs(),
                    seconds(gone)
                ),
                gone,
            )
        }
        Fault::DuplicateMessages => (replay_saga_messages(stack, hot_sku).await?, None),
        Fault::CompactEtcd => {
            let mut client = etcd().await?;
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
                        .compact(
                            rev,
                            Some(coord::etcd_client::CompactionOptions::new().with_physical()),
                        )
                        .await?;
                    compactions += 1;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (
                format!(
                    "etcd compacted to its current revision {compactions} times in {}s while locks, the queue and elections waited",
                    HOLD.as_secs()
                ),
                None,
            )
        }
    })
}

/// `inventory-1`'s session lease and where it stands in the hot SKU's lock line.
async fn lock_holder(etcd: &mut EtcdClient, locks: &str) -> anyhow::Result<(i64, String)> {
    let lease = replica_lease(etcd, "inventory", "inventory-1").await?;
    Ok((lease, in_line(etcd, locks, lease).await?))
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

async fn start_again(stack: &Stack, service: &str) -> anyhow::Result<()> {
    stack.start_again(service).await.map_err(anyhow::Error::msg)
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()))
}

async fn docker_on(stack: &Stack, verb: &[&str], service: &str) -> anyhow::Result<()> {
    stack
        .docker_on(verb, service)
        .await
        .map(|_| ())
        .map_err(anyhow::Error::msg)
}

/// Keys under `prefix` now.
async fn keys_under(etcd: &mut EtcdClient, prefix: &str) -> anyhow::Result<BTreeSet<Vec<u8>>> {
    let found = etcd
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(found.kvs().iter().map(|kv| kv.key().to_vec()).collect())
}

/// The lease of a replica's etcd session: the one the replica's leader-job
/// candidacies are under (every process keeps one session; its election value is
/// its replica id).
async fn replica_lease(etcd: &mut EtcdClient, service: &str, replica: &str) -> anyhow::Result<i64> {
    let found = etcd
        .get(
            format!("/shop/elections/{service}/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    found
        .kvs()
        .iter()
        .find(|kv| {
            // The value is the job's proclaimed progress, `{"replica":"<id>",...}`,
            // or the bare replica id before the first proclaim.
            let value = String::from_utf8_lossy(kv.value());
            value == replica || value.contains(&format!("\"replica\":\"{replica}\""))
        })
        .map(|kv| kv.lease())
        .with_context(|| format!("{replica} has no election key (is it up?)"))
}

/// ", holding the hot SKU's lock" / ", queued for …" / "": where the lease stood.
async fn in_line(etcd: &mut EtcdClient, locks: &str, lease: i64) -> anyhow::Result<String> {
    let found = etcd
        .get(
            locks,
            Some(GetOptions::new().with_prefix().with_sort(
                coord::etcd_client::SortTarget::Create,
                coord::etcd_client::SortOrder::Ascend,
            )),
        )
        .await?;
    Ok(
        match found.kvs().iter().position(|kv| kv.lease() == lease) {
            Some(0) => ", holding the hot SKU's lock".to_owned(),
            Some(n) => format!(", queued {n} behind the hot SKU's lock holder"),
            None => ", between locks".to_owned(),
        },
    )
}

/// How long until `lease` has expired (`None`: not within `limit`).
async fn lease_gone(
    etcd: &mut EtcdClient,
    lease: i64,
    limit: Duration,
) -> anyhow::Result<Option<Duration>> {
    let at = Instant::now();
    while at.elapsed() < limit {
        let ttl = etcd.lease_time_to_live(lease, None).await?.ttl();
        if ttl < 0 {
            return Ok(Some(at.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// The member name (`etcd1`…) of the current etcd leader, asked of `members`.
async fn etcd_leader(members: &[(String, String)]) -> anyhow::Result<String> {
    let mut ids = Vec::new();
    let mut leader = None;
    for (name, endpoint) in members {
        let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(2),
            EtcdClient::connect([endpoint.clone()], None),
        )
        .await
        else {
            continue;
        };
        let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), client.status()).await
        else {
            continue;
        };
        if let Some(header) = status.header() {
            ids.push((header.member_id(), name.clone()));
        }
        if status.leader() != 0 {
            leader = Some(status.leader());
        }
    }
    let leader = leader.context("no etcd member knows a leader")?;
    ids.into_iter()
        .find(|(id, _)| *id == leader)
        .map(|(_, name)| name)
        .context("the leader is not among the members asked")
}

/// Who leads the order service's `expire-reservations` job, asked of `service`.
async fn job_leader(stack: &Stack, service: &str) -> String {
    let Ok(channel) = stack.channel(service, 50051).await else {
        return String::new();
    };
    pb::order_service_client::OrderServiceClient::new(channel)
        .list_leaders(pb::ListLeadersRequest {})
        .await
        .map(|r| {
            r.into_inner()
                .leaders
                .into_iter()
                .find(|l| l.job == "expire-reservations")
                .map(|l| l.holder)
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Sends saga messages again and out of order, as a network or a retrying client
/// would, while the load runs; checks each answer is the idempotent one.
async fn replay_saga_messages(stack: &Stack, hot_sku: &str) -> anyhow::Result<String> {
    let mut inventory = stack.inventory("inventory-2").await;
    let mut orders = stack.order("order-1").await;
    let line = || {
        vec![pb::LineItem {
            sku: hot_sku.to_owned(),
            quantity: 1,
        }]
    };
    let mut problems = Vec::new();
    let (mut duplicates, mut early_releases) = (0, 0);
    for i in 0..20 {
        // The same CreateOrder twice: one order.
        let request = pb::CreateOrderRequest {
            idempotency_key: format!("dup-{hot_sku}-{i}"),
            customer_id: format!("dup-{i}"),
            items: line(),
            strategy: pb::Strategy::Mutex as i32,
            ..Default::default()
        };
        let first = orders.create_order(request.clone()).await?.into_inner();
        let second = orders.create_order(request).await?.into_inner();
        if first.order_id != second.order_id {
            problems.push(format!(
                "CreateOrder twice made two orders: {}",
                first.order_id
            ));
        }
        // Its Reserve again: the same answer, nothing more taken.
        let again = inventory
            .reserve(pb::ReserveRequest {
                order_id: first.order_id.clone(),
                items: line(),
                strategy: first.strategy,
                customer_id: format!("dup-{i}"),
                ..Default::default()
            })
            .await?
            .into_inner();
        if first.status == pb::OrderStatus::Reserved as i32
            && again.outcome != pb::ReserveOutcome::Reserved as i32
        {
            problems.push(format!(
                "a repeated Reserve of {} answered {again:?}",
                first.order_id
            ));
        }
        duplicates += 2;
        // A Release that overtakes its Reserve: the late Reserve takes nothing.
        let early = uuid::Uuid::new_v4().to_string();
        inventory
            .release(pb::ReleaseRequest {
                order_id: early.clone(),
            })
            .await?;
        let late = inventory
            .reserve(pb::ReserveRequest {
                order_id: early.clone(),
                items: line(),
                strategy: pb::Strategy::Mutex as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        if late.outcome != pb::ReserveOutcome::AlreadyReleased as i32 {
            problems.push(format!("a Reserve after its Release answered {late:?}"));
        }
        early_releases += 1;
        // A second Release of it: still released, once.
        inventory
            .release(pb::ReleaseRequest { order_id: early })
            .await?;
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "replayed messages were not idempotent: {}",
            problems.join("; ")
        );
    }
    Ok(format!(
        "{duplicates} duplicate CreateOrder/Reserve calls and {early_releases} Release-before-Reserve pairs (+ a second Release each): every answer idempotent"
    ))
}

/// Orders one unit every [`PROBE_EVERY`] on its own SKU, alternating between the
/// order replicas, to see how long the shop stops answering.
struct Probe {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<(Instant, bool, Option<uuid::Uuid>)>>,
    auditor: loadtest::audit::Auditor,
    sku: String,
    key_prefix: String,
}

/// What the probe saw.
struct ProbeResult {
    stall: Option<Duration>,
    audit: loadtest::audit::Audit,
    violations: Vec<String>,
}

impl Probe {
    async fn start(stack: &Stack, run_id: &str, strategy: Strategy) -> anyhow::Result<Probe> {
        let sku = format!("probe-{run_id}");
        let key_prefix = format!("probe-{run_id}-");
        stack
            .inventory("inventory-2")
            .await
            .set_stock(pb::SetStockRequest {
                sku: sku.clone(),
                available: 1_000_000,
                strategy: strategy.to_proto() as i32,
            })
            .await?;
        let clients: Vec<Channel> = vec![
            stack
                .channel("order-1", 50051)
                .await
                .map_err(anyhow::Error::msg)?,
            stack
                .channel("order-2", 50051)
                .await
                .map_err(anyhow::Error::msg)?,
        ];
        let auditor = loadtest::audit::Auditor::connect(&databases(stack).await?).await?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (task_sku, task_prefix) = (sku.clone(), key_prefix.clone());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0usize;
            while !*stopped.borrow() {
                let mut client =
                    pb::order_service_client::OrderServiceClient::new(clients[n % 2].clone());
                let mut request = tonic::Request::new(pb::CreateOrderRequest {
                    idempotency_key: format!("{task_prefix}{n}"),
                    customer_id: format!("probe-{}", n % 2),
                    items: vec![pb::LineItem {
                        sku: task_sku.clone(),
                        quantity: 1,
                    }],
                    strategy: strategy.to_proto() as i32,
                    ..Default::default()
                });
                request.set_timeout(PROBE_DEADLINE);
                let answered = tokio::time::timeout(PROBE_DEADLINE, client.create_order(request))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|r| r.into_inner());
                let accepted = answered
                    .as_ref()
                    .filter(|o| o.status == pb::OrderStatus::Reserved as i32)
                    .and_then(|o| uuid::Uuid::parse_str(&o.order_id).ok());
                seen.push((Instant::now(), answered.is_some(), accepted));
                n += 1;
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                    _ = stopped.changed() => {}
                }
            }
            seen
        });
        Ok(Probe {
            stop,
            task,
            auditor,
            sku,
            key_prefix,
        })
    }

    /// Stops probing, waits for the probe orders to settle and audits them; the stall
    /// is the longest gap between answered probes from just before the fault on.
    async fn stop(self, fault_at: Instant) -> ProbeResult {
        let _ = self.stop.send(true);
        let seen = self.task.await.unwrap_or_default();
        let from = fault_at
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(fault_at);
        let answered: Vec<Instant> = seen
            .iter()
            .filter(|(at, ok, _)| *ok && *at >= from)
            .map(|(at, _, _)| *at)
            .collect();
        let stall = answered
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .or_else(|| answered.first().map(|first| *first - from));
        let accepted: Vec<uuid::Uuid> = seen.iter().filter_map(|(_, _, id)| *id).collect();
        let mut violations = Vec::new();
        let settled = self
            .auditor
            .wait_settled(&self.key_prefix, Duration::from_secs(120))
            .await
            .unwrap_or(false);
        if !settled {
            violations.push("probe orders did not all settle within 120 s".to_owned());
        }
        let audit = self
            .auditor
            .audit(&loadtest::audit::AuditScope {
                key_prefix: &self.key_prefix,
                skus: std::slice::from_ref(&self.sku),
                stock_per_sku: 1_000_000,
                accepted: &accepted,
                per_customer_limit: 0,
            })
            .await
            .unwrap_or_else(|e| {
                violations.push(format!("probe audit failed: {e:#}"));
                loadtest::audit::Audit::default()
            });
        if audit.oversold > 0 || audit.lost_orders > 0 || audit.duplicate_payments > 0 {
            violations.push(format!(
                "probe orders: oversold {}, lost {}, duplicate payments {}",
                audit.oversold, audit.lost_orders, audit.duplicate_payments
            ));
        }
        ProbeResult {
            stall,
            audit,
            violations,
        }
    }
}

/// The fault matrix as a markdown table.
pub fn markdown(runs: &[FaultRun]) -> String {
    let mut out = String::from(
        "| # | fault | what happened | orders accepted | calls failed | oversold | lost | duplicate payments | payment mismatches | stall | failover | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, r) in runs.iter().enumerate() {
        let result = if r.violations.is_empty() {
            "pass".to_owned()
        } else {
            format!("**FAIL**: {}", r.violations.join("; "))
        };
        out.push_str(&format!(
            "| {} | `{}` ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            r.fault,
            r.strategy,
            r.action,
            r.accepted,
            r.failed_calls,
            r.oversold,
            r.lost_orders,
            r.duplicate_payments,
            r.payment_mismatches,
            r.stall_s.map_or("—".into(), |s| format!("{s:.2}s")),
            r.failover_s.map_or("—".into(), |s| format!("{s:.2}s")),
            result
        ));
    }
    out
}
