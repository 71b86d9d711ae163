//! The order service's leader-elected job `expire-reservations`: orders that stay
//! RESERVED longer than `RESERVATION_TTL_SECS` (their payment never came back) are
//! cancelled through the saga's own failure path — CANCELLED, then inventory Release —
//! so no stock is held forever.
//!
//! Safe if two leaders overlap for a moment: the saga's status change is a
//! compare-and-set on RESERVED and Release is idempotent, so a second expiry of the
//! same order changes nothing. A payment that arrives after the expiry is refused with
//! "must be refunded" (see `Saga::payment_result`).

use std::sync::Arc;
use std::time::Duration;

use coord::LeaderContext;

use crate::domain::PaymentOutcome;
use crate::repository::OrdersDb;
use crate::saga::Saga;

/// The job's name in `ListLeaders` and in its election.
pub const JOB: &str = "expire-reservations";

/// How the job runs.
#[derive(Debug, Clone)]
pub struct ExpirySettings {
    /// How long an order may stay RESERVED.
    pub reservation_ttl: Duration,
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
    let mut pass: u64 = 0;
    let mut expired_total: u64 = 0;
    loop {
        pass += 1;
        match db.reserved_longer_than(settings.reservation_ttl, 100).await {
            Ok(ids) => {
                for id in ids {
                    let outcome = PaymentOutcome::Failed {
                        payment_id: None,
                        reason: format!(
                            "reservation expired after {}s without a payment",
                            settings.reservation_ttl.as_secs()
                        ),
                    };
                    match saga.payment_result(id, outcome).await {
                        Ok(_) => {
                            expired_total += 1;
                            tracing::info!(order_id = %id, "reservation expired; order cancelled and stock released");
                        }
                        Err(e) => {
                            tracing::warn!(order_id = %id, error = %e, "expiring an order failed; next pass retries")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "expiry pass could not read orders"),
        }
        let progress = format!(
            r#"{{"replica":"{replica}","pass":{pass},"expired":{expired_total},"token":{}}}"#,
            context.fencing_token()
        );
        if let Err(e) = context.proclaim(progress).await {
            tracing::debug!(error = %e, "could not proclaim progress (leadership ending?)");
        }
        tokio::time::sleep(settings.interval).await;
    }
}
