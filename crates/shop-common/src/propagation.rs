//! W3C trace context (`traceparent`, `tracestate`) across process boundaries, so one
//! order is one trace in every service.
//!
//! - **Outgoing gRPC calls**: every client between services is built on a
//!   [`TracedChannel`] (see [`traced_channel`]). For each call it opens a client span
//!   `grpc.client` (named `<package.Service>/<Method>` in the trace) as a child of the
//!   caller's current span and writes that span's context into the request metadata.
//! - **Incoming gRPC calls**: [`ServerTracingLayer`] (installed by
//!   the `server` module's `GrpcServer`) opens a [`server_span`] `grpc.server` whose parent is
//!   the context found in the metadata, and the handler's own spans nest inside it.
//! - **How a call ended**: both spans record `rpc.grpc.status_code` (0 for OK) once the
//!   status is known (response headers, or the trailers after the body), and a failed
//!   call sets `otel.status_code = ERROR` with the status message as the description.
//!   "Failed" follows OpenTelemetry's gRPC conventions: on the client every code but
//!   OK; on the server only UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
//!   UNAVAILABLE and DATA_LOSS (a caller's bad request is not the server's error). A
//!   call the channel could not make at all is an error of the client span only, with
//!   the code tonic gives the caller (UNAVAILABLE, or CANCELLED for the channel's
//!   deadline).
//! - **Queue items**: [`current_context_map`] captures the current span's context as a
//!   string map (stored in `PaymentItem::trace`); [`set_parent_from_map`] makes a
//!   consumer's span its child.
//!
//! # What is guaranteed, and what is not
//! - Without an OpenTelemetry layer (tracing off) nothing is injected and nothing fails:
//!   the contexts are empty and headers are left alone.
//! - A malformed or missing `traceparent` starts a new trace; it is never an error.
//! - Health checks and reflection are not traced (they would bury the orders' traces).
//! - A span lasts until its call's status is known, so a streamed response's spans
//!   cover the whole stream. A call abandoned before its status arrived (the caller
//!   dropped it) records no code.

use std::collections::HashMap;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use percent_encoding::percent_decode;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tower::Service;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::error_chain;

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

/// A span for one end of a gRPC call, with the status fields left empty until the call
/// ends ([`record_status`]).
macro_rules! grpc_span {
    ($name:literal, $kind:literal, $service:expr, $method:expr) => {
        tracing::info_span!(
            $name,
            otel.name = format_args!("{}/{}", $service, $method),
            otel.kind = $kind,
            rpc.system = "grpc",
            rpc.service = $service,
            rpc.method = $method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        )
    };
}

/// The server span of one incoming gRPC request, child of the caller's context.
/// [`ServerTracingLayer`] runs the handler inside it and records how the call ended.
pub fn server_span<B>(request: &http::Request<B>) -> Span {
    let (service, method) = grpc_method(request.uri().path());
    if is_untraced(service) {
        return Span::none();
    }
    let span = grpc_span!("grpc.server", "server", service, method);
    set_parent_from_headers(&span, request.headers());
    span
}

/// Which end of a call a span stands for; decides which codes are its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Whether a call that ended with `code` failed from `side`'s point of view, as
/// OpenTelemetry's gRPC conventions define it: for the client every code but OK; for
/// the server only the codes that say the server failed. A caller's bad request
/// (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...) is the client span's error,
/// not the server's.
fn is_error(side: Side, code: Code) -> bool {
    match side {
        Side::Client => code != Code::Ok,
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    }
}

/// Records how a call ended on its span: `rpc.grpc.status_code` (the numeric code,
/// also for OK), and for an error `otel.status_code = ERROR` with the message (or the
/// code's description) as the status description.
fn record_status(span: &Span, side: Side, code: Code, message: &str) {
    span.record("rpc.grpc.status_code", code as i64);
    if is_error(side, code) {
        span.record("otel.status_code", "ERROR");
        let description = if message.is_empty() {
            code.description()
        } else {
            message
        };
        span.record("otel.status_description", description);
    }
}

/// The gRPC status in `headers` (response headers of a trailers-only response, or the
/// trailers), with its percent-encoded message decoded.
fn grpc_status(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    let message = headers
        .get("grpc-message")
        .map(|m| {
            percent_decode(m.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some((code, message))
}

/// Records `response`'s status on `span` once it is known, and keeps `span` open
/// until then: a trailers-only response (how tonic sends every error a handler
/// returns) carries it in its headers; otherwise it comes in the trailers at the end
/// of the body, or as the body's error if the stream breaks. A call whose body is
/// dropped before its trailers (the caller gave up) records no code.
fn record_status_of(
    span: Span,
    side: Side,
    response: http::Response<Body>,
) -> http::Response<Body> {
    if span.is_none() {
        return response;
    }
    if let Some((code, message)) = grpc_status(response.headers()) {
        record_status(&span, side, code, &message);
        return response;
    }
    let broken = span.clone();
    response.map(move |body| {
        Body::new(
            body.map_frame(move |frame| {
                if let Some((code, message)) = frame.trailers_ref().and_then(grpc_status) {
                    record_status(&span, side, code, &message);
                }
                frame
            })
            .map_err(move |status: tonic::Status| {
                record_status(&broken, side, status.code(), status.message());
                status
            }),
        )
    })
}

/// The code tonic gives the caller for a call the channel could not make: the
/// channel's deadline (`TimeoutExpired`) is CANCELLED, a status found in the error's
/// chain is that status, and every other transport failure (connection refused or
/// lost) UNAVAILABLE.
fn transport_error_code(error: &(dyn std::error::Error + 'static)) -> Code {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return status.code();
        }
        if e.is::<tonic::TimeoutExpired>() {
            return Code::Cancelled;
        }
        source = e.source();
    }
    Code::Unavailable
}

/// The tower layer the shop's `GrpcServer` puts around its routes: every request
/// runs inside its [`server_span`], which records the status the call ended with.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTracingLayer;

impl<S> tower::Layer<S> for ServerTracingLayer {
    type Service = ServerTracing<S>;

    fn layer(&self, inner: S) -> ServerTracing<S> {
        ServerTracing { inner }
    }
}

/// A gRPC service whose requests are traced; see [`ServerTracingLayer`].
#[derive(Debug, Clone)]
pub struct ServerTracing<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for ServerTracing<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let span = server_span(&request);
        let handled = span.in_scope(|| self.inner.call(request));
        let recording = span.clone();
        Box::pin(
            async move {
                let response = handled.await?;
                Ok(record_status_of(recording, Side::Server, response))
            }
            .instrument(span),
        )
    }
}

/// A tonic channel whose calls carry the caller's trace context (see the module docs).
/// Use it as the transport of every generated client: `OrderServiceClient<TracedChannel>`.
/// With [`TracedChannel::authorized`] every call also carries the internal token.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    inner: Channel,
    token: Option<crate::auth::InternalToken>,
}

impl TracedChannel {
    pub fn new(inner: Channel) -> TracedChannel {
        TracedChannel { inner, token: None }
    }

    /// Every call presents `token` (a service calling a peer's internal methods).
    pub fn authorized(self, token: Option<crate::auth::InternalToken>) -> TracedChannel {
        TracedChannel { token, ..self }
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

impl Service<http::Request<Body>> for TracedChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, tonic::transport::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // `call` runs inside the caller's task, so the current span is the caller's.
        let (service, method) = grpc_method(request.uri().path());
        let span = grpc_span!("grpc.client", "client", service, method);
        inject_headers(&span, request.headers_mut());
        if let Some(token) = &self.token {
            token.authorize(request.headers_mut());
        }
        let sent = self.inner.call(request);
        let recording = span.clone();
        Box::pin(
            async move {
                match sent.await {
                    Ok(response) => Ok(record_status_of(recording, Side::Client, response)),
                    Err(e) => {
                        let code = transport_error_code(&e);
                        record_status(&recording, Side::Client, code, &error_chain(&e));
                        Err(e)
                    }
                }
            }
            .instrument(span),
        )
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
