//! The work queues' part of the model: `coord::work_queue`'s items, claims and dead
//! letters, read with coord's own `StoredItem`, payloads read as shop-common's payment
//! items.

use std::collections::{BTreeMap, HashMap};

use coord::work_queue::StoredItem;
use serde::Serialize;
use shop_common::payments::PaymentItem;

use super::Kv;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    pub lease: String,
    pub replica: Option<String>,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueItem {
    pub id: String,
    pub priority: u32,
    pub seq: u64,
    pub attempts: u32,
    pub enqueued_ms: u64,
    /// Payment items' customer and tier (from shop-common's item format).
    pub customer: Option<String>,
    pub tier: Option<String>,
    pub claim: Option<Claim>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueView {
    /// The queue's name below `queues/` (`payments`).
    pub name: String,
    /// Items not yet acked (waiting or claimed), per priority.
    pub depth: BTreeMap<u32, u64>,
    pub total: u64,
    pub claimed: u64,
    /// Items in line, in delivery order (priority, then sequence).
    pub items: Vec<QueueItem>,
    pub dead: Vec<QueueItem>,
    /// Keys under `items/` that are not items coord wrote.
    pub malformed: u64,
}

pub(super) fn view(
    name: String,
    keys: &[(&str, &Kv)],
    replicas: &HashMap<i64, String>,
) -> QueueView {
    let mut claims: HashMap<&str, Claim> = HashMap::new();
    for (inner, kv) in keys {
        if let Some(slot) = inner.strip_prefix("claims/") {
            let value: serde_json::Value =
                serde_json::from_slice(&kv.value).unwrap_or(serde_json::Value::Null);
            claims.insert(
                slot,
                Claim {
                    lease: value["lease"].as_str().unwrap_or("").to_owned(),
                    replica: replicas.get(&kv.lease).cloned(),
                    attempt: value["attempt"].as_u64().unwrap_or(0) as u32,
                },
            );
        }
    }
    let mut view = QueueView {
        name,
        depth: BTreeMap::new(),
        total: 0,
        claimed: 0,
        items: Vec::new(),
        dead: Vec::new(),
        malformed: 0,
    };
    for (inner, kv) in keys {
        let (area, slot) = match inner.split_once('/') {
            Some(("items", slot)) => ("items", slot),
            Some(("dead", slot)) => ("dead", slot),
            _ => continue,
        };
        let Ok(stored) = StoredItem::decode(slot, &kv.key, &kv.value) else {
            view.malformed += 1;
            continue;
        };
        let payment = PaymentItem::decode(&stored.payload).ok();
        let priority = stored.priority;
        let item = QueueItem {
            id: stored.id,
            priority,
            seq: stored.seq,
            attempts: stored.attempts,
            enqueued_ms: stored.enqueued_ms,
            customer: payment.as_ref().map(|p| p.customer_id.clone()),
            tier: payment.map(|p| p.tier),
            claim: if area == "items" {
                claims.remove(slot)
            } else {
                None
            },
        };
        if area == "dead" {
            view.dead.push(item);
        } else {
            *view.depth.entry(priority).or_default() += 1;
            view.total += 1;
            view.claimed += u64::from(item.claim.is_some());
            view.items.push(item);
        }
    }
    view.items.sort_by_key(|i| (i.priority, i.seq));
    view.dead.sort_by_key(|i| (i.priority, i.seq));
    view
}
