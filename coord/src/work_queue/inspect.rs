//! Reading a queue's stored items without using the queue: for tools that watch it
//! (the shop's console draws the payment queue from the keys it watches). The wire
//! format itself stays private (`wire.rs`); this is a read-only view of one item.

use super::wire::{decode_item, parse_slot};
use crate::Result;

/// One stored item (under `<name>/items/` or `<name>/dead/`), as its key and value say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredItem {
    /// The caller-visible id (the order id, for the shop's payments).
    pub id: String,
    /// Lower is served first.
    pub priority: u32,
    /// FIFO order within the priority.
    pub seq: u64,
    /// Deliveries so far.
    pub attempts: u32,
    /// When it was enqueued, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Not delivered before this time (ms since the Unix epoch; 0: at once).
    pub not_before_ms: u64,
    pub payload: Vec<u8>,
}

impl StoredItem {
    /// Reads the item stored at `key` (whose slot, `<priority>/<seq>`, is the part after
    /// `items/` or `dead/`) with `value`. Anything this crate did not write is
    /// [`crate::Error::Malformed`], never a panic.
    pub fn decode(slot: &str, key: &str, value: &[u8]) -> Result<StoredItem> {
        let (priority, seq) = parse_slot(slot)?;
        let (envelope, payload) = decode_item(key, value)?;
        Ok(StoredItem {
            id: envelope.id,
            priority,
            seq,
            attempts: envelope.attempts,
            enqueued_ms: envelope.enqueued_ms,
            not_before_ms: envelope.not_before_ms,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{encode_item, Envelope};
    use super::*;

    #[test]
    fn a_stored_item_reads_back_and_garbage_is_malformed() {
        let envelope = Envelope {
            id: "o1".into(),
            attempts: 2,
            enqueued_ms: 5,
            not_before_ms: 0,
        };
        let value = encode_item(&envelope, b"{}");
        let item = StoredItem::decode("00001/00000000000000000007", "q/items/x", &value).unwrap();
        assert_eq!(
            (item.id.as_str(), item.priority, item.seq, item.attempts),
            ("o1", 1, 7, 2)
        );
        assert_eq!(item.payload, b"{}");
        assert!(StoredItem::decode("1/x", "k", &value).is_err());
        assert!(StoredItem::decode("00001/00000000000000000007", "k", b"garbage").is_err());
    }
}
