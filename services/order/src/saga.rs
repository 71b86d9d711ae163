//! The order saga, orchestrated here:
//!
//! ```text
//! CreateOrder ──insert PENDING (same key → same order)──► inventory.Reserve
//!     RESERVED ──► order RESERVED ──► PaymentRequester (the payment WorkQueue)
//!     OUT_OF_STOCK ──► order REJECTED (a normal answer, with the reason)
//!     ALREADY_RELEASED ──► order CANCELLED (a Release overtook this Reserve)
//!     refused (unknown SKU, bad input) ──► claim, delete, error returned
//!     failed / unreachable ──► claim, compensate: inventory.Release (tombstone), delete
//! PaymentResult(ok)   ──► order PAID      ──► inventory.Commit
//! PaymentResult(fail) ──► order CANCELLED ──► inventory.Release   (compensation)
//! ```
//!
//! Each step is idempotent on the order id, so a retried CreateOrder (same key) or a
//! redelivered PaymentResult converges on the same end state. The order's status is
//! written before the inventory call that follows from it, and the call is repeated
//! by any duplicate until inventory confirms (`stock_settled`).
//!
//! Claim before compensate: an attempt whose Reserve failed first moves the order
//! PENDING → CANCELLED (compare-and-set) and only then releases. If a concurrent
//! attempt with the same key got there first (its Reserve succeeded and the order is
//! RESERVED), the claim fails and the failed attempt answers with that order instead
//! of releasing the other attempt's units.
//!
//! One file on purpose: the saga is one state machine, and its steps, their claims and
//! their compensations read top to bottom here, each next to the step it undoes.

use std::sync::Arc;

use shop_common::domain::{OrderId, Strategy};
use shop_common::propagation::TracedChannel;
use shop_common::retry::Backoff;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use tonic::Code;

use crate::domain::{NewOrder, Order, OrderStatus, PaymentOutcome};
use crate::payment::{PaymentRequest, PaymentRequester};
use crate::repository::{Inserted, OrdersDb};

/// Why CreateOrder failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateOrderError {
    #[error("idempotency key {key:?} was already used for a different order (order {existing}); use a new key for a new order")]
    IdempotencyKeyReused { key: String, existing: OrderId },
    /// Inventory refused the request itself (unknown SKU, strategy not available):
    /// nothing was reserved and no order is kept.
    #[error("{}", .0.message())]
    Refused(tonic::Status),
    /// Inventory failed or could not be reached; the attempt was compensated (Release)
    /// and removed, so nothing is reserved and no order is kept.
    #[error(
        "inventory unavailable ({0}); nothing was reserved, retry with the same idempotency key"
    )]
    InventoryUnavailable(String),
    /// Inventory failed and the compensation could not be confirmed either.
    #[error("inventory unavailable ({message}); order {id} stays PENDING and a retry with the same idempotency key resumes it")]
    InventoryUnavailablePending { message: String, id: OrderId },
    /// Another attempt with the same key changed the order under us.
    #[error("order {0} was changed by a concurrent attempt with the same idempotency key; retry")]
    Raced(OrderId),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why PaymentResult failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentResultError {
    #[error("order {0} does not exist")]
    NotFound(OrderId),
    /// The result contradicts the order's state (already settled the other way, not
    /// reserved yet, rejected).
    #[error("{0}")]
    Conflict(String),
    /// The order's new status is recorded but inventory did not confirm the
    /// Commit/Release; a retry of PaymentResult repeats it.
    #[error("order {id} is {status}, but inventory did not confirm the {action} ({message}); retry PaymentResult")]
    InventoryUnavailable {
        id: OrderId,
        status: OrderStatus,
        action: &'static str,
        message: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The status reason of an order claimed by a failing CreateOrder attempt.
const CLAIM_REASON: &str = "claimed by a failed CreateOrder attempt";

/// Whether a failing attempt holds the order for its compensation right now (it
/// deletes it or puts it back to PENDING in a moment): not an answer to give.
fn claimed_by_another_attempt(order: &Order) -> bool {
    order.status == OrderStatus::Cancelled
        && !order.stock_settled
        && order.status_reason.starts_with(CLAIM_REASON)
}

/// Whether the order ended in a status that owns no reservation (a Reserve that took
/// units for it must give them back). Knockout (tests only,
/// `knockout-late-reserve-release`): never, as before.
fn holds_no_units(order: &Order) -> bool {
    !cfg!(feature = "knockout-late-reserve-release")
        && matches!(order.status, OrderStatus::Rejected | OrderStatus::Cancelled)
}

/// What [`Saga::release_claimed`] did.
enum Claim {
    /// Claimed, released and deleted.
    Released,
    /// Claimed, but inventory did not confirm the Release: back to PENDING.
    Unconfirmed(tonic::Status),
}

/// A test hook: awaited when a Reserve has failed, before the compensation starts, so
/// a test can make a concurrent attempt act at exactly that moment.
#[doc(hidden)]
pub type ReserveFailedHook =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// The orchestrator. One per process.
pub struct Saga {
    db: OrdersDb,
    inventory: InventoryServiceClient<TracedChannel>,
    payments: Arc<dyn PaymentRequester>,
    reserve_failed: Option<ReserveFailedHook>,
    /// Every call to inventory retries UNAVAILABLE with back-off (each is idempotent
    /// by order id).
    backoff: Backoff,
}

impl Saga {
    pub fn new(
        db: OrdersDb,
        inventory: InventoryServiceClient<TracedChannel>,
        payments: Arc<dyn PaymentRequester>,
    ) -> Saga {
        Saga {
            db,
            inventory,
            payments,
            reserve_failed: None,
            backoff: Backoff::default(),
        }
    }

    /// Tests only: see [`ReserveFailedHook`].
    #[doc(hidden)]
    pub fn with_reserve_failed_hook(mut self, hook: ReserveFailedHook) -> Saga {
        self.reserve_failed = Some(hook);
        self
    }

    pub fn db(&self) -> &OrdersDb {
        &self.db
    }

    /// Creates (or finds) the order for `new.idempotency_key` and drives it as far as
    /// it goes without the payment: RESERVED, REJECTED or CANCELLED.
    pub async fn create_order(&self, new: NewOrder) -> Result<Order, CreateOrderError> {
        let order = match self.db.insert_pending(&new).await? {
            Inserted::New(order) => order,
            Inserted::Existing(order) => {
                if !order.request.same_as(&new) {
                    return Err(CreateOrderError::IdempotencyKeyReused {
                        key: new.idempotency_key.as_str().to_owned(),
                        existing: order.id,
                    });
                }
                if claimed_by_another_attempt(&order) {
                    return Err(CreateOrderError::Raced(order.id));
                }
                if order.status != OrderStatus::Pending {
                    return Ok(order);
                }
                // A previous attempt stopped half-way (or is running now): resume it.
                // Reserve is idempotent, and the status changes are compare-and-set.
                order
            }
        };
        self.reserve_stock(order).await
    }

    async fn reserve_stock(&self, order: Order) -> Result<Order, CreateOrderError> {
        let id = order.id;
        let request = pb::ReserveRequest {
            order_id: id.to_string(),
            items: order.request.cart.to_proto(),
            strategy: order
                .request
                .strategy
                .map_or(pb::Strategy::Unspecified, Strategy::to_proto) as i32,
            customer_id: order.request.customer_id.as_str().to_owned(),
            sale_id: order
                .request
                .sale_id
                .as_ref()
                .map(|s| s.as_str().to_owned()),
        };
        let reserved = self
            .backoff
            .retry(|| {
                let (mut inventory, request) = (self.inventory.clone(), request.clone());
                async move { inventory.reserve(request).await }
            })
            .await;
        // The strategy inventory applied is recorded with the status change.
        let (to, reason, applied) = match reserved {
            Ok(response) => {
                let response = response.into_inner();
                let applied = Strategy::from_proto("strategy", response.strategy)
                    .ok()
                    .flatten();
                match pb::ReserveOutcome::try_from(response.outcome) {
                    Ok(pb::ReserveOutcome::Reserved) => {
                        (OrderStatus::Reserved, String::new(), applied)
                    }
                    Ok(pb::ReserveOutcome::OutOfStock | pb::ReserveOutcome::LimitExceeded) => {
                        (OrderStatus::Rejected, response.reason, applied)
                    }
                    Ok(pb::ReserveOutcome::AlreadyReleased) => {
                        (OrderStatus::Cancelled, response.reason, applied)
                    }
                    _ => {
                        return self
                            .compensate(
                                id,
                                format!(
                                    "inventory answered an unknown outcome {}",
                                    response.outcome
                                ),
                            )
                            .await
                    }
                }
            }
            // Inventory looked at the request and reserved nothing: keep no order. A
            // concurrent attempt with the same key may still reserve, so this one
            // claims the order and leaves a tombstone before it deletes the order.
            Err(status)
                if matches!(
                    status.code(),
                    Code::InvalidArgument
                        | Code::NotFound
                        | Code::FailedPrecondition
                        | Code::Unimplemented
                ) =>
            {
                if let Some(order) = self.claim(id, status.message()).await? {
                    return Ok(order);
                }
                self.db.delete_in(id, OrderStatus::Cancelled).await?;
                return Err(CreateOrderError::Refused(status));
            }
            // Anything else may or may not have reserved: undo it to be sure.
            Err(status) => {
                return self
                    .compensate(id, format!("{:?}: {}", status.code(), status.message()))
                    .await
            }
        };
        let current = self
            .db
            .transition(id, OrderStatus::Pending, to, &reason, None, applied)
            .await?;
        let (order, moved) = match current {
            // This Reserve took units, but a concurrent attempt with the same key had
            // already ended the order without any (REJECTED: its Reserve found no
            // stock before units came back; CANCELLED): nothing will ever settle these
            // units, so give them back. The order's answer stands.
            Some((order, false))
                if to == OrderStatus::Reserved
                    && !claimed_by_another_attempt(&order)
                    && holds_no_units(&order) =>
            {
                if let Err(e) = self.release(id).await {
                    tracing::warn!(order_id = %id, error = %e.message(), "releasing a reservation of an order that ended without one failed");
                }
                (order, false)
            }
            Some((order, moved)) if moved || !claimed_by_another_attempt(&order) => (order, moved),
            // A failed attempt claimed the order (or already deleted it): the units this
            // Reserve took belong to no order, so give them back.
            _ => {
                if to == OrderStatus::Reserved {
                    if let Err(e) = self.release(id).await {
                        tracing::warn!(order_id = %id, error = %e.message(), "releasing a reservation whose order was claimed failed");
                    }
                }
                return Err(CreateOrderError::Raced(id));
            }
        };
        // Only the attempt that moved the order to RESERVED asks for the payment.
        if moved && order.status == OrderStatus::Reserved {
            if let Err(e) = self
                .payments
                .request_payment(PaymentRequest::from(&order))
                .await
            {
                // The order stays RESERVED; the expiry job releases it if nobody pays.
                tracing::error!(order_id = %id, error = ?e, "handing the order to the payment step failed");
            }
        }
        Ok(order)
    }

    /// Reserve failed in a way that leaves its effect unknown: claim the order, Release
    /// (which also tombstones the order id, so a Reserve still in flight takes nothing),
    /// then drop the order. If the Release cannot be confirmed, the order goes back to
    /// PENDING for a retry (or the expiry job) to finish. If a concurrent attempt moved
    /// the order first, its answer is this attempt's answer.
    async fn compensate(&self, id: OrderId, message: String) -> Result<Order, CreateOrderError> {
        tracing::warn!(order_id = %id, %message, "reserve failed; compensating with release");
        if let Some(hook) = &self.reserve_failed {
            hook().await;
        }
        if let Some(order) = self.claim(id, &message).await? {
            return Ok(order);
        }
        match self.release_claimed(id).await? {
            Claim::Released => Err(CreateOrderError::InventoryUnavailable(message)),
            Claim::Unconfirmed(status) => {
                tracing::warn!(order_id = %id, error = %status.message(), "compensating release failed too");
                Err(CreateOrderError::InventoryUnavailablePending { message, id })
            }
        }
    }

    /// The claim-before-compensate step of CreateOrder's failure paths: PENDING →
    /// CANCELLED (compare-and-set). `None`: this attempt holds the order now, and only
    /// it moves the order on (deletes it, or puts it back to PENDING). `Some`: another
    /// attempt moved the order first; that is the answer.
    async fn claim(&self, id: OrderId, reason: &str) -> Result<Option<Order>, CreateOrderError> {
        let reason = format!("{CLAIM_REASON}: {reason}");
        let claimed = self
            .db
            .transition(
                id,
                OrderStatus::Pending,
                OrderStatus::Cancelled,
                &reason,
                None,
                None,
            )
            .await?;
        match claimed {
            Some((_, true)) => Ok(None),
            Some((order, false)) if !claimed_by_another_attempt(&order) => Ok(Some(order)),
            _ => Err(CreateOrderError::Raced(id)),
        }
    }

    /// Release for a claimed order: confirmed, the order is deleted (nothing is
    /// reserved, a retry with the same key starts afresh); unconfirmed, it goes back
    /// to PENDING for a retry or the expiry job.
    async fn release_claimed(&self, id: OrderId) -> Result<Claim, CreateOrderError> {
        match self.release(id).await {
            Ok(()) => {
                self.db.delete_in(id, OrderStatus::Cancelled).await?;
                Ok(Claim::Released)
            }
            Err(status) => {
                self.db
                    .transition(
                        id,
                        OrderStatus::Cancelled,
                        OrderStatus::Pending,
                        "",
                        None,
                        None,
                    )
                    .await?;
                Ok(Claim::Unconfirmed(status))
            }
        }
    }

    async fn release(&self, id: OrderId) -> Result<(), tonic::Status> {
        let request = pb::ReleaseRequest {
            order_id: id.to_string(),
        };
        self.backoff
            .retry(|| {
                let (mut inventory, request) = (self.inventory.clone(), request.clone());
                async move { inventory.release(request).await }
            })
            .await
            .map(|_| ())
    }

    pub async fn get_order(&self, id: OrderId) -> Result<Option<Order>, sqlx::Error> {
        self.db.get(id).await
    }

    /// Applies a payment's outcome: PAID + Commit, or CANCELLED + Release.
    /// Duplicates are answered with the order; contradictions are conflicts.
    pub async fn payment_result(
        &self,
        id: OrderId,
        outcome: PaymentOutcome,
    ) -> Result<Order, PaymentResultError> {
        // RESERVED → PAID or CANCELLED, compare-and-set; an order that is no longer
        // RESERVED (a duplicate result, a contradiction) comes back as it is.
        let (to, reason, payment_id) = match &outcome {
            PaymentOutcome::Captured { payment_id } => {
                (OrderStatus::Paid, "", Some(payment_id.as_str()))
            }
            PaymentOutcome::Failed { payment_id, reason } => (
                OrderStatus::Cancelled,
                reason.as_str(),
                payment_id.as_deref(),
            ),
        };
        let (order, _) = self
            .db
            .transition(id, OrderStatus::Reserved, to, reason, payment_id, None)
            .await?
            .ok_or(PaymentResultError::NotFound(id))?;
        match (order.status, &outcome) {
            (OrderStatus::Paid, PaymentOutcome::Captured { payment_id })
                if order.payment_id.as_deref() != Some(payment_id.as_str()) =>
            {
                Err(PaymentResultError::Conflict(format!(
                    "order {id} is already PAID by payment {}; payment {payment_id} is a second charge and must be refunded",
                    order.payment_id.as_deref().unwrap_or("?")
                )))
            }
            (OrderStatus::Paid, PaymentOutcome::Captured { .. })
            | (OrderStatus::Cancelled, PaymentOutcome::Failed { .. }) => {
                Ok(self.settle_stock(&order).await?.unwrap_or(order))
            }
            (OrderStatus::Paid, PaymentOutcome::Failed { .. }) => Err(PaymentResultError::Conflict(format!(
                "order {id} is already PAID (payment {}); a failed payment result cannot cancel it",
                order.payment_id.as_deref().unwrap_or("?")
            ))),
            (OrderStatus::Cancelled, PaymentOutcome::Captured { payment_id }) => {
                Err(PaymentResultError::Conflict(format!(
                    "order {id} is already CANCELLED ({}); payment {payment_id} must be refunded",
                    order.status_reason
                )))
            }
            (OrderStatus::Pending, _) => Err(PaymentResultError::Conflict(format!(
                "order {id} is PENDING: its stock is not reserved yet, so it cannot have been paid"
            ))),
            (OrderStatus::Rejected, _) => Err(PaymentResultError::Conflict(format!(
                "order {id} was REJECTED ({}); it takes no payment",
                order.status_reason
            ))),
            (OrderStatus::Reserved, _) => Err(PaymentResultError::Conflict(format!(
                "order {id} is still RESERVED after recording the payment result; retry"
            ))),
        }
    }

    /// Commit (PAID) or Release (CANCELLED) the order's stock until inventory confirms.
    /// Returns the order as recorded afterwards, or `None` when it was settled already
    /// (then nothing was done and `order` is current).
    async fn settle_stock(&self, order: &Order) -> Result<Option<Order>, PaymentResultError> {
        if order.stock_settled {
            return Ok(None);
        }
        let id = order.id.to_string();
        let (action, settled) = match order.status {
            OrderStatus::Paid => (
                "commit",
                self.backoff
                    .retry(|| {
                        let (mut inventory, order_id) = (self.inventory.clone(), id.clone());
                        async move { inventory.commit(pb::CommitRequest { order_id }).await }
                    })
                    .await
                    .map(|_| ()),
            ),
            _ => ("release", self.release(order.id).await),
        };
        match settled {
            Ok(()) => Ok(self.db.mark_stock_settled(order.id).await?),
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                // Inventory disagrees with our record (e.g. committed vs released):
                // a bug or a manual intervention; needs a human, so say so.
                tracing::error!(order_id = %order.id, status = %order.status, error = %status.message(), "inventory refused to settle the order's stock");
                Err(PaymentResultError::Conflict(format!(
                    "order {} is {}, but inventory refused to {action} its stock: {}",
                    order.id,
                    order.status,
                    status.message()
                )))
            }
            Err(status) => Err(PaymentResultError::InventoryUnavailable {
                id: order.id,
                status: order.status,
                action,
                message: status.message().to_owned(),
            }),
        }
    }
}

/// Recovery, for the `expire-reservations` job: finishing orders a crash left between
/// two saga steps. Same rules as the saga itself: status changes are compare-and-set,
/// inventory calls are idempotent and repeated until inventory confirms.
impl Saga {
    /// Cancels an order left PENDING (the saga stopped between inserting it and the end
    /// of Reserve): PENDING → CANCELLED first, so the saga — if it is still running —
    /// can no longer move it to RESERVED; then Release, which gives back what a Reserve
    /// took or leaves a tombstone so a Reserve still in flight takes nothing. Returns
    /// the order as it is afterwards: if the saga moved it first, it is left alone.
    pub async fn cancel_abandoned(
        &self,
        id: OrderId,
        reason: &str,
    ) -> Result<(Order, bool), PaymentResultError> {
        let (order, moved) = self
            .db
            .transition(
                id,
                OrderStatus::Pending,
                OrderStatus::Cancelled,
                reason,
                None,
                None,
            )
            .await?
            .ok_or(PaymentResultError::NotFound(id))?;
        if !moved {
            return Ok((order, false));
        }
        let settled = self.settle_stock(&order).await?;
        Ok((settled.unwrap_or(order), true))
    }

    /// Repeats the Commit (PAID) or Release (CANCELLED) of an order whose stock
    /// inventory has not confirmed; an order in another state is left alone.
    pub async fn settle_order(&self, id: OrderId) -> Result<Order, PaymentResultError> {
        let order = self
            .db
            .get(id)
            .await?
            .ok_or(PaymentResultError::NotFound(id))?;
        if !matches!(order.status, OrderStatus::Paid | OrderStatus::Cancelled) {
            return Ok(order);
        }
        Ok(self.settle_stock(&order).await?.unwrap_or(order))
    }

    /// Hands a RESERVED order to the payment step again (a crash may have come between
    /// RESERVED and the hand-off). The requester is idempotent on the order id, so an
    /// order whose request is still queued is not queued twice.
    pub async fn request_payment_again(&self, id: OrderId) -> anyhow::Result<bool> {
        match self.db.get(id).await? {
            Some(order) if order.status == OrderStatus::Reserved => {
                self.payments
                    .request_payment(PaymentRequest::from(&order))
                    .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
