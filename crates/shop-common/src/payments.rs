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

use crate::auth::InternalToken;
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
    /// A seal over the order id and `amount_minor` (hex HMAC-SHA256 under the shop's
    /// internal token), set by whoever enqueued the item from the order's own record:
    /// with it, a worker may charge `amount_minor` without reading the order back. An
    /// item without one (no token configured, or enqueued before seals existed), or
    /// whose seal does not verify (edited or forged), is charged what the order says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_seal: Option<String>,
}

/// What a seal covers: a fixed label, the order id and the amount.
fn sealed_message(order_id: &str, amount_minor: i64) -> Vec<u8> {
    format!("coord-shop payment amount v1\n{order_id}\n{amount_minor}").into_bytes()
}

impl PaymentItem {
    /// Seals the item's amount under `token` (nothing without one).
    pub fn seal(mut self, token: Option<&InternalToken>) -> PaymentItem {
        use hmac::Mac;
        self.amount_seal = token.map(|token| {
            let tag = token
                .mac(&sealed_message(&self.order_id, self.amount_minor))
                .finalize()
                .into_bytes();
            tag.iter().map(|b| format!("{b:02x}")).collect()
        });
        self
    }

    /// The amount to charge, if the item's seal verifies under `token` (in constant
    /// time); `None` when there is no token, no seal, or a seal that does not match.
    pub fn sealed_amount(&self, token: Option<&InternalToken>) -> Option<i64> {
        use hmac::Mac;
        let (token, seal) = (token?, self.amount_seal.as_deref()?);
        let tag = decode_hex(seal)?;
        token
            .mac(&sealed_message(&self.order_id, self.amount_minor))
            .verify_slice(&tag)
            .ok()
            .map(|()| self.amount_minor)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("payment item serialises")
    }

    /// Parses an item; a malformed one is an error with the reason, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<PaymentItem, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed payment item: {e}"))
    }
}

/// Bytes from lowercase or uppercase hex; `None` for anything else.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
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

    /// A seal verifies under the token that made it, for the amount and order it was
    /// made for, and nothing else.
    #[test]
    fn a_seal_vouches_for_its_amount_and_order_under_its_token_only() {
        let (token, other) = (InternalToken::random(), InternalToken::random());
        let item = PaymentItem {
            order_id: "o-1".into(),
            customer_id: "c".into(),
            tier: "gold".into(),
            amount_minor: 2000,
            trace: Default::default(),
            amount_seal: None,
        };
        assert_eq!(item.sealed_amount(Some(&token)), None, "no seal");
        let sealed = item.clone().seal(Some(&token));
        assert_eq!(sealed.sealed_amount(Some(&token)), Some(2000));
        // Stored and read back, it still verifies.
        let stored = PaymentItem::decode(&sealed.encode()).unwrap();
        assert_eq!(stored.sealed_amount(Some(&token)), Some(2000));
        assert_eq!(sealed.sealed_amount(Some(&other)), None, "another token");
        assert_eq!(sealed.sealed_amount(None), None, "no token to verify with");
        let mut more = sealed.clone();
        more.amount_minor = 1;
        assert_eq!(more.sealed_amount(Some(&token)), None, "amount edited");
        let mut moved = sealed.clone();
        moved.order_id = "o-2".into();
        assert_eq!(moved.sealed_amount(Some(&token)), None, "order edited");
        for garbage in ["", "zz", "abc", "00"] {
            let mut bad = sealed.clone();
            bad.amount_seal = Some(garbage.into());
            assert_eq!(bad.sealed_amount(Some(&token)), None, "{garbage:?}");
        }
        assert_eq!(
            item.clone().seal(None).amount_seal,
            None,
            "no token, no seal"
        );
    }

    #[test]
    fn items_round_trip_and_garbage_is_an_error() {
        let item = PaymentItem {
            order_id: "o".into(),
            customer_id: "c".into(),
            tier: "gold".into(),
            amount_minor: 2000,
            trace: Default::default(),
            amount_seal: None,
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
                amount_seal: None,
            };
            let mut stored = item.encode();
            decodes_or_refuses(&stored);
            let i = at.index(stored.len());
            stored[i] = byte;
            decodes_or_refuses(&stored);
        }
    }
}
