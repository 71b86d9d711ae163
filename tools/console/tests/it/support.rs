//! Starting a console for a test, and talking to it over plain HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shop_test_support::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a test points its console at.
#[derive(Default)]
pub struct Sources {
    pub etcd_endpoints: Option<String>,
    pub inventory_database_url: Option<String>,
    pub metrics_targets: Vec<String>,
}

/// A console on `127.0.0.1:0` following `prefix`.
pub async fn start_console(prefix: &str, sources: Sources) -> RunningServer {
    let endpoints = sources
        .etcd_endpoints
        .unwrap_or_else(testkit::etcd_endpoints);
    let targets = sources.metrics_targets.join(",");
    let settings = console::Settings::from_lookup(|name| match name {
        "CONSOLE_ADDR" => Some("127.0.0.1:0".into()),
        "ETCD_ENDPOINTS" => Some(endpoints.clone()),
        "ETCD_PREFIX" => Some(prefix.to_owned()),
        "INVENTORY_DATABASE_URL" => sources.inventory_database_url.clone(),
        "METRICS_TARGETS" => Some(targets.clone()),
        // Auth and TLS of the etcd under test, when it has them.
        other if other.starts_with("ETCD_") => std::env::var(other).ok(),
        _ => None,
    })
    .expect("console settings");
    let settings = console::Settings {
        database_interval: Duration::from_millis(300),
        metrics_interval: Duration::from_millis(500),
        ..settings
    };
    let console = console::Console::build(settings)
        .await
        .expect("console binds");
    RunningServer::spawn(console.local_addr(), |stop| console.run_until_stopped(stop))
}

/// A session of its own on the test's etcd (10 s TTL).
pub async fn session() -> coord::Session {
    coord::Session::builder(shop_test_support::etcd_client().await)
        .ttl(10)
        .build()
        .await
        .unwrap()
}

/// An HTTP/1.0 exchange over a bare socket: (status, content type, body).
pub async fn http(addr: SocketAddr, method: &str, target: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the console");
    let request = format!("{method} {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(String::from)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// `GET /api/state` as JSON.
pub async fn state(addr: SocketAddr) -> serde_json::Value {
    let (status, _, body) = http(addr, "GET", "/api/state").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("the state is JSON")
}

/// Polls `check` until it gives `Some`, or panics after `within` naming `what` and the
/// last thing seen.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(seen) if Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The state, once `check` accepts it.
pub async fn state_where(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(what, Duration::from_secs(15), || async {
        let s = state(addr).await;
        if check(&s) {
            Ok(s)
        } else {
            Err(s["model"].to_string())
        }
    })
    .await
}
