//! The simulated provider's own ledger and its idempotency keys, asked directly (as a
//! payment worker would), against real Postgres and etcd; and the amount charged being
//! the order's, whatever the queue item says.

use payment_service::provider::{ChargeRequest, ChargeStatus, ProviderError};
use shop_common::auth::InternalToken;
use shop_common::payments::PaymentItem;
use shop_proto::v1 as pb;
use shop_proto::v1::CustomerTier;
use uuid::Uuid;

use crate::helpers::{sku, Shop};

fn request(order_id: Uuid, amount_minor: i64, capture: bool, key: Option<&str>) -> ChargeRequest {
    ChargeRequest {
        order_id,
        amount_minor,
        capture,
        idempotency_key: key.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_repeated_key_returns_the_first_charge_and_no_key_is_a_new_charge() {
    let shop = Shop::spawn(|_| {}, false).await;
    let worker = shop.crashing_worker().await;
    let provider = &worker.provider;
    let order = Uuid::new_v4();
    let key = format!("k-{order}");

    let first = provider
        .authorize(&request(order, 2_000, true, Some(&key)))
        .await
        .unwrap();
    assert_eq!(first.status, ChargeStatus::Captured);
    let again = provider
        .authorize(&request(order, 2_000, true, Some(&key)))
        .await
        .unwrap();
    assert_eq!(again, first, "a repeated key answers with the first charge");
    assert_eq!(provider.charges(), 1);
    // The same key for another request is refused, not answered with the first result.
    let reused = provider
        .authorize(&request(order, 9_999, true, Some(&key)))
        .await
        .unwrap_err();
    assert!(
        matches!(reused, ProviderError::KeyReused { .. }),
        "{reused}"
    );
    // Without a key the provider cannot know it is a repeat: a second charge.
    let unkeyed = provider
        .authorize(&request(order, 2_000, true, None))
        .await
        .unwrap();
    assert_ne!(unkeyed.charge_id, first.charge_id);
    let ledger = shop.ledger(&[&order.to_string()]).await;
    assert_eq!(
        (
            ledger.charges,
            ledger.kept_by(order),
            ledger.duplicate_charges()
        ),
        (2, 2, 1),
        "the ledger holds the double charge: {ledger:?}"
    );
    // Refunding the extra one settles it: kept once again.
    provider.refund(&unkeyed.charge_id, None).await.unwrap();
    let ledger = shop.ledger(&[&order.to_string()]).await;
    assert_eq!((ledger.refunds, ledger.duplicate_charges()), (1, 0));
    worker.die(Vec::new()).await;
    shop.stop().await;
}

#[tokio::test]
async fn twenty_requests_racing_with_one_key_make_one_charge() {
    let shop = Shop::spawn(|s| s.provider.concurrency = 8, false).await;
    let worker = shop.crashing_worker().await;
    let order = Uuid::new_v4();
    let ask = request(order, 1_000, true, Some("race-key"));
    let racers = (0..20).map(|_| worker.provider.authorize(&ask));
    let answers = futures::future::join_all(racers).await;
    let ids: std::collections::BTreeSet<String> =
        answers.into_iter().map(|a| a.unwrap().charge_id).collect();
    assert_eq!(ids.len(), 1, "one charge for all: {ids:?}");
    assert_eq!(shop.provider_charges(&order.to_string()).await, 1);
    worker.die(Vec::new()).await;
    shop.stop().await;
}

#[tokio::test]
async fn authorize_then_capture_then_refund_each_once_per_key() {
    let shop = Shop::spawn(|_| {}, false).await;
    let worker = shop.crashing_worker().await;
    let provider = &worker.provider;
    let order = Uuid::new_v4();
    let held = provider
        .authorize(&request(order, 3_000, false, Some("a")))
        .await
        .unwrap();
    assert_eq!(held.status, ChargeStatus::Authorized);
    // Nothing captured yet: nothing to refund.
    let early = provider.refund(&held.charge_id, Some("r0")).await;
    assert!(
        matches!(early, Err(ProviderError::Refused { .. })),
        "{early:?}"
    );
    let captured = provider.capture(&held.charge_id, Some("c")).await.unwrap();
    assert_eq!(captured.status, ChargeStatus::Captured);
    let refund = provider.refund(&held.charge_id, Some("r")).await.unwrap();
    assert_eq!(refund.amount_minor, 3_000);
    let repeat = provider.refund(&held.charge_id, Some("r")).await.unwrap();
    assert_eq!(
        repeat, refund,
        "a repeated key answers with the first refund"
    );
    // A new refund request (another key) finds nothing left to give back.
    let more = provider.refund(&held.charge_id, Some("r2")).await;
    assert!(
        matches!(more, Err(ProviderError::NothingLeftToRefund(_))),
        "{more:?}"
    );
    assert_eq!(provider.refunds(), 1);
    let missing = provider.capture("ch_nonexistent", None).await;
    assert!(
        matches!(missing, Err(ProviderError::NoSuchCharge(_))),
        "{missing:?}"
    );
    worker.die(Vec::new()).await;
    shop.stop().await;
}

/// What to charge is the order's (its lines, read from the order service), not the
/// queue item's copy: an item edited to say 1 minor unit still charges the order's 2 000.
/// A shop whose order and payment services share an internal token (`Some`), so the
/// order service seals each item's amount and the workers verify it; or none (`None`).
async fn shop_sealing_with(token: Option<InternalToken>) -> Shop {
    Shop::spawn_with(
        |s| {
            s.order.common.internal_token = token.clone();
            s.payment.common.internal_token = token;
        },
        false,
    )
    .await
}

/// Takes the order service's queue item for `order` off the queue and puts `edit`ed
/// back in its place (as someone with access to etcd could), then lets the payment
/// service run: what the provider charged for the order.
async fn charged_for_edited_item(
    shop: &mut Shop,
    order: &pb::Order,
    edit: impl FnOnce(PaymentItem) -> PaymentItem,
) -> Vec<i64> {
    let worker = shop.crashing_worker().await;
    let (claim, item) = worker.claim().await;
    claim.ack().await.unwrap();
    let edited = edit(item);
    let priority = shop_common::payments::tier_priority(&edited.tier);
    worker
        .queue
        .enqueue_with_id(&edited.order_id, &edited.encode(), priority)
        .await
        .unwrap();
    worker.die(Vec::new()).await;

    shop.start_payment().await;
    let settled = shop.settled(&order.order_id).await;
    assert_eq!(settled.status, pb::OrderStatus::Paid as i32, "{settled:?}");
    sqlx::query_scalar("SELECT amount_minor FROM provider_charges WHERE order_id = $1::uuid")
        .bind(&order.order_id)
        .fetch_all(&shop.payment_pool)
        .await
        .unwrap()
}

/// An item whose amount was changed is charged what the order says, whether the shop
/// seals amounts (the edit breaks the seal) or not (nothing vouches for the amount).
async fn a_forged_amount_is_not_charged(token: Option<InternalToken>) {
    let mut shop = shop_sealing_with(token.clone()).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 5).await;
    let order = shop.buy("k", "frank", CustomerTier::Gold, &tea, 2).await;
    let owed = 2 * shop_common::payments::UNIT_PRICE_MINOR;
    let charged = charged_for_edited_item(&mut shop, &order, |mut item| {
        assert_eq!(item.amount_minor, owed);
        assert_eq!(item.amount_seal.is_some(), token.is_some(), "{item:?}");
        item.amount_minor = 1;
        item
    })
    .await;
    assert_eq!(
        charged,
        vec![owed],
        "the provider charged the order's amount"
    );
    assert_eq!(shop.payment_row(&order.order_id).await.amount_minor, owed);
    shop.stop().await;
}

#[tokio::test]
async fn a_forged_queue_item_cannot_change_the_amount_charged() {
    a_forged_amount_is_not_charged(None).await;
}

#[tokio::test]
async fn a_forged_queue_item_cannot_change_a_sealed_amount() {
    a_forged_amount_is_not_charged(Some(InternalToken::random())).await;
}

/// With a seal that verifies, the worker charges the item's amount without reading the
/// order back (one request to the order service and its database fewer per payment).
/// Shown by an item resealed with the shop's own token for another amount: that amount
/// is charged, which a worker that read the order would not do.
#[tokio::test]
async fn a_sealed_amount_is_charged_without_reading_the_order() {
    let token = InternalToken::random();
    let mut shop = shop_sealing_with(Some(token.clone())).await;
    let tea = sku("tea");
    shop.set_stock(&tea, 5).await;
    let order = shop.buy("k", "grace", CustomerTier::Gold, &tea, 2).await;
    let owed = 2 * shop_common::payments::UNIT_PRICE_MINOR;
    let charged = charged_for_edited_item(&mut shop, &order, |mut item| {
        assert_eq!(
            item.sealed_amount(Some(&token)),
            Some(owed),
            "sealed by the order service"
        );
        item.amount_minor = 1_500;
        item.seal(Some(&token))
    })
    .await;
    assert_eq!(
        charged,
        vec![1_500],
        "charged as sealed, not read from the order"
    );
    shop.stop().await;
}
