//! The handle ([`InventoryDb`]) and the stock rows: set and read a SKU's counters,
//! check SKUs exist, read `available` without a lock.

use std::collections::BTreeMap;

use shop_common::domain::{Cart, OrderId, Sku, Strategy};
use sqlx::{PgPool, Row};

use super::model::{shortage, ReservationState, Seed, Shortage, StockLevel};

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

    /// Sets a SKU's available units, creating the SKU if new, and its strategy:
    /// `strategy`, else the SKU's own, else (a new SKU) `default`.
    pub async fn set_stock(
        &self,
        sku: &Sku,
        available: i64,
        strategy: Option<Strategy>,
        default: Strategy,
    ) -> Result<StockLevel, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO stock (sku, available, total, strategy)
             VALUES ($1, $2, $2, COALESCE($3, $4))
             ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available,
                 total = EXCLUDED.available + stock.reserved + stock.sold,
                 strategy = COALESCE($3, stock.strategy),
                 stm_epoch = stock.stm_epoch + 1, updated_at = now()
             RETURNING sku, available, reserved, sold, fence_token, strategy",
        )
        .bind(sku.as_str())
        .bind(available)
        .bind(strategy.map(Strategy::as_str))
        .bind(default.as_str())
        .fetch_one(self.pool())
        .await?;
        stock_level(sku, &row)
    }

    pub async fn get_stock(&self, sku: &Sku) -> Result<Option<StockLevel>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT sku, available, reserved, sold, fence_token, strategy FROM stock WHERE sku = $1",
        )
        .bind(sku.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| stock_level(sku, &row)).transpose()
    }

    /// The strategy of each given SKU that exists (a SKU that does not is missing
    /// from the map).
    pub async fn strategies<'a>(
        &self,
        skus: impl IntoIterator<Item = &'a Sku>,
    ) -> Result<BTreeMap<Sku, Strategy>, sqlx::Error> {
        Ok(self.strategies_and_state(skus, None).await?.0)
    }

    /// The strategy of each given SKU that exists and, with an order, the state of
    /// that order's reservation if it has one: everything a Reserve looks up before
    /// it decides anything, in one statement. (With no SKU known there is no row to
    /// carry the state; the Reserve is refused for its unknown SKUs then anyway.)
    pub async fn strategies_and_state<'a>(
        &self,
        skus: impl IntoIterator<Item = &'a Sku>,
        order: Option<OrderId>,
    ) -> Result<(BTreeMap<Sku, Strategy>, Option<ReservationState>), sqlx::Error> {
        let skus: Vec<&Sku> = skus.into_iter().collect();
        let wanted: Vec<&str> = skus.iter().map(|s| s.as_str()).collect();
        let known: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT sku, strategy, (SELECT state FROM reservations WHERE order_id = $2)
             FROM stock WHERE sku = ANY($1)",
        )
        .bind(&wanted)
        .bind(order.map(OrderId::as_uuid))
        .fetch_all(self.pool())
        .await?;
        let state = known
            .first()
            .and_then(|(_, _, state)| state.as_deref())
            .map(ReservationState::from_db)
            .transpose()?;
        let strategies = skus
            .into_iter()
            .filter_map(|sku| {
                let (_, strategy, _) = known.iter().find(|(k, _, _)| k == sku.as_str())?;
                Some(parse_strategy(strategy).map(|st| (sku.clone(), st)))
            })
            .collect::<Result<_, _>>()?;
        Ok((strategies, state))
    }

    /// The given SKUs that do not exist, in the order given.
    pub async fn unknown_skus<'a>(
        &self,
        skus: impl IntoIterator<Item = &'a Sku>,
    ) -> Result<Vec<Sku>, sqlx::Error> {
        let skus: Vec<&Sku> = skus.into_iter().collect();
        let known = self.strategies(skus.iter().copied()).await?;
        Ok(skus
            .into_iter()
            .filter(|sku| !known.contains_key(*sku))
            .cloned()
            .collect())
    }

    /// Each SKU's `available` and stock epoch, read without a lock: what the stm
    /// strategy seeds its etcd counters from, and what [`Self::short_line`] checks.
    pub async fn stock_snapshot(&self, cart: &Cart) -> Result<BTreeMap<Sku, Seed>, sqlx::Error> {
        let wanted: Vec<&str> = cart.skus().map(Sku::as_str).collect();
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT sku, stm_epoch, available FROM stock WHERE sku = ANY($1)")
                .bind(&wanted)
                .fetch_all(self.pool())
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
}

pub(super) fn stock_level(
    sku: &Sku,
    row: &sqlx::postgres::PgRow,
) -> Result<StockLevel, sqlx::Error> {
    Ok(StockLevel {
        sku: sku.clone(),
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
        sold: row.try_get("sold")?,
        fence_token: row.try_get("fence_token")?,
        strategy: parse_strategy(row.try_get("strategy")?)?,
    })
}

fn parse_strategy(raw: &str) -> Result<Strategy, sqlx::Error> {
    raw.parse()
        .map_err(|e: String| sqlx::Error::Decode(format!("stock.strategy: {e}").into()))
}
