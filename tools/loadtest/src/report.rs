//! The results of a run: one [`StrategyReport`] per strategy, printed as tables, as
//! JSON (one object per strategy and line) or as a markdown summary.
//!
//! Client-side numbers (orders accepted/rejected/failed, latency, throughput) are this
//! process's; everything about stock, orders' fates and payments comes from the
//! databases ([`crate::audit`]) and covers every process of the run.

use std::collections::BTreeMap;
use std::fmt::Write;

use shop_common::domain::Strategy;

use crate::audit::Audit;
use crate::config::RunConfig;
use crate::cost::Cost;
use crate::scenario::RunNames;
use crate::stats::Measurements;

/// One strategy's results. The serialised fields are the `--json` object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StrategyReport {
    pub strategy: String,
    pub scenario: String,
    pub run_id: String,
    /// `orders` (CreateOrder through the saga) or `reserve` (inventory's Reserve
    /// directly: no orders, no payments).
    pub mode: &'static str,
    /// The flash sale the orders were in (None: `--no-sale`).
    pub sale_id: Option<String>,
    /// False when no order got an answer (e.g. the strategy is not implemented by the
    /// inventory service: every call failed); `error` says why.
    pub available: bool,
    pub error: Option<String>,
    pub processes: usize,
    /// Buyers over all processes.
    pub buyers: usize,
    /// Units stocked over all the run's SKUs.
    pub stock: i64,
    pub skus: usize,
    /// This process's orders: placed, accepted (RESERVED), rejected, failed calls.
    pub orders: usize,
    pub orders_accepted: usize,
    pub orders_rejected: usize,
    pub orders_failed: usize,
    /// What the databases say (all processes): stock, orders' fates, payments.
    #[serde(flatten)]
    pub audit: Audit,
    pub per_customer_limit: Option<i32>,
    /// Seconds from the sale's opening (or the start) to the last answer.
    pub elapsed_s: f64,
    /// Answered orders (accepted + rejected) per second of `elapsed_s`.
    pub throughput_rps: f64,
    pub accepted_rps: f64,
    /// Seconds from the start (or the sale's opening) until every order of the run was
    /// settled (PAID with its stock committed, REJECTED, or CANCELLED with its stock
    /// released): what the whole saga took, payments included. `None`: not every order
    /// settled within the settle timeout, or no orders (direct Reserve).
    pub settled_s: Option<f64>,
    /// Orders per second through the whole saga: this process's orders over
    /// `settled_s`. CreateOrder answers at RESERVED, so `throughput_rps` can run ahead
    /// of what the payment step keeps up with; this cannot.
    pub saga_rps: Option<f64>,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Failed calls by "CODE: message", most frequent first.
    pub errors: Vec<(String, usize)>,
    /// What an order cost the servers (etcd, Postgres, CPU), see [`crate::cost`].
    #[serde(flatten)]
    pub cost: Cost,
    /// `closed` (each buyer orders again when answered) or `open` (`--rate`: latency
    /// from each order's due time).
    pub load: &'static str,
    pub rate: Option<f64>,
    #[serde(skip)]
    pub measurements: Measurements,
}

impl StrategyReport {
    pub fn new(
        config: &RunConfig,
        strategy: Strategy,
        measurements: Measurements,
        audit: Audit,
        errors: BTreeMap<String, usize>,
    ) -> StrategyReport {
        let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let m = &measurements;
        let available = m.accepted + m.rejected > 0 || m.failed == 0;
        StrategyReport {
            strategy: strategy.as_str().to_owned(),
            scenario: config.scenario.as_str().to_owned(),
            run_id: config.cluster.run_id.clone(),
            mode: if config.direct_reserve {
                "reserve"
            } else {
                "orders"
            },
            sale_id: config
                .use_sale
                .then(|| RunNames::new(config, strategy).sale_id().to_owned()),
            available,
            error: (!available).then(|| {
                errors
                    .first()
                    .map(|(e, _)| format!("every order failed, e.g. {e}"))
                    .unwrap_or_default()
            }),
            processes: config.cluster.processes,
            buyers: config.buyers * config.cluster.processes,
            stock: config.total_stock(),
            skus: config.skus,
            orders: m.accepted + m.rejected + m.failed,
            orders_accepted: m.accepted,
            orders_rejected: m.rejected,
            orders_failed: m.failed,
            per_customer_limit: (config.per_customer_limit > 0)
                .then_some(config.per_customer_limit),
            elapsed_s: m.window.as_secs_f64(),
            throughput_rps: m.throughput_rps(),
            accepted_rps: m.accepted_rps(),
            settled_s: None,
            saga_rps: None,
            p50_ms: m.latency_ms(0.50),
            p95_ms: m.latency_ms(0.95),
            p99_ms: m.latency_ms(0.99),
            max_ms: m.max_ms(),
            errors,
            cost: Cost::default(),
            load: if config.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: config.rate,
            measurements,
            audit,
        }
    }

    /// The report with the time from the start until every order had settled.
    pub fn with_settled(mut self, settled: Option<std::time::Duration>) -> StrategyReport {
        self.settled_s = settled.map(|d| d.as_secs_f64());
        self.saga_rps = self
            .settled_s
            .filter(|s| *s > 0.0)
            .map(|s| self.orders as f64 / s);
        self
    }

    /// The report with what its orders cost.
    pub fn with_cost(mut self, cost: Cost) -> StrategyReport {
        self.cost = cost;
        self
    }

    /// The invariants this strategy promises and broke. `none` promises everything
    /// but "nothing oversold", conservation and the per-customer limit.
    pub fn violations(&self) -> Vec<String> {
        let mut broken = Vec::new();
        let uncoordinated = self.strategy == Strategy::None.as_str();
        if self.audit.oversold > 0 && !uncoordinated {
            broken.push(format!("{} units oversold", self.audit.oversold));
        }
        if !uncoordinated {
            for sku in self.audit.per_sku.iter().filter(|s| !s.conserved) {
                broken.push(format!(
                    "{}: available {} + reserved {} + sold {} != {} stocked",
                    sku.sku, sku.available, sku.reserved, sku.counted_sold, sku.stocked
                ));
            }
        }
        if self.audit.limit_violations > 0 && !uncoordinated {
            broken.push(format!(
                "{} customers over the per-customer limit (inventory)",
                self.audit.limit_violations
            ));
        }
        if self.audit.status_mismatches > 0 {
            broken.push(format!(
                "{} orders whose status disagrees with their reservation (e.g. {})",
                self.audit.status_mismatches,
                self.audit.status_mismatch_examples.join("; ")
            ));
        }
        if let Some(over) = self
            .audit
            .over_limit_units
            .filter(|&u| u > 0 && !uncoordinated)
        {
            broken.push(format!("{over} units over the per-customer limit"));
        }
        if self.audit.lost_orders > 0 {
            broken.push(format!("{} orders lost", self.audit.lost_orders));
        }
        if self.audit.stock_unsettled > 0 {
            broken.push(format!(
                "{} paid or cancelled orders whose stock inventory never committed or released",
                self.audit.stock_unsettled
            ));
        }
        if self.audit.duplicate_payments > 0 {
            broken.push(format!(
                "{} duplicate payments",
                self.audit.duplicate_payments
            ));
        }
        if self.audit.duplicate_charges > 0 {
            broken.push(format!(
                "{} double charges kept at the provider",
                self.audit.duplicate_charges
            ));
        }
        if self.audit.payment_mismatches > 0 {
            broken.push(format!(
                "{} payments disagree with their order",
                self.audit.payment_mismatches
            ));
        }
        broken.extend(self.audit.drift.iter().cloned());
        broken
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serialises")
    }
}

const COLUMNS: [&str; 13] = [
    "strategy",
    "accepted",
    "rejected",
    "failed",
    "sold/stock",
    "oversold",
    "lost",
    "dup. payments",
    "orders/s",
    "saga orders/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
];

fn row(r: &StrategyReport) -> [String; COLUMNS.len()] {
    [
        r.strategy.clone(),
        r.orders_accepted.to_string(),
        r.orders_rejected.to_string(),
        r.orders_failed.to_string(),
        format!("{}/{}", r.audit.units_sold, r.stock),
        r.audit.oversold.to_string(),
        r.audit.lost_orders.to_string(),
        r.audit.duplicate_payments.to_string(),
        format!("{:.0}", r.throughput_rps),
        r.saga_rps.map_or("n/a".into(), |v| format!("{v:.0}")),
        format!("{:.1}", r.p50_ms),
        format!("{:.1}", r.p95_ms),
        format!("{:.1}", r.p99_ms),
    ]
}

fn heading(reports: &[StrategyReport]) -> String {
    match reports.first() {
        None => "no strategies ran".into(),
        Some(r) => format!(
            "{}{} · {} buyers in {} process(es) · {} units over {} SKU(s) · run {}",
            r.scenario,
            if r.mode == "reserve" {
                " (direct Reserve, no saga)"
            } else {
                ""
            },
            r.buyers,
            r.processes,
            r.stock,
            r.skus,
            r.run_id
        ),
    }
}

/// The details of one strategy, as `label: value` lines.
fn details(r: &StrategyReport) -> Vec<(String, String)> {
    let statuses = r
        .audit
        .orders_by_status
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut lines = vec![
        (
            "orders (this process)".into(),
            format!(
                "{} placed: {} accepted, {} rejected, {} failed",
                r.orders, r.orders_accepted, r.orders_rejected, r.orders_failed
            ),
        ),
        (
            "units (inventory DB)".into(),
            format!(
                "{} promised, {} sold of {} stocked, {} oversold",
                r.audit.units_promised, r.audit.units_sold, r.stock, r.audit.oversold
            ),
        ),
        ("orders (order DB)".into(), statuses),
        (
            "lost orders".into(),
            if r.audit.lost_examples.is_empty() {
                r.audit.lost_orders.to_string()
            } else {
                format!(
                    "{} (e.g. {})",
                    r.audit.lost_orders,
                    r.audit.lost_examples.join("; ")
                )
            },
        ),
        (
            "payments (payment DB)".into(),
            format!(
                "{} payments, {} duplicate, {} disagreeing with their order; provider: {} charges, {} refunds, {} double charges",
                r.audit.payments,
                r.audit.duplicate_payments,
                r.audit.payment_mismatches,
                r.audit.provider_charges,
                r.audit.provider_refunds,
                r.audit.duplicate_charges
            ),
        ),
        (
            "throughput".into(),
            format!(
                "{:.0} orders/s answered, {:.0}/s accepted, over {:.3} s",
                r.throughput_rps, r.accepted_rps, r.elapsed_s
            ),
        ),
        (
            "through the whole saga".into(),
            match (r.saga_rps, r.settled_s) {
                (Some(rps), Some(s)) => format!(
                    "{rps:.0} orders/s: every order settled (paid and committed, or released) {s:.1} s after the start"
                ),
                _ if r.mode == "reserve" => "no orders (direct Reserve)".into(),
                _ => "not every order settled within the settle timeout".into(),
            },
        ),
        (
            "latency".into(),
            format!(
                "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms
            ),
        ),
    ];
    if let (Some(limit), Some(over)) = (r.per_customer_limit, r.audit.over_limit_units) {
        lines.push((
            "per-customer limit".into(),
            format!("{limit} units; {over} units bought beyond it"),
        ));
    }
    if r.audit.stock_unsettled > 0 {
        lines.push((
            "stock not settled".into(),
            format!(
                "{} PAID/CANCELLED orders still wait for inventory's Commit/Release",
                r.audit.stock_unsettled
            ),
        ));
    }
    if !r.audit.drift.is_empty() {
        lines.push(("counter drift".into(), r.audit.drift.join("; ")));
    }
    if !r.audit.payment_mismatch_examples.is_empty() {
        lines.push((
            "payment mismatches".into(),
            r.audit.payment_mismatch_examples.join("; "),
        ));
    }
    lines.push(("cost per order".into(), r.cost.line()));
    for (message, n) in r.errors.iter().take(3) {
        lines.push(("failed calls".into(), format!("{n} × {message}")));
    }
    if let Some(error) = &r.error {
        lines.push(("not available".into(), error.clone()));
    }
    lines
}

/// The tables printed at the end of a run: one per strategy, then all side by side.
pub fn render_text(reports: &[StrategyReport]) -> String {
    let mut out = String::new();
    writeln!(out, "{}", heading(reports)).unwrap();
    for r in reports {
        writeln!(out, "\n{}", r.strategy).unwrap();
        let details = details(r);
        let width = details.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in details {
            writeln!(out, "  {label:<width$}  {value}").unwrap();
        }
    }
    let rows: Vec<[String; COLUMNS.len()]> = reports.iter().map(row).collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([COLUMNS[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    writeln!(out).unwrap();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    writeln!(out, "{}", line(&header)).unwrap();
    for r in &rows {
        writeln!(out, "{}", line(r)).unwrap();
    }
    writeln!(out, "\ncost per order").unwrap();
    for r in reports {
        writeln!(out, "  {:<8}  {}", r.strategy, r.cost.line()).unwrap();
    }
    out
}

/// The comparison as a markdown table (also what docs/benchmarks.md shows).
pub fn markdown_table(reports: &[StrategyReport]) -> String {
    let mut out = String::new();
    writeln!(out, "| {} |", COLUMNS.join(" | ")).unwrap();
    writeln!(out, "|---|{}", "---:|".repeat(COLUMNS.len() - 1)).unwrap();
    for r in reports {
        writeln!(out, "| {} |", row(r).join(" | ")).unwrap();
    }
    out
}

/// `summary.md` of `--report`: the table, then each strategy's details and links to
/// its `charts` (name, title: `<strategy>-<name>.png` and `.svg`, see
/// `CHARTS` of the charts module; none when empty).
pub fn markdown_summary(
    reports: &[StrategyReport],
    command: &str,
    charts: &[(&str, &str)],
) -> String {
    let mut out = String::new();
    writeln!(out, "# Load test: {}\n", heading(reports)).unwrap();
    writeln!(out, "Command: `{command}`\n").unwrap();
    out.push_str(&markdown_table(reports));
    writeln!(out, "\nCost per order:\n").unwrap();
    out.push_str(&Cost::markdown_table(
        reports.iter().map(|r| (r.strategy.as_str(), &r.cost)),
    ));
    for r in reports {
        writeln!(out, "\n## {}\n", r.strategy).unwrap();
        for (label, value) in details(r) {
            writeln!(out, "- {label}: {value}").unwrap();
        }
        let broken = r.violations();
        if !broken.is_empty() {
            writeln!(out, "- **invariants broken**: {}", broken.join("; ")).unwrap();
        }
        for (chart, title) in charts {
            writeln!(
                out,
                "\n![{} {title}]({}-{chart}.png) ([SVG]({}-{chart}.svg))",
                r.strategy, r.strategy, r.strategy
            )
            .unwrap();
        }
    }
    out
}
