//! coord's queue decoders (work-queue items and slots, priority-queue keys) on
//! arbitrary bytes; the checks are in `../checks/queue_items.rs`, which coord's unit
//! tests run too. The decoders are crate-private in coord: `coord::fuzz_entry` hands
//! them over in a `--cfg fuzzing` build (what cargo-fuzz does).
#![no_main]

use coord::fuzz_entry::{decode_item, encode_item, next_sequence, parse_slot, MAX_PRIORITY};

include!("../checks/queue_items.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| queue_items(data));
