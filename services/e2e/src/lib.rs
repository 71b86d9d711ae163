//! No library code: the end-to-end suite lives in `tests/`. See `tests/compose.rs`.
