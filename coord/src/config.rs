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

    /// Opens a client. With more than one endpoint, a background task also watches
    /// each member's health and takes unreachable members out of the client's balancer
    /// until they answer again.
    ///
    /// Why: the client balances requests over the endpoints by "fewest requests in
    /// flight", and a member that is down (or whose name no longer resolves) fails
    /// every call at once, so it always looks idle and attracts the most calls. etcd's
    /// Go client skips unhealthy connections; this does the same. The monitor pings
    /// every member once a second and lives as long as the process (one client per
    /// process is the intended use).
    pub async fn connect(&self) -> Result<Client> {
        let options = self.connect_options();
        let client = Client::connect(&self.endpoints, Some(options.clone())).await?;
        if self.endpoints.len() > 1 {
            tokio::spawn(monitor_members(
                client.clone(),
                self.endpoints.clone(),
                options,
            ));
        }
        Ok(client)
    }

    fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        options
    }
}

/// Removes members that fail a health ping from `client`'s balancer and puts them back
/// once they answer. Never removes the last member left in rotation.
async fn monitor_members(client: Client, endpoints: Vec<String>, options: ConnectOptions) {
    let probe_options = options
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(800));
    let mut in_rotation = vec![true; endpoints.len()];
    let mut probes: Vec<Option<Client>> = vec![None; endpoints.len()];
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let healthy = probe(&mut probes[i], endpoint, &probe_options).await;
            let uri = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            let others_up = in_rotation.iter().enumerate().any(|(j, up)| j != i && *up);
            if in_rotation[i] && !healthy && others_up {
                if client.remove_endpoint(&uri).await.is_err() {
                    return; // the client's balancer is gone
                }
                in_rotation[i] = false;
                tracing::warn!(endpoint = %endpoint, "etcd member unreachable; taken out of rotation");
            } else if !in_rotation[i] && healthy {
                if client.add_endpoint(endpoint).await.is_err() {
                    return;
                }
                in_rotation[i] = true;
                tracing::info!(endpoint = %endpoint, "etcd member answers again; back in rotation");
            }
        }
    }
}

/// One status call to one member over its own connection.
async fn probe(slot: &mut Option<Client>, endpoint: &str, options: &ConnectOptions) -> bool {
    if slot.is_none() {
        *slot = Client::connect([endpoint], Some(options.clone()))
            .await
            .ok();
    }
    let Some(probe) = slot.as_mut() else {
        return false;
    };
    let answered = tokio::time::timeout(Duration::from_secs(1), probe.status())
        .await
        .is_ok_and(|r| r.is_ok());
    if !answered {
        *slot = None; // reconnect next time (the name may resolve elsewhere by then)
    }
    answered
}

/// Shorthand: `EtcdConfig::from_env()?.connect()`.
pub async fn connect_from_env() -> Result<Client> {
    EtcdConfig::from_env()?.connect().await
}
