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
//! | [`provider`] | the simulated payment provider: latency, failure rate, its own ledger of charges (authorize, capture) and refunds under its own ids, idempotency keys |
//! | [`permits`] | the provider's concurrency permits (a coord Semaphore), kept across charges to save two etcd writes per charge |
//! | [`ledger`] | the auditors' reading of the provider's ledger: charges kept per order, double charges |
//! | [`repository`] | the `payments` table: one row per order, ever |
//! | [`grpc`] | GetPayment, QueueDepth, ListLeaders |
//!
//! # At most one charge kept per order
//! Delivery is at-least-once (a worker can die after charging and before acking, and
//! the item comes back). What makes the *payment* happen once:
//! 1. the provider is asked with an idempotency key derived from the order
//!    (`order-<id>-charge`): a repeat returns the first charge without charging again.
//!    The provider's ledger itself would take a second charge for the order (its charges
//!    are keyed by the provider's own ids, a request without a key is a new charge), so
//!    this key is what prevents it — knockout `knockout-provider-key` shows it;
//! 2. the work queue's claim is held under the worker's etcd lease, and an item is
//!    acked only after its result is reported: one worker at a time, and a dead
//!    worker's item comes back to a live one, which finishes (or refunds) the charge the
//!    dead one made — knockout `coord/knockout-claim-lease` shows what a claim that
//!    outlives its worker leaves behind;
//! 3. the `payments` row is keyed by order id and moves PROCESSING → CAPTURED | FAILED
//!    with a compare-and-set, so a duplicate delivery records nothing new;
//! 4. `PaymentResult` at the order service is idempotent on the order id.
//!
//! A capture can still arrive for an order the order service has cancelled meanwhile
//! (its reservation expired). The order service refuses it, and `settle-payments`
//! refunds it — once, under the key `order-<id>-refund` — so at most one charge per
//! order is *kept*. The amount charged is the order's: the item's own amount only if its
//! seal (made by the order service with the internal token) verifies, else read from
//! the order service; an edited or forged item never sets it.

pub mod grpc;
pub mod ledger;
pub mod permits;
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
