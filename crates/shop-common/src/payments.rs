//! The payment queue's contract, shared by its producer (the order service) and its
//! consumers (the payment workers): where the queue lives, what an item says, and how
//! a customer's tier becomes a priority. One definition, so the two sides cannot drift.
//!
//! The queue is a coord [`WorkQueue`] (claim under a lease, ack, redelivery when a
//! worker dies) at `<ETCD_PREFIX>/queues/payments`; an item's id is its order id, so
//! enqueueing the same order twice is one item.

use std::sync::Arc;
use std::time::Duration;

use coord::etcd_client::Client;
use coord::{Enqueued, WorkQueue};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::coordination::SharedSession;

/// Price of one unit in minor currency units: the shop has no catalogue prices yet, so
/// an order's amount is its unit count times this.
pub const UNIT_PRICE_MINOR: i64 = 1_000;

/// What the order service asks the payment workers to charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentItem {
    pub order_id: String,
    pub customer_id: String,
    /// `standard`, `gold` or `platinum`.
    pub tier: String,
    pub amount_minor: i64,
    /// W3C trace context of the order's request (`traceparent`, `tracestate`), so the
    /// worker's spans can join the order's trace (see `crate::propagation`). Empty when
    /// tracing is off; absent in items enqueued before it existed, which decode with an
    /// empty map (and start a new trace).
    #[serde(default)]
    pub trace: std::collections::HashMap<String, String>,
}

impl PaymentItem {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("payment item serialises")
    }

    /// Parses an item; a malformed one is an error with the reason, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<PaymentItem, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed payment item: {e}"))
    }
}

/// Queue priority of a customer tier: platinum first, then gold, then everyone else
/// (coord queues serve lower numbers first).
pub fn tier_priority(tier: &str) -> u32 {
    match tier {
        "platinum" => 0,
        "gold" => 1,
        _ => 2,
    }
}

/// The payment work queue under the shop's etcd prefix.
pub fn payment_queue(client: Client, etcd_prefix: &str) -> coord::Result<WorkQueue> {
    WorkQueue::new(client, &format!("{etcd_prefix}/queues/payments"))
}

/// Puts `item` on the payment queue at its tier's priority, unless an item for its
/// order is queued (or in flight) already: then nothing changes and `created` is
/// false. The one way both the order service and the payment service's settle job
/// hand over a payment request.
pub async fn enqueue_payment(
    session: &SharedSession,
    item: &PaymentItem,
) -> coord::Result<Enqueued> {
    payment_queue(session.client().await?, session.prefix())?
        .enqueue_with_id(&item.order_id, &item.encode(), tier_priority(&item.tier))
        .await
}

/// Samples the payment queue every `interval` (first at once) into the gauges
/// `coord_queue_depth`, `coord_queue_in_flight` and `coord_queue_oldest_item_age_seconds`
/// (label `queue`), until `stop` turns true. A failed sample (etcd down) keeps the last
/// values and is logged at debug; the next one retries.
pub fn spawn_queue_gauges(
    session: Arc<SharedSession>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !*stop.borrow() {
            let sampled = async {
                let queue = payment_queue(session.client().await?, session.prefix())?;
                queue.record_gauges().await
            };
            if let Err(e) = sampled.await {
                tracing::debug!(error = %e, "could not sample the payment queue");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_garbage_is_an_error() {
        let item = PaymentItem {
            order_id: "o".into(),
            customer_id: "c".into(),
            tier: "gold".into(),
            amount_minor: 2000,
            trace: Default::default(),
        };
        assert_eq!(PaymentItem::decode(&item.encode()).unwrap(), item);
        assert!(PaymentItem::decode(b"{}").is_err());
        // An item written before the trace field existed still decodes.
        let old = br#"{"order_id":"o","customer_id":"c","tier":"gold","amount_minor":2000}"#;
        assert_eq!(PaymentItem::decode(old).unwrap(), item);
        assert!(PaymentItem::decode(b"\xff").is_err());
        assert_eq!(tier_priority("platinum"), 0);
        assert_eq!(tier_priority("gold"), 1);
        assert_eq!(tier_priority("standard"), 2);
    }

    /// What the fuzz target `fuzz/fuzz_targets/payment_item.rs` checks on every input:
    /// decoding never panics, and an item that decodes encodes back to itself.
    fn decodes_or_refuses(data: &[u8]) {
        if let Ok(item) = PaymentItem::decode(data) {
            let again = PaymentItem::decode(&item.encode()).expect("a re-encoded item decodes");
            assert_eq!(again, item, "payment item round trip");
        }
    }

    /// The fuzz target's seeds (`fuzz/corpus/payment_item`), in normal CI.
    #[test]
    fn the_fuzz_corpus_decodes_without_panicking() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/payment_item"
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("fuzz/corpus/payment_item") {
            decodes_or_refuses(&std::fs::read(entry.unwrap().path()).unwrap());
            seen += 1;
        }
        assert!(seen >= 5, "the corpus has its seeds ({seen})");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, failure_persistence: None, ..Default::default() })]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            decodes_or_refuses(&data);
        }

        /// Real items with one byte changed.
        #[test]
        fn damaged_items_never_panic(
            order_id in "\\PC{0,12}",
            amount_minor in proptest::prelude::any::<i64>(),
            trace in proptest::collection::hash_map("\\PC{0,6}", "\\PC{0,6}", 0..3),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let item = PaymentItem {
                order_id,
                customer_id: "c".into(),
                tier: "gold".into(),
                amount_minor,
                trace,
            };
            let mut stored = item.encode();
            decodes_or_refuses(&stored);
            let i = at.index(stored.len());
            stored[i] = byte;
            decodes_or_refuses(&stored);
        }
    }
}
