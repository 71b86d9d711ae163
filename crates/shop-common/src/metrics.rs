//! Metrics of a service process, served for Prometheus at `GET /metrics`.
//!
//! Everything is recorded through the [`metrics`] facade: coord's own measurements
//! (`coord_*`, listed in `coord::metrics`) and the shop's (`shop_*`, below). The first
//! call of [`prometheus`] installs the process's one recorder; [`serve`] answers
//! `/metrics` with what it holds, in the Prometheus text format. Each service serves it
//! on `METRICS_ADDR` (see [`crate::config`]).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `shop_reservations_total` | counter | `strategy`, `outcome` | inventory Reserve calls: `reserved`, `out_of_stock`, `already_released`, `limit_exceeded`, `error` |
//! | `shop_oversold_units` | gauge | — | units promised beyond the recorded stock total, summed over SKUs, at the last `reconcile-stock` pass |
//! | `shop_drifted_skus` | gauge | — | SKUs whose counters disagree with their total or their reservation rows, likewise |
//!
//! Histograms (every `*_seconds` metric) have fixed buckets from 0.5 ms to 10 s,
//! [`SECONDS_BUCKETS`].
//!
//! # What is guaranteed, and what is not
//! - Recording never blocks and never fails; with no recorder installed it does nothing.
//! - The recorder is process-wide: services sharing a process (the tests) share it, so
//!   each one's `/metrics` shows everything the process recorded.
//! - If something else installed a global recorder first, this one is not installed and
//!   `/metrics` stays empty (logged once).

use std::convert::Infallible;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub const RESERVATIONS: &str = "shop_reservations_total";
pub const OVERSOLD_UNITS: &str = "shop_oversold_units";
pub const DRIFTED_SKUS: &str = "shop_drifted_skus";

/// Counts one inventory Reserve in `shop_reservations_total`.
pub fn record_reservation(strategy: &'static str, outcome: &str) {
    metrics::counter!(RESERVATIONS, "strategy" => strategy, "outcome" => outcome.to_owned())
        .increment(1);
}

/// Sets the stock-health gauges from one reconcile pass.
pub fn record_stock_health(oversold_units: i64, drifted_skus: usize) {
    metrics::gauge!(OVERSOLD_UNITS).set(oversold_units as f64);
    metrics::gauge!(DRIFTED_SKUS).set(drifted_skus as f64);
}

/// Bucket bounds (seconds) of every `*_seconds` histogram: lock waits on this machine
/// range from one etcd commit (~1 ms) to a lock timeout (10 s).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed as the global `metrics` recorder on
/// first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
        }
        handle
    })
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. Other paths answer 404.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let handle = prometheus();
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics listener: accept failed");
                        continue;
                    }
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|request| async move {
                        Ok::<_, Infallible>(respond(&request, handle))
                    });
                    let served = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                });
            }
        }
    }
}

fn respond<B>(request: &Request<B>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics is served here\n".to_owned(),
        )
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_owned(),
        )
    } else {
        (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        )
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is well formed")
}
