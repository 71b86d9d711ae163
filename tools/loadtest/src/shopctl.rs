//! `shopctl`: the shop from a terminal — stock, orders (created and watched until
//! final), sales, the leaders of every service's background jobs, the payment queue.
//!
//! Input is parsed with the services' own domain types (`Sku`, `Quantity`, `OrderId`,
//! `SaleId`, `CustomerId`, `Strategy`) before anything is sent, so a typo is a clear
//! message and exit status 2, never a request. A service's refusal is printed with its
//! code and message (exit status 1).

use std::io::Write;
use std::time::Duration;

use shop_common::auth::{Authorized as Operator, BearerToken, InternalToken};
use shop_common::config::grpc_uri;
use shop_common::domain::{OrderId, SaleId, Sku};
use shop_common::retry::Backoff;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::payment_service_client::PaymentServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The internal token from `--token-file` / `INTERNAL_TOKEN_FILE`: admin commands
/// (stock set, sale create/open) need it; without it shopctl makes customer calls only.
fn token(args: &Args) -> Result<Option<InternalToken>, ShopctlError> {
    args.token_file
        .as_deref()
        .map(|path| InternalToken::from_file("INTERNAL_TOKEN_FILE", path))
        .transpose()
        .map_err(|e| ShopctlError::Input(e.0))
}

mod args;
mod error;
mod orders;

pub use args::{Args, Command, OrderCommand, SaleCommand, StockCommand};
use error::rpc;
pub use error::ShopctlError;
use orders::{create_request, watch_order, write_order};

/// Connects (retrying a service that is not reachable yet with back-off, see
/// `shop_common::retry`) and presents `token` on every call.
async fn connect(
    service: &'static str,
    addr: &str,
    token: &Option<InternalToken>,
) -> Result<Operator, ShopctlError> {
    let addr = grpc_uri(addr);
    let unreachable = |reason: String| ShopctlError::Unreachable {
        service,
        addr: addr.clone(),
        reason,
    };
    let endpoint = Channel::from_shared(addr.clone())
        .map_err(|e| unreachable(format!("not a URI: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let channel = Backoff::default()
        .retry(|| {
            let endpoint = endpoint.clone();
            async move {
                endpoint.connect().await.map_err(|e| {
                    tonic::Status::unavailable(shop_common::telemetry::error_chain(&e))
                })
            }
        })
        .await
        .map_err(|status| unreachable(status.message().to_owned()))?;
    Ok(InterceptedService::new(channel, BearerToken(token.clone())))
}

/// Runs one command, writing what it shows to `out`.
pub async fn run(args: Args, out: &mut impl Write) -> Result<(), ShopctlError> {
    let token = token(&args)?;
    match args.command {
        Command::Stock(command) => {
            let mut inventory = InventoryServiceClient::new(
                connect("inventory", &args.inventory_addr, &token).await?,
            );
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
                            strategy: orders::parse_strategy(strategy)? as i32,
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
                orders::strategy_name(stock.strategy),
                stock.fence_token
            )?;
        }
        Command::Order(command) => {
            let mut orders =
                OrderServiceClient::new(connect("order", &args.order_addr, &token).await?);
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
            let mut inventory = InventoryServiceClient::new(
                connect("inventory", &args.inventory_addr, &token).await?,
            );
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
                PaymentServiceClient::new(connect("payment", &args.payment_addr, &token).await?);
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

/// Every service's leaders; a service that cannot be asked is shown as such, and the
/// command then fails after showing the others.
async fn leaders(args: &Args, out: &mut impl Write) -> Result<(), ShopctlError> {
    let token = token(args)?;
    let mut first_error = None;
    for (service, addr) in [
        ("order", &args.order_addr),
        ("inventory", &args.inventory_addr),
        ("payment", &args.payment_addr),
    ] {
        let answer = match connect(service, addr, &token).await {
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
