//! The payment service's leader-elected job `settle-payments`: it finishes what a
//! worker that crashed (or gave up) between the saga's steps left behind, so no
//! payment stays stuck and no charge is kept for an order that was not sold.
//!
//! Each pass (every `JOB_INTERVAL_MS`, on the one replica leading the election) looks at
//! payments untouched for `SETTLE_AFTER_SECS`:
//!
//! | found | meaning | what the job does |
//! |---|---|---|
//! | CAPTURED / FAILED, not confirmed (`reported_at` empty) | the worker died after recording the provider's answer and before the order service confirmed it, and its queue item is gone (dead-lettered, lost) or still being retried | reports it again (`PaymentResult`); confirmed → `reported_at` |
//! | … and the order service refuses a capture because the order is CANCELLED | the reservation expired before the capture arrived | refunds its charge at the provider (idempotency key `order-<id>-refund`) and records REFUNDED |
//! | … refused otherwise | a contradiction only a human can resolve | records the refusal (`report_refusal`), logs an error, stops reporting it |
//! | PROCESSING | begun, provider's answer never recorded; its queue item may be gone | puts the request back on the queue (a no-op while the item exists); a worker then charges — under the order's idempotency key, so the provider answers a repeat with the first charge — and reports |
//!
//! # Guarantees
//! - A payment recorded in the database is never lost: while it is PROCESSING its
//!   request is on the queue (or put back within a settle period), and while its
//!   result is unconfirmed it is reported again every settle period.
//! - At most one charge is kept per order: a capture the order service refused for a
//!   CANCELLED order is refunded, once (the refund carries the order's idempotency key
//!   `order-<id>-refund`, and CAPTURED → REFUNDED is a compare-and-set).
//! - Overlapping leaders (a paused leader that has not noticed its lost term) are
//!   harmless: every write is idempotent — PaymentResult, enqueue by order id, the
//!   refund's idempotency key, compare-and-set state changes — so no fencing token is needed.
//!
//! # Not guaranteed
//! - Promptness: recovery starts `SETTLE_AFTER_SECS` after the payment's last change,
//!   plus up to one interval; a pass handles at most 100 payments of each kind.
//! - A request lost before the worker began the payment (no row here) is not seen by
//!   this job: the order service's `expire-reservations` puts RESERVED orders back on
//!   the queue (and cancels them at their deadline).
//! - A request that keeps failing is dead-lettered by the queue and put back by this
//!   job, again and again, until it succeeds; it is logged each time, not escalated.

use std::sync::Arc;
use std::time::Duration;

use coord::LeaderContext;
use shop_common::payments::enqueue_payment;
use shop_proto::v1 as pb;

use crate::provider::ProviderError;
use crate::report::{report_payment, Reported};
use crate::repository::{PaymentRow, PaymentState};
use crate::worker::{idempotency_key, WorkerContext};

/// The job's name in `ListLeaders` and in its election.
pub const JOB: &str = "settle-payments";

/// Payments of each kind handled per pass.
const BATCH: i64 = 100;

/// How the job runs.
#[derive(Debug, Clone)]
pub struct SettleSettings {
    /// How long a payment may stay unchanged (PROCESSING, or final and unconfirmed)
    /// before the job steps in.
    pub settle_after: Duration,
    /// Pause between passes.
    pub interval: Duration,
}

/// What the job did for one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Reported,
    Refunded,
    Refused,
}

/// One leadership term: passes until cancelled (leadership lost, shutdown).
pub async fn settle_payments(
    context: LeaderContext,
    payments: Arc<WorkerContext>,
    settings: SettleSettings,
    replica: String,
) {
    let interval = settings.interval;
    shop_common::jobs::run_passes(context, &replica, interval, || {
        settle_pass(&payments, settings.settle_after)
    })
    .await
}

/// One pass over unconfirmed and PROCESSING payments; returns what it did.
async fn settle_pass(payments: &WorkerContext, age: Duration) -> Vec<(&'static str, u64)> {
    let (mut reported, mut refunded, mut refused, mut redriven) = (0, 0, 0, 0);
    match payments.db.unreported_since(age, BATCH).await {
        Ok(rows) => {
            for row in rows {
                match settle_unreported(payments, &row).await {
                    Ok(Settled::Reported) => reported += 1,
                    Ok(Settled::Refunded) => refunded += 1,
                    Ok(Settled::Refused) => refused += 1,
                    Err(e) => {
                        tracing::warn!(order_id = %row.order_id, error = %e, "reporting a payment again failed; next pass retries")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "settle pass could not read unconfirmed payments"),
    }
    match payments.db.processing_since(age, BATCH).await {
        Ok(rows) => {
            for row in rows {
                match redrive(payments, &row).await {
                    Ok(true) => redriven += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(order_id = %row.order_id, error = %e, "putting a payment back on the queue failed; next pass retries")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "settle pass could not read PROCESSING payments"),
    }
    vec![
        ("reported", reported),
        ("refunded", refunded),
        ("refused", refused),
        ("redriven", redriven),
    ]
}

/// Reports a final payment again; refunds a capture the order service refused because
/// the order is CANCELLED.
async fn settle_unreported(payments: &WorkerContext, row: &PaymentRow) -> anyhow::Result<Settled> {
    let status = match report_payment(&payments.orders, row).await? {
        Reported::Accepted => {
            payments.db.mark_reported(row.order_id).await?;
            tracing::info!(order_id = %row.order_id, state = ?row.state, "unconfirmed payment reported again and accepted");
            return Ok(Settled::Reported);
        }
        Reported::Refused(status) => status,
    };
    if row.state == PaymentState::Captured && order_cancelled(payments, row).await? {
        let refunded = match &row.provider_ref {
            Some(charge_id) => {
                payments
                    .provider
                    .refund(
                        charge_id,
                        idempotency_key(row.order_id, "refund").as_deref(),
                    )
                    .await
            }
            None => Err(ProviderError::NoSuchCharge("(none recorded)".into())),
        };
        let refund = match refunded {
            Ok(refund) => refund,
            Err(ProviderError::Unexpected(e)) => return Err(e),
            Err(refused) => {
                // The row says CAPTURED but the provider has nothing to refund: do not
                // invent money movements, leave it to a human.
                let answer = format!("the provider refuses the refund: {refused}");
                return refuse(payments, row, &answer).await;
            }
        };
        payments
            .db
            .refunded(
                row.order_id,
                &format!(
                    "refunded ({}): the order was cancelled before the capture was reported",
                    refund.refund_id
                ),
            )
            .await?;
        tracing::warn!(order_id = %row.order_id, refund = %refund.refund_id, amount_minor = refund.amount_minor, "capture for a cancelled order refunded");
        return Ok(Settled::Refunded);
    }
    refuse(payments, row, status.message()).await
}

/// Records a refusal no retry can change, and says so loudly.
async fn refuse(
    payments: &WorkerContext,
    row: &PaymentRow,
    answer: &str,
) -> anyhow::Result<Settled> {
    tracing::error!(order_id = %row.order_id, state = ?row.state, answer, "payment result refused for good; needs a human");
    payments.db.mark_refused(row.order_id, answer).await?;
    Ok(Settled::Refused)
}

/// Whether the order service has the payment's order as CANCELLED.
async fn order_cancelled(payments: &WorkerContext, row: &PaymentRow) -> anyhow::Result<bool> {
    let order = payments
        .orders
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: row.order_id.to_string(),
        })
        .await;
    match order {
        Ok(order) => Ok(order.into_inner().status == pb::OrderStatus::Cancelled as i32),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
        Err(status) => Err(anyhow::anyhow!("reading the order: {status}")),
    }
}

/// Puts a PROCESSING payment's request back on the queue; `true` if it was missing
/// (a no-op otherwise: enqueue is idempotent on the order id).
async fn redrive(payments: &WorkerContext, row: &PaymentRow) -> anyhow::Result<bool> {
    let enqueued = enqueue_payment(
        &payments.session,
        &row.request().seal(payments.token.as_ref()),
    )
    .await?;
    payments.db.touch(row.order_id).await?;
    if enqueued.created {
        tracing::warn!(order_id = %row.order_id, deliveries = row.deliveries, "PROCESSING payment had no queue item; request put back on the queue");
    }
    Ok(enqueued.created)
}
