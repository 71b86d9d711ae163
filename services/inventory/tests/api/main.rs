//! Integration tests of the inventory service against a real Postgres and a real etcd
//! (no mocks). One binary; each test gets its own database and etcd key prefix, so
//! they run in parallel. Needs `scripts/postgres.sh start` and `scripts/etcd.sh start`
//! (or `DATABASE_URL` / `ETCD_ENDPOINTS`).

mod bad_input;
mod catalog;
mod fencing;
mod helpers;
mod knockouts;
mod limits;
mod properties;
mod races;
mod replicas;
mod reservations;
mod sales;
mod service;
mod stm;
mod strategies;
