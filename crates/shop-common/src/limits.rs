//! What one client can ask of a server: request size, requests in flight per
//! connection, time per request. Every shop server applies these (the `server`
//! module's `GrpcServer::with_limits`); the values come from the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GRPC_MAX_MESSAGE_BYTES` | largest request message a service decodes; larger ones are answered RESOURCE_EXHAUSTED before the handler runs | `1048576` (1 MiB) |
//! | `GRPC_MAX_CONCURRENT_REQUESTS` | requests one connection may have in flight; more wait for a free slot | `1024` |
//! | `GRPC_REQUEST_TIMEOUT_MS` | longest a request may run before it is cancelled (a shorter `grpc-timeout` from the client wins) | `60000` |
//!
//! # Guarantees
//! - A request message over `GRPC_MAX_MESSAGE_BYTES` never reaches a handler: the
//!   caller gets RESOURCE_EXHAUSTED with a message giving both sizes, and nothing is
//!   read from or written to a database for it.
//! - The limit covers the three shop services (each applies it with
//!   `max_decoding_message_size(limits.max_message_bytes)`), not health and
//!   reflection, which keep tonic's own 4 MiB.
//!
//! # Not guaranteed
//! - No limit on connections per client or on request rate: that is for a proxy or
//!   load balancer in front of the services.
//! - The timeout cancels the handler's future; work it already committed stays
//!   committed (every RPC is idempotent on its ids, so a retry is safe).

use std::time::Duration;

use crate::env::{parse_or, ConfigError};

/// Request limits of one gRPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest request message decoded, in bytes.
    pub max_message_bytes: usize,
    /// Requests in flight per connection.
    pub max_concurrent_requests: usize,
    /// Longest a request may run.
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_message_bytes: 1024 * 1024,
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl ServerLimits {
    /// From the variables in the module docs, read through `var` (blank = unset).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<ServerLimits, ConfigError> {
        let defaults = ServerLimits::default();
        let limits = ServerLimits {
            max_message_bytes: parse_or(
                "GRPC_MAX_MESSAGE_BYTES",
                var("GRPC_MAX_MESSAGE_BYTES"),
                defaults.max_message_bytes,
            )?,
            max_concurrent_requests: parse_or(
                "GRPC_MAX_CONCURRENT_REQUESTS",
                var("GRPC_MAX_CONCURRENT_REQUESTS"),
                defaults.max_concurrent_requests,
            )?,
            request_timeout: Duration::from_millis(parse_or(
                "GRPC_REQUEST_TIMEOUT_MS",
                var("GRPC_REQUEST_TIMEOUT_MS"),
                defaults.request_timeout.as_millis() as u64,
            )?),
        };
        // Below 1 KiB not even a full cart fits: surely a typo.
        if limits.max_message_bytes < 1024 {
            return Err(ConfigError(format!(
                "GRPC_MAX_MESSAGE_BYTES must be at least 1024, got {}",
                limits.max_message_bytes
            )));
        }
        if limits.max_concurrent_requests == 0 {
            return Err(ConfigError(
                "GRPC_MAX_CONCURRENT_REQUESTS must be at least 1".into(),
            ));
        }
        if limits.request_timeout.is_zero() {
            return Err(ConfigError(
                "GRPC_REQUEST_TIMEOUT_MS must be at least 1".into(),
            ));
        }
        Ok(limits)
    }

    /// A tonic server builder with the per-connection limit and the timeout set.
    pub fn server_builder(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .concurrency_limit_per_connection(self.max_concurrent_requests)
            .timeout(self.request_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_refuse_nonsense() {
        let none = ServerLimits::from_lookup(|_| None).unwrap();
        assert_eq!(none, ServerLimits::default());
        let set = ServerLimits::from_lookup(|name| match name {
            "GRPC_MAX_MESSAGE_BYTES" => Some("65536".into()),
            "GRPC_REQUEST_TIMEOUT_MS" => Some("1500".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(set.max_message_bytes, 65536);
        assert_eq!(set.request_timeout, Duration::from_millis(1500));
        for (name, value) in [
            ("GRPC_MAX_MESSAGE_BYTES", "10"),
            ("GRPC_MAX_MESSAGE_BYTES", "-1"),
            ("GRPC_MAX_CONCURRENT_REQUESTS", "0"),
            ("GRPC_REQUEST_TIMEOUT_MS", "0"),
        ] {
            let e = ServerLimits::from_lookup(|n| (n == name).then(|| value.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(name), "{e}");
        }
    }
}
