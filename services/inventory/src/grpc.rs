//! The gRPC boundary: protobuf in, domain types through, protobuf out. Each RPC has its
//! own error enum and one `From<_> for Status`, which logs the whole cause chain and
//! returns a message a caller can act on.

use std::sync::Arc;

use shop_common::db::status_for;
use std::collections::BTreeMap;

use shop_common::domain::{Cart, CustomerId, OrderId, SaleId, Sku, Strategy, ValidationError};
use shop_common::leaders::{list_leaders, LeaderDirectory};
use shop_common::metrics::record_reservation;
use shop_common::telemetry::error_chain;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_server::InventoryService;
use tonic::{Request, Response, Status};

use crate::catalog::{Catalog, CatalogError, Quote, MAX_PRICES, MAX_PRICE_MINOR};
use crate::repository::{
    InventoryDb, ReservationState, ReserveDbError, ReserveOutcome, SettleDbError, StockLevel,
};
use crate::reservation::{ReserveError, ReserveRequest, Reserver, SettleError};
use crate::sales::{Sale, SaleError, Sales};
use crate::stm::StmError;

/// Most units a SKU can be set to.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// The inventory service's gRPC handlers.
pub struct InventoryApi {
    pub db: InventoryDb,
    pub reserver: Arc<Reserver>,
    pub sales: Arc<Sales>,
    pub catalog: Arc<Catalog>,
    pub default_strategy: Strategy,
    pub leaders: Arc<dyn LeaderDirectory>,
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
        // The customer is required in a sale and checked whenever it is given.
        let customer = if request.sale_id.is_some() || !request.customer_id.is_empty() {
            Some(
                CustomerId::parse("customer_id", &request.customer_id)
                    .map_err(ReserveRpcError::from)?,
            )
        } else {
            None
        };
        let sale = match (&request.sale_id, customer) {
            (Some(sale), Some(customer)) => Some((
                SaleId::parse("sale_id", sale).map_err(ReserveRpcError::from)?,
                customer,
            )),
            _ => None,
        };
        tracing::Span::current().record("strategy", strategy.as_str());
        let outcome = self
            .reserver
            .reserve(&ReserveRequest {
                order,
                cart,
                strategy,
                sale,
            })
            .await
            .inspect_err(|_| record_reservation(strategy.as_str(), "error"))
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
            ReserveOutcome::LimitExceeded(exceeded) => {
                (pb::ReserveOutcome::LimitExceeded, exceeded.to_string())
            }
        };
        record_reservation(
            strategy.as_str(),
            &outcome
                .as_str_name()
                .trim_start_matches("RESERVE_OUTCOME_")
                .to_ascii_lowercase(),
        );
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
            .map_err(SettleRpcError::Validation)?;
        let settled = self
            .reserver
            .commit(order)
            .await
            .map_err(SettleRpcError::Settle)?;
        Ok(Response::new(reservation_response(order, settled.state)))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReservationResponse>, Status> {
        let order = OrderId::parse("order_id", &request.get_ref().order_id)
            .map_err(SettleRpcError::Validation)?;
        let settled = self
            .reserver
            .release(order)
            .await
            .map_err(SettleRpcError::Settle)?;
        Ok(Response::new(reservation_response(order, settled.state)))
    }

    async fn list_leaders(
        &self,
        _request: Request<pb::ListLeadersRequest>,
    ) -> Result<Response<pb::ListLeadersResponse>, Status> {
        list_leaders(self.leaders.as_ref()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(sale_id = %request.get_ref().sale_id))]
    async fn create_sale(
        &self,
        request: Request<pb::CreateSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        let request = request.into_inner();
        let sale = SaleId::parse("sale_id", &request.sale_id).map_err(SaleRpcError::Validation)?;
        if request.per_customer_limit < 0 {
            return Err(SaleRpcError::Validation(ValidationError::new(
                "per_customer_limit",
                format!(
                    "must be 0 (no limit) or more, got {}",
                    request.per_customer_limit
                ),
            ))
            .into());
        }
        let created = self
            .sales
            .create(&sale, i64::from(request.per_customer_limit))
            .await
            .map_err(SaleRpcError::Sale)?;
        Ok(Response::new(sale_to_proto(created)))
    }

    #[tracing::instrument(skip_all, fields(sale_id = %request.get_ref().sale_id))]
    async fn open_sale(
        &self,
        request: Request<pb::OpenSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        let sale = SaleId::parse("sale_id", &request.get_ref().sale_id)
            .map_err(SaleRpcError::Validation)?;
        let opened = self.sales.open(&sale).await.map_err(SaleRpcError::Sale)?;
        Ok(Response::new(sale_to_proto(opened)))
    }

    #[tracing::instrument(skip_all, fields(sale_id = %request.get_ref().sale_id))]
    async fn get_sale(
        &self,
        request: Request<pb::GetSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        let sale = SaleId::parse("sale_id", &request.get_ref().sale_id)
            .map_err(SaleRpcError::Validation)?;
        match self
            .sales
            .get(&sale)
            .await
            .map_err(|e| SaleRpcError::Sale(e.into()))?
        {
            Some(found) => Ok(Response::new(sale_to_proto(found))),
            None => Err(SaleRpcError::Sale(SaleError::NotFound(sale)).into()),
        }
    }

    #[tracing::instrument(skip_all, fields(prices = request.get_ref().prices.len()))]
    async fn set_prices(
        &self,
        request: Request<pb::SetPricesRequest>,
    ) -> Result<Response<pb::SetPricesResponse>, Status> {
        let prices =
            parse_prices(&request.get_ref().prices).map_err(CatalogRpcError::Validation)?;
        let catalog_version = self
            .catalog
            .set_prices(&prices)
            .await
            .map_err(CatalogRpcError::Catalog)?;
        Ok(Response::new(pb::SetPricesResponse { catalog_version }))
    }

    #[tracing::instrument(skip_all)]
    async fn quote(
        &self,
        request: Request<pb::QuoteRequest>,
    ) -> Result<Response<pb::QuoteResponse>, Status> {
        let cart = Cart::parse(
            "items",
            request
                .get_ref()
                .items
                .iter()
                .map(|l| (l.sku.as_str(), l.quantity)),
        )
        .map_err(CatalogRpcError::Validation)?;
        let quote = self
            .catalog
            .quote(&cart)
            .await
            .map_err(CatalogRpcError::Catalog)?;
        Ok(Response::new(quote_to_proto(quote)))
    }
}

/// SetPrices input: 1..=MAX_PRICES distinct SKUs with prices in range.
fn parse_prices(prices: &[pb::Price]) -> Result<BTreeMap<Sku, i64>, ValidationError> {
    if prices.is_empty() {
        return Err(ValidationError::new(
            "prices",
            "must have at least one price",
        ));
    }
    if prices.len() > MAX_PRICES {
        return Err(ValidationError::new(
            "prices",
            format!(
                "at most {MAX_PRICES} prices per change, got {}",
                prices.len()
            ),
        ));
    }
    let mut parsed = BTreeMap::new();
    for (i, price) in prices.iter().enumerate() {
        let sku = Sku::parse(&format!("prices[{i}].sku"), &price.sku)?;
        if !(0..=MAX_PRICE_MINOR).contains(&price.unit_price_minor) {
            return Err(ValidationError::new(
                format!("prices[{i}].unit_price_minor"),
                format!(
                    "must be between 0 and {MAX_PRICE_MINOR}, got {}",
                    price.unit_price_minor
                ),
            ));
        }
        if parsed.insert(sku.clone(), price.unit_price_minor).is_some() {
            return Err(ValidationError::new(
                format!("prices[{i}].sku"),
                format!("{sku} appears more than once"),
            ));
        }
    }
    Ok(parsed)
}

fn quote_to_proto(quote: Quote) -> pb::QuoteResponse {
    pb::QuoteResponse {
        lines: quote
            .lines
            .into_iter()
            .map(|l| pb::QuoteLine {
                sku: l.sku.as_str().to_owned(),
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                line_total_minor: l.line_total_minor,
            })
            .collect(),
        total_minor: quote.total_minor,
        catalog_version: quote.catalog_version,
    }
}

fn sale_to_proto(sale: Sale) -> pb::Sale {
    pb::Sale {
        sale_id: sale.id.as_str().to_owned(),
        per_customer_limit: sale.per_customer_limit.unwrap_or(0) as i32,
        open: sale.is_open(),
        created_at_unix_ms: sale.created_at.timestamp_millis(),
        opened_at_unix_ms: sale.opened_at.map_or(0, |t| t.timestamp_millis()),
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
        // Only Release answers about a PREPARING order, and it answers RELEASED.
        ReservationState::Preparing => pb::ReservationState::Unspecified,
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
            ReserveError::LockTimeout { .. } | ReserveError::Coordination(_) => {
                tracing::warn!(error = %error_chain(&e), "reserve: coordination failed");
                Status::unavailable(e.to_string())
            }
            ReserveError::Stm(StmError::Coord(coord::Error::TooManyConflicts(_))) => {
                Status::aborted(format!("{e}; retry"))
            }
            ReserveError::Stm(StmError::DifferentCart(_)) => {
                Status::failed_precondition(e.to_string())
            }
            ReserveError::Stm(StmError::Coord(_)) => {
                tracing::warn!(error = %error_chain(&e), "reserve: stm failed");
                Status::unavailable(e.to_string())
            }
            ReserveError::Stm(_) => {
                tracing::error!(error = %error_chain(&e), "reserve: stm state unusable");
                Status::internal(e.to_string())
            }
            ReserveError::Db(ReserveDbError::StaleFencingToken { .. }) => {
                tracing::warn!(error = %e, "reserve: fenced write rejected");
                Status::aborted(format!("{e}; retry"))
            }
            ReserveError::Db(ReserveDbError::DifferentCart(_)) => {
                Status::failed_precondition(e.to_string())
            }
            ReserveError::Db(ReserveDbError::InProgress(_)) => Status::aborted(e.to_string()),
            ReserveError::Sale(sale) => sale_status(sale),
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
enum SettleRpcError {
    #[error(transparent)]
    Validation(ValidationError),
    #[error(transparent)]
    Settle(SettleError),
}

impl From<SettleRpcError> for Status {
    fn from(e: SettleRpcError) -> Status {
        match e {
            SettleRpcError::Validation(v) => v.into(),
            SettleRpcError::Settle(SettleError::Db(e @ SettleDbError::NotFound(_))) => {
                Status::not_found(e.to_string())
            }
            SettleRpcError::Settle(SettleError::Db(e @ SettleDbError::Conflict { .. })) => {
                Status::failed_precondition(e.to_string())
            }
            SettleRpcError::Settle(SettleError::Db(SettleDbError::Database(e))) => {
                status_for(&e, "settle")
            }
            SettleRpcError::Settle(e @ SettleError::GiveBack(_)) => {
                tracing::warn!(error = %error_chain(&e), "release: etcd give-back failed");
                Status::unavailable(e.to_string())
            }
        }
    }
}

/// Sale failures (CreateSale, OpenSale, GetSale, and a sale order's Reserve).
#[derive(Debug, thiserror::Error)]
enum SaleRpcError {
    #[error(transparent)]
    Validation(ValidationError),
    #[error(transparent)]
    Sale(SaleError),
}

impl From<SaleRpcError> for Status {
    fn from(e: SaleRpcError) -> Status {
        match e {
            SaleRpcError::Validation(v) => v.into(),
            SaleRpcError::Sale(e) => sale_status(&e),
        }
    }
}

fn sale_status(e: &SaleError) -> Status {
    match e {
        SaleError::NotFound(_) => Status::not_found(e.to_string()),
        SaleError::DifferentLimit { .. } => Status::already_exists(e.to_string()),
        SaleError::NotOpen { .. } => Status::failed_precondition(e.to_string()),
        SaleError::Coordination(_) => {
            tracing::warn!(error = %e, "sale: etcd failed");
            Status::unavailable(e.to_string())
        }
        SaleError::Database(db) => status_for(db, "sale"),
    }
}

/// SetPrices / Quote failures.
#[derive(Debug, thiserror::Error)]
enum CatalogRpcError {
    #[error(transparent)]
    Validation(ValidationError),
    #[error(transparent)]
    Catalog(CatalogError),
}

impl From<CatalogRpcError> for Status {
    fn from(e: CatalogRpcError) -> Status {
        let e = match e {
            CatalogRpcError::Validation(v) => return v.into(),
            CatalogRpcError::Catalog(e) => e,
        };
        match &e {
            CatalogError::UnknownSkus(_) | CatalogError::Unpriced(_) => {
                Status::not_found(e.to_string())
            }
            CatalogError::LockTimeout(_) | CatalogError::Coordination(_) => {
                tracing::warn!(error = %error_chain(&e), "catalog: etcd failed");
                Status::unavailable(e.to_string())
            }
            CatalogError::Database(db) => status_for(db, "catalog"),
        }
    }
}
