// The checks of the fuzz target `queue_items`, as one function that two places
// `include!`: fuzz_targets/queue_items.rs (cargo-fuzz) and coord's unit tests next to
// the decoders (coord/src/work_queue/wire.rs, on the committed corpus and on proptest
// inputs), so both run this very code. The includer brings `decode_item`,
// `encode_item`, `parse_slot`, `next_sequence` and `MAX_PRIORITY` into scope.

/// Every queue decoder (work-queue item, work-queue slot, priority-queue key) on
/// `data`: each returns a value or an error and never panics, and whatever decodes
/// encodes back to the same value.
fn queue_items(data: &[u8]) {
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
