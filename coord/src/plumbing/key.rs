//! Private key helpers shared by the primitives: prefix normalisation, per-session
//! keys and the small conversions etcd responses need.
//!
//! Key layout rules (all of them match etcd's Go client so that a Go service and a
//! coord service share locks, elections and queues by name):
//! - a primitive named `n` keeps its keys under `n/`; `jobs` never matches `jobs2`
//!   because every range read uses the trailing slash;
//! - a session's key under a prefix is `<prefix>/<lease id in lowercase hex>`;
//! - a unique key (RWMutex, barriers, Semaphore, queues) ends in the wall clock in
//!   nanoseconds ([`unix_nanos`]).

use etcd_client::{ResponseHeader, TxnOpResponse, TxnResponse};

use crate::{Error, Result};

/// Turns a primitive's name into the directory prefix its keys live under:
/// `"/shop/locks/sku-1"` becomes `"/shop/locks/sku-1/"`. Like Go's `name + "/"`, the
/// name is used verbatim: `"/locks/"` becomes `"/locks//"`, so `etcdctl lock /locks/`
/// and coord on `"/locks/"` share their keys. Empty names are rejected
/// (they would make the primitive span the whole key space).
pub(crate) fn dir_prefix(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("name must not be empty".into()));
    }
    if name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "name {name:?} contains a NUL byte"
        )));
    }
    Ok(format!("{name}/"))
}

/// The key a session owns under `prefix` (which ends with `/`): the lease id in
/// lowercase hex, exactly as Go's `fmt.Sprintf("%s%x", pfx, lease)`.
pub(crate) fn lease_key(prefix: &str, lease: i64) -> String {
    format!("{prefix}{lease:x}")
}

/// The suffix Go's recipes use for unique keys: the wall clock in nanoseconds since
/// the Unix epoch, in decimal. Uniqueness comes from the create-if-absent put, which
/// retries with a fresh timestamp on a collision.
pub(crate) fn unix_nanos() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

/// The revision in a response header (0 when etcd sent none, which it always does).
pub(crate) fn header_rev(header: Option<&ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or(0)
}

/// The revision at which a transaction committed.
pub(crate) fn txn_rev(resp: &TxnResponse) -> i64 {
    header_rev(resp.header())
}

/// The range response at position `index` of a transaction's results, if that op was a get.
pub(crate) fn txn_get(resp: &TxnResponse, index: usize) -> Option<etcd_client::GetResponse> {
    match resp.op_responses().into_iter().nth(index)? {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    }
}

/// Lossy UTF-8 view of a key, for messages and spans.
pub(crate) fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_append_one_slash_verbatim_like_go() {
        assert_eq!(dir_prefix("a/b").unwrap(), "a/b/");
        assert_eq!(dir_prefix("a/b/").unwrap(), "a/b//");
        assert!(dir_prefix("").is_err());
        assert!(dir_prefix("a\0b").is_err());
    }

    #[test]
    fn lease_keys_are_lowercase_hex_like_go() {
        assert_eq!(lease_key("m/", 0x694d_7a1b_2c3d), "m/694d7a1b2c3d");
        assert_eq!(lease_key("m/", 255), "m/ff");
    }
}
