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

mod catalogue;
mod inject;
mod observe;
mod probe;
mod replay;
mod report;

pub use catalogue::Fault;
pub use report::{markdown, FaultRun};

use probe::Probe;

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use loadtest::config::{Amount, Cluster, Databases, Endpoints, Scenario};
use loadtest::{RunConfig, StrategyReport};
use shop_common::domain::Strategy;
use sqlx::postgres::PgConnectOptions;

use crate::{step, Stack};

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
    let configs = load_configs(stack, options, &run_id, &members).await?;
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
    let injected = inject::inject(stack, fault, &members, &hot_sku).await;
    step(started, &format!("  {}: {}", fault.name(), injected.action));
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
    FaultRun::recorded(fault, options.strategy, injected, &reports, probe)
}

/// The two load processes of a run, one per order replica, on fresh SKUs with plenty
/// of stock, in one flash sale, for `options.duration`.
async fn load_configs(
    stack: &Stack,
    options: &Options,
    run_id: &str,
    members: &[(String, String)],
) -> anyhow::Result<Vec<RunConfig>> {
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
                run_id: run_id.to_owned(),
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
    Ok(configs)
}
