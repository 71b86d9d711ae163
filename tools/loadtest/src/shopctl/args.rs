//! `shopctl`'s command line: its options and subcommands (clap).

use std::time::Duration;

use clap::{Parser, Subcommand};

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
    /// A file holding the shop's internal token (scripts/secrets.sh), presented on every
    /// call: admin commands need it.
    #[arg(long, global = true, env = "INTERNAL_TOKEN_FILE")]
    pub token_file: Option<String>,
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
