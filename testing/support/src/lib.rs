//! # shop-test-support — what the shop's test suites share
//!
//! A dev-dependency only: no production crate depends on it. It sits above
//! `shop-common` (it builds the services' settings) and below the services' suites.
//!
//! | module | what it is for |
//! |---|---|
//! | [`backends`] | [`TestDatabase::create`]: a fresh, empty database per test (random name) on the Postgres at `DATABASE_URL`, else a testcontainers Postgres (crate `testkit`), dropped when the test ends; etcd likewise (`ETCD_ENDPOINTS`, else a container); [`unique_etcd_prefix`]; [`test_settings`] for a service on `127.0.0.1:0` with both |
//! | [`servers`] | [`RunningServer`]: a service in the test's runtime, stopped through a oneshot (the shutdown path SIGTERM takes in `main`); [`TcpProxy`] to cut a service off; test logging |
//! | [`observe`] | [`capture_spans`]: every span the process finishes, in memory; [`scrape_metrics`] and [`metric_value`] for `/metrics` |
//! | [`rejections`] | bad-input tables: [`assert_rejections`] |
//! | [`leaders`] | leader-elected jobs: who leads, a leader's crash, [`check_leader_failover`] |
//! | [`properties`] | generators of adversarial requests and the checks of the bad-input property tests (with `proptest`, re-exported here) |

pub mod backends;
pub mod leaders;
pub mod observe;
pub mod properties;
pub mod rejections;
pub mod servers;

pub use backends::{
    etcd_client, etcd_endpoints, server_options, test_settings, unique_etcd_prefix, TestDatabase,
};
pub use leaders::{
    check_leader_failover, crash_leader, job_candidates, listed_holder, wait_until_leading,
};
pub use observe::{capture_spans, metric_value, scrape_metrics};
pub use proptest;
pub use rejections::{assert_rejections, only_status, Rejection};
pub use servers::{init_test_logging, RunningServer, TcpProxy};
