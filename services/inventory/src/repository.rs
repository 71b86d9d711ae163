//! The inventory database: stock rows and reservations (`migrations/inventory/`).
//!
//! | file | what it holds |
//! |---|---|
//! | `repository/model.rs` | the values the methods take and return (stock levels, audits, reservation states, Reserve input and outcomes, sale buyers, stm seeds) and the errors; no SQL |
//! | `repository/stock.rs` | [`InventoryDb`] (the pool handle) and the stock rows: set/get a SKU, unknown SKUs, the lock-free snapshot |
//! | `repository/reserve.rs` | Reserve: the per-order claim, all lines or none, a retry's same answer, the stm claim (`prepare`/`unprepare`) |
//! | `repository/strategies.rs` | [`StockCheck`]: how each strategy takes one line (the critical section `read_in_section`/`write_in_section` under a [`Guard`], `take_conditional`, `take_decided`) and counts a sale limit |
//! | `repository/settle.rs` | Commit and Release (tombstones included) |
//! | `repository/audit.rs` | drift, per-SKU audit, a customer's units in a sale, states of many orders |
//!
//! # The reservation protocol (per order)
//! - **Reserve** starts by inserting the order's `reservations` row (state RESERVED)
//!   inside its transaction. That row is the per-order serialisation point: a
//!   concurrent Reserve or Release of the same order blocks on it, and whoever commits
//!   first decides. Then every line's stock is checked and taken (how depends on the
//!   [`StockCheck`]), the lines are inserted, and the transaction commits: all lines
//!   or none.
//! - **Release** inserts the same row as RELEASED. If that succeeds, the order never
//!   reserved anything: the row is a tombstone, and a Reserve arriving later finds it
//!   and takes nothing (a "hanging" reservation is impossible). Otherwise it returns
//!   the lines' units to `available`, once.
//! - **Commit** moves the lines' units from `reserved` to `sold`, once, in one
//!   statement that takes its locks in the same order (the order's row, then the stock
//!   rows in SKU order; `settle.rs`, `COMMIT`).
//!
//! Every stock change here is relative (`available = available - q`), except the
//! critical section of `none`, `mutex-unfenced` and `mutex`, which writes the new
//! absolute `available` it computed from its read. So the lock is what keeps those
//! strategies' writes apart, and a Release of their units takes the same locks
//! (`reservation::Reserver::release`); commits never touch `available`.
//! SKUs are always touched in sorted order (a `Cart` is sorted), so two transactions
//! can never wait for each other's rows in a cycle.

mod audit;
mod model;
mod reserve;
mod settle;
mod stock;
mod strategies;

pub use model::{
    Drift, LimitExceeded, ReservationState, ReserveDbError, ReserveInput, ReserveOutcome,
    SaleBuyer, Seed, SettleDbError, Settled, Shortage, StockAudit, StockLevel,
};
pub use stock::InventoryDb;
pub use strategies::{Guard, StockCheck};
