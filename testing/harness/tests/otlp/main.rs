//! Traces leave the services over OTLP/gRPC: a collector inside this test (the OTLP
//! `TraceService`, from `opentelemetry-proto`) receives what order, inventory and
//! payment export through their own telemetry init.
//!
//! Each service runs as a process of its own — this test binary started again with
//! `SHOP_SERVICE_PROCESS=<service>` — set up from its environment exactly as its `main`
//! does: `Settings::from_env`, `init_telemetry`, `Application::build`,
//! `run_until_stopped`, and the flush when it stops (its standard input closing stands
//! in for SIGTERM). Separate processes because the tracer provider, and with it the
//! resource naming the service, is process-wide; the in-process shop of
//! `tests/observability` shares one.

#[path = "../payment/helpers.rs"]
mod helpers;

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_test_support::{etcd_endpoints, init_test_logging, unique_etcd_prefix, TestDatabase};
use tonic::transport::server::TcpIncoming;

use crate::helpers::{create_order, settled};

/// Set in a service process: which service it runs.
const SERVICE_PROCESS: &str = "SHOP_SERVICE_PROCESS";
/// A service process prints this, then its gRPC address, once it is bound.
const LISTENING: &str = "service process listening on ";
/// The test below; a service process runs only it.
const TEST: &str = "one_paid_order_reaches_an_otlp_collector_as_one_trace_from_three_processes";

/// An OTLP/gRPC trace receiver on loopback that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

/// One span as the collector got it, with the attributes of the resource it came
/// under.
#[derive(Clone)]
struct Received {
    resource: HashMap<String, any_value::Value>,
    span: Span,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for batch in request.into_inner().resource_spans {
            let resource = batch
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for span in batch.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    resource: resource.clone(),
                    span,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on `127.0.0.1:<free port>` until the test ends; returns the endpoint for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    fn start(&self) -> String {
        let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = incoming.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        format!("http://{addr}")
    }

    fn received(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, any_value::Value> {
    list.iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

fn string<'a>(attrs: &'a HashMap<String, any_value::Value>, key: &str) -> Option<&'a str> {
    match attrs.get(key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

impl Received {
    fn service(&self) -> &str {
        string(&self.resource, "service.name").unwrap_or_default()
    }

    fn attribute(&self, key: &str) -> Option<any_value::Value> {
        attributes(&self.span.attributes).remove(key)
    }

    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    /// (service, span name, kind): what the assertions look for.
    fn key(&self) -> (String, String, SpanKind) {
        (
            self.service().to_owned(),
            self.span.name.clone(),
            self.kind(),
        )
    }
}

/// A service running as a child process of the test.
struct ServiceProcess {
    service: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl ServiceProcess {
    /// Starts `service` with `vars` added to this process's environment and waits
    /// (bounded) until it listens. Its output goes to the test's output, prefixed.
    async fn start(service: &'static str, vars: &[(&str, String)]) -> ServiceProcess {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(SERVICE_PROCESS, service)
            // Only what this test sets decides where spans go and what they are.
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {service} process: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, mut listening) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix(LISTENING) {
                    let _ = found.send(addr.to_owned());
                }
                println!("[{service}] {line}");
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), listening.recv())
            .await
            .unwrap_or_else(|_| panic!("{service} did not start listening within 60 s"))
            .unwrap_or_else(|| panic!("{service} exited before listening"));
        ServiceProcess {
            service,
            child,
            addr: addr.parse().expect("a socket address"),
        }
    }

    fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes its standard input (its shutdown signal) and waits for it to stop, which
    /// includes flushing its spans to the collector.
    async fn stop(mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        let service = self.service;
        let mut child = self.child;
        let exited = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(Duration::from_secs(60), exited)
            .await
            .unwrap_or_else(|_| panic!("{service} did not stop within 60 s"))
            .expect("wait task")
            .expect("wait for the process")
    }
}

/// In a service process: serves `service` the way its `main` does, until standard
/// input closes.
async fn serve_as_process(service: &str) {
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let shutdown = async move {
        let _ = stdin_closed.await;
    };
    macro_rules! serve {
        ($service:ident) => {{
            let settings = $service::Settings::from_env().expect("settings from the environment");
            let telemetry = shop_common::init_telemetry(&settings.common, $service::VERSION);
            assert!(
                telemetry.is_exporting(),
                "OTEL_EXPORTER_OTLP_ENDPOINT is set"
            );
            telemetry
                .flush_after(async {
                    let app = $service::Application::build(settings).await?;
                    println!("{LISTENING}{}", app.local_addr());
                    app.run_until_stopped(shutdown).await
                })
                .await
        }};
    }
    let served = match service {
        "order" => serve!(order_service),
        "inventory" => serve!(inventory_service),
        "payment" => serve!(payment_service),
        other => panic!("{SERVICE_PROCESS}={other:?} is not a service"),
    };
    served.unwrap_or_else(|e| panic!("{service} failed: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_paid_order_reaches_an_otlp_collector_as_one_trace_from_three_processes() {
    if let Ok(service) = std::env::var(SERVICE_PROCESS) {
        return serve_as_process(&service).await;
    }
    init_test_logging();
    let collector = Collector::default();
    let endpoint = collector.start();
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let etcd_prefix = unique_etcd_prefix("otlp");
    let inventory_db = TestDatabase::create("otlp_inventory").await;
    let order_db = TestDatabase::create("otlp_order").await;
    let payment_db = TestDatabase::create("otlp_payment").await;
    let replica = |service: &str| format!("{service}-otlp-{run}");
    // The deployed services need the internal token from a file, as in compose.
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let token = shop_common::auth::InternalToken::new(&secret).unwrap();
    let token_file = std::env::temp_dir().join(format!("otlp-internal-token-{run}"));
    std::fs::write(&token_file, format!("{secret}\n")).expect("write the token file");
    let common = |service: &str, db: &TestDatabase| {
        vec![
            ("INTERNAL_TOKEN_FILE", token_file.display().to_string()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("REPLICA_ID", replica(service)),
            ("DATABASE_URL", db.url()),
            ("ETCD_ENDPOINTS", etcd_endpoints()),
            ("ETCD_PREFIX", etcd_prefix.clone()),
            ("GRPC_ADDR", "127.0.0.1:0".to_owned()),
            ("METRICS_ADDR", "off".to_owned()),
        ]
    };

    let inventory = ServiceProcess::start("inventory", &common("inventory", &inventory_db)).await;
    let mut order_vars = common("order", &order_db);
    order_vars.push(("INVENTORY_ADDR", inventory.uri()));
    let order = ServiceProcess::start("order", &order_vars).await;
    let mut payment_vars = common("payment", &payment_db);
    payment_vars.push(("ORDER_ADDR", order.uri()));
    payment_vars.push(("PROVIDER_LATENCY_MS", "5".to_owned()));
    let payment = ServiceProcess::start("payment", &payment_vars).await;

    let tea = format!("tea-{run}");
    let stock = tonic::transport::Channel::from_shared(inventory.uri())
        .unwrap()
        .connect()
        .await
        .unwrap();
    InventoryServiceClient::with_interceptor(stock, token.interceptor())
        .set_stock(pb::SetStockRequest {
            sku: tea.clone(),
            available: 3,
            strategy: pb::Strategy::Mutex as i32,
        })
        .await
        .expect("the operator stocks with the token");
    let _ = std::fs::remove_file(&token_file);
    let orders = OrderServiceClient::connect(order.uri()).await.unwrap();
    let key = format!("otlp-{run}");
    let created = create_order(
        &orders,
        pb::Strategy::Mutex,
        &key,
        "alice",
        pb::CustomerTier::Gold,
        &tea,
        1,
    )
    .await;
    let paid = settled(&orders, &created.order_id).await;
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32, "{paid:?}");

    // Stopping flushes: once a process has exited, its spans are at the collector.
    for process in [payment, order, inventory] {
        let service = process.service;
        let status = process.stop().await;
        assert!(status.success(), "{service} exited with {status}");
    }
    let received = collector.received();

    // Every span came with its process's resource: name, version and replica.
    let versions = HashMap::from([
        ("order", order_service::VERSION),
        ("inventory", inventory_service::VERSION),
        ("payment", payment_service::VERSION),
    ]);
    let services: BTreeSet<&str> = received.iter().map(Received::service).collect();
    assert_eq!(
        services,
        BTreeSet::from(["inventory", "order", "payment"]),
        "each process exported under its service.name"
    );
    for span in &received {
        let service = span.service();
        assert_eq!(
            string(&span.resource, "service.instance.id"),
            Some(replica(service).as_str()),
            "{service}'s REPLICA_ID is its service.instance.id"
        );
        assert_eq!(
            string(&span.resource, "service.version"),
            Some(versions[service]),
            "{service}'s version"
        );
    }

    // The order's trace: the one its create_order span is in.
    let create_order = received
        .iter()
        .find(|s| {
            s.service() == "order"
                && s.span.name == "create_order"
                && s.attribute("order_id")
                    == Some(any_value::Value::StringValue(created.order_id.clone()))
        })
        .expect("order exported the create_order span of the order");
    let trace: Vec<&Received> = received
        .iter()
        .filter(|s| s.span.trace_id == create_order.span.trace_id)
        .collect();
    let present: BTreeSet<_> = trace.iter().map(|s| s.key()).collect();
    let expected = [
        (
            "order",
            "shop.v1.OrderService/CreateOrder",
            SpanKind::Server,
        ),
        ("order", "create_order", SpanKind::Internal),
        (
            "order",
            "shop.v1.InventoryService/Reserve",
            SpanKind::Client,
        ),
        (
            "inventory",
            "shop.v1.InventoryService/Reserve",
            SpanKind::Server,
        ),
        ("inventory", "reserve", SpanKind::Internal),
        ("inventory", "coord.mutex.lock", SpanKind::Internal),
        ("order", "coord.queue.enqueue", SpanKind::Internal),
        ("payment", "payment.deliver", SpanKind::Internal),
        (
            "payment",
            "shop.v1.OrderService/PaymentResult",
            SpanKind::Client,
        ),
        (
            "order",
            "shop.v1.OrderService/PaymentResult",
            SpanKind::Server,
        ),
        ("order", "payment_result", SpanKind::Internal),
        ("order", "shop.v1.InventoryService/Commit", SpanKind::Client),
        (
            "inventory",
            "shop.v1.InventoryService/Commit",
            SpanKind::Server,
        ),
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|(service, name, kind)| {
            !present.contains(&(service.to_string(), name.to_string(), *kind))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing from the order's trace at the collector: {missing:?}; present: {present:?}"
    );

    let by_id: HashMap<&[u8], &Received> = trace
        .iter()
        .map(|s| (s.span.span_id.as_slice(), *s))
        .collect();
    // The queue hop: the payment process's delivery is a child of the order process's
    // create_order, whose context travelled inside the queue item in etcd.
    let deliver = trace
        .iter()
        .find(|s| s.span.name == "payment.deliver")
        .unwrap();
    assert_eq!(
        deliver.span.parent_span_id, create_order.span.span_id,
        "payment.deliver continues create_order"
    );
    // Every call between processes: the server span's parent is the caller's client
    // span, exported by the other process.
    for server in trace.iter().filter(|s| {
        s.kind() == SpanKind::Server && s.span.name != "shop.v1.OrderService/CreateOrder"
    }) {
        let client = by_id
            .get(server.span.parent_span_id.as_slice())
            .unwrap_or_else(|| panic!("{} has no parent at the collector", server.span.name));
        assert_eq!(
            (client.span.name.as_str(), client.kind()),
            (server.span.name.as_str(), SpanKind::Client),
            "a server span continues the matching client span"
        );
        assert_ne!(client.service(), server.service(), "{}", server.span.name);
    }
    // Every call of the order succeeded: status code 0, no error status.
    for call in trace
        .iter()
        .filter(|s| s.attribute("rpc.system") == Some(any_value::Value::StringValue("grpc".into())))
    {
        assert_eq!(
            call.attribute("rpc.grpc.status_code"),
            Some(any_value::Value::IntValue(0)),
            "{:?}",
            call.key()
        );
        let status = call.span.status.clone().unwrap_or_default();
        assert_ne!(status.code, StatusCode::Error as i32, "{:?}", call.key());
    }
}
