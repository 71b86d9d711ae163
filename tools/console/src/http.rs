//! The console's HTTP side: the page and its two files (embedded in the binary), the
//! state as JSON, and the live stream as server-sent events.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /app.js`, `GET /app.css` | its script and style |
//! | `GET /api/state` | everything the page draws, as JSON |
//! | `GET /api/events?primitive=P` | server-sent events: `snapshot` (the whole state) and `watch` (each etcd event; only primitive `P`'s when given) |
//! | `GET /api/events/recent?primitive=P&limit=N` | the last `N` (1–1000, default 100) watch events, as JSON |
//! | `GET /healthz` | `ok` |
//!
//! Anything else is a 404, another method a 405, and a query parameter the route does
//! not know, given twice or with a bad value a 400 — each with a sentence saying why.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::model::Primitive;
use crate::state::{Hub, KEEP_EVENTS};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

type Body = BoxBody<Bytes, Infallible>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()).boxed())
        .expect("a response from constants is well formed")
}

fn refuse(status: StatusCode, why: String) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", format!("{why}\n"))
}

/// A query string as (name, value) pairs, refusing names outside `allowed` and repeats.
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("query parameter {s:?} is not UTF-8 once decoded"))
        };
        let (name, value) = (decode(name)?, decode(value)?);
        if !allowed.contains(&name.as_str()) {
            return Err(if allowed.is_empty() {
                format!("unknown query parameter {name:?}: this route takes none")
            } else {
                format!(
                    "unknown query parameter {name:?}: this route takes {}",
                    allowed.join(", ")
                )
            });
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(format!("query parameter {name:?} is given twice"));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn primitive(pairs: &[(String, String)]) -> Result<Option<Primitive>, String> {
    match param(pairs, "primitive") {
        None | Some("all") => Ok(None),
        Some(name) => Primitive::parse(name).map(Some).ok_or_else(|| {
            let names: Vec<&str> = Primitive::ALL.iter().map(|p| p.as_str()).collect();
            format!("primitive {name:?} is not one of all, {}", names.join(", "))
        }),
    }
}

fn limit(pairs: &[(String, String)]) -> Result<usize, String> {
    match param(pairs, "limit") {
        None => Ok(100),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=KEEP_EVENTS).contains(n))
            .ok_or_else(|| format!("limit {raw:?} is not a whole number from 1 to {KEEP_EVENTS}")),
    }
}

/// Answers one request.
pub fn route<B>(hub: &Arc<Hub>, request: &Request<B>) -> Response<Body> {
    let path = request.uri().path();
    let raw_query = request.uri().query();
    let known = [
        "/",
        "/app.js",
        "/app.css",
        "/api/state",
        "/api/events",
        "/api/events/recent",
        "/healthz",
    ];
    if !known.contains(&path) {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no such page: {path} (the console is at /)"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed: the console only reads (use GET)",
                request.method()
            ),
        );
    }
    let allowed: &[&str] = match path {
        "/api/events" => &["primitive"],
        "/api/events/recent" => &["primitive", "limit"],
        _ => &[],
    };
    let pairs = match query(raw_query, allowed) {
        Ok(pairs) => pairs,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    match path {
        "/" => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX),
        "/app.js" => respond(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/app.css" => respond(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/api/state" => json(&hub.snapshot()),
        "/api/events/recent" => match (primitive(&pairs), limit(&pairs)) {
            (Ok(p), Ok(n)) => json(&hub.recent_events(p, n)),
            (Err(why), _) | (_, Err(why)) => refuse(StatusCode::BAD_REQUEST, why),
        },
        _ => match primitive(&pairs) {
            Ok(p) => events(hub, p),
            Err(why) => refuse(StatusCode::BAD_REQUEST, why),
        },
    }
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("console state serialises");
    respond(StatusCode::OK, "application/json", body)
}

/// The live stream: retry hint, the opening frames, then whatever the hub sends (watch
/// events filtered by `only`), with a comment every 15 s to keep proxies from closing it.
fn events(hub: &Arc<Hub>, only: Option<Primitive>) -> Response<Body> {
    let receiver = hub.subscribe();
    let mut opening = vec![Bytes::from_static(b"retry: 1000\n\n")];
    opening.extend(hub.opening_frames(only));
    let live = futures::stream::unfold(receiver, move |mut receiver| async move {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), receiver.recv()).await;
            match next {
                Err(_) => return Some((Bytes::from_static(b": keep-alive\n\n"), receiver)),
                Ok(Ok(message)) => {
                    if message
                        .primitive
                        .is_none_or(|p| only.is_none_or(|o| o == p))
                    {
                        return Some((message.frame.clone(), receiver));
                    }
                }
                // A slow page missed some events; the next snapshot catches it up.
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => return None,
            }
        }
    });
    let stream = futures::stream::iter(opening)
        .chain(live)
        .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "text/event-stream")
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("a response from constants is well formed")
}

/// Serves the console on `listener` until `shutdown` resolves; open streams are cut then.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "console: accept failed");
                        continue;
                    }
                };
                let hub = hub.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = route(&hub, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let served = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "console connection ended with an error");
                    }
                });
            }
        }
    }
    connections.abort_all();
}
