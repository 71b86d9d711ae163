//! coord's queue decoders (work-queue items and slots, priority-queue keys) on
//! arbitrary bytes: see `coord::fuzzing::queue_items`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coord::fuzzing::queue_items(data));
