//! Flash sales: a coord [`Barrier`] holds a sale's Reserves until the sale opens, so
//! every buyer who queued up before the start races at the same moment — the moment
//! a flash sale is about, and the one that shows which strategies oversell.
//!
//! # A sale's life
//! - **CreateSale** holds the barrier `<prefix>/sales/<sale>/barrier` (a key without a
//!   lease: the sale stays closed if the creator dies), then records the sale in
//!   Postgres. Repeating it with the same limit returns the sale; a different limit is
//!   ALREADY_EXISTS. If the process dies between the two steps, the barrier is up and
//!   the sale unknown: its Reserves are NOT_FOUND, and a retried CreateSale finishes.
//! - **Reserve** of a sale's order reads the sale: unknown → NOT_FOUND; open → go on;
//!   closed → wait at the barrier, at most `SALE_WAIT_MS`, then read the sale again
//!   (an OpenSale that recorded the opening but died before releasing the barrier
//!   still lets buyers through). Still closed → FAILED_PRECONDITION, nothing reserved.
//! - **OpenSale** records the opening in Postgres, then releases the barrier; every
//!   waiting Reserve goes at once. Repeating it is harmless.
//!
//! # Guarantees
//! - No Reserve of a sale's order takes stock before the sale is recorded open or its
//!   barrier was released.
//! - Waiting is bounded and cancel-safe: a caller that gives up leaves nothing behind.
//!
//! # Not guaranteed
//! - Waiters are not counted or ordered: when the barrier drops, they race, and the
//!   strategy decides who gets the stock.
//! - A barrier deleted by hand opens the sale for the waiters at that moment.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use coord::Barrier;
use shop_common::coordination::SharedSession;
use shop_common::domain::SaleId;
use sqlx::PgPool;

/// A sale as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub id: SaleId,
    /// Units one customer may hold in the sale; `None`: no limit.
    pub per_customer_limit: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub opened_at: Option<DateTime<Utc>>,
}

impl Sale {
    pub fn is_open(&self) -> bool {
        self.opened_at.is_some()
    }
}

/// Why a sale operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    #[error("unknown sale {0}")]
    NotFound(SaleId),
    #[error("sale {sale} exists with a per-customer limit of {existing}, not {wanted}")]
    DifferentLimit {
        sale: SaleId,
        existing: i64,
        wanted: i64,
    },
    #[error("sale {sale} has not opened (waited {waited:?} for it); nothing was reserved")]
    NotOpen { sale: SaleId, waited: Duration },
    #[error("etcd: {0}; the sale was not changed")]
    Coordination(#[from] coord::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Sales: their rows and their barriers. One per process.
pub struct Sales {
    pool: PgPool,
    session: Arc<SharedSession>,
    wait_limit: Duration,
}

impl Sales {
    pub fn new(pool: PgPool, session: Arc<SharedSession>, wait_limit: Duration) -> Sales {
        Sales {
            pool,
            session,
            wait_limit,
        }
    }

    /// The barrier key of a sale.
    pub fn barrier_key(&self, sale: &SaleId) -> String {
        format!("{}/sales/{sale}/barrier", self.session.prefix())
    }

    async fn barrier(&self, sale: &SaleId) -> Result<Barrier, SaleError> {
        let client = self.session.client().await?;
        Ok(Barrier::new(client, &self.barrier_key(sale))?)
    }

    /// Creates a closed sale (idempotent for the same limit; 0 = no limit).
    pub async fn create(&self, sale: &SaleId, per_customer_limit: i64) -> Result<Sale, SaleError> {
        if let Some(existing) = self.get(sale).await? {
            return same_limit(existing, per_customer_limit);
        }
        match self.barrier(sale).await?.hold().await {
            Ok(_) | Err(coord::Error::KeyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        sqlx::query(
            "INSERT INTO sales (sale_id, per_customer_limit) VALUES ($1, $2)
             ON CONFLICT (sale_id) DO NOTHING",
        )
        .bind(sale.as_str())
        .bind(per_customer_limit as i32)
        .execute(&self.pool)
        .await?;
        let created = self.get(sale).await?.ok_or_else(|| {
            sqlx::Error::Protocol(format!("sale {sale} was inserted but is not there"))
        })?;
        same_limit(created, per_customer_limit)
    }

    /// Opens a sale: recorded first, then every waiter released. Idempotent.
    pub async fn open(&self, sale: &SaleId) -> Result<Sale, SaleError> {
        sqlx::query("UPDATE sales SET opened_at = COALESCE(opened_at, now()) WHERE sale_id = $1")
            .bind(sale.as_str())
            .execute(&self.pool)
            .await?;
        let opened = self
            .get(sale)
            .await?
            .ok_or_else(|| SaleError::NotFound(sale.clone()))?;
        self.barrier(sale).await?.release().await?;
        tracing::info!(%sale, "sale opened");
        Ok(opened)
    }

    pub async fn get(&self, sale: &SaleId) -> Result<Option<Sale>, sqlx::Error> {
        let row: Option<(i32, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT per_customer_limit, created_at, opened_at FROM sales WHERE sale_id = $1",
        )
        .bind(sale.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(limit, created_at, opened_at)| Sale {
            id: sale.clone(),
            per_customer_limit: (limit > 0).then_some(i64::from(limit)),
            created_at,
            opened_at,
        }))
    }

    /// Returns the sale once it is open, waiting at its barrier if it is not (at most
    /// the configured limit). Unknown → [`SaleError::NotFound`].
    pub async fn wait_open(&self, sale: &SaleId) -> Result<Sale, SaleError> {
        let found = self
            .get(sale)
            .await?
            .ok_or_else(|| SaleError::NotFound(sale.clone()))?;
        if found.is_open() {
            return Ok(found);
        }
        let barrier = self.barrier(sale).await?;
        match coord::timeout(self.wait_limit, barrier.wait()).await {
            Ok(()) => {}
            Err(coord::Error::Timeout(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // The barrier is down, or we waited long enough: what does the record say?
        let now = self
            .get(sale)
            .await?
            .ok_or_else(|| SaleError::NotFound(sale.clone()))?;
        if now.is_open() || !barrier.is_up().await? {
            Ok(now)
        } else {
            Err(SaleError::NotOpen {
                sale: sale.clone(),
                waited: self.wait_limit,
            })
        }
    }
}

fn same_limit(sale: Sale, wanted: i64) -> Result<Sale, SaleError> {
    let existing = sale.per_customer_limit.unwrap_or(0);
    if existing == wanted {
        Ok(sale)
    } else {
        Err(SaleError::DifferentLimit {
            sale: sale.id,
            existing,
            wanted,
        })
    }
}
