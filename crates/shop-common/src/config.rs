//! Configuration from the environment, shared by every service.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GRPC_ADDR` | address the service listens on | `0.0.0.0:<service port>` |
//! | `DATABASE_URL` | the service's own Postgres database | `postgres://postgres@127.0.0.1:5432/<service>` |
//! | `DATABASE_PASSWORD_FILE` | a file holding the database password (a mounted secret), instead of a password in `DATABASE_URL` | none |
//! | `DATABASE_MAX_CONNECTIONS` | connection pool size | `10` |
//! | `ETCD_ENDPOINTS`, `ETCD_USERNAME`, `ETCD_PASSWORD`, `ETCD_PASSWORD_FILE`, `ETCD_CA_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`, `ETCD_TLS_SERVER_NAME` | etcd, its auth and TLS (see `coord::config`) | `127.0.0.1:2379`, no auth, no TLS |
//! | `GRPC_MAX_MESSAGE_BYTES`, `GRPC_MAX_CONCURRENT_REQUESTS`, `GRPC_REQUEST_TIMEOUT_MS` | request limits of the gRPC server (see [`crate::limits`]) | 1 MiB, 1024, 60 s |
//! | `ETCD_PREFIX` | prefix of every etcd key the shop uses | `/shop` |
//! | `ETCD_SESSION_TTL` | TTL (seconds) of the process's etcd session | `10` |
//! | `ORDER_ADDR`, `INVENTORY_ADDR`, `PAYMENT_ADDR` | where the other services are | `http://127.0.0.1:5005{1,2,3}` |
//! | `REPLICA_ID` | this replica's name in leader elections and the `service.instance.id` of its traces | `<hostname>-<pid>` |
//! | `JOB_INTERVAL_MS` | pause between passes of leader-elected jobs | `2000` |
//! | `INTERNAL_TOKEN_FILE` | a file holding the internal token (a Docker secret): internal calls must present it, and this service's own calls to its peers do (see [`crate::auth`]); **required** by the services | none: the service does not start |
//! | `HEALTH_PROBE_INTERVAL_MS` | how often health probes the database and etcd (see [`crate::server`]) | `1000` |
//! | `RUST_LOG` | log filter (tracing `EnvFilter`) | `info` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | OTLP/gRPC collector for traces (`http://jaeger:4317`); unset: no export | none |
//! | `METRICS_ADDR` | where `GET /metrics` (Prometheus) is served; `off` disables it | `0.0.0.0:9451` order, `:9452` inventory, `:9453` payment |
//!
//! Everything is read through a lookup function, so tests parse configuration without
//! touching the process environment. Secrets (database and etcd passwords) come from
//! the environment or from files the orchestrator mounts (`*_FILE`), never from code
//! or images, and never appear in `Debug` output.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

pub use crate::env::{env_var, parse_or, parse_positive_or, ConfigError};
use crate::limits::ServerLimits;

/// Which service is configuring itself; decides the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    Order,
    Inventory,
    Payment,
}

impl ServiceName {
    /// `"order"`, `"inventory"`, `"payment"`: the default database name and log target.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Order => "order",
            ServiceName::Inventory => "inventory",
            ServiceName::Payment => "payment",
        }
    }

    /// The port of the service's Prometheus `/metrics` endpoint by default.
    pub fn default_metrics_port(self) -> u16 {
        match self {
            ServiceName::Order => 9451,
            ServiceName::Inventory => 9452,
            ServiceName::Payment => 9453,
        }
    }

    /// The port the service listens on by default, and where its peers look for it.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceName::Order => 50051,
            ServiceName::Inventory => 50052,
            ServiceName::Payment => 50053,
        }
    }
}

/// The settings every service has.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub service: ServiceName,
    pub grpc_addr: SocketAddr,
    /// Request size, concurrency and time limits of the gRPC server.
    pub limits: ServerLimits,
    pub database: DatabaseSettings,
    pub etcd: EtcdSettings,
    pub peers: PeerAddrs,
    /// OTLP collector endpoint (the `telemetry` module exports traces there).
    pub otel_endpoint: Option<String>,
    /// Where `/metrics` is served (`None`: not served; the `metrics` module serves it).
    pub metrics_addr: Option<SocketAddr>,
    /// Leader-elected background jobs: this replica's name and their pace.
    pub jobs: JobSettings,
    /// The internal token (`INTERNAL_TOKEN_FILE`). [`CommonSettings::from_env`]
    /// requires it; only settings built in code (tests) may leave it `None`, which
    /// serves the internal API without authentication.
    pub internal_token: Option<crate::auth::InternalToken>,
    /// How often health probes the database and etcd (`HEALTH_PROBE_INTERVAL_MS`).
    pub health_probe_interval: Duration,
}

/// How a service's leader-elected jobs run (the `jobs` module runs them).
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// This replica's name in elections (`REPLICA_ID`, else `<hostname>-<pid>`).
    pub replica_id: String,
    /// Pause between passes of a job (`JOB_INTERVAL_MS`, default 2000).
    pub interval: Duration,
}

/// The service's Postgres database.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// Parsed from `DATABASE_URL`; the password stays inside and out of logs.
    pub options: PgConnectOptions,
    pub max_connections: u32,
    /// How long a query waits for a free connection (or a reachable server) before the
    /// call fails with UNAVAILABLE.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("user", &self.options.get_username())
            .field("database", &self.options.get_database())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// etcd: how to connect, and where the shop's keys live.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub config: coord::EtcdConfig,
    /// Every key the shop writes starts with this (`/shop`), so several shops (or
    /// tests) can share one etcd.
    pub prefix: String,
    /// TTL of the process's one session: how long a crashed replica keeps its locks.
    pub session_ttl: i64,
}

/// gRPC addresses (URIs) of the three services, for clients.
#[derive(Debug, Clone)]
pub struct PeerAddrs {
    pub order: String,
    pub inventory: String,
    pub payment: String,
}

impl CommonSettings {
    /// From the process environment.
    /// A deployed service needs `INTERNAL_TOKEN_FILE`: its internal API is never
    /// open by default.
    pub fn from_env(service: ServiceName) -> Result<CommonSettings, ConfigError> {
        let settings = Self::from_lookup(service, |name| std::env::var(name).ok())?;
        if settings.internal_token.is_none() {
            return Err(ConfigError(
                "INTERNAL_TOKEN_FILE is not set: name a file holding the internal token \
                 (scripts/secrets.sh makes one) that services and operators present for \
                 internal calls"
                    .into(),
            ));
        }
        Ok(settings)
    }

    /// From any lookup function (the environment, or a map in tests).
    pub fn from_lookup(
        service: ServiceName,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<CommonSettings, ConfigError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let grpc_addr = parse_or(
            "GRPC_ADDR",
            var("GRPC_ADDR"),
            SocketAddr::from(([0, 0, 0, 0], service.default_port())),
        )?;
        let url = var("DATABASE_URL")
            .unwrap_or_else(|| format!("postgres://postgres@127.0.0.1:5432/{}", service.as_str()));
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError(
                "DATABASE_URL must start with postgres:// or postgresql://".into(),
            ));
        }
        let mut options = PgConnectOptions::from_str(&url)
            .map_err(|e| ConfigError(format!("DATABASE_URL is not a Postgres URL: {e}")))?;
        if let Some(path) = var("DATABASE_PASSWORD_FILE") {
            if url_has_password(&url) {
                return Err(ConfigError(
                    "DATABASE_URL has a password and DATABASE_PASSWORD_FILE is set: use one".into(),
                ));
            }
            let password = coord::config::read_secret_file("DATABASE_PASSWORD_FILE", &path)
                .map_err(|e| ConfigError(e.to_string()))?;
            options = options.password(&password);
        }
        let database = DatabaseSettings {
            options,
            max_connections: parse_or(
                "DATABASE_MAX_CONNECTIONS",
                var("DATABASE_MAX_CONNECTIONS"),
                10,
            )?,
            acquire_timeout: Duration::from_secs(5),
        };
        if database.max_connections == 0 {
            return Err(ConfigError(
                "DATABASE_MAX_CONNECTIONS must be at least 1".into(),
            ));
        }
        let etcd_config = coord::EtcdConfig::from_lookup(var).map_err(|e| match e {
            coord::Error::InvalidArgument(message) => ConfigError(message),
            other => ConfigError(other.to_string()),
        })?;
        let prefix = var("ETCD_PREFIX").unwrap_or_else(|| "/shop".into());
        if !prefix.starts_with('/') || prefix.len() < 2 {
            return Err(ConfigError(format!(
                "ETCD_PREFIX must start with '/' and name something, got {prefix:?}"
            )));
        }
        let session_ttl: i64 = parse_or("ETCD_SESSION_TTL", var("ETCD_SESSION_TTL"), 10)?;
        if session_ttl < 1 {
            return Err(ConfigError(
                "ETCD_SESSION_TTL must be at least 1 second".into(),
            ));
        }
        let metrics_addr = match var("METRICS_ADDR") {
            Some(off) if off.trim().eq_ignore_ascii_case("off") => None,
            value => Some(parse_or(
                "METRICS_ADDR",
                value,
                SocketAddr::from(([0, 0, 0, 0], service.default_metrics_port())),
            )?),
        };
        let peer = |name: &str, of: ServiceName| {
            var(name)
                .map(|addr| grpc_uri(&addr))
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", of.default_port()))
        };
        Ok(CommonSettings {
            service,
            grpc_addr,
            limits: ServerLimits::from_lookup(var)?,
            database,
            etcd: EtcdSettings {
                config: etcd_config,
                prefix: prefix.trim_end_matches('/').to_owned(),
                session_ttl,
            },
            peers: PeerAddrs {
                order: peer("ORDER_ADDR", ServiceName::Order),
                inventory: peer("INVENTORY_ADDR", ServiceName::Inventory),
                payment: peer("PAYMENT_ADDR", ServiceName::Payment),
            },
            otel_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            metrics_addr,
            jobs: JobSettings {
                replica_id: var("REPLICA_ID").unwrap_or_else(default_replica_id),
                interval: Duration::from_millis(parse_positive_or(
                    "JOB_INTERVAL_MS",
                    var("JOB_INTERVAL_MS"),
                    2_000,
                )?),
            },
            internal_token: crate::auth::InternalToken::from_lookup(var)?,
            health_probe_interval: Duration::from_millis(parse_positive_or(
                "HEALTH_PROBE_INTERVAL_MS",
                var("HEALTH_PROBE_INTERVAL_MS"),
                1_000,
            )?),
        })
    }
}

/// Whether a `postgres://user:password@host/...` URL carries a password.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A replica name when `REPLICA_ID` is not set: `<hostname>-<pid>`.
pub fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "replica".to_owned());
    format!("{host}-{}", std::process::id())
}

/// `host:port` becomes `http://host:port`; a value with a scheme is kept.
pub fn grpc_uri(addr: &str) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<CommonSettings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CommonSettings::from_lookup(ServiceName::Inventory, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_point_at_loopback_services() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.grpc_addr.port(), 50052);
        assert_eq!(s.database.options.get_database(), Some("inventory"));
        assert_eq!(s.etcd.prefix, "/shop");
        assert_eq!(s.peers.order, "http://127.0.0.1:50051");
        assert_eq!(s.etcd.config.endpoints, vec!["127.0.0.1:2379"]);
    }

    #[test]
    fn peer_addresses_accept_host_port_or_uri() {
        let s = settings(&[
            ("ORDER_ADDR", "order:7000"),
            ("PAYMENT_ADDR", "https://pay.example:443"),
        ])
        .unwrap();
        assert_eq!(s.peers.order, "http://order:7000");
        assert_eq!(s.peers.payment, "https://pay.example:443");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = settings(&[("GRPC_ADDR", "nope")]).unwrap_err().to_string();
        assert!(e.contains("GRPC_ADDR"), "{e}");
        let e = settings(&[("ETCD_USERNAME", "root")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ETCD_PASSWORD"), "{e}");
        let e = settings(&[("DATABASE_URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn zero_is_refused_where_it_would_stall_or_spin() {
        let err = settings(&[("JOB_INTERVAL_MS", "0")]).unwrap_err();
        assert_eq!(err.0, "JOB_INTERVAL_MS must be more than 0");
        for name in ["LOCK_TIMEOUT_MS", "PAYMENT_WORKERS", "SETTLE_AFTER_SECS"] {
            let err = parse_positive_or(name, Some("0".into()), 1u64).unwrap_err();
            assert!(
                err.0.contains(name) && err.0.contains("more than 0"),
                "{err}"
            );
            assert_eq!(parse_positive_or(name, Some("3".into()), 1u64).unwrap(), 3);
            assert_eq!(parse_positive_or(name, None, 7u64).unwrap(), 7);
        }
    }

    #[test]
    fn metrics_are_served_on_a_default_port_unless_turned_off() {
        assert_eq!(settings(&[]).unwrap().metrics_addr.unwrap().port(), 9452);
        let s = settings(&[("METRICS_ADDR", "127.0.0.1:9999")]).unwrap();
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(
            settings(&[("METRICS_ADDR", "off")]).unwrap().metrics_addr,
            None
        );
        let e = settings(&[("METRICS_ADDR", "nine")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("METRICS_ADDR"), "{e}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("shop-config-{:016x}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pg-password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        let s = settings(&[
            ("DATABASE_URL", "postgres://shop@db:5432/inv"),
            ("DATABASE_PASSWORD_FILE", &path),
            ("ETCD_USERNAME", "root"),
            ("ETCD_PASSWORD_FILE", &path),
        ])
        .unwrap();
        assert_eq!(
            s.etcd.config.credentials,
            Some(("root".into(), "from-a-file".into()))
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains("from-a-file"), "{shown}");
        let e = settings(&[
            ("DATABASE_URL", "postgres://shop:inline@db:5432/inv"),
            ("DATABASE_PASSWORD_FILE", &path),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("use one"), "{e}");
        let e = settings(&[("DATABASE_PASSWORD_FILE", "/nonexistent/pw")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DATABASE_PASSWORD_FILE"), "{e}");
        let e = settings(&[("GRPC_MAX_MESSAGE_BYTES", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("GRPC_MAX_MESSAGE_BYTES"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn urls_with_and_without_passwords() {
        assert!(url_has_password("postgres://u:p@h/db"));
        assert!(!url_has_password("postgres://u@h/db"));
        assert!(!url_has_password("postgres://h:5432/db"));
        assert!(!url_has_password("postgres://h/db?user=a@b"));
    }

    #[test]
    fn database_password_is_not_in_debug_output() {
        let s = settings(&[("DATABASE_URL", "postgres://u:hunter2@db:5432/inv")]).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("inv"), "{shown}");
    }
}
