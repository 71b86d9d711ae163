//! Integration tests for `coord` against a real etcd 3.5 (no mocks).
//!
//! One test binary (faster to link); one module per primitive. Every test works under
//! its own random key prefix, so tests run in parallel against one etcd.
//! etcd comes from `ETCD_ENDPOINTS`, else a testcontainers etcd (crate `testkit`);
//! `scripts/etcd.sh start` runs one.

mod barrier;
mod common;
mod docs;
mod docs_etcdctl;
mod docs_outputs;
mod double_barrier;
mod election;
mod leader;
mod locker;
mod mutex;
mod own_etcd;
mod partition;
mod queue;
mod rwmutex;
mod security;
mod semaphore;
mod session;
mod stm;
mod txn;
mod work_queue;
