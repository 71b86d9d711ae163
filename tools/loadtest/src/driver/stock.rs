//! The stock chart's samples: the run's SKUs' stock polled while the run lasts.

use std::time::Duration;

use shop_common::auth::Authorized;
use shop_proto::v1 as pb;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;

use super::shop::Clock;
use crate::config::{RunConfig, Scenario};
use crate::scenario::RunNames;
use crate::stats::StockPoint;

/// Polls the run's SKUs' stock (GetStock) while the run lasts, for the stock chart.
/// Only when the scenario's config asks for it (a report), so plain runs add no load.
pub(super) struct StockSampler {
    /// Stops it; the task returns the points, `t_s` on the process's clock.
    task: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Vec<StockPoint>>,
    )>,
}

impl StockSampler {
    pub(super) fn start(
        config: &RunConfig,
        names: &RunNames,
        mut inventory: InventoryServiceClient<Authorized>,
        clock: Clock,
    ) -> StockSampler {
        if !config.sample_stock {
            return StockSampler { task: None };
        }
        let skus = names.skus.clone();
        let every = match config.scenario {
            Scenario::CartMix => Duration::from_millis(100),
            Scenario::FlashSale | Scenario::CustomerLimit => Duration::from_millis(25),
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut points = Vec::new();
            loop {
                let mut sum = (0, 0, 0);
                for sku in &skus {
                    if let Ok(stock) = inventory
                        .get_stock(pb::GetStockRequest { sku: sku.clone() })
                        .await
                    {
                        let stock = stock.into_inner();
                        sum = (
                            sum.0 + stock.available,
                            sum.1 + stock.reserved,
                            sum.2 + stock.sold,
                        );
                    }
                }
                points.push(StockPoint {
                    t_s: clock.now().as_secs_f64(),
                    available: sum.0,
                    reserved: sum.1,
                    sold: sum.2,
                });
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            points
        });
        StockSampler {
            task: Some((stop, task)),
        }
    }

    pub(super) async fn stop(self, window_start: Duration) -> Vec<StockPoint> {
        let Some((stop, task)) = self.task else {
            return Vec::new();
        };
        let _ = stop.send(());
        let mut points = task.await.unwrap_or_default();
        for p in &mut points {
            p.t_s -= window_start.as_secs_f64();
        }
        points
    }
}
