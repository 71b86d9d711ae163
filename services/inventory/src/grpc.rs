//! The gRPC boundary: protobuf in, domain types through, protobuf out.
//!
//! | file | what it holds |
//! |---|---|
//! | `grpc.rs` | [`InventoryApi`]: the `shop.v1.InventoryService` handlers |
//! | `grpc/proto.rs` | protobuf ⇄ domain: SetPrices input checked, stock, sales, quotes and reservation states as messages |
//! | `grpc/status.rs` | each RPC's error enum and its one `From<_> for Status`, which logs the whole cause chain and returns a message a caller can act on |

mod proto;
mod status;

use std::sync::Arc;

use shop_common::domain::{Cart, CustomerId, OrderId, SaleId, Sku, Strategy, ValidationError};
use shop_common::leaders::{list_leaders, LeaderDirectory};
use shop_common::metrics::record_reservation;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_server::InventoryService;
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::repository::{InventoryDb, ReserveOutcome};
use crate::reservation::{ReserveRequest, Reserver};
use crate::sales::{SaleError, Sales};
use proto::{parse_prices, quote_to_proto, reservation_response, sale_to_proto, stock_to_proto};
use status::{CatalogRpcError, ReserveRpcError, SaleRpcError, SettleRpcError, StockError};

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
        let strategy =
            Strategy::from_proto("strategy", request.strategy).map_err(StockError::Validation)?;
        let level = self
            .db
            .set_stock(&sku, request.available, strategy, self.default_strategy)
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
        let requested =
            Strategy::from_proto("strategy", request.strategy).map_err(ReserveRpcError::from)?;
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
        let (strategy, outcome) = self
            .reserver
            .reserve(&ReserveRequest {
                order,
                cart,
                strategy: requested,
                sale,
            })
            .await
            .inspect_err(|_| {
                record_reservation(requested.map_or("unspecified", Strategy::as_str), "error")
            })
            .map_err(ReserveRpcError::Reserve)?;
        tracing::Span::current().record("strategy", strategy.as_str());
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
