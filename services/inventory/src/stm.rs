//! The `stm` strategy's etcd side: stock counters, customers' counts in a sale, and
//! the per-order hold that makes giving units back exactly-once.
//!
//! # Keys (all under `ETCD_PREFIX`)
//! | key | value |
//! |---|---|
//! | `<prefix>/stock/<sku>` | `<epoch>:<available>`: units the stm strategy may still hand out |
//! | `<prefix>/sales/<sale>/customers/<customer>` | units the customer holds in the sale |
//! | `<prefix>/stm/holds/<order>` | JSON: what the order took (lines with the epoch each was taken at, sale, customer) |
//!
//! # One reservation
//! 1. Postgres: the order's reservation row is inserted as PREPARING (the per-order
//!    claim; a Release that comes now turns it into RELEASED).
//! 2. etcd, one STM transaction ([`StmStock::take`]): if the hold exists, this order
//!    already took its units (a retry) — done. Otherwise every SKU's counter must
//!    cover its line and the customer's count plus the cart must stay within the
//!    sale's limit; then all counters go down, the customer's count goes up and the
//!    hold is written — all in one commit, or, on conflict, the whole decision is
//!    made again on fresh values.
//! 3. Postgres: PREPARING → RESERVED, the lines are inserted and `available` goes down
//!    by the same units (relatively). If a Release overtook us, the hold is given back.
//!
//! Release gives the hold back ([`StmStock::give_back`]: counters and customer count
//! up, hold deleted, in one transaction — so twice is once). Commit leaves the units
//! taken; the reconcile job deletes holds of committed orders and gives back holds
//! whose order was released while its Reserve was cut off (see `reconcile`).
//!
//! # Seeding and epochs
//! Postgres stays the ledger; the etcd counter is what the STM decides on. A counter is
//! seeded from Postgres's `available` the first time a SKU is reserved with stm, and
//! again whenever SetStock has run since (it bumps `stock.stm_epoch`; a counter from an
//! older epoch is stale). Units given back go to the counter unless the counter was
//! re-seeded since they were taken.
//!
//! # Guarantees
//! - Two stm Reserves never both take the last unit, on one replica or many: their
//!   transactions read the same counter, and only one of them can commit.
//! - An order's sale limit counts every stm order of the customer in the sale,
//!   concurrent ones included, in the same transaction as the stock.
//! - Postgres's `available >= 0` CHECK stays a backstop: if the counter were ever
//!   ahead of Postgres (the SKU also sold with other strategies, which do not touch the
//!   counter), the Postgres step fails and the Reserve answers out of stock.
//!
//! # Not guaranteed
//! - Mixing strategies on one SKU: pg/mutex/none sales do not lower the etcd counter,
//!   so stm may accept and then be refused by the backstop; their releases do not
//!   raise it, so stm may undersell until the next SetStock.
//! - Progress under contention is not fair; within a process, Reserves of the same
//!   SKUs take turns locally (see [`LocalTurns`]) so that etcd only sees conflicts
//!   between processes.

use std::collections::BTreeMap;
use std::sync::Arc;

use coord::stm::{self, Options};
use serde::{Deserialize, Serialize};
use shop_common::coordination::SharedSession;
use shop_common::domain::{Cart, OrderId, Sku};

use crate::repository::{SaleBuyer, Seed, Shortage};

/// Most attempts of one stm decision. Local turns keep same-process contenders out of
/// each other's way, so conflicts come from other replicas only; this is generous.
const MAX_ATTEMPTS: u32 = 60;

/// What [`StmStock::take`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The units are taken (now, or by an earlier attempt for this order).
    Taken,
    OutOfStock(Shortage),
    /// The cart would take the customer past the sale's limit.
    LimitExceeded {
        held: i64,
        wanted: i64,
        limit: i64,
    },
}

/// Why the etcd side failed (nothing was taken).
#[derive(Debug, thiserror::Error)]
pub enum StmError {
    #[error(transparent)]
    Coord(#[from] coord::Error),
    /// A key holds something this service did not write.
    #[error("etcd key {key} holds {value:?}, which is not {what}")]
    Corrupt {
        key: String,
        value: String,
        what: &'static str,
    },
    /// The hold of this order is for a different cart (an order id reserves one cart).
    #[error("order {0} already holds units for a different cart")]
    DifferentCart(OrderId),
    /// No Postgres seed for a SKU of the cart (a bug: the caller reads them all).
    #[error("no seed for SKU {0}")]
    MissingSeed(Sku),
}

/// How a decision's transaction ends without committing: a refusal (out of stock,
/// over the limit) or a failure. Either way it returns `Err` from the STM closure, so
/// the writes buffered before the refusal (other lines' counters) are discarded.
#[derive(Debug)]
enum Refusal {
    Refused(Taken),
    Failed(StmError),
}

impl From<StmError> for Refusal {
    fn from(e: StmError) -> Refusal {
        Refusal::Failed(e)
    }
}

impl From<coord::Error> for Refusal {
    fn from(e: coord::Error) -> Refusal {
        Refusal::Failed(e.into())
    }
}

/// What a hold records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hold {
    lines: Vec<HoldLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HoldLine {
    sku: String,
    quantity: i64,
    /// The counter's epoch when the units were taken.
    epoch: i64,
}

impl Hold {
    fn same_cart(&self, cart: &Cart) -> bool {
        self.lines.len() == cart.lines().len()
            && self
                .lines
                .iter()
                .zip(cart.lines())
                .all(|(h, l)| h.sku == l.sku.as_str() && h.quantity == i64::from(l.quantity.get()))
    }
}

/// A counter's value: `<epoch>:<available>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    epoch: i64,
    available: i64,
}

impl Counter {
    fn encode(self) -> String {
        format!("{}:{}", self.epoch, self.available)
    }
}

/// The `stm` strategy's etcd state. One per process.
pub struct StmStock {
    session: Arc<SharedSession>,
    turns: LocalTurns,
}

impl StmStock {
    pub fn new(session: Arc<SharedSession>) -> StmStock {
        StmStock {
            session,
            turns: LocalTurns::new(),
        }
    }

    /// The counter of a SKU (a hold records its SKUs as plain strings).
    pub fn counter_key(&self, sku: &str) -> String {
        format!("{}/stock/{sku}", self.session.prefix())
    }

    pub fn customer_key(&self, sale: &str, customer: &str) -> String {
        format!(
            "{}/sales/{sale}/customers/{customer}",
            self.session.prefix()
        )
    }

    pub fn holds_prefix(&self) -> String {
        format!("{}/stm/holds/", self.session.prefix())
    }

    fn hold_key(&self, order: OrderId) -> String {
        format!("{}{order}", self.holds_prefix())
    }

    /// Step 2 of a reservation (module docs): takes every line's units and the
    /// customer's allowance in one STM transaction, or nothing.
    pub async fn take(
        &self,
        order: OrderId,
        cart: &Cart,
        seeds: &BTreeMap<Sku, Seed>,
        buyer: Option<&SaleBuyer>,
    ) -> Result<Taken, StmError> {
        let client = self.session.client().await?;
        let hold_key = self.hold_key(order);
        let counter_keys: Vec<String> = cart.skus().map(|s| self.counter_key(s.as_str())).collect();
        let customer_key = buyer.map(|b| self.customer_key(b.sale.as_str(), b.customer.as_str()));
        let mut prefetch = vec![hold_key.clone()];
        prefetch.extend(counter_keys.iter().cloned());
        prefetch.extend(customer_key.iter().cloned());
        let options = Options::new()
            .prefetch(&prefetch)
            .max_attempts(MAX_ATTEMPTS);
        // Same-SKU Reserves of this process take turns, so their transactions do not
        // conflict with each other in etcd (only with other replicas').
        let _turn = self.turns.enter(cart).await;
        let done = stm::run(&client, options, |tx| {
            let (hold_key, counter_keys, customer_key) = (&hold_key, &counter_keys, &customer_key);
            async move {
                if let Some(raw) = tx.get_string(hold_key).await? {
                    let hold: Hold = decode_hold(hold_key, &raw)?;
                    return if hold.same_cart(cart) {
                        Ok(Taken::Taken)
                    } else {
                        Err(StmError::DifferentCart(order).into())
                    };
                }
                let mut lines = Vec::with_capacity(cart.lines().len());
                for (line, key) in cart.lines().iter().zip(counter_keys) {
                    let seed = seeds
                        .get(&line.sku)
                        .ok_or_else(|| StmError::MissingSeed(line.sku.clone()))?;
                    // No counter yet, or one older than the stock setting we read
                    // (SetStock ran since it was seeded): start from Postgres.
                    let counter = match tx.get_string(key).await? {
                        Some(raw) => Some(decode_counter(key, &raw)?),
                        None => None,
                    }
                    .filter(|c| c.epoch >= seed.epoch)
                    .unwrap_or(Counter {
                        epoch: seed.epoch,
                        available: seed.available,
                    });
                    let wanted = i64::from(line.quantity.get());
                    if counter.available < wanted {
                        return Err(Refusal::Refused(Taken::OutOfStock(Shortage {
                            sku: line.sku.clone(),
                            wanted: line.quantity.get(),
                            available: Some(counter.available),
                        })));
                    }
                    tx.put(
                        key,
                        Counter {
                            epoch: counter.epoch,
                            available: counter.available - wanted,
                        }
                        .encode(),
                    );
                    lines.push(HoldLine {
                        sku: line.sku.as_str().to_owned(),
                        quantity: wanted,
                        epoch: counter.epoch,
                    });
                }
                if let (Some(buyer), Some(key)) = (buyer, customer_key) {
                    let held = match tx.get_string(key).await? {
                        Some(raw) => decode_units(key, &raw)?,
                        None => 0,
                    };
                    let wanted = cart.units();
                    if let Some(limit) = buyer.limit {
                        if held + wanted > limit {
                            return Err(Refusal::Refused(Taken::LimitExceeded {
                                held,
                                wanted,
                                limit,
                            }));
                        }
                    }
                    tx.put(key, (held + wanted).to_string());
                }
                let hold = Hold {
                    lines,
                    sale: buyer.map(|b| b.sale.as_str().to_owned()),
                    customer: buyer.map(|b| b.customer.as_str().to_owned()),
                };
                tx.put(
                    hold_key,
                    serde_json::to_string(&hold).expect("a hold serialises"),
                );
                Ok(Taken::Taken)
            }
        })
        .await;
        let done = match done {
            Ok(done) => done,
            // A refusal aborts the transaction: none of its buffered writes commit.
            Err(Refusal::Refused(taken)) => return Ok(taken),
            Err(Refusal::Failed(e)) => return Err(e),
        };
        if done.attempts > 1 {
            tracing::debug!(%order, attempts = done.attempts, "stm reservation retried after conflicts");
        }
        Ok(done.value)
    }

    /// Gives an order's held units back (counters and customer count up, hold deleted)
    /// in one transaction. `false` if the order holds nothing (never took, or given
    /// back already): calling it again is harmless.
    pub async fn give_back(&self, order: OrderId) -> Result<bool, StmError> {
        let client = self.session.client().await?;
        let hold_key = self.hold_key(order);
        let options = Options::new().prefetch([&hold_key]);
        let done = stm::run(&client, options, |tx| {
            let hold_key = &hold_key;
            async move {
                let Some(raw) = tx.get_string(hold_key).await? else {
                    return Ok(false);
                };
                let hold = decode_hold(hold_key, &raw)?;
                for line in &hold.lines {
                    let key = self.counter_key(&line.sku);
                    if let Some(raw) = tx.get_string(&key).await? {
                        let counter = decode_counter(&key, &raw)?;
                        // Re-seeded since (SetStock): the seed already counts them.
                        if counter.epoch == line.epoch {
                            tx.put(
                                &key,
                                Counter {
                                    epoch: counter.epoch,
                                    available: counter.available + line.quantity,
                                }
                                .encode(),
                            );
                        }
                    }
                }
                if let (Some(sale), Some(customer)) = (&hold.sale, &hold.customer) {
                    let key = self.customer_key(sale, customer);
                    if let Some(raw) = tx.get_string(&key).await? {
                        let held = decode_units(&key, &raw)?;
                        let units: i64 = hold.lines.iter().map(|l| l.quantity).sum();
                        tx.put(&key, (held - units).max(0).to_string());
                    }
                }
                tx.del(hold_key);
                Ok::<_, StmError>(true)
            }
        })
        .await?;
        Ok(done.value)
    }

    /// Deletes a committed order's hold: its units stay taken.
    pub async fn forget(&self, order: OrderId) -> Result<(), StmError> {
        let mut client = self.session.client().await?;
        client
            .delete(self.hold_key(order), None)
            .await
            .map_err(coord::Error::from)?;
        Ok(())
    }

    /// The orders that hold units in etcd (for the reconcile job), at most `limit`.
    pub async fn holders(&self, limit: i64) -> Result<Vec<OrderId>, StmError> {
        let mut client = self.session.client().await?;
        let prefix = self.holds_prefix();
        let found = client
            .get(
                prefix.as_str(),
                Some(
                    coord::etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_limit(limit),
                ),
            )
            .await
            .map_err(coord::Error::from)?;
        Ok(found
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                OrderId::parse("hold", key.strip_prefix(&prefix)?).ok()
            })
            .collect())
    }
}

fn decode_hold(key: &str, raw: &str) -> Result<Hold, StmError> {
    serde_json::from_str(raw).map_err(|_| corrupt(key, raw, "a reservation hold"))
}

fn decode_counter(key: &str, raw: &str) -> Result<Counter, StmError> {
    raw.split_once(':')
        .and_then(|(e, a)| {
            Some(Counter {
                epoch: e.parse().ok()?,
                available: a.parse().ok()?,
            })
        })
        .ok_or_else(|| corrupt(key, raw, "<epoch>:<available>"))
}

fn decode_units(key: &str, raw: &str) -> Result<i64, StmError> {
    raw.parse()
        .map_err(|_| corrupt(key, raw, "a number of units"))
}

fn corrupt(key: &str, raw: &str, what: &'static str) -> StmError {
    StmError::Corrupt {
        key: key.to_owned(),
        value: shop_common::domain::truncate(raw, 64),
        what,
    }
}

/// Turns for same-SKU stm Reserves within one process: a fixed set of stripes (a SKU
/// hashes to one), taken in ascending order so two carts never wait on each other in
/// a cycle. Without them, N concurrent Reserves of one hot SKU would each read the
/// counter and all but one would conflict and retry against etcd; with them, the
/// process sends one decision at a time per SKU and etcd arbitrates only between
/// replicas. Correctness does not depend on them: the STM does.
pub struct LocalTurns {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

const STRIPES: usize = 256;

impl LocalTurns {
    fn new() -> LocalTurns {
        LocalTurns {
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    async fn enter(&self, cart: &Cart) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut wanted: Vec<usize> = cart.skus().map(stripe).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut held = Vec::with_capacity(wanted.len());
        for i in wanted {
            held.push(self.stripes[i].lock().await);
        }
        held
    }
}

fn stripe(sku: &Sku) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sku.hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}
