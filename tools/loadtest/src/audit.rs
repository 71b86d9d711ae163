//! The invariants, read from the services' own databases — never from the load
//! tester's counts.
//!
//! | invariant | read from | how |
//! |---|---|---|
//! | nothing oversold | inventory | per SKU, units on RESERVED + COMMITTED reservation lines (what buyers were promised) minus the units stocked, if positive; the counters are compared with the rows too (drift), with inventory's own `InventoryDb::audit` |
//! | conservation | inventory | per SKU, `available + reserved + sold` (the counters) equals the units stocked: a lost update (two holders writing values computed from one read) breaks it, and no CHECK can hide it (`conservation_violations`: SKUs that break it) |
//! | status agreement | order + inventory | every order's status agrees with its reservation: RESERVED ↔ reserved, PAID ↔ committed, REJECTED/CANCELLED ↔ nothing held (no reservation, or released); a PAID/CANCELLED order whose stock is not settled yet may still be reserved (`status_mismatches`) |
//! | per-customer limit, whatever the strategy | inventory | per sale, customers whose RESERVED + COMMITTED reservations exceed the limit (`limit_violations`) — read from inventory's reservations, so it also covers direct Reserves |
//! | no lost order | order | every order of the run (by idempotency-key prefix) that is still PENDING or RESERVED after the settle timeout, plus every order this process was told was accepted that the database does not have |
//! | stock settled | order | PAID/CANCELLED orders whose Commit/Release inventory has not confirmed (`stock_settled`) after the settle timeout |
//! | one payment per order | payment | payment rows beyond the first per order |
//! | one charge kept per order | payment (the provider's ledger) | charges the provider accepted (`provider_charges`) and refunded (`provider_refunds`) for the run's orders, keyed by the provider's own charge ids; charges kept (not refunded in full) beyond the first per order (`duplicate_charges`, counted in `duplicate_payments` too) — see `payment_service::ledger` |
//! | payment agrees with the order | payment | PAID without a captured payment or a kept charge, CANCELLED with either (`payment_mismatches`) |
//! | per-customer limit | order | units of a customer's RESERVED/PAID orders in the sale above the limit |
//!
//! The connections are read-only (`default_transaction_read_only`), so the auditor
//! cannot change what it checks. What is not guaranteed: the order and payment reads
//! are not one snapshot across databases; they are taken after the orders settled,
//! when nothing of the run moves any more.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use inventory_service::repository::InventoryDb;
use payment_service::ledger::LedgerAudit;
use shop_common::domain::Sku;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::config::Databases;

/// Read-only pools on the three databases.
#[derive(Debug, Clone)]
pub struct Auditor {
    order: PgPool,
    inventory: PgPool,
    payment: PgPool,
}

/// One SKU's truth.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkuTruth {
    pub sku: String,
    pub stocked: i64,
    /// Units on RESERVED + COMMITTED reservation lines.
    pub promised: i64,
    /// Units on COMMITTED lines.
    pub sold: i64,
    pub oversold: i64,
    /// The counters: `available + reserved + counted_sold` must equal `stocked`.
    pub available: i64,
    pub reserved: i64,
    pub counted_sold: i64,
    pub conserved: bool,
}

/// What the databases say about one strategy's part of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Audit {
    pub per_sku: Vec<SkuTruth>,
    pub units_promised: i64,
    pub units_sold: i64,
    pub oversold: i64,
    /// Where stock counters disagree with reservation rows (a lost update shows here).
    pub drift: Vec<String>,
    /// The run's orders in the order database, by status.
    pub orders_by_status: BTreeMap<String, i64>,
    pub lost_orders: i64,
    /// A few of the lost orders, with their status (`missing` if not in the database).
    pub lost_examples: Vec<String>,
    /// PAID/CANCELLED orders whose stock inventory has not confirmed committing or
    /// releasing (the counters may still move: drift is then not conclusive).
    pub stock_unsettled: i64,
    pub payments: i64,
    /// Payment rows beyond the first per order, plus `duplicate_charges`.
    pub duplicate_payments: i64,
    /// Charges the provider accepted for the run's orders, from its own ledger.
    pub provider_charges: i64,
    /// Refunds the provider made on them.
    pub provider_refunds: i64,
    /// Charges the provider keeps (accepted, not refunded in full) beyond the first per
    /// order: double charges.
    pub duplicate_charges: i64,
    pub payment_mismatches: i64,
    pub payment_mismatch_examples: Vec<String>,
    /// Units bought beyond the sale's per-customer limit (None: the sale has no limit).
    pub over_limit_units: Option<i64>,
    /// SKUs whose counters do not add up to the units stocked.
    pub conservation_violations: i64,
    /// Orders whose status disagrees with their reservation in inventory.
    pub status_mismatches: i64,
    pub status_mismatch_examples: Vec<String>,
    /// Customers holding more than the sale's per-customer limit, per inventory.
    pub limit_violations: i64,
}

/// Which orders and SKUs to audit.
pub struct AuditScope<'a> {
    pub key_prefix: &'a str,
    pub skus: &'a [String],
    pub stock_per_sku: i64,
    /// Orders this process was told were accepted (RESERVED).
    pub accepted: &'a [Uuid],
    pub per_customer_limit: i32,
    /// The run's sale (None: `--no-sale`).
    pub sale_id: Option<&'a str>,
}

fn read_only(options: &PgConnectOptions) -> PgConnectOptions {
    options
        .clone()
        .options([("default_transaction_read_only", "on")])
}

async fn pool(options: &PgConnectOptions, which: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(read_only(options))
        .await
        .with_context(|| {
            format!(
                "cannot connect to the {which} database at {}:{}/{} (set --{which}-db or {}_DATABASE_URL)",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("?"),
                which.to_ascii_uppercase()
            )
        })
}

impl Auditor {
    pub async fn connect(databases: &Databases) -> anyhow::Result<Auditor> {
        Ok(Auditor {
            order: pool(&databases.order, "order").await?,
            inventory: pool(&databases.inventory, "inventory").await?,
            payment: pool(&databases.payment, "payment").await?,
        })
    }

    /// The run's orders that are not done yet: PENDING or RESERVED, or PAID/CANCELLED
    /// while inventory has not confirmed the Commit/Release (`stock_settled`; the order
    /// is marked PAID before its stock is committed, so the counters still move).
    pub async fn unsettled(&self, key_prefix: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM orders
             WHERE starts_with(idempotency_key, $1)
               AND (status IN ('PENDING', 'RESERVED')
                    OR (status IN ('PAID', 'CANCELLED') AND NOT stock_settled))",
        )
        .bind(key_prefix)
        .fetch_one(&self.order)
        .await?)
    }

    /// How many of the run's orders the order service has stored (in any status).
    pub async fn orders_stored(&self, key_prefix: &str) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar(
                "SELECT count(*) FROM orders WHERE starts_with(idempotency_key, $1)",
            )
            .bind(key_prefix)
            .fetch_one(&self.order)
            .await?,
        )
    }

    /// The run's orders still PENDING or RESERVED: found through the status index, so
    /// polling it costs the order database next to nothing (the whole
    /// [`Auditor::unsettled`] reads every order of the run).
    async fn in_flight(&self, key_prefix: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM orders
             WHERE status IN ('PENDING', 'RESERVED') AND starts_with(idempotency_key, $1)",
        )
        .bind(key_prefix)
        .fetch_one(&self.order)
        .await?)
    }

    /// Waits until every order of the run is done ([`Auditor::unsettled`]), at most
    /// `timeout`. Returns whether they all settled. It polls the cheap in-flight count
    /// and reads the whole condition only once that is zero, so the waiting adds little
    /// to what the run's orders are measured to cost.
    pub async fn wait_settled(&self, key_prefix: &str, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.in_flight(key_prefix).await? == 0 && self.unsettled(key_prefix).await? == 0 {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn audit(&self, scope: &AuditScope<'_>) -> anyhow::Result<Audit> {
        let mut audit = Audit::default();
        self.audit_stock(scope, &mut audit).await?;
        self.audit_orders(scope, &mut audit).await?;
        self.audit_payments(scope, &mut audit).await?;
        self.audit_statuses(scope, &mut audit).await?;
        if scope.per_customer_limit > 0 {
            audit.over_limit_units = Some(self.over_limit(scope).await?);
            if let Some(sale) = scope.sale_id {
                audit.limit_violations = self
                    .customers_over_limit(sale, scope.per_customer_limit)
                    .await?;
            }
        }
        Ok(audit)
    }

    async fn audit_stock(&self, scope: &AuditScope<'_>, audit: &mut Audit) -> anyhow::Result<()> {
        let inventory = InventoryDb::new(self.inventory.clone());
        for name in scope.skus {
            let sku = Sku::parse("sku", name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let truth = inventory
                .audit(&sku)
                .await
                .context("reading the inventory database")?
                .with_context(|| format!("SKU {name} is not in the inventory database"))?;
            audit.drift.extend(truth.drift());
            let promised = truth.promised();
            let oversold = (promised - scope.stock_per_sku).max(0);
            audit.units_promised += promised;
            audit.units_sold += truth.lines_committed;
            audit.oversold += oversold;
            let l = &truth.level;
            let conserved = l.available + l.reserved + l.sold == scope.stock_per_sku;
            if !conserved {
                audit.conservation_violations += 1;
            }
            audit.per_sku.push(SkuTruth {
                sku: name.clone(),
                stocked: scope.stock_per_sku,
                promised,
                sold: truth.lines_committed,
                oversold,
                available: l.available,
                reserved: l.reserved,
                counted_sold: l.sold,
                conserved,
            });
        }
        Ok(())
    }

    async fn audit_orders(&self, scope: &AuditScope<'_>, audit: &mut Audit) -> anyhow::Result<()> {
        let rows = sqlx::query(
            "SELECT status, count(*) AS n FROM orders
             WHERE starts_with(idempotency_key, $1) GROUP BY status ORDER BY status",
        )
        .bind(scope.key_prefix)
        .fetch_all(&self.order)
        .await?;
        for row in rows {
            audit
                .orders_by_status
                .insert(row.try_get("status")?, row.try_get("n")?);
        }
        let unsettled = sqlx::query(
            "SELECT order_id, status FROM orders
             WHERE starts_with(idempotency_key, $1) AND status IN ('PENDING', 'RESERVED')
             ORDER BY created_at",
        )
        .bind(scope.key_prefix)
        .fetch_all(&self.order)
        .await?;
        let missing: Vec<Uuid> = sqlx::query_scalar(
            "SELECT a.order_id FROM unnest($1::uuid[]) AS a(order_id)
             WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = a.order_id)",
        )
        .bind(scope.accepted)
        .fetch_all(&self.order)
        .await?;
        audit.lost_orders = (unsettled.len() + missing.len()) as i64;
        audit.stock_unsettled = sqlx::query_scalar(
            "SELECT count(*) FROM orders
             WHERE starts_with(idempotency_key, $1)
               AND status IN ('PAID', 'CANCELLED') AND NOT stock_settled",
        )
        .bind(scope.key_prefix)
        .fetch_one(&self.order)
        .await?;
        for row in unsettled.iter().take(5) {
            let id: Uuid = row.try_get("order_id")?;
            let status: String = row.try_get("status")?;
            audit.lost_examples.push(format!("{id} {status}"));
        }
        for id in missing.iter().take(5) {
            audit.lost_examples.push(format!("{id} missing"));
        }
        Ok(())
    }

    async fn audit_payments(
        &self,
        scope: &AuditScope<'_>,
        audit: &mut Audit,
    ) -> anyhow::Result<()> {
        // The orders that ever held stock: they are the ones that may be charged.
        let orders: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT order_id, status FROM orders
             WHERE starts_with(idempotency_key, $1)
               AND status IN ('RESERVED', 'PAID', 'CANCELLED')",
        )
        .bind(scope.key_prefix)
        .fetch_all(&self.order)
        .await?;
        let ids: Vec<Uuid> = orders.iter().map(|(id, _)| *id).collect();
        let payments: Vec<(Uuid, i64, bool)> = sqlx::query_as(
            "SELECT order_id, count(*), bool_or(state = 'CAPTURED') FROM payments
             WHERE order_id = ANY($1) GROUP BY order_id",
        )
        .bind(&ids)
        .fetch_all(&self.payment)
        .await?;
        let ledger = LedgerAudit::read(&self.payment, &ids).await?;
        audit.payments = payments.iter().map(|(_, n, _)| n).sum();
        audit.provider_charges = ledger.charges;
        audit.provider_refunds = ledger.refunds;
        audit.duplicate_charges = ledger.duplicate_charges();
        audit.duplicate_payments =
            payments.iter().map(|(_, n, _)| (n - 1).max(0)).sum::<i64>() + audit.duplicate_charges;
        let captured: BTreeMap<Uuid, bool> = payments
            .iter()
            .map(|(id, _, captured)| (*id, *captured))
            .collect();
        for (id, status) in &orders {
            let was_captured = captured.get(id).copied().unwrap_or(false);
            let problem = match status.as_str() {
                "PAID" if !was_captured => Some("PAID without a captured payment"),
                "CANCELLED" if was_captured => Some("CANCELLED although its payment was captured"),
                // The payment service's record agrees; does the provider's ledger?
                _ => ledger.disagreement(*id, status),
            };
            if let Some(problem) = problem {
                audit.payment_mismatches += 1;
                if audit.payment_mismatch_examples.len() < 5 {
                    audit
                        .payment_mismatch_examples
                        .push(format!("{id}: {problem}"));
                }
            }
        }
        Ok(())
    }

    /// Compares every order's status with its reservation's state in inventory.
    async fn audit_statuses(
        &self,
        scope: &AuditScope<'_>,
        audit: &mut Audit,
    ) -> anyhow::Result<()> {
        let orders: Vec<(Uuid, String, bool)> = sqlx::query_as(
            "SELECT order_id, status, stock_settled FROM orders
             WHERE starts_with(idempotency_key, $1) AND status <> 'PENDING'",
        )
        .bind(scope.key_prefix)
        .fetch_all(&self.order)
        .await?;
        let ids: Vec<Uuid> = orders.iter().map(|(id, _, _)| *id).collect();
        let states: BTreeMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT order_id, state FROM reservations WHERE order_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.inventory)
        .await?
        .into_iter()
        .collect();
        for (id, status, settled) in &orders {
            let state = states.get(id).map(String::as_str);
            let agrees = match (status.as_str(), state) {
                ("RESERVED", Some("RESERVED")) => true,
                ("PAID", Some("COMMITTED")) => true,
                ("REJECTED", None | Some("RELEASED")) => true,
                ("CANCELLED", None | Some("RELEASED")) => true,
                ("PAID" | "CANCELLED", Some("RESERVED")) => !settled,
                _ => false,
            };
            if !agrees {
                audit.status_mismatches += 1;
                if audit.status_mismatch_examples.len() < 5 {
                    audit.status_mismatch_examples.push(format!(
                        "{id}: order {status}, reservation {}",
                        state.unwrap_or("absent")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Customers whose reservations in the sale (RESERVED or COMMITTED) hold more
    /// than `limit` units, per the inventory database.
    async fn customers_over_limit(&self, sale: &str, limit: i32) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT r.customer_id FROM reservations r
                 JOIN reservation_lines l USING (order_id)
                 WHERE r.sale_id = $1 AND r.state IN ('RESERVED', 'COMMITTED')
                 GROUP BY r.customer_id HAVING sum(l.quantity) > $2) over",
        )
        .bind(sale)
        .bind(i64::from(limit))
        .fetch_one(&self.inventory)
        .await?)
    }

    async fn over_limit(&self, scope: &AuditScope<'_>) -> anyhow::Result<i64> {
        let per_customer: Vec<(String, i64)> = sqlx::query_as(
            "SELECT o.customer_id, sum(l.quantity)::bigint FROM orders o
             JOIN order_lines l ON l.order_id = o.order_id
             WHERE starts_with(o.idempotency_key, $1) AND o.status IN ('RESERVED', 'PAID')
             GROUP BY o.customer_id",
        )
        .bind(scope.key_prefix)
        .fetch_all(&self.order)
        .await?;
        let limit = i64::from(scope.per_customer_limit);
        Ok(per_customer
            .iter()
            .map(|(_, units)| (units - limit).max(0))
            .sum())
    }
}
