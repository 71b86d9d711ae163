//! Commit and Release: move an order's units from reserved to sold, or back to
//! available (and out of the customer's count in its sale), once; a Release before any
//! Reserve leaves a tombstone.

use std::collections::BTreeMap;

use shop_common::domain::{OrderId, Sku, Strategy};
use sqlx::{Postgres, Transaction};

use super::model::{ReservationState, SettleDbError, Settled};
use super::stock::InventoryDb;

/// How often a Release writes its tombstone again after the row it conflicted with
/// vanished (see [`InventoryDb::release`]).
const RELEASE_ATTEMPTS: u32 = 5;

/// How often a Commit looks again after the order's row changed under it.
const COMMIT_ATTEMPTS: u32 = 5;

/// Commit in one statement (`$1`: the order). In the order every other settlement and
/// Reserve takes its locks, so none can wait for another in a cycle:
/// 1. `committed` moves the order's row from RESERVED to COMMITTED, locking it (a
///    concurrent Release or Commit of the order waits here, or we wait for it and then
///    find the row no longer RESERVED and change nothing);
/// 2. `locked` locks the stock rows of the order's lines **in SKU order** (a locking
///    SELECT sorts before it locks); nothing if step 1 changed nothing;
/// 3. `moved` moves each line's units from `reserved` to `sold`. Its condition on
///    `ARRAY(SELECT … FROM locked)`, a subquery that depends on no row of the update,
///    is computed in full before the update touches its first row, so every lock of
///    step 2 is held by then.
///
/// Returns the order's row as the statement's snapshot saw it (state, strategy) and
/// whether step 1 committed it now; no row: the order has no reservation.
const COMMIT: &str = "
    WITH committed AS (
        UPDATE reservations SET state = 'COMMITTED', updated_at = now()
        WHERE order_id = $1 AND state = 'RESERVED'
        RETURNING order_id
    ), locked AS (
        SELECT s.sku FROM stock s
        WHERE s.sku IN (SELECT l.sku FROM reservation_lines l JOIN committed USING (order_id))
        ORDER BY s.sku
        FOR UPDATE
    ), moved AS (
        UPDATE stock s
        SET reserved = s.reserved - l.quantity, sold = s.sold + l.quantity, updated_at = now()
        FROM reservation_lines l
        WHERE l.order_id = $1 AND s.sku = l.sku AND s.sku = ANY (ARRAY(SELECT sku FROM locked))
    )
    SELECT r.state, r.strategy, EXISTS (SELECT 1 FROM committed)
    FROM reservations r WHERE r.order_id = $1";

impl InventoryDb {
    /// Moves an order's reserved units to sold. Idempotent.
    ///
    /// One statement, one round trip (see [`COMMIT`]). If the order's row changed
    /// between the statement's snapshot and its lock (a concurrent Release or Commit
    /// got there first), the statement changed nothing and is run again, to read
    /// what that other call decided.
    pub async fn commit(&self, order: OrderId) -> Result<Settled, SettleDbError> {
        for _ in 0..COMMIT_ATTEMPTS {
            let row: Option<(String, Option<String>, bool)> = sqlx::query_as(COMMIT)
                .bind(order.as_uuid())
                .fetch_optional(self.pool())
                .await?;
            let Some((state, strategy, committed_now)) = row else {
                return Err(SettleDbError::NotFound(order));
            };
            let (state, strategy) = reservation_row(&state, strategy)?;
            let committed = Settled {
                state: ReservationState::Committed,
                strategy,
            };
            match state {
                _ if committed_now => return Ok(committed),
                ReservationState::Committed => return Ok(committed),
                state @ (ReservationState::Released | ReservationState::Preparing) => {
                    return Err(SettleDbError::Conflict {
                        order,
                        state,
                        action: "commit",
                    })
                }
                // RESERVED in the snapshot, yet not committed by us: someone else
                // changed the row meanwhile. Look again.
                ReservationState::Reserved => {}
            }
        }
        Err(SettleDbError::CommitRaced {
            order,
            attempts: COMMIT_ATTEMPTS,
        })
    }

    /// The SKUs an order holds under a locked strategy (`mutex-unfenced`, `mutex`):
    /// their critical sections write absolute values, so a Release of their units
    /// must take the same locks. Empty for anything else.
    pub async fn locked_lines(&self, order: OrderId) -> Result<(Strategy, Vec<Sku>), sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT r.strategy, l.sku FROM reservations r
             JOIN reservation_lines l USING (order_id)
             WHERE r.order_id = $1 AND r.state = 'RESERVED'
               AND r.strategy IN ('mutex', 'mutex-unfenced')
             ORDER BY l.sku",
        )
        .bind(order.as_uuid())
        .fetch_all(self.pool())
        .await?;
        let strategy = match rows.first() {
            Some((s, _)) => s
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            None => Strategy::Pg,
        };
        let skus = rows
            .into_iter()
            .map(|(_, sku)| Sku::parse("sku", &sku).map_err(|e| sqlx::Error::Decode(e.into())))
            .collect::<Result<_, _>>()?;
        Ok((strategy, skus))
    }

    /// Returns an order's reserved units (and the customer's allowance in its sale),
    /// or leaves a tombstone if it reserved nothing yet. Idempotent. The etcd side of
    /// an stm reservation is the caller's to give back (`strategy` says so). With
    /// `tokens` (the caller holds the `mutex` locks of the lines' SKUs), each line's
    /// return announces the token like a critical section's read, and is refused if
    /// a newer holder's is on the row.
    pub async fn release(
        &self,
        order: OrderId,
        tokens: Option<&BTreeMap<Sku, i64>>,
    ) -> Result<Settled, SettleDbError> {
        // Knockout (tests only): a Release before any Reserve leaves no tombstone.
        #[cfg(feature = "knockout-tombstone")]
        if self.reservation_state(order).await?.is_none() {
            return Ok(Settled {
                state: ReservationState::Released,
                strategy: None,
            });
        }
        // The tombstone insert conflicts with the order's row; then that row is locked.
        // Between the two, an stm Reserve that etcd refused may delete its PREPARING
        // claim (`unprepare`): it reserved nothing, so the tombstone goes in after all
        // — try again. Each retry needs another stm attempt of the order to claim and
        // be refused in that window; a few in a row is a named race, not a fault.
        let mut attempts = 0;
        let (mut tx, state, strategy) = loop {
            attempts += 1;
            let mut tx = self.pool().begin().await?;
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
            moment!(ReleaseFoundRow, order);
            match lock_reservation(&mut tx, order).await? {
                Some((state, strategy)) => break (tx, state, strategy),
                #[cfg(feature = "knockout-release-race")]
                None => {
                    return Err(SettleDbError::Database(sqlx::Error::Protocol(format!(
                        "reservation of order {order} conflicted but is not there"
                    ))))
                }
                #[cfg(not(feature = "knockout-release-race"))]
                None if attempts < RELEASE_ATTEMPTS => {
                    tracing::info!(%order, "release: the order's unfinished stm claim was withdrawn meanwhile; writing the tombstone again");
                    tx.rollback().await?;
                }
                #[cfg(not(feature = "knockout-release-race"))]
                None => return Err(SettleDbError::Raced { order, attempts }),
            }
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
                return_lines(&mut tx, order, tokens).await?;
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
    row.map(|(state, strategy)| reservation_row(&state, strategy))
        .transpose()
}

/// A `reservations` row's state and strategy, decoded.
fn reservation_row(
    state: &str,
    strategy: Option<String>,
) -> Result<(ReservationState, Option<Strategy>), sqlx::Error> {
    let strategy = strategy
        .map(|s| s.parse::<Strategy>())
        .transpose()
        .map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok((ReservationState::from_db(state)?, strategy))
}

/// The order's lines (SKU, quantity), in SKU order.
async fn lines_in_sku_order(
    tx: &mut Transaction<'_, Postgres>,
    order: OrderId,
) -> Result<Vec<(String, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku")
        .bind(order.as_uuid())
        .fetch_all(&mut **tx)
        .await
}

/// Puts each of the order's lines back into `available`, in SKU order; with
/// `tokens`, only where the row's fence is not newer than the line's token (and
/// raising it to that token).
async fn return_lines(
    tx: &mut Transaction<'_, Postgres>,
    order: OrderId,
    tokens: Option<&BTreeMap<Sku, i64>>,
) -> Result<(), SettleDbError> {
    let lines = lines_in_sku_order(tx, order).await?;
    for (sku, quantity) in lines {
        let token = tokens.and_then(|t| t.iter().find(|(s, _)| s.as_str() == sku).map(|(_, t)| *t));
        let returned = sqlx::query(
            "UPDATE stock SET available = available + $2, reserved = reserved - $2,
                              fence_token = GREATEST(fence_token, COALESCE($3, 0)),
                              updated_at = now()
             WHERE sku = $1 AND ($3::bigint IS NULL OR fence_token <= $3)",
        )
        .bind(&sku)
        .bind(i64::from(quantity))
        .bind(token)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if returned == 0 {
            return Err(SettleDbError::StaleFencingToken {
                sku,
                token: token.unwrap_or_default(),
            });
        }
    }
    Ok(())
}

async fn set_state(
    tx: &mut Transaction<'_, Postgres>,
    order: OrderId,
    state: ReservationState,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservations SET state = $2, updated_at = now() WHERE order_id = $1")
        .bind(order.as_uuid())
        .bind(state.as_db())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
