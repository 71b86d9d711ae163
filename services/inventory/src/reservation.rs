//! Reserve with a strategy: the part of the inventory the load tester compares.
//!
//! | strategy | what guards "enough stock?" | oversells? |
//! |---|---|---|
//! | `none`  | nothing: read, think, write | yes, under concurrency |
//! | `mutex` | a coord Mutex per SKU (`<prefix>/locks/sku/<sku>`), taken in sorted order; the write is fenced by the lock's token | no |
//! | `pg`    | one conditional UPDATE per SKU in one transaction | no |
//! | `stm`   | coord STM over etcd counters — **integration point**, UNIMPLEMENTED until coord's STM lands | — |
//!
//! Commit and Release need no strategy: they only move units already set aside
//! (relative updates), see [`crate::repository`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coord::MutexGuard;
use shop_common::coordination::SharedSession;
use shop_common::domain::{Cart, OrderId, Sku, Strategy};

use crate::repository::{InventoryDb, ReserveDbError, ReserveOutcome, StockCheck};

/// Why a Reserve failed. Out of stock is not a failure: it is a [`ReserveOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("unknown SKU(s): {}", list(.0))]
    UnknownSkus(Vec<Sku>),
    /// The strategy exists in the API but not in this build (STM).
    #[error("strategy {0} is not available yet: {1}")]
    StrategyNotAvailable(Strategy, &'static str),
    /// The SKU locks could not be taken in time (etcd unreachable or slow, or a lock
    /// held for longer than the limit). Nothing was written.
    #[error("could not lock SKU(s) {} within {timeout:?} (etcd unreachable, slow, or the lock is held that long); nothing was reserved", list(.skus))]
    LockTimeout { skus: Vec<Sku>, timeout: Duration },
    /// etcd refused or failed (session lost, transport error). Nothing was written.
    #[error("etcd: {0}; nothing was reserved")]
    Coordination(#[source] coord::Error),
    #[error(transparent)]
    Db(#[from] ReserveDbError),
}

impl From<sqlx::Error> for ReserveError {
    fn from(e: sqlx::Error) -> ReserveError {
        ReserveError::Db(ReserveDbError::Database(e))
    }
}

fn list(skus: &[Sku]) -> String {
    skus.iter().map(Sku::as_str).collect::<Vec<_>>().join(", ")
}

/// Applies a reservation strategy. One per process, shared by all requests.
pub struct Reserver {
    db: InventoryDb,
    locks: SkuLocks,
    /// Pause between reading and writing stock in `none` and `mutex`: stands for the
    /// application work a real read-check-write does there, and makes the `none` race
    /// visible. `pg` has no such window.
    think_time: Duration,
    lock_timeout: Duration,
}

impl Reserver {
    pub fn new(
        db: InventoryDb,
        locks: SkuLocks,
        think_time: Duration,
        lock_timeout: Duration,
    ) -> Reserver {
        Reserver {
            db,
            locks,
            think_time,
            lock_timeout,
        }
    }

    /// Reserves every line of `cart` for `order` with `strategy`, or nothing.
    /// Idempotent on `order`; a Reserve after the order's Release takes nothing.
    pub async fn reserve(
        &self,
        order: OrderId,
        cart: &Cart,
        strategy: Strategy,
    ) -> Result<ReserveOutcome, ReserveError> {
        let unknown = self.db.unknown_skus(cart).await?;
        if !unknown.is_empty() {
            return Err(ReserveError::UnknownSkus(unknown));
        }
        // A retry (or a Reserve after Release) is answered without locking anything.
        if let Some(outcome) = self.db.earlier_outcome(order, cart).await? {
            return Ok(outcome);
        }
        let think_time = self.think_time;
        match strategy {
            Strategy::None => Ok(self
                .db
                .reserve(order, cart, strategy, StockCheck::Unguarded { think_time })
                .await?),
            Strategy::Pg => Ok(self
                .db
                .reserve(order, cart, strategy, StockCheck::Conditional)
                .await?),
            Strategy::Mutex => {
                let held = match coord::timeout(self.lock_timeout, self.locks.lock_all(cart)).await
                {
                    Ok(held) => held,
                    Err(coord::Error::Timeout(timeout)) => {
                        return Err(ReserveError::LockTimeout {
                            skus: cart.skus().cloned().collect(),
                            timeout,
                        })
                    }
                    Err(e) => return Err(ReserveError::Coordination(e)),
                };
                let tokens = held.tokens();
                let reserved = self
                    .db
                    .reserve(
                        order,
                        cart,
                        strategy,
                        StockCheck::Fenced {
                            tokens: &tokens,
                            think_time,
                        },
                    )
                    .await;
                // Unlock only after the transaction has committed (or rolled back):
                // the next holder must read what we wrote.
                held.unlock().await;
                Ok(reserved?)
            }
            // Integration point for coord's STM (another branch): decrement every SKU's
            // counter under `<prefix>/stock/<sku>` in one STM transaction (+ the
            // per-customer sale limit), then record the reservation rows here.
            Strategy::Stm => Err(ReserveError::StrategyNotAvailable(
                Strategy::Stm,
                "coord's software transactional memory is not part of this build yet; use mutex or pg",
            )),
        }
    }
}

/// The per-SKU coord Mutexes of the `mutex` strategy, all under the process's one
/// shared session.
pub struct SkuLocks {
    session: Arc<SharedSession>,
}

impl SkuLocks {
    pub fn new(session: Arc<SharedSession>) -> SkuLocks {
        SkuLocks { session }
    }

    /// The lock name of a SKU: `<prefix>/locks/sku/<sku>` (a SKU has no `/`).
    pub fn lock_name(&self, sku: &Sku) -> String {
        format!("{}/locks/sku/{}", self.session.prefix(), sku)
    }

    /// Locks every SKU of the cart, in sorted order, so two carts sharing SKUs can
    /// never hold one each and wait for the other's. If this future is dropped or
    /// fails half-way, the locks already taken are released (guards' `Drop`).
    pub async fn lock_all(&self, cart: &Cart) -> coord::Result<HeldLocks> {
        let session = self.session.get().await?;
        let mut held = Vec::with_capacity(cart.lines().len());
        for sku in cart.skus() {
            let mutex = coord::Mutex::new(&session, &self.lock_name(sku))?;
            held.push((sku.clone(), mutex.lock().await?));
        }
        Ok(HeldLocks(held))
    }
}

/// The locks of one Reserve, with their fencing tokens.
pub struct HeldLocks(Vec<(Sku, MutexGuard)>);

impl HeldLocks {
    pub fn tokens(&self) -> BTreeMap<Sku, i64> {
        self.0
            .iter()
            .map(|(sku, guard)| (sku.clone(), guard.fencing_token()))
            .collect()
    }

    /// Releases every lock, newest first. A lock found lost is only logged: whatever
    /// was written under it was fenced.
    pub async fn unlock(self) {
        for (sku, guard) in self.0.into_iter().rev() {
            if let Err(e) = guard.unlock().await {
                tracing::warn!(%sku, error = %e, "unlocking SKU failed (lock lost or etcd unreachable); the lease cleans up");
            }
        }
    }
}
