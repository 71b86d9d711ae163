//! The inventory's leader-elected job `reconcile-stock`: each pass checks that every
//! SKU's counters add up to its total and match its reservation rows, and reports drift (a log line per SKU and
//! the count in the proclaimed progress). It reads only, so two leaders overlapping for
//! a moment do no harm. Strategy `none` is expected to drift (that is its lesson: lost
//! updates); any other drift is a bug worth a page.

use std::time::Duration;

use coord::LeaderContext;

use crate::repository::InventoryDb;

/// The job's name in `ListLeaders` and in its election.
pub const JOB: &str = "reconcile-stock";

/// One leadership term: passes every `interval` until cancelled.
pub async fn reconcile_stock(
    context: LeaderContext,
    db: InventoryDb,
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
                drifted.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconcile pass could not read stock");
                0
            }
        };
        let progress = format!(
            r#"{{"replica":"{replica}","pass":{pass},"drifted_skus":{drifted},"token":{}}}"#,
            context.fencing_token()
        );
        if let Err(e) = context.proclaim(progress).await {
            tracing::debug!(error = %e, "could not proclaim progress (leadership ending?)");
        }
        tokio::time::sleep(interval).await;
    }
}
