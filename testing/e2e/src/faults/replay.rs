//! The duplicate-messages fault: saga messages replayed and reordered while the load runs.

use shop_proto::v1 as pb;

use crate::Stack;

/// Sends saga messages again and out of order, as a network or a retrying client
/// would, while the load runs; checks each answer is the idempotent one.
pub(super) async fn replay_saga_messages(stack: &Stack, hot_sku: &str) -> anyhow::Result<String> {
    let mut inventory = stack.inventory("inventory-2").await;
    let mut orders = stack.order("order-1").await;
    let line = || {
        vec![pb::LineItem {
            sku: hot_sku.to_owned(),
            quantity: 1,
        }]
    };
    let mut problems = Vec::new();
    let (mut duplicates, mut early_releases) = (0, 0);
    for i in 0..20 {
        // The same CreateOrder twice: one order.
        let request = pb::CreateOrderRequest {
            idempotency_key: format!("dup-{hot_sku}-{i}"),
            customer_id: format!("dup-{i}"),
            items: line(),
            strategy: pb::Strategy::Mutex as i32,
            ..Default::default()
        };
        let first = orders.create_order(request.clone()).await?.into_inner();
        let second = orders.create_order(request).await?.into_inner();
        if first.order_id != second.order_id {
            problems.push(format!(
                "CreateOrder twice made two orders: {}",
                first.order_id
            ));
        }
        // Its Reserve again: the same answer, nothing more taken.
        let again = inventory
            .reserve(pb::ReserveRequest {
                order_id: first.order_id.clone(),
                items: line(),
                strategy: first.strategy,
                customer_id: format!("dup-{i}"),
                ..Default::default()
            })
            .await?
            .into_inner();
        if first.status == pb::OrderStatus::Reserved as i32
            && again.outcome != pb::ReserveOutcome::Reserved as i32
        {
            problems.push(format!(
                "a repeated Reserve of {} answered {again:?}",
                first.order_id
            ));
        }
        duplicates += 2;
        // A Release that overtakes its Reserve: the late Reserve takes nothing.
        let early = uuid::Uuid::new_v4().to_string();
        inventory
            .release(pb::ReleaseRequest {
                order_id: early.clone(),
            })
            .await?;
        let late = inventory
            .reserve(pb::ReserveRequest {
                order_id: early.clone(),
                items: line(),
                strategy: pb::Strategy::Mutex as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        if late.outcome != pb::ReserveOutcome::AlreadyReleased as i32 {
            problems.push(format!("a Reserve after its Release answered {late:?}"));
        }
        early_releases += 1;
        // A second Release of it: still released, once.
        inventory
            .release(pb::ReleaseRequest { order_id: early })
            .await?;
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "replayed messages were not idempotent: {}",
            problems.join("; ")
        );
    }
    Ok(format!(
        "{duplicates} duplicate CreateOrder/Reserve calls and {early_releases} Release-before-Reserve pairs (+ a second Release each): every answer idempotent"
    ))
}
