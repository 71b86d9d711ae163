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
    Reserved,
    Committed,
    Released,
}

impl ReservationState {
    fn from_db(s: &str) -> Result<ReservationState, sqlx::Error> {
        match s {
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
                 total = EXCLUDED.available + stock.reserved + stock.sold, updated_at = now()
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
        let Some(level) = self.get_stock(sku).await? else {
            return Ok(None);
        };
        let (lines_reserved, lines_committed): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)::bigint,
                    COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)::bigint
             FROM reservation_lines l JOIN reservations r USING (order_id)
             WHERE l.sku = $1",
        )
        .bind(sku.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(StockAudit {
            level,
            lines_reserved,
            lines_committed,
        }))
    }

    /// The cart's SKUs that do not exist, sorted.
    pub async fn unknown_skus(&self, cart: &Cart) -> Result<Vec<Sku>, sqlx::Error> {
        let wanted: Vec<&str> = cart.skus().map(Sku::as_str).collect();
        let known: Vec<String> = sqlx::query_scalar("SELECT sku FROM stock WHERE sku = ANY($1)")
            .bind(&wanted)
            .fetch_all(&self.pool)
            .await?;
        Ok(cart
            .skus()
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
            None => Ok(None),
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

    /// Reserves every line of `cart` for `order`, or nothing (see the module docs).
    pub async fn reserve(
        &self,
        order: OrderId,
        cart: &Cart,
        strategy: Strategy,
        check: StockCheck<'_>,
    ) -> Result<ReserveOutcome, ReserveDbError> {
        let mut tx = self.pool.begin().await?;
        // Claim the order. If its row exists (or appears while we wait on a concurrent
        // insert of it), an earlier Reserve or a Release decided already.
        let claimed = sqlx::query(
            "INSERT INTO reservations (order_id, state, strategy) VALUES ($1, 'RESERVED', $2)
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order.as_uuid())
        .bind(strategy.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await?;
            return self.earlier_outcome(order, cart).await?.ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "reservation of order {order} conflicted but is not there"
                ))
                .into()
            });
        }
        for line in cart.lines() {
            let taken = match check {
                StockCheck::Unguarded { think_time } => {
                    take_unguarded(&mut tx, &line.sku, line.quantity.get(), think_time).await?
                }
                StockCheck::Fenced { tokens, think_time } => {
                    let token = *tokens
                        .get(&line.sku)
                        .ok_or_else(|| ReserveDbError::MissingToken(line.sku.clone()))?;
                    take_fenced(&mut tx, &line.sku, line.quantity.get(), token, think_time).await?
                }
                StockCheck::Conditional => {
                    take_conditional(&mut tx, &line.sku, line.quantity.get()).await?
                }
            };
            if let Err(shortage) = taken {
                tx.rollback().await?;
                return Ok(ReserveOutcome::OutOfStock(shortage));
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

    /// Moves an order's reserved units to sold. Idempotent.
    pub async fn commit(&self, order: OrderId) -> Result<ReservationState, SettleDbError> {
        let mut tx = self.pool.begin().await?;
        let state = lock_reservation(&mut tx, order).await?;
        match state {
            None => Err(SettleDbError::NotFound(order)),
            Some(ReservationState::Committed) => Ok(ReservationState::Committed),
            Some(state @ ReservationState::Released) => Err(SettleDbError::Conflict {
                order,
                state,
                action: "commit",
            }),
            Some(ReservationState::Reserved) => {
                move_lines(
                    &mut tx,
                    order,
                    "UPDATE stock SET reserved = reserved - $2, sold = sold + $2, updated_at = now()
                     WHERE sku = $1",
                )
                .await?;
                set_state(&mut tx, order, ReservationState::Committed).await?;
                tx.commit().await?;
                Ok(ReservationState::Committed)
            }
        }
    }

    /// Returns an order's reserved units, or leaves a tombstone if it reserved nothing
    /// yet. Idempotent.
    pub async fn release(&self, order: OrderId) -> Result<ReservationState, SettleDbError> {
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
            return Ok(ReservationState::Released);
        }
        match lock_reservation(&mut tx, order).await? {
            Some(ReservationState::Released) => Ok(ReservationState::Released),
            Some(state @ ReservationState::Committed) => Err(SettleDbError::Conflict {
                order,
                state,
                action: "release",
            }),
            Some(ReservationState::Reserved) => {
                move_lines(
                    &mut tx,
                    order,
                    "UPDATE stock SET available = available + $2, reserved = reserved - $2,
                                      updated_at = now()
                     WHERE sku = $1",
                )
                .await?;
                set_state(&mut tx, order, ReservationState::Released).await?;
                tx.commit().await?;
                Ok(ReservationState::Released)
            }
            None => Err(SettleDbError::Database(sqlx::Error::Protocol(format!(
                "reservation of order {order} conflicted but is not there"
            )))),
        }
    }
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

/// The order's reservation state, row-locked until the transaction ends.
async fn lock_reservation(
    tx: &mut Transaction<'_, Postgres>,
    order: OrderId,
) -> Result<Option<ReservationState>, sqlx::Error> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1 FOR UPDATE")
            .bind(order.as_uuid())
            .fetch_optional(&mut **tx)
            .await?;
    state.as_deref().map(ReservationState::from_db).transpose()
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

fn shortage(sku: &Sku, wanted: i32, available: Option<i64>) -> Shortage {
    Shortage {
        sku: sku.clone(),
        wanted,
        available,
    }
}
