//! The gRPC boundary of the order service: protobuf → domain (`TryFrom`), domain →
//! protobuf, and one `From<error> for Status` per operation.

use std::sync::Arc;

use shop_common::db::status_for;
use shop_common::domain::{Cart, CustomerId, OrderId, SaleId, Strategy, ValidationError};
use shop_common::leaders::{list_leaders, LeaderDirectory};
use shop_common::telemetry::error_chain;
use shop_proto::v1 as pb;
use shop_proto::v1::order_service_server::OrderService;
use tonic::{Request, Response, Status};

use crate::domain::{CustomerTier, IdempotencyKey, NewOrder, Order, OrderStatus, PaymentOutcome};
use crate::saga::{CreateOrderError, PaymentResultError, Saga};

/// The order service's gRPC handlers.
pub struct OrderApi {
    saga: Arc<Saga>,
    leaders: Arc<dyn LeaderDirectory>,
}

impl OrderApi {
    pub fn new(saga: Arc<Saga>, leaders: Arc<dyn LeaderDirectory>) -> OrderApi {
        OrderApi { saga, leaders }
    }

    fn parse_new_order(&self, r: &pb::CreateOrderRequest) -> Result<NewOrder, ValidationError> {
        let customer_tier = match pb::CustomerTier::try_from(r.customer_tier) {
            Ok(pb::CustomerTier::Unspecified | pb::CustomerTier::Standard) => {
                CustomerTier::Standard
            }
            Ok(pb::CustomerTier::Gold) => CustomerTier::Gold,
            Ok(pb::CustomerTier::Platinum) => CustomerTier::Platinum,
            Err(_) => {
                return Err(ValidationError::new(
                    "customer_tier",
                    format!(
                        "{} is not a tier (STANDARD=1, GOLD=2, PLATINUM=3)",
                        r.customer_tier
                    ),
                ))
            }
        };
        Ok(NewOrder {
            idempotency_key: IdempotencyKey::parse("idempotency_key", &r.idempotency_key)?,
            customer_id: CustomerId::parse("customer_id", &r.customer_id)?,
            customer_tier,
            cart: Cart::parse(
                "items",
                r.items.iter().map(|l| (l.sku.as_str(), l.quantity)),
            )?,
            strategy: Strategy::from_proto("strategy", r.strategy)?,
            sale_id: r
                .sale_id
                .as_deref()
                .map(|s| SaleId::parse("sale_id", s))
                .transpose()?,
        })
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    #[tracing::instrument(skip_all, fields(idempotency_key = %request.get_ref().idempotency_key, order_id))]
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let new = self
            .parse_new_order(request.get_ref())
            .map_err(CreateOrderRpcError::Validation)?;
        let order = self
            .saga
            .create_order(new)
            .await
            .map_err(CreateOrderRpcError::Saga)?;
        tracing::Span::current().record("order_id", tracing::field::display(order.id));
        Ok(Response::new(order_to_proto(&order)))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let id = OrderId::parse("order_id", &request.get_ref().order_id)?;
        match self.saga.get_order(id).await {
            Ok(Some(order)) => Ok(Response::new(order_to_proto(&order))),
            Ok(None) => Err(Status::not_found(format!("order {id} does not exist"))),
            Err(e) => Err(status_for(&e, "get order")),
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id, ok = request.get_ref().ok))]
    async fn payment_result(
        &self,
        request: Request<pb::PaymentResultRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let r = request.into_inner();
        let id = OrderId::parse("order_id", &r.order_id)?;
        let outcome = PaymentOutcome::parse(r.ok, &r.payment_id, &r.reason)?;
        let order = self
            .saga
            .payment_result(id, outcome)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(order_to_proto(&order)))
    }

    async fn list_leaders(
        &self,
        _request: Request<pb::ListLeadersRequest>,
    ) -> Result<Response<pb::ListLeadersResponse>, Status> {
        list_leaders(self.leaders.as_ref()).await.map(Response::new)
    }
}

pub fn order_to_proto(order: &Order) -> pb::Order {
    let status = match order.status {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Reserved => pb::OrderStatus::Reserved,
        OrderStatus::Rejected => pb::OrderStatus::Rejected,
        OrderStatus::Paid => pb::OrderStatus::Paid,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    };
    let tier = match order.request.customer_tier {
        CustomerTier::Standard => pb::CustomerTier::Standard,
        CustomerTier::Gold => pb::CustomerTier::Gold,
        CustomerTier::Platinum => pb::CustomerTier::Platinum,
    };
    pb::Order {
        order_id: order.id.to_string(),
        idempotency_key: order.request.idempotency_key.as_str().to_owned(),
        customer_id: order.request.customer_id.as_str().to_owned(),
        customer_tier: tier as i32,
        items: order.request.cart.to_proto(),
        strategy: order
            .request
            .strategy
            .map_or(pb::Strategy::Unspecified, Strategy::to_proto) as i32,
        sale_id: order
            .request
            .sale_id
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        status: status as i32,
        status_reason: order.status_reason.clone(),
        payment_id: order.payment_id.clone().unwrap_or_default(),
        created_at_unix_ms: order.created_at.timestamp_millis(),
        updated_at_unix_ms: order.updated_at.timestamp_millis(),
    }
}

/// CreateOrder failures.
#[derive(Debug, thiserror::Error)]
enum CreateOrderRpcError {
    #[error(transparent)]
    Validation(ValidationError),
    #[error(transparent)]
    Saga(CreateOrderError),
}

impl From<CreateOrderRpcError> for Status {
    fn from(e: CreateOrderRpcError) -> Status {
        let e = match e {
            CreateOrderRpcError::Validation(v) => return v.into(),
            CreateOrderRpcError::Saga(e) => e,
        };
        match e {
            CreateOrderError::IdempotencyKeyReused { .. } => Status::already_exists(e.to_string()),
            // Inventory's own code and message (NOT_FOUND for an unknown SKU, ...).
            CreateOrderError::Refused(status) => Status::new(status.code(), status.message()),
            CreateOrderError::InventoryUnavailable(_)
            | CreateOrderError::InventoryUnavailablePending { .. } => {
                tracing::warn!(error = %error_chain(&e), "create order: inventory unavailable");
                Status::unavailable(e.to_string())
            }
            CreateOrderError::Raced(_) => Status::aborted(e.to_string()),
            CreateOrderError::Database(db) => status_for(&db, "create order"),
        }
    }
}

impl From<PaymentResultError> for Status {
    fn from(e: PaymentResultError) -> Status {
        match e {
            PaymentResultError::NotFound(_) => Status::not_found(e.to_string()),
            PaymentResultError::Conflict(_) => Status::failed_precondition(e.to_string()),
            PaymentResultError::InventoryUnavailable { .. } => {
                tracing::warn!(error = %e, "payment result: inventory unavailable");
                Status::unavailable(e.to_string())
            }
            PaymentResultError::Database(db) => status_for(&db, "payment result"),
        }
    }
}
