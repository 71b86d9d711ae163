//! What the provider's ledger says about a set of orders: the auditors' one reading of
//! it (the load tester's audit, the fault suite's, the knockout tests).
//!
//! A charge is *accepted* when the provider authorized or captured it, and *kept* while
//! less than its amount has been refunded. An order may keep at most one charge: every
//! kept charge beyond the first is a double charge (`duplicate_charges`), whichever
//! way it came about. A PAID order keeps exactly one; a CANCELLED or REJECTED order
//! keeps none (a capture that arrived after the cancel is refunded by
//! `settle-payments`).

use std::collections::BTreeMap;

use sqlx::PgPool;
use uuid::Uuid;

/// The provider's ledger, per order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerAudit {
    /// Charges the provider accepted (authorized or captured) for the orders.
    pub charges: i64,
    /// Refunds it made on them.
    pub refunds: i64,
    /// Per order, the charges it keeps (accepted, not refunded in full).
    pub kept: BTreeMap<Uuid, i64>,
}

impl LedgerAudit {
    /// Reads the ledger for `orders` (a read-only pool is enough).
    pub async fn read(pool: &PgPool, orders: &[Uuid]) -> sqlx::Result<LedgerAudit> {
        let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
            "SELECT c.order_id, count(*),
                    count(*) FILTER (WHERE COALESCE(r.refunded, 0) < c.amount_minor),
                    COALESCE(sum(r.refunds), 0)::bigint
             FROM provider_charges c
             LEFT JOIN (SELECT charge_id, sum(amount_minor) AS refunded, count(*) AS refunds
                        FROM provider_refunds GROUP BY charge_id) r USING (charge_id)
             WHERE c.order_id = ANY($1) AND c.status <> 'DECLINED'
             GROUP BY c.order_id",
        )
        .bind(orders)
        .fetch_all(pool)
        .await?;
        let mut audit = LedgerAudit::default();
        for (order, accepted, kept, refunds) in rows {
            audit.charges += accepted;
            audit.refunds += refunds;
            audit.kept.insert(order, kept);
        }
        Ok(audit)
    }

    /// Charges an order keeps.
    pub fn kept_by(&self, order: Uuid) -> i64 {
        self.kept.get(&order).copied().unwrap_or(0)
    }

    /// Kept charges beyond the first per order.
    pub fn duplicate_charges(&self) -> i64 {
        self.kept.values().map(|n| (n - 1).max(0)).sum()
    }

    /// What is wrong between an order's status (as the order service stores it) and
    /// the charges it keeps, if anything: PAID needs one, CANCELLED and REJECTED none.
    /// (More than one is counted by [`LedgerAudit::duplicate_charges`].)
    pub fn disagreement(&self, order: Uuid, status: &str) -> Option<&'static str> {
        match (status, self.kept_by(order)) {
            ("PAID", 0) => Some("PAID without a charge kept at the provider"),
            ("CANCELLED" | "REJECTED", n) if n > 0 => {
                Some("cancelled, yet the provider keeps a charge for it")
            }
            _ => None,
        }
    }
}
