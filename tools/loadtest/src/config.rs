//! What one load-test run does and where it finds the shop: [`RunConfig`].
//!
//! The command line (module `cli`) builds one; tests build one directly. Every value
//! here is already checked: a `RunConfig` that exists can be run.

use std::time::Duration;

use shop_common::domain::Strategy;
use sqlx::postgres::PgConnectOptions;

/// Which traffic the buyers produce (module `scenario` draws it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every buyer wants one unit of one hot SKU.
    FlashSale,
    /// Orders of 1..=max-lines SKUs drawn from a Zipf popularity over many SKUs.
    CartMix,
    /// One hot SKU in a sale that caps the units one customer may buy; several buyers
    /// share one customer.
    CustomerLimit,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::FlashSale => "flash-sale",
            Scenario::CartMix => "cart-mix",
            Scenario::CustomerLimit => "customer-limit",
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many orders a process's buyers place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// Each buyer places exactly one order (the flash-sale rush).
    OnePerBuyer,
    /// This many orders in all, shared by the buyers (each places the next one as soon
    /// as its previous one is answered).
    Orders(usize),
    /// Buyers keep ordering until this much time has passed since the start.
    Duration(Duration),
}

/// gRPC addresses (URIs) of the services the buyers and the setup talk to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub order: String,
    pub inventory: String,
}

/// The services' own databases, read (read-only) for the invariants.
#[derive(Debug, Clone)]
pub struct Databases {
    pub order: PgConnectOptions,
    pub inventory: PgConnectOptions,
    pub payment: PgConnectOptions,
}

/// This process's place in a run that may span several processes or containers.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Names the run's SKUs, sale, idempotency keys and barriers; every process of a
    /// run must be given the same one.
    pub run_id: String,
    /// Processes taking part (each runs `buyers` buyers).
    pub processes: usize,
    /// This process's index, `0..processes`. Process 0 coordinates: it stocks the
    /// SKUs, creates and opens the sale.
    pub index: usize,
    pub etcd: coord::EtcdConfig,
    /// Prefix of the run's etcd keys (`<prefix>/loadtest/<run>/...`).
    pub etcd_prefix: String,
}

impl Cluster {
    pub fn is_coordinator(&self) -> bool {
        self.index == 0
    }
}

/// One run: a scenario, played once per strategy on fresh SKUs (and a fresh sale).
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    /// Played one after the other, each on its own SKUs, so they do not interfere.
    pub strategies: Vec<Strategy>,
    /// Concurrent buyers in this process.
    pub buyers: usize,
    /// Units stocked per SKU.
    pub stock: i64,
    /// SKUs of the cart mix (1 for the other scenarios).
    pub skus: usize,
    /// Zipf exponent of the cart mix's SKU popularity (0 = uniform).
    pub zipf_exponent: f64,
    /// Most lines of a cart-mix order.
    pub max_lines: usize,
    /// Most units per line (each line asks for 1..=this).
    pub max_quantity: i32,
    /// The sale's cap on units per customer (0 = none; customer-limit needs one).
    pub per_customer_limit: i32,
    /// Distinct customers over all processes' buyers (buyers share them round robin).
    pub customers: usize,
    pub amount: Amount,
    /// Open loop: orders start at this many per second (order `n` is due `n / rate`
    /// seconds after the start, whatever the earlier ones are doing), and latency counts
    /// from the due time, so a stall delays every order due during it (no coordinated
    /// omission). `buyers` is then the most orders in flight. None: closed loop (each
    /// buyer orders again when answered).
    pub rate: Option<f64>,
    /// More processes whose CPU time the cost counts: name and the TCP port each listens
    /// on (etcd, Postgres, order and inventory are found from their addresses).
    pub cpu_ports: Vec<(String, u16)>,
    /// Put the orders in a flash sale that opens (coord Barrier in the inventory
    /// service) once every process's buyers have submitted; without it the buyers only
    /// start together.
    pub use_sale: bool,
    /// Buyers call the inventory's Reserve directly instead of the order service's
    /// CreateOrder: the reservation strategies alone, without the saga (no order rows,
    /// no payments; the reservations stay RESERVED). Only the stock invariants apply.
    pub direct_reserve: bool,
    pub endpoints: Endpoints,
    pub databases: Databases,
    pub cluster: Cluster,
    /// How long to wait after the last reply for every accepted order to end PAID or
    /// CANCELLED; what has not by then counts as lost.
    pub settle_timeout: Duration,
    /// Longest wait for the other processes at the start barrier.
    pub join_timeout: Duration,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Poll the SKUs' stock during the run (for the stock chart of a report); off
    /// otherwise, so a plain run puts no extra load on the inventory.
    pub sample_stock: bool,
    /// Seed of the buyers' random choices (carts, quantities).
    pub seed: u64,
    /// The operator's internal token for the setup's admin calls (stocking, sales);
    /// the command line reads it from `INTERNAL_TOKEN_FILE`. None: no token presented.
    pub internal_token: Option<shop_common::auth::InternalToken>,
}

impl RunConfig {
    /// Total units stocked over the run's SKUs.
    pub fn total_stock(&self) -> i64 {
        self.stock * self.skus as i64
    }
}
