//! The load tester and shopctl against a whole shop started in-process — inventory,
//! order and payment, each with its own database on the real Postgres, all on the real
//! etcd — and the truth checked in those databases.

mod binaries;
mod cost;
mod helpers;
mod runs;
