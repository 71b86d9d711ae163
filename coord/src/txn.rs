//! A small typed builder for plain etcd transactions: *if these comparisons hold, do
//! these operations, otherwise do those*.
//!
//! # What an etcd transaction is
//! etcd evaluates a list of comparisons against the current store and, in the same
//! atomic step, runs one of two operation lists: the `then` list if every comparison
//! holds, the `or_else` list if any fails. All operations of the branch that ran see
//! and produce one revision; nothing else can interleave. This is the building block
//! of every primitive in this crate (and of [`crate::stm`], which writes such
//! transactions for you).
//!
//! # What this module adds over `etcd_client::Txn`
//! - **Comparison helpers named after what they check**: [`key_missing`],
//!   [`key_exists`], [`value_is`], [`mod_rev_is`], [`create_rev_is`],
//!   [`unchanged_since`]. They return plain [`etcd_client::Compare`]s, so they mix
//!   with [`crate::MutexGuard::is_owner`] and anything else that produces one. coord's
//!   primitives state their own conditions with them (every guard's `is_owner` is a
//!   [`create_rev_is`]).
//! - **Accumulating calls**: [`Txn::when`], [`Txn::then`] and [`Txn::or_else`] may be
//!   called any number of times and in any order (etcd-client's builder panics on a
//!   second `when`).
//! - **Results looked up by key, typed**: [`TxnOutcome::value`],
//!   [`TxnOutcome::parse`], [`TxnOutcome::kvs`] find the response of the `get` you
//!   added for a key in the branch that ran. Asking for a key that branch did not read
//!   is an [`Error::InvalidArgument`], never silently "missing".
//!
//! ```no_run
//! # async fn demo(client: &coord::etcd_client::Client) -> coord::Result<()> {
//! use coord::txn::{key_missing, Ops, Txn};
//!
//! // Create the stock counter unless it exists; either way read it back.
//! let outcome = Txn::new()
//!     .when(key_missing("/shop/stock/sku-1"))
//!     .then(Ops::new().put("/shop/stock/sku-1", "10").get("/shop/stock/sku-1"))
//!     .or_else(Ops::new().get("/shop/stock/sku-1"))
//!     .commit(client)
//!     .await?;
//! let stock: i64 = outcome.parse("/shop/stock/sku-1")?.unwrap_or(0);
//! println!("created: {}, stock: {stock}", outcome.succeeded());
//! # Ok(()) }
//! ```
//!
//! coord's primitives commit with this builder where one attempt is right (proclaim,
//! ack, nack, enqueue, dead-lettering). A call that must be retried on transient
//! failures (an idempotent read, a compare-and-delete, entering a queue of waiters)
//! hands a plain `etcd_client::Txn` to the crate's retry helper instead, since
//! [`Txn::commit`] never retries.
//!
//! # Guarantees and limits
//! - A committed transaction is atomic and isolated (etcd's guarantee): the branch ran
//!   entirely, at [`TxnOutcome::revision`], or not at all.
//! - [`Txn::commit`] sends exactly one request and never retries it: a transaction is
//!   not idempotent in general. If the call fails in transport (etcd unavailable,
//!   deadline), the transaction may or may not have been applied. Dropping the
//!   `commit` future has the same effect: all or nothing, unknown which.
//! - etcd caps each of the comparison list and the two operation lists (128 entries
//!   by default, `--max-txn-ops`); a larger transaction fails with [`Error::Etcd`].
//! - A key may be written at most once per branch (etcd rejects duplicate puts/deletes
//!   of one key in a branch).
//!
//! # Go → coord
//! | etcd's Go `clientv3` | coord |
//! |---|---|
//! | `client.Txn(ctx)` | [`Txn::new`] |
//! | `.If(cmps...)` | [`Txn::when`], [`Txn::when_all`]; comparisons [`key_missing`], [`key_exists`], [`value_is`], [`mod_rev_is`], [`create_rev_is`], [`unchanged_since`] |
//! | `.Then(ops...)` | [`Txn::then`]`(`[`Ops`]`::new().put(..).delete(..))` |
//! | `.Else(ops...)` | [`Txn::or_else`] |
//! | `.Commit()` | [`Txn::commit`]`(&client)` → [`TxnOutcome`] |

use std::str::FromStr;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, KeyValue, PutOptions,
    TxnOp, TxnOpResponse,
};

use crate::plumbing::key::{show, txn_rev};
use crate::{Error, Result};

/// True when `key` does not exist (its create revision is 0).
pub fn key_missing(key: impl Into<Vec<u8>>) -> Compare {
    Compare::create_revision(key, CompareOp::Equal, 0)
}

/// True when `key` exists.
pub fn key_exists(key: impl Into<Vec<u8>>) -> Compare {
    Compare::create_revision(key, CompareOp::Greater, 0)
}

/// True when `key` exists and holds exactly `value`. (A missing key never matches,
/// not even an empty `value`.)
pub fn value_is(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Compare {
    Compare::value(key, CompareOp::Equal, value)
}

/// True when `key` was last modified at revision `rev` (0: the key does not exist).
/// This is the optimistic-concurrency check: "nobody wrote it since I read it".
pub fn mod_rev_is(key: impl Into<Vec<u8>>, rev: i64) -> Compare {
    Compare::mod_revision(key, CompareOp::Equal, rev)
}

/// True when the current incarnation of `key` was created at revision `rev` (0: the
/// key does not exist). A key deleted and put again has a new create revision, so this
/// identifies one incarnation — it is how [`crate::MutexGuard::is_owner`] works.
pub fn create_rev_is(key: impl Into<Vec<u8>>, rev: i64) -> Compare {
    Compare::create_revision(key, CompareOp::Equal, rev)
}

/// True when `key` was not modified after revision `rev` (its mod revision is at most
/// `rev`; a missing key qualifies). Note that a delete leaves no mod revision behind, so
/// a key deleted after `rev` also qualifies; use [`mod_rev_is`] to catch that.
pub fn unchanged_since(key: impl Into<Vec<u8>>, rev: i64) -> Compare {
    Compare::mod_revision(key, CompareOp::Less, rev.saturating_add(1))
}

/// What one operation of a branch was about, so results can be found by key.
#[derive(Clone, Debug)]
enum Target {
    Get(Vec<u8>),
    GetPrefix(Vec<u8>),
    Put(Vec<u8>),
    Delete(Vec<u8>),
    DeletePrefix(Vec<u8>),
    Raw,
}

impl Target {
    fn key(&self) -> Option<&[u8]> {
        match self {
            Target::Get(k)
            | Target::GetPrefix(k)
            | Target::Put(k)
            | Target::Delete(k)
            | Target::DeletePrefix(k) => Some(k),
            Target::Raw => None,
        }
    }
}

/// The operations of one branch of a [`Txn`], in the order etcd runs them.
#[derive(Clone, Debug, Default)]
pub struct Ops {
    ops: Vec<TxnOp>,
    targets: Vec<Target>,
}

impl Ops {
    /// An empty list.
    pub fn new() -> Ops {
        Ops::default()
    }

    fn push(mut self, op: TxnOp, target: Target) -> Ops {
        self.ops.push(op);
        self.targets.push(target);
        self
    }

    /// Sets `key` to `value`.
    pub fn put(self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Ops {
        let key = key.into();
        self.push(TxnOp::put(key.clone(), value, None), Target::Put(key))
    }

    /// Sets `key` to `value`, attached to `lease` (the key vanishes when the lease does,
    /// e.g. with a [`crate::Session`]: `session.lease()`).
    pub fn put_with_lease(
        self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Ops {
        let key = key.into();
        let options = PutOptions::new().with_lease(lease);
        self.push(
            TxnOp::put(key.clone(), value, Some(options)),
            Target::Put(key),
        )
    }

    /// Reads `key`; find the result with [`TxnOutcome::value`] and friends.
    pub fn get(self, key: impl Into<Vec<u8>>) -> Ops {
        let key = key.into();
        self.push(TxnOp::get(key.clone(), None), Target::Get(key))
    }

    /// Reads every key starting with `prefix`, in key order; find the result with
    /// [`TxnOutcome::kvs`]`(prefix)`.
    pub fn get_prefix(self, prefix: impl Into<Vec<u8>>) -> Ops {
        let prefix = prefix.into();
        let options = GetOptions::new().with_prefix();
        self.push(
            TxnOp::get(prefix.clone(), Some(options)),
            Target::GetPrefix(prefix),
        )
    }

    /// Deletes `key` (a no-op if it does not exist).
    pub fn delete(self, key: impl Into<Vec<u8>>) -> Ops {
        let key = key.into();
        self.push(TxnOp::delete(key.clone(), None), Target::Delete(key))
    }

    /// Deletes every key starting with `prefix`.
    pub fn delete_prefix(self, prefix: impl Into<Vec<u8>>) -> Ops {
        let prefix = prefix.into();
        let options = DeleteOptions::new().with_prefix();
        self.push(
            TxnOp::delete(prefix.clone(), Some(options)),
            Target::DeletePrefix(prefix),
        )
    }

    /// Any other etcd operation (a nested txn, a get with sort or limit …). Its result
    /// is only reachable by position, through [`TxnOutcome::responses`].
    pub fn op(self, op: TxnOp) -> Ops {
        self.push(op, Target::Raw)
    }

    /// Appends all of `other`'s operations.
    pub fn extend(mut self, other: Ops) -> Ops {
        self.ops.extend(other.ops);
        self.targets.extend(other.targets);
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there are no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn check_keys(&self, branch: &str) -> Result<()> {
        if self
            .targets
            .iter()
            .any(|t| t.key().is_some_and(<[u8]>::is_empty))
        {
            return Err(Error::InvalidArgument(format!(
                "an operation in the {branch} branch has an empty key"
            )));
        }
        Ok(())
    }
}

/// An etcd transaction under construction. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Txn {
    compares: Vec<Compare>,
    then: Ops,
    otherwise: Ops,
}

impl Txn {
    /// A transaction with no comparisons (so the `then` branch runs) and no operations.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a comparison; the `then` branch runs only if all of them hold.
    pub fn when(mut self, compare: Compare) -> Txn {
        self.compares.push(compare);
        self
    }

    /// Adds several comparisons.
    pub fn when_all(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.compares.extend(compares);
        self
    }

    /// Appends operations to the branch that runs when every comparison holds.
    pub fn then(mut self, ops: Ops) -> Txn {
        self.then = self.then.extend(ops);
        self
    }

    /// Appends operations to the branch that runs when any comparison fails.
    pub fn or_else(mut self, ops: Ops) -> Txn {
        self.otherwise = self.otherwise.extend(ops);
        self
    }

    /// The equivalent `etcd_client::Txn`, e.g. to nest it with [`Ops::op`]`(TxnOp::txn(..))`.
    pub fn into_etcd(self) -> etcd_client::Txn {
        etcd_client::Txn::new()
            .when(self.compares)
            .and_then(self.then.ops)
            .or_else(self.otherwise.ops)
    }

    /// Sends the transaction (one request, never retried; see the module docs for what
    /// a transport failure or a dropped future leaves behind).
    pub async fn commit(self, client: &Client) -> Result<TxnOutcome> {
        self.then.check_keys("then")?;
        self.otherwise.check_keys("or_else")?;
        let (then_targets, else_targets) =
            (self.then.targets.clone(), self.otherwise.targets.clone());
        let resp = client.clone().txn(self.into_etcd()).await?;
        let succeeded = resp.succeeded();
        Ok(TxnOutcome {
            succeeded,
            revision: txn_rev(&resp),
            responses: resp.op_responses(),
            targets: if succeeded {
                then_targets
            } else {
                else_targets
            },
        })
    }
}

/// The result of a committed [`Txn`]: which branch ran, at which revision, and what
/// its operations returned.
#[derive(Clone, Debug)]
pub struct TxnOutcome {
    succeeded: bool,
    revision: i64,
    responses: Vec<TxnOpResponse>,
    targets: Vec<Target>,
}

impl TxnOutcome {
    /// True when every comparison held and the `then` branch ran.
    pub fn succeeded(&self) -> bool {
        self.succeeded
    }

    /// The store revision after the transaction: the revision of its writes if the
    /// branch that ran wrote anything, else the revision its reads saw.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The raw responses of the branch that ran, one per operation, in order.
    pub fn responses(&self) -> &[TxnOpResponse] {
        &self.responses
    }

    /// The raw responses, by value.
    pub fn into_responses(self) -> Vec<TxnOpResponse> {
        self.responses
    }

    fn find(&self, key: &[u8], wanted: fn(&Target) -> bool) -> Option<&TxnOpResponse> {
        self.targets
            .iter()
            .position(|t| wanted(t) && t.key() == Some(key))
            .and_then(|i| self.responses.get(i))
    }

    fn get_response(&self, key: &[u8], prefix: bool) -> Result<&GetResponse> {
        let wanted: fn(&Target) -> bool = if prefix {
            |t| matches!(t, Target::GetPrefix(_))
        } else {
            |t| matches!(t, Target::Get(_))
        };
        match self.find(key, wanted) {
            Some(TxnOpResponse::Get(get)) => Ok(get),
            _ => Err(Error::InvalidArgument(format!(
                "the {} branch of this transaction has no {} of {:?}",
                if self.succeeded { "then" } else { "or_else" },
                if prefix { "get_prefix" } else { "get" },
                show(key)
            ))),
        }
    }

    /// The key-value read by the `get(key)` of the branch that ran; `Ok(None)` when the
    /// key does not exist. [`Error::InvalidArgument`] if that branch has no such get.
    pub fn kv(&self, key: impl AsRef<[u8]>) -> Result<Option<&KeyValue>> {
        Ok(self.get_response(key.as_ref(), false)?.kvs().first())
    }

    /// The value read by the `get(key)` of the branch that ran; `Ok(None)` when the key
    /// does not exist.
    pub fn value(&self, key: impl AsRef<[u8]>) -> Result<Option<&[u8]>> {
        Ok(self.kv(key)?.map(KeyValue::value))
    }

    /// [`TxnOutcome::value`] as UTF-8 text ([`Error::Malformed`] if it is not).
    pub fn value_str(&self, key: impl AsRef<[u8]>) -> Result<Option<&str>> {
        let key = key.as_ref();
        self.value(key)?
            .map(|v| {
                std::str::from_utf8(v).map_err(|e| Error::Malformed {
                    key: show(key),
                    reason: format!("value is not UTF-8: {e}"),
                })
            })
            .transpose()
    }

    /// [`TxnOutcome::value`] parsed with [`FromStr`] (e.g. a counter as `i64`);
    /// [`Error::Malformed`] if it does not parse.
    pub fn parse<T>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let key = key.as_ref();
        self.value_str(key)?
            .map(|text| {
                text.parse().map_err(|e| Error::Malformed {
                    key: show(key),
                    reason: format!("cannot parse {text:?}: {e}"),
                })
            })
            .transpose()
    }

    /// The key-values read by the `get_prefix(prefix)` (or by the `get(key)`, for a
    /// single key) of the branch that ran.
    pub fn kvs(&self, key_or_prefix: impl AsRef<[u8]>) -> Result<&[KeyValue]> {
        let key = key_or_prefix.as_ref();
        match self.get_response(key, true) {
            Ok(get) => Ok(get.kvs()),
            Err(_) => Ok(self.get_response(key, false)?.kvs()),
        }
    }

    /// How many keys the `delete(key)` or `delete_prefix(prefix)` of the branch that
    /// ran removed.
    pub fn deleted(&self, key_or_prefix: impl AsRef<[u8]>) -> Result<i64> {
        let key = key_or_prefix.as_ref();
        match self.find(key, |t| {
            matches!(t, Target::Delete(_) | Target::DeletePrefix(_))
        }) {
            Some(TxnOpResponse::Delete(del)) => Ok(del.deleted()),
            _ => Err(Error::InvalidArgument(format!(
                "the {} branch of this transaction has no delete of {:?}",
                if self.succeeded { "then" } else { "or_else" },
                show(key)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_accumulate_instead_of_panicking() {
        let txn = Txn::new()
            .when(key_missing("a"))
            .when(value_is("b", "1"))
            .then(Ops::new().put("a", "x"))
            .then(Ops::new().get("b"))
            .or_else(Ops::new().get("a"));
        assert_eq!(txn.compares.len(), 2);
        assert_eq!(txn.then.len(), 2);
        assert_eq!(txn.otherwise.len(), 1);
        let _ = txn.into_etcd();
    }
}
