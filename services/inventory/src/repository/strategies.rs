//! How each strategy takes one line's units inside a Reserve's transaction
//! ([`StockCheck`]: `take_unguarded` for `none`, `take_fenced` for `mutex`,
//! `take_conditional` for `pg`, `take_decided` for `stm`), and how it counts a sale's
//! per-customer limit (`count_purchase`).

use std::collections::BTreeMap;
use std::time::Duration;

use shop_common::domain::Sku;
use sqlx::{Postgres, Transaction};

use super::model::{shortage, LimitExceeded, ReserveDbError, SaleBuyer, Shortage};

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
    /// (and was handed on) is rejected with [`ReserveDbError::StaleFencingToken`].
    Fenced {
        tokens: &'a BTreeMap<Sku, i64>,
        think_time: Duration,
    },
    /// `pg`: one conditional decrement per SKU (`WHERE available >= q`); Postgres's
    /// row lock is the only coordination.
    Conditional,
    /// `stm`: etcd decided already (the `stm` module); record the decrement. The
    /// `available >= 0` CHECK is the backstop should etcd's counter be ahead.
    Decided,
}

impl StockCheck<'_> {
    /// How the same strategy guards a sale's per-customer limit: `none` reads, thinks
    /// and writes (and can exceed it); `mutex` and `pg` use one conditional upsert
    /// (the row is the customer's own, contended only by their concurrent orders);
    /// `stm` decided in etcd and records.
    pub(super) fn limit_guard(self) -> LimitGuard {
        match self {
            StockCheck::Unguarded { think_time } => LimitGuard::Unguarded { think_time },
            StockCheck::Fenced { .. } | StockCheck::Conditional => LimitGuard::Conditional,
            StockCheck::Decided => LimitGuard::Decided,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum LimitGuard {
    Unguarded { think_time: Duration },
    Conditional,
    Decided,
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
pub(super) async fn take_unguarded(
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
pub(super) async fn take_fenced(
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
pub(super) async fn take_conditional(
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
pub(super) async fn take_decided(
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
pub(super) async fn count_purchase(
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
