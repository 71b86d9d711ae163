//! Telling the order service how a payment ended: the one `PaymentResult` call the
//! workers and the `settle-payments` job share, and how its answer is read.
//!
//! UNAVAILABLE is retried with back-off ([`shop_common::retry`]).
//! PaymentResult is idempotent on the order id, so reporting a payment twice (a worker
//! and the job, two overlapping leaders) changes nothing the second time.

use shop_common::propagation::TracedChannel;
use shop_common::retry::Backoff;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::PaymentResultRequest;
use tonic::Code;

use crate::repository::{PaymentRow, PaymentState};

/// What the order service made of a payment result.
#[derive(Debug)]
pub enum Reported {
    /// Recorded (or it had been already): the order is PAID or CANCELLED.
    Accepted,
    /// Refused for good: repeating the same report cannot change the answer. The
    /// status says why (a capture for a CANCELLED order "must be refunded").
    Refused(tonic::Status),
}

/// Reports `payment` (final: CAPTURED is `ok`, FAILED and REFUNDED are not). An error
/// is an answer that may change on retry (the order service or its inventory down).
pub async fn report_payment(
    orders: &OrderServiceClient<TracedChannel>,
    payment: &PaymentRow,
) -> Result<Reported, tonic::Status> {
    let request = PaymentResultRequest {
        order_id: payment.order_id.to_string(),
        ok: payment.state == PaymentState::Captured,
        payment_id: payment.provider_ref.clone().unwrap_or_default(),
        reason: payment.reason.clone(),
    };
    // An order replica that is restarting answers UNAVAILABLE: back off and try again
    // (the report is idempotent) before handing the item back to the queue.
    let result = Backoff::default()
        .retry(|| {
            let (mut orders, request) = (orders.clone(), request.clone());
            async move { orders.payment_result(request).await }
        })
        .await;
    match result {
        Ok(_) => Ok(Reported::Accepted),
        Err(status)
            if matches!(
                status.code(),
                Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound
            ) =>
        {
            Ok(Reported::Refused(status))
        }
        Err(status) => Err(status),
    }
}
