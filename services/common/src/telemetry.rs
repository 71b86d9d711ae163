//! Logging and tracing for a service process.
//!
//! Today: `tracing-subscriber`'s fmt layer filtered by `RUST_LOG` (default `info`).
//! Integration point: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, this is the one
//! function that will add the OpenTelemetry layer (OTLP exporter + W3C trace-context
//! propagation across the gRPC calls); every service already calls it first thing.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the global subscriber. Safe to call more than once (tests do): later calls
/// keep the first subscriber.
pub fn init_telemetry(service: &str, otel_endpoint: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_target(true))
        .try_init()
        .is_ok();
    if installed {
        if let Some(endpoint) = otel_endpoint {
            tracing::warn!(
                service,
                endpoint,
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OTLP export is not wired yet; logging only"
            );
        }
    }
}

/// `error: cause: cause ...` — the whole chain of an error, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
