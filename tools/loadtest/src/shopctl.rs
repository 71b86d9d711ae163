//! `shopctl`: the shop from a terminal — stock, orders (created and watched until
//! final), sales, the leaders of every service's background jobs, the payment queue.
//!
//! Input is parsed with the services' own domain types (`Sku`, `Quantity`, `OrderId`,
//! `SaleId`, `CustomerId`, `Strategy`) before anything is sent, so a typo is a clear
//! message and exit status 2, never a request. A service's refusal is printed with its
//! code and message (exit status 1).

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use shop_common::config::grpc_uri;
use shop_common::domain::{CustomerId, OrderId, Quantity, SaleId, Sku, Strategy, ValidationError};
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::payment_service_client::PaymentServiceClient;
use tonic::transport::Channel;

use crate::cli::parse_duration;

/// A command-line client for the shop's services.
#[derive(Debug, Parser)]
#[command(name = "shopctl", version)]
pub struct Args {
    /// The order service.
    #[arg(
        long,
        global = true,
        env = "ORDER_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub order_addr: String,
    /// The inventory service.
    #[arg(
        long,
        global = true,
        env = "INVENTORY_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_addr: String,
    /// The payment service.
    #[arg(
        long,
        global = true,
        env = "PAYMENT_ADDR",
        default_value = "http://127.0.0.1:50053"
    )]
    pub payment_addr: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A SKU's stock.
    #[command(subcommand)]
    Stock(StockCommand),
    /// Orders.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Flash sales.
    #[command(subcommand)]
    Sale(SaleCommand),
    /// Who leads each background job, in every service.
    Leaders,
    /// Payment requests waiting in the payment queue, per priority.
    Queue,
}

#[derive(Debug, Subcommand)]
pub enum StockCommand {
    /// Sets the available units of a SKU (created if new), and its strategy.
    Set {
        sku: String,
        #[arg(allow_negative_numbers = true)]
        available: String,
        /// The SKU's guard: none, mutex-unfenced, mutex, stm or pg (default: keep the
        /// SKU's; a new SKU gets the inventory's DEFAULT_STRATEGY).
        #[arg(long)]
        strategy: Option<String>,
    },
    /// Shows a SKU's counters.
    Get { sku: String },
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Creates an order (and, with --watch, follows it until it is final).
    Create {
        /// A line: SKU or SKU:QUANTITY (repeat for more lines).
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        #[arg(long, default_value = "shopctl")]
        customer: String,
        /// standard, gold or platinum (the payment queue's priority).
        #[arg(long, default_value = "standard")]
        tier: String,
        /// Asserts the SKUs' strategy (none, mutex-unfenced, mutex, stm or pg): the
        /// order is refused if theirs differs (default: whatever theirs is).
        #[arg(long)]
        strategy: Option<String>,
        /// The flash sale the order belongs to.
        #[arg(long)]
        sale: Option<String>,
        /// Idempotency key (default: a fresh one).
        #[arg(long)]
        key: Option<String>,
        /// Follow the order until it is PAID, CANCELLED or REJECTED.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Shows an order.
    Get { order_id: String },
    /// Follows an order until it is PAID, CANCELLED or REJECTED.
    Watch {
        order_id: String,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum SaleCommand {
    /// Creates a sale, closed: its orders' reservations wait until it opens.
    Create {
        sale_id: String,
        /// Units one customer may buy in the sale (0 = no limit).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        limit: i32,
    },
    /// Opens a sale: every waiting reservation goes ahead at once.
    Open { sale_id: String },
    /// Shows a sale.
    Get { sale_id: String },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ShopctlError {
    /// The command line names something invalid; nothing was sent.
    #[error("{0}")]
    Input(String),
    #[error("cannot reach the {service} service at {addr}: {reason}")]
    Unreachable {
        service: &'static str,
        addr: String,
        reason: String,
    },
    /// The service refused or failed the call.
    #[error("{service} answered {code:?}: {message}")]
    Rpc {
        service: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("order {order_id} is still {status} after {timeout:?}")]
    WatchTimeout {
        order_id: String,
        status: String,
        timeout: Duration,
    },
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl ShopctlError {
    /// 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ShopctlError::Input(_) => 2,
            _ => 1,
        }
    }
}

impl From<ValidationError> for ShopctlError {
    fn from(e: ValidationError) -> ShopctlError {
        ShopctlError::Input(e.to_string())
    }
}

fn rpc(service: &'static str) -> impl Fn(tonic::Status) -> ShopctlError {
    move |status| ShopctlError::Rpc {
        service,
        code: status.code(),
        message: status.message().to_owned(),
    }
}

async fn connect(service: &'static str, addr: &str) -> Result<Channel, ShopctlError> {
    let addr = grpc_uri(addr);
    let unreachable = |reason: String| ShopctlError::Unreachable {
        service,
        addr: addr.clone(),
        reason,
    };
    Channel::from_shared(addr.clone())
        .map_err(|e| unreachable(format!("not a URI: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| unreachable(shop_common::telemetry::error_chain(&e)))
}

/// Runs one command, writing what it shows to `out`.
pub async fn run(args: Args, out: &mut impl Write) -> Result<(), ShopctlError> {
    match args.command {
        Command::Stock(command) => {
            let mut inventory =
                InventoryServiceClient::new(connect("inventory", &args.inventory_addr).await?);
            let stock = match command {
                StockCommand::Set {
                    sku,
                    available,
                    strategy,
                } => {
                    let sku = Sku::parse("sku", &sku)?;
                    let available = available
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (0..=1_000_000_000).contains(n))
                        .ok_or_else(|| {
                            ShopctlError::Input(format!(
                                "available: {available:?} is not a number of units from 0 to 1000000000"
                            ))
                        })?;
                    inventory
                        .set_stock(pb::SetStockRequest {
                            sku: sku.as_str().to_owned(),
                            available,
                            strategy: parse_strategy(strategy)? as i32,
                        })
                        .await
                }
                StockCommand::Get { sku } => {
                    let sku = Sku::parse("sku", &sku)?;
                    inventory
                        .get_stock(pb::GetStockRequest {
                            sku: sku.as_str().to_owned(),
                        })
                        .await
                }
            }
            .map_err(rpc("inventory"))?
            .into_inner();
            writeln!(
                out,
                "{}: available {}, reserved {}, sold {} (strategy {}, fence token {})",
                stock.sku,
                stock.available,
                stock.reserved,
                stock.sold,
                strategy_name(stock.strategy),
                stock.fence_token
            )?;
        }
        Command::Order(command) => {
            let mut orders = OrderServiceClient::new(connect("order", &args.order_addr).await?);
            match command {
                OrderCommand::Create {
                    items,
                    customer,
                    tier,
                    strategy,
                    sale,
                    key,
                    watch,
                    timeout,
                } => {
                    let request = create_request(items, customer, tier, strategy, sale, key)?;
                    let order = orders
                        .create_order(request)
                        .await
                        .map_err(rpc("order"))?
                        .into_inner();
                    write_order(out, &order)?;
                    if watch {
                        watch_order(&mut orders, &order.order_id, timeout, out).await?;
                    }
                }
                OrderCommand::Get { order_id } => {
                    let order_id = OrderId::parse("order_id", &order_id)?;
                    let order = orders
                        .get_order(pb::GetOrderRequest {
                            order_id: order_id.to_string(),
                        })
                        .await
                        .map_err(rpc("order"))?
                        .into_inner();
                    write_order(out, &order)?;
                }
                OrderCommand::Watch { order_id, timeout } => {
                    let order_id = OrderId::parse("order_id", &order_id)?;
                    watch_order(&mut orders, &order_id.to_string(), timeout, out).await?;
                }
            }
        }
        Command::Sale(command) => {
            let mut inventory =
                InventoryServiceClient::new(connect("inventory", &args.inventory_addr).await?);
            let sale = match command {
                SaleCommand::Create { sale_id, limit } => {
                    let sale_id = SaleId::parse("sale_id", &sale_id)?;
                    if limit < 0 {
                        return Err(ShopctlError::Input(format!(
                            "limit: must be 0 (no limit) or more, got {limit}"
                        )));
                    }
                    inventory
                        .create_sale(pb::CreateSaleRequest {
                            sale_id: sale_id.as_str().to_owned(),
                            per_customer_limit: limit,
                        })
                        .await
                }
                SaleCommand::Open { sale_id } => {
                    let sale_id = SaleId::parse("sale_id", &sale_id)?;
                    inventory
                        .open_sale(pb::OpenSaleRequest {
                            sale_id: sale_id.as_str().to_owned(),
                        })
                        .await
                }
                SaleCommand::Get { sale_id } => {
                    let sale_id = SaleId::parse("sale_id", &sale_id)?;
                    inventory
                        .get_sale(pb::GetSaleRequest {
                            sale_id: sale_id.as_str().to_owned(),
                        })
                        .await
                }
            }
            .map_err(rpc("inventory"))?
            .into_inner();
            let limit = match sale.per_customer_limit {
                0 => "no per-customer limit".to_owned(),
                n => format!("at most {n} units per customer"),
            };
            let state = if sale.open { "open" } else { "closed" };
            writeln!(out, "sale {}: {state}, {limit}", sale.sale_id)?;
        }
        Command::Leaders => leaders(&args, out).await?,
        Command::Queue => {
            let mut payments =
                PaymentServiceClient::new(connect("payment", &args.payment_addr).await?);
            let depth = payments
                .queue_depth(pb::QueueDepthRequest {})
                .await
                .map_err(rpc("payment"))?
                .into_inner();
            writeln!(out, "payment queue: {} waiting", depth.total)?;
            for q in &depth.queues {
                writeln!(out, "  priority {}: {}", q.priority, q.depth)?;
            }
        }
    }
    Ok(())
}

fn create_request(
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

fn status_name(status: i32) -> String {
    pb::OrderStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ORDER_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("status {status}"))
}

fn is_final(status: i32) -> bool {
    matches!(
        pb::OrderStatus::try_from(status),
        Ok(pb::OrderStatus::Paid | pb::OrderStatus::Cancelled | pb::OrderStatus::Rejected)
    )
}

fn write_order(out: &mut impl Write, order: &pb::Order) -> std::io::Result<()> {
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
async fn watch_order(
    orders: &mut OrderServiceClient<Channel>,
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

/// Every service's leaders; a service that cannot be asked is shown as such, and the
/// command then fails after showing the others.
async fn leaders(args: &Args, out: &mut impl Write) -> Result<(), ShopctlError> {
    let mut first_error = None;
    for (service, addr) in [
        ("order", &args.order_addr),
        ("inventory", &args.inventory_addr),
        ("payment", &args.payment_addr),
    ] {
        let answer = match connect(service, addr).await {
            Ok(channel) => {
                let request = pb::ListLeadersRequest {};
                match service {
                    "order" => OrderServiceClient::new(channel).list_leaders(request).await,
                    "inventory" => {
                        InventoryServiceClient::new(channel)
                            .list_leaders(request)
                            .await
                    }
                    _ => {
                        PaymentServiceClient::new(channel)
                            .list_leaders(request)
                            .await
                    }
                }
                .map(tonic::Response::into_inner)
                .map_err(rpc(service))
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(list) if list.leaders.is_empty() => {
                writeln!(out, "{service:<9}  (no leader-elected jobs)")?
            }
            Ok(list) => {
                for l in list.leaders {
                    let holder = if l.holder.is_empty() {
                        "nobody".to_owned()
                    } else {
                        format!("{} (revision {})", l.holder, l.revision)
                    };
                    writeln!(out, "{service:<9}  {:<22} {holder}", l.job)?;
                }
            }
            Err(e) => {
                writeln!(out, "{service:<9}  error: {e}")?;
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// An optional `--strategy` as the protobuf enum (UNSPECIFIED if not given).
fn parse_strategy(strategy: Option<String>) -> Result<pb::Strategy, ShopctlError> {
    match strategy {
        None => Ok(pb::Strategy::Unspecified),
        Some(s) => Ok(Strategy::from_str(&s)
            .map_err(|e| ShopctlError::Input(format!("strategy: {e}")))?
            .to_proto()),
    }
}

/// A strategy from the wire, by its configuration name.
fn strategy_name(raw: i32) -> String {
    match Strategy::from_proto("strategy", raw) {
        Ok(Some(s)) => s.as_str().to_owned(),
        Ok(None) => "unspecified".to_owned(),
        Err(_) => format!("{raw}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(
        items: &[&str],
        tier: &str,
        strategy: Option<&str>,
    ) -> Result<pb::CreateOrderRequest, ShopctlError> {
        create_request(
            items.iter().map(|s| s.to_string()).collect(),
            "alice".into(),
            tier.into(),
            strategy.map(str::to_owned),
            None,
            Some("k1".into()),
        )
    }

    #[test]
    fn items_take_an_optional_quantity() {
        let r = create(&["tea:3", "cake"], "gold", Some("pg")).unwrap();
        let lines: Vec<(&str, i32)> = r
            .items
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect();
        assert_eq!(lines, [("tea", 3), ("cake", 1)]);
        assert_eq!(r.customer_tier, pb::CustomerTier::Gold as i32);
        assert_eq!(r.strategy, pb::Strategy::Pg as i32);
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (create(&["tea:0"], "gold", None), "item[0]"),
            (create(&["tea:x"], "gold", None), "not a whole number"),
            (create(&["te a"], "gold", None), "item[0]"),
            (create(&["tea"], "diamond", None), "tier"),
            (create(&["tea"], "gold", Some("lock")), "strategy"),
        ];
        for (result, text) in cases {
            let e = result.unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains(text), "{e} should mention {text}");
        }
    }
}
