//! Traces and metrics of the whole shop (inventory, order, payment in this process).
//!
//! A binary of its own, apart from `tests/api`: the tracing subscriber and the metrics
//! recorder are process-wide, and these tests install them ([`capture_spans`]) before
//! anything else can. They share the Shop harness of the API tests.

#[path = "../payment/helpers.rs"]
mod helpers;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use shop_common::propagation::traced_channel;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::payment_service_client::PaymentServiceClient;
use shop_proto::v1::CustomerTier;
use shop_test_support::{capture_spans, metric_value, scrape_metrics};
use tracing::Instrument;

use crate::helpers::Shop;

fn sku(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// The trace of the order whose `create_order` handler span recorded `order_id`.
fn trace_of_order(spans: &[SpanData], order_id: &str) -> Option<TraceId> {
    spans
        .iter()
        .find(|s| {
            s.name == "create_order"
                && attribute(s, "order_id").map(|v| v.as_str().into_owned())
                    == Some(order_id.to_owned())
        })
        .map(|s| s.span_context.trace_id())
}

/// (span name, kind) of every span in `trace`.
fn names_in(spans: &[SpanData], trace: TraceId) -> BTreeSet<(String, String)> {
    spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .map(|s| (s.name.to_string(), format!("{:?}", s.span_kind)))
        .collect()
}

#[tokio::test]
async fn one_paid_order_is_one_trace_across_order_inventory_the_queue_and_payment() {
    let exporter = capture_spans();
    let shop = Shop::spawn(|_| {}, true).await;
    let tea = sku("tea");
    shop.set_stock_as(&tea, 3, Some(shop_common::domain::Strategy::Mutex))
        .await;
    let order = shop
        .buy_with(
            pb::Strategy::Mutex,
            "trace-1",
            "alice",
            CustomerTier::Gold,
            &tea,
            1,
        )
        .await;
    let paid = shop.settled(&order.order_id).await;
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32, "{paid:?}");

    // The ack is the delivery's last step, after PaymentResult answered: wait for it
    // (bounded) rather than assume it happened.
    let expected: Vec<(&str, SpanKind)> = vec![
        ("shop.v1.OrderService/CreateOrder", SpanKind::Server),
        ("create_order", SpanKind::Internal),
        ("shop.v1.InventoryService/Reserve", SpanKind::Client),
        ("shop.v1.InventoryService/Reserve", SpanKind::Server),
        ("reserve", SpanKind::Internal),
        ("coord.mutex.lock", SpanKind::Internal),
        ("coord.queue.enqueue", SpanKind::Internal),
        ("payment.deliver", SpanKind::Internal),
        ("shop.v1.OrderService/PaymentResult", SpanKind::Client),
        ("shop.v1.OrderService/PaymentResult", SpanKind::Server),
        ("payment_result", SpanKind::Internal),
        ("shop.v1.InventoryService/Commit", SpanKind::Client),
        ("shop.v1.InventoryService/Commit", SpanKind::Server),
        ("coord.queue.ack", SpanKind::Internal),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (spans, trace, missing, present) = loop {
        let spans = exporter.get_finished_spans().expect("finished spans");
        let trace = trace_of_order(&spans, &order.order_id);
        let present = trace.map(|t| names_in(&spans, t)).unwrap_or_default();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(name, kind)| !present.contains(&(name.to_string(), format!("{kind:?}"))))
            .cloned()
            .collect();
        if (trace.is_some() && missing.is_empty()) || tokio::time::Instant::now() > deadline {
            break (spans, trace, missing, present);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let trace = trace.expect("the create_order span carries the order id");
    assert!(
        missing.is_empty(),
        "spans missing from the order's trace: {missing:?}; present: {present:?}"
    );

    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    // Code from each of the three services ran inside this one trace.
    let modules: BTreeSet<String> = in_trace
        .iter()
        .filter_map(|s| attribute(s, "code.module.name"))
        .map(|v| v.as_str().split("::").next().unwrap_or_default().to_owned())
        .collect();
    for service in [
        "order_service",
        "inventory_service",
        "payment_service",
        "coord",
    ] {
        assert!(
            modules.contains(service),
            "no {service} span in the trace: {modules:?}"
        );
    }
    // The queue hop: the worker's delivery hangs off the order's trace, not a new one,
    // and it is a child of a span the order service opened.
    let by_id: HashMap<_, _> = in_trace
        .iter()
        .map(|s| (s.span_context.span_id(), *s))
        .collect();
    let deliver = in_trace
        .iter()
        .find(|s| s.name == "payment.deliver")
        .unwrap();
    let parent = by_id
        .get(&deliver.parent_span_id)
        .expect("payment.deliver's parent is in the same trace");
    assert_eq!(
        parent.name, "create_order",
        "the item carried CreateOrder's context"
    );
    // Server spans continue their caller's client span.
    for server in in_trace
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server && s.name != "shop.v1.OrderService/CreateOrder")
    {
        let parent = by_id
            .get(&server.parent_span_id)
            .unwrap_or_else(|| panic!("{} has no parent in the trace", server.name));
        assert_eq!(
            (parent.name.as_ref(), &parent.span_kind),
            (server.name.as_ref(), &SpanKind::Client),
            "server span's parent is the matching client span"
        );
    }
    shop.stop().await;
}

#[tokio::test]
async fn the_metrics_endpoint_reports_lock_waits_reservations_queue_depth_and_leaders() {
    capture_spans();
    // The process's recorder, installed before the services start (as each service's
    // own process does when it builds): the order service's leadership gauge is set
    // once, when it is elected.
    shop_common::metrics::prometheus();
    // No workers: the requests stay queued, so the depth the sampler reports is exact.
    let shop = Shop::spawn(
        |s| {
            s.workers = 0;
            s.common.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
            s.common.jobs.interval = Duration::from_millis(100);
        },
        true,
    )
    .await;
    let metrics = shop.payment_metrics.expect("payment serves /metrics");
    let tea = sku("tea");
    shop.set_stock_as(&tea, 10, Some(shop_common::domain::Strategy::Mutex))
        .await;
    for i in 0..4 {
        let order = shop
            .buy_with(
                pb::Strategy::Mutex,
                &format!("metrics-{i}"),
                &format!("c{i}"),
                CustomerTier::Standard,
                &tea,
                1,
            )
            .await;
        assert_eq!(order.status, pb::OrderStatus::Reserved as i32, "{order:?}");
    }
    let queue = format!("{}/queues/payments/", shop.etcd_prefix);
    let election = format!("{}/elections/order/expire-reservations", shop.etcd_prefix);

    // Gauges are sampled in the background: scrape until they show this test's state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape_metrics(metrics).await;
        let depth = metric_value(&text, "coord_queue_depth", &[("queue", &queue)]);
        let leader = metric_value(&text, "coord_leader", &[("election", &election)]);
        if (depth == Some(4.0) && leader == Some(1.0)) || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        metric_value(&text, "coord_queue_depth", &[("queue", &queue)]),
        Some(4.0),
        "four payment requests wait in the queue"
    );
    assert_eq!(
        metric_value(&text, "coord_queue_in_flight", &[("queue", &queue)]),
        Some(0.0)
    );
    let oldest = metric_value(
        &text,
        "coord_queue_oldest_item_age_seconds",
        &[("queue", &queue)],
    )
    .expect("oldest item age");
    assert!(oldest > 0.0, "the oldest request has waited: {oldest}");
    assert_eq!(
        metric_value(&text, "coord_leader", &[("election", &election)]),
        Some(1.0),
        "the order service leads its expiry job"
    );
    // Counters and histograms are process-wide (other tests add to them): at least ours.
    let waits = metric_value(
        &text,
        "coord_lock_wait_seconds_count",
        &[("primitive", "mutex")],
    )
    .expect("mutex lock waits are measured");
    assert!(
        waits >= 4.0,
        "one lock wait per mutex order at least: {waits}"
    );
    let holds = metric_value(
        &text,
        "coord_lock_hold_seconds_count",
        &[("primitive", "mutex")],
    )
    .expect("mutex lock holds are measured");
    assert!(holds >= 4.0, "{holds}");
    assert!(
        text.contains("coord_lock_wait_seconds_bucket{primitive=\"mutex\",le=\"0.001\"}"),
        "lock waits are a histogram with buckets"
    );
    let reserved = metric_value(
        &text,
        "shop_reservations_total",
        &[("strategy", "mutex"), ("outcome", "reserved")],
    )
    .expect("reservations are counted");
    assert!(reserved >= 4.0, "{reserved}");
    assert!(
        metric_value(&text, "coord_queue_enqueued_total", &[("queue", &queue)]) == Some(4.0),
        "each order enqueued once"
    );
    shop.stop().await;
}

/// Whether a span ended as an error, and its `rpc.grpc.status_code`.
type Outcome = (bool, Option<i64>);

fn outcome(span: &SpanData) -> Outcome {
    let code = match attribute(span, "rpc.grpc.status_code") {
        Some(Value::I64(code)) => Some(*code),
        _ => None,
    };
    (matches!(span.status, Status::Error { .. }), code)
}

#[tokio::test]
async fn failed_calls_mark_their_client_and_server_spans_as_errors() {
    let exporter = capture_spans();
    let shop = Shop::spawn(|_| {}, false).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 1).await;
    let channel = |uri: &str| {
        traced_channel(uri, Duration::from_secs(2), Duration::from_secs(10)).expect("channel")
    };
    let mut inventory = InventoryServiceClient::new(channel(&shop.inventory().uri()));
    // A PaymentService client aimed at the inventory server: a method it lacks.
    let mut not_payment = PaymentServiceClient::new(channel(&shop.inventory().uri()));
    // Port 1 on loopback: nobody listens.
    let mut nobody = InventoryServiceClient::new(channel("http://127.0.0.1:1"));

    let test = tracing::info_span!("failing_calls", run = %tea);
    let (found, missing, unimplemented, unreachable) = async {
        let found = inventory
            .get_stock(pb::GetStockRequest { sku: tea.clone() })
            .await
            .map(|_| ());
        let missing = inventory
            .get_stock(pb::GetStockRequest {
                sku: sku("unknown"),
            })
            .await
            .map(|_| ());
        let unimplemented = not_payment
            .queue_depth(pb::QueueDepthRequest {})
            .await
            .map(|_| ());
        let unreachable = nobody
            .get_stock(pb::GetStockRequest { sku: tea.clone() })
            .await
            .map(|_| ());
        (found, missing, unimplemented, unreachable)
    }
    .instrument(test.clone())
    .await;
    drop(test);
    let trace = exporter
        .get_finished_spans()
        .expect("finished spans")
        .iter()
        .find(|s| {
            s.name == "failing_calls"
                && attribute(s, "run").map(|v| v.as_str().into_owned()) == Some(tea.clone())
        })
        .map(|s| s.span_context.trace_id())
        .expect("the test's own span");
    found.expect("GetStock of a SKU with stock");
    let code = |result: Result<(), tonic::Status>| result.unwrap_err().code() as i64;
    let (missing, unimplemented, unreachable) =
        (code(missing), code(unimplemented), code(unreachable));
    assert_eq!(missing, tonic::Code::NotFound as i64);
    assert_eq!(unimplemented, tonic::Code::Unimplemented as i64);
    assert_eq!(unreachable, tonic::Code::Unavailable as i64);

    // (name, kind) → outcomes, in the order the spans started.
    let expected: Vec<(&str, SpanKind, Vec<Outcome>)> = vec![
        (
            "shop.v1.InventoryService/GetStock",
            SpanKind::Client,
            // found; unknown SKU (the caller's error) and nobody listening: errors
            vec![
                (false, Some(0)),
                (true, Some(missing)),
                (true, Some(unreachable)),
            ],
        ),
        (
            "shop.v1.InventoryService/GetStock",
            SpanKind::Server,
            // NOT_FOUND is recorded but is not the server's error
            vec![(false, Some(0)), (false, Some(missing))],
        ),
        (
            "shop.v1.PaymentService/QueueDepth",
            SpanKind::Client,
            vec![(true, Some(unimplemented))],
        ),
        (
            "shop.v1.PaymentService/QueueDepth",
            SpanKind::Server,
            // UNIMPLEMENTED is the server's failure
            vec![(true, Some(unimplemented))],
        ),
    ];
    // Server spans end when their response is sent, possibly just after the client
    // saw it: wait (bounded) for all of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let outcomes = loop {
        let mut spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .expect("finished spans")
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect();
        spans.sort_by_key(|s| s.start_time);
        let outcomes: Vec<_> = expected
            .iter()
            .map(|(name, kind, _)| {
                spans
                    .iter()
                    .filter(|s| s.name == *name && s.span_kind == *kind)
                    .map(outcome)
                    .collect::<Vec<_>>()
            })
            .collect();
        let complete = outcomes
            .iter()
            .zip(&expected)
            .all(|(got, (_, _, want))| got.len() >= want.len());
        if complete || tokio::time::Instant::now() > deadline {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (got, (name, kind, want)) in outcomes.iter().zip(&expected) {
        assert_eq!(
            got, want,
            "{name} {kind:?}: (is error, rpc.grpc.status_code)"
        );
    }
    // The error carries the status message as its description.
    let spans = exporter.get_finished_spans().unwrap();
    let not_found = spans
        .iter()
        .find(|s| {
            s.span_context.trace_id() == trace
                && s.span_kind == SpanKind::Client
                && attribute(s, "rpc.grpc.status_code") == Some(&Value::I64(missing))
        })
        .unwrap();
    match &not_found.status {
        Status::Error { description } => assert!(
            description.contains("unknown SKU"),
            "the description is the status message: {description}"
        ),
        other => panic!("{other:?}"),
    }
    shop.stop().await;
}
