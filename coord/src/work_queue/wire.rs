//! The stored form of a work-queue item and of its key's slot: the wire format that
//! must stay readable by every version of the queue (and by `etcdctl get`).
//!
//! An item's value is one header line, `coord-wq/1 {json envelope}`, then the payload
//! bytes unchanged; its key ends in its slot, `<priority %05d>/<seq %020d>`. Decoding
//! anything else is [`Error::Malformed`], never a panic.
//!
//! Crate-private: the items are `pub` inside this `pub(crate)` module only so that
//! `lib.rs` can hand them to the fuzz targets (`fuzz/`, target `queue_items`) in a
//! `--cfg fuzzing` build; a normal build exports none of them.

use serde::{Deserialize, Serialize};

use super::MAX_PRIORITY;
use crate::{Error, Result};

const HEADER_TAG: &str = "coord-wq/1 ";

/// The metadata stored in front of every payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Caller-visible id, unique among queued items.
    pub id: String,
    /// Deliveries so far (raised by each claim).
    pub attempts: u32,
    /// When it was enqueued, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Not to be delivered before this time (ms since the Unix epoch); set by `nack_after`.
    #[serde(default)]
    pub not_before_ms: u64,
}

/// Splits a stored item into its envelope and payload; anything that is not an item
/// this crate wrote is [`Error::Malformed`], never a panic.
pub fn decode_item(key: &str, value: &[u8]) -> Result<(Envelope, Vec<u8>)> {
    let malformed = |reason: &str| Error::Malformed {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let newline = value
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| malformed("no header line"))?;
    let header =
        std::str::from_utf8(&value[..newline]).map_err(|_| malformed("header is not UTF-8"))?;
    let json = header
        .strip_prefix(HEADER_TAG)
        .ok_or_else(|| malformed("not a coord work-queue item (unknown header)"))?;
    let envelope: Envelope =
        serde_json::from_str(json).map_err(|e| malformed(&format!("bad header: {e}")))?;
    Ok((envelope, value[newline + 1..].to_vec()))
}

/// The stored form of an item: the header line, then the payload unchanged.
/// [`decode_item`] gives back exactly `envelope` and `payload`.
pub fn encode_item(envelope: &Envelope, payload: &[u8]) -> Vec<u8> {
    let mut out = HEADER_TAG.as_bytes().to_vec();
    out.extend(serde_json::to_vec(envelope).expect("envelope serialises"));
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Parses an item's slot, `<priority %05d>/<seq %020d>` (the part of its key after
/// `<name>/items/`), into priority and sequence number. A key this crate did not
/// write is [`Error::Malformed`], never a panic.
pub fn parse_slot(slot: &str) -> Result<(u32, u64)> {
    let malformed = |reason: &str| Error::Malformed {
        key: slot.to_owned(),
        reason: reason.to_owned(),
    };
    let (priority, seq) = slot
        .split_once('/')
        .ok_or_else(|| malformed("no <priority>/<seq> in the key"))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(priority) || !digits(seq) {
        return Err(malformed("priority and sequence must be decimal digits"));
    }
    let priority: u32 = priority
        .parse()
        .ok()
        .filter(|p| *p <= MAX_PRIORITY)
        .ok_or_else(|| malformed("priority out of range"))?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| malformed("sequence number out of range"))?;
    Ok((priority, seq))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::queue::next_sequence;

    #[test]
    fn items_round_trip_and_garbage_is_malformed_not_a_panic() {
        let envelope = Envelope {
            id: "order-1".into(),
            attempts: 2,
            enqueued_ms: 5,
            not_before_ms: 0,
        };
        let stored = encode_item(&envelope, b"{\"amount\":3}\nsecond line");
        let (back, payload) = decode_item("k", &stored).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(payload, b"{\"amount\":3}\nsecond line");
        for bad in [
            &b""[..],
            b"no newline",
            b"coord-wq/1 {not json}\n",
            b"other/1 {}\n",
            b"\xff\xfe\n",
            b"coord-wq/1 {\"id\":1}\n",
        ] {
            assert!(matches!(
                decode_item("k", bad),
                Err(Error::Malformed { .. })
            ));
        }
    }

    // `fn queue_items(data)`: the fuzz target's checks, shared with it.
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/checks/queue_items.rs"
    ));

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
