//! Reserve under the SKUs' strategy: the part of the inventory the load tester compares.
//!
//! The strategy is the SKU's (SetStock sets it): a request may name one only to
//! assert it, and one that names another is refused ([`ReserveError::StrategyMismatch`]),
//! as is a cart whose SKUs have different strategies ([`ReserveError::MixedStrategies`]):
//! no client can reserve a SKU under a weaker guard than the shop chose.
//!
//! | strategy | what guards "enough stock?" (and a sale's per-customer limit) | oversells? |
//! |---|---|---|
//! | `none`  | nothing: read, think, write the new value | yes, under concurrency (and exceeds limits) |
//! | `mutex-unfenced` | the same section under a coord Mutex per SKU (`<prefix>/locks/sku/<sku>`), taken in sorted order | no, unless a holder outlives its lease inside the section |
//! | `mutex` | the same lock; the read announces the lock's fencing token to the row, the write requires it | no |
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
    Guard, InventoryDb, LimitExceeded, ReserveDbError, ReserveInput, ReserveOutcome, SaleBuyer,
    SettleDbError, Settled, StockCheck,
};
use crate::sales::{SaleError, Sales};
use crate::stm::{StmError, StmStock, Taken};

/// Why a Reserve failed. Out of stock is not a failure: it is a [`ReserveOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("unknown SKU(s): {}", list(.0))]
    UnknownSkus(Vec<Sku>),
    /// The request named a strategy other than the SKU's; nothing was reserved.
    #[error("SKU {sku} is guarded by strategy {actual}, the request asked for {requested}; a SKU's strategy is set with SetStock, leave it unspecified to use it; nothing was reserved")]
    StrategyMismatch {
        sku: Sku,
        actual: Strategy,
        requested: Strategy,
    },
    /// The cart's SKUs have different strategies; nothing was reserved.
    #[error("the cart's SKUs have different strategies ({}); order them separately; nothing was reserved", .0.iter().map(|(sku, st)| format!("{sku}: {st}")).collect::<Vec<_>>().join(", "))]
    MixedStrategies(Vec<(Sku, Strategy)>),
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
    /// The locks of the order's SKUs (strategies mutex, mutex-unfenced) could not be
    /// taken in time; nothing was released.
    #[error("could not lock SKU(s) {} within {timeout:?}; nothing was released, retry", list(.skus))]
    LockTimeout { skus: Vec<Sku>, timeout: Duration },
    /// etcd failed while locking the order's SKUs; nothing was released.
    #[error("etcd: {0}; nothing was released, retry")]
    Coordination(#[source] coord::Error),
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
    /// The strategy the client asserted (`None`: whatever the SKUs' is).
    pub strategy: Option<Strategy>,
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

    /// The strategy a Reserve of `cart` runs under, given its SKUs' strategies as read:
    /// their one. Refuses unknown SKUs, a cart whose SKUs disagree, and a request
    /// asserting another strategy.
    fn strategy_among(
        strategies: BTreeMap<Sku, Strategy>,
        cart: &Cart,
        requested: Option<Strategy>,
    ) -> Result<Strategy, ReserveError> {
        let unknown: Vec<Sku> = cart
            .skus()
            .filter(|sku| !strategies.contains_key(*sku))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ReserveError::UnknownSkus(unknown));
        }
        // Knockout (tests only): the request chooses the guard, as it did before.
        #[cfg(feature = "knockout-sku-strategy")]
        if let Some(requested) = requested {
            return Ok(requested);
        }
        let mut all = strategies.iter();
        let (first_sku, &strategy) = all.next().expect("a cart has a line");
        if all.any(|(_, &other)| other != strategy) {
            return Err(ReserveError::MixedStrategies(
                strategies.into_iter().collect(),
            ));
        }
        match requested {
            Some(requested) if requested != strategy => Err(ReserveError::StrategyMismatch {
                sku: first_sku.clone(),
                actual: strategy,
                requested,
            }),
            _ => Ok(strategy),
        }
    }

    /// Reserves every line of the cart for the order under its SKUs' strategy, or
    /// nothing; answers which strategy that was. Idempotent on the order; a Reserve
    /// after the order's Release takes nothing.
    pub async fn reserve(
        &self,
        request: &ReserveRequest,
    ) -> Result<(Strategy, ReserveOutcome), ReserveError> {
        let (order, cart) = (request.order, &request.cart);
        // The SKUs' strategy and the order's own row, in one read.
        let (strategies, state) = self
            .db
            .strategies_and_state(cart.skus(), Some(order))
            .await?;
        let strategy = Self::strategy_among(strategies, cart, request.strategy)?;
        // A retry (or a Reserve after Release) is answered without waiting or locking.
        if let Some(outcome) = self.db.outcome_in_state(state, order, cart).await? {
            return Ok((strategy, outcome));
        }
        moment!(AfterOwnRow, order);
        self.reserve_with(request, strategy)
            .await
            .map(|outcome| (strategy, outcome))
    }

    async fn reserve_with(
        &self,
        request: &ReserveRequest,
        strategy: Strategy,
    ) -> Result<ReserveOutcome, ReserveError> {
        let (order, cart) = (request.order, &request.cart);
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
                .reserve(
                    input,
                    StockCheck::Section {
                        guard: Guard::Nothing,
                        think_time,
                    },
                )
                .await?),
            Strategy::Pg => Ok(self.db.reserve(input, StockCheck::Conditional).await?),
            Strategy::Mutex | Strategy::MutexUnfenced => {
                // Sold out already? Then say so without queueing for the lock: the
                // read is a real observation of a moment at which the line could not
                // be served, and answering from it takes nothing (stock only grows
                // by SetStock or a Release). In a rush, most buyers arrive after the
                // last unit is gone; they now cost one read instead of a lock cycle.
                // But the units may be gone to this very order: a concurrent attempt
                // with the same order id may have reserved since the own-row check
                // above. So the answer is decided by the order's row read after the
                // stock: a reservation there is this Reserve's answer too.
                if let Some(shortage) = self.db.short_line(cart).await? {
                    return Ok(sold_out_unless_own(&self.db, order, cart, shortage).await?);
                }
                let held = match coord::timeout(self.lock_timeout, self.locks.lock_all(cart.skus()))
                    .await
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
                let guard = match strategy {
                    Strategy::Mutex => Guard::Fenced(&tokens),
                    _ => Guard::Lock,
                };
                let reserved = self
                    .db
                    .reserve(input, StockCheck::Section { guard, think_time })
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
            moment!(BeforeUnprepare, order);
            self.db.unprepare(order).await?;
            return Ok(refused);
        }
        moment!(BeforeRecord, order);
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
            // A concurrent attempt of this order was refused and withdrew the claim:
            // nothing is recorded, so the etcd units go back now.
            Err(e @ ReserveDbError::ClaimWithdrawn(_)) => {
                tracing::info!(%order, error = %e, "stm: claim withdrawn by a concurrent attempt; giving the units back");
                if let Err(e) = self.stm.give_back(order).await {
                    tracing::warn!(%order, error = %e, "stm: giving back units failed; the reconcile job will");
                }
            }
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
    /// Units reserved under `mutex` or `mutex-unfenced` go back under the SKUs' locks
    /// (fenced for `mutex`): their critical sections write absolute values, which an
    /// unlocked return landing between a holder's read and write would be lost to.
    pub async fn release(&self, order: OrderId) -> Result<Settled, SettleError> {
        let (strategy, skus) = self
            .db
            .locked_lines(order)
            .await
            .map_err(SettleDbError::Database)?;
        let settled = if skus.is_empty() {
            self.db.release(order, None).await?
        } else {
            let held =
                match coord::timeout(self.lock_timeout, self.locks.lock_all(skus.iter())).await {
                    Ok(held) => held,
                    Err(coord::Error::Timeout(timeout)) => {
                        return Err(SettleError::LockTimeout { skus, timeout })
                    }
                    Err(e) => return Err(SettleError::Coordination(e)),
                };
            let tokens = held.tokens();
            let fenced = (strategy == Strategy::Mutex).then_some(&tokens);
            let released = self.db.release(order, fenced).await;
            held.unlock().await;
            released?
        };
        if settled.strategy == Some(Strategy::Stm) {
            self.stm
                .give_back(order)
                .await
                .map_err(SettleError::GiveBack)?;
        }
        Ok(settled)
    }
}

/// The answer to a Reserve that read `shortage`: the order's own earlier decision if
/// its row (read now, after the stock) has one, else out of stock. Knockout (tests
/// only, `knockout-sold-out-shortcut`): the stock read alone answers, as it once did.
async fn sold_out_unless_own(
    db: &InventoryDb,
    order: OrderId,
    cart: &Cart,
    shortage: crate::repository::Shortage,
) -> Result<ReserveOutcome, ReserveDbError> {
    #[cfg(not(feature = "knockout-sold-out-shortcut"))]
    if let Some(own) = db.earlier_outcome(order, cart).await? {
        return Ok(own);
    }
    #[cfg(feature = "knockout-sold-out-shortcut")]
    let _ = (db, order, cart);
    Ok(ReserveOutcome::OutOfStock(shortage))
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

    /// Locks every SKU (given in sorted order, as a cart's are), so two carts sharing
    /// SKUs can never hold one each and wait for the other's. If this future is
    /// dropped or fails half-way, the locks already taken are released (guards' `Drop`).
    pub async fn lock_all(&self, skus: impl Iterator<Item = &Sku>) -> coord::Result<HeldLocks> {
        let session = self.session.get().await?;
        let mut held = Vec::new();
        for sku in skus {
            let mutex = coord::Mutex::new(&session, &knockout_lock_name(self.lock_name(sku)))?;
            held.push((sku.clone(), mutex.lock().await?));
        }
        Ok(HeldLocks(held))
    }
}

/// The lock's name as taken.
#[cfg(not(feature = "knockout-lock"))]
fn knockout_lock_name(name: String) -> String {
    name
}

/// Knockout (tests only): every acquisition locks a name of its own, so the lock
/// excludes nobody (its fencing token still grows with every acquisition).
#[cfg(feature = "knockout-lock")]
fn knockout_lock_name(name: String) -> String {
    format!("{name}/knockout-{}", uuid::Uuid::new_v4().simple())
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
