//! One run: for each strategy in turn, on its own SKUs and sale,
//!
//! 1. **setup** (process 0 only): stock the SKUs (refusing SKUs that exist: a reused
//!    run id), create the sale closed, with its per-customer limit;
//! 2. **start together**: every process enters the strategy's coord `DoubleBarrier`
//!    (`<prefix>/loadtest/<run>/<strategy>`, count = processes); process 0 enters only
//!    after its setup, so nobody orders from SKUs that are not stocked yet;
//! 3. **the rush**: every buyer submits its first CreateOrder with the sale's id; the
//!    Reserves wait at the sale's barrier in the inventory service. Process 0 watches
//!    the order database until every process's first orders are in (or the count
//!    stops growing), then calls OpenSale, which releases them all at once. Buyers
//!    with more orders to place go on ordering in the open sale;
//! 4. **finish together**: each process leaves the DoubleBarrier when its buyers are
//!    done, so no process audits while another still orders;
//! 5. **settle and audit**: wait until no order of the run is PENDING or RESERVED
//!    and inventory confirmed every PAID/CANCELLED order's Commit/Release, at most
//!    `settle_timeout`, then read the invariants from the databases ([`crate::audit`]).
//!
//! Without a sale (`use_sale = false`) step 3 has no barrier in the inventory: the
//! buyers start when they pass the DoubleBarrier. With `direct_reserve` the buyers
//! call inventory's Reserve themselves (the strategies without the saga); process 0
//! then opens the sale a second after the start, as nothing is stored to count.
//!
//! Not guaranteed: the processes must be given the same options (buyers, stock,
//! scenario, strategies, run id); nothing checks it. The window start in a process
//! other than 0 comes from the sale's `opened_at` (the inventory's wall clock), so its
//! latencies assume clocks that agree (true on one host).
//!
//! The process's connections and clock are in `driver/shop.rs`, the buyers in
//! `driver/buyers.rs`, the stock chart's sampler in `driver/stock.rs`. What the orders
//! cost ([`crate::cost`]) is read right before the buyers start and after settling.

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shop_common::auth::Authorized;
use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use tonic::Code;

mod buyers;
mod shop;
mod stock;

use buyers::Buyers;
use shop::{Clock, Shop};
use stock::StockSampler;

use crate::audit::AuditScope;
use crate::config::{Amount, RunConfig};
use crate::report::StrategyReport;
use crate::scenario::RunNames;
use crate::stats::Measurements;

/// Longest wait for every process's first orders before the sale opens anyway (the
/// waiting Reserves must not reach the order service's inventory deadline).
const FILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The sale opens anyway when the count of stored orders has not grown for this long.
const FILL_STALL: Duration = Duration::from_secs(2);

/// Connects to the shop's etcd, services and databases and plays every strategy of
/// `config`. Fails on setup problems (unreachable service, reused run id, sales not
/// available); orders that fail are counted, not fatal.
pub async fn run(config: &RunConfig) -> anyhow::Result<Vec<StrategyReport>> {
    let shop = Shop::connect(config).await?;
    let mut reports = Vec::new();
    for &strategy in &config.strategies {
        let report = play(config, &shop, strategy)
            .await
            .with_context(|| format!("strategy {strategy}"))?;
        reports.push(report);
    }
    shop.session.close().await.ok();
    Ok(reports)
}

async fn play(
    config: &RunConfig,
    shop: &Shop,
    strategy: Strategy,
) -> anyhow::Result<StrategyReport> {
    let names = RunNames::new(config, strategy);
    let bar = progress_bar(config, strategy);
    let mut inventory = shop.inventory.clone();

    if config.cluster.is_coordinator() {
        bar.set_message("stocking SKUs");
        set_up(config, &names, strategy, &mut inventory).await?;
    }

    bar.set_message(format!(
        "waiting for {} process(es) at the start barrier",
        config.cluster.processes
    ));
    let barrier =
        coord::DoubleBarrier::new(&shop.session, &names.barrier, config.cluster.processes)?;
    let inside = coord::timeout(config.join_timeout, barrier.enter())
        .await
        .with_context(|| {
            format!(
                "the other processes did not arrive at {} within {:?}",
                names.barrier, config.join_timeout
            )
        })?;

    let clock = Clock::start();
    let sampler = StockSampler::start(config, &names, inventory.clone(), clock);
    bar.set_message(if config.use_sale {
        "orders in, sale closed"
    } else {
        "ordering"
    });
    let cost_before = shop.probe.read().await;
    let buyers = Buyers::spawn(config, shop, strategy, &names, clock, bar.clone());

    let window_start = if config.use_sale {
        let opened = if config.cluster.is_coordinator() {
            open_when_filled(config, shop, &names, &mut inventory, &bar).await?
        } else {
            wait_until_open(&names, &mut inventory).await?
        };
        bar.set_message("sale open");
        clock.at_unix_ms(opened.opened_at_unix_ms)
    } else {
        Some(Duration::ZERO)
    };
    let samples = buyers.finish().await;
    let window_start = window_start.unwrap_or(Duration::ZERO);

    bar.set_message("waiting for the other processes to finish");
    coord::timeout(config.join_timeout, inside.leave())
        .await
        .context("leaving the finish barrier")?;

    bar.set_message("settling payments");
    let settled = shop
        .auditor
        .wait_settled(&names.key_prefix, config.settle_timeout)
        .await
        .context("reading the order database")?;
    // From the window's start (the sale's opening, or the first order) to the moment
    // the last order was seen settled (polled every 100 ms).
    let settled =
        (settled && !config.direct_reserve).then(|| clock.now().saturating_sub(window_start));
    let stock = sampler.stop(window_start).await;
    bar.set_message("reading what the orders cost");
    let cost = crate::cost::cost(
        &cost_before,
        &shop.probe.read_after().await,
        samples.samples.len(),
    );

    bar.set_message("auditing the databases");
    let audit = shop
        .auditor
        .audit(&AuditScope {
            key_prefix: &names.key_prefix,
            skus: &names.skus,
            stock_per_sku: config.stock,
            // Direct Reserves have no orders: nothing can be lost or paid.
            accepted: if config.direct_reserve {
                &[]
            } else {
                &samples.accepted
            },
            per_customer_limit: config.per_customer_limit,
            sale_id: config.use_sale.then(|| names.sale_id()),
        })
        .await
        .context("auditing the databases")?;
    bar.finish_and_clear();

    let measurements = Measurements::new(&samples.samples, window_start, stock);
    Ok(
        StrategyReport::new(config, strategy, measurements, audit, samples.errors)
            .with_cost(cost)
            .with_settled(settled),
    )
}

fn progress_bar(config: &RunConfig, strategy: Strategy) -> ProgressBar {
    let (bar, template) = match config.amount {
        Amount::OnePerBuyer => (
            ProgressBar::new(config.buyers as u64),
            "{prefix:>6} [{bar:30}] {pos}/{len} orders {elapsed} {msg}",
        ),
        Amount::Orders(n) => (
            ProgressBar::new(n as u64),
            "{prefix:>6} [{bar:30}] {pos}/{len} orders {elapsed} {msg}",
        ),
        Amount::Duration(_) => (
            ProgressBar::no_length(),
            "{prefix:>6} {spinner} {pos} orders {elapsed} {msg}",
        ),
    };
    if !config.progress {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(strategy.as_str());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Stocks the run's SKUs and creates its sale (closed).
async fn set_up(
    config: &RunConfig,
    names: &RunNames,
    strategy: Strategy,
    inventory: &mut InventoryServiceClient<Authorized>,
) -> anyhow::Result<()> {
    for sku in &names.skus {
        match inventory
            .get_stock(pb::GetStockRequest { sku: sku.clone() })
            .await
        {
            Ok(_) => anyhow::bail!(
                "SKU {sku} exists already: run id {:?} was used before; choose another --run-id",
                config.cluster.run_id
            ),
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return Err(rpc_error("inventory GetStock", status)),
        }
        inventory
            .set_stock(pb::SetStockRequest {
                sku: sku.clone(),
                available: config.stock,
                // The strategy is the SKU's: each strategy plays on its own SKUs.
                strategy: strategy.to_proto() as i32,
            })
            .await
            .map_err(|s| rpc_error("inventory SetStock", s))?;
    }
    if config.use_sale {
        inventory
            .create_sale(pb::CreateSaleRequest {
                sale_id: names.sale_id().to_owned(),
                per_customer_limit: config.per_customer_limit,
            })
            .await
            .map_err(|status| match status.code() {
                Code::Unimplemented => anyhow::anyhow!(
                    "this inventory service has no flash sales (UNIMPLEMENTED: {}); run with --no-sale",
                    status.message()
                ),
                Code::AlreadyExists => anyhow::anyhow!(
                    "sale {} exists already: run id {:?} was used before; choose another --run-id",
                    names.sale_id(),
                    config.cluster.run_id
                ),
                _ => rpc_error("inventory CreateSale", status),
            })?;
    }
    Ok(())
}

fn rpc_error(call: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call} failed: {:?}: {}", status.code(), status.message())
}

/// Process 0: waits until every process's first orders are stored (they then wait at
/// the sale's barrier), then opens the sale.
async fn open_when_filled(
    config: &RunConfig,
    shop: &Shop,
    names: &RunNames,
    inventory: &mut InventoryServiceClient<Authorized>,
    bar: &ProgressBar,
) -> anyhow::Result<pb::Sale> {
    if config.direct_reserve {
        // Direct Reserves leave nothing in the order database to count: give every
        // process's first Reserves a moment to reach the sale's barrier.
        bar.set_message("sale closed, Reserves waiting");
        tokio::time::sleep(Duration::from_secs(1)).await;
        return open_sale(names, inventory).await;
    }
    let expected = (config.buyers * config.cluster.processes) as i64;
    let deadline = Instant::now() + FILL_TIMEOUT;
    let (mut last, mut last_change) = (-1, Instant::now());
    loop {
        let stored = shop.auditor.orders_stored(&names.key_prefix).await?;
        bar.set_message(format!("sale closed, {stored}/{expected} orders waiting"));
        if stored != last {
            (last, last_change) = (stored, Instant::now());
        }
        if stored >= expected || Instant::now() >= deadline || last_change.elapsed() >= FILL_STALL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stored order calls Reserve right after its insert; let the last ones get there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    open_sale(names, inventory).await
}

async fn open_sale(
    names: &RunNames,
    inventory: &mut InventoryServiceClient<Authorized>,
) -> anyhow::Result<pb::Sale> {
    Ok(inventory
        .open_sale(pb::OpenSaleRequest {
            sale_id: names.sale_id().to_owned(),
        })
        .await
        .map_err(|s| rpc_error("inventory OpenSale", s))?
        .into_inner())
}

/// Other processes: learn when the sale opened.
async fn wait_until_open(
    names: &RunNames,
    inventory: &mut InventoryServiceClient<Authorized>,
) -> anyhow::Result<pb::Sale> {
    let deadline = Instant::now() + FILL_TIMEOUT + Duration::from_secs(20);
    loop {
        let sale = inventory
            .get_sale(pb::GetSaleRequest {
                sale_id: names.sale_id().to_owned(),
            })
            .await
            .map_err(|s| rpc_error("inventory GetSale", s))?
            .into_inner();
        if sale.open {
            return Ok(sale);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "sale {} did not open (process 0 opens it)",
            names.sale_id()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
