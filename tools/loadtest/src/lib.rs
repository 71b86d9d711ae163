//! # loadtest — many buyers, little stock: what each strategy oversells, loses or pays twice
//!
//! A run plays one scenario once per reservation strategy, each on fresh SKUs and its
//! own flash sale, and reads the outcome from the **services' own databases**: the
//! load tester's counts say how fast, the databases say what happened. Buyers in
//! several processes or containers start together at a coord `DoubleBarrier`; the
//! sale opens for all of them at once through the inventory's coord `Barrier`.
//!
//! # Layout
//! | module | what it is for |
//! |---|---|
//! | [`config`] | [`RunConfig`]: scenario, strategies, sizes, addresses, databases, the processes of a run |
//! | [`scenario`] | what the buyers order (flash-sale, Zipf cart-mix, customer-limit) and the run's names |
//! | [`driver`] | one run: setup, start barrier, the rush, sale opening, settling, audit |
//! | [`audit`] | the invariants, read-only from the order, inventory and payment databases |
//! | [`cost`] | what an order costs: etcd writes and requests, Postgres transactions, CPU per process |
//! | [`stats`] | HDR latency histogram and time series of one strategy's samples |
//! | [`report`] | [`StrategyReport`]: tables, `--json` objects, markdown summary |
//! | [`charts`] | `--report`: latency histogram, throughput and stock over time (PNG, SVG) |
//! | [`cli`] | the `loadtest` command line |
//! | [`shopctl`] | the `shopctl` command line, a client for people |

pub mod audit;
pub mod charts;
pub mod cli;
pub mod config;
pub mod cost;
pub mod driver;
pub mod report;
pub mod scenario;
pub mod shopctl;
pub mod stats;

pub use config::RunConfig;
pub use driver::run;
pub use report::StrategyReport;
