//! Test harness shared by the services' integration tests (feature `test-harness`).
//!
//! - [`TestDatabase::create`]: a fresh, empty database per test (random name) on the
//!   Postgres at `DATABASE_URL` (CI: `scripts/postgres.sh start`), or — when it is
//!   unset — in a Postgres container started with testcontainers (crate `testkit`),
//!   dropped again when the test ends;
//! - etcd likewise: `ETCD_ENDPOINTS`, else an etcd container;
//! - [`unique_etcd_prefix`]: an etcd key prefix no other test uses;
//! - [`test_settings`]: settings for a service on `127.0.0.1:0` with both of those;
//! - [`RunningServer`]: a service running in the test's runtime, stopped through a
//!   oneshot (the same shutdown path SIGTERM takes in `main`);
//! - [`capture_spans`]: every span the process finishes, kept in memory, for tests of
//!   the traces themselves;
//! - [`scrape_metrics`]: `GET /metrics` of a running service, over HTTP.
//! - [`properties`]: generators of adversarial requests and the checks of the
//!   bad-input property tests (with `proptest`, re-exported here).

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::OnceLock;

use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{CommonSettings, DatabaseSettings, ServiceName};

pub mod properties;
use crate::db::quote_ident;
pub use proptest;

/// The Postgres server tests use: `DATABASE_URL`, or a testcontainers Postgres.
pub fn server_options() -> PgConnectOptions {
    let url = testkit::database_url();
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL={url:?} is not a Postgres URL: {e}"))
}

/// Logs to the test output when `RUST_LOG` is set (`RUST_LOG=debug cargo test ...`).
pub fn init_test_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

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
            // Without the `log` bridge, like the services (see `crate::telemetry`).
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry()
                    .with(crate::telemetry::trace_layer("shop-test", &provider))
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

/// A database that exists for one test.
pub struct TestDatabase {
    name: String,
    options: PgConnectOptions,
}

impl TestDatabase {
    /// Creates `test_<label>_<random>` (empty; the service under test migrates it).
    #[track_caller]
    pub fn create(label: &str) -> impl Future<Output = TestDatabase> {
        let caller = std::panic::Location::caller();
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        async move {
            let name = format!("test_{label}_{:016x}", rand::random::<u64>());
            let server = server_options();
            let mut admin = server.clone().connect().await.unwrap_or_else(|e| {
                panic!(
                    "{caller}: cannot reach Postgres at {}:{} (start one with scripts/postgres.sh start, or set DATABASE_URL): {e}",
                    server.get_host(),
                    server.get_port()
                )
            });
            sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{caller}: CREATE DATABASE {name}: {e}"));
            let _ = admin.close().await;
            TestDatabase {
                options: server.database(&name),
                name,
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database as a `DATABASE_URL`, for a service started as its own process.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// Settings for a service pool on this database.
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            options: self.options.clone(),
            max_connections: 10,
            acquire_timeout: std::time::Duration::from_secs(10),
        }
    }

    /// A direct connection pool, for a test to read the truth behind the API.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.options.clone())
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    /// Drops the database (terminating whatever still uses it). Done on a helper thread
    /// with its own runtime, since `Drop` cannot await; best effort.
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), server_options());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = server.connect().await.ok()?;
                sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&name)
                ))
                .execute(&mut admin)
                .await
                .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}

/// The etcd endpoints tests use: `ETCD_ENDPOINTS`, or a testcontainers etcd.
pub fn etcd_endpoints() -> String {
    testkit::etcd_endpoints()
}

/// An etcd key prefix no other test uses: `/shop-test/<label>/<random>`.
pub fn unique_etcd_prefix(label: &str) -> String {
    format!("/shop-test/{label}/{:016x}", rand::random::<u64>())
}

/// Settings for `service` listening on `127.0.0.1:0`, using `db` and the etcd at
/// `ETCD_ENDPOINTS` (else a testcontainers etcd) under `etcd_prefix`.
pub fn test_settings(service: ServiceName, db: &TestDatabase, etcd_prefix: &str) -> CommonSettings {
    let mut settings = CommonSettings::from_lookup(service, |name| match name {
        "ETCD_ENDPOINTS" => Some(etcd_endpoints()),
        // Auth and TLS of the etcd under test, when it has them.
        "ETCD_USERNAME"
        | "ETCD_PASSWORD"
        | "ETCD_PASSWORD_FILE"
        | "ETCD_CA_FILE"
        | "ETCD_CERT_FILE"
        | "ETCD_KEY_FILE"
        | "ETCD_TLS_SERVER_NAME" => std::env::var(name).ok(),
        _ => None,
    })
    .expect("test settings");
    settings.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    // Off, so parallel tests do not fight over the default port; a test that wants it
    // sets `127.0.0.1:0`.
    settings.metrics_addr = None;
    settings.database = db.settings();
    settings.etcd.prefix = etcd_prefix.to_owned();
    settings
}

/// A server running inside the test, stopped by [`RunningServer::stop`] (or when
/// dropped).
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    /// Spawns `run(shutdown)` where `shutdown` resolves when the test stops the
    /// server. `addr` is the address the server is bound to.
    pub fn spawn<F, Fut>(addr: SocketAddr, run: F) -> RunningServer
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(shutdown));
        RunningServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for clients.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server gracefully and returns how its run ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP forwarder a test can cut, to simulate an outage of the server behind it
/// (Postgres, etcd, a peer service) without stopping that server for other tests.
/// While cut, every open connection is closed and new ones are accepted and closed at
/// once, which is what a client sees of a crashed or partitioned server.
pub struct TcpProxy {
    addr: SocketAddr,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = std::sync::Arc::new(tokio::sync::watch::Sender::new(true));
        let task = tokio::spawn({
            let up = up.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !*up.borrow() {
                        continue; // dropped: closed at once
                    }
                    let mut cut = up.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.wait_for(|up| !*up) => {}
                        }
                    });
                }
            }
        });
        TcpProxy { addr, up, task }
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every forwarded connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// One row of a bad-input table: the case's name, the call's result (see
/// [`only_status`]), the code it must fail with, and text its message must contain.
pub type Rejection = (
    &'static str,
    Result<(), tonic::Status>,
    tonic::Code,
    &'static str,
);

/// Keeps only whether a call failed, so calls of different RPCs fit in one table.
pub fn only_status<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<(), tonic::Status> {
    result.map(|_| ())
}

/// Asserts that every call of the table failed with its code and message.
#[track_caller]
pub fn assert_rejections(cases: Vec<Rejection>) {
    for (case, result, code, text) in cases {
        let err = match result {
            Ok(()) => panic!("{case}: succeeded, expected {code:?}"),
            Err(err) => err,
        };
        assert_eq!(err.code(), code, "{case}: {err:?}");
        assert!(
            err.message().contains(text),
            "{case}: {:?} should mention {text:?}",
            err.message()
        );
    }
}

/// A client of the test's etcd (no session), for a test to look at or break keys.
pub async fn etcd_client() -> coord::etcd_client::Client {
    coord::EtcdConfig::new(&etcd_endpoints())
        .expect("ETCD_ENDPOINTS")
        .connect()
        .await
        .expect("connect to etcd")
}

/// Who `ListLeaders` of `service` at `server` says leads `job` (its proclaimed value;
/// empty when nobody leads).
pub async fn listed_holder(service: ServiceName, server: &RunningServer, job: &str) -> String {
    use shop_proto::v1::inventory_service_client::InventoryServiceClient;
    use shop_proto::v1::order_service_client::OrderServiceClient;
    use shop_proto::v1::payment_service_client::PaymentServiceClient;
    use shop_proto::v1::ListLeadersRequest;
    let request = ListLeadersRequest {};
    let uri = server.uri();
    let listed = match service {
        ServiceName::Order => {
            OrderServiceClient::connect(uri)
                .await
                .expect("connect")
                .list_leaders(request)
                .await
        }
        ServiceName::Inventory => {
            InventoryServiceClient::connect(uri)
                .await
                .expect("connect")
                .list_leaders(request)
                .await
        }
        ServiceName::Payment => {
            PaymentServiceClient::connect(uri)
                .await
                .expect("connect")
                .list_leaders(request)
                .await
        }
    };
    listed
        .expect("ListLeaders")
        .into_inner()
        .leaders
        .into_iter()
        .find(|leader| leader.job == job)
        .map(|leader| leader.holder)
        .unwrap_or_default()
}

/// Polls `server`'s `ListLeaders` until `replica` leads `job`; panics after `limit`.
pub async fn wait_until_leading(
    service: ServiceName,
    server: &RunningServer,
    job: &str,
    replica: &str,
    limit: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let holder = listed_holder(service, server, job).await;
        if holder.contains(replica) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{replica} did not lead {job} within {limit:?}; the leader is {holder:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Replicas campaigning for `job` (leader included): the keys under its election.
pub async fn job_candidates(service: ServiceName, etcd_prefix: &str, job: &str) -> usize {
    let election = crate::jobs::election_name(etcd_prefix, service, job);
    let keys = etcd_client()
        .await
        .get(
            format!("{election}/"),
            Some(
                coord::etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("read the election");
    keys.kvs().len()
}

/// Makes the leader of `job` "crash": its lease is revoked, which is what etcd does
/// when a dead process's lease runs out — its election key goes, it never resigns.
pub async fn crash_leader(service: ServiceName, etcd_prefix: &str, job: &str) {
    let client = etcd_client().await;
    let election = crate::jobs::election_name(etcd_prefix, service, job);
    let leader = coord::Election::observer(client.clone(), &election)
        .expect("election name")
        .leader()
        .await
        .expect("someone leads");
    client
        .clone()
        .lease_revoke(leader.lease)
        .await
        .expect("revoke the leader's lease");
}

/// The failover contract of a leader-elected job, checked on two replicas started by
/// `start(name)` (each with an `ETCD_SESSION_TTL` of `session_ttl`):
/// 1. exactly one of them leads `job`, and both say so (one leader, two candidates);
/// 2. the leader crashes (lease gone, no resignation): the other leads within
///    `session_ttl` + 1 s, and the crashed one campaigns again with a new session;
/// 3. the new leader shuts down gracefully (resigns): the other leads within 1 s.
pub async fn check_leader_failover<F, Fut>(
    service: ServiceName,
    etcd_prefix: &str,
    job: &str,
    session_ttl: std::time::Duration,
    start: F,
) where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = RunningServer>,
{
    use std::time::Duration;
    let replicas = [
        ("replica-a", start("replica-a").await),
        ("replica-b", start("replica-b").await),
    ];
    // 1. One leader: wait for a leader and for the other replica's candidacy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let holder = listed_holder(service, &replicas[0].1, job).await;
        let candidates = job_candidates(service, etcd_prefix, job).await;
        if let Some(index) = replicas.iter().position(|(name, _)| holder.contains(name)) {
            if candidates == 2 {
                break index;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader of {job} among two campaigning replicas: holder {holder:?}, {candidates} candidates"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (leader_name, other) = (replicas[leader].0, 1 - leader);
    let seen_by_other = listed_holder(service, &replicas[other].1, job).await;
    assert!(
        seen_by_other.contains(leader_name),
        "both replicas name one leader: {leader_name} vs {seen_by_other:?}"
    );
    // 2. The leader crashes: the other takes over within the TTL + 1 s.
    crash_leader(service, etcd_prefix, job).await;
    wait_until_leading(
        service,
        &replicas[other].1,
        job,
        replicas[other].0,
        session_ttl + Duration::from_secs(1),
    )
    .await;
    // The crashed replica's process lives on and campaigns again (new session).
    let deadline = tokio::time::Instant::now() + session_ttl + Duration::from_secs(5);
    while job_candidates(service, etcd_prefix, job).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{leader_name} did not campaign again after its lease was lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 3. The new leader shuts down gracefully: it resigns, the first leads within 1 s.
    let [first, second] = replicas;
    let ((survivor_name, survivor), (_, stopping)) = if leader == 0 {
        (first, second)
    } else {
        (second, first)
    };
    stopping.stop().await.expect("the replica stopped cleanly");
    wait_until_leading(
        service,
        &survivor,
        job,
        survivor_name,
        Duration::from_secs(1),
    )
    .await;
    survivor.stop().await.expect("the replica stopped cleanly");
}
