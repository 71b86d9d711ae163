//! Orders as the saga sees them.

use std::fmt;

use chrono::{DateTime, Utc};
use shop_common::domain::{Cart, CustomerId, OrderId, SaleId, Strategy, ValidationError};

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// The client's key for one intended order: 1-128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(field: &str, raw: &str) -> Result<IdempotencyKey, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if raw.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(ValidationError::new(
                field,
                format!(
                    "must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters, got {}",
                    raw.len()
                ),
            ));
        }
        if !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ValidationError::new(
                field,
                "must be printable ASCII without spaces",
            ));
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Payment priority of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomerTier {
    Standard,
    Gold,
    Platinum,
}

impl CustomerTier {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerTier::Standard => "standard",
            CustomerTier::Gold => "gold",
            CustomerTier::Platinum => "platinum",
        }
    }

    pub fn from_db(s: &str) -> Option<CustomerTier> {
        match s {
            "standard" => Some(CustomerTier::Standard),
            "gold" => Some(CustomerTier::Gold),
            "platinum" => Some(CustomerTier::Platinum),
            _ => None,
        }
    }
}

/// Where an order is in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Created; stock not reserved yet.
    Pending,
    /// Stock reserved; waiting for payment.
    Reserved,
    /// Not enough stock. Final.
    Rejected,
    /// Paid; stock committed. Final.
    Paid,
    /// Payment failed (or expired); stock released. Final.
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Reserved => "RESERVED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn from_db(s: &str) -> Option<OrderStatus> {
        match s {
            "PENDING" => Some(OrderStatus::Pending),
            "RESERVED" => Some(OrderStatus::Reserved),
            "REJECTED" => Some(OrderStatus::Rejected),
            "PAID" => Some(OrderStatus::Paid),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated CreateOrder request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub idempotency_key: IdempotencyKey,
    pub customer_id: CustomerId,
    pub customer_tier: CustomerTier,
    pub cart: Cart,
    /// The strategy the client asserted, `None` if it named none; once inventory
    /// answered the Reserve, the strategy it applied (the SKUs').
    pub strategy: Option<Strategy>,
    pub sale_id: Option<SaleId>,
}

impl NewOrder {
    /// Whether a CreateOrder repeating this one's idempotency key asks for the same
    /// order: the same request, where a strategy left unspecified matches the one the
    /// stored order was reserved under.
    pub fn same_as(&self, repeated: &NewOrder) -> bool {
        let strategy = repeated.strategy.or(self.strategy);
        *self
            == NewOrder {
                strategy,
                ..repeated.clone()
            }
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub request: NewOrder,
    pub status: OrderStatus,
    pub status_reason: String,
    pub payment_id: Option<String>,
    /// PAID/CANCELLED: inventory confirmed the Commit/Release.
    pub stock_settled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated PaymentResult.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    Captured {
        payment_id: String,
    },
    Failed {
        payment_id: Option<String>,
        reason: String,
    },
}

/// Longest payment id.
pub const MAX_PAYMENT_ID_LEN: usize = 128;
/// Longest failure reason.
pub const MAX_REASON_LEN: usize = 500;

impl PaymentOutcome {
    pub fn parse(
        ok: bool,
        payment_id: &str,
        reason: &str,
    ) -> Result<PaymentOutcome, ValidationError> {
        if payment_id.len() > MAX_PAYMENT_ID_LEN {
            return Err(ValidationError::new(
                "payment_id",
                format!(
                    "must be at most {MAX_PAYMENT_ID_LEN} characters, got {}",
                    payment_id.len()
                ),
            ));
        }
        if !payment_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "payment_id",
                "must be printable ASCII without spaces",
            ));
        }
        if reason.chars().count() > MAX_REASON_LEN {
            return Err(ValidationError::new(
                "reason",
                format!("must be at most {MAX_REASON_LEN} characters"),
            ));
        }
        if ok {
            if payment_id.is_empty() {
                return Err(ValidationError::new(
                    "payment_id",
                    "is required when ok is true (which payment paid the order?)",
                ));
            }
            Ok(PaymentOutcome::Captured {
                payment_id: payment_id.to_owned(),
            })
        } else {
            Ok(PaymentOutcome::Failed {
                payment_id: (!payment_id.is_empty()).then(|| payment_id.to_owned()),
                // Postgres text cannot hold NUL: it is kept as U+FFFD, the rest as given.
                reason: if reason.is_empty() {
                    "payment failed".to_owned()
                } else {
                    reason.replace('\0', "\u{FFFD}")
                },
            })
        }
    }

    pub fn is_captured(&self) -> bool {
        matches!(self, PaymentOutcome::Captured { .. })
    }
}
