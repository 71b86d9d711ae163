//! What a test reads of a service's telemetry: the spans it finishes, its `/metrics`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

/// Installs, once per process, a tracing subscriber whose OpenTelemetry layer (the one
/// services use, with the same filter) exports every finished span to memory, plus the
/// test log output when `RUST_LOG` is set. Call it first thing in every test of a
/// binary that checks traces: the subscriber is process-wide, so it must be installed
/// before anything else installs one. Spans of all tests in the binary land in the
/// same exporter; select yours by trace id.
pub fn capture_spans() -> &'static InMemorySpanExporter {
    use tracing_subscriber::prelude::*;
    static CAPTURE: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &CAPTURE
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let logs = std::env::var_os("RUST_LOG").is_some().then(|| {
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(tracing_subscriber::EnvFilter::from_default_env())
            });
            // Without the `log` bridge, like the services (see `shop_common::telemetry`).
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry()
                    .with(shop_common::telemetry::trace_layer("shop-test", &provider))
                    .with(logs),
            )
            .expect("capture_spans() must run before any other tracing subscriber is installed in this test binary");
            (exporter, provider)
        })
        .0
}

/// The text of `GET http://<addr>/metrics` (panics on anything but 200 OK). A plain
/// HTTP/1.1 request on a fresh connection: what a Prometheus scrape does.
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the scrape");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the scrape");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "scrape failed: {head}");
    body.to_owned()
}

/// The value of the sample `name{labels}` in a Prometheus text exposition, where
/// `labels` must all appear among the sample's labels (`&[("queue", "/x/")]`).
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let matches = series_name == name
            && labels.iter().all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|l| l == format!("{k}=\"{v}\""))
            });
        if matches {
            value.parse().ok()
        } else {
            None
        }
    })
}
