//! The order service's leader-elected job `expire-reservations`: no order stays
//! between two saga steps forever. Each pass (every `JOB_INTERVAL_MS`, on the one
//! replica leading the election):
//!
//! | found | left by | what the job does |
//! |---|---|---|
//! | RESERVED longer than `RESERVATION_TTL_SECS` | the payment never came back | CANCELLED, then inventory Release (the saga's own failure path) |
//! | PENDING longer than `RESERVATION_TTL_SECS` | a crash (or a failed compensation) between inserting the order and the end of Reserve | PENDING → CANCELLED (compare-and-set), then Release: gives back what Reserve took, or leaves a tombstone so a late Reserve takes nothing |
//! | RESERVED longer than `PAYMENT_REDRIVE_SECS` | a crash between RESERVED and the hand-off to the payment queue, or a request dead-lettered | hands it to the payment queue again (a no-op while its request is queued: one item per order id) |
//! | PAID / CANCELLED, stock not settled, longer than `PAYMENT_REDRIVE_SECS` | inventory unreachable during PaymentResult or a cancellation, and nobody retried | repeats Commit / Release until inventory confirms |
//!
//! # Guarantees
//! - Every accepted order ends PAID, CANCELLED or REJECTED, and a CANCELLED order
//!   holds no stock once inventory answers, whichever step the saga stopped at.
//! - The job cannot race the saga into a contradiction: it changes an order's status
//!   only by compare-and-set (PENDING → CANCELLED, RESERVED → CANCELLED) *before* the
//!   inventory call that follows from it, as the saga does. A saga still running loses
//!   the compare-and-set and leaves the order alone; its Reserve, if it arrives after
//!   the Release, finds the tombstone and takes nothing.
//! - Two leaders overlapping for a moment change nothing twice: the compare-and-sets
//!   let one of them move an order, and Release, Commit and enqueue-by-order-id are
//!   idempotent. No fencing token is needed.
//!
//! # Not guaranteed
//! - Promptness: an order is looked at after its threshold plus up to one interval,
//!   and a pass handles at most 100 orders of each kind.
//! - A PENDING order older than the TTL is cancelled even if its CreateOrder is still
//!   waiting for inventory; `RESERVATION_TTL_SECS` must exceed `INVENTORY_TIMEOUT_MS`
//!   (the settings check it) so only abandoned orders qualify.
//! - A payment that arrives after the expiry is refused with "must be refunded" (see
//!   `Saga::payment_result`); the payment service's `settle-payments` job refunds it.

use std::sync::Arc;
use std::time::Duration;

use coord::LeaderContext;

use crate::domain::{OrderStatus, PaymentOutcome};
use crate::repository::OrdersDb;
use crate::saga::Saga;

/// The job's name in `ListLeaders` and in its election.
pub const JOB: &str = "expire-reservations";

/// Orders of each kind handled per pass.
const BATCH: i64 = 100;

/// How the job runs.
#[derive(Debug, Clone)]
pub struct ExpirySettings {
    /// How long an order may stay RESERVED (or PENDING).
    pub reservation_ttl: Duration,
    /// How long a RESERVED order waits before its payment is requested again (and a
    /// settled order before its Commit/Release is repeated).
    pub payment_redrive: Duration,
    /// Pause between passes.
    pub interval: Duration,
}

/// One leadership term of the job: passes until cancelled (leadership lost, shutdown).
pub async fn expire_reservations(
    context: LeaderContext,
    db: OrdersDb,
    saga: Arc<Saga>,
    settings: ExpirySettings,
    replica: String,
) {
    shop_common::jobs::run_passes(context, &replica, settings.interval, || {
        expiry_pass(&db, &saga, &settings)
    })
    .await
}

/// One pass; returns what it did.
async fn expiry_pass(
    db: &OrdersDb,
    saga: &Saga,
    settings: &ExpirySettings,
) -> Vec<(&'static str, u64)> {
    let ttl = settings.reservation_ttl;
    let (mut expired, mut abandoned, mut redriven, mut settled) = (0, 0, 0, 0);
    for id in orders(db.in_status_since(OrderStatus::Reserved, ttl, BATCH).await) {
        let outcome = PaymentOutcome::Failed {
            payment_id: None,
            reason: format!(
                "reservation expired after {}s without a payment",
                ttl.as_secs()
            ),
        };
        match saga.payment_result(id, outcome).await {
            Ok(_) => {
                expired += 1;
                tracing::info!(order_id = %id, "reservation expired; order cancelled and stock released");
            }
            Err(e) => {
                tracing::warn!(order_id = %id, error = %e, "expiring an order failed; next pass retries")
            }
        }
    }
    for id in orders(db.in_status_since(OrderStatus::Pending, ttl, BATCH).await) {
        let reason = format!(
            "abandoned: still PENDING after {}s (the saga stopped before the end of Reserve)",
            ttl.as_secs()
        );
        match saga.cancel_abandoned(id, &reason).await {
            Ok((_, true)) => {
                abandoned += 1;
                tracing::warn!(order_id = %id, "abandoned PENDING order cancelled and its stock released");
            }
            Ok((order, false)) => {
                tracing::debug!(order_id = %id, status = %order.status, "PENDING order moved on by itself")
            }
            Err(e) => {
                tracing::warn!(order_id = %id, error = %e, "cancelling an abandoned order failed; next pass retries")
            }
        }
    }
    let redrive = settings.payment_redrive;
    for id in orders(
        db.in_status_since(OrderStatus::Reserved, redrive, BATCH)
            .await,
    ) {
        match saga.request_payment_again(id).await {
            Ok(true) => redriven += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(order_id = %id, error = ?e, "requesting a payment again failed; next pass retries")
            }
        }
    }
    for id in orders(db.unsettled_since(redrive, BATCH).await) {
        match saga.settle_order(id).await {
            Ok(order) if order.stock_settled => settled += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(order_id = %id, error = %e, "settling an order's stock failed; next pass retries");
                // To the back of the queue: failing orders must not hide later ones.
                if let Err(e) = db.touch(id).await {
                    tracing::warn!(order_id = %id, error = %e, "moving a failing order to the back failed");
                }
            }
        }
    }
    vec![
        ("expired", expired),
        ("abandoned", abandoned),
        ("payments_requested", redriven),
        ("stock_settled", settled),
    ]
}

/// The ids of a query, or none (logged) when the database could not be read.
fn orders(
    ids: Result<Vec<shop_common::domain::OrderId>, sqlx::Error>,
) -> Vec<shop_common::domain::OrderId> {
    ids.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "expiry pass could not read orders");
        Vec::new()
    })
}
