//! # inventory-service — stock per SKU and the reservations held against it
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`startup`] | `Settings` from the environment, `Application::build` / `run_until_stopped` |
//! | [`grpc`] | the `shop.v1.InventoryService` handlers: protobuf ⇄ domain, errors ⇄ status |
//! | [`reservation`] | Reserve with a strategy (`none`, `mutex`, `pg`; `stm` to come), SKU locks |
//! | [`repository`] | the database: stock, reservations, tombstones, fenced writes |
//!
//! The saga, the strategies and fencing are described in `docs/architecture.md`.

pub mod grpc;
pub mod reconcile;
pub mod repository;
pub mod reservation;
pub mod startup;

pub use startup::{Application, Settings, MIGRATOR};
