//! # console — watch the shop's coordination live
//!
//! A small web server that follows the shop's etcd prefix, the inventory database and
//! the services' Prometheus endpoints, and serves one page that draws locks (holder,
//! fencing token, waiters in line), elections (leader, candidates, history), the
//! payment work queue and the provider semaphore, flash sales, stock with its
//! conservation check, the watch stream as a timeline, and charts of orders/s and
//! lock wait. It only reads: etcd get/watch/lease-TTL, read-only database
//! transactions, `GET /metrics`. See docs/console.md.
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`model`] | etcd keys → locks, elections, queues, semaphores, sales (pure) |
//! | [`stock`] | stock rows → the conservation verdict; sales' customers (pure) |
//! | [`metrics`] | Prometheus text → orders/s and mean lock wait (pure) |
//! | [`state`] | what the console knows now; snapshots and server-sent events |
//! | [`watch`] | following etcd (read, watch, lease TTLs), reconnecting |
//! | [`sources`] | polling the inventory database (read-only) and the metrics endpoints |
//! | [`http`] | routes, the embedded page, the event stream |
//!
//! # Configuration (environment)
//! | variable | meaning | default |
//! |---|---|---|
//! | `CONSOLE_ADDR` | where the page is served | `0.0.0.0:8080` |
//! | `ETCD_ENDPOINTS`, `ETCD_USERNAME`, … | etcd, as every service reads it (`coord::EtcdConfig`) | `127.0.0.1:2379` |
//! | `ETCD_PREFIX` | the shop's key prefix | `/shop` |
//! | `INVENTORY_DATABASE_URL` | the inventory database, for stock and sales; unset: no stock panel | none |
//! | `METRICS_TARGETS` | comma-separated `host:port` of the services' `/metrics`; unset: no charts | none |

pub mod http;
pub mod metrics;
pub mod model;
pub mod sources;
pub mod state;
pub mod stock;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::state::Hub;

/// How the console is configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub etcd: coord::EtcdConfig,
    pub prefix: String,
    pub inventory_database_url: Option<String>,
    pub metrics_targets: Vec<String>,
    /// How often the database and the metrics are read.
    pub database_interval: Duration,
    pub metrics_interval: Duration,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Settings> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// From a lookup function (tests pass their own).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let addr = var("CONSOLE_ADDR").unwrap_or_else(|| "0.0.0.0:8080".into());
        let addr = addr
            .parse()
            .with_context(|| format!("CONSOLE_ADDR={addr:?} is not a socket address"))?;
        let etcd = coord::EtcdConfig::from_lookup(&var).context("etcd settings")?;
        let prefix = var("ETCD_PREFIX").unwrap_or_else(|| "/shop".into());
        anyhow::ensure!(
            prefix.starts_with('/') && prefix.len() > 1,
            "ETCD_PREFIX must start with '/' and name something, got {prefix:?}"
        );
        let metrics_targets = var("METRICS_TARGETS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        Ok(Settings {
            addr,
            etcd,
            prefix: prefix.trim_end_matches('/').to_owned(),
            inventory_database_url: var("INVENTORY_DATABASE_URL").filter(|u| !u.is_empty()),
            metrics_targets,
            database_interval: Duration::from_secs(1),
            metrics_interval: Duration::from_secs(2),
        })
    }
}

/// The console, bound to its port.
pub struct Console {
    listener: TcpListener,
    settings: Settings,
    hub: Arc<Hub>,
}

impl Console {
    pub async fn build(settings: Settings) -> anyhow::Result<Console> {
        let listener = TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.addr))?;
        let hub = Hub::new(
            &settings.prefix,
            settings.inventory_database_url.is_some(),
            &settings.metrics_targets,
        );
        Ok(Console {
            listener,
            settings,
            hub,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Follows the sources and serves the page until `shutdown` resolves.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Console {
            listener,
            settings,
            hub,
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watch::follow(settings.etcd.clone(), hub.clone()));
        tasks.spawn(hub.clone().publish());
        if let Some(url) = &settings.inventory_database_url {
            let pool = sources::read_only_pool(url).context("INVENTORY_DATABASE_URL")?;
            tasks.spawn(sources::poll_database(
                pool,
                hub.clone(),
                settings.database_interval,
            ));
        }
        if !settings.metrics_targets.is_empty() {
            tasks.spawn(sources::poll_metrics(
                settings.metrics_targets.clone(),
                hub.clone(),
                settings.metrics_interval,
            ));
        }
        tracing::info!(addr = %listener.local_addr()?, prefix = %settings.prefix, "console serving");
        http::serve(listener, hub, shutdown).await;
        tasks.abort_all();
        Ok(())
    }
}
