//! The shop's payment queue item (`PaymentItem::decode`) on arbitrary bytes: see
//! `shop_common::fuzzing::payment_item`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shop_common::fuzzing::payment_item(data));
