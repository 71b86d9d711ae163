//! What a run recorded ([`FaultRun`]) and the fault matrix as markdown.

use anyhow::Context;
use loadtest::StrategyReport;
use shop_common::domain::Strategy;
use std::collections::BTreeSet;
use std::time::Duration;

use super::catalogue::Fault;
use super::probe::ProbeResult;

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
    /// Charges the provider's own ledger accepted for the run's orders, and those kept
    /// beyond the first per order (double charges; counted in `duplicate_payments` too).
    pub provider_charges: i64,
    pub duplicate_charges: i64,
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
            provider_charges: 0,
            duplicate_charges: 0,
            stall_s: None,
            failover_s: None,
            violations: vec![why],
        }
    }
}

impl FaultRun {
    /// The record of a run that was carried out: the load processes' `reports` (the
    /// first one, the coordinator's, holds the audit of the databases), the probe's
    /// findings, and the injection's outcome. Broken invariants, and an injection that
    /// failed, are the violations.
    pub(super) fn recorded(
        fault: Fault,
        strategy: Strategy,
        injected: Injection,
        reports: &[StrategyReport],
        probe: ProbeResult,
    ) -> anyhow::Result<FaultRun> {
        let audit = &reports
            .first()
            .context("the coordinating load process reported nothing")?
            .audit;
        let violations: BTreeSet<String> = reports
            .iter()
            .flat_map(|report| report.violations())
            .chain(probe.violations)
            .chain(injected.error)
            .collect();
        Ok(FaultRun {
            fault: fault.name(),
            strategy: strategy.as_str().to_owned(),
            action: injected.action,
            orders: reports.iter().map(|r| r.orders).sum(),
            accepted: reports.iter().map(|r| r.orders_accepted).sum(),
            failed_calls: reports.iter().map(|r| r.orders_failed).sum(),
            oversold: audit.oversold + probe.audit.oversold,
            lost_orders: audit.lost_orders + probe.audit.lost_orders,
            duplicate_payments: audit.duplicate_payments + probe.audit.duplicate_payments,
            payment_mismatches: audit.payment_mismatches + probe.audit.payment_mismatches,
            provider_charges: audit.provider_charges + probe.audit.provider_charges,
            duplicate_charges: audit.duplicate_charges + probe.audit.duplicate_charges,
            stall_s: probe.stall.map(|d| d.as_secs_f64()),
            failover_s: injected.failover.map(|d| d.as_secs_f64()),
            violations: violations.into_iter().collect(),
        })
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

/// What injecting a fault came to.
pub(super) struct Injection {
    /// What was done, and what the fault's own measurement saw (or why it failed).
    pub(super) action: String,
    /// The fault's hand-over time, where it has one.
    pub(super) failover: Option<Duration>,
    /// Why the fault could not be injected: a violation of the run.
    pub(super) error: Option<String>,
}

pub(super) fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()))
}
