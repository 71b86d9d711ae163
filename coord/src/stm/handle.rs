//! [`Stm`], the handle a transaction closure reads and writes through: reads go to
//! etcd (at the attempt's snapshot revision, once one is pinned) and are remembered;
//! writes are buffered until the commit.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use etcd_client::{Client, GetOptions, Txn, TxnOp, TxnOpResponse};
use tracing::warn;

use super::commit::{Attempt, Read, Write};
use super::Isolation;
use crate::plumbing::key::{show, txn_rev};
use crate::plumbing::retry::retrying;
use crate::{Error, Result};

#[derive(Debug)]
struct Shared {
    /// Serialises reads within the attempt, so that the first read alone fixes the
    /// snapshot and no key is fetched twice.
    reading: tokio::sync::Mutex<()>,
    attempt: std::sync::Mutex<Option<Attempt>>,
}

/// The handle a transaction closure reads and writes through. One per attempt; see the
/// [module docs](super).
pub struct Stm {
    client: Client,
    isolation: Isolation,
    number: u32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Stm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stm")
            .field("isolation", &self.isolation)
            .field("attempt", &self.number)
            .finish_non_exhaustive()
    }
}

fn ended() -> Error {
    Error::InvalidArgument("this STM handle belongs to an attempt that has ended".into())
}

fn empty_key() -> Error {
    Error::InvalidArgument("STM keys must not be empty".into())
}

/// The end of one attempt, kept by [`super::run`] while the closure holds the [`Stm`].
pub(super) struct AttemptEnd(Arc<Shared>);

impl AttemptEnd {
    /// Ends the attempt and returns what it recorded: from here on a leaked handle
    /// cannot change it.
    pub(super) fn take(self) -> Attempt {
        self.0
            .attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .expect("an attempt ends once")
    }
}

impl Stm {
    /// Starts attempt `number` (see [`Attempt::new`] for `seeds`).
    pub(super) fn begin(
        client: &Client,
        isolation: Isolation,
        number: u32,
        seeds: HashMap<Vec<u8>, Read>,
    ) -> (Stm, AttemptEnd) {
        let shared = Arc::new(Shared {
            reading: tokio::sync::Mutex::new(()),
            attempt: std::sync::Mutex::new(Some(Attempt::new(seeds))),
        });
        let stm = Stm {
            client: client.clone(),
            isolation,
            number,
            shared: shared.clone(),
        };
        (stm, AttemptEnd(shared))
    }

    /// Which attempt this handle belongs to (1 for the first run of the closure).
    pub fn attempt(&self) -> u32 {
        self.number
    }

    /// The isolation level of this transaction.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Runs `f` on the attempt state, unless the attempt has ended.
    fn with<R>(&self, f: impl FnOnce(&mut Attempt) -> R) -> Option<R> {
        let mut guard = self
            .shared
            .attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_mut().map(f)
    }

    /// The value of `key`, or `None` if it does not exist. A key this attempt wrote
    /// reads as written; otherwise the key joins the read set (see the module docs).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let mut values = self.get_many(&[key]).await?;
        Ok(values.pop().flatten())
    }

    /// The values of several keys, in order, fetching all not yet known in one request.
    pub async fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(empty_key());
        }
        let _reading = self.shared.reading.lock().await;
        let buffered: Vec<Option<Write>> = self
            .with(|a| keys.iter().map(|k| a.writes.get(*k).cloned()).collect())
            .ok_or_else(ended)?;
        let unwritten: Vec<&[u8]> = keys
            .iter()
            .zip(&buffered)
            .filter(|(_, w)| w.is_none())
            .map(|(k, _)| *k)
            .collect();
        let mut reads = self.read(&unwritten).await?.into_iter();
        Ok(buffered
            .into_iter()
            .map(|w| match w {
                Some(Write::Put { value, .. }) => Some(value),
                Some(Write::Delete) => None,
                None => reads.next().and_then(|r| r.value),
            })
            .collect())
    }

    /// [`Stm::get`] as UTF-8 text ([`Error::Malformed`] if it is not).
    pub async fn get_string(&self, key: impl AsRef<[u8]>) -> Result<Option<String>> {
        let key = key.as_ref();
        self.get(key)
            .await?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|e| Error::Malformed {
                    key: show(key),
                    reason: format!("value is not UTF-8: {e}"),
                })
            })
            .transpose()
    }

    /// [`Stm::get`] parsed with [`FromStr`], e.g. a balance as `i64`
    /// ([`Error::Malformed`] if it does not parse).
    pub async fn get_as<T>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let key = key.as_ref();
        self.get_string(key)
            .await?
            .map(|text| {
                text.parse().map_err(|e| Error::Malformed {
                    key: show(key),
                    reason: format!("cannot parse {text:?}: {e}"),
                })
            })
            .transpose()
    }

    /// The mod revision (revision of the last write) of `key` as this transaction
    /// reads it, or 0 if it does not exist there. It always describes the stored key,
    /// never this attempt's own buffered write (which has no revision yet), and it puts
    /// the key in the read set.
    pub async fn rev(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        let key = key.as_ref();
        if key.is_empty() {
            return Err(empty_key());
        }
        let _reading = self.shared.reading.lock().await;
        let read = self.read(&[key]).await?;
        Ok(read.first().map_or(0, |r| r.mod_rev))
    }

    /// Buffers a write of `value` to `key`; it commits with the transaction.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.write(
            key.as_ref(),
            Write::Put {
                value: value.into(),
                lease: 0,
            },
        );
    }

    /// Buffers a write attached to `lease` (e.g. a [`crate::Session`]'s): the key
    /// vanishes when the lease does.
    pub fn put_with_lease(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>, lease: i64) {
        self.write(
            key.as_ref(),
            Write::Put {
                value: value.into(),
                lease,
            },
        );
    }

    /// Buffers the deletion of `key`; reading it in this attempt now gives `None`.
    pub fn del(&self, key: impl AsRef<[u8]>) {
        self.write(key.as_ref(), Write::Delete);
    }

    fn write(&self, key: &[u8], write: Write) {
        let done = self.with(|a| {
            if key.is_empty() {
                a.invalid = Some("STM keys must not be empty (in put or del)".into());
            } else {
                a.writes.insert(key.to_vec(), write);
            }
        });
        if done.is_none() {
            warn!(
                key = %show(key),
                attempt = self.number,
                "write through an STM handle whose attempt has ended; discarded"
            );
        }
    }

    /// The committed state of `keys` as this attempt sees it: remembered reads, seeds
    /// from the last failed commit, or one fetch for the rest. Call with `reading` held.
    async fn read(&self, keys: &[&[u8]]) -> Result<Vec<Read>> {
        let pins = self.isolation.pins_snapshot();
        let (mut missing, pin) = self
            .with(|a| {
                // Values seeded by the last failed commit all describe one revision;
                // make it this attempt's snapshot so every read agrees with them.
                if pins && a.pin.is_none() {
                    a.pin = a.seeds.values().next().map(|seed| seed.as_of);
                }
                let mut missing: Vec<Vec<u8>> = Vec::new();
                for key in keys {
                    if a.reads.contains_key(*key) {
                        continue;
                    }
                    if let Some(seed) = a.seeds.remove(*key) {
                        a.reads.insert(key.to_vec(), seed);
                    } else {
                        missing.push(key.to_vec());
                    }
                }
                (missing, a.pin)
            })
            .ok_or_else(ended)?;
        missing.sort();
        missing.dedup();

        if !missing.is_empty() {
            let (fetched, at) = match self.fetch(&missing, pin, pins).await {
                Err(Error::Compacted(rev)) => {
                    self.with(|a| a.snapshot_compacted = true);
                    return Err(Error::Compacted(rev));
                }
                other => other?,
            };
            self.with(|a| {
                let as_of = match (pins, a.pin) {
                    (true, Some(pin)) => pin,
                    (true, None) => {
                        a.pin = Some(at);
                        at
                    }
                    (false, _) => at,
                };
                for (key, kv) in missing.into_iter().zip(fetched) {
                    let (value, mod_rev) = match kv {
                        Some((value, mod_rev)) => (Some(value), mod_rev),
                        None => (None, 0),
                    };
                    a.reads.entry(key).or_insert(Read {
                        value,
                        mod_rev,
                        as_of,
                    });
                }
            })
            .ok_or_else(ended)?;
        }

        self.with(|a| keys.iter().map(|k| a.reads[*k].clone()).collect())
            .ok_or_else(ended)
    }

    /// Reads `keys` in one transaction: at the pinned revision if there is one, else at
    /// the latest (linearizable for the first read of a snapshot level, member-local
    /// for the levels that check or ignore staleness anyway, like Go's client). Returns
    /// each key's (value, mod revision) and the revision the reads reflect.
    #[allow(clippy::type_complexity)]
    async fn fetch(
        &self,
        keys: &[Vec<u8>],
        pin: Option<i64>,
        pins: bool,
    ) -> Result<(Vec<Option<(Vec<u8>, i64)>>, i64)> {
        let options = |local: bool| {
            let mut options = GetOptions::new();
            if let Some(rev) = pin {
                options = options.with_revision(rev);
            }
            if local {
                options = options.with_serializable();
            }
            options
        };
        let build = |local: bool| {
            Txn::new().and_then(
                keys.iter()
                    .map(|k| TxnOp::get(k.clone(), Some(options(local))))
                    .collect::<Vec<_>>(),
            )
        };
        // Member-local reads are fine for data at a fixed past revision and for the
        // levels without a snapshot; the first snapshot read must be current.
        let local = pin.is_some() || !pins;
        let send = |txn: Txn| {
            let client = self.client.clone();
            retrying(move || {
                let (mut client, txn) = (client.clone(), txn.clone());
                async move { client.txn(txn).await }
            })
        };
        let resp = match send(build(local)).await {
            Ok(resp) => resp,
            Err(Error::Etcd(e)) if mentions(&e, "compacted") => {
                return Err(Error::Compacted(pin.unwrap_or(0)))
            }
            // A lagging member has not applied the pinned revision yet: ask the leader.
            Err(Error::Etcd(e)) if local && mentions(&e, "future revision") => {
                send(build(false)).await?
            }
            Err(e) => return Err(e),
        };
        let at = pin.unwrap_or_else(|| txn_rev(&resp));
        let values = resp
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
                _ => None,
            })
            .collect();
        Ok((values, at))
    }
}

/// Whether an etcd error's status message contains `what` (etcd reports compaction
/// and future revisions as OutOfRange with a fixed text).
fn mentions(e: &etcd_client::Error, what: &str) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.message().contains(what),
        _ => false,
    }
}
