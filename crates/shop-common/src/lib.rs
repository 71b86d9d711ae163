//! # shop-common — what every shop service shares
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`config`] | settings from the environment (`GRPC_ADDR`, `DATABASE_URL`, `ETCD_*`, peers) |
//! | [`telemetry`] | the one function that sets up logging and OTLP trace export for a process |
//! | [`propagation`] | W3C trace context over gRPC (client channel, server span) and in queue items |
//! | [`metrics`] | the Prometheus recorder and `/metrics` endpoint; the shop's metric names |
//! | [`db`] | Postgres pool, database created if missing, migrations applied at start |
//! | [`limits`] | request size, concurrency and time limits of every gRPC server |
//! | [`server`] | gRPC server with health + reflection, stopped by a shutdown future |
//! | [`coordination`] | the process's one etcd session, re-created when lost |
//! | [`domain`] | parsed domain values: `Sku`, `Quantity`, `OrderId`, `Cart`, `Strategy` |
//! | [`payments`] | the payment queue's contract: location, item format, tier priority |
//! | [`jobs`] | leader-elected background jobs (coord `LeaderJob`) and `ListLeaders` from the elections |
//! | [`leaders`] | `ListLeaders` and the integration point for leader-elected jobs |
//!
//! Test support (a fresh database per test, servers on port 0, property generators)
//! is not here: it is the dev-dependency `shop-test-support` (`testing/support/`).

pub mod config;
pub mod coordination;
pub mod db;
pub mod domain;
pub mod jobs;
pub mod leaders;
pub mod limits;
pub mod metrics;
pub mod payments;
pub mod propagation;
pub mod server;
pub mod telemetry;

pub use config::{CommonSettings, ConfigError, ServiceName};
pub use server::{shutdown_signal, GrpcServer};
pub use telemetry::{init_telemetry, Telemetry};
