//! The guards of at-most-once charging, each shown to carry the weight (see
//! `scripts/knockouts.sh`). Each scenario runs twice: in a normal build, where the
//! auditor must see nothing wrong, and built with the test-only feature that removes
//! exactly that guard, where it must see the violation.
//!
//! | guard | feature | scenario | the auditor's count |
//! |---|---|---|---|
//! | the provider idempotency key | `knockout-provider-key` | a worker charges and dies before recording; the item comes back to a live worker | kept charges beyond the first per order (`duplicate_charges`) |
//! | the work queue's claim lease | `knockout-claim-lease` | a worker charges and dies holding the claim | orders whose status disagrees with the charges kept at the provider (PAID without, CANCELLED with one), plus double charges |

use std::time::Duration;

use payment_service::ledger::LedgerAudit;
use shop_proto::v1 as pb;
use shop_proto::v1::CustomerTier;

use crate::helpers::{sku, Shop};

/// A worker claims an order's payment request, begins the payment, gets the provider
/// to charge, and dies before recording the answer (its lease revoked, its claim not
/// released). Then the service starts; the order ends PAID or CANCELLED (its
/// reservation lasts 5 s). Returns the order's final status and the ledger's audit.
async fn a_worker_dies_after_charging() -> (pb::OrderStatus, LedgerAudit) {
    let mut shop = Shop::spawn_with(
        |s| {
            s.order.reservation_ttl = Duration::from_secs(5);
            s.order.payment_redrive = Duration::from_secs(1);
            s.order.common.jobs.interval = Duration::from_millis(200);
        },
        false,
    )
    .await;
    let tea = sku("tea");
    shop.set_stock(&tea, 1).await;
    let order = shop.buy("k", "erin", CustomerTier::Standard, &tea, 1).await;
    let worker = shop.crashing_worker().await;
    let (claim, request) = worker.claim().await;
    assert!(worker.begin_and_charge(&request).await.ok());
    worker.die(vec![claim]).await;

    shop.start_payment().await;
    let settled = shop.settled(&order.order_id).await;
    let ledger = shop.ledger(&[&order.order_id]).await;
    let status = pb::OrderStatus::try_from(settled.status).unwrap();
    shop.stop().await;
    (status, ledger)
}

/// The auditor's violations for one order: double charges, and a status that
/// disagrees with what the provider keeps.
fn violations(order: &str, status: pb::OrderStatus, ledger: &LedgerAudit) -> i64 {
    let status = status.as_str_name().trim_start_matches("ORDER_STATUS_");
    let disagrees = ledger.disagreement(order.parse().unwrap(), status);
    ledger.duplicate_charges() + i64::from(disagrees.is_some())
}

/// The one order of [`a_worker_dies_after_charging`], from its audit.
fn only_order(ledger: &LedgerAudit) -> String {
    let mut orders = ledger.kept.keys();
    let order = orders.next().expect("the order was charged").to_string();
    assert!(orders.next().is_none());
    order
}

#[cfg(not(any(feature = "knockout-provider-key", feature = "knockout-claim-lease")))]
#[tokio::test]
async fn a_worker_that_dies_after_charging_leaves_one_charge_kept_for_a_paid_order() {
    let (status, ledger) = a_worker_dies_after_charging().await;
    assert_eq!(status, pb::OrderStatus::Paid, "{ledger:?}");
    assert_eq!(violations(&only_order(&ledger), status, &ledger), 0);
    assert_eq!((ledger.charges, ledger.duplicate_charges()), (1, 0));
}

/// Without the key, the redelivery is a new charge at the provider: the order is PAID
/// and charged twice.
#[cfg(feature = "knockout-provider-key")]
#[tokio::test]
async fn without_the_provider_key_a_redelivered_payment_is_charged_twice() {
    let (status, ledger) = a_worker_dies_after_charging().await;
    let found = violations(&only_order(&ledger), status, &ledger);
    assert_eq!(found, ledger.duplicate_charges(), "{status:?} {ledger:?}");
    eprintln!("KNOCKOUT guard=provider-key scenario=\"a worker charges and dies before recording; the redelivery charges again\" violations={found}");
    assert!(
        found > 0,
        "the key knocked out, yet one charge: {status:?} {ledger:?}"
    );
}

/// Without the lease, the dead worker's claim outlives it: no live worker gets the
/// item, the order expires and is CANCELLED, and the charge the dead worker made is
/// kept by the provider — a customer charged for an order that was not sold.
#[cfg(feature = "knockout-claim-lease")]
#[tokio::test]
async fn without_the_claim_lease_a_dead_workers_charge_is_kept_for_a_cancelled_order() {
    let (status, ledger) = a_worker_dies_after_charging().await;
    let found = violations(&only_order(&ledger), status, &ledger);
    eprintln!("KNOCKOUT guard=claim-lease scenario=\"a worker charges and dies holding the claim; the order expires\" violations={found}");
    assert!(
        found > 0,
        "the lease knocked out, yet no violation: {status:?} {ledger:?}"
    );
}
