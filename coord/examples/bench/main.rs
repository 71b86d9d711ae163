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
//!   `n / workers * 2` per worker; `double_barrier_round` runs `n / 20` rounds with
//!   `min(workers, 4)` workers;
//! - `work_queue_roundtrip`, `semaphore_contended`, `put_concurrent` and `mutex_spread`
//!   have no Go counterpart;
//! - the program runs on Tokio's default multi-threaded runtime, as a service would
//!   (`--current-thread` switches to the single-threaded one);
//! - every operation's latency is recorded; `p50_ms`/`p99_ms` are the sorted
//!   latencies at index `floor((len - 1) * p)`, truncated to whole microseconds.
//!
//! Output: with `--json`, one JSON line per workload with the fields `impl, workload,
//! workers, ops, seconds, ops_per_s, p50_ms, p99_ms`; otherwise a table. Progress
//! goes to stderr.

mod summarize;
mod workloads;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use coord::{EtcdConfig, Session};
use serde::{Deserialize, Serialize};

use workloads::{Job, Workload, WORKLOADS};

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

async fn run(workload: &Workload, config: &EtcdConfig, job: Job) -> anyhow::Result<Sample> {
    let (workers, per_worker) = (job.workers, job.per_worker);
    let job = std::sync::Arc::new(job);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (config, job, op) = (config.clone(), job.clone(), workload.op);
        tasks.push(tokio::spawn(async move {
            let client = config.connect().await?;
            let session = Session::builder(client).ttl(10).build().await?;
            let mut latencies = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let t = Instant::now();
                op(&session, &job, worker * per_worker + i).await?;
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
       bench --list
  --endpoint  etcd endpoint (default: first of $ETCD_ENDPOINTS, else 127.0.0.1:2379)
  -n          operations of a single-worker workload; contended ones run n/workers*2 per worker,
              double_barrier_round n/20 rounds of min(workers, 4) (default 200)
  --workers   workers of the contended workloads (default 8)
  --json      one JSON line per workload instead of a table
  --only      run only these workloads (comma-separated)
  --current-thread  run on Tokio's single-threaded runtime instead of the default
              multi-threaded one (one thread for all workers; fewer cross-thread wake-ups)
  --summarize compare coord with the Go anchor: read JSON lines of both (several rounds),
              print the median of each and the ratios as a Markdown table; runs nothing
  --list      print the workloads' names, one a line, in the order they run";

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
            "list" => {
                for workload in WORKLOADS {
                    println!("{}", workload.name);
                }
                std::process::exit(0);
            }
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

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(path) = &args.summarize {
        return summarize::summarize(path);
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
        let (workers, per_worker) = workload.shape.size(args.n, args.workers);
        let job = Job {
            key: key.clone(),
            workers,
            per_worker,
        };
        let sample = run(workload, &config, job)
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
