//! The payment step of the saga.
//!
//! After an order's stock is reserved, the saga hands a [`PaymentRequest`] to a
//! [`PaymentRequester`]. In a deployment that is [`QueuePaymentRequester`]: the order
//! goes onto the payment work queue (coord `WorkQueue`; priority = customer tier; one
//! item per order id); a payment worker charges and calls `OrderService.PaymentResult`.
//! Tests that drive PaymentResult themselves use [`PaymentQueueNotWired`], which only
//! logs, so their orders stay RESERVED until the test pays.
//!
//! A failed hand-off (or a crash right before it) leaves the order RESERVED with no
//! request on the queue; the order service's `expire-reservations` leader job hands
//! RESERVED orders over again after `PAYMENT_REDRIVE_SECS` and cancels (and releases)
//! those still RESERVED at their deadline, so no order waits forever and no stock is
//! held forever.

use futures::future::BoxFuture;
use shop_common::domain::{Cart, CustomerId, OrderId};

use crate::domain::{CustomerTier, Order};

/// What a payment worker needs to charge an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    /// The queue priority.
    pub customer_tier: CustomerTier,
    pub cart: Cart,
}

impl From<&Order> for PaymentRequest {
    fn from(order: &Order) -> PaymentRequest {
        PaymentRequest {
            order_id: order.id,
            customer_id: order.request.customer_id.clone(),
            customer_tier: order.request.customer_tier,
            cart: order.request.cart.clone(),
        }
    }
}

/// Hands payment requests to whatever charges them. Must be idempotent on `order_id`
/// (the saga may hand the same order over again after a crash or a retry).
pub trait PaymentRequester: Send + Sync + 'static {
    fn request_payment(&self, request: PaymentRequest) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// No payment queue (tests that call PaymentResult themselves): the request is only logged.
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

/// The real payment step: the order goes onto the payment work queue (coord
/// `WorkQueue`, see `shop_common::payments`), one item per order id — enqueueing an
/// order twice is one item, so a retried saga step cannot cause a second charge.
pub struct QueuePaymentRequester {
    session: std::sync::Arc<shop_common::coordination::SharedSession>,
    /// Seals each item's amount (see `PaymentItem::seal`), so the worker need not read
    /// the order back to know what to charge.
    token: Option<shop_common::auth::InternalToken>,
}

impl QueuePaymentRequester {
    pub fn new(
        session: std::sync::Arc<shop_common::coordination::SharedSession>,
        token: Option<shop_common::auth::InternalToken>,
    ) -> Self {
        QueuePaymentRequester { session, token }
    }
}

impl PaymentRequester for QueuePaymentRequester {
    fn request_payment(&self, request: PaymentRequest) -> BoxFuture<'_, anyhow::Result<()>> {
        use shop_common::payments::{enqueue_payment, PaymentItem, UNIT_PRICE_MINOR};
        Box::pin(async move {
            let units: i64 = request
                .cart
                .lines()
                .iter()
                .map(|line| i64::from(line.quantity.get()))
                .sum();
            let item = PaymentItem {
                order_id: request.order_id.to_string(),
                customer_id: request.customer_id.as_str().to_owned(),
                tier: request.customer_tier.as_str().to_owned(),
                amount_minor: units * UNIT_PRICE_MINOR,
                // The worker's spans continue this order's trace.
                trace: shop_common::propagation::current_context_map(),
                amount_seal: None,
            }
            .seal(self.token.as_ref());
            let enqueued = enqueue_payment(&self.session, &item).await?;
            tracing::debug!(order_id = %item.order_id, created = enqueued.created, "payment requested");
            Ok(())
        })
    }
}
