//! W3C trace context (`traceparent`, `tracestate`) across process boundaries, so one
//! order is one trace in every service.
//!
//! - **Outgoing gRPC calls**: every client between services is built on a
//!   [`TracedChannel`] (see [`traced_channel`]). For each call it opens a client span
//!   `grpc.client` (named `<package.Service>/<Method>` in the trace) as a child of the
//!   caller's current span and writes that span's context into the request metadata.
//! - **Incoming gRPC calls**: [`server_span`] (installed by
//!   [`crate::server::GrpcServer`]) opens a server span `grpc.server` whose parent is the
//!   context found in the metadata, and the handler's own spans nest inside it.
//! - **Queue items**: [`current_context_map`] captures the current span's context as a
//!   string map (stored in `PaymentItem::trace`); [`set_parent_from_map`] makes a
//!   consumer's span its child.
//!
//! # What is guaranteed, and what is not
//! - Without an OpenTelemetry layer (tracing off) nothing is injected and nothing fails:
//!   the contexts are empty and headers are left alone.
//! - A malformed or missing `traceparent` starts a new trace; it is never an error.
//! - Health checks and reflection are not traced (they would bury the orders' traces).

use std::collections::HashMap;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes `span`'s trace context into gRPC/HTTP headers.
pub fn inject_headers(span: &Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Makes `span` a child of the trace context in `headers` (if there is one).
pub fn set_parent_from_headers(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// The current span's trace context as `traceparent`/`tracestate` entries; empty when
/// tracing is off. For carriers that are not HTTP headers (queue items).
pub fn current_context_map() -> HashMap<String, String> {
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut map);
    map
}

/// Makes `span` a child of the context [`current_context_map`] captured, if any.
pub fn set_parent_from_map(span: &Span, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    let _ = span.set_parent(TraceContextPropagator::new().extract(map));
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// `/shop.v1.OrderService/CreateOrder` → (`shop.v1.OrderService`, `CreateOrder`).
fn grpc_method(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

/// Services whose calls are not traced: probes and tooling, not orders.
fn is_untraced(service: &str) -> bool {
    service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.")
}

/// The server span of one incoming gRPC request, child of the caller's context.
/// Installed with tonic's `Server::trace_fn`, which enters it while the handler runs.
pub fn server_span(request: &http::Request<()>) -> Span {
    let (service, method) = grpc_method(request.uri().path());
    if is_untraced(service) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = format_args!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    set_parent_from_headers(&span, request.headers());
    span
}

/// A tonic channel whose calls carry the caller's trace context (see the module docs).
/// Use it as the transport of every generated client: `OrderServiceClient<TracedChannel>`.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    inner: Channel,
}

impl TracedChannel {
    pub fn new(inner: Channel) -> TracedChannel {
        TracedChannel { inner }
    }
}

/// A lazily connecting channel to a peer service at `uri` (`http://host:port`), with a
/// connect timeout and a per-call deadline, carrying trace context. It connects on
/// first use and again after a failure, so the peer may start later.
pub fn traced_channel(
    uri: &str,
    connect_timeout: Duration,
    call_timeout: Duration,
) -> Result<TracedChannel, tonic::transport::Error> {
    let channel = Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(connect_timeout)
        .timeout(call_timeout)
        .connect_lazy();
    Ok(TracedChannel::new(channel))
}

impl<B> Service<http::Request<B>> for TracedChannel
where
    Channel: Service<http::Request<B>>,
{
    type Response = <Channel as Service<http::Request<B>>>::Response;
    type Error = <Channel as Service<http::Request<B>>>::Error;
    type Future = Instrumented<<Channel as Service<http::Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // `call` runs inside the caller's task, so the current span is the caller's.
        let (service, method) = grpc_method(request.uri().path());
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = format_args!("{service}/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
        );
        inject_headers(&span, request.headers_mut());
        self.inner.call(request).instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            grpc_method("/shop.v1.OrderService/CreateOrder"),
            ("shop.v1.OrderService", "CreateOrder")
        );
        assert!(is_untraced(grpc_method("/grpc.health.v1.Health/Check").0));
        assert!(!is_untraced("shop.v1.InventoryService"));
    }

    #[test]
    fn without_a_trace_layer_nothing_is_injected_or_broken() {
        assert!(current_context_map().is_empty());
        let mut headers = http::HeaderMap::new();
        inject_headers(&Span::current(), &mut headers);
        assert!(headers.get("traceparent").is_none());
        // A garbage traceparent is ignored, not an error.
        headers.insert("traceparent", http::HeaderValue::from_static("nonsense"));
        set_parent_from_headers(&Span::none(), &headers);
        set_parent_from_map(&Span::none(), &HashMap::new());
    }
}
