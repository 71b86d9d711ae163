//! The duplicate-messages fault: saga messages duplicated concurrently and reordered
//! while the load runs.

use crate::{Operator, Stack};
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;

/// How many duplicated orders (and Release/Reserve pairs) one run sends, all at once.
const ROUNDS: usize = 20;

/// The clients one round sends its duplicates through: both order replicas, both
/// inventory replicas.
#[derive(Clone)]
struct Replicas {
    orders: [OrderServiceClient<Operator>; 2],
    inventories: [InventoryServiceClient<Operator>; 2],
}

/// Sends saga messages twice at the same moment (through different replicas), and a
/// Release racing its order's Reserve, as a retrying client or a network would, while
/// the load runs; checks every answer is the idempotent one. The rounds run
/// concurrently too.
pub(super) async fn replay_saga_messages(stack: &Stack, hot_sku: &str) -> anyhow::Result<String> {
    let replicas = Replicas {
        orders: [stack.order("order-1").await, stack.order("order-2").await],
        inventories: [
            stack.inventory("inventory-1").await,
            stack.inventory("inventory-2").await,
        ],
    };
    let rounds = (0..ROUNDS).map(|i| round(replicas.clone(), hot_sku, i));
    let mut problems = Vec::new();
    for result in futures::future::join_all(rounds).await {
        problems.extend(result?);
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "concurrent duplicate messages were not idempotent: {}",
            problems.join("; ")
        );
    }
    Ok(format!(
        "{ROUNDS} CreateOrders sent twice at once (one per order replica), then their Reserve twice at once (one per inventory replica), and {ROUNDS} Releases racing their Reserve (+ a second Release each), all rounds concurrent: every answer idempotent"
    ))
}

/// CreateOrder as a client sends it: ABORTED ("changed by a concurrent attempt with
/// the same idempotency key; retry") is the answer a duplicate racing its twin may get,
/// and the client asks again, as the status says; anything else is the answer.
async fn create_order(
    client: &mut OrderServiceClient<Operator>,
    request: pb::CreateOrderRequest,
) -> anyhow::Result<pb::Order> {
    let mut attempt = 0u64;
    loop {
        match client.create_order(request.clone()).await {
            Err(status) if status.code() == tonic::Code::Aborted && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            answer => return Ok(answer?.into_inner()),
        }
    }
}

/// One round; the problems it found.
async fn round(mut r: Replicas, hot_sku: &str, i: usize) -> anyhow::Result<Vec<String>> {
    let line = || {
        vec![pb::LineItem {
            sku: hot_sku.to_owned(),
            quantity: 1,
        }]
    };
    let mut problems = Vec::new();
    // The same CreateOrder twice at once, through both replicas: one order, one answer.
    let request = pb::CreateOrderRequest {
        idempotency_key: format!("dup-{hot_sku}-{i}"),
        customer_id: format!("dup-{i}"),
        items: line(),
        strategy: pb::Strategy::Mutex as i32,
        ..Default::default()
    };
    let [o1, o2] = &mut r.orders;
    let (first, second) =
        tokio::join!(create_order(o1, request.clone()), create_order(o2, request));
    let (first, second) = (first?, second?);
    if first.order_id != second.order_id {
        problems.push(format!(
            "CreateOrder twice at once made two orders: {} and {}",
            first.order_id, second.order_id
        ));
    }
    // Its Reserve twice at once, through both inventory replicas: the order's answer,
    // nothing more taken.
    let reserve = pb::ReserveRequest {
        order_id: first.order_id.clone(),
        items: line(),
        strategy: first.strategy,
        customer_id: format!("dup-{i}"),
        ..Default::default()
    };
    let [i1, i2] = &mut r.inventories;
    let (a, b) = tokio::join!(i1.reserve(reserve.clone()), i2.reserve(reserve));
    for again in [a?.into_inner(), b?.into_inner()] {
        if first.status == pb::OrderStatus::Reserved as i32
            && again.outcome != pb::ReserveOutcome::Reserved as i32
        {
            problems.push(format!(
                "a duplicate Reserve of RESERVED order {} answered {again:?}",
                first.order_id
            ));
        }
    }
    // A Release racing its Reserve: either may land first, but once the Release has
    // answered, the order holds nothing — a later Reserve takes nothing.
    let early = uuid::Uuid::new_v4().to_string();
    let reserve = pb::ReserveRequest {
        order_id: early.clone(),
        items: line(),
        strategy: pb::Strategy::Mutex as i32,
        ..Default::default()
    };
    let release = pb::ReleaseRequest {
        order_id: early.clone(),
    };
    let (released, raced) = tokio::join!(i1.release(release.clone()), i2.reserve(reserve.clone()));
    released?;
    let raced = raced?.into_inner();
    if ![
        pb::ReserveOutcome::Reserved as i32,
        pb::ReserveOutcome::AlreadyReleased as i32,
    ]
    .contains(&raced.outcome)
    {
        problems.push(format!("a Reserve racing its Release answered {raced:?}"));
    }
    // A second Release (the racing Reserve may have won): still released, once.
    i2.release(release).await?;
    let late = i1.reserve(reserve).await?.into_inner();
    if late.outcome != pb::ReserveOutcome::AlreadyReleased as i32 {
        problems.push(format!("a Reserve after its Release answered {late:?}"));
    }
    Ok(problems)
}
