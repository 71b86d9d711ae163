//! What the buyers measured: one [`Sample`] per answered order, summarised into an
//! HDR histogram (latency percentiles) and time series (throughput, stock) for the
//! table and the charts.
//!
//! Time is measured from the **window start**: the moment the sale opened (or, without
//! a sale, the moment the buyers passed the start barrier). An order submitted before
//! the sale opened waited at the sale's barrier by design; its latency counts from the
//! opening, not from its submission.

use std::time::Duration;

use hdrhistogram::Histogram;

/// How an order ended, as the order service answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// RESERVED: stock taken, payment to follow.
    Accepted,
    /// REJECTED (out of stock, over the customer's limit) or CANCELLED at once.
    Rejected,
    /// The call failed (a gRPC error).
    Failed,
}

/// One answered CreateOrder, times relative to the process's clock origin.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the buyer sent it; with `--rate`, when it was due (the open loop's
    /// schedule), so time spent waiting for a free buyer counts as latency.
    pub submitted: Duration,
    pub answered: Duration,
    pub outcome: Outcome,
}

/// Stock of the run's SKUs (summed) at one moment, from GetStock.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StockPoint {
    /// Seconds since the window start (negative: before the sale opened).
    pub t_s: f64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// The summaries of one strategy's samples.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub accepted: usize,
    pub rejected: usize,
    pub failed: usize,
    /// From the window start to the last answer.
    pub window: Duration,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Answers per bucket of `bucket`, from the window start.
    pub throughput: Vec<f64>,
    pub bucket: Duration,
    pub stock: Vec<StockPoint>,
}

impl Measurements {
    /// `window_start`: the sale's opening (or the start), on the samples' clock.
    pub fn new(samples: &[Sample], window_start: Duration, stock: Vec<StockPoint>) -> Measurements {
        // 1 µs to 10 min at 3 significant digits; longer values are clamped.
        let mut latency =
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        let (mut accepted, mut rejected, mut failed) = (0, 0, 0);
        let mut last = window_start;
        for s in samples {
            match s.outcome {
                Outcome::Accepted => accepted += 1,
                Outcome::Rejected => rejected += 1,
                Outcome::Failed => failed += 1,
            }
            let from = s.submitted.max(window_start);
            let micros = s.answered.saturating_sub(from).as_micros() as u64;
            latency.saturating_record(micros.max(1));
            last = last.max(s.answered);
        }
        let window = last.saturating_sub(window_start);
        // About 40 buckets over the window, none shorter than 10 ms.
        let bucket = (window / 40).max(Duration::from_millis(10));
        let buckets = (window.as_secs_f64() / bucket.as_secs_f64()).ceil() as usize + 1;
        let mut counts = vec![0u64; buckets];
        for s in samples {
            let at = s.answered.saturating_sub(window_start);
            let i = (at.as_secs_f64() / bucket.as_secs_f64()) as usize;
            counts[i.min(buckets - 1)] += 1;
        }
        let throughput = counts
            .into_iter()
            .map(|n| n as f64 / bucket.as_secs_f64())
            .collect();
        Measurements {
            accepted,
            rejected,
            failed,
            window,
            latency,
            throughput,
            bucket,
            stock,
        }
    }

    /// Orders answered (accepted or rejected, not failed) per second of the window.
    pub fn throughput_rps(&self) -> f64 {
        per_second(self.accepted + self.rejected, self.window)
    }

    pub fn accepted_rps(&self) -> f64 {
        per_second(self.accepted, self.window)
    }

    /// Latency at `quantile` (0..=1) in milliseconds; 0 without samples.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

fn per_second(n: usize, window: Duration) -> f64 {
    if window.is_zero() {
        0.0
    } else {
        n as f64 / window.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_counts_from_the_opening_for_orders_that_waited_for_it() {
        let samples = [
            // Submitted before the opening at 100 ms, answered 10 ms after it.
            Sample {
                submitted: ms(0),
                answered: ms(110),
                outcome: Outcome::Accepted,
            },
            // Submitted after the opening.
            Sample {
                submitted: ms(150),
                answered: ms(180),
                outcome: Outcome::Rejected,
            },
        ];
        let m = Measurements::new(&samples, ms(100), Vec::new());
        assert_eq!((m.accepted, m.rejected, m.failed), (1, 1, 0));
        assert_eq!(m.window, ms(80));
        assert!(
            (m.latency_ms(0.0) - 10.0).abs() < 0.1,
            "{}",
            m.latency_ms(0.0)
        );
        assert!((m.max_ms() - 30.0).abs() < 0.1, "{}", m.max_ms());
        assert!((m.throughput_rps() - 25.0).abs() < 0.01);
        let answered: f64 = m
            .throughput
            .iter()
            .map(|r| r * m.bucket.as_secs_f64())
            .sum();
        assert!((answered - 2.0).abs() < 1e-9, "every answer is in a bucket");
    }

    #[test]
    fn failed_calls_are_not_throughput() {
        let samples = [Sample {
            submitted: ms(0),
            answered: ms(50),
            outcome: Outcome::Failed,
        }];
        let m = Measurements::new(&samples, ms(0), Vec::new());
        assert_eq!(m.failed, 1);
        assert_eq!(m.throughput_rps(), 0.0);
    }
}
