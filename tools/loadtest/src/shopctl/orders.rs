//! `shopctl order`: the CreateOrder built from the command line, an order printed,
//! and an order watched until it is final.

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use shop_common::domain::{CustomerId, Quantity, SaleId, Sku, Strategy};
use shop_proto::v1 as pb;
use shop_proto::v1::order_service_client::OrderServiceClient;

use super::error::{rpc, ShopctlError};

/// An optional `--strategy` as the protobuf enum (UNSPECIFIED if not given).
pub(super) fn parse_strategy(strategy: Option<String>) -> Result<pb::Strategy, ShopctlError> {
    match strategy {
        None => Ok(pb::Strategy::Unspecified),
        Some(s) => Ok(Strategy::from_str(&s)
            .map_err(|e| ShopctlError::Input(format!("strategy: {e}")))?
            .to_proto()),
    }
}

/// A strategy from the wire, by its configuration name.
pub(super) fn strategy_name(raw: i32) -> String {
    match Strategy::from_proto("strategy", raw) {
        Ok(Some(s)) => s.as_str().to_owned(),
        Ok(None) => "unspecified".to_owned(),
        Err(_) => format!("{raw}"),
    }
}

pub(super) fn create_request(
    items: Vec<String>,
    customer: String,
    tier: String,
    strategy: Option<String>,
    sale: Option<String>,
    key: Option<String>,
) -> Result<pb::CreateOrderRequest, ShopctlError> {
    let mut lines = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("item[{i}]");
        let (sku, quantity) = match item.split_once(':') {
            Some((sku, q)) => {
                let q = q.parse::<i32>().map_err(|_| {
                    ShopctlError::Input(format!("{field}: quantity {q:?} is not a whole number"))
                })?;
                (sku, q)
            }
            None => (item.as_str(), 1),
        };
        let sku = Sku::parse(&field, sku)?;
        let quantity = Quantity::parse(&field, quantity)?;
        lines.push(pb::LineItem {
            sku: sku.as_str().to_owned(),
            quantity: quantity.get(),
        });
    }
    let customer = CustomerId::parse("customer", &customer)?;
    let tier = match tier.as_str() {
        "standard" => pb::CustomerTier::Standard,
        "gold" => pb::CustomerTier::Gold,
        "platinum" => pb::CustomerTier::Platinum,
        other => {
            return Err(ShopctlError::Input(format!(
                "tier: {other:?} is not one of standard, gold, platinum"
            )))
        }
    };
    let strategy = parse_strategy(strategy)?;
    let sale_id = sale
        .map(|s| SaleId::parse("sale", &s).map(|s| s.as_str().to_owned()))
        .transpose()?;
    let idempotency_key = key.unwrap_or_else(|| format!("shopctl-{}", uuid::Uuid::new_v4()));
    Ok(pb::CreateOrderRequest {
        idempotency_key,
        customer_id: customer.as_str().to_owned(),
        customer_tier: tier as i32,
        items: lines,
        strategy: strategy as i32,
        sale_id,
    })
}

pub(super) fn status_name(status: i32) -> String {
    pb::OrderStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ORDER_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("status {status}"))
}

pub(super) fn is_final(status: i32) -> bool {
    matches!(
        pb::OrderStatus::try_from(status),
        Ok(pb::OrderStatus::Paid | pb::OrderStatus::Cancelled | pb::OrderStatus::Rejected)
    )
}

pub(super) fn write_order(out: &mut impl Write, order: &pb::Order) -> std::io::Result<()> {
    let items = order
        .items
        .iter()
        .map(|l| format!("{}×{}", l.quantity, l.sku))
        .collect::<Vec<_>>()
        .join(", ");
    let strategy = pb::Strategy::try_from(order.strategy)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("STRATEGY_")
                .to_lowercase()
        })
        .unwrap_or_default();
    write!(
        out,
        "order {}: {} ({items}; customer {}, strategy {strategy}",
        order.order_id,
        status_name(order.status),
        order.customer_id
    )?;
    if let Some(sale) = &order.sale_id {
        write!(out, ", sale {sale}")?;
    }
    write!(out, ")")?;
    if !order.status_reason.is_empty() {
        write!(out, ": {}", order.status_reason)?;
    }
    if !order.payment_id.is_empty() {
        write!(out, " [payment {}]", order.payment_id)?;
    }
    writeln!(out)
}

/// Polls the order, printing each status it passes through, until it is final.
pub(super) async fn watch_order(
    orders: &mut OrderServiceClient<super::Operator>,
    order_id: &str,
    timeout: Duration,
    out: &mut impl Write,
) -> Result<pb::Order, ShopctlError> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let order = orders
            .get_order(pb::GetOrderRequest {
                order_id: order_id.to_owned(),
            })
            .await
            .map_err(rpc("order"))?
            .into_inner();
        if last != Some(order.status) {
            write!(out, "{:>7.2}s  ", started.elapsed().as_secs_f64())?;
            write_order(out, &order)?;
            out.flush()?;
            last = Some(order.status);
        }
        if is_final(order.status) {
            return Ok(order);
        }
        if started.elapsed() >= timeout {
            return Err(ShopctlError::WatchTimeout {
                order_id: order_id.to_owned(),
                status: status_name(order.status),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
