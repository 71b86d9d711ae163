//! What the fuzz target `payment_item` (in `fuzz/`, run with cargo-fuzz) checks, as a
//! function so that the crate's own tests run the same check on random and corpus
//! inputs in normal CI. Feature `fuzzing` (or `cfg(test)`) only; not an API.
//!
//! For any bytes: [`PaymentItem::decode`] returns an item or an error and never
//! panics, and an item that decodes encodes back to the same item.

use crate::payments::PaymentItem;

/// Decodes `data` as a payment queue item; panics only on a bug.
pub fn payment_item(data: &[u8]) {
    if let Ok(item) = PaymentItem::decode(data) {
        let again = PaymentItem::decode(&item.encode()).expect("a re-encoded item decodes");
        assert_eq!(again, item, "payment item round trip");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_fuzz_corpus_decodes_without_panicking() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/payment_item"
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("fuzz/corpus/payment_item") {
            payment_item(&std::fs::read(entry.unwrap().path()).unwrap());
            seen += 1;
        }
        assert!(seen >= 5, "the corpus has its seeds ({seen})");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            payment_item(&data);
        }

        /// Real items with one byte changed.
        #[test]
        fn damaged_items_never_panic(
            order_id in "\\PC{0,12}",
            amount_minor in any::<i64>(),
            trace in proptest::collection::hash_map("\\PC{0,6}", "\\PC{0,6}", 0..3),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let item = PaymentItem {
                order_id,
                customer_id: "c".into(),
                tier: "gold".into(),
                amount_minor,
                trace,
            };
            let mut stored = item.encode();
            payment_item(&stored);
            let i = at.index(stored.len());
            stored[i] = byte;
            payment_item(&stored);
        }
    }
}
