//! The buyers of one process: each places its orders (CreateOrder, or Reserve itself
//! with `direct_reserve`), timing every call, until the run's amount is reached.
//!
//! Closed loop (default): a buyer orders again as soon as it is answered. Open loop
//! (`rate`): order `n` of the process is due `n / rate` seconds after the start; a free
//! buyer takes the next order, waits for its due time if it is early, and the order's
//! latency counts from the due time — an order due while every buyer was stuck waits,
//! and that wait is measured (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use shop_common::domain::Strategy;
use shop_proto::v1 as pb;
use uuid::Uuid;

use super::shop::{Clock, Shop};
use crate::config::{Amount, RunConfig};
use crate::scenario::{customer_of, CartPicker, RunNames};
use crate::stats::{Outcome, Sample};

/// What the buyers of one process recorded.
pub(super) struct BuyerResults {
    pub(super) samples: Vec<Sample>,
    /// Orders answered RESERVED.
    pub(super) accepted: Vec<Uuid>,
    /// Failed calls: "CODE: message" → how often.
    pub(super) errors: BTreeMap<String, usize>,
}

/// The buyers of one process, running.
pub(super) struct Buyers {
    tasks: Vec<tokio::task::JoinHandle<(Vec<Sample>, Vec<Uuid>)>>,
    errors: Arc<StdMutex<BTreeMap<String, usize>>>,
}

impl Buyers {
    pub(super) fn spawn(
        config: &RunConfig,
        shop: &Shop,
        strategy: Strategy,
        names: &RunNames,
        clock: Clock,
        bar: ProgressBar,
    ) -> Buyers {
        let picker = Arc::new(CartPicker::new(config, names));
        let tickets = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(StdMutex::new(BTreeMap::new()));
        let sale_id = config.use_sale.then(|| names.sale_id().to_owned());
        let tasks = (0..config.buyers)
            .map(|buyer| {
                let (customer_id, tier) = customer_of(config, buyer);
                let template = pb::CreateOrderRequest {
                    idempotency_key: String::new(),
                    customer_id,
                    customer_tier: tier as i32,
                    items: Vec::new(),
                    strategy: strategy.to_proto() as i32,
                    sale_id: sale_id.clone(),
                };
                let client = shop.orders[buyer % shop.orders.len()].clone();
                let backoff = shop_common::retry::Backoff::default();
                let mut inventory = config.direct_reserve.then(|| shop.inventory.clone());
                let key_prefix = format!("{}b{buyer}-", names.process_key_prefix);
                let global = (config.cluster.index * config.buyers + buyer) as u64;
                let mut rng =
                    StdRng::seed_from_u64(config.seed ^ global.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let (picker, tickets, errors, bar) =
                    (picker.clone(), tickets.clone(), errors.clone(), bar.clone());
                let (amount, rate, buyers) = (config.amount, config.rate, config.buyers);
                tokio::spawn(async move {
                    let (mut samples, mut accepted) = (Vec::new(), Vec::new());
                    for n in 0.. {
                        let (go_on, due) = match rate {
                            None => (
                                match amount {
                                    Amount::OnePerBuyer => n == 0,
                                    Amount::Orders(total) => {
                                        tickets.fetch_add(1, Ordering::Relaxed) < total
                                    }
                                    Amount::Duration(d) => n == 0 || clock.now() < d,
                                },
                                None,
                            ),
                            Some(rate) => {
                                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                                let due = Duration::from_secs_f64(ticket as f64 / rate);
                                let go_on = match amount {
                                    Amount::OnePerBuyer => ticket < buyers,
                                    Amount::Orders(total) => ticket < total,
                                    Amount::Duration(d) => due < d,
                                };
                                (go_on, Some(due))
                            }
                        };
                        if !go_on {
                            break;
                        }
                        if let Some(due) = due {
                            tokio::time::sleep_until((clock.origin + due).into()).await;
                        }
                        let mut request = template.clone();
                        request.idempotency_key = format!("{key_prefix}{n}");
                        request.items = picker.cart(&mut rng);
                        let submitted = due.unwrap_or_else(|| clock.now());
                        let reply = match &mut inventory {
                            // UNAVAILABLE (a replica restarting) is retried with
                            // back-off under the same key, not in a tight loop.
                            None => backoff
                                .retry(|| {
                                    let (mut client, request) = (client.clone(), request.clone());
                                    async move { client.create_order(request).await }
                                })
                                .await
                                .map(|order| {
                                    let order = order.into_inner();
                                    let reserved = matches!(
                                        pb::OrderStatus::try_from(order.status),
                                        Ok(pb::OrderStatus::Reserved | pb::OrderStatus::Paid)
                                    );
                                    (reserved, order.order_id)
                                }),
                            Some(inventory) => {
                                let order_id = Uuid::new_v4().to_string();
                                inventory
                                    .reserve(reserve_request(request, order_id.clone()))
                                    .await
                                    .map(|r| {
                                        let outcome = r.into_inner().outcome;
                                        (outcome == pb::ReserveOutcome::Reserved as i32, order_id)
                                    })
                            }
                        };
                        let answered = clock.now();
                        let outcome = match reply {
                            Ok((true, order_id)) => {
                                if let Ok(id) = Uuid::parse_str(&order_id) {
                                    accepted.push(id);
                                }
                                Outcome::Accepted
                            }
                            Ok((false, _)) => Outcome::Rejected,
                            Err(status) => {
                                let key = format!("{:?}: {}", status.code(), status.message());
                                *errors.lock().unwrap().entry(key).or_insert(0) += 1;
                                Outcome::Failed
                            }
                        };
                        samples.push(Sample {
                            submitted,
                            answered,
                            outcome,
                        });
                        bar.inc(1);
                    }
                    (samples, accepted)
                })
            })
            .collect();
        Buyers { tasks, errors }
    }

    pub(super) async fn finish(self) -> BuyerResults {
        let mut results = BuyerResults {
            samples: Vec::new(),
            accepted: Vec::new(),
            errors: BTreeMap::new(),
        };
        for task in self.tasks {
            match task.await {
                Ok((samples, accepted)) => {
                    results.samples.extend(samples);
                    results.accepted.extend(accepted);
                }
                Err(e) => {
                    *results
                        .errors
                        .entry(format!("buyer task ended abnormally: {e}"))
                        .or_insert(0) += 1
                }
            }
        }
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        for (message, n) in errors {
            *results.errors.entry(message).or_insert(0) += n;
        }
        results
    }
}

/// The Reserve the order service would send for `order`.
pub(super) fn reserve_request(
    order: pb::CreateOrderRequest,
    order_id: String,
) -> pb::ReserveRequest {
    pb::ReserveRequest {
        order_id,
        items: order.items,
        strategy: order.strategy,
        customer_id: order.customer_id,
        sale_id: order.sale_id,
    }
}
