//! The probe: one order every [`PROBE_EVERY`] through alternating order replicas, to
//! measure how long the shop stops answering around a fault (the **stall**).

use std::time::{Duration, Instant};

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;

use tonic::transport::Channel;

use super::stack::databases;
use crate::Stack;

pub(super) const PROBE_EVERY: Duration = Duration::from_millis(100);
pub(super) const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// Orders one unit every [`PROBE_EVERY`] on its own SKU, alternating between the
/// order replicas, to see how long the shop stops answering.
pub(super) struct Probe {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<(Instant, bool, Option<uuid::Uuid>)>>,
    auditor: loadtest::audit::Auditor,
    sku: String,
    key_prefix: String,
}

/// What the probe saw.
pub(super) struct ProbeResult {
    pub(super) stall: Option<Duration>,
    pub(super) audit: loadtest::audit::Audit,
    pub(super) violations: Vec<String>,
}

impl Probe {
    pub(super) async fn start(
        stack: &Stack,
        run_id: &str,
        strategy: Strategy,
    ) -> anyhow::Result<Probe> {
        let sku = format!("probe-{run_id}");
        let key_prefix = format!("probe-{run_id}-");
        stack
            .inventory("inventory-2")
            .await
            .set_stock(pb::SetStockRequest {
                sku: sku.clone(),
                available: 1_000_000,
                strategy: strategy.to_proto() as i32,
            })
            .await?;
        let clients: Vec<Channel> = vec![
            stack
                .channel("order-1", 50051)
                .await
                .map_err(anyhow::Error::msg)?,
            stack
                .channel("order-2", 50051)
                .await
                .map_err(anyhow::Error::msg)?,
        ];
        let auditor = loadtest::audit::Auditor::connect(&databases(stack).await?).await?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (task_sku, task_prefix) = (sku.clone(), key_prefix.clone());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0usize;
            while !*stopped.borrow() {
                let mut client =
                    pb::order_service_client::OrderServiceClient::new(clients[n % 2].clone());
                let mut request = tonic::Request::new(pb::CreateOrderRequest {
                    idempotency_key: format!("{task_prefix}{n}"),
                    customer_id: format!("probe-{}", n % 2),
                    items: vec![pb::LineItem {
                        sku: task_sku.clone(),
                        quantity: 1,
                    }],
                    strategy: strategy.to_proto() as i32,
                    ..Default::default()
                });
                request.set_timeout(PROBE_DEADLINE);
                let answered = tokio::time::timeout(PROBE_DEADLINE, client.create_order(request))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|r| r.into_inner());
                let accepted = answered
                    .as_ref()
                    .filter(|o| o.status == pb::OrderStatus::Reserved as i32)
                    .and_then(|o| uuid::Uuid::parse_str(&o.order_id).ok());
                seen.push((Instant::now(), answered.is_some(), accepted));
                n += 1;
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                    _ = stopped.changed() => {}
                }
            }
            seen
        });
        Ok(Probe {
            stop,
            task,
            auditor,
            sku,
            key_prefix,
        })
    }

    /// Stops probing, waits for the probe orders to settle and audits them; the stall
    /// is the longest gap between answered probes from just before the fault on.
    pub(super) async fn stop(self, fault_at: Instant) -> ProbeResult {
        let _ = self.stop.send(true);
        let seen = self.task.await.unwrap_or_default();
        let from = fault_at
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(fault_at);
        let answered: Vec<Instant> = seen
            .iter()
            .filter(|(at, ok, _)| *ok && *at >= from)
            .map(|(at, _, _)| *at)
            .collect();
        let stall = answered
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .or_else(|| answered.first().map(|first| *first - from));
        let accepted: Vec<uuid::Uuid> = seen.iter().filter_map(|(_, _, id)| *id).collect();
        let mut violations = Vec::new();
        let settled = self
            .auditor
            .wait_settled(&self.key_prefix, Duration::from_secs(120))
            .await
            .unwrap_or(false);
        if !settled {
            violations.push("probe orders did not all settle within 120 s".to_owned());
        }
        let audit = self
            .auditor
            .audit(&loadtest::audit::AuditScope {
                key_prefix: &self.key_prefix,
                skus: std::slice::from_ref(&self.sku),
                stock_per_sku: 1_000_000,
                accepted: &accepted,
                per_customer_limit: 0,
                sale_id: None,
            })
            .await
            .unwrap_or_else(|e| {
                violations.push(format!("probe audit failed: {e:#}"));
                loadtest::audit::Audit::default()
            });
        if audit.oversold > 0
            || audit.lost_orders > 0
            || audit.duplicate_payments > 0
            || audit.duplicate_charges > 0
            || audit.payment_mismatches > 0
            || audit.conservation_violations > 0
            || audit.status_mismatches > 0
        {
            violations.push(format!(
                "probe orders: oversold {}, lost {}, duplicate payments {}, double charges kept at the provider {}, {} payments disagreeing with their order, conservation broken on {} SKU(s), {} statuses disagreeing with their reservation",
                audit.oversold,
                audit.lost_orders,
                audit.duplicate_payments,
                audit.duplicate_charges,
                audit.payment_mismatches,
                audit.conservation_violations,
                audit.status_mismatches
            ));
        }
        ProbeResult {
            stall,
            audit,
            violations,
        }
    }
}
