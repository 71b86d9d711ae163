//! # inventory-service — stock per SKU and the reservations held against it
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`startup`] | `Settings` from the environment; `Application`: the shared `ServiceShell` plus the handlers and the reconcile job |
//! | [`grpc`] | the `shop.v1.InventoryService` handlers; `grpc/proto.rs` protobuf ⇄ domain, `grpc/status.rs` errors ⇄ status |
//! | [`reservation`] | Reserve under the SKUs' strategy (`none`, `mutex-unfenced`, `mutex`, `stm`, `pg`), SKU locks |
//! | `hooks` | feature `test-hooks` only (tests, the fault suite's hooked image): hold a Reserve or Release at a named moment (`moment!` marks them); across processes, announce an in-section hold in etcd |
//! | [`stm`] | the `stm` strategy's etcd side: counters, customer counts, holds |
//! | [`sales`] | flash sales: a coord Barrier holds Reserves until the sale opens |
//! | [`catalog`] | prices: SetPrices under a coord RwMutex's write side, Quote under its read side |
//! | [`repository`] | the database, one file per concern under `repository/`: `model` (values, errors), `stock`, `reserve`, `strategies` (each strategy's take), `settle`, `audit` |
//! | [`reconcile`] | the leader-elected `reconcile-stock` job (drift report, stm hold sweep) |
//!
//! The saga, the strategies and fencing are described in `docs/architecture.md`.

/// Marks a moment a test may hold an order's request at (`hooks::Moment`); nothing
/// without the feature `test-hooks`.
macro_rules! moment {
    ($moment:ident, $order:expr) => {
        #[cfg(feature = "test-hooks")]
        $crate::hooks::reached($crate::hooks::Moment::$moment, $order).await;
    };
}

pub mod catalog;
pub mod grpc;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod reconcile;
pub mod repository;
pub mod reservation;
pub mod sales;
pub mod startup;
pub mod stm;

/// This service's version (its crate's), reported with its traces as the resource
/// attribute `service.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use startup::{Application, Settings, MIGRATOR};
