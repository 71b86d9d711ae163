//! The repository's values: what the database methods take and return, and their
//! errors. No SQL here.

use shop_common::domain::{Cart, CustomerId, OrderId, SaleId, Sku, Strategy};

/// A SKU's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: Sku,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub fence_token: i64,
    /// The SKU's guard: every Reserve of it runs under this strategy.
    pub strategy: Strategy,
}

/// A SKU whose counters disagree with its reservation rows (see `InventoryDb::drifted`).
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
    pub(super) fn from_db(s: &str) -> Result<ReservationState, sqlx::Error> {
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

    pub(super) fn as_db(self) -> &'static str {
        match self {
            ReservationState::Preparing => "PREPARING",
            ReservationState::Reserved => "RESERVED",
            ReservationState::Committed => "COMMITTED",
            ReservationState::Released => "RELEASED",
        }
    }
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

/// Who buys in which sale, and the sale's cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleBuyer {
    pub sale: SaleId,
    pub customer: CustomerId,
    /// Units the customer may hold in the sale over all orders (`None`: no limit).
    pub limit: Option<i64>,
}

/// A SKU's Postgres state the counter is seeded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub epoch: i64,
    pub available: i64,
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

pub(super) fn shortage(sku: &Sku, wanted: i32, available: Option<i64>) -> Shortage {
    Shortage {
        sku: sku.clone(),
        wanted,
        available,
    }
}

/// What a Commit or Release left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub state: ReservationState,
    /// The strategy that reserved it (`None` for a tombstone).
    pub strategy: Option<Strategy>,
}

/// Why a Reserve failed (the database side; see `reservation::ReserveError` for all).
#[derive(Debug, thiserror::Error)]
pub enum ReserveDbError {
    /// A fenced write carried a token lower than one already accepted for the SKU: the
    /// lock it was made under had expired and another holder has written since.
    /// Nothing of this Reserve was written.
    #[error("stale fencing token {token} for SKU {sku}: the lock was lost and a newer holder (token {current}) has taken over; nothing was written")]
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
    /// The order's claim vanished under this Reserve: a concurrent stm attempt of the
    /// same order was refused by etcd and withdrew it. Nothing was recorded; retry.
    #[error("order {0}: a concurrent stm Reserve of it was refused and withdrew the order's claim; nothing was reserved, retry")]
    ClaimWithdrawn(OrderId),
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
    /// A Release under the SKU's lock found a newer holder's token on the row: the
    /// lock was lost while releasing. Nothing was released; retry.
    #[error("stale fencing token {token} for SKU {sku}: the lock was lost while releasing; nothing was released, retry")]
    StaleFencingToken { sku: String, token: i64 },
    /// Stm Reserves of the order kept claiming it and withdrawing (etcd refused them)
    /// between this Release's tombstone insert and its lock: nothing was released and
    /// nothing is reserved; retry.
    #[error("order {order}: concurrent stm Reserves of it withdrew their claim {attempts} times while releasing; nothing was released, retry")]
    Raced { order: OrderId, attempts: u32 },
    /// The order's reservation changed between a Commit's snapshot and its lock, every
    /// time it looked: nothing was committed; retry.
    #[error("order {order}: its reservation changed under the commit {attempts} times in a row; nothing was committed, retry")]
    CommitRaced { order: OrderId, attempts: u32 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
