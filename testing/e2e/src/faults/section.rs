//! The `pause-in-section` fault (issue 14): a lock holder paused *inside* its critical
//! section, after its read of the stock and before its write, until its lease expired
//! and the other replica sold; then resumed. Run once per strategy on a SKU of its own
//! (3 units), while the load runs on its hot SKU:
//!
//! 1. the suite stocks the SKU and sends Reserve A (1 unit) to `inventory-1`;
//! 2. `inventory-1` (the hooked image, see `inventory_service::hooks`) announces that A
//!    has read "3 available" and holds the lock: it creates
//!    `/shop/test-hooks/in-section/<sku>` and waits;
//! 3. the suite sees the key, `docker pause`s `inventory-1` (its keepalives stop) and
//!    waits until A's lease is gone (etcd deletes its lock key);
//! 4. the suite sends Reserve B (all 3 units) to `inventory-2`, which takes the lock and
//!    reserves;
//! 5. the suite `docker unpause`s `inventory-1` and sets the key to `resume`: A writes.
//!
//! `mutex-unfenced`: A's write goes through, the auditor reports 1 unit oversold and
//! broken conservation. `mutex`: A's write is refused (its Reserve answers ABORTED,
//! "stale fencing token"), nothing is oversold. The fault passes only if both happen:
//! an unfenced run that does not oversell missed the moment and proves nothing.

use std::time::{Duration, Instant};

use anyhow::Context;
use coord::etcd_client::{Client as EtcdClient, GetOptions};
use loadtest::audit::{AuditScope, Auditor};
use shop_common::domain::Strategy;
use shop_proto::v1 as pb;

use super::observe::{etcd_of, lease_gone};
use super::report::Injection;
use super::stack::{databases, HOLD};
use crate::{Stack, TTL};

/// SKUs the hooked replicas hold in their critical section (once per SKU).
pub(super) const SKU_PREFIX: &str = "pause-in-section-";
/// The stack's environment for the fault: both inventory replicas from the hooked
/// image, armed for [`SKU_PREFIX`] (docker/compose.faults.yaml reads these).
pub(super) const HOOKED: [(&str, &str); 2] = [
    ("INVENTORY_IMAGE", "coord-shop:test-hooks"),
    ("TEST_HOOK_PAUSE_IN_SECTION_SKU_PREFIX", SKU_PREFIX),
];
/// The inventory replicas the fault re-creates.
pub(super) const INVENTORIES: [&str; 2] = ["inventory-1", "inventory-2"];
/// The announcement key's value that lets the held Reserve go on
/// (`inventory_service::hooks::RESUME`, which exists only in a hooked build).
const RESUME: &str = "resume";
/// Units of each experiment's SKU.
const STOCK: i32 = 3;
/// Longest wait for an announcement or an answer (something is broken past it).
const PATIENCE: Duration = Duration::from_secs(60);

/// What one strategy's run came to.
struct Experiment {
    strategy: Strategy,
    /// A's answer once resumed: the outcome, or the status it was refused with.
    first: Result<pb::ReserveOutcome, tonic::Status>,
    oversold: i64,
    conserved: bool,
    counters: String,
    /// From `docker pause` until A's lease (and lock key) was gone.
    lease_gone: Duration,
}

/// Runs the experiment under `mutex-unfenced`, then `mutex`, and judges them.
pub(super) async fn pause_in_section(stack: &Stack, members: &[(String, String)]) -> Injection {
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut done = Vec::new();
    for strategy in [Strategy::MutexUnfenced, Strategy::Mutex] {
        match experiment(stack, members, &run, strategy).await {
            Ok(e) => done.push(e),
            Err(e) => {
                let why = format!("{} run: {e:#}", strategy.as_str());
                let before: Vec<String> = done.iter().map(describe).collect();
                return Injection {
                    action: format!(
                        "{}pause-in-section failed: {why}",
                        before.iter().map(|d| format!("{d}; ")).collect::<String>()
                    ),
                    failover: None,
                    error: Some(format!(
                        "the in-section pause could not be carried out: {why}"
                    )),
                };
            }
        }
    }
    judge(&done)
}

/// One run, for the report.
fn describe(e: &Experiment) -> String {
    let answer = match &e.first {
        Ok(outcome) => format!("A's stale write went through ({})", outcome.as_str_name()),
        Err(status) => format!(
            "A's stale write was refused ({:?}: {})",
            status.code(),
            status.message()
        ),
    };
    format!(
        "`{}`: inventory-1 held A inside its section and was paused, its lease gone after {:.2}s, inventory-2 reserved all {STOCK} units, inventory-1 resumed; {answer}; oversold {}, {}",
        e.strategy.as_str(),
        e.lease_gone.as_secs_f64(),
        e.oversold,
        if e.conserved { "conserved".to_owned() } else { format!("conservation broken ({})", e.counters) },
    )
}

/// The fault's verdict: unfenced oversold, fenced refused and conserved.
fn judge(done: &[Experiment]) -> Injection {
    let action = done.iter().map(describe).collect::<Vec<_>>().join("; ");
    let mut wrong = Vec::new();
    let (unfenced, fenced) = (&done[0], &done[1]);
    if unfenced.oversold == 0 || unfenced.conserved {
        wrong.push(
            "the unfenced run did not oversell: the moment was missed and the experiment proves nothing"
                .to_owned(),
        );
    }
    if fenced.oversold != 0 || !fenced.conserved {
        wrong.push(format!(
            "the fenced run oversold {} ({})",
            fenced.oversold, fenced.counters
        ));
    }
    match &fenced.first {
        Err(status)
            if status.code() == tonic::Code::Aborted
                && status.message().contains("stale fencing token") => {}
        other => wrong.push(format!(
            "the fenced stale write was not refused with ABORTED \"stale fencing token\": {other:?}"
        )),
    }
    Injection {
        action,
        failover: done.iter().map(|e| e.lease_gone).max(),
        error: (!wrong.is_empty()).then(|| wrong.join("; ")),
    }
}

/// One strategy's run on a SKU of its own.
async fn experiment(
    stack: &Stack,
    members: &[(String, String)],
    run: &str,
    strategy: Strategy,
) -> anyhow::Result<Experiment> {
    let sku = format!("{SKU_PREFIX}{run}-{}", strategy.as_str());
    let mut etcd = etcd_of(members).await?;
    stack
        .inventory("inventory-2")
        .await
        .set_stock(pb::SetStockRequest {
            sku: sku.clone(),
            available: i64::from(STOCK),
            strategy: strategy.to_proto() as i32,
        })
        .await
        .context("SetStock")?;

    // A: one unit, on inventory-1; it stops inside its critical section.
    let mut first_client = stack.inventory("inventory-1").await;
    let reserve_a = reserve(&sku, 1);
    let mut first = tokio::spawn(async move { first_client.reserve(reserve_a).await });
    let key = format!("/shop/test-hooks/in-section/{sku}");
    let announced = tokio::select! {
        announced = announcement(&mut etcd, &key) => announced?,
        answered = &mut first => {
            let answer = match answered {
                Ok(Ok(r)) => r.into_inner().outcome().as_str_name().to_owned(),
                Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                Err(e) => e.to_string(),
            };
            anyhow::bail!(
                "A's Reserve answered ({answer}) without being held: the moment was missed (is inventory-1 running the hooked image, armed for {SKU_PREFIX}?)"
            )
        }
    };
    anyhow::ensure!(
        announced.starts_with("inventory-1 "),
        "the hold was announced by {announced:?}, not inventory-1"
    );
    // A holds the SKU's lock: the first (oldest) key of its lock line, on
    // inventory-1's current session lease (a new one after the fault's first run).
    let line = etcd
        .get(
            format!("/shop/locks/sku/{sku}/"),
            Some(GetOptions::new().with_prefix().with_sort(
                coord::etcd_client::SortTarget::Create,
                coord::etcd_client::SortOrder::Ascend,
            )),
        )
        .await?;
    let lease = line.kvs().first().map(|kv| kv.lease()).with_context(|| {
        format!("nobody holds {sku}'s lock while inventory-1 is in its section")
    })?;

    // Pause it there until its lease is gone and inventory-2 has sold; then resume.
    stack
        .docker_on(&["pause"], "inventory-1")
        .await
        .map_err(anyhow::Error::msg)?;
    let paused = async {
        let at = Instant::now();
        lease_gone(&mut etcd, lease, TTL + HOLD + Duration::from_secs(10))
            .await?
            .context("inventory-1's lease outlived the pause")?;
        let gone = at.elapsed();
        let b = stack
            .inventory("inventory-2")
            .await
            .reserve(reserve(&sku, STOCK))
            .await
            .context("B's Reserve on inventory-2")?
            .into_inner();
        anyhow::ensure!(
            b.outcome() == pb::ReserveOutcome::Reserved,
            "B was not reserved: {b:?}"
        );
        Ok(gone)
    }
    .await;
    let unpaused = stack.docker_on(&["unpause"], "inventory-1").await;
    let resumed = etcd.put(key.as_str(), RESUME, None).await;
    let lease_gone = paused?;
    unpaused.map_err(anyhow::Error::msg)?;
    resumed.context("resume")?;
    let first = tokio::time::timeout(PATIENCE, first)
        .await
        .context("A's Reserve did not answer after it was resumed")?
        .context("A's Reserve task")?
        .map(|r| r.into_inner().outcome());

    // What the auditor says about the SKU.
    let auditor = Auditor::connect(&databases(stack).await?).await?;
    let audit = auditor
        .audit(&AuditScope {
            key_prefix: &format!("{sku}-no-orders-"),
            skus: std::slice::from_ref(&sku),
            stock_per_sku: i64::from(STOCK),
            accepted: &[],
            per_customer_limit: 0,
            sale_id: None,
        })
        .await?;
    let truth = audit.per_sku.first().context("the SKU's audit")?;
    Ok(Experiment {
        strategy,
        first,
        oversold: audit.oversold,
        conserved: audit.conservation_violations == 0,
        counters: format!(
            "available {} + reserved {} + sold {} vs {STOCK} stocked, {} promised",
            truth.available, truth.reserved, truth.counted_sold, truth.promised
        ),
        lease_gone,
    })
}

fn reserve(sku: &str, quantity: i32) -> pb::ReserveRequest {
    pb::ReserveRequest {
        order_id: uuid::Uuid::new_v4().to_string(),
        items: vec![pb::LineItem {
            sku: sku.to_owned(),
            quantity,
        }],
        ..Default::default()
    }
}

/// Waits until the hooked replica announces the hold under `key`; returns the value.
async fn announcement(etcd: &mut EtcdClient, key: &str) -> anyhow::Result<String> {
    let at = Instant::now();
    while at.elapsed() < PATIENCE {
        if let Some(kv) = etcd.get(key, None).await?.kvs().first() {
            return Ok(String::from_utf8_lossy(kv.value()).into_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no replica announced a hold under {key} within {PATIENCE:?}")
}
