//! `bench --summarize`: coord against the Go anchor, medians and ratios, with the aims.

use anyhow::Context;

use crate::Sample;

/// The performance targets: (workload, what is compared, bound); a workload
/// meets its aim when every one of its targets holds.
const TARGETS: &[(&str, Target)] = &[
    ("mutex_contended", Target::OpsAtLeast(5.0)),
    ("mutex_uncontended", Target::P50AtMost(1.1)),
    ("election_campaign_resign", Target::P50AtMost(1.1)),
    ("stm_counter_contended", Target::OpsAtLeast(1.5)),
    ("stm_counter_contended", Target::P99AtMost(1.0)),
    ("rwmutex_read_heavy", Target::OpsAtLeast(5.0)),
    ("queue_roundtrip", Target::OpsAtLeast(1.0)),
    ("queue_roundtrip", Target::P99AtMost(1.0)),
    ("priority_queue_roundtrip", Target::OpsAtLeast(1.0)),
    ("priority_queue_roundtrip", Target::P99AtMost(1.0)),
    ("double_barrier_round", Target::OpsAtLeast(5.0)),
];

#[derive(Clone, Copy)]
enum Target {
    /// coord's ops/s at least this many times Go's.
    OpsAtLeast(f64),
    /// coord's p50 at most this many times Go's.
    P50AtMost(f64),
    /// coord's p99 at most this many times Go's.
    P99AtMost(f64),
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
pub fn summarize(path: &str) -> anyhow::Result<()> {
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
    println!("| workload | coord ops/s | Go ops/s | ops/s coord/Go | coord p50 ms | Go p50 ms | p50 coord/Go | coord p99 ms | Go p99 ms | p99 coord/Go | rounds | target | met |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for workload in workloads {
        let (coord, go) = (stats(true, workload), stats(false, workload));
        let cell = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "–".to_owned(),
        };
        let ops_ratio = coord.zip(go).map(|(c, g)| c.0 / g.0);
        let p50_ratio = coord.zip(go).map(|(c, g)| c.1 / g.1);
        let p99_ratio = coord.zip(go).map(|(c, g)| c.2 / g.2);
        let (mut aims, mut oks) = (Vec::new(), Vec::new());
        for (_, target) in TARGETS.iter().filter(|(name, _)| *name == workload) {
            let (aim, ok) = match *target {
                Target::OpsAtLeast(bound) => (
                    format!("ops/s ≥ {bound}× Go"),
                    ops_ratio.map(|r| r >= bound),
                ),
                Target::P50AtMost(bound) => {
                    (format!("p50 ≤ {bound}× Go"), p50_ratio.map(|r| r <= bound))
                }
                Target::P99AtMost(bound) => {
                    (format!("p99 ≤ {bound}× Go"), p99_ratio.map(|r| r <= bound))
                }
            };
            aims.push(aim);
            oks.push(ok);
        }
        // Met when every target holds; unknown when one side is missing.
        let met = oks
            .into_iter()
            .collect::<Option<Vec<bool>>>()
            .filter(|oks| !oks.is_empty())
            .map(|oks| oks.iter().all(|ok| *ok));
        let target = if aims.is_empty() {
            "–".to_owned()
        } else {
            aims.join(", ")
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
            "| {workload} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {rounds} | {target} | {met} |",
            cell(coord.map(|c| c.0), 0),
            cell(go.map(|g| g.0), 0),
            cell(ops_ratio, 2),
            cell(coord.map(|c| c.1), 3),
            cell(go.map(|g| g.1), 3),
            cell(p50_ratio, 2),
            cell(coord.map(|c| c.2), 3),
            cell(go.map(|g| g.2), 3),
            cell(p99_ratio, 2),
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
