//! What the fuzz target `queue_items` (in `fuzz/`, run with cargo-fuzz) checks, as a
//! function so that the crate's own tests run the same checks on random and corpus
//! inputs in normal CI. Feature `fuzzing` (or `cfg(test)`) only; not an API.
//!
//! For any bytes: decoding a work-queue item, a work-queue slot and a priority-queue
//! key returns a value or [`crate::Error::Malformed`] and never panics; whatever
//! decodes, encodes back to something that decodes to the same value.

use crate::queue::next_sequence;
use crate::work_queue::{decode_item, encode_item, parse_slot, MAX_PRIORITY};

/// Runs every queue decoder on `data`; panics only on a bug.
pub fn queue_items(data: &[u8]) {
    if let Ok((envelope, payload)) = decode_item("fuzz", data) {
        let again = encode_item(&envelope, &payload);
        let decoded = decode_item("fuzz", &again).expect("a re-encoded item decodes");
        assert_eq!(decoded, (envelope, payload), "item round trip");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((priority, seq)) = parse_slot(text) {
        assert!(priority <= MAX_PRIORITY);
        let canonical = format!("{priority:05}/{seq:020}");
        assert_eq!(
            parse_slot(&canonical).expect("canonical slot"),
            (priority, seq)
        );
    }
    if let Ok(next) = next_sequence(text) {
        assert!(next >= 1);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::work_queue::Envelope;

    /// The committed seed corpus of the fuzz target (`fuzz/corpus/queue_items`).
    #[test]
    fn the_fuzz_corpus_decodes_without_panicking() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/queue_items");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("fuzz/corpus/queue_items") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            queue_items(&data);
            seen += 1;
        }
        assert!(seen >= 5, "the corpus has its seeds ({seen})");
    }

    #[test]
    fn edge_cases_are_malformed_not_panics() {
        for slot in [
            "",
            "/",
            "1",
            "ab",
            "é/1",
            "00001/",
            "/00001",
            "+1/2",
            "99999/18446744073709551616",
            "100000/1",
        ] {
            assert!(parse_slot(slot).is_err(), "{slot:?}");
        }
        assert_eq!(parse_slot("00003/00000000000000000007").unwrap(), (3, 7));
        assert!(next_sequence("q/00001/18446744073709551615").is_err());
        assert!(next_sequence("q/00001/").is_err());
        assert_eq!(next_sequence("q/00001/0000000000000041").unwrap(), 42);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            queue_items(&data);
        }

        #[test]
        fn random_text_never_panics(text in "\\PC{0,40}") {
            queue_items(text.as_bytes());
        }

        /// Real items with one byte changed: close to valid, where decoders break.
        #[test]
        fn damaged_items_never_panic(
            id in "[a-z0-9-]{0,12}",
            attempts in any::<u32>(),
            enqueued_ms in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..32),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let envelope = Envelope { id, attempts, enqueued_ms, not_before_ms: 0 };
            let mut stored = encode_item(&envelope, &payload);
            queue_items(&stored);
            let i = at.index(stored.len());
            stored[i] = byte;
            queue_items(&stored);
        }
    }
}
