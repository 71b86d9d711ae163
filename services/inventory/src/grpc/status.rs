//! Each RPC's error enum and its one `From<_> for Status`: which failure is which gRPC
//! code, what the caller is told, and what is logged (the whole cause chain).

use shop_common::db::status_for;
use shop_common::domain::{Sku, ValidationError};
use shop_common::telemetry::error_chain;
use tonic::Status;

use crate::catalog::CatalogError;
use crate::repository::{ReserveDbError, SettleDbError};
use crate::reservation::{ReserveError, SettleError};
use crate::sales::SaleError;
use crate::stm::StmError;

/// SetStock / GetStock failures.
#[derive(Debug, thiserror::Error)]
pub(super) enum StockError {
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
pub(super) enum ReserveRpcError {
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
            ReserveError::StrategyMismatch { .. } | ReserveError::MixedStrategies(_) => {
                Status::failed_precondition(e.to_string())
            }
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
            ReserveError::Db(ReserveDbError::InProgress(_) | ReserveDbError::ClaimWithdrawn(_)) => {
                Status::aborted(e.to_string())
            }
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
pub(super) enum SettleRpcError {
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
            SettleRpcError::Settle(
                e
                @ SettleError::Db(SettleDbError::Raced { .. } | SettleDbError::CommitRaced { .. }),
            ) => Status::aborted(e.to_string()),
            SettleRpcError::Settle(
                e @ SettleError::Db(SettleDbError::StaleFencingToken { .. }),
            ) => {
                tracing::warn!(error = %e, "release: fenced return rejected");
                Status::aborted(e.to_string())
            }
            SettleRpcError::Settle(
                e @ (SettleError::LockTimeout { .. } | SettleError::Coordination(_)),
            ) => {
                tracing::warn!(error = %error_chain(&e), "release: coordination failed");
                Status::unavailable(e.to_string())
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
pub(super) enum SaleRpcError {
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
pub(super) enum CatalogRpcError {
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
