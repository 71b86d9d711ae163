//! The whole suite from compose.yaml, brought up with testcontainers' docker compose
//! support, driven end to end, and then broken on purpose:
//!
//! 1. 100 concurrent buyers race for 40 units through both order replicas: 0 oversold,
//!    and every accepted order is paid by the payment replicas (order → inventory →
//!    payment queue → payment → order → inventory commit).
//!    Then (1b) a customer (published port, no token) calling PaymentResult, Commit,
//!    Release or SetStock is UNAUTHENTICATED and nothing changes; compose.yaml
//!    publishes no etcd.
//! 2. The inventory replica holding a SKU lock is `docker pause`d past its lease TTL: the
//!    other replica takes the lock and sells; on unpause the stale holder's write is
//!    rejected by its fencing token; nothing is oversold.
//! 3. One etcd member is stopped: orders continue.
//! 4. The order replica that leads the `expire-reservations` job is `docker kill`ed:
//!    the other replica leads within the session TTL + 1 s.
//! 5. `docker compose down` (volumes kept) and `up` again: every order, reservation,
//!    payment and etcd key of the run is still there (the databases and the etcd members
//!    live on named volumes; `down -v` is the reset).
//!
//! One test function runs the scenarios in order against one stack (bringing compose up
//! is the expensive part). Needs Docker, the compose v2 plugin and the images compose.yaml
//! names; offline, `scripts/images.sh all` builds stand-ins first (`.ci/run` does).

use std::time::{Duration, Instant};

use coord::etcd_client::GetOptions;
use e2e::{step, Operator, Stack, TTL};
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::{
    CommitRequest, CreateOrderRequest, GetOrderRequest, GetPaymentRequest, GetStockRequest,
    LineItem, ListLeadersRequest, OrderStatus, PaymentResultRequest, PaymentStatus, ReleaseRequest,
    ReserveOutcome, ReserveRequest, SetStockRequest, Stock, Strategy,
};

const PROJECT: &str = "coord-shop-e2e";

async fn stock(inventory: &mut InventoryServiceClient<Operator>, sku: &str) -> Stock {
    inventory
        .get_stock(GetStockRequest { sku: sku.into() })
        .await
        .expect("GetStock")
        .into_inner()
}

fn one_unit(sku: &str) -> Vec<LineItem> {
    vec![LineItem {
        sku: sku.into(),
        quantity: 1,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_in_compose_survives_kills_pauses_and_member_loss() {
    let started = Instant::now();
    step(
        started,
        "docker compose up (3 etcd, 3 Postgres, 2 replicas per service)",
    );
    let mut stack = Stack::up(PROJECT, &[], &[]).await.expect("compose up");
    step(started, "stack is healthy");

    let sale = flash_sale_through_both_order_replicas(&stack, started).await;
    customers_cannot_reach_internal_calls(&stack, &sale, started).await;
    paused_lock_holder_is_fenced(&mut stack, started).await;
    orders_continue_without_one_etcd_member(&stack, started).await;
    killed_job_leader_is_replaced(&stack, started).await;
    down_and_up_keeps_every_order(&stack, &sale, started).await;

    step(started, "docker compose down");
    stack.down().await.expect("compose down");
}

/// Scenario 1b: the published ports give a customer CreateOrder/GetOrder and reads,
/// nothing internal: without the internal token every internal call is refused and the
/// stock and the orders are as they were. compose.yaml alone publishes no etcd member.
async fn customers_cannot_reach_internal_calls(stack: &Stack, sale: &Sold, started: Instant) {
    step(started, "scenario 1b: a customer calls internal methods");
    let config = std::process::Command::new("docker")
        .args(["compose", "-f"])
        .arg(e2e::repo_root().join("compose.yaml"))
        .args(["config", "--format", "json"])
        .output()
        .expect("docker compose config");
    let config: serde_json::Value =
        serde_json::from_slice(&config.stdout).expect("compose config as JSON");
    for member in [
        "etcd1",
        "etcd2",
        "etcd3",
        "pg-order",
        "pg-inventory",
        "pg-payment",
    ] {
        assert!(
            config["services"][member]["ports"].is_null(),
            "compose.yaml publishes {member}"
        );
    }
    let before = stock(&mut stack.inventory("inventory-1").await, &sale.sku).await;
    let order_id = sale.orders[0].clone();
    let customer = |service: &'static str, port: u16| async move {
        stack
            .channel(service, port)
            .await
            .expect("customer channel")
    };
    let mut orders = OrderServiceClient::new(customer("order-1", 50051).await);
    let mut inventory = InventoryServiceClient::new(customer("inventory-2", 50052).await);
    let refused = [
        orders
            .payment_result(PaymentResultRequest {
                order_id: order_id.clone(),
                ok: false,
                payment_id: String::new(),
                reason: "forged".into(),
            })
            .await
            .map(drop),
        inventory
            .release(ReleaseRequest {
                order_id: order_id.clone(),
            })
            .await
            .map(drop),
        inventory
            .commit(CommitRequest {
                order_id: order_id.clone(),
            })
            .await
            .map(drop),
        inventory
            .set_stock(SetStockRequest {
                sku: sale.sku.clone(),
                available: 1_000,
                strategy: 0,
            })
            .await
            .map(drop),
    ];
    for answer in refused {
        let err = answer.expect_err("an internal call without the token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    }
    let order = orders
        .get_order(GetOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .expect("a customer reads its order")
        .into_inner();
    assert_eq!(order.status, OrderStatus::Paid as i32, "still PAID");
    let after = stock(&mut stack.inventory("inventory-1").await, &sale.sku).await;
    assert_eq!(
        (after.available, after.reserved, after.sold),
        (before.available, before.reserved, before.sold),
        "the refused calls changed no stock"
    );
    step(
        started,
        "  4 internal calls without the token: UNAUTHENTICATED, nothing changed",
    );
}

/// What scenario 1 sold: its SKU and the ids of the orders it accepted.
struct Sold {
    sku: String,
    orders: Vec<String>,
}

/// 100 buyers, 40 units, strategy mutex, spread over both order replicas (which spread
/// over both inventory replicas): exactly 40 sold, the rest rejected.
async fn flash_sale_through_both_order_replicas(stack: &Stack, started: Instant) -> Sold {
    step(
        started,
        "scenario 1: 100 buyers, 40 units, through both order replicas",
    );
    let sku = format!("e2e-flash-{}", uuid::Uuid::new_v4().simple());
    let mut inventory = stack.inventory("inventory-1").await;
    inventory
        .set_stock(SetStockRequest {
            sku: sku.clone(),
            available: 40,
            strategy: Strategy::Mutex as i32,
        })
        .await
        .expect("SetStock");
    let replicas = [stack.order("order-1").await, stack.order("order-2").await];
    let buyers = (0..100).map(|i| {
        let mut order = replicas[i % 2].clone();
        let sku = sku.clone();
        async move {
            order
                .create_order(CreateOrderRequest {
                    idempotency_key: format!("{sku}-{i}"),
                    customer_id: format!("buyer-{i}"),
                    items: one_unit(&sku),
                    strategy: Strategy::Mutex as i32,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    });
    let placed = futures::future::join_all(buyers).await;
    let accepted: Vec<String> = placed
        .iter()
        .flatten()
        .filter(|o| o.status == OrderStatus::Reserved as i32)
        .map(|o| o.order_id.clone())
        .collect();
    let results: Vec<_> = placed.into_iter().map(|r| r.map(|o| o.status)).collect();
    let reserved = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if *s == OrderStatus::Reserved as i32))
        .count();
    let rejected = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if *s == OrderStatus::Rejected as i32))
        .count();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "calls failed: {failed:?}");
    let truth = stock(&mut inventory, &sku).await;
    step(
        started,
        &format!(
            "  accepted {reserved}, rejected {rejected}; inventory says available {} reserved {} sold {}",
            truth.available, truth.reserved, truth.sold
        ),
    );
    assert_eq!(
        truth.reserved + truth.sold,
        40,
        "exactly the stock is taken"
    );
    assert_eq!(truth.available, 0);
    assert_eq!(reserved, 40);
    assert_eq!(rejected, 60);

    // The payment replicas charge every accepted order; the stock ends sold.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let truth = stock(&mut inventory, &sku).await;
        if truth.sold == 40 {
            assert_eq!(truth.reserved, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "payments did not complete: {truth:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    step(
        started,
        "  all 40 accepted orders paid: 40 units sold, 0 oversold",
    );
    Sold {
        sku,
        orders: accepted,
    }
}

/// The lock holder is frozen (docker pause) after taking the SKU lock and reading the
/// stock, but before writing. Its lease expires; the other replica gets the lock and
/// sells the last unit. When the holder wakes up, its write carries an old fencing
/// token and the database refuses it.
async fn paused_lock_holder_is_fenced(stack: &mut Stack, started: Instant) {
    step(
        started,
        "scenario 2: pause the inventory replica holding a SKU lock past its TTL",
    );
    // inventory-1 "thinks" 4 s between reading and writing: long enough to pause it
    // while it holds the lock.
    stack
        .recreate("inventory-1", &[("INVENTORY1_THINK_TIME_MS", "4000")])
        .await;
    let sku = format!("e2e-pause-{}", uuid::Uuid::new_v4().simple());
    let mut slow = stack.inventory("inventory-1").await;
    let mut healthy = stack.inventory("inventory-2").await;
    healthy
        .set_stock(SetStockRequest {
            sku: sku.clone(),
            available: 1,
            strategy: Strategy::Mutex as i32,
        })
        .await
        .expect("SetStock");

    let stale = {
        let sku = sku.clone();
        tokio::spawn(async move {
            slow.reserve(ReserveRequest {
                order_id: uuid::Uuid::new_v4().to_string(),
                items: one_unit(&sku),
                strategy: Strategy::Mutex as i32,
                ..Default::default()
            })
            .await
        })
    };
    // Wait until inventory-1 holds the SKU's lock (its key is under the lock prefix).
    let mut etcd = stack.etcd().await;
    let lock_prefix = format!("/shop/locks/sku/{sku}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = etcd
            .get(lock_prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .expect("etcd get")
            .count()
            > 0;
        if held {
            break;
        }
        assert!(Instant::now() < deadline, "inventory-1 never took the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.docker_on(&["pause"], "inventory-1").await.unwrap();
    step(
        started,
        "  inventory-1 paused while holding the lock; reserving on inventory-2",
    );

    let fresh = tokio::time::timeout(
        TTL + Duration::from_secs(15),
        healthy.reserve(ReserveRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            items: one_unit(&sku),
            strategy: Strategy::Mutex as i32,
            ..Default::default()
        }),
    )
    .await
    .expect("inventory-2 gets the lock once inventory-1's lease expires")
    .expect("Reserve on inventory-2")
    .into_inner();
    assert_eq!(fresh.outcome, ReserveOutcome::Reserved as i32, "{fresh:?}");
    let after_fresh = stock(&mut healthy, &sku).await;
    step(
        started,
        &format!(
            "  inventory-2 sold the unit (fence token {}); unpausing inventory-1",
            after_fresh.fence_token
        ),
    );

    stack.docker_on(&["unpause"], "inventory-1").await.unwrap();
    let stale = tokio::time::timeout(Duration::from_secs(30), stale)
        .await
        .expect("the stale holder finishes after unpause")
        .expect("task");
    match &stale {
        Ok(resp) => assert_ne!(
            resp.get_ref().outcome,
            ReserveOutcome::Reserved as i32,
            "the stale holder must not reserve: {resp:?}"
        ),
        Err(status) => step(
            started,
            &format!(
                "  stale holder refused: {:?}: {}",
                status.code(),
                status.message()
            ),
        ),
    }
    let truth = stock(&mut healthy, &sku).await;
    assert_eq!(
        truth.reserved + truth.sold,
        1,
        "one unit, sold once: {truth:?}"
    );
    assert_eq!(truth.available, 0);
    assert_eq!(
        truth.fence_token, after_fresh.fence_token,
        "no stale write landed"
    );
    stack.recreate("inventory-1", &[]).await;
}

/// Stop one etcd member (not the one the test talks to): quorum remains, so locks,
/// sessions and orders keep working.
async fn orders_continue_without_one_etcd_member(stack: &Stack, started: Instant) {
    step(started, "scenario 3: stop etcd3, keep ordering");
    stack
        .docker_on(&["stop", "-t", "2"], "etcd3")
        .await
        .unwrap();
    let sku = format!("e2e-member-{}", uuid::Uuid::new_v4().simple());
    let mut inventory = stack.inventory("inventory-2").await;
    inventory
        .set_stock(SetStockRequest {
            sku: sku.clone(),
            available: 10,
            strategy: Strategy::Mutex as i32,
        })
        .await
        .expect("SetStock");
    let mut order = stack.order("order-1").await;
    for i in 0..10 {
        let placed = tokio::time::timeout(
            Duration::from_secs(20),
            order.create_order(CreateOrderRequest {
                idempotency_key: format!("{sku}-{i}"),
                customer_id: format!("member-loss-{i}"),
                items: one_unit(&sku),
                strategy: Strategy::Mutex as i32,
                ..Default::default()
            }),
        )
        .await
        .expect("order completes with one member down")
        .expect("CreateOrder")
        .into_inner();
        assert_eq!(placed.status, OrderStatus::Reserved as i32, "{placed:?}");
    }
    let truth = stock(&mut inventory, &sku).await;
    assert_eq!(truth.reserved + truth.sold, 10, "{truth:?}");
    assert_eq!(truth.available, 0);
    stack.docker_on(&["start"], "etcd3").await.unwrap();
    step(
        started,
        "  10 orders reserved with etcd3 down; etcd3 restarted",
    );
}

/// Who leads the order service's `expire-reservations` job, asked of `service`.
async fn job_leader(stack: &Stack, service: &str) -> String {
    stack
        .order(service)
        .await
        .list_leaders(ListLeadersRequest {})
        .await
        .expect("ListLeaders")
        .into_inner()
        .leaders
        .into_iter()
        .find(|l| l.job == "expire-reservations")
        .map(|l| l.holder)
        .unwrap_or_default()
}

/// `docker kill` the order replica leading the expiry job (no resignation, no lease
/// revocation: the lease must expire): the other replica leads within TTL + 1 s.
async fn killed_job_leader_is_replaced(stack: &Stack, started: Instant) {
    step(
        started,
        "scenario 4: docker kill the replica leading expire-reservations",
    );
    let leader = job_leader(stack, "order-1").await;
    let (victim, survivor) = if leader.contains("order-1") {
        ("order-1", "order-2")
    } else {
        assert!(leader.contains("order-2"), "someone leads: {leader:?}");
        ("order-2", "order-1")
    };
    stack.docker_on(&["kill"], victim).await.unwrap();
    let killed_at = Instant::now();
    let limit = TTL + Duration::from_secs(1);
    loop {
        let now = job_leader(stack, survivor).await;
        if now.contains(survivor) {
            break;
        }
        assert!(
            killed_at.elapsed() < limit,
            "{survivor} did not lead within TTL + 1 s after {victim} was killed (leader: {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    step(
        started,
        &format!(
            "  {victim} killed; {survivor} leads after {:.2}s (TTL {}s)",
            killed_at.elapsed().as_secs_f64(),
            TTL.as_secs()
        ),
    );
    stack.docker_on(&["start"], victim).await.unwrap();
}

/// Everything a customer or the operator can read about scenario 1's sale: each order
/// (status, payment), the SKU's stock, and a marker key in etcd.
async fn what_was_sold(stack: &Stack, sale: &Sold) -> (Vec<(i32, i32, i64)>, Stock, Vec<u8>) {
    let mut order = stack.order("order-1").await;
    let mut payment = stack.payment("payment-1").await;
    let mut seen = Vec::new();
    for id in &sale.orders {
        let status = order
            .get_order(GetOrderRequest {
                order_id: id.clone(),
            })
            .await
            .expect("GetOrder")
            .into_inner()
            .status;
        let paid = payment
            .get_payment(GetPaymentRequest {
                order_id: id.clone(),
            })
            .await
            .expect("GetPayment")
            .into_inner();
        seen.push((status, paid.status, paid.amount_minor));
    }
    let truth = stock(&mut stack.inventory("inventory-1").await, &sale.sku).await;
    let marker = stack
        .etcd()
        .await
        .get(marker_key(sale), None)
        .await
        .expect("etcd get")
        .kvs()
        .first()
        .map(|kv| kv.value().to_vec())
        .unwrap_or_default();
    (seen, truth, marker)
}

fn marker_key(sale: &Sold) -> String {
    format!("/e2e/restart/{}", sale.sku)
}

/// `docker compose down` without `-v`, then `up`: the named volumes keep the three
/// databases and the etcd members' data, so every order reads back as it was.
async fn down_and_up_keeps_every_order(stack: &Stack, sale: &Sold, started: Instant) {
    step(
        started,
        "scenario 5: docker compose down (volumes kept), then up again",
    );
    stack
        .etcd()
        .await
        .put(marker_key(sale), "still here", None)
        .await
        .expect("etcd put");
    let before = what_was_sold(stack, sale).await;
    assert_eq!(before.0.len(), 40, "scenario 1 accepted 40 orders");
    assert!(
        before
            .0
            .iter()
            .all(|(order, payment, _)| *order == OrderStatus::Paid as i32
                && *payment == PaymentStatus::Captured as i32),
        "every accepted order is paid before the restart: {:?}",
        before.0
    );
    stack
        .compose(&["down", "-t", "2"])
        .await
        .expect("compose down");
    let volumes = e2e::docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={PROJECT}"),
    ])
    .await
    .expect("docker volume ls");
    step(
        started,
        &format!(
            "  stack down; {} named volumes kept",
            volumes.lines().count()
        ),
    );
    stack
        .compose(&["up", "-d", "--wait"])
        .await
        .expect("compose up again");
    let after = what_was_sold(stack, sale).await;
    assert_eq!(before.0, after.0, "orders and payments survive down/up");
    assert_eq!(
        (before.1.available, before.1.reserved, before.1.sold),
        (after.1.available, after.1.reserved, after.1.sold),
        "stock survives down/up"
    );
    assert_eq!(after.2, b"still here", "etcd's data survives down/up");
    step(
        started,
        "  after up: 40 orders PAID with their captured payments, stock and etcd keys unchanged",
    );
}
