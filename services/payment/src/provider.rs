//! The simulated payment provider, with an API shaped like a real one's.
//!
//! It behaves like a real provider where it matters to the saga: it takes time
//! (configurable latency), it declines some charges (configurable failure rate, decided
//! per order id and seed, so a test knows which orders fail), it can serve only so many
//! requests at once — which the shop respects with a coord `Semaphore` shared by every
//! worker and the settle job on every replica — and it keeps **its own ledger**
//! (`provider_charges`, `provider_refunds`, migration `0003_provider_ledger.sql`):
//!
//! - every charge it accepts is a row under an id it makes up (`ch_…`); the order id is
//!   only the merchant's reference on it, so two charges for one order are two rows —
//!   a double charge is representable, and preventing it is the payment service's job;
//! - [`SimulatedProvider::authorize`] holds money (or, with `capture`, takes it at once),
//!   [`SimulatedProvider::capture`] takes what was held, [`SimulatedProvider::refund`]
//!   gives back what was captured and not refunded yet;
//! - each takes an optional **idempotency key**, as real payment APIs do: the first
//!   request with a key records what it asked and what it made; a repeat with the same
//!   key returns that first result and moves no money; the same key with a different
//!   request is refused ([`ProviderError::KeyReused`]); a request **without** a key is
//!   always a new operation — the second `authorize` without a key for an order is a
//!   second charge.
//!
//! Two requests racing with one key are serialised by Postgres: the second's insert of
//! the key waits for the first's transaction and then finds its result.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shop_common::coordination::SharedSession;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::permits::PermitPool;

/// How the simulated provider behaves.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub latency: Duration,
    /// Fraction of orders declined, 0.0–1.0.
    pub failure_rate: f64,
    /// Changes which orders are declined.
    pub seed: u64,
    /// Requests in flight at once, across all replicas.
    pub concurrency: u32,
    /// How long a permit this process no longer uses is kept for its next request
    /// ([`crate::permits`]); zero gives it back after every request.
    pub permit_idle: Duration,
}

/// Where a charge stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Money held, not taken yet.
    Authorized,
    /// Money taken.
    Captured,
    /// Refused; nothing moved.
    Declined,
}

impl ChargeStatus {
    fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Authorized => "AUTHORIZED",
            ChargeStatus::Captured => "CAPTURED",
            ChargeStatus::Declined => "DECLINED",
        }
    }

    fn parse(raw: &str) -> ChargeStatus {
        match raw {
            "AUTHORIZED" => ChargeStatus::Authorized,
            "CAPTURED" => ChargeStatus::Captured,
            _ => ChargeStatus::Declined,
        }
    }
}

/// A charge in the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The provider's id for it (`ch_…`).
    pub charge_id: String,
    pub order_id: Uuid,
    pub amount_minor: i64,
    pub status: ChargeStatus,
    /// Why it was declined; empty otherwise.
    pub reason: String,
}

impl Charge {
    /// Whether the provider accepted it (authorized or captured).
    pub fn ok(&self) -> bool {
        self.status != ChargeStatus::Declined
    }
}

/// What [`SimulatedProvider::authorize`] is asked.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// The merchant's reference on the charge.
    pub order_id: Uuid,
    pub amount_minor: i64,
    /// Take the money at once (authorize and capture in one request).
    pub capture: bool,
    /// `None`: a new charge, whatever came before.
    pub idempotency_key: Option<String>,
}

/// A refund in the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The provider's id for it (`re_…`).
    pub refund_id: String,
    pub charge_id: String,
    pub amount_minor: i64,
}

/// Why the provider refused a request.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("idempotency key {key} was first used for another request ({first}); not repeated")]
    KeyReused { key: String, first: String },
    #[error("no charge {0}")]
    NoSuchCharge(String),
    #[error("charge {charge_id} is {status:?}: cannot {operation} it")]
    Refused {
        charge_id: String,
        status: ChargeStatus,
        operation: &'static str,
    },
    #[error("charge {0} is refunded in full already")]
    NothingLeftToRefund(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ProviderError {
    fn from(e: sqlx::Error) -> Self {
        ProviderError::Unexpected(e.into())
    }
}

pub struct SimulatedProvider {
    pool: PgPool,
    settings: ProviderSettings,
    permits: Arc<PermitPool>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    charges: AtomicUsize,
    refunds: AtomicUsize,
}

/// A charge row's columns, for [`read_charge`].
const CHARGE: &str = "charge_id, order_id, amount_minor, status, reason";

impl SimulatedProvider {
    pub fn new(
        pool: PgPool,
        settings: ProviderSettings,
        session: Arc<SharedSession>,
    ) -> SimulatedProvider {
        let permits = PermitPool::new(
            session.clone(),
            format!("{}/semaphores/provider", session.prefix()),
            settings.concurrency as usize,
            settings.permit_idle,
        );
        SimulatedProvider {
            pool,
            settings,
            permits,
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

    /// The most requests this process saw in flight at once (for tests and metrics).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Charges this process created (repeats answered by an idempotency key do not count).
    pub fn charges(&self) -> usize {
        self.charges.load(Ordering::SeqCst)
    }

    /// Refunds this process made (repeats answered by an idempotency key do not count).
    pub fn refunds(&self) -> usize {
        self.refunds.load(Ordering::SeqCst)
    }

    /// Runs one provider request: takes a permit of the shared concurrency cap (one
    /// this process kept, or a new one — [`crate::permits`]), takes the provider's
    /// latency, runs `request`, puts the permit back.
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let permit = self.permits.take().await.map_err(anyhow::Error::from)?;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.settings.latency).await;
        let answer = request.await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.permits.put_back(permit).await;
        answer
    }

    /// The permits this process holds for the provider (tests read how many it keeps).
    pub fn permits(&self) -> &PermitPool {
        &self.permits
    }

    /// Creates a charge of `request.amount_minor` (declined for the orders
    /// [`SimulatedProvider::declines`]), authorized or — with `capture` — captured; or,
    /// if its idempotency key was used before for the same request, returns that first
    /// charge.
    pub async fn authorize(&self, request: &ChargeRequest) -> Result<Charge, ProviderError> {
        let asked = format!(
            "authorize order={} amount={} capture={}",
            request.order_id, request.amount_minor, request.capture
        );
        self.call(async {
            let mut tx = self.pool.begin().await?;
            let key = request.idempotency_key.as_deref();
            if let Some(first) = claim_key(&mut tx, key, "authorize", &asked).await? {
                let charge = read_charge(&mut tx, &first, false).await?;
                tx.commit().await?;
                return Ok(charge);
            }
            let declined = self.declines(request.order_id);
            let charge = Charge {
                charge_id: format!("ch_{}", Uuid::new_v4().simple()),
                order_id: request.order_id,
                amount_minor: request.amount_minor,
                status: match (declined, request.capture) {
                    (true, _) => ChargeStatus::Declined,
                    (false, true) => ChargeStatus::Captured,
                    (false, false) => ChargeStatus::Authorized,
                },
                reason: if declined {
                    "card declined (simulated)".into()
                } else {
                    String::new()
                },
            };
            sqlx::query(
                "INSERT INTO provider_charges
                     (charge_id, order_id, amount_minor, status, reason, captured_at)
                 VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'CAPTURED' THEN now() END)",
            )
            .bind(&charge.charge_id)
            .bind(charge.order_id)
            .bind(charge.amount_minor)
            .bind(charge.status.as_str())
            .bind(&charge.reason)
            .execute(&mut *tx)
            .await?;
            record_result(&mut tx, key, &charge.charge_id).await?;
            tx.commit().await?;
            self.charges.fetch_add(1, Ordering::SeqCst);
            Ok(charge)
        })
        .await
    }

    /// Takes the money an authorized charge holds. Capturing a captured charge changes
    /// nothing; a declined one is [`ProviderError::Refused`].
    pub async fn capture(
        &self,
        charge_id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Charge, ProviderError> {
        let asked = format!("capture charge={charge_id}");
        self.call(async {
            let mut tx = self.pool.begin().await?;
            if let Some(first) = claim_key(&mut tx, idempotency_key, "capture", &asked).await? {
                let charge = read_charge(&mut tx, &first, false).await?;
                tx.commit().await?;
                return Ok(charge);
            }
            let mut charge = read_charge(&mut tx, charge_id, true).await?;
            match charge.status {
                ChargeStatus::Authorized => {
                    sqlx::query(
                        "UPDATE provider_charges SET status = 'CAPTURED', captured_at = now()
                         WHERE charge_id = $1",
                    )
                    .bind(charge_id)
                    .execute(&mut *tx)
                    .await?;
                    charge.status = ChargeStatus::Captured;
                }
                ChargeStatus::Captured => {}
                ChargeStatus::Declined => {
                    return Err(ProviderError::Refused {
                        charge_id: charge_id.into(),
                        status: charge.status,
                        operation: "capture",
                    })
                }
            }
            record_result(&mut tx, idempotency_key, charge_id).await?;
            tx.commit().await?;
            Ok(charge)
        })
        .await
    }

    /// Gives back what is left of a captured charge (captured minus refunded so far).
    pub async fn refund(
        &self,
        charge_id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Refund, ProviderError> {
        let asked = format!("refund charge={charge_id}");
        self.call(async {
            let mut tx = self.pool.begin().await?;
            if let Some(first) = claim_key(&mut tx, idempotency_key, "refund", &asked).await? {
                let row = sqlx::query(
                    "SELECT refund_id, charge_id, amount_minor FROM provider_refunds
                     WHERE refund_id = $1",
                )
                .bind(&first)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Refund {
                    refund_id: row.get("refund_id"),
                    charge_id: row.get("charge_id"),
                    amount_minor: row.get("amount_minor"),
                });
            }
            let charge = read_charge(&mut tx, charge_id, true).await?;
            if charge.status != ChargeStatus::Captured {
                return Err(ProviderError::Refused {
                    charge_id: charge_id.into(),
                    status: charge.status,
                    operation: "refund",
                });
            }
            let refunded: i64 = sqlx::query_scalar(
                "SELECT COALESCE(sum(amount_minor), 0)::bigint FROM provider_refunds
                 WHERE charge_id = $1",
            )
            .bind(charge_id)
            .fetch_one(&mut *tx)
            .await?;
            let left = charge.amount_minor - refunded;
            if left <= 0 {
                return Err(ProviderError::NothingLeftToRefund(charge_id.into()));
            }
            let refund = Refund {
                refund_id: format!("re_{}", Uuid::new_v4().simple()),
                charge_id: charge_id.into(),
                amount_minor: left,
            };
            sqlx::query(
                "INSERT INTO provider_refunds (refund_id, charge_id, amount_minor)
                 VALUES ($1, $2, $3)",
            )
            .bind(&refund.refund_id)
            .bind(charge_id)
            .bind(left)
            .execute(&mut *tx)
            .await?;
            record_result(&mut tx, idempotency_key, &refund.refund_id).await?;
            tx.commit().await?;
            self.refunds.fetch_add(1, Ordering::SeqCst);
            Ok(refund)
        })
        .await
    }

    /// Every charge the ledger holds for `order_id`, oldest first.
    pub async fn charges_of(&self, order_id: Uuid) -> sqlx::Result<Vec<Charge>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHARGE} FROM provider_charges WHERE order_id = $1 ORDER BY created_at"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(to_charge).collect())
    }
}

/// Within `tx`: if `key` is new, claims it for this request (`Ok(None)`: perform it, then
/// [`record_result`]); if it was used before for the same request, the id of what that
/// first request made. A concurrent first use of the key makes this wait for it.
async fn claim_key(
    tx: &mut PgConnection,
    key: Option<&str>,
    operation: &str,
    asked: &str,
) -> Result<Option<String>, ProviderError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let claimed = sqlx::query(
        "INSERT INTO provider_idempotency_keys (idempotency_key, operation, request)
         VALUES ($1, $2, $3) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(operation)
    .bind(asked)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let (first, result): (String, Option<String>) = sqlx::query_as(
        "SELECT request, result_id FROM provider_idempotency_keys WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    match result {
        Some(result) if first == asked => Ok(Some(result)),
        _ => Err(ProviderError::KeyReused {
            key: key.into(),
            first,
        }),
    }
}

/// Records what the request that claimed `key` made (nothing without a key).
async fn record_result(
    tx: &mut PgConnection,
    key: Option<&str>,
    result_id: &str,
) -> sqlx::Result<()> {
    if let Some(key) = key {
        sqlx::query(
            "UPDATE provider_idempotency_keys SET result_id = $2 WHERE idempotency_key = $1",
        )
        .bind(key)
        .bind(result_id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A charge of the ledger; `lock`ed (`FOR UPDATE`) for the rest of `tx` if asked.
async fn read_charge(
    tx: &mut PgConnection,
    charge_id: &str,
    lock: bool,
) -> Result<Charge, ProviderError> {
    let row = sqlx::query(&format!(
        "SELECT {CHARGE} FROM provider_charges WHERE charge_id = $1 {}",
        if lock { "FOR UPDATE" } else { "" }
    ))
    .bind(charge_id)
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref()
        .map(to_charge)
        .ok_or_else(|| ProviderError::NoSuchCharge(charge_id.into()))
}

fn to_charge(row: &sqlx::postgres::PgRow) -> Charge {
    Charge {
        charge_id: row.get("charge_id"),
        order_id: row.get("order_id"),
        amount_minor: row.get("amount_minor"),
        status: ChargeStatus::parse(row.get::<&str, _>("status")),
        reason: row.get("reason"),
    }
}
