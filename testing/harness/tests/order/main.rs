//! Integration tests of the order service end to end: a real order service, a real
//! inventory service, each on its own fresh Postgres database, and the real etcd (no
//! mocks). Needs `scripts/postgres.sh start` and `scripts/etcd.sh start` (or
//! `DATABASE_URL` / `ETCD_ENDPOINTS`).

mod auth;
mod backoff;
mod bad_input;
mod buyers;
mod health;
mod helpers;
mod idempotency;
mod jobs;
mod knockouts;
mod orders;
mod outages;
mod payments;
mod properties;
mod timeouts;
