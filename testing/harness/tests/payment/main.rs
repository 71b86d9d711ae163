//! The payment service against real etcd and Postgres, with real order and inventory
//! services beside it: the whole saga, provider failures, a worker that dies
//! mid-item, the provider's concurrency cap, tier priority, bad input; the provider's
//! ledger and idempotency keys; the provider permits a process keeps across charges; the knockouts of the guards of at-most-once charging.

mod helpers;
mod knockouts;
mod ledger;
mod permits;
mod properties;
mod saga;
mod settle;
