//! The `payments` table: one row per order, ever (the order id is the primary key).
//!
//! Every change is a compare-and-set on the row's state (or idempotent), so a worker
//! and the `settle-payments` job — or two overlapping leaders of it — can race on one
//! payment without recording anything twice.

use std::time::Duration;

use shop_common::payments::PaymentItem;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// A worker has it; the provider's answer is not recorded yet.
    Processing,
    Captured,
    Failed,
    /// Captured, then refunded because the order had been cancelled meanwhile.
    Refunded,
}

impl PaymentState {
    fn parse(raw: &str) -> PaymentState {
        match raw {
            "CAPTURED" => PaymentState::Captured,
            "FAILED" => PaymentState::Failed,
            "REFUNDED" => PaymentState::Refunded,
            _ => PaymentState::Processing,
        }
    }

    pub fn is_final(self) -> bool {
        self != PaymentState::Processing
    }
}

/// A payment row.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub order_id: Uuid,
    pub customer_id: String,
    /// The customer's tier (queue priority) the request came with.
    pub tier: String,
    pub amount_minor: i64,
    pub state: PaymentState,
    pub provider_ref: Option<String>,
    pub reason: String,
    /// How many times the queue delivered this order's request.
    pub deliveries: i32,
    /// When the order service accepted (or for good refused) the result; `None` while
    /// it may not know the outcome.
    pub reported_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The order service's answer when it refused the result for good.
    pub report_refusal: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl PaymentRow {
    /// The queue item that asks for this payment again (no trace context: the order's
    /// request that started the trace is long over).
    pub fn request(&self) -> PaymentItem {
        PaymentItem {
            order_id: self.order_id.to_string(),
            customer_id: self.customer_id.clone(),
            tier: self.tier.clone(),
            amount_minor: self.amount_minor,
            trace: Default::default(),
            amount_seal: None,
        }
    }
}

#[derive(Clone)]
pub struct PaymentsDb {
    pool: PgPool,
}

const COLUMNS: &str = "order_id, customer_id, tier, amount_minor, state, provider_ref, reason, \
     deliveries, reported_at, report_refusal, created_at, updated_at";

impl PaymentsDb {
    pub fn new(pool: PgPool) -> PaymentsDb {
        PaymentsDb { pool }
    }

    /// Records that a delivery of `order_id` started: inserts the row (PROCESSING) the
    /// first time, counts the delivery otherwise, and returns the row as it now is — a
    /// final row means an earlier delivery already finished the payment. `amount_minor`
    /// is the order's (read from the order service), not the queue item's.
    pub async fn begin(
        &self,
        order_id: Uuid,
        request: &PaymentItem,
        amount_minor: i64,
    ) -> sqlx::Result<PaymentRow> {
        let row = sqlx::query(&format!(
            "INSERT INTO payments (order_id, customer_id, tier, amount_minor, state)
             VALUES ($1, $2, $3, $4, 'PROCESSING')
             ON CONFLICT (order_id) DO UPDATE SET deliveries = payments.deliveries + 1
             RETURNING {COLUMNS}"
        ))
        .bind(order_id)
        .bind(&request.customer_id)
        .bind(&request.tier)
        .bind(amount_minor)
        .fetch_one(&self.pool)
        .await?;
        Ok(to_row(&row))
    }

    /// Records the provider's answer — only over PROCESSING, so whichever delivery
    /// records first wins and a duplicate changes nothing. Returns the row as it is.
    pub async fn finish(
        &self,
        order_id: Uuid,
        ok: bool,
        provider_ref: &str,
        reason: &str,
    ) -> sqlx::Result<PaymentRow> {
        let updated = sqlx::query(&format!(
            "UPDATE payments SET state = $2, provider_ref = $3, reason = $4, updated_at = now()
             WHERE order_id = $1 AND state = 'PROCESSING'
             RETURNING {COLUMNS}"
        ))
        .bind(order_id)
        .bind(if ok { "CAPTURED" } else { "FAILED" })
        .bind(provider_ref)
        .bind(reason)
        .fetch_optional(&self.pool)
        .await?;
        self.updated_or_current(updated, order_id).await
    }

    /// Records that the order service accepted the payment's result. Idempotent.
    pub async fn mark_reported(&self, order_id: Uuid) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE payments SET reported_at = COALESCE(reported_at, now())
             WHERE order_id = $1 AND state <> 'PROCESSING'",
        )
        .bind(order_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that the order service refused the result for good (`answer` says why),
    /// so it is not reported again. Idempotent: the first answer is kept.
    pub async fn mark_refused(&self, order_id: Uuid, answer: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE payments SET reported_at = now(), report_refusal = $2
             WHERE order_id = $1 AND state <> 'PROCESSING' AND reported_at IS NULL",
        )
        .bind(order_id)
        .bind(answer)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// CAPTURED → REFUNDED (compare-and-set), reported at once: the order service
    /// already has the order as CANCELLED. Returns the row as it is afterwards.
    pub async fn refunded(&self, order_id: Uuid, reason: &str) -> sqlx::Result<PaymentRow> {
        let updated = sqlx::query(&format!(
            "UPDATE payments SET state = 'REFUNDED', reason = $2, updated_at = now(),
                                 reported_at = COALESCE(reported_at, now())
             WHERE order_id = $1 AND state = 'CAPTURED'
             RETURNING {COLUMNS}"
        ))
        .bind(order_id)
        .bind(reason)
        .fetch_optional(&self.pool)
        .await?;
        self.updated_or_current(updated, order_id).await
    }

    /// The row a compare-and-set returned, or (when it changed nothing because the
    /// payment had already moved on) the row as it is.
    async fn updated_or_current(
        &self,
        updated: Option<sqlx::postgres::PgRow>,
        order_id: Uuid,
    ) -> sqlx::Result<PaymentRow> {
        match updated {
            Some(row) => Ok(to_row(&row)),
            None => self.get(order_id).await?.ok_or(sqlx::Error::RowNotFound),
        }
    }

    /// Final payments (CAPTURED, FAILED) whose result the order service has not
    /// confirmed, last changed more than `age` ago; oldest first.
    pub async fn unreported_since(
        &self,
        age: Duration,
        limit: i64,
    ) -> sqlx::Result<Vec<PaymentRow>> {
        self.older_than(
            "reported_at IS NULL AND state IN ('CAPTURED', 'FAILED')",
            age,
            limit,
        )
        .await
    }

    /// Payments PROCESSING (begun, no provider answer recorded) for more than `age`
    /// (counted from the last [`PaymentsDb::touch`]); oldest first.
    pub async fn processing_since(
        &self,
        age: Duration,
        limit: i64,
    ) -> sqlx::Result<Vec<PaymentRow>> {
        self.older_than("state = 'PROCESSING'", age, limit).await
    }

    async fn older_than(
        &self,
        condition: &str,
        age: Duration,
        limit: i64,
    ) -> sqlx::Result<Vec<PaymentRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments
             WHERE {condition} AND updated_at < now() - make_interval(secs => $1)
             ORDER BY updated_at LIMIT $2"
        ))
        .bind(age.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(to_row).collect())
    }

    /// Marks a PROCESSING payment as looked after now (its request was checked or put
    /// back on the queue), so the next look is one settle period later.
    pub async fn touch(&self, order_id: Uuid) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE payments SET updated_at = now() WHERE order_id = $1 AND state = 'PROCESSING'",
        )
        .bind(order_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get(&self, order_id: Uuid) -> sqlx::Result<Option<PaymentRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(to_row))
    }
}

fn to_row(row: &sqlx::postgres::PgRow) -> PaymentRow {
    PaymentRow {
        order_id: row.get("order_id"),
        customer_id: row.get("customer_id"),
        tier: row.get("tier"),
        amount_minor: row.get("amount_minor"),
        state: PaymentState::parse(row.get::<&str, _>("state")),
        provider_ref: row.get("provider_ref"),
        reason: row.get("reason"),
        deliveries: row.get("deliveries"),
        reported_at: row.get("reported_at"),
        report_refusal: row.get("report_refusal"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}
