//! What the orders of one strategy cost the shop, read from the servers themselves
//! before and after the buyers run (from just before the first order to the moment
//! every order is settled), divided by the orders placed:
//!
//! - **etcd writes**: how far the store's revision moved (every committed write — a
//!   Put, a DeleteRange, a Txn that changed something, a lease revoke that deleted keys
//!   — moves it by exactly one), read from a response header;
//! - **etcd requests**: `grpc_server_msg_received_total` of each member's `/metrics`
//!   (one per unary call, one per message on a stream such as a lease keep-alive),
//!   also by method, and the MVCC key counts (`etcd_mvcc_{put,delete,range,txn}_total`);
//! - **Postgres transactions**: `xact_commit + xact_rollback` of `pg_stat_database`
//!   for each database the load tester knows (order, inventory, payment);
//! - **CPU**: user + system time from `/proc/<pid>/stat` of each process the load
//!   tester can see on this host — found by the TCP port it listens on (etcd, Postgres
//!   with its backends, order, inventory, and what `--cpu-port` names), and itself.
//!
//! Not exact, and said so in the report's docs: the counters are the servers', so
//! anything else using the same etcd or Postgres during the run is counted too (a
//! dedicated shop, as `scripts/loadtest-bench.sh` starts, has nothing else), the load
//! tester's own settle polling included (a few transactions a second). Postgres ≥ 15
//! publishes an idle backend's counts up to 10 s late: the "after" reading waits until
//! the counters stand still (at most [`PG_SETTLE`]). Processes in containers or on
//! other hosts have no CPU reading here; a port nobody listens on is left out.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::RunConfig;

mod procfs;
use procfs::{clock_ticks_per_second, find_processes, process_ticks};

/// Longest wait for Postgres's statistics to catch up after a run.
pub const PG_SETTLE: Duration = Duration::from_secs(12);

/// The cost per order of one strategy's run; the fields are part of the `--json`
/// object. `None`: not measurable here (no metrics endpoint, no orders).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cost {
    /// Committed etcd writes (revisions) per order.
    pub etcd_writes_per_order: Option<f64>,
    /// etcd gRPC messages received per order, over every member.
    pub etcd_requests_per_order: Option<f64>,
    /// The same by method (`Txn`, `Range`, `LeaseKeepAlive`, ...).
    pub etcd_requests_by_method: BTreeMap<String, f64>,
    /// MVCC operations per order: `put`, `delete` (keys), `range`, `txn`.
    pub etcd_mvcc_per_order: BTreeMap<String, f64>,
    /// Postgres transactions (commits + rollbacks) per order, over the databases.
    pub pg_xacts_per_order: Option<f64>,
    /// The same by database (`order`, `inventory`, `payment`).
    pub pg_xacts_by_db: BTreeMap<String, f64>,
    /// CPU milliseconds per order by process (`etcd`, `postgres`, `order`, ...,
    /// `loadtest`; processes sharing a pid are one entry, names joined by `+`),
    /// and `total`.
    pub cpu_ms_per_order: BTreeMap<String, f64>,
}

/// One reading of every counter.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    revision: Option<i64>,
    /// Metric name (with the method for the gRPC one) → value, summed over members.
    etcd: Option<BTreeMap<String, f64>>,
    pg: BTreeMap<String, i64>,
    /// Process name → clock ticks.
    cpu: BTreeMap<String, u64>,
}

/// A per-order figure with two decimals, or `n/a` when it could not be read.
pub fn per_order(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
}

impl Cost {
    /// The cost per order of each `(strategy, cost)` side by side, as a markdown table.
    pub fn markdown_table<'a>(rows: impl Iterator<Item = (&'a str, &'a Cost)>) -> String {
        let mut out = String::from(
            "| strategy | etcd writes | etcd requests | Postgres xacts | CPU ms (all processes) |\n\
             |---|---:|---:|---:|---:|\n",
        );
        for (strategy, c) in rows {
            out.push_str(&format!(
                "| {strategy} | {} | {} | {} | {} |\n",
                per_order(c.etcd_writes_per_order),
                per_order(c.etcd_requests_per_order),
                per_order(c.pg_xacts_per_order),
                per_order(c.cpu_ms_per_order.get("total").copied()),
            ));
        }
        out
    }

    /// One line: etcd writes and requests, Postgres transactions, CPU ms by process.
    pub fn line(&self) -> String {
        let c = self;
        let joined = |map: &BTreeMap<String, f64>| {
            map.iter()
                .map(|(name, n)| format!("{name} {n:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (methods, cpu) = (
            joined(&c.etcd_requests_by_method),
            joined(&c.cpu_ms_per_order),
        );
        format!(
            "etcd {} writes, {} requests ({methods}); Postgres {} transactions; CPU ms: {}",
            per_order(c.etcd_writes_per_order),
            per_order(c.etcd_requests_per_order),
            per_order(c.pg_xacts_per_order),
            if cpu.is_empty() { "n/a".into() } else { cpu },
        )
    }
}

/// Where the counters are read.
pub struct CostProbe {
    etcd: etcd_client::Client,
    /// `host:port` of each member's plain-HTTP metrics (none with TLS).
    metrics: Vec<String>,
    /// Database name → (pool to the server's `postgres` database, name in the server).
    pg: Vec<(String, PgPool, String)>,
    /// Process name → listening port (and pids found at connect time).
    processes: Vec<(String, Vec<u32>)>,
}

impl CostProbe {
    /// Finds what can be read: etcd's metrics, the databases' servers, the processes
    /// listening on the known ports. Fails only when etcd is unreachable.
    pub async fn connect(
        config: &RunConfig,
        etcd: etcd_client::Client,
    ) -> anyhow::Result<CostProbe> {
        let metrics = if config.cluster.etcd.tls.is_some() {
            Vec::new()
        } else {
            config
                .cluster
                .etcd
                .endpoints
                .iter()
                .map(|e| host_port(e).to_owned())
                .collect()
        };
        let mut pg = Vec::new();
        let dbs = [
            ("order", &config.databases.order),
            ("inventory", &config.databases.inventory),
            ("payment", &config.databases.payment),
        ];
        for (name, options) in dbs {
            let database = options.get_database().unwrap_or("postgres").to_owned();
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(maintenance(options));
            pg.push((name.to_owned(), pool, database));
        }
        let mut ports: Vec<(String, u16)> = Vec::new();
        for e in &config.cluster.etcd.endpoints {
            ports.extend(port_of(host_port(e)).map(|p| ("etcd".to_owned(), p)));
        }
        for (_, options) in dbs {
            ports.push(("postgres".to_owned(), options.get_port()));
        }
        for (name, uri) in [
            ("order", &config.endpoints.order),
            ("inventory", &config.endpoints.inventory),
        ] {
            ports.extend(port_of(host_port(uri)).map(|p| (name.to_owned(), p)));
        }
        ports.extend(config.cpu_ports.iter().cloned());
        Ok(CostProbe {
            etcd,
            metrics,
            pg,
            processes: find_processes(&ports),
        })
    }

    /// Reads every counter now.
    pub async fn read(&self) -> Reading {
        let revision = self
            .etcd
            .clone()
            .get("/", None)
            .await
            .ok()
            .and_then(|r| r.header().map(|h| h.revision()));
        let mut etcd: Option<BTreeMap<String, f64>> = None;
        for member in &self.metrics {
            if let Some(text) = scrape(member).await {
                let sums = etcd.get_or_insert_with(BTreeMap::new);
                for (name, value) in parse_etcd_metrics(&text) {
                    *sums.entry(name).or_insert(0.0) += value;
                }
            }
        }
        let mut pg = BTreeMap::new();
        for (name, pool, database) in &self.pg {
            if let Some(n) = pg_xacts(pool, database).await {
                pg.insert(name.clone(), n);
            }
        }
        Reading {
            revision,
            etcd,
            pg,
            cpu: self.cpu_ticks(),
        }
    }

    /// The reading after a run: Postgres's counters read again until they stand still
    /// (idle backends publish late), at most [`PG_SETTLE`].
    pub async fn read_after(&self) -> Reading {
        let mut reading = self.read().await;
        let deadline = tokio::time::Instant::now() + PG_SETTLE;
        let mut still_since = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let next = self.read().await;
            if next.pg != reading.pg {
                still_since = tokio::time::Instant::now();
                reading.pg = next.pg;
            } else if still_since.elapsed() >= Duration::from_millis(1500) {
                break;
            }
        }
        reading
    }

    fn cpu_ticks(&self) -> BTreeMap<String, u64> {
        let mut ticks = BTreeMap::new();
        ticks.insert(
            "loadtest".to_owned(),
            process_ticks(std::process::id(), true),
        );
        for (name, pids) in &self.processes {
            let sum = pids.iter().map(|&pid| process_ticks(pid, true)).sum();
            ticks.insert(name.clone(), sum);
        }
        ticks
    }
}

/// `before` → `after`, per order.
pub fn cost(before: &Reading, after: &Reading, orders: usize) -> Cost {
    if orders == 0 {
        return Cost::default();
    }
    let per = |n: f64| n / orders as f64;
    let mut cost = Cost::default();
    if let (Some(a), Some(b)) = (after.revision, before.revision) {
        cost.etcd_writes_per_order = Some(per((a - b) as f64));
    }
    if let (Some(a), Some(b)) = (&after.etcd, &before.etcd) {
        let delta = |key: &str| a.get(key).unwrap_or(&0.0) - b.get(key).unwrap_or(&0.0);
        let mut requests = 0.0;
        for key in a.keys() {
            if let Some(method) = key.strip_prefix("grpc:") {
                let d = delta(key);
                requests += d;
                if d > 0.0 {
                    cost.etcd_requests_by_method
                        .insert(method.to_owned(), per(d));
                }
            } else if let Some(op) = key.strip_prefix("mvcc:") {
                cost.etcd_mvcc_per_order
                    .insert(op.to_owned(), per(delta(key)));
            }
        }
        cost.etcd_requests_per_order = Some(per(requests));
    }
    let mut xacts = None;
    for (db, a) in &after.pg {
        if let Some(b) = before.pg.get(db) {
            let d = (a - b) as f64;
            cost.pg_xacts_by_db.insert(db.clone(), per(d));
            *xacts.get_or_insert(0.0) += d;
        }
    }
    cost.pg_xacts_per_order = xacts.map(per);
    let ms_per_tick = 1000.0 / clock_ticks_per_second();
    let mut total = 0.0;
    for (name, a) in &after.cpu {
        if let Some(b) = before.cpu.get(name) {
            let ms = a.saturating_sub(*b) as f64 * ms_per_tick;
            total += ms;
            cost.cpu_ms_per_order.insert(name.clone(), per(ms));
        }
    }
    if !cost.cpu_ms_per_order.is_empty() {
        cost.cpu_ms_per_order.insert("total".to_owned(), per(total));
    }
    cost
}

/// The `host:port` of an endpoint given as `host:port` or a URL.
fn host_port(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

fn port_of(host_port: &str) -> Option<u16> {
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// The same server, its `postgres` database (where reading statistics counts no
/// transaction against the databases measured).
fn maintenance(options: &PgConnectOptions) -> PgConnectOptions {
    options.clone().database("postgres")
}

async fn pg_xacts(pool: &PgPool, database: &str) -> Option<i64> {
    let mut tx = pool.begin().await.ok()?;
    // A fresh look at the shared statistics, not the transaction's cached snapshot.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *tx)
        .await
        .ok()?;
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_optional(&mut *tx)
    .await
    .ok()?;
    tx.commit().await.ok()?;
    n
}

/// `GET /metrics` over plain HTTP/1.0; None when it cannot be read. A blocking
/// socket on tokio's blocking pool (a few reads per strategy).
async fn scrape(host_port: &str) -> Option<String> {
    let host_port = host_port.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        use std::net::ToSocketAddrs;
        let address = host_port.to_socket_addrs().ok()?.next()?;
        let timeout = Duration::from_secs(5);
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {host_port}\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.lines().next()?;
        (status.starts_with("HTTP/1.") && status.contains(" 200")).then(|| body.to_owned())
    })
    .await
    .ok()
    .flatten()
}

/// The counters this module reads from etcd's Prometheus text: `grpc:<method>` (gRPC
/// messages received, summed over codes and types) and `mvcc:<op>`.
pub fn parse_etcd_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let key = match name {
            "grpc_server_msg_received_total" => {
                let Some(method) = label(labels, "grpc_method") else {
                    continue;
                };
                format!("grpc:{method}")
            }
            "etcd_mvcc_put_total" => "mvcc:put".to_owned(),
            "etcd_mvcc_delete_total" => "mvcc:delete".to_owned(),
            "etcd_mvcc_range_total" => "mvcc:range".to_owned(),
            "etcd_mvcc_txn_total" => "mvcc:txn".to_owned(),
            _ => continue,
        };
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_metrics_are_summed_by_method_and_operation() {
        let text = "# HELP x\n\
grpc_server_msg_received_total{grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 7\n\
grpc_server_msg_received_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n\
grpc_server_msg_received_total{grpc_method=\"Txn\",grpc_service=\"x\",grpc_type=\"unary\"} 1\n\
etcd_mvcc_put_total 5\n\
etcd_mvcc_delete_total 3\n\
grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\"} 99\n";
        let m = parse_etcd_metrics(text);
        assert_eq!(m["grpc:Txn"], 8.0);
        assert_eq!(m["grpc:Range"], 2.0);
        assert_eq!(m["mvcc:put"], 5.0);
        assert_eq!(m["mvcc:delete"], 3.0);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn costs_are_differences_per_order() {
        let before = Reading {
            revision: Some(10),
            etcd: Some(BTreeMap::from([("grpc:Txn".to_owned(), 4.0)])),
            pg: BTreeMap::from([("order".to_owned(), 100)]),
            cpu: BTreeMap::from([("etcd".to_owned(), 50)]),
        };
        let after = Reading {
            revision: Some(40),
            etcd: Some(BTreeMap::from([("grpc:Txn".to_owned(), 24.0)])),
            pg: BTreeMap::from([("order".to_owned(), 130)]),
            cpu: BTreeMap::from([("etcd".to_owned(), 70)]),
        };
        let c = cost(&before, &after, 10);
        assert_eq!(c.etcd_writes_per_order, Some(3.0));
        assert_eq!(c.etcd_requests_per_order, Some(2.0));
        assert_eq!(c.pg_xacts_per_order, Some(3.0));
        // 20 ticks of 10 ms over 10 orders.
        assert_eq!(c.cpu_ms_per_order["etcd"], 20.0);
        assert_eq!(c.cpu_ms_per_order["total"], 20.0);
        assert_eq!(cost(&before, &after, 0).etcd_writes_per_order, None);
    }

    #[test]
    fn endpoints_give_their_host_and_port() {
        assert_eq!(host_port("http://127.0.0.1:50051"), "127.0.0.1:50051");
        assert_eq!(host_port("127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(port_of("127.0.0.1:2379"), Some(2379));
    }
}
