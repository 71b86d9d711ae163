//! # order-service — the saga's orchestrator
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`startup`] | `Settings` from the environment; `Application`: the shared `ServiceShell` plus the handlers and the expiry job |
//! | [`grpc`] | the `shop.v1.OrderService` handlers: protobuf ⇄ domain, errors ⇄ status |
//! | [`saga`] | CreateOrder and PaymentResult: reserve, reject, compensate, commit, release |
//! | [`payment`] | the payment step's integration point (`PaymentRequester`) |
//! | [`expiry`] | the leader-elected `expire-reservations` job: cancels abandoned orders, requests lost payments again |
//! | [`repository`] | the orders table: idempotent insert, compare-and-set transitions |
//! | [`domain`] | `NewOrder`, `Order`, `OrderStatus`, `IdempotencyKey`, `PaymentOutcome` |
//!
//! The saga, compensation and the strategies are described in `docs/architecture.md`.

pub mod domain;
pub mod expiry;
pub mod grpc;
pub mod payment;
pub mod repository;
pub mod saga;
pub mod startup;

/// This service's version (its crate's), reported with its traces as the resource
/// attribute `service.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use startup::{Application, Settings, MIGRATOR};
