//! The fault suite: `scripts/faults.sh` (or `cargo run --release -p e2e --bin faults`).
//! Brings the compose stack up, runs the flash-sale load once per fault while
//! injecting it, prints a line per step and the matrix, and rewrites the fault matrix
//! in docs/reliability.md. Exit status 1 if any run broke an invariant.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use e2e::faults::{self, Fault, FaultRun, Options};
use e2e::step;
use shop_common::domain::Strategy;

const BEGIN: &str = "<!-- fault-matrix:begin (scripts/faults.sh writes this part) -->";
const END: &str = "<!-- fault-matrix:end -->";

#[derive(Parser)]
#[command(about = "Flash-sale load against the compose stack, one fault at a time")]
struct Args {
    /// Faults to run (default: all, in order).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Fault>,
    /// Reservation strategy of the load.
    #[arg(long, default_value = "mutex")]
    strategy: Strategy,
    /// Buyers per load process (two processes, one per order replica).
    #[arg(long, default_value_t = 20)]
    buyers: usize,
    /// Seconds the buyers keep ordering in each run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before the fault.
    #[arg(long, default_value_t = 6)]
    warmup: u64,
    /// Markdown file whose fault-matrix section is rewritten ("-": none).
    #[arg(long, default_value = "docs/reliability.md")]
    report: String,
    /// Also write the runs as JSON lines here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Leave the stack running afterwards (for a look at it).
    #[arg(long)]
    keep: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let faults_to_run = if args.only.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.only.clone()
    };
    let options = Options {
        strategy: args.strategy,
        buyers: args.buyers,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
    };
    step(
        started,
        "docker compose up (compose.yaml + docker/compose.faults.yaml)",
    );
    let mut stack = faults::stack_up().await?;
    step(started, "stack is healthy");
    let mut runs: Vec<FaultRun> = Vec::new();
    for (i, fault) in faults_to_run.iter().enumerate() {
        step(
            started,
            &format!(
                "run {}/{}: {} under load",
                i + 1,
                faults_to_run.len(),
                fault.name()
            ),
        );
        match faults::run_fault(&mut stack, *fault, &options, started).await {
            Ok(run) => {
                step(
                    started,
                    &format!(
                        "  {}: {} orders, {} accepted, oversold {}, lost {}, duplicate payments {}, stall {}, {}",
                        run.fault,
                        run.orders,
                        run.accepted,
                        run.oversold,
                        run.lost_orders,
                        run.duplicate_payments,
                        run.stall_s.map_or("—".into(), |s| format!("{s:.2}s")),
                        if run.violations.is_empty() { "pass".to_owned() } else { format!("FAIL: {}", run.violations.join("; ")) }
                    ),
                );
                runs.push(run);
            }
            Err(e) => {
                step(
                    started,
                    &format!("  {}: the run itself failed: {e:#}", fault.name()),
                );
                runs.push(FaultRun::failed(*fault, args.strategy, format!("{e:#}")));
            }
        }
    }
    let table = faults::markdown(&runs);
    println!("{table}");
    if let Some(path) = &args.json {
        let lines: Vec<String> = runs
            .iter()
            .map(|r| serde_json::to_string(r).expect("a run serialises"))
            .collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    if args.report != "-" {
        let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        write_report(&args.report, &table, &command, started.elapsed())?;
        step(started, &format!("fault matrix written to {}", args.report));
    }
    if args.keep {
        step(started, "stack left running (project coord-shop-faults)");
    } else {
        step(started, "docker compose down");
        stack.down().await.map_err(anyhow::Error::msg)?;
    }
    if runs.iter().any(|r| !r.violations.is_empty()) {
        std::process::exit(1);
    }
    Ok(())
}

/// Replaces the part between the markers (or appends it under "## Fault matrix").
fn write_report(path: &str, table: &str, command: &str, took: Duration) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let section = format!(
        "{BEGIN}\nLast run: `scripts/faults.sh {command}` on {} ({cpus} cores), {:.0} min, commit {}.\n\n{table}{END}",
        chrono_free_date(),
        took.as_secs_f64() / 60.0,
        git_head(),
    );
    let updated = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &doc[..b], &doc[e + END.len()..]),
        _ => format!("{}\n## Fault matrix\n\n{section}\n", doc.trim_end()),
    };
    std::fs::write(path, updated)?;
    Ok(())
}

fn git_head() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn chrono_free_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
