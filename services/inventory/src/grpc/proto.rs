//! Protobuf ⇄ domain for the handlers: SetPrices input parsed and checked, and the
//! domain's answers (stock, sales, quotes, reservation states) as messages.

use std::collections::BTreeMap;

use shop_common::domain::{OrderId, Sku, ValidationError};
use shop_proto::v1 as pb;

use crate::catalog::{Quote, MAX_PRICES, MAX_PRICE_MINOR};
use crate::repository::{ReservationState, StockLevel};
use crate::sales::Sale;

/// SetPrices input: 1..=MAX_PRICES distinct SKUs with prices in range.
pub(super) fn parse_prices(prices: &[pb::Price]) -> Result<BTreeMap<Sku, i64>, ValidationError> {
    if prices.is_empty() {
        return Err(ValidationError::new(
            "prices",
            "must have at least one price",
        ));
    }
    if prices.len() > MAX_PRICES {
        return Err(ValidationError::new(
            "prices",
            format!(
                "at most {MAX_PRICES} prices per change, got {}",
                prices.len()
            ),
        ));
    }
    let mut parsed = BTreeMap::new();
    for (i, price) in prices.iter().enumerate() {
        let sku = Sku::parse(&format!("prices[{i}].sku"), &price.sku)?;
        if !(0..=MAX_PRICE_MINOR).contains(&price.unit_price_minor) {
            return Err(ValidationError::new(
                format!("prices[{i}].unit_price_minor"),
                format!(
                    "must be between 0 and {MAX_PRICE_MINOR}, got {}",
                    price.unit_price_minor
                ),
            ));
        }
        if parsed.insert(sku.clone(), price.unit_price_minor).is_some() {
            return Err(ValidationError::new(
                format!("prices[{i}].sku"),
                format!("{sku} appears more than once"),
            ));
        }
    }
    Ok(parsed)
}

pub(super) fn quote_to_proto(quote: Quote) -> pb::QuoteResponse {
    pb::QuoteResponse {
        lines: quote
            .lines
            .into_iter()
            .map(|l| pb::QuoteLine {
                sku: l.sku.as_str().to_owned(),
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                line_total_minor: l.line_total_minor,
            })
            .collect(),
        total_minor: quote.total_minor,
        catalog_version: quote.catalog_version,
    }
}

pub(super) fn sale_to_proto(sale: Sale) -> pb::Sale {
    pb::Sale {
        sale_id: sale.id.as_str().to_owned(),
        per_customer_limit: sale.per_customer_limit.unwrap_or(0) as i32,
        open: sale.is_open(),
        created_at_unix_ms: sale.created_at.timestamp_millis(),
        opened_at_unix_ms: sale.opened_at.map_or(0, |t| t.timestamp_millis()),
    }
}

pub(super) fn stock_to_proto(level: StockLevel) -> pb::Stock {
    pb::Stock {
        sku: level.sku.as_str().to_owned(),
        available: level.available,
        reserved: level.reserved,
        sold: level.sold,
        fence_token: level.fence_token,
        strategy: level.strategy.to_proto() as i32,
    }
}

pub(super) fn reservation_response(
    order: OrderId,
    state: ReservationState,
) -> pb::ReservationResponse {
    let state = match state {
        // Only Release answers about a PREPARING order, and it answers RELEASED.
        ReservationState::Preparing => pb::ReservationState::Unspecified,
        ReservationState::Reserved => pb::ReservationState::Reserved,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
    };
    pb::ReservationResponse {
        order_id: order.to_string(),
        state: state as i32,
    }
}
