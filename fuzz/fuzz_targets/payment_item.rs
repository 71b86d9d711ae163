//! The shop's payment queue item (`PaymentItem::decode`) on arbitrary bytes: decoding
//! never panics, and an item that decodes encodes back to the same item. shop-common's
//! unit tests (`payments::tests`) run the same check on the corpus and random input.
#![no_main]

use shop_common::payments::PaymentItem;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(item) = PaymentItem::decode(data) {
        let again = PaymentItem::decode(&item.encode()).expect("a re-encoded item decodes");
        assert_eq!(again, item, "payment item round trip");
    }
});
