//! What the buyers order, and the names a run gives its SKUs, sale and orders.
//!
//! Every name starts with `lt-<run>-<strategy>`, so each strategy of a run works on its
//! own SKUs and sale, and the auditor finds a run's orders in the order database by
//! their idempotency keys (`lt-<run>-<strategy>-p<process>-b<buyer>-<n>`).

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::Rng;
use shop_common::domain::Strategy;
use shop_proto::v1 as pb;

use crate::config::{RunConfig, Scenario};

/// The names one strategy's part of a run uses.
#[derive(Debug, Clone)]
pub struct RunNames {
    /// `lt-<run>-<strategy>`: the sale's id, and the start of every SKU and key.
    pub base: String,
    pub skus: Vec<String>,
    /// Start of the idempotency keys of every process's orders.
    pub key_prefix: String,
    /// Start of this process's keys.
    pub process_key_prefix: String,
    /// The etcd DoubleBarrier the processes start and finish at.
    pub barrier: String,
}

impl RunNames {
    pub fn new(config: &RunConfig, strategy: Strategy) -> RunNames {
        let base = format!("lt-{}-{}", config.cluster.run_id, strategy.as_str());
        let skus = (0..config.skus).map(|k| format!("{base}-sku{k}")).collect();
        RunNames {
            skus,
            // `-p`: a strategy's name may start another's (`mutex`, `mutex-unfenced`).
            key_prefix: format!("{base}-p"),
            process_key_prefix: format!("{base}-p{}-", config.cluster.index),
            barrier: format!(
                "{}/loadtest/{}/{}",
                config.cluster.etcd_prefix,
                config.cluster.run_id,
                strategy.as_str()
            ),
            base,
        }
    }

    pub fn sale_id(&self) -> &str {
        &self.base
    }
}

/// Picks each buyer's carts.
pub struct CartPicker {
    skus: Vec<String>,
    /// Zipf weights 1/k^s over the SKUs (most popular first).
    popularity: WeightedIndex<f64>,
    max_lines: usize,
    max_quantity: i32,
}

impl CartPicker {
    pub fn new(config: &RunConfig, names: &RunNames) -> CartPicker {
        let weights = (1..=names.skus.len()).map(|k| 1.0 / (k as f64).powf(config.zipf_exponent));
        CartPicker {
            skus: names.skus.clone(),
            popularity: WeightedIndex::new(weights).expect("at least one SKU, finite weights"),
            max_lines: match config.scenario {
                Scenario::CartMix => config.max_lines.min(names.skus.len()),
                Scenario::FlashSale | Scenario::CustomerLimit => 1,
            },
            max_quantity: config.max_quantity,
        }
    }

    /// 1..=max_lines distinct SKUs, popular ones more often, each 1..=max_quantity units.
    pub fn cart(&self, rng: &mut impl Rng) -> Vec<pb::LineItem> {
        let lines = rng.random_range(1..=self.max_lines);
        let mut picked: Vec<usize> = Vec::with_capacity(lines);
        while picked.len() < lines {
            let k = self.popularity.sample(rng);
            if !picked.contains(&k) {
                picked.push(k);
            }
        }
        picked.sort_unstable();
        picked
            .into_iter()
            .map(|k| pb::LineItem {
                sku: self.skus[k].clone(),
                quantity: rng.random_range(1..=self.max_quantity),
            })
            .collect()
    }
}

/// Who buyer `buyer` of this process is: a customer id and tier. In customer-limit
/// buyers share `customers` customers round robin, so the sale's limit binds; in the
/// other scenarios every buyer is its own customer.
pub fn customer_of(config: &RunConfig, buyer: usize) -> (String, pb::CustomerTier) {
    let global = config.cluster.index * config.buyers + buyer;
    let customer = match config.scenario {
        Scenario::CustomerLimit => global % config.customers.max(1),
        Scenario::FlashSale | Scenario::CartMix => global,
    };
    // One in ten platinum, two in ten gold (the payment queue's priorities).
    let tier = match customer % 10 {
        0 => pb::CustomerTier::Platinum,
        1 | 2 => pb::CustomerTier::Gold,
        _ => pb::CustomerTier::Standard,
    };
    (format!("c{customer}"), tier)
}
