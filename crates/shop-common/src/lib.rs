//! # shop-common — what every shop service shares
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`env`](mod@env) | one environment variable: blank is unset, a bad value names the variable |
//! | [`auth`] | the internal token: which methods need it (server layer) and clients that present it |
//! | [`retry`] | retrying UNAVAILABLE with exponential back-off and full jitter, for every client |
//! | [`limits`] | request size, concurrency and time limits of every gRPC server |
//! | [`config`] | settings from the environment (`GRPC_ADDR`, `DATABASE_URL`, `ETCD_*`, peers) |
//! | [`telemetry`] | the one function that sets up logging and OTLP trace export for a process |
//! | [`propagation`] | W3C trace context over gRPC (client channel, server span) and in queue items |
//! | [`metrics`] | the Prometheus recorder and `/metrics` endpoint; the shop's metric names |
//! | [`db`] | Postgres pool, database created if missing, migrations applied at start |
//! | [`server`] | gRPC server with health + reflection, stopped by a shutdown future |
//! | [`coordination`] | the process's one etcd session, re-created when lost |
//! | [`leaders`] | `ListLeaders`: a [`leaders::JobLeader`] per job, from a `LeaderDirectory` |
//! | [`jobs`] | leader-elected background jobs (coord `LeaderJob`) and the `LeaderDirectory` that reads their elections |
//! | [`shell`] | [`ServiceShell`]: pool, etcd session, gRPC server and the stop sequence every service's `Application` wraps |
//! | [`domain`] | parsed domain values: `Sku`, `Quantity`, `OrderId`, `Cart`, `Strategy` |
//! | [`payments`] | the payment queue's contract: location, item format, tier priority |
//!
//! Each module uses only modules above it in this table (never one below), so the
//! crate reads top to bottom.
//!
//! Test support (a fresh database per test, servers on port 0, property generators)
//! is not here: it is the dev-dependency `shop-test-support` (`testing/support/`).

pub mod auth;
pub mod config;
pub mod coordination;
pub mod db;
pub mod domain;
pub mod env;
pub mod jobs;
pub mod leaders;
pub mod limits;
pub mod metrics;
pub mod payments;
pub mod propagation;
pub mod retry;
pub mod server;
pub mod shell;
pub mod telemetry;

pub use config::{CommonSettings, ConfigError, ServiceName};
pub use server::{shutdown_signal, GrpcServer};
pub use shell::ServiceShell;
pub use telemetry::{init_telemetry, Telemetry};
