//! The inventory's leader-elected job `reconcile-stock`: each pass checks that every
//! SKU's counters add up to its total and match its reservation rows, and reports drift (a log line per SKU and
//! the count in the proclaimed progress). It reads only, so two leaders overlapping for
//! a moment do no harm. Strategy `none` is expected to drift (that is its lesson: lost
//! updates); any other drift is a bug worth a page.
//!
//! Each pass also sweeps the `stm` strategy's holds in etcd (`crate::stm`): the hold
//! of a committed order is deleted (its units stay taken); the hold of a released
//! order, or of one Postgres has no reservation for, is given back — that is the
//! Reserve that took units in etcd and was cut off before it could record them or
//! give them back. Holds of PREPARING and RESERVED orders are left alone. Giving back
//! is one STM transaction that deletes the hold, so two leaders overlapping do it once.
//!
//! Each pass also sets the gauges `shop_oversold_units` and `shop_drifted_skus` (see
//! `shop_common::metrics`).

use std::sync::Arc;
use std::time::Duration;

use coord::LeaderContext;

use crate::repository::{Drift, InventoryDb, ReservationState};
use crate::reservation::Reserver;

/// Most holds one pass looks at.
const SWEEP_BATCH: i64 = 1000;

/// The job's name in `ListLeaders` and in its election.
pub const JOB: &str = "reconcile-stock";

/// One leadership term: passes every `interval` until cancelled.
pub async fn reconcile_stock(
    context: LeaderContext,
    db: InventoryDb,
    reserver: Arc<Reserver>,
    interval: Duration,
    replica: String,
) {
    let mut pass: u64 = 0;
    loop {
        pass += 1;
        let drifted = match db.drifted().await {
            Ok(drifted) => {
                for drift in &drifted {
                    tracing::warn!(
                        sku = %drift.sku,
                        units = drift.available + drift.reserved + drift.sold,
                        total = drift.total,
                        reserved = drift.reserved,
                        reserved_by_rows = drift.lines_reserved,
                        sold = drift.sold,
                        sold_by_rows = drift.lines_committed,
                        "stock counters drifted from the reservation rows"
                    );
                }
                let oversold: i64 = drifted.iter().map(Drift::oversold).sum();
                shop_common::metrics::record_stock_health(oversold, drifted.len());
                drifted.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconcile pass could not read stock");
                0
            }
        };
        let swept = match sweep_stm_holds(&db, &reserver).await {
            Ok(swept) => swept,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile pass could not sweep stm holds");
                0
            }
        };
        let progress = format!(
            r#"{{"replica":"{replica}","pass":{pass},"drifted_skus":{drifted},"stm_holds_settled":{swept},"token":{}}}"#,
            context.fencing_token()
        );
        if let Err(e) = context.proclaim(progress).await {
            tracing::debug!(error = %e, "could not proclaim progress (leadership ending?)");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Settles the stm holds whose order is no longer reserving; returns how many.
pub async fn sweep_stm_holds(db: &InventoryDb, reserver: &Reserver) -> anyhow::Result<usize> {
    let stm = reserver.stm();
    let holders = stm.holders(SWEEP_BATCH).await?;
    if holders.is_empty() {
        return Ok(0);
    }
    let states = db.reservation_states(&holders).await?;
    let mut settled = 0;
    for order in holders {
        let state = states.iter().find(|(o, _)| *o == order).map(|(_, s)| *s);
        match state {
            Some(ReservationState::Preparing | ReservationState::Reserved) => {}
            Some(ReservationState::Committed) => {
                stm.forget(order).await?;
                settled += 1;
            }
            Some(ReservationState::Released) | None => {
                if stm.give_back(order).await? {
                    tracing::info!(%order, "stm: gave back the units of a reservation that was cut off");
                }
                settled += 1;
            }
        }
    }
    Ok(settled)
}
