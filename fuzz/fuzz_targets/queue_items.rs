//! coord's queue decoders (work-queue items and slots, priority-queue keys) on
//! arbitrary bytes: each returns a value or an error and never panics, and whatever
//! decodes encodes back to the same value. The decoders are crate-private in coord;
//! `coord::fuzz_entry` hands them over in a `--cfg fuzzing` build (what cargo-fuzz
//! does). coord's unit tests run the committed corpus through the same decoders.
#![no_main]

use coord::fuzz_entry::{decode_item, encode_item, next_sequence, parse_slot, MAX_PRIORITY};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
});
