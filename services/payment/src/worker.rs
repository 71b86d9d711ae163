//! Payment workers: every replica runs several, all taking from one queue.
//!
//! One delivery: claim (the claim is held under this process's etcd lease) → decode →
//! what to charge: the item's amount if its seal verifies (the order service sealed it
//! from the order's lines with the internal token), else the order read from the order
//! service (an unsealed, edited or forged item never sets the amount) → `payments` row
//! begins (or is found final) → provider charge under the idempotency key
//! `order-<id>-charge` → row finished → `PaymentResult` to the order service →
//! confirmation recorded (`reported_at`) → ack, in the same etcd transaction as the
//! claim of the next item (one write where a separate ack and claim took two), unless
//! the worker is stopping. Any failure before the ack gives the item back
//! (`nack_after`), and a crash gives it back by itself when the lease expires; every
//! step is safe to repeat (see the crate docs). What a worker leaves unfinished for
//! good (an item dead-lettered, a refused capture) the `settle-payments` job finishes.

use std::sync::Arc;
use std::time::Duration;

use coord::Claimed;
use shop_common::auth::InternalToken;
use shop_common::coordination::SharedSession;
use shop_common::payments::{payment_queue, PaymentItem};
use shop_common::propagation::TracedChannel;
use shop_proto::v1 as pb;
use shop_proto::v1::order_service_client::OrderServiceClient;
use tokio::sync::watch;
use uuid::Uuid;

use crate::provider::{Charge, ChargeRequest, ProviderError, SimulatedProvider};
use crate::report::{report_payment, Reported};
use crate::repository::PaymentsDb;

/// What every worker shares.
pub struct WorkerContext {
    pub session: Arc<SharedSession>,
    pub db: PaymentsDb,
    pub provider: Arc<SimulatedProvider>,
    pub orders: OrderServiceClient<TracedChannel>,
    /// Verifies a queue item's sealed amount (see `PaymentItem::sealed_amount`).
    pub token: Option<InternalToken>,
}

/// Starts `count` workers; they stop taking new items once `stop` turns true and
/// finish the one they hold.
pub fn spawn_workers(
    count: usize,
    context: Arc<WorkerContext>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|n| tokio::spawn(run_worker(n, context.clone(), stop.clone())))
        .collect()
}

async fn run_worker(n: usize, context: Arc<WorkerContext>, mut stop: watch::Receiver<bool>) {
    let mut pause = Duration::from_millis(100);
    // The item claimed together with the last ack, if any.
    let mut next: Option<Claimed> = None;
    while !*stop.borrow() {
        let item = match next.take() {
            Some(item) => item,
            None => {
                let claimed = async {
                    let session = context.session.get().await?;
                    let queue =
                        payment_queue(context.session.client().await?, context.session.prefix())?;
                    queue.claim(&session).await
                };
                let claimed = tokio::select! {
                    claimed = claimed => claimed,
                    _ = stop.wait_for(|stop| *stop) => break,
                };
                match claimed {
                    Ok(item) => {
                        pause = Duration::from_millis(100);
                        item
                    }
                    Err(e) => {
                        tracing::warn!(worker = n, error = %e, "cannot take payment requests; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        // Boxed: a delivery is a large future (its ack claims the next item), and the
        // worker loop would otherwise hold it in its own stack frame.
        next = Box::pin(deliver(&context, item, &stop)).await;
    }
    // Stopping with an item claimed along with the last ack: give it back untouched.
    if let Some(item) = next {
        if let Err(e) = item.nack().await {
            tracing::warn!(worker = n, error = %e, "could not give back a claimed payment request");
        }
    }
    tracing::debug!(worker = n, "payment worker stopped");
}

/// Handles one delivery, ending in ack (done) or nack (try again later). Returns the
/// next item when the ack claimed one in the same transaction.
async fn deliver(
    context: &WorkerContext,
    item: Claimed,
    stop: &watch::Receiver<bool>,
) -> Option<Claimed> {
    let request = match PaymentItem::decode(item.payload()).and_then(|r| {
        Uuid::parse_str(&r.order_id)
            .map(|id| (id, r))
            .map_err(|e| format!("bad order id: {e}"))
    }) {
        Ok(parsed) => parsed,
        Err(reason) => {
            // Redelivering cannot fix it; after max attempts it is dead-lettered.
            tracing::error!(item = item.id(), %reason, "malformed payment request");
            let _ = item.nack_after(Duration::from_secs(30)).await;
            return None;
        }
    };
    let (order_id, request) = request;
    // The delivery continues the order's trace (the context the order service put in
    // the item), so charge, report and ack show up under the order's CreateOrder.
    let waited = item.enqueued_at().elapsed().unwrap_or_default();
    let span = tracing::info_span!("payment.deliver", order_id = %order_id, attempt = item.attempt(), queue_wait_ms = waited.as_millis() as u64);
    shop_common::propagation::set_parent_from_map(&span, &request.trace);
    let settle = async {
        let settled = match pay_and_report(context, order_id, &request).await {
            Ok(()) => ack(context, item, stop).await,
            Err(e) => {
                tracing::warn!(order_id = %order_id, error = %e, "payment delivery failed; will retry");
                item.nack_after(Duration::from_secs(1)).await.map(|()| None)
            }
        };
        settled.unwrap_or_else(|e| {
            // The claim expired meanwhile: the item is (or will be) delivered again, and
            // every step above is safe to repeat.
            tracing::warn!(order_id = %order_id, error = %e, "could not settle the delivery");
            None
        })
    };
    tracing::Instrument::instrument(settle, span).await
}

/// Acks a finished delivery and, unless the worker is stopping, claims the next item in
/// the same etcd transaction.
async fn ack(
    context: &WorkerContext,
    item: Claimed,
    stop: &watch::Receiver<bool>,
) -> coord::Result<Option<Claimed>> {
    if *stop.borrow() {
        return item.ack().await.map(|()| None);
    }
    match context.session.get().await {
        Ok(session) => item.ack_and_claim_next(&session).await,
        Err(_) => item.ack().await.map(|()| None),
    }
}

async fn pay_and_report(
    context: &WorkerContext,
    order_id: Uuid,
    request: &PaymentItem,
) -> anyhow::Result<()> {
    let amount_minor = match request.sealed_amount(context.token.as_ref()) {
        // Sealed by the order service from the order's own lines: no need to ask it.
        Some(amount) => amount,
        None => {
            if request.amount_seal.is_some() {
                tracing::warn!(order_id = %order_id, "the payment request's seal does not verify; reading the order");
            }
            let amount_minor = amount_of_order(&context.orders, order_id).await?;
            if amount_minor != request.amount_minor {
                tracing::warn!(order_id = %order_id, queued = request.amount_minor, order = amount_minor, "the payment request's amount is not the order's; charging the order's");
            }
            amount_minor
        }
    };
    let mut row = context.db.begin(order_id, request, amount_minor).await?;
    if !row.state.is_final() {
        let charge = charge_order(&context.provider, order_id, row.amount_minor).await?;
        row = context
            .db
            .finish(order_id, charge.ok(), &charge.charge_id, &charge.reason)
            .await?;
    }
    match report_payment(&context.orders, &row).await {
        // Recorded as confirmed; until then the settle-payments job reports it again.
        Ok(Reported::Accepted) => Ok(context.db.mark_reported(order_id).await?),
        // The order service refuses for good (e.g. the order was cancelled by expiry
        // and a capture arrived late: it says the charge must be refunded). Repeating
        // changes nothing; finish the delivery and leave the payment unconfirmed: the
        // settle-payments job looks at it again and refunds a capture it must.
        Ok(Reported::Refused(status)) => {
            tracing::error!(order_id = %order_id, state = ?row.state, status = %status, "order service refused the payment result");
            Ok(())
        }
        Err(status) => Err(anyhow::anyhow!("reporting to the order service: {status}")),
    }
}

/// The idempotency key of an order's `operation` at the provider (`charge`, `refund`):
/// one per order and operation, so whoever repeats it — a redelivery, the settle job, an
/// overlapping leader — gets the first result and moves no money.
pub fn idempotency_key(order_id: Uuid, operation: &str) -> Option<String> {
    // Test-only knockout (scripts/knockouts.sh): every request goes without a key, so
    // each delivery of an order is a new charge.
    if cfg!(feature = "knockout-provider-key") {
        return None;
    }
    Some(format!("order-{order_id}-{operation}"))
}

/// Charges (authorizes and captures in one request) `amount_minor` for `order_id` under
/// the order's idempotency key.
pub async fn charge_order(
    provider: &SimulatedProvider,
    order_id: Uuid,
    amount_minor: i64,
) -> Result<Charge, ProviderError> {
    provider
        .authorize(&ChargeRequest {
            order_id,
            amount_minor,
            capture: true,
            idempotency_key: idempotency_key(order_id, "charge"),
        })
        .await
}

/// What the order costs, from the order service's record of it (its lines): a queue
/// item's `amount_minor` is only a copy, and an edited or forged item must not change
/// what a customer is charged.
async fn amount_of_order(
    orders: &OrderServiceClient<TracedChannel>,
    order_id: Uuid,
) -> anyhow::Result<i64> {
    let order = orders
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: order_id.to_string(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("reading the order to charge: {status}"))?
        .into_inner();
    let units: i64 = order.items.iter().map(|l| i64::from(l.quantity)).sum();
    Ok(units * shop_common::payments::UNIT_PRICE_MINOR)
}
