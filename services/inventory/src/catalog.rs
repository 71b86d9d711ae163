//! The catalog: unit prices, changed in batches and read by quotes, guarded across
//! all inventory replicas by one coord [`RwMutex`] at `<prefix>/rwlocks/catalog`.
//!
//! - **SetPrices** (a repricing: "everything in the sale 20% off") takes the write
//!   side: it waits until no quote is being priced, keeps new quotes out, writes every
//!   price of the batch and bumps the catalog version, then lets quotes in again.
//! - **Quote** takes the read side: any number of quotes price carts at once, and none
//!   of them sees a repricing half-done. The quote carries the catalog version it read.
//!
//! Why a distributed read-write lock here, when Postgres could give one quote a
//! consistent snapshot by itself (one REPEATABLE READ transaction)? The catalog is the
//! shop's example of read-mostly data whose readers and writers are in different
//! processes; the lock is what you need as soon as a price lives in more than one
//! store (a cache, a search index) or a quote is built from several reads. It also
//! shows the RWMutex's trade-off: every quote pays two etcd commits (its reader key's
//! put and delete), which is why the order path does not quote.
//!
//! # Guarantees
//! - A quote's lines all come from one catalog version (the one it reports).
//! - A SetPrices applies all its prices or none (one Postgres transaction), and no
//!   quote overlaps it.
//! - Writers are not starved: the RwMutex is FIFO, so a waiting repricing holds back
//!   quotes that arrive after it.
//!
//! # Not guaranteed
//! - A quote is not a promise: the price may change right after it (an order keeps
//!   the price it was quoted only if it stores it).
//! - If the holder's session is lost mid-repricing, the lock is gone and a quote may
//!   run beside the repricing. The repricing is still one Postgres transaction and a
//!   quote reads one snapshot, so the quote sees all of it or none of it; the lock is
//!   what keeps quotes and repricings from interleaving while leases hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coord::RwMutex;
use shop_common::coordination::SharedSession;
use shop_common::domain::{Cart, Sku};

use crate::repository::InventoryDb;

/// Most prices one SetPrices may change.
pub const MAX_PRICES: usize = 500;
/// Highest unit price, in minor units.
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLine {
    pub sku: Sku,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub lines: Vec<QuoteLine>,
    pub total_minor: i64,
    pub catalog_version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown SKU(s): {}", .0.iter().map(Sku::as_str).collect::<Vec<_>>().join(", "))]
    UnknownSkus(Vec<Sku>),
    #[error("no price set for SKU(s): {}", .0.iter().map(Sku::as_str).collect::<Vec<_>>().join(", "))]
    Unpriced(Vec<Sku>),
    #[error("could not take the catalog lock within {0:?} (etcd unreachable or slow); nothing was changed")]
    LockTimeout(Duration),
    #[error("etcd: {0}; nothing was changed")]
    Coordination(#[from] coord::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The catalog. One per process.
pub struct Catalog {
    db: InventoryDb,
    session: Arc<SharedSession>,
    lock_timeout: Duration,
}

impl Catalog {
    pub fn new(db: InventoryDb, session: Arc<SharedSession>, lock_timeout: Duration) -> Catalog {
        Catalog {
            db,
            session,
            lock_timeout,
        }
    }

    /// The RwMutex's name.
    pub fn lock_name(&self) -> String {
        format!("{}/rwlocks/catalog", self.session.prefix())
    }

    async fn lock(&self, write: bool) -> Result<coord::RwMutexGuard, CatalogError> {
        let session = self.session.get().await?;
        let rw = RwMutex::new(&session, &self.lock_name())?;
        let locked = if write {
            coord::timeout(self.lock_timeout, rw.write_lock()).await
        } else {
            coord::timeout(self.lock_timeout, rw.read_lock()).await
        };
        match locked {
            Ok(guard) => Ok(guard),
            Err(coord::Error::Timeout(t)) => Err(CatalogError::LockTimeout(t)),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets every price of the batch, all or none, under the write lock; returns the
    /// new catalog version. `prices` are distinct SKUs (the caller checked).
    pub async fn set_prices(&self, prices: &BTreeMap<Sku, i64>) -> Result<i64, CatalogError> {
        let unknown = self.db.unknown_skus(prices.keys()).await?;
        if !unknown.is_empty() {
            return Err(CatalogError::UnknownSkus(unknown));
        }
        let guard = self.lock(true).await?;
        let written = self.write_prices(prices).await;
        release(guard).await;
        written
    }

    async fn write_prices(&self, prices: &BTreeMap<Sku, i64>) -> Result<i64, CatalogError> {
        let mut tx = self.db.pool().begin().await?;
        let version: i64 =
            sqlx::query_scalar("UPDATE catalog SET version = version + 1 RETURNING version")
                .fetch_one(&mut *tx)
                .await?;
        let skus: Vec<&str> = prices.keys().map(Sku::as_str).collect();
        let minor: Vec<i64> = prices.values().copied().collect();
        sqlx::query(
            "INSERT INTO prices (sku, unit_price_minor, version)
             SELECT sku, price, $3 FROM UNNEST($1::text[], $2::bigint[]) AS p (sku, price)
             ON CONFLICT (sku) DO UPDATE SET unit_price_minor = EXCLUDED.unit_price_minor,
                                             version = EXCLUDED.version",
        )
        .bind(&skus)
        .bind(&minor)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Prices a cart under the read lock.
    pub async fn quote(&self, cart: &Cart) -> Result<Quote, CatalogError> {
        let guard = self.lock(false).await?;
        let quoted = self.read_quote(cart).await;
        release(guard).await;
        quoted
    }

    /// Two reads (the version, then the prices). The read lock keeps repricings out
    /// while we read; the two reads also share one snapshot (REPEATABLE READ), so
    /// that even a repricing whose lock was lost mid-way (its session expired: a
    /// lease lock is not mutual exclusion by itself) cannot make a quote mix
    /// versions — belt and braces, the same lesson as the mutex strategy's fencing.
    async fn read_quote(&self, cart: &Cart) -> Result<Quote, CatalogError> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let catalog_version: i64 = sqlx::query_scalar("SELECT version FROM catalog")
            .fetch_one(&mut *tx)
            .await?;
        let skus: Vec<&str> = cart.skus().map(Sku::as_str).collect();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT sku, unit_price_minor FROM prices WHERE sku = ANY($1)")
                .bind(&skus)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let mut lines = Vec::with_capacity(cart.lines().len());
        let mut unpriced = Vec::new();
        for line in cart.lines() {
            match rows.iter().find(|(sku, _)| sku == line.sku.as_str()) {
                Some((_, price)) => lines.push(QuoteLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity.get(),
                    unit_price_minor: *price,
                    line_total_minor: price * i64::from(line.quantity.get()),
                }),
                None => unpriced.push(line.sku.clone()),
            }
        }
        if !unpriced.is_empty() {
            let unknown = self.db.unknown_skus(cart.skus()).await?;
            return Err(if unknown.is_empty() {
                CatalogError::Unpriced(unpriced)
            } else {
                CatalogError::UnknownSkus(unknown)
            });
        }
        Ok(Quote {
            total_minor: lines.iter().map(|l| l.line_total_minor).sum(),
            lines,
            catalog_version,
        })
    }
}

async fn release(guard: coord::RwMutexGuard) {
    if let Err(e) = guard.unlock().await {
        tracing::warn!(error = %e, "catalog lock: unlock failed; the lease cleans up");
    }
}
