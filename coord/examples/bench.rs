//! Throughput and latency of coord's primitives, workload for workload the same as
//! the Go anchor (`/work/shared/anchors/gomutex/main.go`, etcd's own Go client), so
//! the two can be compared on one etcd. See `docs/benchmarks.md` for results and
//! `scripts/bench-compare.sh` for a side-by-side run.
//!
//! ```text
//! cargo run --release -p coord --example bench -- --endpoint 127.0.0.1:2379 [-n 200] [--workers 8] [--json]
//!     [--only mutex_contended,...] [--current-thread]
//! cargo run --release -p coord --example bench -- --summarize results.jsonl
//! ```
//!
//! How each workload is measured (as the anchor does it):
//! - every worker opens its own client and its own session (TTL 10 s), runs its
//!   operations one after another, then closes the session; the clock starts before
//!   the workers connect and stops when the last one has closed, so `seconds` and
//!   `ops_per_s` include that setup, as the anchor's do;
//! - single-worker workloads run `n` operations; contended ones run
//!   `n / workers * 2` per worker;
//! - the program runs on Tokio's default multi-threaded runtime, as a service would
//!   (`--current-thread` switches to the single-threaded one);
//! - every operation's latency is recorded; `p50_ms`/`p99_ms` are the sorted
//!   latencies at index `floor((len - 1) * p)`, truncated to whole microseconds.
//!
//! Output: with `--json`, one JSON line per workload with the fields `impl, workload,
//! workers, ops, seconds, ops_per_s, p50_ms, p99_ms`; otherwise a table. Progress
//! goes to stderr.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use coord::{stm, Election, EtcdConfig, Mutex, Session};
use serde::{Deserialize, Serialize};

/// One operation of a workload, run by a worker on its own session. `key` is the
/// run's unique key prefix; `index` numbers the operation across all workers.
type Op = for<'a> fn(&'a Session, &'a str, usize) -> BoxedOp<'a>;
type BoxedOp<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// A named workload: what one operation does and whether all workers contend.
struct Workload {
    name: &'static str,
    /// `true`: `--workers` workers, `n / workers * 2` operations each.
    /// `false`: one worker, `n` operations.
    contended: bool,
    op: Op,
}

/// The workloads, in the anchor's order. A new workload is one more entry here and
/// one function below.
const WORKLOADS: &[Workload] = &[
    Workload {
        name: "put_sequential_floor",
        contended: false,
        op: put_floor,
    },
    Workload {
        name: "mutex_uncontended",
        contended: false,
        op: mutex_uncontended,
    },
    Workload {
        name: "mutex_contended",
        contended: true,
        op: mutex_contended,
    },
    Workload {
        name: "election_campaign_resign",
        contended: false,
        op: election_campaign_resign,
    },
    Workload {
        name: "stm_counter_contended",
        contended: true,
        op: stm_counter_contended,
    },
];

/// The floor: one plain put, the cheapest write etcd can commit.
fn put_floor<'a>(session: &'a Session, key: &'a str, _: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        session
            .client()
            .put(format!("{key}/floor"), "x", None)
            .await?;
        Ok(())
    })
}

/// Lock and unlock a name nobody else uses.
fn mutex_uncontended<'a>(session: &'a Session, key: &'a str, _: usize) -> BoxedOp<'a> {
    Box::pin(lock_cycle(session, format!("{key}/m1")))
}

/// Lock and unlock a name every worker uses.
fn mutex_contended<'a>(session: &'a Session, key: &'a str, _: usize) -> BoxedOp<'a> {
    Box::pin(lock_cycle(session, format!("{key}/m2")))
}

async fn lock_cycle(session: &Session, name: String) -> anyhow::Result<()> {
    let guard = Mutex::new(session, &name)?.lock().await?;
    guard.unlock().await?;
    Ok(())
}

/// Win an election nobody else runs in, then resign.
fn election_campaign_resign<'a>(session: &'a Session, key: &'a str, _: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let election = Election::new(session, &format!("{key}/e1"))?;
        let mut leadership = election.campaign("v").await?;
        leadership.resign().await?;
        Ok(())
    })
}

/// One increment of a shared counter in an STM transaction (every worker, one key).
fn stm_counter_contended<'a>(session: &'a Session, key: &'a str, _: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let counter = format!("{key}/ctr");
        let counter = counter.as_str();
        // Go's STM retries a conflicting transaction without limit; coord's stops after
        // 30 attempts by default. Raised here so that an unlucky operation under this
        // much contention does not end the run. Isolation and back-off are the defaults
        // (SerializableSnapshot, as Go's default).
        let options = stm::Options::new().max_attempts(10_000);
        stm::run(&session.client(), options, |tx| async move {
            let value: i64 = tx.get_as(counter).await?.unwrap_or(0);
            tx.put(counter, (value + 1).to_string());
            Ok::<_, coord::Error>(())
        })
        .await?;
        Ok(())
    })
}

/// One result line; field names and meaning are the anchor's.
#[derive(Serialize, Deserialize)]
struct Sample {
    #[serde(rename = "impl")]
    implementation: String,
    workload: String,
    workers: usize,
    ops: usize,
    seconds: f64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Added by `scripts/bench-compare.sh` (never printed by a run): CPU time etcd and
    /// the client process spent per operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etcd_cpu_ms_per_op: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cpu_ms_per_op: Option<f64>,
}

/// The latency at quantile `p` of `sorted`, in ms truncated to whole µs.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p) as usize;
    sorted[index].as_micros() as f64 / 1000.0
}

async fn run(
    workload: &Workload,
    config: &EtcdConfig,
    key: &str,
    workers: usize,
    per_worker: usize,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (config, key, op) = (config.clone(), key.to_owned(), workload.op);
        tasks.push(tokio::spawn(async move {
            let client = config.connect().await?;
            let session = Session::builder(client).ttl(10).build().await?;
            let mut latencies = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let t = Instant::now();
                op(&session, &key, worker * per_worker + i).await?;
                latencies.push(t.elapsed());
            }
            session.close().await?;
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::with_capacity(workers * per_worker);
    for task in tasks {
        all.extend(task.await??);
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort();
    Ok(Sample {
        implementation: "coord".to_owned(),
        workload: workload.name.to_owned(),
        workers,
        ops: all.len(),
        seconds,
        ops_per_s: all.len() as f64 / seconds,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        etcd_cpu_ms_per_op: None,
        client_cpu_ms_per_op: None,
    })
}

struct Args {
    endpoint: String,
    n: usize,
    workers: usize,
    json: bool,
    only: Option<Vec<String>>,
    summarize: Option<String>,
    current_thread: bool,
}

const USAGE: &str = "usage: bench [--endpoint HOST:PORT] [-n OPS] [--workers W] [--json] [--only NAME,...] [--current-thread]
       bench --summarize RESULTS.jsonl
  --endpoint  etcd endpoint (default: first of $ETCD_ENDPOINTS, else 127.0.0.1:2379)
  -n          operations of a single-worker workload; contended ones run n/workers*2 per worker (default 200)
  --workers   workers of the contended workloads (default 8)
  --json      one JSON line per workload instead of a table
  --only      run only these workloads (comma-separated)
  --current-thread  run on Tokio's single-threaded runtime instead of the default
              multi-threaded one (one thread for all workers; fewer cross-thread wake-ups)
  --summarize compare coord with the Go anchor: read JSON lines of both (several rounds),
              print the median of each and the ratios as a Markdown table; runs nothing";

fn parse_args() -> anyhow::Result<Args> {
    let default_endpoint = std::env::var("ETCD_ENDPOINTS")
        .ok()
        .and_then(|list| list.split(',').next().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "127.0.0.1:2379".to_owned());
    let mut args = Args {
        endpoint: default_endpoint,
        n: 200,
        workers: 8,
        json: false,
        only: None,
        summarize: None,
        current_thread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // Accept Go-style single-dash flags too, so the anchor's command lines work.
        let flag = arg.trim_start_matches('-');
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (flag.to_owned(), None),
        };
        let mut value = |what: &str| -> anyhow::Result<String> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => bail!("{what} needs a value\n{USAGE}"),
            }
        };
        match flag.as_str() {
            "endpoint" => args.endpoint = value("--endpoint")?,
            "n" => args.n = value("-n")?.parse().context("-n must be a number")?,
            "workers" => {
                args.workers = value("--workers")?
                    .parse()
                    .context("--workers must be a number")?
            }
            "json" => args.json = true,
            "current-thread" => args.current_thread = true,
            "only" => {
                args.only = Some(
                    value("--only")?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .collect(),
                )
            }
            "summarize" => args.summarize = Some(value("--summarize")?),
            "h" | "help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    if args.n == 0 || args.workers == 0 {
        bail!("-n and --workers must be positive");
    }
    if let Some(only) = &args.only {
        for name in only {
            if !WORKLOADS.iter().any(|w| w.name == name) {
                bail!("unknown workload {name:?} (not built in this program)");
            }
        }
    }
    Ok(args)
}

fn print_table(samples: &[Sample]) {
    println!(
        "{:<26} {:>7} {:>6} {:>9} {:>10} {:>9} {:>9}",
        "workload", "workers", "ops", "seconds", "ops/s", "p50 ms", "p99 ms"
    );
    for s in samples {
        println!(
            "{:<26} {:>7} {:>6} {:>9.3} {:>10.1} {:>9.3} {:>9.3}",
            s.workload, s.workers, s.ops, s.seconds, s.ops_per_s, s.p50_ms, s.p99_ms
        );
    }
}

/// The issue's performance targets: (workload, what is compared, bound).
const TARGETS: &[(&str, Target)] = &[
    ("mutex_contended", Target::OpsAtLeast(5.0)),
    ("mutex_uncontended", Target::P50AtMost(1.1)),
    ("election_campaign_resign", Target::P50AtMost(1.1)),
    ("stm_counter_contended", Target::OpsAtLeast(1.0)),
];

#[derive(Clone, Copy)]
enum Target {
    /// coord's ops/s at least this many times Go's.
    OpsAtLeast(f64),
    /// coord's p50 at most this many times Go's.
    P50AtMost(f64),
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Reads result lines of coord and the Go anchor (any order, any number of rounds) and
/// prints, per workload, the median over rounds of each and coord/Go ratios.
fn summarize(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let sample: Sample = serde_json::from_str(line)
            .with_context(|| format!("{path}:{}: not a result line", number + 1))?;
        samples.push(sample);
    }
    let mut workloads: Vec<&str> = Vec::new();
    for s in &samples {
        if !workloads.contains(&s.workload.as_str()) {
            workloads.push(&s.workload);
        }
    }
    // (median ops/s, p50, p99, rounds) of one implementation on one workload.
    let stats = |is_coord: bool, workload: &str| {
        let of: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.workload == workload && (s.implementation == "coord") == is_coord)
            .collect();
        if of.is_empty() {
            return None;
        }
        let pick = |f: fn(&Sample) -> f64| median(of.iter().map(|s| f(s)).collect());
        Some((
            pick(|s| s.ops_per_s),
            pick(|s| s.p50_ms),
            pick(|s| s.p99_ms),
            of.len(),
        ))
    };
    println!("| workload | coord ops/s | Go ops/s | ops/s coord/Go | coord p50 ms | Go p50 ms | p50 coord/Go | coord p99 ms | Go p99 ms | rounds | target | met |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for workload in workloads {
        let (coord, go) = (stats(true, workload), stats(false, workload));
        let cell = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "–".to_owned(),
        };
        let ops_ratio = coord.zip(go).map(|(c, g)| c.0 / g.0);
        let p50_ratio = coord.zip(go).map(|(c, g)| c.1 / g.1);
        let (target, met) = match TARGETS.iter().find(|(name, _)| *name == workload) {
            Some((_, Target::OpsAtLeast(bound))) => (
                format!("ops/s ≥ {bound}× Go"),
                ops_ratio.map(|r| r >= *bound),
            ),
            Some((_, Target::P50AtMost(bound))) => {
                (format!("p50 ≤ {bound}× Go"), p50_ratio.map(|r| r <= *bound))
            }
            None => ("–".to_owned(), None),
        };
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let rounds = match (coord, go) {
            (Some(c), Some(g)) => format!("{}/{}", c.3, g.3),
            (Some(c), None) => format!("{}/0", c.3),
            (None, Some(g)) => format!("0/{}", g.3),
            (None, None) => "0/0".to_owned(),
        };
        println!(
            "| {workload} | {} | {} | {} | {} | {} | {} | {} | {} | {rounds} | {target} | {met} |",
            cell(coord.map(|c| c.0), 0),
            cell(go.map(|g| g.0), 0),
            cell(ops_ratio, 2),
            cell(coord.map(|c| c.1), 3),
            cell(go.map(|g| g.1), 3),
            cell(p50_ratio, 2),
            cell(coord.map(|c| c.2), 3),
            cell(go.map(|g| g.2), 3),
        );
    }
    let cpu = |is_coord: bool, workload: &str, f: fn(&Sample) -> Option<f64>| {
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.workload == workload && (s.implementation == "coord") == is_coord)
            .filter_map(f)
            .collect();
        (!values.is_empty()).then(|| median(values))
    };
    let measured = samples.iter().any(|s| s.etcd_cpu_ms_per_op.is_some());
    if measured {
        println!();
        println!("CPU time per operation (ms; medians; etcd and the client process):");
        println!();
        println!("| workload | etcd CPU coord | etcd CPU Go | client CPU coord | client CPU Go |");
        println!("|---|---:|---:|---:|---:|");
        let mut seen: Vec<&str> = Vec::new();
        for s in &samples {
            if seen.contains(&s.workload.as_str()) {
                continue;
            }
            seen.push(&s.workload);
            let cell = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.3}"));
            println!(
                "| {} | {} | {} | {} | {} |",
                s.workload,
                cell(cpu(true, &s.workload, |s| s.etcd_cpu_ms_per_op)),
                cell(cpu(false, &s.workload, |s| s.etcd_cpu_ms_per_op)),
                cell(cpu(true, &s.workload, |s| s.client_cpu_ms_per_op)),
                cell(cpu(false, &s.workload, |s| s.client_cpu_ms_per_op)),
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(path) = &args.summarize {
        return summarize(path);
    }
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(run_all(args))
}

async fn run_all(args: Args) -> anyhow::Result<()> {
    // `RUST_LOG=coord=debug` shows what the primitives do (to stderr), for profiling.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let config = EtcdConfig::new(&args.endpoint)?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let key = format!("/coord-bench/{nanos}");
    let mut samples = Vec::new();
    for workload in WORKLOADS {
        if let Some(only) = &args.only {
            if !only.iter().any(|name| name == workload.name) {
                continue;
            }
        }
        let (workers, per_worker) = if workload.contended {
            (args.workers, args.n / args.workers * 2)
        } else {
            (1, args.n)
        };
        let sample = run(workload, &config, &key, workers, per_worker)
            .await
            .with_context(|| format!("workload {}", workload.name))?;
        eprintln!(
            "bench: {} done: {} ops in {:.2} s ({:.0} ops/s, p50 {:.3} ms)",
            sample.workload, sample.ops, sample.seconds, sample.ops_per_s, sample.p50_ms
        );
        if args.json {
            println!("{}", serde_json::to_string(&sample)?);
        }
        samples.push(sample);
    }
    if !args.json {
        print_table(&samples);
    }
    // Leave nothing behind on a shared etcd (sessions are closed; the floor and
    // counter keys have no lease).
    let mut client = config.connect().await?;
    client
        .delete(
            format!("{key}/"),
            Some(coord::etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    Ok(())
}
