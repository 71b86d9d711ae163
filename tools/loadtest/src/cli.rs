//! The `loadtest` command line: options → [`RunConfig`], run, print.
//!
//! Exit status: 0 when every strategy kept its invariants, 3 when one broke an
//! invariant it promises (`none` promises not to lose orders or pay twice, but may
//! oversell), 2 for bad options, 1 when the run could not be done (a service, a
//! database or etcd unreachable, sales not available, a reused run id).

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shop_common::config::grpc_uri;
use shop_common::domain::Strategy;
use sqlx::postgres::PgConnectOptions;

use crate::config::{Amount, Cluster, Databases, Endpoints, RunConfig, Scenario};
use crate::report::{markdown_summary, render_text, StrategyReport};

/// Races many buyers for little stock, once per strategy, and reads from the
/// services' own databases what was oversold, lost or paid twice.
#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    after_help = "Several processes or containers share one run: give each the same options and \
--run-id, plus --processes N and its own --process-index (0 stocks the SKUs and opens the sale).\n\
Exit status: 0 invariants kept, 3 an invariant broken, 2 bad options, 1 the run could not be done."
)]
pub struct Args {
    /// What the buyers order.
    #[arg(long, value_enum, default_value_t = Scenario::FlashSale)]
    pub scenario: Scenario,
    /// Strategies to compare, comma-separated: none, mutex, stm, pg, or all.
    #[arg(long, default_value = "all", value_delimiter = ',', value_parser = parse_strategy_choice)]
    pub strategy: Vec<StrategyChoice>,
    /// Concurrent buyers in this process.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub buyers: u32,
    /// Units stocked per SKU.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    pub stock: i64,
    /// Orders to place in all (default: one per buyer).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub orders: Option<u64>,
    /// Keep ordering for this long (e.g. 10s, 500ms, 2m) instead of one order per buyer.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Open loop: start orders at this constant rate (orders/s) and measure latency from
    /// each order's due time; --buyers is then the most orders in flight. Default: closed loop.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Count this process's CPU too: NAME=PORT of a local process listening on PORT (repeatable).
    #[arg(long, value_parser = parse_cpu_port)]
    pub cpu_port: Vec<(String, u16)>,
    /// cart-mix: how many SKUs.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub skus: u32,
    /// cart-mix: Zipf exponent of the SKUs' popularity (0 = uniform).
    #[arg(long, default_value_t = 1.1, value_parser = parse_zipf)]
    pub zipf: f64,
    /// cart-mix: most lines per order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub max_lines: u32,
    /// Most units per line (each line asks for 1..=this).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_quantity: i32,
    /// The sale's per-customer limit in units (customer-limit: default 1; others: none).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
    pub limit: Option<i32>,
    /// customer-limit: distinct customers over all processes (default: a quarter of the buyers).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub customers: Option<u32>,
    /// Order outside a flash sale: the buyers only start together (no sale barrier).
    #[arg(long)]
    pub no_sale: bool,
    /// Call inventory's Reserve directly (no order service, no payments): measures the
    /// strategies alone; reservations stay RESERVED, only the stock invariants apply.
    #[arg(long)]
    pub direct_reserve: bool,

    /// The order service.
    #[arg(long, env = "ORDER_ADDR", default_value = "http://127.0.0.1:50051")]
    pub order_addr: String,
    /// The inventory service.
    #[arg(long, env = "INVENTORY_ADDR", default_value = "http://127.0.0.1:50052")]
    pub inventory_addr: String,
    /// The order service's database (read only).
    #[arg(
        long,
        env = "ORDER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/order"
    )]
    pub order_db: String,
    /// The inventory service's database (read only).
    #[arg(
        long,
        env = "INVENTORY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/inventory"
    )]
    pub inventory_db: String,
    /// The payment service's database (read only).
    #[arg(
        long,
        env = "PAYMENT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/payment"
    )]
    pub payment_db: String,
    /// etcd, for the start barrier (comma-separated host:port; ETCD_USERNAME/ETCD_PASSWORD apply).
    #[arg(long, env = "ETCD_ENDPOINTS", default_value = "127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// Prefix of the run's etcd keys.
    #[arg(long, env = "ETCD_PREFIX", default_value = "/shop")]
    pub etcd_prefix: String,

    /// Names the run (1-16 letters or digits); required with --processes > 1. Default: random.
    #[arg(long, value_parser = parse_run_id)]
    pub run_id: Option<String>,
    /// Processes (or containers) taking part in the run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub processes: u32,
    /// This process's index, 0..processes.
    #[arg(long, default_value_t = 0)]
    pub process_index: u32,
    /// How long to wait for accepted orders to be paid or cancelled before counting them lost.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub settle_timeout: Duration,
    /// How long to wait for the other processes at the start barrier.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub join_timeout: Duration,
    /// Seed of the buyers' random carts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Print one JSON object per strategy (one per line) instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Write charts (PNG and SVG) and summary.md into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// TrueType font for the charts' text (default: DejaVu Sans from fonts-dejavu-core).
    #[arg(long, env = "LOADTEST_FONT")]
    pub font: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One item of `--strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyChoice {
    All,
    One(Strategy),
}

fn parse_strategy_choice(raw: &str) -> Result<StrategyChoice, String> {
    match raw.trim() {
        "all" => Ok(StrategyChoice::All),
        other => Strategy::from_str(other)
            .map(StrategyChoice::One)
            .map_err(|e| format!("{e} (or all)")),
    }
}

/// `250ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{raw:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{raw:?} must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of orders per second"))?;
    if !(rate > 0.0 && rate <= 1_000_000.0) {
        return Err(format!(
            "{raw}: must be more than 0 and at most 1000000 orders/s"
        ));
    }
    Ok(rate)
}

fn parse_cpu_port(raw: &str) -> Result<(String, u16), String> {
    let (name, port) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?}: expected NAME=PORT, e.g. payment=50053"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{raw:?}: {port:?} is not a TCP port"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("{raw:?}: the name must be letters, digits or '-'"));
    }
    Ok((name.to_owned(), port))
}

fn parse_zipf(raw: &str) -> Result<f64, String> {
    let s: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if !(0.0..=10.0).contains(&s) {
        return Err(format!("{raw}: must be between 0 and 10"));
    }
    Ok(s)
}

fn parse_run_id(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > 16 || !raw.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("{raw:?}: 1-16 letters or digits"));
    }
    Ok(raw.to_owned())
}

fn database(raw: &str, flag: &str) -> anyhow::Result<PgConnectOptions> {
    anyhow::ensure!(
        raw.starts_with("postgres://") || raw.starts_with("postgresql://"),
        "--{flag}: {raw:?} must start with postgres:// or postgresql://"
    );
    PgConnectOptions::from_str(raw).with_context(|| format!("--{flag}: not a Postgres URL"))
}

impl Args {
    /// Checks what clap cannot check alone and builds the run's configuration.
    pub fn to_config(&self) -> anyhow::Result<RunConfig> {
        anyhow::ensure!(
            self.process_index < self.processes,
            "--process-index {} must be below --processes {}",
            self.process_index,
            self.processes
        );
        let run_id = match &self.run_id {
            Some(id) => id.clone(),
            None => {
                anyhow::ensure!(
                    self.processes == 1,
                    "--processes {} needs a --run-id shared by every process",
                    self.processes
                );
                format!("{:08x}", rand::random::<u32>())
            }
        };
        let mut strategies = Vec::new();
        for choice in &self.strategy {
            let add: &[Strategy] = match choice {
                StrategyChoice::All => &Strategy::ALL,
                StrategyChoice::One(s) => std::slice::from_ref(s),
            };
            for s in add {
                if !strategies.contains(s) {
                    strategies.push(*s);
                }
            }
        }
        let customer_limit = self.scenario == Scenario::CustomerLimit;
        anyhow::ensure!(
            !(customer_limit && self.no_sale),
            "--scenario customer-limit needs a sale (its limit is the sale's); drop --no-sale"
        );
        anyhow::ensure!(
            !(self.no_sale && self.limit.is_some()),
            "--limit is the sale's per-customer limit; it cannot be used with --no-sale"
        );
        let total_buyers = self.buyers as usize * self.processes as usize;
        let skus = match self.scenario {
            Scenario::CartMix => self.skus as usize,
            Scenario::FlashSale | Scenario::CustomerLimit => 1,
        };
        let mut etcd = coord::EtcdConfig::from_env().context("etcd settings")?;
        etcd.endpoints = coord::EtcdConfig::new(&self.etcd_endpoints)
            .context("--etcd-endpoints")?
            .endpoints;
        anyhow::ensure!(
            self.etcd_prefix.starts_with('/') && self.etcd_prefix.len() > 1,
            "--etcd-prefix must start with '/' and name something, got {:?}",
            self.etcd_prefix
        );
        Ok(RunConfig {
            scenario: self.scenario,
            strategies,
            buyers: self.buyers as usize,
            stock: self.stock,
            skus,
            zipf_exponent: self.zipf,
            max_lines: self.max_lines as usize,
            max_quantity: self.max_quantity,
            per_customer_limit: self.limit.unwrap_or(if customer_limit { 1 } else { 0 }),
            customers: self
                .customers
                .map(|c| c as usize)
                .unwrap_or((total_buyers / 4).max(1)),
            amount: match (self.orders, self.duration) {
                (Some(n), _) => Amount::Orders(n as usize),
                (None, Some(d)) => Amount::Duration(d),
                (None, None) => Amount::OnePerBuyer,
            },
            rate: self.rate,
            cpu_ports: self.cpu_port.clone(),
            use_sale: !self.no_sale,
            direct_reserve: self.direct_reserve,
            endpoints: Endpoints {
                order: grpc_uri(&self.order_addr),
                inventory: grpc_uri(&self.inventory_addr),
            },
            databases: Databases {
                order: database(&self.order_db, "order-db")?,
                inventory: database(&self.inventory_db, "inventory-db")?,
                payment: database(&self.payment_db, "payment-db")?,
            },
            cluster: Cluster {
                run_id,
                processes: self.processes as usize,
                index: self.process_index as usize,
                etcd,
                etcd_prefix: self.etcd_prefix.trim_end_matches('/').to_owned(),
            },
            settle_timeout: self.settle_timeout,
            join_timeout: self.join_timeout,
            progress: !self.quiet && !self.json,
            sample_stock: self.report.is_some(),
            seed: self.seed,
            internal_token: shop_common::auth::InternalToken::from_lookup(
                shop_common::config::env_var,
            )
            .map_err(|e| anyhow::anyhow!(e.0))?,
        })
    }
}

/// What `main` does: parse, run, print; returns the exit status.
pub async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.to_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.report {
        // Fail before the run, not after it.
        if let Err(e) = prepare_report(dir, args.font.as_deref()) {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(1);
        }
    }
    let reports = match crate::driver::run(&config).await {
        Ok(reports) => reports,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        for r in &reports {
            println!("{}", r.to_json());
        }
    } else {
        print!("{}", render_text(&reports));
    }
    if let Some(dir) = &args.report {
        match write_report(dir, &reports) {
            Ok(()) => eprintln!("loadtest: report in {}", dir.join("summary.md").display()),
            Err(e) => {
                eprintln!("loadtest: {e:#}");
                return ExitCode::from(1);
            }
        }
    }
    let mut broken = false;
    for r in &reports {
        for v in r.violations() {
            eprintln!("loadtest: {}: invariant broken: {v}", r.strategy);
            broken = true;
        }
    }
    if broken {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn prepare_report(dir: &std::path::Path, font: Option<&std::path::Path>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::charts::register_font(font)?;
    Ok(())
}

/// Charts and `summary.md` into `dir` (which [`prepare_report`] created).
pub fn write_report(dir: &std::path::Path, reports: &[StrategyReport]) -> anyhow::Result<()> {
    for r in reports {
        crate::charts::write_charts(dir, r)?;
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let summary = markdown_summary(reports, &command, &crate::charts::CHARTS);
    let path = dir.join("summary.md");
    std::fs::write(&path, summary).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["loadtest"].iter().chain(extra))
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10h").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").unwrap_err().contains("more than 0"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn strategies_expand_and_deduplicate() {
        let config = args(&["--strategy", "pg,all"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(
            config.strategies,
            [
                Strategy::Pg,
                Strategy::None,
                Strategy::MutexUnfenced,
                Strategy::Mutex,
                Strategy::Stm
            ]
        );
        let e = args(&["--strategy", "lock"]).unwrap_err().to_string();
        assert!(e.contains("lock"), "{e}");
    }

    #[test]
    fn bad_combinations_are_refused_with_a_reason() {
        let e = args(&["--processes", "2"])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(e.to_string().contains("--run-id"), "{e}");
        let e = args(&["--processes", "2", "--process-index", "2", "--run-id", "r1"])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(e.to_string().contains("below --processes"), "{e}");
        let e = args(&["--scenario", "customer-limit", "--no-sale"])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(e.to_string().contains("needs a sale"), "{e}");
        assert!(args(&["--buyers", "0"]).is_err());
        assert!(args(&["--orders", "5", "--duration", "1s"]).is_err());
        assert!(args(&["--run-id", "no spaces"]).is_err());
        let e = args(&["--order-db", "mysql://x"])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(e.to_string().contains("--order-db"), "{e}");
    }

    #[test]
    fn customer_limit_defaults_to_one_unit_and_a_customer_per_four_buyers() {
        let config = args(&["--scenario", "customer-limit", "--buyers", "40"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!((config.per_customer_limit, config.customers), (1, 10));
        assert_eq!(config.skus, 1);
        let config = args(&["--scenario", "cart-mix", "--skus", "7"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!((config.per_customer_limit, config.skus), (0, 7));
    }
}
