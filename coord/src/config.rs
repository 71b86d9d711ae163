//! Connecting to etcd: endpoints, credentials and TLS from code or the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ETCD_ENDPOINTS` | comma-separated `host:port` (or `https://host:port`) list | `127.0.0.1:2379` |
//! | `ETCD_USERNAME` | etcd auth user | none |
//! | `ETCD_PASSWORD` | its password (set this or `ETCD_PASSWORD_FILE`, not both) | none |
//! | `ETCD_PASSWORD_FILE` | a file holding the password (a mounted secret; one trailing newline is ignored) | none |
//! | `ETCD_CA_FILE` | PEM file of the CA that signed the etcd servers' certificates: turns TLS on | none (plain HTTP/2) |
//! | `ETCD_CERT_FILE`, `ETCD_KEY_FILE` | PEM client certificate and key, for servers that check clients (`--client-cert-auth`); both or neither, and only with `ETCD_CA_FILE` | none |
//! | `ETCD_TLS_SERVER_NAME` | the name the servers' certificates must carry, when it is not the endpoint's host (endpoints given as IP addresses) | the endpoint's host |
//!
//! # Guarantees
//! - A user always comes with a password and the other way round; a password file
//!   and a password variable together are refused; so are client certificates
//!   without a CA and `http://` endpoints with TLS (or `https://` without it). Each
//!   refusal is [`Error::InvalidArgument`] naming the variable.
//! - Files are read once, when the configuration is built: a missing or unreadable
//!   file is an error then, not at the first request.
//! - Secrets never reach `Debug` output or logs.
//! - A client from [`EtcdConfig::connect`] requires a leader on every request and
//!   stream: a member cut off from the rest of its cluster cancels the watches and
//!   lease keepalives it serves within a few election timeouts, so a waiter or session
//!   whose stream sat there reconnects to a member that has a leader instead of
//!   hanging. (A `Client` you build yourself gets this with
//!   `ConnectOptions::with_require_leader(true)`.)
//! - A wrong user or password is [`Error::Authentication`] from [`EtcdConfig::connect`];
//!   a server that cannot be reached or whose TLS does not match the configuration is
//!   [`Error::Connect`], with the endpoints and a hint.
//!
//! # Not guaranteed
//! - Certificates are not reloaded: a rotated certificate needs a new client (a
//!   restart). etcd's auth token is refreshed by the client when it expires.
//! - Without `ETCD_CA_FILE` the connection is plain text; nothing warns about it.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::{Error, Result};

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdConfig {
    /// `host:port` (or URL) of each member; the client balances and fails over.
    pub endpoints: Vec<String>,
    /// Optional etcd auth user and password.
    pub credentials: Option<(String, String)>,
    /// TLS, when the members serve it.
    pub tls: Option<EtcdTls>,
    /// How long to wait for a connection before failing.
    pub connect_timeout: Duration,
}

/// TLS to etcd: the CA to trust and, optionally, the client's own certificate.
#[derive(Clone)]
pub struct EtcdTls {
    /// PEM of the CA (or CAs) that signed the servers' certificates.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate and private key, for servers that authenticate clients.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the servers' certificates against instead of the endpoint host.
    pub server_name: Option<String>,
}

impl EtcdTls {
    /// Trust the CA certificate(s) in `ca_pem`.
    pub fn with_ca(ca_pem: impl Into<Vec<u8>>) -> EtcdTls {
        EtcdTls {
            ca_pem: ca_pem.into(),
            client_identity: None,
            server_name: None,
        }
    }

    fn options(&self) -> TlsOptions {
        let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.client_identity {
            options = options.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            options = options.domain_name(name.clone());
        }
        options
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls.is_some())
            .field(
                "client_certificate",
                &self
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.client_identity.is_some()),
            )
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
            tls: None,
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Authenticate as `user` with `password`.
    pub fn with_credentials(mut self, user: &str, password: &str) -> EtcdConfig {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Connect with TLS.
    pub fn with_tls(mut self, tls: EtcdTls) -> EtcdConfig {
        self.tls = Some(tls);
        self
    }

    /// From the process environment (see the module docs for the variables).
    pub fn from_env() -> Result<EtcdConfig> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any lookup of the variables in the module docs (the environment, or a map
    /// in tests). A blank value counts as unset. Files named by `*_FILE` variables are
    /// read now.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<EtcdConfig> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let endpoints = var("ETCD_ENDPOINTS").unwrap_or_else(|| "127.0.0.1:2379".to_owned());
        let mut config = EtcdConfig::new(&endpoints)?;
        let password = match (var("ETCD_PASSWORD"), var("ETCD_PASSWORD_FILE")) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidArgument(
                    "set ETCD_PASSWORD or ETCD_PASSWORD_FILE, not both".into(),
                ))
            }
            (Some(password), None) => Some(password),
            (None, Some(path)) => Some(read_secret_file("ETCD_PASSWORD_FILE", &path)?),
            (None, None) => None,
        };
        match (var("ETCD_USERNAME"), password) {
            (Some(user), Some(password)) => config.credentials = Some((user, password)),
            (None, None) => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "set both ETCD_USERNAME and ETCD_PASSWORD (or ETCD_PASSWORD_FILE), or neither"
                        .into(),
                ))
            }
        }
        let client_identity = match (var("ETCD_CERT_FILE"), var("ETCD_KEY_FILE")) {
            (Some(cert), Some(key)) => Some((
                read_file("ETCD_CERT_FILE", &cert)?,
                read_file("ETCD_KEY_FILE", &key)?,
            )),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidArgument(
                    "set both ETCD_CERT_FILE and ETCD_KEY_FILE, or neither".into(),
                ))
            }
        };
        config.tls = match var("ETCD_CA_FILE") {
            Some(ca) => Some(EtcdTls {
                ca_pem: read_file("ETCD_CA_FILE", &ca)?,
                client_identity,
                server_name: var("ETCD_TLS_SERVER_NAME"),
            }),
            None if client_identity.is_some() => {
                return Err(Error::InvalidArgument(
                    "ETCD_CERT_FILE and ETCD_KEY_FILE need ETCD_CA_FILE (the CA that signed the etcd servers' certificates)".into(),
                ))
            }
            None => None,
        };
        config.check_schemes()?;
        Ok(config)
    }

    /// With TLS every endpoint must be `host:port` or `https://`; without it, none may
    /// be `https://` (there would be no CA to check the server with).
    fn check_schemes(&self) -> Result<()> {
        for endpoint in &self.endpoints {
            if self.tls.is_some() && endpoint.starts_with("http://") {
                return Err(Error::InvalidArgument(format!(
                    "ETCD_ENDPOINTS: {endpoint} is http:// but ETCD_CA_FILE turns TLS on; use host:port or https://"
                )));
            }
            if self.tls.is_none() && endpoint.starts_with("https://") {
                return Err(Error::InvalidArgument(format!(
                    "ETCD_ENDPOINTS: {endpoint} is https:// but no ETCD_CA_FILE is set"
                )));
            }
        }
        Ok(())
    }

    /// Opens a client and checks that etcd answers (one status call), so that a wrong
    /// password is [`Error::Authentication`] and a TLS mismatch or an unreachable
    /// cluster is [`Error::Connect`] now. With more than one endpoint, a background task also watches
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
        self.check_schemes()?;
        let options = self.connect_options();
        let mut client = Client::connect(&self.endpoints, Some(options.clone()))
            .await
            .map_err(|e| self.connect_error(e))?;
        // The client connects lazily: ask one question now, so a TLS mismatch or an
        // unreachable cluster is reported here, with the configuration, and not as a
        // transport error at the first lock.
        let limit = self.connect_timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, client.status()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(self.connect_error(e)),
            Err(_) => {
                return Err(
                    self.connect_error(etcd_client::Error::IoError(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no member answered within {limit:?}"),
                    ))),
                )
            }
        }
        if self.endpoints.len() > 1 {
            tokio::spawn(monitor_members(client.clone(), self.clone(), options));
        }
        Ok(client)
    }

    fn connect_options(&self) -> ConnectOptions {
        // Require a leader (`hasleader`, Go's `WithRequireLeader`): a cut-off member then
        // cancels our watches and keepalives instead of leaving them silent (see above).
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.options());
        }
        options
    }

    /// The URI the client's balancer knows `endpoint` by.
    fn uri_of(&self, endpoint: &str) -> String {
        if endpoint.contains("://") {
            endpoint.to_owned()
        } else if self.tls.is_some() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        }
    }

    /// Sorts a failed connect into a wrong password, a connection that could not be
    /// opened, and anything else.
    fn connect_error(&self, e: etcd_client::Error) -> Error {
        match &e {
            etcd_client::Error::GRpcStatus(status)
                if status.code() == tonic::Code::Unauthenticated
                    || status.message().contains("authentication failed")
                    || status.message().contains("user name is empty")
                    || status.message().contains("invalid auth token") =>
            {
                Error::Authentication {
                    user: self
                        .credentials
                        .as_ref()
                        .map(|(u, _)| u.clone())
                        .unwrap_or_default(),
                    reason: status.message().to_owned(),
                }
            }
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                Error::Connect {
                    endpoints: self.endpoints.join(","),
                    tls: self.tls.is_some(),
                    source: e,
                }
            }
            etcd_client::Error::GRpcStatus(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) =>
            {
                Error::Connect {
                    endpoints: self.endpoints.join(","),
                    tls: self.tls.is_some(),
                    source: e,
                }
            }
            _ => Error::Etcd(e),
        }
    }
}

/// Reads a file named by variable `var`; the error names both.
fn read_file(var: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(Path::new(path))
        .map_err(|e| Error::InvalidArgument(format!("{var}: cannot read {path}: {e}")))
}

/// A secret from a file (as orchestrators mount them): UTF-8, one trailing newline
/// (`\n` or `\r\n`) removed, not empty.
pub fn read_secret_file(var: &str, path: &str) -> Result<String> {
    let raw = read_file(var, path)?;
    let text = String::from_utf8(raw)
        .map_err(|_| Error::InvalidArgument(format!("{var}: {path} is not UTF-8 text")))?;
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(Error::InvalidArgument(format!("{var}: {path} is empty")));
    }
    Ok(secret.to_owned())
}

/// Removes members that fail a health ping from `client`'s balancer and puts them back
/// once they answer. Never removes the last member left in rotation.
async fn monitor_members(client: Client, config: EtcdConfig, options: ConnectOptions) {
    let endpoints = config.endpoints.clone();
    let probe_options = options
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(800));
    let mut in_rotation = vec![true; endpoints.len()];
    let mut probes: Vec<Option<Client>> = vec![None; endpoints.len()];
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let healthy = probe(&mut probes[i], endpoint, &probe_options).await;
            let uri = config.uri_of(endpoint);
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<EtcdConfig> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        EtcdConfig::from_lookup(|k| map.get(k).map(|v| v.to_string()))
    }

    fn temp_file(name: &str, contents: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("coord-config-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn the_password_comes_from_a_variable_or_a_file_not_both() {
        let file = temp_file("password", b"s3cret\n");
        let c = config(&[("ETCD_USERNAME", "root"), ("ETCD_PASSWORD_FILE", &file)]).unwrap();
        assert_eq!(c.credentials, Some(("root".into(), "s3cret".into())));
        let c = config(&[("ETCD_USERNAME", "root"), ("ETCD_PASSWORD", "pw")]).unwrap();
        assert_eq!(c.credentials, Some(("root".into(), "pw".into())));
        let e = config(&[
            ("ETCD_USERNAME", "root"),
            ("ETCD_PASSWORD", "pw"),
            ("ETCD_PASSWORD_FILE", &file),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = config(&[("ETCD_PASSWORD_FILE", &file)]).unwrap_err();
        assert!(e.to_string().contains("ETCD_USERNAME"), "{e}");
        let e = config(&[
            ("ETCD_USERNAME", "root"),
            ("ETCD_PASSWORD_FILE", "/nonexistent/pw"),
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("ETCD_PASSWORD_FILE: cannot read /nonexistent/pw"),
            "{e}"
        );
        let empty = temp_file("empty", b"\n");
        let e = config(&[("ETCD_USERNAME", "root"), ("ETCD_PASSWORD_FILE", &empty)]).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn tls_needs_a_ca_and_matching_schemes() {
        let ca = temp_file("ca.pem", b"-----BEGIN CERTIFICATE-----\n");
        let c = config(&[("ETCD_CA_FILE", &ca), ("ETCD_ENDPOINTS", "etcd1:2379")]).unwrap();
        assert!(c.tls.is_some());
        assert_eq!(c.uri_of("etcd1:2379"), "https://etcd1:2379");
        let e = config(&[
            ("ETCD_CA_FILE", &ca),
            ("ETCD_ENDPOINTS", "http://etcd1:2379"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = config(&[("ETCD_ENDPOINTS", "https://etcd1:2379")]).unwrap_err();
        assert!(e.to_string().contains("no ETCD_CA_FILE"), "{e}");
        let e = config(&[("ETCD_CERT_FILE", &ca), ("ETCD_KEY_FILE", &ca)]).unwrap_err();
        assert!(e.to_string().contains("need ETCD_CA_FILE"), "{e}");
        let e = config(&[("ETCD_CA_FILE", &ca), ("ETCD_CERT_FILE", &ca)]).unwrap_err();
        assert!(e.to_string().contains("ETCD_KEY_FILE"), "{e}");
        let e = config(&[("ETCD_CA_FILE", "/nonexistent/ca.pem")]).unwrap_err();
        assert!(e.to_string().contains("ETCD_CA_FILE: cannot read"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let ca = temp_file("ca.pem", b"PEM");
        let c = config(&[
            ("ETCD_USERNAME", "root"),
            ("ETCD_PASSWORD", "hunter2"),
            ("ETCD_CA_FILE", &ca),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("PEM"),
            "{shown}"
        );
        assert!(
            shown.contains("root") && shown.contains("tls: true"),
            "{shown}"
        );
    }
}
