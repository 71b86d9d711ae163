//! The payment service's gRPC API: GetPayment, QueueDepth, ListLeaders.

use std::sync::Arc;

use shop_common::coordination::SharedSession;
use shop_common::domain::OrderId;
use shop_common::leaders::{list_leaders, LeaderDirectory};
use shop_common::payments::payment_queue;
use shop_proto::v1 as pb;
use shop_proto::v1::payment_service_server::PaymentService;
use tonic::{Request, Response, Status};

use crate::repository::{PaymentRow, PaymentState, PaymentsDb};

pub struct PaymentApi {
    db: PaymentsDb,
    session: Arc<SharedSession>,
    leaders: Arc<dyn LeaderDirectory>,
}

impl PaymentApi {
    pub fn new(
        db: PaymentsDb,
        session: Arc<SharedSession>,
        leaders: Arc<dyn LeaderDirectory>,
    ) -> PaymentApi {
        PaymentApi {
            db,
            session,
            leaders,
        }
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let order_id = OrderId::parse("order_id", &request.get_ref().order_id)?.as_uuid();
        let row = self.db.get(order_id).await.map_err(|e| {
            tracing::error!(error = %e, "reading a payment failed");
            Status::unavailable("payment database unavailable; retry")
        })?;
        row.map(|row| Response::new(payment_to_proto(row)))
            .ok_or_else(|| Status::not_found(format!("no payment for order {order_id}")))
    }

    async fn queue_depth(
        &self,
        _request: Request<pb::QueueDepthRequest>,
    ) -> Result<Response<pb::QueueDepthResponse>, Status> {
        let unavailable =
            |e: coord::Error| Status::unavailable(format!("payment queue unavailable: {e}"));
        let client = self.session.client().await.map_err(unavailable)?;
        let queue = payment_queue(client, self.session.prefix()).map_err(unavailable)?;
        let mut queues = Vec::new();
        for priority in 0..=2 {
            let depth = queue.depth_at(priority).await.map_err(unavailable)?;
            queues.push(pb::QueueDepth { priority, depth });
        }
        let total = queue.depth().await.map_err(unavailable)?;
        Ok(Response::new(pb::QueueDepthResponse { queues, total }))
    }

    async fn list_leaders(
        &self,
        _request: Request<pb::ListLeadersRequest>,
    ) -> Result<Response<pb::ListLeadersResponse>, Status> {
        list_leaders(self.leaders.as_ref()).await.map(Response::new)
    }
}

fn payment_to_proto(row: PaymentRow) -> pb::Payment {
    let status = match row.state {
        PaymentState::Processing => pb::PaymentStatus::Processing,
        PaymentState::Captured => pb::PaymentStatus::Captured,
        PaymentState::Failed => pb::PaymentStatus::Failed,
        PaymentState::Refunded => pb::PaymentStatus::Refunded,
    };
    pb::Payment {
        payment_id: row.provider_ref.unwrap_or_default(),
        order_id: row.order_id.to_string(),
        status: status as i32,
        reason: row.reason,
        amount_minor: row.amount_minor,
        created_at_unix_ms: row.created_at.timestamp_millis(),
        updated_at_unix_ms: row.updated_at.timestamp_millis(),
    }
}
