//! What one attempt of a transaction recorded (its reads and buffered writes) and the
//! single etcd transaction that commits it: every read key's check in the `when`, the
//! writes in the `then`, and a read-back of every checked key in the `else`, which says
//! what changed and seeds the next attempt.

use std::collections::{BTreeMap, HashMap};

use etcd_client::{Client, Compare, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::Isolation;
use crate::plumbing::key::{show, txn_rev};
use crate::txn::{mod_rev_is, unchanged_since};
use crate::Result;

/// One remembered read.
#[derive(Clone, Debug)]
pub(super) struct Read {
    pub(super) value: Option<Vec<u8>>,
    pub(super) mod_rev: i64,
    /// The revision of the store this read describes.
    pub(super) as_of: i64,
}

#[derive(Clone, Debug)]
pub(super) enum Write {
    Put { value: Vec<u8>, lease: i64 },
    Delete,
}

/// The state of one attempt. Taken out (leaving `None`) when the attempt ends.
#[derive(Debug)]
pub(super) struct Attempt {
    /// Snapshot revision, once the first read has fixed it (snapshot levels only).
    pub(super) pin: Option<i64>,
    pub(super) reads: HashMap<Vec<u8>, Read>,
    /// Values the previous attempt's failed commit brought back, all of one revision.
    /// They become reads when the closure asks for them.
    pub(super) seeds: HashMap<Vec<u8>, Read>,
    pub(super) writes: BTreeMap<Vec<u8>, Write>,
    /// A pinned read hit compaction; the attempt should start over on fresh data.
    pub(super) snapshot_compacted: bool,
    /// A write had unusable input; the attempt must not commit.
    pub(super) invalid: Option<String>,
}

/// How a commit ended.
impl Attempt {
    /// A fresh attempt, seeded with what the previous attempt's failed commit read back.
    pub(super) fn new(seeds: HashMap<Vec<u8>, Read>) -> Attempt {
        Attempt {
            pin: None,
            reads: HashMap::new(),
            seeds,
            writes: BTreeMap::new(),
            snapshot_compacted: false,
            invalid: None,
        }
    }
}

/// How a commit ended.
pub(super) enum CommitResult {
    Done(i64),
    Conflict {
        reason: String,
        seeds: HashMap<Vec<u8>, Read>,
    },
}

/// Sends the attempt's single commit transaction.
pub(super) async fn commit(
    client: &Client,
    isolation: Isolation,
    attempt: Attempt,
) -> Result<CommitResult> {
    let Attempt { reads, writes, .. } = attempt;
    let snapshot = reads.values().map(|r| r.as_of).min();

    // The keys whose state the commit depends on, each with its check.
    let mut checked: Vec<(Vec<u8>, Check)> = Vec::new();
    if isolation != Isolation::ReadCommitted {
        for (key, read) in &reads {
            checked.push((key.clone(), Check::Unchanged(read.mod_rev)));
        }
    }
    if isolation == Isolation::SerializableSnapshot {
        if let Some(snapshot) = snapshot {
            for key in writes.keys().filter(|k| !reads.contains_key(*k)) {
                checked.push((key.clone(), Check::NotWrittenAfter(snapshot)));
            }
        }
    }
    checked.sort_by(|a, b| a.0.cmp(&b.0));

    let compares: Vec<Compare> = checked
        .iter()
        .map(|(key, check)| match *check {
            Check::Unchanged(rev) => mod_rev_is(key.clone(), rev),
            Check::NotWrittenAfter(rev) => unchanged_since(key.clone(), rev),
        })
        .collect();
    // Knockout (the shop's tests only, never a normal build): commit without the
    // revision compares, so two transactions that read the same keys both commit.
    #[cfg(feature = "knockout-stm-compare")]
    let compares: Vec<Compare> = {
        drop(compares);
        Vec::new()
    };
    let puts: Vec<TxnOp> = writes
        .into_iter()
        .map(|(key, write)| match write {
            Write::Put { value, lease: 0 } => TxnOp::put(key, value, None),
            Write::Put { value, lease } => {
                TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))
            }
            Write::Delete => TxnOp::delete(key, None),
        })
        .collect();
    // On failure, read back every checked key: it says which check failed, and the
    // values seed the next attempt.
    let rereads: Vec<TxnOp> = checked
        .iter()
        .map(|(key, _)| TxnOp::get(key.clone(), None))
        .collect();

    let txn = Txn::new().when(compares).and_then(puts).or_else(rereads);
    let resp = client.clone().txn(txn).await?;
    if resp.succeeded() {
        return Ok(CommitResult::Done(txn_rev(&resp)));
    }

    let at = txn_rev(&resp);
    let mut changed = Vec::new();
    let mut seeds = HashMap::new();
    for ((key, check), op) in checked.into_iter().zip(resp.op_responses()) {
        let TxnOpResponse::Get(get) = op else {
            continue;
        };
        let (value, mod_rev) = match get.kvs().first() {
            Some(kv) => (Some(kv.value().to_vec()), kv.mod_revision()),
            None => (None, 0),
        };
        let failed = match check {
            Check::Unchanged(rev) => mod_rev != rev,
            Check::NotWrittenAfter(rev) => mod_rev > rev,
        };
        if failed {
            changed.push(show(&key));
        }
        seeds.insert(
            key,
            Read {
                value,
                mod_rev,
                as_of: at,
            },
        );
    }
    let mut reason = match changed.len() {
        0 => "a checked key changed".to_owned(),
        n if n > 5 => format!("{} and {} more changed", changed[..5].join(", "), n - 5),
        _ => format!("{} changed", changed.join(", ")),
    };
    if let Some(snapshot) = snapshot {
        reason.push_str(&format!(" since revision {snapshot}"));
    }
    if !isolation.pins_snapshot() {
        seeds.clear();
    }
    Ok(CommitResult::Conflict { reason, seeds })
}

enum Check {
    /// Mod revision still equals the one read.
    Unchanged(i64),
    /// Mod revision at most the snapshot revision.
    NotWrittenAfter(i64),
}
