//! Logging and tracing for a service process.
//!
//! [`init_telemetry`] installs one global `tracing` subscriber with two layers:
//! - logs: `tracing-subscriber`'s fmt layer, filtered by `RUST_LOG` (default `info`);
//! - traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, `tracing-opentelemetry` turns
//!   every span into an OpenTelemetry span and a batch processor sends them over OTLP/gRPC
//!   (tonic, the workspace's own gRPC stack) to that collector. This layer has its own
//!   filter, [`TRACE_FILTER`]: it keeps `coord`'s debug events (STM conflicts, lock
//!   hand-offs) as span events without putting them in the logs.
//!
//! Every exported span carries the process's OpenTelemetry resource: `service.name`
//! (`order`, `inventory`, `payment`), `service.version` (the service crate's version)
//! and `service.instance.id` (`REPLICA_ID`, the replica's name in leader elections too),
//! so a collector tells the replicas of one service apart. `OTEL_RESOURCE_ATTRIBUTES`
//! may add attributes; these three win over it.
//!
//! The `log` crate is not bridged into `tracing` (no `LogTracer`). Nothing in the
//! workspace logs through `log` (sqlx only asks `log_enabled!` before emitting its
//! events through `tracing`), and the bridge broke the traces: with two per-layer
//! filters, a `log_enabled!` that neither filter enables leaves tracing-subscriber's
//! per-thread filter state saying "disabled", and the next span whose callsite both
//! filters always enable is created disabled for every layer — gone from the trace.
//! sqlx asks after every query, so the spans right after a query (client calls, the
//! queue enqueue) went missing. `tests/otlp` in the payment service caught it; the
//! in-memory capture shares the subscriber's shape so it would too.
//!
//! Trace context crosses process boundaries as W3C `traceparent` (the
//! `propagation` module): gRPC metadata on every call between services and a field
//! of each payment queue item.
//!
//! # What is guaranteed, and what is not
//! - A collector that is down or slow costs nothing but the spans: exports run in a
//!   background task on the service's runtime, each bounded by [`EXPORT_TIMEOUT`]; at
//!   most [`MAX_QUEUED_SPANS`] finished spans wait for export and newer ones are dropped
//!   (counted by the SDK) rather than blocking a request or growing memory.
//! - [`Telemetry::shutdown`] flushes what is queued, bounded by [`SHUTDOWN_TIMEOUT`];
//!   spans still in flight after that are lost.
//! - Spans are not sampled away: every trace is exported (the shop is a teaching tool,
//!   not a high-volume system). A process that needs sampling would set it here.

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::CommonSettings;

/// Finished spans that may wait for export; beyond this they are dropped.
pub const MAX_QUEUED_SPANS: usize = 4_096;
/// Longest one OTLP export may take (connect included).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest [`Telemetry::shutdown`] waits for the last spans to go out.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// What the trace layer records: spans at info and above, and `coord`'s debug events
/// (STM retries, lock hand-offs) so they show up as span events.
pub const TRACE_FILTER: &str = "info,coord=debug";

/// The process's trace pipeline; [`Telemetry::shutdown`] it on exit so the last spans
/// are flushed. Dropping it without shutting down loses the spans still queued.
#[must_use = "call shutdown() on exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (OTLP or a test's exporter).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Runs `work` (the service, until it stops), then [`Telemetry::shutdown`]s, so the
    /// spans of the last requests reach the collector. Returns `work`'s output.
    pub async fn flush_after<T>(self, work: impl std::future::Future<Output = T>) -> T {
        let output = work.await;
        self.shutdown().await;
        output
    }

    /// Flushes queued spans and stops the exporter, waiting at most
    /// [`SHUTDOWN_TIMEOUT`]. Never fails: a collector that is gone is logged.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks its thread until the export task answers; keep it
        // off the runtime's worker threads.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace export did not shut down cleanly"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace shutdown task failed"),
            Err(_) => tracing::warn!("trace export did not flush in time; last spans lost"),
        }
    }
}

/// Installs the global subscriber; when `settings.otel_endpoint` is set
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. `http://jaeger:4317`) it also exports spans
/// there, attributed to this service, `version` and replica (see the module docs).
/// Must run inside the tokio runtime. Safe to call more than once (tests do): later
/// calls keep the first subscriber and export nothing.
pub fn init_telemetry(settings: &CommonSettings, version: &str) -> Telemetry {
    let service = settings.service.as_str();
    let otel_endpoint = settings.otel_endpoint.as_deref();
    let exporter = otel_endpoint.map(|endpoint| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
    });
    let resource = service_resource(service, version, &settings.jobs.replica_id);
    let (provider, unusable) = match exporter {
        Some(Ok(exporter)) => (Some(batch_provider(resource, exporter)), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let telemetry = install(service, provider);
    match (otel_endpoint, unusable) {
        (Some(endpoint), Some(e)) => tracing::error!(
            service,
            endpoint,
            error = %e,
            "OTEL_EXPORTER_OTLP_ENDPOINT is not usable; traces are not exported"
        ),
        (Some(endpoint), None) if telemetry.is_exporting() => {
            tracing::info!(service, endpoint, "exporting traces over OTLP/gRPC")
        }
        _ => {}
    }
    telemetry
}

/// Installs the global subscriber with logs only (`RUST_LOG`) and no trace export, for
/// a process that is not a service (the load tester). Like [`init_telemetry`], later
/// calls keep the first subscriber.
pub fn init_logs() -> Telemetry {
    install("", None)
}

/// The resource every span of the process is attributed to: `service.name`,
/// `service.version` and `service.instance.id` (the replica).
fn service_resource(service: &str, version: &str, replica_id: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .with_attributes([
            KeyValue::new("service.version", version.to_owned()),
            KeyValue::new("service.instance.id", replica_id.to_owned()),
        ])
        .build()
}

/// A provider that batches spans for `exporter` on the tokio runtime, with the bounds
/// in the module docs.
fn batch_provider(resource: Resource, exporter: impl SpanExporter + 'static) -> SdkTracerProvider {
    let batch = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .with_max_export_timeout(EXPORT_TIMEOUT)
                .build(),
        )
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(resource)
        .build()
}

/// Installs fmt logs plus, with a provider, the OpenTelemetry layer. If a global
/// subscriber already exists, nothing changes and the provider is shut down unused.
fn install(service: &str, provider: Option<SdkTracerProvider>) -> Telemetry {
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::registry()
        // Colours only on a terminal: `docker compose logs` and files get plain text.
        .with(
            fmt::layer()
                .with_target(true)
                .with_ansi(std::io::stdout().is_terminal())
                .with_filter(logs),
        )
        .with(provider.as_ref().map(|p| trace_layer(service, p)));
    // Not `try_init()`: that also routes the `log` crate into tracing (`LogTracer`),
    // which loses spans, see the module docs.
    let installed = tracing::subscriber::set_global_default(subscriber).is_ok();
    keep_if_installed(installed, provider)
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`,
/// filtered by [`TRACE_FILTER`]. Public for tests that capture spans in memory
/// (`shop_test_support::capture_spans`) through the very layer the services use.
pub fn trace_layer<S>(
    service: &str,
    provider: &SdkTracerProvider,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.to_owned()))
        .with_filter(EnvFilter::new(TRACE_FILTER))
}

/// The pipeline if its subscriber was installed; else the provider is shut down unused.
pub(crate) fn keep_if_installed(installed: bool, provider: Option<SdkTracerProvider>) -> Telemetry {
    match (installed, provider) {
        (true, provider) => Telemetry { provider },
        (false, Some(provider)) => {
            let _ = provider.shutdown();
            Telemetry { provider: None }
        }
        (false, None) => Telemetry { provider: None },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this crate's unit tests that installs a subscriber.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_that_is_down_blocks_neither_spans_nor_exit() {
        // Port 1 on loopback: connections are refused.
        let settings = CommonSettings::from_lookup(crate::ServiceName::Payment, |name| {
            (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:1".to_owned())
        })
        .expect("settings");
        let telemetry = init_telemetry(&settings, "0.0.0-test");
        assert!(telemetry.is_exporting());
        // More spans than the queue holds: the surplus is dropped, nothing waits.
        for n in 0..(MAX_QUEUED_SPANS * 2) {
            let span = tracing::info_span!("unexported", n);
            span.in_scope(|| tracing::info!("inside"));
        }
        telemetry.shutdown().await;
    }
}
