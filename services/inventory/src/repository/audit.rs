//! Reads that check the books: SKUs whose counters drift from their reservation rows,
//! one SKU's counters next to its rows, a customer's units in a sale, and the states
//! of many orders (the reconcile job's sweep of stm holds).

use shop_common::domain::{OrderId, Sku};
use sqlx::Row;

use super::model::{Drift, ReservationState, StockAudit};
use super::stock::{stock_level, InventoryDb};

impl InventoryDb {
    /// SKUs whose numbers do not add up: available + reserved + sold differs from the
    /// total fixed when the stock was set, or `reserved` / `sold` differ from the units
    /// on RESERVED / COMMITTED reservations. Strategy `none` produces such drift on
    /// purpose (lost updates); the others never should.
    pub async fn drifted(&self) -> Result<Vec<Drift>, sqlx::Error> {
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT s.sku, s.available, s.reserved, s.sold, COALESCE(s.total, 0),
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)::bigint,
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)::bigint
             FROM stock s
             LEFT JOIN reservation_lines l ON l.sku = s.sku
             LEFT JOIN reservations r ON r.order_id = l.order_id
             GROUP BY s.sku, s.available, s.reserved, s.sold, s.total
             HAVING s.available + s.reserved + s.sold <> COALESCE(s.total, s.available + s.reserved + s.sold)
                 OR s.reserved <> COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)
                 OR s.sold <> COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(sku, available, reserved, sold, total, lines_reserved, lines_committed)| Drift {
                    sku,
                    available,
                    total,
                    reserved,
                    sold,
                    lines_reserved,
                    lines_committed,
                },
            )
            .collect())
    }

    /// The counters and reservation rows of a SKU (`None` if unknown).
    pub async fn audit(&self, sku: &Sku) -> Result<Option<StockAudit>, sqlx::Error> {
        // One statement, so the counters and the rows come from one snapshot: two reads
        // would let a Commit landing between them look like drift.
        let row = sqlx::query(
            "SELECT s.sku, s.available, s.reserved, s.sold, s.fence_token, s.strategy,
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)::bigint
                        AS lines_reserved,
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)::bigint
                        AS lines_committed
             FROM stock s
             LEFT JOIN reservation_lines l ON l.sku = s.sku
             LEFT JOIN reservations r ON r.order_id = l.order_id
             WHERE s.sku = $1
             GROUP BY s.sku, s.available, s.reserved, s.sold, s.fence_token, s.strategy",
        )
        .bind(sku.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(StockAudit {
                level: stock_level(sku, &row)?,
                lines_reserved: row.try_get("lines_reserved")?,
                lines_committed: row.try_get("lines_committed")?,
            })
        })
        .transpose()
    }

    /// Units a customer holds in a sale, per the reservations.
    pub async fn purchased(&self, sale: &str, customer: &str) -> Result<i64, sqlx::Error> {
        let units: Option<i64> = sqlx::query_scalar(
            "SELECT units FROM sale_purchases WHERE sale_id = $1 AND customer_id = $2",
        )
        .bind(sale)
        .bind(customer)
        .fetch_optional(self.pool())
        .await?;
        Ok(units.unwrap_or(0))
    }

    /// The state and strategy of the reservations of these orders (for the reconcile
    /// job's sweep of stm holds); orders without a row are left out.
    pub async fn reservation_states(
        &self,
        orders: &[OrderId],
    ) -> Result<Vec<(OrderId, ReservationState)>, sqlx::Error> {
        let ids: Vec<uuid::Uuid> = orders.iter().map(|o| o.as_uuid()).collect();
        let rows: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT order_id, state FROM reservations WHERE order_id = ANY($1)")
                .bind(&ids)
                .fetch_all(self.pool())
                .await?;
        rows.into_iter()
            .map(|(id, state)| Ok((OrderId::from_uuid(id), ReservationState::from_db(&state)?)))
            .collect()
    }
}
