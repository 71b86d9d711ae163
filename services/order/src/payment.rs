//! The payment step of the saga — **integration point** for the payment work queue.
//!
//! After an order's stock is reserved, the saga hands a [`PaymentRequest`] to a
//! [`PaymentRequester`]. The payment queue (coord's reliable work queue, another
//! branch; priority = customer tier; trace context in the item) will implement this
//! trait by enqueuing the request; a payment worker then charges and calls
//! `OrderService.PaymentResult`. Until it lands, [`PaymentQueueNotWired`] is used:
//! orders stay RESERVED until someone calls PaymentResult (tests, the load tester).
//!
//! A failed hand-off leaves the order RESERVED; the order service's planned
//! `expire-reservations` leader job cancels (and releases) RESERVED orders past their
//! deadline, so no stock is held forever.

use futures::future::BoxFuture;
use shop_common::domain::{Cart, CustomerId, OrderId};

use crate::domain::CustomerTier;

/// What a payment worker needs to charge an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    /// The queue priority.
    pub customer_tier: CustomerTier,
    pub cart: Cart,
}

/// Hands payment requests to whatever charges them. Must be idempotent on `order_id`
/// (the saga may hand the same order over again after a crash or a retry).
pub trait PaymentRequester: Send + Sync + 'static {
    fn request_payment(&self, request: PaymentRequest) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// No payment queue in this build: the request is only logged.
#[derive(Debug, Default, Clone, Copy)]
pub struct PaymentQueueNotWired;

impl PaymentRequester for PaymentQueueNotWired {
    fn request_payment(&self, request: PaymentRequest) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            tracing::debug!(order_id = %request.order_id, "payment queue not wired yet; order stays RESERVED until PaymentResult");
            Ok(())
        })
    }
}
