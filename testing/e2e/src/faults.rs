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
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | this one | [`run_fault`]: the load processes, the probe and one fault, recorded |
//! | `catalogue` | [`Fault`]: the faults, by name |
//! | `stack` | the suite's compose project and fixed ports, [`stack_up`], its databases and etcd members |
//! | `inject` | one function per fault kind that injects it (and undoes it) and times its hand-over |
//! | `observe` | what etcd and the services say around a fault: lock holders, leases, leaders |
//! | `section` | the pause-in-section fault: a holder paused inside its critical section, fenced and unfenced |
//! | `leader_change` | a lock holder or job leader killed, then the etcd leader moved; the real failover bound |
//! | `replay` | the duplicate-messages fault's replayed and reordered saga messages |
//! | `probe` | the probe orders that measure the stall |
//! | `report` | [`FaultRun`], its violations, the fault matrix in markdown |

mod catalogue;
mod inject;
mod leader_change;
mod observe;
mod probe;
mod replay;
mod report;
mod section;
mod stack;

pub use catalogue::Fault;
pub use report::{markdown, FaultRun};
pub use stack::{stack_up, PROJECT};

use probe::Probe;
use stack::{databases, etcd_endpoints};

use std::time::{Duration, Instant};

use anyhow::Context;
use loadtest::config::{Amount, Cluster, Endpoints, Scenario};
use loadtest::{RunConfig, StrategyReport};
use shop_common::domain::Strategy;

use crate::{step, Stack};

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
/// Runs one fault under load and records what happened.
pub async fn run_fault(
    stack: &mut Stack,
    fault: Fault,
    options: &Options,
    started: Instant,
) -> anyhow::Result<FaultRun> {
    let run_id = format!("{}-{:06x}", fault.name(), rand::random::<u32>() & 0xff_ffff);
    if fault == Fault::PauseInSection {
        // Both inventory replicas from the hooked image, before the load starts.
        step(
            started,
            "  pause-in-section: inventory replicas from the hooked image",
        );
        stack
            .reconfigure(&section::INVENTORIES, &section::HOOKED)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let run = run_load_and_fault(stack, fault, options, started, &run_id).await;
    if fault == Fault::PauseInSection {
        // Back to the normal image, for the faults after this one.
        step(
            started,
            "  pause-in-section: inventory replicas from the normal image again",
        );
        stack
            .reconfigure(&section::INVENTORIES, &[])
            .await
            .map_err(anyhow::Error::msg)?;
    }
    run
}

async fn run_load_and_fault(
    stack: &Stack,
    fault: Fault,
    options: &Options,
    started: Instant,
    run_id: &str,
) -> anyhow::Result<FaultRun> {
    let members = etcd_endpoints(stack).await?;
    let configs = load_configs(stack, options, run_id, &members).await?;
    let hot_sku = format!("lt-{run_id}-{}-sku0", options.strategy.as_str());
    let probe = Probe::start(stack, run_id, options.strategy).await?;
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
    let mut load_errors = Vec::new();
    for (index, load) in loads.into_iter().enumerate() {
        match load
            .await
            .context("load task")
            .and_then(|r| r.context("load run"))
        {
            Ok(mut played) => reports.append(&mut played),
            Err(e) => load_errors.push(format!("load process {index}: {e:#}")),
        }
    }
    let probe = probe.stop(fault_at).await;
    if !load_errors.is_empty() {
        // Every failed process is reported, not only the last one.
        anyhow::bail!("{}", load_errors.join("; "));
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
            rate: None,
            cpu_ports: Vec::new(),
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
            internal_token: Some(stack.token().clone()),
        });
    }
    Ok(configs)
}
