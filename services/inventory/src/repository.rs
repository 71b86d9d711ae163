//! The inventory database: stock rows and reservations (`migrations/inventory/`).
//!
//! # The reservation protocol (per order)
//! - **Reserve** starts by inserting the order's `reservations` row (state RESERVED)
//!   inside its transaction. That row is the per-order serialisation point: a
//!   concurrent Reserve or Release of the same order blocks on it, and whoever commits
//!   first decides. Then every line's stock is checked and taken (how depends on the
//!   [`StockCheck`]), the lines are inserted, and the transaction commits: all lines
//!   or none.
//! - **Release** inserts the same row as RELEASED. If that succeeds, the order never
//!   reserved anything: the row is a tombstone, and a Reserve arriving later finds it
//!   and takes nothing (a "hanging" reservation is impossible). Otherwise it returns
//!   the lines' units to `available`, once.
//! - **Commit** moves the lines' units from `reserved` to `sold`, once.
//!
//! Every stock change here is relative (`available = available - q`), except the
//! `none` strategy's deliberate lost update, so releases and commits never need a lock.
//! SKUs are always touched in sorted order (a [`Cart`] is sorted), so two transactions
//! can never wait for each other's rows in a cycle.

use std::collections::BTreeMap;
use std::time::Duration;

use shop_common::domain::{Cart, OrderId, Sku, Strategy};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::stm::{SaleBuyer, Seed};

/// A SKU's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: Sku,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub fence_token: i64,
}

/// A SKU whose counters disagree with its reservation rows (see [`InventoryDb::drifted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub sku: String,
    pub available: i64,
    /// What available + reserved + sold should add up to.
    pub total: i64,
    pub reserved: i64,
    pub sold: i64,
    /// Units on RESERVED reservations.
    pub lines_reserved: i64,
    /// Units on COMMITTED reservations.
    pub lines_committed: i64,
}

impl Drift {
    /// Units promised beyond the stock total: max(0, reserved + sold − total), taking
    /// the larger of the counters and the reservation rows (a lost update can hide
    /// promised units from the counters, never from the rows). 0 when no total was
    /// recorded (a SKU set before totals existed reports `total` 0 and is skipped).
    pub fn oversold(&self) -> i64 {
        if self.total <= 0 {
            return 0;
        }
        let promised = (self.reserved + self.sold).max(self.lines_reserved + self.lines_committed);
        (promised - self.total).max(0)
    }
}

/// A SKU's counters next to what its reservation rows add up to: the input of the
/// reconciliation job (planned: leader-elected `reconcile-stock`) and of the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockAudit {
    pub level: StockLevel,
    /// Units on lines of RESERVED reservations.
    pub lines_reserved: i64,
    /// Units on lines of COMMITTED reservations.
    pub lines_committed: i64,
}

impl StockAudit {
    /// Units promised to buyers (reserved or sold) according to the reservation rows.
    pub fn promised(&self) -> i64 {
        self.lines_reserved + self.lines_committed
    }

    /// Where the counters disagree with the rows (empty when they agree).
    pub fn drift(&self) -> Vec<String> {
        let mut drift = Vec::new();
        if self.level.reserved != self.lines_reserved {
            drift.push(format!(
                "{}: reserved counter {} but reservation rows hold {}",
                self.level.sku, self.level.reserved, self.lines_reserved
            ));
        }
        if self.level.sold != self.lines_committed {
            drift.push(format!(
                "{}: sold counter {} but committed rows hold {}",
                self.level.sku, self.level.sold, self.lines_committed
            ));
        }
        drift
    }

    /// `Ok` when the counters agree with the rows and no unit was created or lost
    /// since the SKU was stocked with `initial` units (and not restocked since).
    pub fn check(&self, initial: i64) -> Result<(), String> {
        let mut problems = self.drift();
        let l = &self.level;
        if l.available + l.reserved + l.sold != initial {
            problems.push(format!(
                "{}: available {} + reserved {} + sold {} != {initial} stocked",
                l.sku, l.available, l.reserved, l.sold
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// An order's reservation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// An stm Reserve has claimed the order and is deciding in etcd.
    Preparing,
    Reserved,
    Committed,
    Released,
}

impl ReservationState {
    fn from_db(s: &str) -> Result<ReservationState, sqlx::Error> {
        match s {
            "PREPARING" => Ok(ReservationState::Preparing),
            "RESERVED" => Ok(ReservationState::Reserved),
            "COMMITTED" => Ok(ReservationState::Committed),
            "RELEASED" => Ok(ReservationState::Released),
            other => Err(sqlx::Error::Decode(
                format!("unknown reservation state {other:?}").into(),
            )),
        }
    }
}

/// How Reserve checks and takes each line's stock: the strategies' difference.
#[derive(Debug, Clone, Copy)]
pub enum StockCheck<'a> {
    /// `none`: read the row, "think" for a moment, write back `available` computed from
    /// the read. Nothing stops two buyers from reading the same value: lost updates,
    /// overselling. (`reserved` is incremented relatively, so the oversell shows as
    /// `reserved + sold > initial stock` and Commit/Release keep working.)
    Unguarded { think_time: Duration },
    /// `mutex`: the caller holds every SKU's lock. Read, think, check, then write
    /// `WHERE fence_token <= token` and store the token: a holder whose lock expired
    /// (and was handed on) is rejected with [`ReserveError::StaleFencingToken`].
    Fenced {
        tokens: &'a BTreeMap<Sku, i64>,
        think_time: Duration,
    },
    /// `pg`: one conditional decrement per SKU (`WHERE available >= q`); Postgres's
    /// row lock is the only coordination.
    Conditional,
    /// `stm`: etcd decided already (see `crate::stm`); record the decrement. The
    /// `available >= 0` CHECK is the backstop should etcd's counter be ahead.
    Decided,
}

impl StockCheck<'_> {
    /// How the same strategy guards a sale's per-customer limit: `none` reads, thinks
    /// and writes (and can exceed it); `mutex` and `pg` use one conditional upsert
    /// (the row is the customer's own, contended only by their concurrent orders);
    /// `stm` decided in etcd and records.
    fn limit_guard(self) -> LimitGuard {
        match self {
            StockCheck::Unguarded { think_time } => LimitGuard::Unguarded { think_time },
            StockCheck::Fenced { .. } | StockCheck::Conditional => LimitGuard::Conditional,
            StockCheck::Decided => LimitGuard::Decided,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum LimitGuard {
    Unguarded { think_time: Duration },
    Conditional,
    Decided,
}

/// What one Reserve asks for.
#[derive(Debug, Clone, Copy)]
pub struct ReserveInput<'a> {
    pub order: OrderId,
    pub cart: &'a Cart,
    pub strategy: Strategy,
    /// Set for an order in a sale.
    pub buyer: Option<&'a SaleBuyer>,
}

/// What a Reserve did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every line is reserved (now, or already by an earlier call).
    Reserved,
    /// A SKU had too few units; nothing was reserved.
    OutOfStock(Shortage),
    /// The order was released before this Reserve; nothing was reserved.
    AlreadyReleased,
    /// The cart would take the customer past the sale's per-customer limit; nothing
    /// was reserved.
    LimitExceeded(LimitExceeded),
}

/// A sale limit a Reserve would have broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    pub sale: String,
    pub customer: String,
    /// Units the customer already holds in the sale (when known).
    pub held: Option<i64>,
    pub wanted: i64,
    pub limit: i64,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "limit exceeded: customer {} may hold {} units in sale {}",
            self.customer, self.limit, self.sale
        )?;
        match self.held {
            Some(held) => write!(f, " (holds {held}, wanted {} more)", self.wanted),
            None => write!(f, " (wanted {} more)", self.wanted),
        }
    }
}

/// Which SKU was short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: Sku,
    pub wanted: i32,
    /// What was available when checked (unknown if the stock changed under a write).
    pub available: Option<i64>,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.available {
            Some(available) => write!(
                f,
                "out of stock: {} (wanted {}, {} available)",
                self.sku, self.wanted, available
            ),
            None => write!(f, "out of stock: {} (wanted {})", self.sku, self.wanted),
        }
    }
}

/// Why a Reserve failed (the database side; see `reservation::ReserveError` for all).
#[derive(Debug, thiserror::Error)]
pub enum ReserveDbError {
    /// A fenced write carried a token lower than one already accepted for the SKU: the
    /// lock it was made under had expired and another holder has written since.
    /// Nothing of this Reserve was written.
    #[error("stale fencing token {token} for SKU {sku}: the lock was lost and a newer holder (token {current}) has written; nothing was written")]
    StaleFencingToken { sku: Sku, token: i64, current: i64 },
    /// The order already holds a reservation for other lines.
    #[error(
        "order {0} already holds a reservation for different lines; an order id reserves one cart"
    )]
    DifferentCart(OrderId),
    /// A fenced Reserve was called without a token for one of its SKUs (a bug).
    #[error("no fencing token for SKU {0}")]
    MissingToken(Sku),
    /// An stm Reserve of the order is deciding right now (or was cut off); a Reserve
    /// with another strategy cannot take over.
    #[error("order {0} is being reserved with strategy stm; retry, or release it")]
    InProgress(OrderId),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why a Commit or Release could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SettleDbError {
    /// Commit of an order that reserved nothing.
    #[error("order {0} has no reservation")]
    NotFound(OrderId),
    /// Commit after Release, or Release after Commit.
    #[error("order {order}'s reservation is {state:?}; cannot {action} it")]
    Conflict {
        order: OrderId,
        state: ReservationState,
        action: &'static str,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The inventory database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct InventoryDb {
    pool: PgPool,
}

impl InventoryDb {
    pub fn new(pool: PgPool) -> InventoryDb {
        InventoryDb { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sets a SKU's available units, creating the SKU if new.
    pub async fn set_stock(&self, sku: &Sku, available: i64) -> Result<StockLevel, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO stock (sku, available, total) VALUES ($1, $2, $2)
             ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available,
                 total = EXCLUDED.available + stock.reserved + stock.sold,
                 stm_epoch = stock.stm_epoch + 1, updated_at = now()
             RETURNING sku, available, reserved, sold, fence_token",
        )
        .bind(sku.as_str())
        .bind(available)
        .fetch_one(&self.pool)
        .await?;
        stock_level(sku, &row)
    }

    pub async fn get_stock(&self, sku: &Sku) -> Result<Option<StockLevel>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT sku, available, reserved, sold, fence_token FROM stock WHERE sku = $1",
        )
        .bind(sku.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| stock_level(sku, &row)).transpose()
    }

    /// The counters and reservation rows of a SKU (`None` if unknown).
    /// SKUs whose numbers do not add up: available + reserved + sold differs from the
    /// total fixed when the stock was set, or `reserved` / `sold` differ from the units
    /// on RESERVED / COMMITTED reservations. Strategy `none` produces such drift on
    /// purpose (lost updates); the others never should.
    pub async fn drifted(&self) -> Result<Vec<Drift>, sqlx::Error> {
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT s.sku, s.available, s.reserved, s.sold, COALESCE(s.total, 0),
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)::bigint,
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)::bigint
             FROM stock s
             LEFT JOIN reservation_lines l ON l.sku = s.sku
             LEFT JOIN reservations r ON r.order_id = l.order_id
             GROUP BY s.sku, s.available, s.reserved, s.sold, s.total
             HAVING s.available + s.reserved + s.sold <> COALESCE(s.total, s.available + s.reserved + s.sold)
                 OR s.reserved <> COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)
                 OR s.sold <> COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(sku, available, reserved, sold, total, lines_reserved, lines_committed)| Drift {
                    sku,
                    available,
                    total,
                    reserved,
                    sold,
                    lines_reserved,
                    lines_committed,
                },
            )
            .collect())
    }

    pub async fn audit(&self, sku: &Sku) -> Result<Option<StockAudit>, sqlx::Error> {
        // One statement, so the counters and the rows come from one snapshot: two reads
        // would let a Commit landing between them look like drift.
        let row = sqlx::query(
            "SELECT s.sku, s.available, s.reserved, s.sold, s.fence_token,
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)::bigint
                        AS lines_reserved,
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)::bigint
                        AS lines_committed
             FROM stock s
             LEFT JOIN reservation_lines l ON l.sku = s.sku
             LEFT JOIN reservations r ON r.order_id = l.order_id
             WHERE s.sku = $1
             GROUP BY s.sku, s.available, s.reserved, s.sold, s.fence_token",
        )
        .bind(sku.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(StockAudit {
                level: stock_level(sku, &row)?,
                lines_reserved: row.try_get("lines_reserved")?,
                lines_committed: row.try_get("lines_committed")?,
            })
        })
        .transpose()
    }

    /// The given SKUs that do not exist, in the order given.
    pub async fn unknown_skus<'a>(
        &self,
        skus: impl IntoIterator<Item = &'a Sku>,
    ) -> Result<Vec<Sku>, sqlx::Error> {
        let skus: Vec<&Sku> = skus.into_iter().collect();
        let wanted: Vec<&str> = skus.iter().map(|s| s.as_str()).collect();
        let known: Vec<String> = sqlx::query_scalar("SELECT sku FROM stock WHERE sku = ANY($1)")
            .bind(&wanted)
            .fetch_all(&self.pool)
            .await?;
        Ok(skus
            .into_iter()
            .filter(|sku| !known.iter().any(|k| k == sku.as_str()))
            .cloned()
            .collect())
    }

    pub async fn reservation_state(
        &self,
        order: OrderId,
    ) -> Result<Option<ReservationState>, sqlx::Error> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1")
                .bind(order.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        state.as_deref().map(ReservationState::from_db).transpose()
    }

    /// What an earlier Reserve or Release of `order` decided, if there was one: a
    /// retry gets the same answer. A retry must ask for the same lines; a different
    /// cart under the same order id is [`ReserveDbError::DifferentCart`].
    pub async fn earlier_outcome(
        &self,
        order: OrderId,
        cart: &Cart,
    ) -> Result<Option<ReserveOutcome>, ReserveDbError> {
        match self.reservation_state(order).await? {
            None | Some(ReservationState::Preparing) => Ok(None),
            Some(ReservationState::Released) => Ok(Some(ReserveOutcome::AlreadyReleased)),
            Some(_) => {
                let held: Vec<(String, i32)> = sqlx::query_as(
                    "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
                )
                .bind(order.as_uuid())
                .fetch_all(&self.pool)
                .await?;
                let same = held.len() == cart.lines().len()
                    && held
                        .iter()
                        .zip(cart.lines())
                        .all(|((sku, quantity), line)| {
                            sku == line.sku.as_str() && *quantity == line.quantity.get()
                        });
                if same {
                    Ok(Some(ReserveOutcome::Reserved))
                } else {
                    Err(ReserveDbError::DifferentCart(order))
                }
            }
        }
    }

    /// Each SKU's `available` and stock epoch, read without a lock: what the stm
    /// strategy seeds its etcd counters from, and what [`Self::short_line`] checks.
    pub async fn stock_snapshot(&self, cart: &Cart) -> Result<BTreeMap<Sku, Seed>, sqlx::Error> {
        let wanted: Vec<&str> = cart.skus().map(Sku::as_str).collect();
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT sku, stm_epoch, available FROM stock WHERE sku = ANY($1)")
                .bind(&wanted)
                .fetch_all(&self.pool)
                .await?;
        Ok(cart
            .skus()
            .filter_map(|sku| {
                let (_, epoch, available) = rows.iter().find(|r| r.0 == sku.as_str())?;
                Some((
                    sku.clone(),
                    Seed {
                        epoch: *epoch,
                        available: *available,
                    },
                ))
            })
            .collect())
    }

    /// The first line of the cart that the stock, read without any lock, cannot
    /// serve right now (`None` if all could).
    pub async fn short_line(&self, cart: &Cart) -> Result<Option<Shortage>, sqlx::Error> {
        let snapshot = self.stock_snapshot(cart).await?;
        Ok(cart.lines().iter().find_map(|line| {
            let available = snapshot.get(&line.sku)?.available;
            (available < i64::from(line.quantity.get()))
                .then(|| shortage(&line.sku, line.quantity.get(), Some(available)))
        }))
    }

    /// Step 1 of an stm Reserve (see `crate::stm`): claims the order as PREPARING.
    /// `Ok(None)`: claimed now, or by an earlier stm attempt that did not finish — go
    /// on to etcd. `Ok(Some(outcome))`: decided already.
    pub async fn prepare(
        &self,
        input: ReserveInput<'_>,
    ) -> Result<Option<ReserveOutcome>, ReserveDbError> {
        let claimed = sqlx::query(
            "INSERT INTO reservations (order_id, state, strategy, sale_id, customer_id)
             VALUES ($1, 'PREPARING', 'stm', $2, $3)
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(input.order.as_uuid())
        .bind(input.buyer.map(|b| b.sale.as_str()))
        .bind(input.buyer.map(|b| b.customer.as_str()))
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            return Ok(None);
        }
        match self.reservation_state(input.order).await? {
            Some(ReservationState::Preparing) => {
                let strategy: Option<String> =
                    sqlx::query_scalar("SELECT strategy FROM reservations WHERE order_id = $1")
                        .bind(input.order.as_uuid())
                        .fetch_one(&self.pool)
                        .await?;
                match strategy.as_deref() {
                    Some("stm") => Ok(None),
                    _ => Err(ReserveDbError::InProgress(input.order)),
                }
            }
            _ => self.earlier_outcome(input.order, input.cart).await,
        }
    }

    /// Removes the PREPARING claim of an stm Reserve that etcd refused (out of stock,
    /// limit): nothing was taken, and a later Reserve may try again.
    pub async fn unprepare(&self, order: OrderId) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM reservations WHERE order_id = $1 AND state = 'PREPARING'")
            .bind(order.as_uuid())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reserves every line of the cart for the order, or nothing (see the module
    /// docs); in a sale, also counts the units against the customer's limit.
    pub async fn reserve(
        &self,
        input: ReserveInput<'_>,
        check: StockCheck<'_>,
    ) -> Result<ReserveOutcome, ReserveDbError> {
        let ReserveInput {
            order,
            cart,
            strategy,
            buyer,
        } = input;
        let mut tx = self.pool.begin().await?;
        // Claim the order. If its row exists (or appears while we wait on a concurrent
        // insert of it), an earlier Reserve or a Release decided already. An stm
        // Reserve claimed it as PREPARING before going to etcd and now completes it.
        let claimed = match check {
            StockCheck::Decided => {
                sqlx::query(
                    "UPDATE reservations SET state = 'RESERVED', updated_at = now()
                 WHERE order_id = $1 AND state = 'PREPARING'",
                )
                .bind(order.as_uuid())
                .execute(&mut *tx)
                .await?
            }
            _ => {
                sqlx::query(
                    "INSERT INTO reservations (order_id, state, strategy, sale_id, customer_id)
                 VALUES ($1, 'RESERVED', $2, $3, $4)
                 ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(order.as_uuid())
                .bind(strategy.as_str())
                .bind(buyer.map(|b| b.sale.as_str()))
                .bind(buyer.map(|b| b.customer.as_str()))
                .execute(&mut *tx)
                .await?
            }
        }
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await?;
            if self.reservation_state(order).await? == Some(ReservationState::Preparing) {
                return Err(ReserveDbError::InProgress(order));
            }
            return self.earlier_outcome(order, cart).await?.ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "reservation of order {order} conflicted but is not there"
                ))
                .into()
            });
        }
        for line in cart.lines() {
            let (sku, quantity) = (&line.sku, line.quantity.get());
            let taken = match check {
                StockCheck::Unguarded { think_time } => {
                    take_unguarded(&mut tx, sku, quantity, think_time).await?
                }
                StockCheck::Fenced { tokens, think_time } => {
                    let token = *tokens
                        .get(sku)
                        .ok_or_else(|| ReserveDbError::MissingToken(sku.clone()))?;
                    take_fenced(&mut tx, sku, quantity, token, think_time).await?
                }
                StockCheck::Conditional => take_conditional(&mut tx, sku, quantity).await?,
                StockCheck::Decided => take_decided(&mut tx, sku, quantity).await?,
            };
            if let Err(shortage) = taken {
                tx.rollback().await?;
                return Ok(ReserveOutcome::OutOfStock(shortage));
            }
        }
        if let Some(buyer) = buyer {
            let counted = count_purchase(&mut tx, buyer, cart.units(), check.limit_guard()).await?;
            if let Err(exceeded) = counted {
                tx.rollback().await?;
                return Ok(ReserveOutcome::LimitExceeded(exceeded));
            }
        }
        let (skus, quantities) = cart.columns();
        sqlx::query(
            "INSERT INTO reservation_lines (order_id, sku, quantity)
             SELECT $1, sku, quantity FROM UNNEST($2::text[], $3::int[]) AS l (sku, quantity)",
        )
        .bind(order.as_uuid())
        .bind(&skus)
        .bind(&quantities)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ReserveOutcome::Reserved)
    }

    /// Units a customer holds in a sale, per the reservations.
    pub async fn purchased(&self, sale: &str, customer: &str) -> Result<i64, sqlx::Error> {
        let units: Option<i64> = sqlx::query_scalar(
            "SELECT units FROM sale_purchases WHERE sale_id = $1 AND customer_id = $2",
        )
        .bind(sale)
        .bind(customer)
        .fetch_optional(&self.pool)
        .await?;
        Ok(units.unwrap_or(0))
    }

    /// Moves an order's reserved units to sold. Idempotent.
    pub async fn commit(&self, order: OrderId) -> Result<Settled, SettleDbError> {
        let mut tx = self.pool.begin().await?;
        let Some((state, strategy)) = lock_reservation(&mut tx, order).await? else {
            return Err(SettleDbError::NotFound(order));
        };
        let settled = |state| Settled { state, strategy };
        match state {
            ReservationState::Committed => Ok(settled(ReservationState::Committed)),
            state @ (ReservationState::Released | ReservationState::Preparing) => {
                Err(SettleDbError::Conflict {
                    order,
                    state,
                    action: "commit",
                })
            }
            ReservationState::Reserved => {
                move_lines(
                    &mut tx,
                    order,
                    "UPDATE stock SET reserved = reserved - $2, sold = sold + $2, updated_at = now()
                     WHERE sku = $1",
                )
                .await?;
                set_state(&mut tx, order, ReservationState::Committed).await?;
                tx.commit().await?;
                Ok(settled(ReservationState::Committed))
            }
        }
    }

    /// Returns an order's reserved units (and the customer's allowance in its sale),
    /// or leaves a tombstone if it reserved nothing yet. Idempotent. The etcd side of
    /// an stm reservation is the caller's to give back (`strategy` says so).
    pub async fn release(&self, order: OrderId) -> Result<Settled, SettleDbError> {
        let mut tx = self.pool.begin().await?;
        let tombstone = sqlx::query(
            "INSERT INTO reservations (order_id, state) VALUES ($1, 'RELEASED')
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order.as_uuid())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if tombstone {
            tx.commit().await?;
            tracing::info!(%order, "release before reserve: tombstone written");
            return Ok(Settled {
                state: ReservationState::Released,
                strategy: None,
            });
        }
        let Some((state, strategy)) = lock_reservation(&mut tx, order).await? else {
            return Err(SettleDbError::Database(sqlx::Error::Protocol(format!(
                "reservation of order {order} conflicted but is not there"
            ))));
        };
        let released = Settled {
            state: ReservationState::Released,
            strategy,
        };
        match state {
            ReservationState::Released => Ok(released),
            state @ ReservationState::Committed => Err(SettleDbError::Conflict {
                order,
                state,
                action: "release",
            }),
            // An stm Reserve is deciding in etcd: it finds RELEASED when it comes back
            // and gives its units back itself.
            ReservationState::Preparing => {
                set_state(&mut tx, order, ReservationState::Released).await?;
                tx.commit().await?;
                Ok(released)
            }
            ReservationState::Reserved => {
                move_lines(
                    &mut tx,
                    order,
                    "UPDATE stock SET available = available + $2, reserved = reserved - $2,
                                      updated_at = now()
                     WHERE sku = $1",
                )
                .await?;
                sqlx::query(
                    "UPDATE sale_purchases p SET units = GREATEST(p.units - l.units, 0)
                     FROM (SELECT r.sale_id, r.customer_id, SUM(rl.quantity)::bigint AS units
                           FROM reservations r JOIN reservation_lines rl USING (order_id)
                           WHERE r.order_id = $1 AND r.sale_id IS NOT NULL
                           GROUP BY r.sale_id, r.customer_id) l
                     WHERE p.sale_id = l.sale_id AND p.customer_id = l.customer_id",
                )
                .bind(order.as_uuid())
                .execute(&mut *tx)
                .await?;
                set_state(&mut tx, order, ReservationState::Released).await?;
                tx.commit().await?;
                Ok(released)
            }
        }
    }

    /// The state and strategy of the reservations of these orders (for the reconcile
    /// job's sweep of stm holds); orders without a row are left out.
    pub async fn reservation_states(
        &self,
        orders: &[OrderId],
    ) -> Result<Vec<(OrderId, ReservationState)>, sqlx::Error> {
        let ids: Vec<uuid::Uuid> = orders.iter().map(|o| o.as_uuid()).collect();
        let rows: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT order_id, state FROM reservations WHERE order_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(id, state)| Ok((OrderId::from_uuid(id), ReservationState::from_db(&state)?)))
            .collect()
    }
}

/// What a Commit or Release left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub state: ReservationState,
    /// The strategy that reserved it (`None` for a tombstone).
    pub strategy: Option<Strategy>,
}

fn stock_level(sku: &Sku, row: &sqlx::postgres::PgRow) -> Result<StockLevel, sqlx::Error> {
    Ok(StockLevel {
        sku: sku.clone(),
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
        sold: row.try_get("sold")?,
        fence_token: row.try_get("fence_token")?,
    })
}

/// The order's reservation state and strategy, row-locked until the transaction ends.
async fn lock_reservation(
    tx: &mut Transaction<'_, Postgres>,
    order: OrderId,
) -> Result<Option<(ReservationState, Option<Strategy>)>, sqlx::Error> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT state, strategy FROM reservations WHERE order_id = $1 FOR UPDATE")
            .bind(order.as_uuid())
            .fetch_optional(&mut **tx)
            .await?;
    row.map(|(state, strategy)| {
        let strategy = strategy
            .map(|s| {
                s.parse::<Strategy>()
                    .map_err(|e| sqlx::Error::Decode(e.into()))
            })
            .transpose()?;
        Ok((ReservationState::from_db(&state)?, strategy))
    })
    .transpose()
}

/// Runs `update` (binds: sku, quantity) for each of the order's lines, in SKU order so
/// that concurrent settlements lock stock rows in one global order (no deadlocks).
async fn move_lines(
    tx: &mut Transaction<'_, Postgres>,
    order: OrderId,
    update: &'static str,
) -> Result<(), sqlx::Error> {
    let lines: Vec<(String, i32)> = sqlx::query_as(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
    )
    .bind(order.as_uuid())
    .fetch_all(&mut **tx)
    .await?;
    for (sku, quantity) in lines {
        sqlx::query(update)
            .bind(sku)
            .bind(i64::from(quantity))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn set_state(
    tx: &mut Transaction<'_, Postgres>,
    order: OrderId,
    state: ReservationState,
) -> Result<(), sqlx::Error> {
    let state = match state {
        ReservationState::Preparing => "PREPARING",
        ReservationState::Reserved => "RESERVED",
        ReservationState::Committed => "COMMITTED",
        ReservationState::Released => "RELEASED",
    };
    sqlx::query("UPDATE reservations SET state = $2, updated_at = now() WHERE order_id = $1")
        .bind(order.as_uuid())
        .bind(state)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Reads a SKU's available units (no row lock: that is the point of `none` and the
/// job of the lock in `mutex`).
async fn read_available(tx: &mut Transaction<'_, Postgres>, sku: &Sku) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
        .bind(sku.as_str())
        .fetch_one(&mut **tx)
        .await
}

/// `none`: read, think, write the computed value back. The lost update is the lesson.
async fn take_unguarded(
    tx: &mut Transaction<'_, Postgres>,
    sku: &Sku,
    quantity: i32,
    think_time: Duration,
) -> Result<Result<(), Shortage>, sqlx::Error> {
    let available = read_available(tx, sku).await?;
    if available < i64::from(quantity) {
        return Ok(Err(shortage(sku, quantity, Some(available))));
    }
    tokio::time::sleep(think_time).await;
    sqlx::query(
        "UPDATE stock SET available = $2, reserved = reserved + $3, updated_at = now()
         WHERE sku = $1",
    )
    .bind(sku.as_str())
    .bind(available - i64::from(quantity))
    .bind(i64::from(quantity))
    .execute(&mut **tx)
    .await?;
    Ok(Ok(()))
}

/// `mutex`: read, think, check under the caller's lock; then the fenced write.
///
/// The write is relative and conditional on the token: `fence_token <= token` means no
/// holder with a newer lock has written this SKU. If one has, our lock expired while we
/// worked (paused, partitioned) and we must not write. The one stale write fencing
/// cannot catch is one that lands *before* the new holder's first write; it is still
/// a relative decrement, so it can only make the new holder's own decrement fail the
/// `available >= 0` CHECK, which is reported as out of stock, never as an oversell.
async fn take_fenced(
    tx: &mut Transaction<'_, Postgres>,
    sku: &Sku,
    quantity: i32,
    token: i64,
    think_time: Duration,
) -> Result<Result<(), Shortage>, ReserveDbError> {
    let available = read_available(tx, sku).await?;
    if available < i64::from(quantity) {
        return Ok(Err(shortage(sku, quantity, Some(available))));
    }
    tokio::time::sleep(think_time).await;
    let written = sqlx::query(
        "UPDATE stock SET available = available - $2, reserved = reserved + $2,
                          fence_token = $3, updated_at = now()
         WHERE sku = $1 AND fence_token <= $3",
    )
    .bind(sku.as_str())
    .bind(i64::from(quantity))
    .bind(token)
    .execute(&mut **tx)
    .await;
    match written {
        Ok(done) if done.rows_affected() == 1 => Ok(Ok(())),
        Ok(_) => {
            let current: i64 = sqlx::query_scalar("SELECT fence_token FROM stock WHERE sku = $1")
                .bind(sku.as_str())
                .fetch_one(&mut **tx)
                .await?;
            Err(ReserveDbError::StaleFencingToken {
                sku: sku.clone(),
                token,
                current,
            })
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => {
            // available would go below zero: someone wrote outside our lock.
            Ok(Err(shortage(sku, quantity, None)))
        }
        Err(e) => Err(e.into()),
    }
}

/// `pg`: take the units only if they are there, in one statement.
async fn take_conditional(
    tx: &mut Transaction<'_, Postgres>,
    sku: &Sku,
    quantity: i32,
) -> Result<Result<(), Shortage>, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE stock SET available = available - $2, reserved = reserved + $2, updated_at = now()
         WHERE sku = $1 AND available >= $2",
    )
    .bind(sku.as_str())
    .bind(i64::from(quantity))
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if taken {
        Ok(Ok(()))
    } else {
        let available = read_available(tx, sku).await?;
        Ok(Err(shortage(sku, quantity, Some(available))))
    }
}

/// `stm`: etcd's counter already covered the line; record the decrement. A failed
/// CHECK means Postgres has fewer units than etcd believed (the SKU was also sold
/// with another strategy): refused as out of stock, never oversold.
async fn take_decided(
    tx: &mut Transaction<'_, Postgres>,
    sku: &Sku,
    quantity: i32,
) -> Result<Result<(), Shortage>, sqlx::Error> {
    let written = sqlx::query(
        "UPDATE stock SET available = available - $2, reserved = reserved + $2, updated_at = now()
         WHERE sku = $1",
    )
    .bind(sku.as_str())
    .bind(i64::from(quantity))
    .execute(&mut **tx)
    .await;
    match written {
        Ok(_) => Ok(Ok(())),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => {
            tracing::warn!(%sku, "stm: etcd's counter was ahead of Postgres (the SKU is also sold with another strategy?); refused");
            Ok(Err(shortage(sku, quantity, None)))
        }
        Err(e) => Err(e),
    }
}

/// Adds a Reserve's units to the customer's count in the sale, checking the limit the
/// way the strategy does (see [`StockCheck::limit_guard`]).
async fn count_purchase(
    tx: &mut Transaction<'_, Postgres>,
    buyer: &SaleBuyer,
    units: i64,
    guard: LimitGuard,
) -> Result<Result<(), LimitExceeded>, sqlx::Error> {
    let (sale, customer) = (buyer.sale.as_str(), buyer.customer.as_str());
    let exceeded = |held: Option<i64>, limit: i64| LimitExceeded {
        sale: sale.to_owned(),
        customer: customer.to_owned(),
        held,
        wanted: units,
        limit,
    };
    let limit = match (guard, buyer.limit) {
        (LimitGuard::Decided, _) | (_, None) => i64::MAX,
        (_, Some(limit)) => limit,
    };
    match guard {
        LimitGuard::Unguarded { think_time } => {
            let held: i64 = sqlx::query_scalar(
                "SELECT COALESCE((SELECT units FROM sale_purchases
                                  WHERE sale_id = $1 AND customer_id = $2), 0)",
            )
            .bind(sale)
            .bind(customer)
            .fetch_one(&mut **tx)
            .await?;
            if held + units > limit {
                return Ok(Err(exceeded(Some(held), limit)));
            }
            tokio::time::sleep(think_time).await;
            sqlx::query(
                "INSERT INTO sale_purchases (sale_id, customer_id, units) VALUES ($1, $2, $3)
                 ON CONFLICT (sale_id, customer_id) DO UPDATE SET units = EXCLUDED.units",
            )
            .bind(sale)
            .bind(customer)
            .bind(held + units)
            .execute(&mut **tx)
            .await?;
            Ok(Ok(()))
        }
        LimitGuard::Conditional | LimitGuard::Decided => {
            if units > limit {
                return Ok(Err(exceeded(None, limit)));
            }
            let counted = sqlx::query(
                "INSERT INTO sale_purchases (sale_id, customer_id, units) VALUES ($1, $2, $3)
                 ON CONFLICT (sale_id, customer_id) DO UPDATE
                     SET units = sale_purchases.units + EXCLUDED.units
                     WHERE sale_purchases.units + EXCLUDED.units <= $4",
            )
            .bind(sale)
            .bind(customer)
            .bind(units)
            .bind(limit)
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1;
            if counted {
                Ok(Ok(()))
            } else {
                Ok(Err(exceeded(None, limit)))
            }
        }
    }
}

fn shortage(sku: &Sku, wanted: i32, available: Option<i64>) -> Shortage {
    Shortage {
        sku: sku.clone(),
        wanted,
        available,
    }
}
