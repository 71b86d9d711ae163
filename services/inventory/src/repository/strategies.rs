//! How each strategy takes one line's units inside a Reserve's transaction
//! ([`StockCheck`]: the critical section `read_in_section` → check →
//! `write_in_section` for `none`, `mutex-unfenced` and `mutex`, which differ only in
//! the [`Guard`] around it; `take_conditional` for `pg`, `take_decided` for `stm`),
//! and how it counts a sale's per-customer limit (`count_purchase`).

use std::collections::BTreeMap;
use std::time::Duration;

use shop_common::domain::Sku;
use sqlx::{PgPool, Postgres, Transaction};

use super::model::{shortage, LimitExceeded, ReserveDbError, SaleBuyer, Shortage};

/// How Reserve checks and takes each line's stock: the strategies' difference.
#[derive(Debug, Clone, Copy)]
pub enum StockCheck<'a> {
    /// `none`, `mutex-unfenced`, `mutex`: one critical section — read `available`,
    /// check it, "think" for a moment, write back the new absolute value
    /// (`available = read - q`, `reserved = reserved + q`). Only the guard differs.
    /// A lost update (two holders reading the same value) therefore shows as broken
    /// conservation (`available + reserved + sold > stocked`), which no CHECK masks.
    Section {
        guard: Guard<'a>,
        think_time: Duration,
    },
    /// `pg`: one conditional decrement per SKU (`WHERE available >= q`); Postgres's
    /// row lock is the only coordination.
    Conditional,
    /// `stm`: etcd decided already (the `stm` module); record the decrement. The
    /// `available >= 0` CHECK is the backstop should etcd's counter be ahead.
    Decided,
}

/// What guards the critical section of [`StockCheck::Section`].
#[derive(Debug, Clone, Copy)]
pub enum Guard<'a> {
    /// `none`: nothing. Two buyers read the same value: lost updates, overselling.
    Nothing,
    /// `mutex-unfenced`: the caller holds every SKU's coord lock; nothing checks that
    /// it still does when it writes.
    Lock,
    /// `mutex`: the caller holds every SKU's lock, with these fencing tokens. The read
    /// raises the row's `fence_token` to ours (refused if a newer holder's is there),
    /// the write requires it to still be ours: a holder whose lock expired and was
    /// handed on is refused with [`ReserveDbError::StaleFencingToken`].
    Fenced(&'a BTreeMap<Sku, i64>),
}

impl StockCheck<'_> {
    /// How the same strategy guards a sale's per-customer limit: `none` reads, thinks
    /// and writes (and can exceed it); the locked ones and `pg` use one conditional
    /// upsert (the row is the customer's own, contended only by their concurrent
    /// orders); `stm` decided in etcd and records.
    pub(super) fn limit_guard(self) -> LimitGuard {
        match self {
            StockCheck::Section {
                guard: Guard::Nothing,
                think_time,
            } => LimitGuard::Unguarded { think_time },
            StockCheck::Section { .. } | StockCheck::Conditional => LimitGuard::Conditional,
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
async fn read_available<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    sku: &Sku,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
        .bind(sku.as_str())
        .fetch_one(executor)
        .await
}

/// The read of the critical section, before the Reserve's transaction begins (so it
/// holds no row lock — the guard is the lock, or nothing).
///
/// Fenced, the read is itself the announcement of the holder's token, committed at
/// once: `fence_token` rises to ours unless a newer holder's is already there (then
/// we are stale, and refused before we even read). So the row learns a new holder's
/// token no later than that holder's read, and from then on every write of an
/// older holder fails its `fence_token = token` condition — including one that
/// would land between the new holder's read and its write, the window a check on
/// the write alone leaves open.
pub(super) async fn read_in_section(
    pool: &PgPool,
    sku: &Sku,
    token: Option<i64>,
) -> Result<i64, ReserveDbError> {
    let Some(token) = token else {
        return Ok(read_available(pool, sku).await?);
    };
    let available: Option<i64> = sqlx::query_scalar(
        "UPDATE stock SET fence_token = $2 WHERE sku = $1 AND fence_token <= $2
         RETURNING available",
    )
    .bind(sku.as_str())
    .bind(token)
    .fetch_optional(pool)
    .await?;
    match available {
        Some(available) => Ok(available),
        None => Err(stale(pool, sku, token).await),
    }
}

/// The write of the critical section: the new absolute `available` computed from
/// the read; fenced, only if the row's token is still ours.
pub(super) async fn write_in_section(
    tx: &mut Transaction<'_, Postgres>,
    sku: &Sku,
    quantity: i32,
    read: i64,
    token: Option<i64>,
) -> Result<(), ReserveDbError> {
    let written = sqlx::query(
        "UPDATE stock SET available = $2, reserved = reserved + $3, updated_at = now()
         WHERE sku = $1 AND ($4::bigint IS NULL OR fence_token = $4)",
    )
    .bind(sku.as_str())
    .bind(read - i64::from(quantity))
    .bind(i64::from(quantity))
    .bind(fence_condition(token))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    match (written, token) {
        (1, _) | (_, None) => Ok(()),
        (_, Some(token)) => Err(stale(&mut **tx, sku, token).await),
    }
}

/// The token the write must find on the row (`None`: no check).
#[cfg(not(feature = "knockout-fencing"))]
fn fence_condition(token: Option<i64>) -> Option<i64> {
    token
}

/// Knockout (tests only): the fenced write's token check removed.
#[cfg(feature = "knockout-fencing")]
fn fence_condition(_token: Option<i64>) -> Option<i64> {
    None
}

async fn stale<'e>(executor: impl sqlx::PgExecutor<'e>, sku: &Sku, token: i64) -> ReserveDbError {
    let current = sqlx::query_scalar("SELECT fence_token FROM stock WHERE sku = $1")
        .bind(sku.as_str())
        .fetch_one(executor)
        .await;
    match current {
        Ok(current) => ReserveDbError::StaleFencingToken {
            sku: sku.clone(),
            token,
            current,
        },
        Err(e) => e.into(),
    }
}

/// `pg`'s one statement: take the units only if they are there.
#[cfg(not(feature = "knockout-pg-condition"))]
const CONDITIONAL_TAKE: &str =
    "UPDATE stock SET available = available - $2, reserved = reserved + $2, updated_at = now()
     WHERE sku = $1 AND available >= $2";

/// Knockout (tests only): the condition removed; only the `available >= 0` CHECK is
/// left.
#[cfg(feature = "knockout-pg-condition")]
const CONDITIONAL_TAKE: &str =
    "UPDATE stock SET available = available - $2, reserved = reserved + $2, updated_at = now()
     WHERE sku = $1 AND $2 > 0";

/// `pg`: take the units only if they are there, in one statement.
pub(super) async fn take_conditional(
    tx: &mut Transaction<'_, Postgres>,
    sku: &Sku,
    quantity: i32,
) -> Result<Result<(), Shortage>, sqlx::Error> {
    let taken = sqlx::query(CONDITIONAL_TAKE)
        .bind(sku.as_str())
        .bind(i64::from(quantity))
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if taken {
        Ok(Ok(()))
    } else {
        let available = read_available(&mut **tx, sku).await?;
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
    // Knockout (tests only): the per-customer limit is not checked in Postgres.
    #[cfg(feature = "knockout-customer-limit")]
    let limit = {
        let _ = limit;
        i64::MAX
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
