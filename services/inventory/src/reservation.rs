//! Reserve with a strategy: the part of the inventory the load tester compares.
//!
//! | strategy | what guards "enough stock?" (and a sale's per-customer limit) | oversells? |
//! |---|---|---|
//! | `none`  | nothing: read, think, write | yes, under concurrency (and exceeds limits) |
//! | `mutex` | a coord Mutex per SKU (`<prefix>/locks/sku/<sku>`), taken in sorted order; the write is fenced by the lock's token | no |
//! | `stm`   | one coord STM transaction over etcd counters (`<prefix>/stock/<sku>`) and the customer's count, see [`crate::stm`] | no |
//! | `pg`    | one conditional UPDATE per SKU in one transaction | no |
//!
//! An order in a flash sale first waits until the sale opens ([`crate::sales`]).
//! Commit and Release need no strategy: they only move units already set aside
//! (relative updates), see [`crate::repository`]; an stm reservation's etcd units are
//! given back here, after Postgres.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coord::MutexGuard;
use shop_common::coordination::SharedSession;
use shop_common::domain::{Cart, CustomerId, OrderId, SaleId, Sku, Strategy};

use crate::repository::{
    InventoryDb, LimitExceeded, ReserveDbError, ReserveInput, ReserveOutcome, SaleBuyer,
    SettleDbError, Settled, StockCheck,
};
use crate::sales::{SaleError, Sales};
use crate::stm::{StmError, StmStock, Taken};

/// Why a Reserve failed. Out of stock is not a failure: it is a [`ReserveOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("unknown SKU(s): {}", list(.0))]
    UnknownSkus(Vec<Sku>),
    /// The SKU locks could not be taken in time (etcd unreachable or slow, or a lock
    /// held for longer than the limit). Nothing was written.
    #[error("could not lock SKU(s) {} within {timeout:?} (etcd unreachable, slow, or the lock is held that long); nothing was reserved", list(.skus))]
    LockTimeout { skus: Vec<Sku>, timeout: Duration },
    /// etcd refused or failed (session lost, transport error). Nothing was written.
    #[error("etcd: {0}; nothing was reserved")]
    Coordination(#[source] coord::Error),
    /// The stm strategy's etcd step failed; nothing was taken.
    #[error("stm: {0}; nothing was reserved")]
    Stm(#[source] StmError),
    /// The sale is unknown or did not open in time.
    #[error(transparent)]
    Sale(SaleError),
    #[error(transparent)]
    Db(#[from] ReserveDbError),
}

impl From<sqlx::Error> for ReserveError {
    fn from(e: sqlx::Error) -> ReserveError {
        ReserveError::Db(ReserveDbError::Database(e))
    }
}

/// Why a Commit or Release failed.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Db(#[from] SettleDbError),
    /// Postgres has settled; giving the stm units back in etcd failed. Retrying the
    /// Release repeats only the etcd part (it is idempotent).
    #[error("the reservation is released, but its units could not be given back in etcd ({0}); retry the release")]
    GiveBack(#[source] StmError),
}

fn list(skus: &[Sku]) -> String {
    skus.iter().map(Sku::as_str).collect::<Vec<_>>().join(", ")
}

/// One Reserve request, parsed.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub order: OrderId,
    pub cart: Cart,
    pub strategy: Strategy,
    /// The sale the order belongs to, with its buyer.
    pub sale: Option<(SaleId, CustomerId)>,
}

/// Applies a reservation strategy. One per process, shared by all requests.
pub struct Reserver {
    db: InventoryDb,
    locks: SkuLocks,
    stm: StmStock,
    sales: Arc<Sales>,
    /// Pause between reading and writing stock in `none` and `mutex`: stands for the
    /// application work a real read-check-write does there, and makes the `none` race
    /// visible. `pg` and `stm` have no such window.
    think_time: Duration,
    lock_timeout: Duration,
}

impl Reserver {
    pub fn new(
        db: InventoryDb,
        session: Arc<SharedSession>,
        sales: Arc<Sales>,
        think_time: Duration,
        lock_timeout: Duration,
    ) -> Reserver {
        Reserver {
            db,
            locks: SkuLocks::new(session.clone()),
            stm: StmStock::new(session),
            sales,
            think_time,
            lock_timeout,
        }
    }

    /// The stm strategy's etcd side (for the reconcile job).
    pub fn stm(&self) -> &StmStock {
        &self.stm
    }

    /// Reserves every line of the cart for the order with the strategy, or nothing.
    /// Idempotent on the order; a Reserve after the order's Release takes nothing.
    pub async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveOutcome, ReserveError> {
        let (order, cart, strategy) = (request.order, &request.cart, request.strategy);
        let unknown = self.db.unknown_skus(cart.skus()).await?;
        if !unknown.is_empty() {
            return Err(ReserveError::UnknownSkus(unknown));
        }
        // A retry (or a Reserve after Release) is answered without waiting or locking.
        if let Some(outcome) = self.db.earlier_outcome(order, cart).await? {
            return Ok(outcome);
        }
        let buyer = match &request.sale {
            None => None,
            Some((sale, customer)) => {
                let sale = self
                    .sales
                    .wait_open(sale)
                    .await
                    .map_err(ReserveError::Sale)?;
                Some(SaleBuyer {
                    sale: sale.id,
                    customer: customer.clone(),
                    limit: sale.per_customer_limit,
                })
            }
        };
        let input = ReserveInput {
            order,
            cart,
            strategy,
            buyer: buyer.as_ref(),
        };
        let think_time = self.think_time;
        match strategy {
            Strategy::None => Ok(self
                .db
                .reserve(input, StockCheck::Unguarded { think_time })
                .await?),
            Strategy::Pg => Ok(self.db.reserve(input, StockCheck::Conditional).await?),
            Strategy::Mutex => {
                // Sold out already? Then say so without queueing for the lock: the
                // read is a real observation of a moment at which the line could not
                // be served, and answering from it takes nothing (stock only grows
                // by SetStock or a Release). In a rush, most buyers arrive after the
                // last unit is gone; they now cost one read instead of a lock cycle.
                if let Some(shortage) = self.db.short_line(cart).await? {
                    return Ok(ReserveOutcome::OutOfStock(shortage));
                }
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
                        input,
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
            Strategy::Stm => self.reserve_stm(input).await,
        }
    }

    /// The three steps of `crate::stm`: claim in Postgres, decide in etcd, record.
    async fn reserve_stm(&self, input: ReserveInput<'_>) -> Result<ReserveOutcome, ReserveError> {
        let order = input.order;
        if let Some(outcome) = self.db.prepare(input).await? {
            return Ok(outcome);
        }
        let seeds = self.db.stock_snapshot(input.cart).await?;
        let taken = tokio::time::timeout(
            self.lock_timeout,
            self.stm.take(order, input.cart, &seeds, input.buyer),
        )
        .await
        .map_err(|_| ReserveError::Stm(StmError::Coord(coord::Error::Timeout(self.lock_timeout))))?
        .map_err(ReserveError::Stm)?;
        let refused = match taken {
            Taken::Taken => None,
            Taken::OutOfStock(shortage) => Some(ReserveOutcome::OutOfStock(shortage)),
            Taken::LimitExceeded {
                held,
                wanted,
                limit,
            } => {
                let buyer = input.buyer.expect("a limit implies a buyer");
                Some(ReserveOutcome::LimitExceeded(LimitExceeded {
                    sale: buyer.sale.as_str().to_owned(),
                    customer: buyer.customer.as_str().to_owned(),
                    held: Some(held),
                    wanted,
                    limit,
                }))
            }
        };
        if let Some(refused) = refused {
            self.db.unprepare(order).await?;
            return Ok(refused);
        }
        let recorded = self.db.reserve(input, StockCheck::Decided).await;
        match &recorded {
            // Taken in etcd but not in Postgres: a Release overtook us, or Postgres
            // has fewer units than etcd thought. Give the etcd units back.
            Ok(ReserveOutcome::AlreadyReleased | ReserveOutcome::OutOfStock(_)) => {
                if let Err(e) = self.stm.give_back(order).await {
                    tracing::warn!(%order, error = %e, "stm: giving back units failed; the reconcile job will");
                }
                if matches!(recorded, Ok(ReserveOutcome::OutOfStock(_))) {
                    self.db.unprepare(order).await?;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%order, error = %e, "stm: taken in etcd, not recorded in Postgres; a retry or Release finishes it");
            }
        }
        Ok(recorded?)
    }

    /// Commits an order's reservation; an stm hold is then forgotten (best effort:
    /// the reconcile job deletes holds of committed orders).
    pub async fn commit(&self, order: OrderId) -> Result<Settled, SettleError> {
        let settled = self.db.commit(order).await?;
        if settled.strategy == Some(Strategy::Stm) {
            if let Err(e) = self.stm.forget(order).await {
                tracing::debug!(%order, error = %e, "stm: hold not deleted; the reconcile job will");
            }
        }
        Ok(settled)
    }

    /// Releases an order's reservation; an stm reservation's etcd units go back too.
    pub async fn release(&self, order: OrderId) -> Result<Settled, SettleError> {
        let settled = self.db.release(order).await?;
        if settled.strategy == Some(Strategy::Stm) {
            self.stm
                .give_back(order)
                .await
                .map_err(SettleError::GiveBack)?;
        }
        Ok(settled)
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
