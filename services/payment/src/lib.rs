//! # payment-service
//!
//! The saga's payment step. The order service puts one item per reserved order on the
//! payment work queue (coord `WorkQueue`, priority = customer tier). Workers on every
//! replica claim items, charge the provider, record the payment and report the result
//! to the order service, which commits or releases the stock.
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`startup`] | `Settings` from the environment; `Application`: the shared `ServiceShell` plus the handlers, workers and settle job |
//! | [`worker`] | the claim → charge → record → report → ack loop |
//! | [`report`] | the `PaymentResult` call to the order service, shared by workers and the job |
//! | [`settle`] | the leader-elected `settle-payments` job: reports unconfirmed payments, re-drives stuck ones, refunds captures for cancelled orders |
//! | [`provider`] | the simulated payment provider: latency, failure rate, charges and refunds idempotent by order |
//! | [`repository`] | the `payments` table: one row per order, ever |
//! | [`grpc`] | GetPayment, QueueDepth, ListLeaders |
//!
//! # At most one charge kept per order
//! Delivery is at-least-once (a worker can die after charging and before acking, and
//! the item comes back). What makes the *payment* happen once:
//! 1. the provider is asked with the order id as idempotency key: a repeat returns the
//!    first outcome without charging again (`provider_charges` keyed by order id);
//! 2. the `payments` row is keyed by order id and moves PROCESSING → CAPTURED | FAILED
//!    with a compare-and-set, so a duplicate delivery records nothing new;
//! 3. `PaymentResult` at the order service is idempotent on the order id.
//!
//! A capture can still arrive for an order the order service has cancelled meanwhile
//! (its reservation expired). The order service refuses it, and `settle-payments`
//! refunds it — once, the provider's refund ledger being keyed by the order id too — so
//! at most one charge per order is *kept*.

pub mod grpc;
pub mod provider;
pub mod report;
pub mod repository;
pub mod settle;
pub mod startup;
pub mod worker;

/// This service's version (its crate's), reported with its traces as the resource
/// attribute `service.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use startup::{Application, Settings};
