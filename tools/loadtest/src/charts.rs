//! `--report DIR`: per strategy a latency histogram, throughput over time, stock
//! over time and the cost per order (CPU ms by process; etcd writes and requests,
//! Postgres transactions in the legend), each as `<strategy>-<chart>.png` and `.svg`, drawn with plotters.
//!
//! Text needs a TrueType font, read at run time (nothing is downloaded or embedded):
//! `--font`/`LOADTEST_FONT`, else DejaVu Sans where Debian's `fonts-dejavu-core` puts
//! it (installed by `scripts/install-deps.sh`), else a few other usual places. Without
//! one, [`register_font`] fails with a message saying how to get one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::StrategyReport;

/// The charts of one strategy: file stem and title.
pub const CHARTS: [(&str, &str); 4] = [
    ("latency", "latency histogram"),
    ("throughput", "throughput over time"),
    ("stock", "stock over time"),
    ("cost", "cost per order"),
];

/// Where fonts are looked for when none is given.
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const SIZE: (u32, u32) = (960, 540);

/// Registers the charts' font (once per process). `explicit` wins over the usual
/// places.
pub fn register_font(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => FONT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no font for the charts' text: install Debian's fonts-dejavu-core \
                     (scripts/install-deps.sh does), or pass --font /path/to/font.ttf \
                     (or LOADTEST_FONT); looked in {}",
                    FONT_PATHS.join(", ")
                )
            })?,
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading font {}", path.display()))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a TrueType/OpenType font", path.display()))?;
    Ok(path)
}

/// Writes every chart of `report` into `dir` as PNG and SVG; returns the files.
pub fn write_charts(dir: &Path, report: &StrategyReport) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (chart, _) in CHARTS {
        let png = dir.join(format!("{}-{chart}.png", report.strategy));
        let svg = dir.join(format!("{}-{chart}.svg", report.strategy));
        {
            let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
            draw(chart, root, report).with_context(|| format!("drawing {}", png.display()))?;
        }
        {
            let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
            draw(chart, root, report).with_context(|| format!("drawing {}", svg.display()))?;
        }
        written.extend([png, svg]);
    }
    Ok(written)
}

fn draw<DB: DrawingBackend>(
    chart: &str,
    root: DrawingArea<DB, Shift>,
    report: &StrategyReport,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let result = match chart {
        "latency" => latency(&root, report),
        "throughput" => throughput(&root, report),
        "cost" => cost(&root, report),
        _ => stock(&root, report),
    };
    result.map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// One of a stock point's counters.
type Counter = fn(&crate::stats::StockPoint) -> i64;

/// What the time axes count from.
fn since(r: &StrategyReport) -> &'static str {
    if r.sale_id.is_some() {
        "the sale opened"
    } else {
        "the buyers started"
    }
}

/// The chart's legend, in one style for every chart.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Drawn<DB> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(position)
        .draw()
}

type Drawn<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn title(report: &StrategyReport, what: &str) -> String {
    format!(
        "{} — {what} ({}, {} buyers, {} units)",
        report.strategy, report.scenario, report.buyers, report.stock
    )
}

fn latency<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &StrategyReport) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let hist = &r.measurements.latency;
    // 40 bins up to just past p99.9 (the rest go into the last bin).
    const BINS: usize = 40;
    let top_us = if hist.is_empty() {
        1000
    } else {
        (hist.value_at_quantile(0.999) as f64 * 1.05).max(1000.0) as u64
    };
    let width_us = top_us.div_ceil(BINS as u64).max(1);
    let mut bins = [0u64; BINS];
    for v in hist.iter_recorded() {
        let i = (v.value_iterated_to() / width_us) as usize;
        bins[i.min(BINS - 1)] += v.count_at_value();
    }
    let top_ms = (width_us * BINS as u64) as f64 / 1000.0;
    let max_count = bins.iter().copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title(r, "latency"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..top_ms, 0u64..(max_count + max_count / 8 + 1))?;
    chart
        .configure_mesh()
        .x_desc(if r.sale_id.is_some() {
            "latency (ms), from the sale's opening"
        } else {
            "latency (ms)"
        })
        .y_desc("orders")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    let bin_ms = width_us as f64 / 1000.0;
    chart.draw_series(bins.iter().enumerate().map(|(i, &n)| {
        let x0 = i as f64 * bin_ms;
        Rectangle::new([(x0, 0), (x0 + bin_ms * 0.92, n)], BLUE.mix(0.7).filled())
    }))?;
    let marks = [
        ("p50", r.p50_ms, GREEN),
        ("p95", r.p95_ms, RGBColor(230, 140, 0)),
        ("p99", r.p99_ms, RED),
    ];
    for (label, at, color) in marks {
        let at = at.min(top_ms);
        chart
            .draw_series(LineSeries::new(
                [(at, 0), (at, max_count)],
                color.stroke_width(2),
            ))?
            .label(format!("{label} {:.1} ms", at))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn throughput<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &StrategyReport) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let m = &r.measurements;
    let bucket_s = m.bucket.as_secs_f64();
    let points: Vec<(f64, f64)> = m
        .throughput
        .iter()
        .enumerate()
        .map(|(i, &rps)| ((i as f64 + 0.5) * bucket_s, rps))
        .collect();
    let max_t = (m.throughput.len() as f64 * bucket_s).max(bucket_s);
    let max_rps = m.throughput.iter().copied().fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption(title(r, "orders answered per second"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rps * 1.1)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "seconds since {} ({} ms buckets)",
            since(r),
            m.bucket.as_millis()
        ))
        .y_desc("orders/s")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    chart.draw_series(
        AreaSeries::new(points.iter().copied(), 0.0, BLUE.mix(0.25))
            .border_style(BLUE.stroke_width(2)),
    )?;
    let mean = r.throughput_rps;
    chart
        .draw_series(LineSeries::new(
            [(0.0, mean), (max_t, mean)],
            RED.stroke_width(2),
        ))?
        .label(format!("mean {mean:.0} orders/s"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
    Ok(())
}

fn stock<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &StrategyReport) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let points = &r.measurements.stock;
    let (t0, t1) = points.iter().fold((0.0f64, 0.1f64), |(lo, hi), p| {
        (lo.min(p.t_s), hi.max(p.t_s))
    });
    let top = points
        .iter()
        .map(|p| p.available.max(p.reserved).max(p.sold))
        .chain([r.stock, r.audit.units_promised])
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title(r, "stock (inventory counters)"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(t0..t1, 0i64..(top + top / 8 + 1))?;
    chart
        .configure_mesh()
        .x_desc(format!("seconds since {} (negative: before)", since(r)))
        .y_desc("units")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    let series: [(&str, RGBColor, Counter); 3] = [
        ("available", BLUE, |p| p.available),
        ("reserved", RGBColor(230, 140, 0), |p| p.reserved),
        ("sold", GREEN, |p| p.sold),
    ];
    for (label, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_s, value(p))),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .draw_series(LineSeries::new(
            [(t0, r.stock), (t1, r.stock)],
            BLACK.stroke_width(1),
        ))?
        .label(format!("stocked {}", r.stock))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    if points.is_empty() {
        root.draw_text(
            "no stock samples",
            &("sans-serif", 20).into_text_style(root),
            (SIZE.0 as i32 / 2 - 80, SIZE.1 as i32 / 2),
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
    Ok(())
}

/// Bars of CPU milliseconds per order by process; the counts per order in the legend.
fn cost<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &StrategyReport) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let c = &r.cost;
    let bars: Vec<(&String, f64)> = c.cpu_ms_per_order.iter().map(|(p, &ms)| (p, ms)).collect();
    let top = bars.iter().map(|b| b.1).fold(0.1, f64::max);
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title(r, "CPU per order"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..top * 1.25)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            bars.get(x.floor() as usize)
                .map(|b| b.0.clone())
                .unwrap_or_default()
        })
        .x_desc("process")
        .y_desc("CPU ms per order")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let x = i as f64;
        Rectangle::new([(x + 0.15, 0.0), (x + 0.85, b.1)], BLUE.mix(0.7).filled())
    }))?;
    let per = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
    let counts = [
        format!("etcd writes {}", per(c.etcd_writes_per_order)),
        format!("etcd requests {}", per(c.etcd_requests_per_order)),
        format!("Postgres transactions {}", per(c.pg_xacts_per_order)),
    ];
    for line in counts {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(format!("{line} per order"))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], BLACK.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}
