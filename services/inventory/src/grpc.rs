//! The gRPC boundary: protobuf in, domain types through, protobuf out. Each RPC has its
//! own error enum and one `From<_> for Status`, which logs the whole cause chain and
//! returns a message a caller can act on.

use std::sync::Arc;

use shop_common::db::status_for;
use shop_common::domain::{Cart, OrderId, Sku, Strategy, ValidationError};
use shop_common::leaders::{list_leaders, LeaderDirectory};
use shop_common::telemetry::error_chain;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_server::InventoryService;
use tonic::{Request, Response, Status};

use crate::repository::{
    InventoryDb, ReservationState, ReserveDbError, ReserveOutcome, SettleDbError, StockLevel,
};
use crate::reservation::{ReserveError, Reserver};

/// Most units a SKU can be set to.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// The inventory service's gRPC handlers.
pub struct InventoryApi {
    db: InventoryDb,
    reserver: Arc<Reserver>,
    default_strategy: Strategy,
    leaders: Arc<dyn LeaderDirectory>,
}

impl InventoryApi {
    pub fn new(
        db: InventoryDb,
        reserver: Arc<Reserver>,
        default_strategy: Strategy,
        leaders: Arc<dyn LeaderDirectory>,
    ) -> InventoryApi {
        InventoryApi {
            db,
            reserver,
            default_strategy,
            leaders,
        }
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    #[tracing::instrument(skip_all, fields(sku = %request.get_ref().sku))]
    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::Stock>, Status> {
        let request = request.into_inner();
        let sku = Sku::parse("sku", &request.sku).map_err(StockError::Validation)?;
        if !(0..=MAX_STOCK).contains(&request.available) {
            return Err(StockError::Validation(ValidationError::new(
                "available",
                format!(
                    "must be between 0 and {MAX_STOCK}, got {}",
                    request.available
                ),
            ))
            .into());
        }
        let level = self
            .db
            .set_stock(&sku, request.available)
            .await
            .map_err(StockError::Database)?;
        Ok(Response::new(stock_to_proto(level)))
    }

    #[tracing::instrument(skip_all, fields(sku = %request.get_ref().sku))]
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::Stock>, Status> {
        let sku = Sku::parse("sku", &request.get_ref().sku).map_err(StockError::Validation)?;
        match self
            .db
            .get_stock(&sku)
            .await
            .map_err(StockError::Database)?
        {
            Some(level) => Ok(Response::new(stock_to_proto(level))),
            None => Err(StockError::NotFound(sku).into()),
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id, strategy))]
    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let request = request.into_inner();
        let order = OrderId::parse("order_id", &request.order_id).map_err(ReserveRpcError::from)?;
        let cart = Cart::parse(
            "items",
            request.items.iter().map(|l| (l.sku.as_str(), l.quantity)),
        )
        .map_err(ReserveRpcError::from)?;
        let strategy = Strategy::from_proto("strategy", request.strategy)
            .map_err(ReserveRpcError::from)?
            .unwrap_or(self.default_strategy);
        tracing::Span::current().record("strategy", strategy.as_str());
        let outcome = self
            .reserver
            .reserve(order, &cart, strategy)
            .await
            .map_err(ReserveRpcError::Reserve)?;
        let (outcome, reason) = match outcome {
            ReserveOutcome::Reserved => (pb::ReserveOutcome::Reserved, String::new()),
            ReserveOutcome::OutOfStock(shortage) => {
                (pb::ReserveOutcome::OutOfStock, shortage.to_string())
            }
            ReserveOutcome::AlreadyReleased => (
                pb::ReserveOutcome::AlreadyReleased,
                format!("order {order} was released before this reservation; nothing was reserved"),
            ),
        };
        Ok(Response::new(pb::ReserveResponse {
            order_id: order.to_string(),
            outcome: outcome as i32,
            reason,
            strategy: strategy.to_proto() as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::ReservationResponse>, Status> {
        let order = OrderId::parse("order_id", &request.get_ref().order_id)
            .map_err(SettleError::Validation)?;
        let state = self.db.commit(order).await.map_err(SettleError::Db)?;
        Ok(Response::new(reservation_response(order, state)))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReservationResponse>, Status> {
        let order = OrderId::parse("order_id", &request.get_ref().order_id)
            .map_err(SettleError::Validation)?;
        let state = self.db.release(order).await.map_err(SettleError::Db)?;
        Ok(Response::new(reservation_response(order, state)))
    }

    async fn list_leaders(
        &self,
        _request: Request<pb::ListLeadersRequest>,
    ) -> Result<Response<pb::ListLeadersResponse>, Status> {
        list_leaders(self.leaders.as_ref()).await.map(Response::new)
    }

    async fn create_sale(
        &self,
        _request: Request<pb::CreateSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        Err(Status::unimplemented("sales: being built"))
    }

    async fn open_sale(
        &self,
        _request: Request<pb::OpenSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        Err(Status::unimplemented("sales: being built"))
    }

    async fn get_sale(
        &self,
        _request: Request<pb::GetSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        Err(Status::unimplemented("sales: being built"))
    }

    async fn set_prices(
        &self,
        _request: Request<pb::SetPricesRequest>,
    ) -> Result<Response<pb::SetPricesResponse>, Status> {
        Err(Status::unimplemented("catalog: being built"))
    }

    async fn quote(
        &self,
        _request: Request<pb::QuoteRequest>,
    ) -> Result<Response<pb::QuoteResponse>, Status> {
        Err(Status::unimplemented("catalog: being built"))
    }
}

fn stock_to_proto(level: StockLevel) -> pb::Stock {
    pb::Stock {
        sku: level.sku.as_str().to_owned(),
        available: level.available,
        reserved: level.reserved,
        sold: level.sold,
        fence_token: level.fence_token,
    }
}

fn reservation_response(order: OrderId, state: ReservationState) -> pb::ReservationResponse {
    let state = match state {
        ReservationState::Reserved => pb::ReservationState::Reserved,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
    };
    pb::ReservationResponse {
        order_id: order.to_string(),
        state: state as i32,
    }
}

/// SetStock / GetStock failures.
#[derive(Debug, thiserror::Error)]
enum StockError {
    #[error(transparent)]
    Validation(ValidationError),
    #[error("unknown SKU {0}")]
    NotFound(Sku),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<StockError> for Status {
    fn from(e: StockError) -> Status {
        match e {
            StockError::Validation(v) => v.into(),
            StockError::NotFound(sku) => Status::not_found(format!("unknown SKU {sku}")),
            StockError::Database(e) => status_for(&e, "stock"),
        }
    }
}

/// Reserve failures.
#[derive(Debug, thiserror::Error)]
enum ReserveRpcError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Reserve(ReserveError),
}

impl From<ReserveRpcError> for Status {
    fn from(e: ReserveRpcError) -> Status {
        let e = match e {
            ReserveRpcError::Validation(v) => return v.into(),
            ReserveRpcError::Reserve(e) => e,
        };
        match &e {
            ReserveError::UnknownSkus(_) => Status::not_found(e.to_string()),
            ReserveError::StrategyNotAvailable(..) => Status::unimplemented(e.to_string()),
            ReserveError::LockTimeout { .. } | ReserveError::Coordination(_) => {
                tracing::warn!(error = %error_chain(&e), "reserve: coordination failed");
                Status::unavailable(e.to_string())
            }
            ReserveError::Db(ReserveDbError::StaleFencingToken { .. }) => {
                tracing::warn!(error = %e, "reserve: fenced write rejected");
                Status::aborted(format!("{e}; retry"))
            }
            ReserveError::Db(ReserveDbError::DifferentCart(_)) => {
                Status::failed_precondition(e.to_string())
            }
            ReserveError::Db(ReserveDbError::Database(db)) => status_for(db, "reserve"),
            ReserveError::Db(ReserveDbError::MissingToken(_)) => {
                tracing::error!(error = %e, "reserve: bug");
                Status::internal("reserve: internal error")
            }
        }
    }
}

/// Commit / Release failures.
#[derive(Debug, thiserror::Error)]
enum SettleError {
    #[error(transparent)]
    Validation(ValidationError),
    #[error(transparent)]
    Db(SettleDbError),
}

impl From<SettleError> for Status {
    fn from(e: SettleError) -> Status {
        match e {
            SettleError::Validation(v) => v.into(),
            SettleError::Db(e @ SettleDbError::NotFound(_)) => Status::not_found(e.to_string()),
            SettleError::Db(e @ SettleDbError::Conflict { .. }) => {
                Status::failed_precondition(e.to_string())
            }
            SettleError::Db(SettleDbError::Database(e)) => status_for(&e, "settle"),
        }
    }
}
