//! The shop's domain values, parsed once at the gRPC boundary ("parse, don't
//! validate"): a `Sku` is always a valid SKU, a `Cart` always has 1-50 distinct lines.
//! Protobuf types never get past the gRPC layer; these do.

use std::collections::BTreeSet;
use std::fmt;

use uuid::Uuid;

/// Most lines one order (or reservation) may have.
pub const MAX_LINES: usize = 50;
/// Most units of one SKU one line may ask for.
pub const MAX_QUANTITY: i32 = 1000;
/// Longest SKU, customer id or sale id.
pub const MAX_ID_LEN: usize = 64;

/// Input that cannot be used, with the field it came from (`items[2].quantity`) and
/// a sentence saying what is wrong. Becomes INVALID_ARGUMENT at the gRPC boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ValidationError> for tonic::Status {
    fn from(e: ValidationError) -> tonic::Status {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Checks an identifier: 1..=MAX_ID_LEN characters of `[A-Za-z0-9._-]`. Such a value
/// is safe as one etcd key segment (no `/`) and in logs.
fn parse_identifier(field: &str, raw: &str) -> Result<String, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if raw.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_ID_LEN} characters, got {}", raw.len()),
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ValidationError::new(
            field,
            format!("{raw:?} contains {bad:?}; use only letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(raw.to_owned())
}

/// A stock keeping unit: 1-64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(field: &str, raw: &str) -> Result<Sku, ValidationError> {
        parse_identifier(field, raw).map(Sku)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A customer's id: 1-64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerId(String);

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CustomerId {
    pub fn parse(field: &str, raw: &str) -> Result<CustomerId, ValidationError> {
        parse_identifier(field, raw).map(CustomerId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A flash sale's id: 1-64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SaleId(String);

impl fmt::Display for SaleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SaleId {
    pub fn parse(field: &str, raw: &str) -> Result<SaleId, ValidationError> {
        parse_identifier(field, raw).map(SaleId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units of one SKU on one line: 1..=[`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(field: &str, raw: i32) -> Result<Quantity, ValidationError> {
        if raw < 1 {
            return Err(ValidationError::new(
                field,
                format!("must be at least 1, got {raw}"),
            ));
        }
        if raw > MAX_QUANTITY {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_QUANTITY}, got {raw}"),
            ));
        }
        Ok(Quantity(raw))
    }
    pub fn get(self) -> i32 {
        self.0
    }
}

/// An order's id: a UUID, created by the order service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(Uuid);

impl OrderId {
    /// A fresh random id.
    pub fn new_random() -> OrderId {
        OrderId(Uuid::new_v4())
    }
    pub fn parse(field: &str, raw: &str) -> Result<OrderId, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        Uuid::parse_str(raw).map(OrderId).map_err(|_| {
            ValidationError::new(field, format!("{:?} is not a UUID", truncate(raw, 80)))
        })
    }
    /// An id read back from a database column.
    pub fn from_uuid(id: Uuid) -> OrderId {
        OrderId(id)
    }

    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for OrderId {
    fn from(id: Uuid) -> OrderId {
        OrderId(id)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// The lines of an order: 1..=[`MAX_LINES`], each SKU once, sorted by SKU. Sorted
/// matters: every lock and row update over a cart goes in this order, so two carts
/// sharing SKUs can never wait for each other in a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart(Vec<LineItem>);

impl Cart {
    /// From `(sku, quantity)` pairs as they came in; `field` names the list
    /// (`items`) so errors say `items[3].sku: ...`.
    pub fn parse<'a>(
        field: &str,
        lines: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> Result<Cart, ValidationError> {
        let mut parsed = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, (sku, quantity)) in lines.into_iter().enumerate() {
            if i >= MAX_LINES {
                return Err(ValidationError::new(
                    field,
                    format!("at most {MAX_LINES} lines per order"),
                ));
            }
            let sku = Sku::parse(&format!("{field}[{i}].sku"), sku)?;
            let quantity = Quantity::parse(&format!("{field}[{i}].quantity"), quantity)?;
            if !seen.insert(sku.clone()) {
                return Err(ValidationError::new(
                    format!("{field}[{i}].sku"),
                    format!("{sku} appears on more than one line; put its total on one line"),
                ));
            }
            parsed.push(LineItem { sku, quantity });
        }
        if parsed.is_empty() {
            return Err(ValidationError::new(field, "must have at least one line"));
        }
        parsed.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(Cart(parsed))
    }

    /// The lines, sorted by SKU.
    pub fn lines(&self) -> &[LineItem] {
        &self.0
    }

    /// The lines as two parallel columns (SKUs, quantities), the shape Postgres'
    /// `UNNEST($1::text[], $2::int[])` takes to insert them in one statement.
    pub fn columns(&self) -> (Vec<&str>, Vec<i32>) {
        self.0
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity.get()))
            .unzip()
    }

    /// Units over all lines.
    pub fn units(&self) -> i64 {
        self.0.iter().map(|l| i64::from(l.quantity.get())).sum()
    }

    /// The SKUs, sorted.
    pub fn skus(&self) -> impl Iterator<Item = &Sku> {
        self.0.iter().map(|l| &l.sku)
    }

    /// The lines as protobuf, for a request or response at a gRPC boundary.
    pub fn to_proto(&self) -> Vec<shop_proto::v1::LineItem> {
        self.0
            .iter()
            .map(|l| shop_proto::v1::LineItem {
                sku: l.sku.as_str().to_owned(),
                quantity: l.quantity.get(),
            })
            .collect()
    }
}

/// How inventory guards "is there enough stock?" (see `shop.v1.Strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// No coordination: oversells under concurrency (the counter-example).
    None,
    /// The same critical section as `None` under a coord Mutex per SKU, fenced by
    /// the lock's token (the read announces it, the write requires it).
    Mutex,
    /// etcd STM over per-SKU counters and the customer's count in a sale (coord STM).
    Stm,
    /// One conditional UPDATE per SKU in one Postgres transaction.
    Pg,
    /// `Mutex` without the fencing token: safe only while every holder's lock holds.
    MutexUnfenced,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::None,
        Strategy::MutexUnfenced,
        Strategy::Mutex,
        Strategy::Stm,
        Strategy::Pg,
    ];

    /// `none`, `mutex`, `stm`, `pg`, `mutex-unfenced`: the name in configuration, logs
    /// and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Mutex => "mutex",
            Strategy::Stm => "stm",
            Strategy::Pg => "pg",
            Strategy::MutexUnfenced => "mutex-unfenced",
        }
    }

    /// The protobuf enum value.
    pub fn to_proto(self) -> shop_proto::v1::Strategy {
        use shop_proto::v1::Strategy as P;
        match self {
            Strategy::None => P::None,
            Strategy::Mutex => P::Mutex,
            Strategy::Stm => P::Stm,
            Strategy::Pg => P::Pg,
            Strategy::MutexUnfenced => P::MutexUnfenced,
        }
    }

    /// From the protobuf field: `Ok(None)` for UNSPECIFIED (use the default).
    pub fn from_proto(field: &str, raw: i32) -> Result<Option<Strategy>, ValidationError> {
        use shop_proto::v1::Strategy as P;
        match P::try_from(raw) {
            Ok(P::Unspecified) => Ok(None),
            Ok(P::None) => Ok(Some(Strategy::None)),
            Ok(P::Mutex) => Ok(Some(Strategy::Mutex)),
            Ok(P::Stm) => Ok(Some(Strategy::Stm)),
            Ok(P::Pg) => Ok(Some(Strategy::Pg)),
            Ok(P::MutexUnfenced) => Ok(Some(Strategy::MutexUnfenced)),
            Err(_) => Err(ValidationError::new(
                field,
                format!("{raw} is not a strategy (NONE=1, MUTEX=2, STM=3, PG=4, MUTEX_UNFENCED=5)"),
            )),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown strategy {s:?} (expected none, mutex-unfenced, mutex, stm or pg)")
            })
    }
}

/// At most `max` characters of `s` (for echoing untrusted input in messages).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carts_are_sorted_and_reject_duplicates() {
        let cart = Cart::parse("items", [("b", 1), ("a", 2)]).unwrap();
        let skus: Vec<_> = cart.skus().map(Sku::as_str).collect();
        assert_eq!(skus, ["a", "b"]);
        let e = Cart::parse("items", [("a", 1), ("a", 2)]).unwrap_err();
        assert_eq!(e.field, "items[1].sku");
    }

    #[test]
    fn bad_lines_name_the_field() {
        let e = Cart::parse("items", [("a", 1), ("b", 0)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "items[1].quantity: must be at least 1, got 0"
        );
        let e = Cart::parse("items", [("a/b", 1)]).unwrap_err();
        assert!(e.to_string().starts_with("items[0].sku:"), "{e}");
        assert!(Cart::parse("items", []).is_err());
        let many: Vec<(String, i32)> = (0..51).map(|i| (format!("s{i}"), 1)).collect();
        let e = Cart::parse("items", many.iter().map(|(s, q)| (s.as_str(), *q))).unwrap_err();
        assert!(e.message.contains("at most 50"), "{e}");
    }

    #[test]
    fn strategies_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
            assert_eq!(
                Strategy::from_proto("s", s.to_proto() as i32).unwrap(),
                Some(s)
            );
        }
        assert_eq!(Strategy::from_proto("s", 0).unwrap(), None);
        assert!(Strategy::from_proto("s", 42).is_err());
    }

    #[test]
    fn order_ids_must_be_uuids() {
        assert!(OrderId::parse("order_id", "nope").is_err());
        assert!(OrderId::parse("order_id", "").is_err());
        let id = OrderId::new_random();
        assert_eq!(OrderId::parse("order_id", &id.to_string()).unwrap(), id);
    }
}
