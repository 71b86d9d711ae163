//! The simulated payment provider.
//!
//! It behaves like a real one where it matters to the saga: it takes time (configurable
//! latency), it declines some charges (configurable failure rate, decided per order id
//! and seed, so a test knows which orders fail and a retry gets the same answer), it is
//! **idempotent on the order id** (its own ledger, `provider_charges`: a repeated
//! request returns the first outcome and charges nothing), it refunds a capture — once
//! per order id as well (`provider_refunds`) — and it can serve only so many requests
//! at once — which the shop respects with a coord `Semaphore` shared by every worker
//! and the settle job on every replica.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::Semaphore;
use shop_common::coordination::SharedSession;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// How the simulated provider behaves.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub latency: Duration,
    /// Fraction of orders declined, 0.0–1.0.
    pub failure_rate: f64,
    /// Changes which orders are declined.
    pub seed: u64,
    /// Charges in flight at once, across all replicas.
    pub concurrency: u32,
}

/// The provider's answer to one charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub ok: bool,
    pub provider_ref: String,
    pub reason: String,
}

/// The provider's answer to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub refund_ref: String,
    pub amount_minor: i64,
}

/// Why a refund was not made.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("order {0} has no captured charge to refund")]
    NothingCaptured(Uuid),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RefundError {
    fn from(e: sqlx::Error) -> Self {
        RefundError::Unexpected(e.into())
    }
}

pub struct SimulatedProvider {
    pool: PgPool,
    settings: ProviderSettings,
    session: Arc<SharedSession>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    charges: AtomicUsize,
    refunds: AtomicUsize,
}

impl SimulatedProvider {
    pub fn new(
        pool: PgPool,
        settings: ProviderSettings,
        session: Arc<SharedSession>,
    ) -> SimulatedProvider {
        SimulatedProvider {
            pool,
            settings,
            session,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            charges: AtomicUsize::new(0),
            refunds: AtomicUsize::new(0),
        }
    }

    /// Whether the provider declines `order_id` (a pure function of order and seed).
    pub fn declines(&self, order_id: Uuid) -> bool {
        let mut hasher = DefaultHasher::new();
        (self.settings.seed, order_id).hash(&mut hasher);
        (hasher.finish() % 10_000) as f64 / 10_000.0 < self.settings.failure_rate
    }

    /// The most charges this process saw in flight at once (for tests and metrics).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Charges actually performed by this process (repeats answered from the ledger
    /// do not count).
    pub fn charges(&self) -> usize {
        self.charges.load(Ordering::SeqCst)
    }

    /// Refunds performed by this process (repeats answered from the ledger do not count).
    pub fn refunds(&self) -> usize {
        self.refunds.load(Ordering::SeqCst)
    }

    /// Runs one provider request (`write`, the ledger insert): waits for a permit of
    /// the shared concurrency cap, takes the provider's latency, writes, releases.
    async fn call<T>(
        &self,
        write: impl std::future::Future<Output = sqlx::Result<T>>,
    ) -> anyhow::Result<T> {
        let session = self.session.get().await?;
        let semaphore = Semaphore::new(
            &session,
            &format!("{}/semaphores/provider", self.session.prefix()),
            self.settings.concurrency as usize,
        )?;
        let permit = semaphore.acquire().await?;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.settings.latency).await;
        let written = write.await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let _ = permit.release().await;
        Ok(written?)
    }

    /// Charges `amount_minor` for `order_id`, or returns the first answer if this order
    /// was charged before.
    pub async fn charge(&self, order_id: Uuid, amount_minor: i64) -> anyhow::Result<Charge> {
        if let Some(first) = self.ledger(order_id).await? {
            return Ok(first);
        }
        let declined = self.declines(order_id);
        let charge = Charge {
            ok: !declined,
            provider_ref: format!("sim-{}", Uuid::new_v4().simple()),
            reason: if declined {
                "card declined (simulated)".into()
            } else {
                String::new()
            },
        };
        // The ledger write is the charge: the first one for an order wins.
        let inserted = self
            .call(
                sqlx::query(
                    "INSERT INTO provider_charges (order_id, amount_minor, ok, provider_ref, reason)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(order_id)
                .bind(amount_minor)
                .bind(charge.ok)
                .bind(&charge.provider_ref)
                .bind(&charge.reason)
                .execute(&self.pool),
            )
            .await?;
        if inserted.rows_affected() == 1 {
            self.charges.fetch_add(1, Ordering::SeqCst);
            Ok(charge)
        } else {
            self.ledger(order_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("charge for {order_id} vanished from the ledger"))
        }
    }

    /// Gives back the captured charge of `order_id`, or returns the first refund if it
    /// was refunded before. An order without a captured charge is
    /// [`RefundError::NothingCaptured`].
    pub async fn refund(&self, order_id: Uuid) -> Result<Refund, RefundError> {
        if let Some(first) = self.refund_ledger(order_id).await? {
            return Ok(first);
        }
        let amount_minor: Option<i64> = sqlx::query_scalar(
            "SELECT amount_minor FROM provider_charges WHERE order_id = $1 AND ok",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?;
        let amount_minor = amount_minor.ok_or(RefundError::NothingCaptured(order_id))?;
        let refund_ref = format!("sim-refund-{}", Uuid::new_v4().simple());
        // The ledger write is the refund: the first one for an order wins.
        let inserted = self
            .call(
                sqlx::query(
                    "INSERT INTO provider_refunds (order_id, amount_minor, refund_ref)
                     VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(order_id)
                .bind(amount_minor)
                .bind(&refund_ref)
                .execute(&self.pool),
            )
            .await?;
        if inserted.rows_affected() == 1 {
            self.refunds.fetch_add(1, Ordering::SeqCst);
            return Ok(Refund {
                refund_ref,
                amount_minor,
            });
        }
        self.refund_ledger(order_id).await?.ok_or_else(|| {
            RefundError::Unexpected(anyhow::anyhow!(
                "refund for {order_id} vanished from the ledger"
            ))
        })
    }

    async fn refund_ledger(&self, order_id: Uuid) -> sqlx::Result<Option<Refund>> {
        let row = sqlx::query(
            "SELECT refund_ref, amount_minor FROM provider_refunds WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Refund {
            refund_ref: r.get("refund_ref"),
            amount_minor: r.get("amount_minor"),
        }))
    }

    async fn ledger(&self, order_id: Uuid) -> sqlx::Result<Option<Charge>> {
        let row = sqlx::query(
            "SELECT ok, provider_ref, reason FROM provider_charges WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Charge {
            ok: r.get("ok"),
            provider_ref: r.get("provider_ref"),
            reason: r.get("reason"),
        }))
    }
}
