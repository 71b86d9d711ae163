//! Connecting to etcd: endpoints and credentials from code or the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ETCD_ENDPOINTS` | comma-separated `host:port` list | `127.0.0.1:2379` |
//! | `ETCD_USERNAME`, `ETCD_PASSWORD` | etcd auth user (both or neither) | none |
//!
//! Secrets come from the environment (or a secret file mounted by the orchestrator and
//! read into it), never from code.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::{Error, Result};

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdConfig {
    /// `host:port` (or URL) of each member; the client balances and fails over.
    pub endpoints: Vec<String>,
    /// Optional etcd auth user and password.
    pub credentials: Option<(String, String)>,
    /// How long to wait for a connection before failing.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl EtcdConfig {
    /// Endpoints from a comma-separated list such as `"etcd1:2379,etcd2:2379"`.
    pub fn new(endpoints: &str) -> Result<EtcdConfig> {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "no etcd endpoints given (expected host:port[,host:port...])".into(),
            ));
        }
        Ok(EtcdConfig {
            endpoints,
            credentials: None,
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// From `ETCD_ENDPOINTS`, `ETCD_USERNAME` and `ETCD_PASSWORD` (see the module docs).
    pub fn from_env() -> Result<EtcdConfig> {
        let endpoints =
            std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
        let mut config = EtcdConfig::new(&endpoints)?;
        match (
            std::env::var("ETCD_USERNAME"),
            std::env::var("ETCD_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) => config.credentials = Some((user, password)),
            (Err(_), Err(_)) => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "set both ETCD_USERNAME and ETCD_PASSWORD, or neither".into(),
                ))
            }
        }
        Ok(config)
    }

    /// Opens a client.
    pub async fn connect(&self) -> Result<Client> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        Ok(Client::connect(&self.endpoints, Some(options)).await?)
    }
}

/// Shorthand: `EtcdConfig::from_env()?.connect()`.
pub async fn connect_from_env() -> Result<Client> {
    EtcdConfig::from_env()?.connect().await
}
