//! The charts' numbers, pure: Prometheus text in, orders/s and mean lock wait out.
//!
//! Orders/s is the rate of `shop_reservations_total{outcome="reserved"}` (one per order
//! whose Reserve succeeded); lock wait is the mean of `coord_lock_wait_seconds` over
//! the interval (Δsum / Δcount, `primitive="mutex"`). Both are summed over every
//! target scraped (all replicas), so a replica's restart (its counters back at 0)
//! only drops that replica's share of one interval.

use std::collections::VecDeque;

use serde::Serialize;

/// The counters the charts need, from one scrape (or summed over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counters {
    pub reserved: f64,
    pub lock_wait_sum: f64,
    pub lock_wait_count: f64,
}

impl std::ops::Add for Counters {
    type Output = Counters;
    fn add(self, o: Counters) -> Counters {
        Counters {
            reserved: self.reserved + o.reserved,
            lock_wait_sum: self.lock_wait_sum + o.lock_wait_sum,
            lock_wait_count: self.lock_wait_count + o.lock_wait_count,
        }
    }
}

/// The value of a sample line whose name is `name` and whose labels include every
/// `label="value"` of `wanted`.
fn sample(line: &str, name: &str, wanted: &[&str]) -> Option<f64> {
    let rest = line.strip_prefix(name)?;
    let (labels, value) = match rest.strip_prefix('{') {
        Some(rest) => rest.split_once('}')?,
        None if rest.starts_with(' ') => ("", rest),
        None => return None,
    };
    if !wanted
        .iter()
        .all(|w| labels.split(',').any(|l| l.trim() == *w))
    {
        return None;
    }
    value.split_whitespace().next()?.parse().ok()
}

/// Reads the charts' counters from a Prometheus text exposition.
pub fn parse(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(v) = sample(line, "shop_reservations_total", &["outcome=\"reserved\""]) {
            c.reserved += v;
        } else if let Some(v) = sample(
            line,
            "coord_lock_wait_seconds_sum",
            &["primitive=\"mutex\""],
        ) {
            c.lock_wait_sum += v;
        } else if let Some(v) = sample(
            line,
            "coord_lock_wait_seconds_count",
            &["primitive=\"mutex\""],
        ) {
            c.lock_wait_count += v;
        }
    }
    c
}

/// One chart point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub at_ms: u64,
    pub orders_per_s: f64,
    /// Mean wait of the locks taken in the interval; `None` when none was taken.
    pub lock_wait_ms: Option<f64>,
}

/// The last points, one per scrape interval.
#[derive(Debug, Default)]
pub struct Series {
    last: Option<(u64, Counters)>,
    points: VecDeque<Point>,
}

impl Series {
    /// Ten minutes at one point every two seconds.
    pub const KEEP: usize = 300;

    /// Adds the counters read at `at_ms`; the first call only sets the baseline.
    pub fn record(&mut self, at_ms: u64, now: Counters) {
        if let Some((then_ms, then)) = self.last {
            let secs = (at_ms.saturating_sub(then_ms)) as f64 / 1000.0;
            // A counter that went down was reset (a replica restarted): count from 0.
            let delta = |now: f64, then: f64| if now >= then { now - then } else { now };
            let waits = delta(now.lock_wait_count, then.lock_wait_count);
            if secs > 0.0 {
                self.points.push_back(Point {
                    at_ms,
                    orders_per_s: delta(now.reserved, then.reserved) / secs,
                    lock_wait_ms: (waits > 0.0)
                        .then(|| delta(now.lock_wait_sum, then.lock_wait_sum) / waits * 1000.0),
                });
                if self.points.len() > Self::KEEP {
                    self.points.pop_front();
                }
            }
        }
        self.last = Some((at_ms, now));
    }

    pub fn points(&self) -> Vec<Point> {
        self.points.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE shop_reservations_total counter
shop_reservations_total{strategy="mutex",outcome="reserved"} 40
shop_reservations_total{strategy="pg",outcome="reserved"} 2
shop_reservations_total{strategy="mutex",outcome="out_of_stock"} 7
coord_lock_wait_seconds_sum{primitive="mutex"} 1.5
coord_lock_wait_seconds_count{primitive="mutex"} 30
coord_lock_wait_seconds_sum{primitive="semaphore"} 9
coord_lock_wait_seconds_bucket{primitive="mutex",le="0.5"} 30
"#;

    #[test]
    fn the_charts_counters_are_read_from_prometheus_text() {
        let c = parse(TEXT);
        assert_eq!(c.reserved, 42.0);
        assert_eq!(c.lock_wait_sum, 1.5);
        assert_eq!(c.lock_wait_count, 30.0);
        assert_eq!(
            parse("garbage\nshop_reservations_total 5\n"),
            Counters::default()
        );
    }

    #[test]
    fn rates_come_from_differences_and_survive_a_restart() {
        let mut s = Series::default();
        let at = |reserved, sum, count| Counters {
            reserved,
            lock_wait_sum: sum,
            lock_wait_count: count,
        };
        s.record(0, at(10.0, 1.0, 10.0));
        assert!(s.points().is_empty());
        s.record(2000, at(30.0, 1.5, 20.0));
        assert_eq!(s.points()[0].orders_per_s, 10.0);
        assert_eq!(s.points()[0].lock_wait_ms, Some(50.0));
        s.record(4000, at(30.0, 1.5, 20.0));
        assert_eq!(s.points()[1].orders_per_s, 0.0);
        assert_eq!(s.points()[1].lock_wait_ms, None);
        // Restarted: counters below the last reading count from zero.
        s.record(6000, at(4.0, 0.0, 0.0));
        assert_eq!(s.points()[2].orders_per_s, 2.0);
    }
}
