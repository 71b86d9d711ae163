//! The `payments` table: one row per order, ever (the order id is the primary key).

use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// A worker has it; the provider's answer is not recorded yet.
    Processing,
    Captured,
    Failed,
}

impl PaymentState {
    fn parse(raw: &str) -> PaymentState {
        match raw {
            "CAPTURED" => PaymentState::Captured,
            "FAILED" => PaymentState::Failed,
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
    pub amount_minor: i64,
    pub state: PaymentState,
    pub provider_ref: Option<String>,
    pub reason: String,
    /// How many times the queue delivered this order's request.
    pub deliveries: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone)]
pub struct PaymentsDb {
    pool: PgPool,
}

const COLUMNS: &str = "order_id, customer_id, amount_minor, state, provider_ref, reason, deliveries, created_at, updated_at";

impl PaymentsDb {
    pub fn new(pool: PgPool) -> PaymentsDb {
        PaymentsDb { pool }
    }

    /// Records that a delivery of `order_id` started: inserts the row (PROCESSING) the
    /// first time, counts the delivery otherwise, and returns the row as it now is — a
    /// final row means an earlier delivery already finished the payment.
    pub async fn begin(
        &self,
        order_id: Uuid,
        customer_id: &str,
        amount_minor: i64,
    ) -> sqlx::Result<PaymentRow> {
        let row = sqlx::query(&format!(
            "INSERT INTO payments (order_id, customer_id, amount_minor, state)
             VALUES ($1, $2, $3, 'PROCESSING')
             ON CONFLICT (order_id) DO UPDATE SET deliveries = payments.deliveries + 1
             RETURNING {COLUMNS}"
        ))
        .bind(order_id)
        .bind(customer_id)
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
        match updated {
            Some(row) => Ok(to_row(&row)),
            None => self.get(order_id).await?.ok_or(sqlx::Error::RowNotFound),
        }
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
        amount_minor: row.get("amount_minor"),
        state: PaymentState::parse(row.get::<&str, _>("state")),
        provider_ref: row.get("provider_ref"),
        reason: row.get("reason"),
        deliveries: row.get("deliveries"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}
