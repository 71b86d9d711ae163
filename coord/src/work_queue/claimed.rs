//! [`Claimed`]: an item a consumer holds, until it acks it (done), acks it and claims
//! the next in the same transaction, or nacks it (give it back); dropped unsettled, its
//! claim is released in the background.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, TxnOp};
use tracing::{info_span, Instrument};

use super::now_ms;
use super::wire::{encode_item, Envelope};
use super::WorkQueue;
use crate::metrics;
use crate::ownership::owned::Placed;
use crate::txn::{Ops, Txn};
use crate::{Error, Result, Session};

/// An item this consumer holds. Finish it with [`Claimed::ack`] (done) or
/// [`Claimed::nack`] (give it back); if dropped unsettled, the claim is released in
/// the background and the item is delivered again.
pub struct Claimed {
    /// The queue the item was claimed from.
    pub(super) queue: WorkQueue,
    pub(super) item_key: String,
    pub(super) id_key: String,
    pub(super) claim: Placed,
    pub(super) envelope: Envelope,
    pub(super) payload: Vec<u8>,
    pub(super) priority: u32,
    pub(super) settled: bool,
}

impl Claimed {
    /// The item's id.
    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// The payload, as enqueued.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Which delivery this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.envelope.attempts
    }

    /// The item's priority (lower is served first).
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// When the item was enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.envelope.enqueued_ms)
    }

    /// The claim's create revision: a fencing token for side effects of this delivery.
    pub fn fencing_token(&self) -> i64 {
        self.claim.rev
    }

    /// A txn comparison true only while this claim is still ours (the claim key is
    /// still the incarnation we created). Guard etcd side effects of this delivery with it.
    pub fn is_owner(&self) -> Compare {
        self.claim.is_owner()
    }

    /// Done: deletes the item (and its claim and id) — only if the claim is still ours.
    /// [`Error::OwnershipLost`] means the claim expired and the item was (or will be)
    /// delivered to someone else; it is not deleted.
    pub async fn ack(mut self) -> Result<()> {
        let span =
            info_span!("coord.queue.ack", id = %self.envelope.id, attempt = self.envelope.attempts);
        let done = self.done_ops();
        self.settle(done, metrics::QUEUE_ACKS)
            .instrument(span)
            .await
    }

    /// Done, and the next deliverable item claimed for `session`'s consumer **in the
    /// same etcd transaction**: one write instead of two for a consumer that goes
    /// straight on to the next item. `Ok(Some(next))`: this item is acked and `next`
    /// claimed. `Ok(None)`: this item is acked and nothing is deliverable now (wait with
    /// [`WorkQueue::claim`]). [`Error::OwnershipLost`]: as for [`Claimed::ack`], nothing
    /// changed, neither the ack nor a claim.
    ///
    /// The guarantees are [`Claimed::ack`]'s and [`WorkQueue::try_claim`]'s: the item
    /// is deleted only while the claim is ours, and the next is claimed only if it is
    /// unchanged and unclaimed (if another consumer takes it first, the ack still
    /// commits and the claim moves on down the queue). Cancel-safe like both: dropped
    /// in flight, the new claim (if it landed) is undone and this one is released.
    pub async fn ack_and_claim_next(self, session: &Session) -> Result<Option<Claimed>> {
        let span = info_span!("coord.queue.ack_and_claim_next", id = %self.envelope.id, attempt = self.envelope.attempts);
        async {
            session.check_alive()?;
            let queue = self.queue.clone();
            let mut unacked = Some(self);
            // Boxed: a claim round is a large future, and this one sits inside the
            // caller's work loop.
            let (next, _) = Box::pin(queue.try_claim_round(session, &mut unacked)).await?;
            // Nothing was claimable, so the ack had nothing to ride along with.
            if let Some(this) = unacked {
                this.ack().await?;
            }
            Ok(next)
        }
        .instrument(span)
        .await
    }

    /// The transaction that acks this item and, in a transaction nested inside it,
    /// claims another (`claim`): the ack commits only while this claim is ours; the
    /// nested claim only under its own conditions.
    pub(super) fn ack_with(&self, claim: etcd_client::Txn) -> etcd_client::Txn {
        Txn::new()
            .when(self.is_owner())
            .then(self.done_ops().op(TxnOp::txn(claim)))
            .into_etcd()
    }

    /// Whether an [`Claimed::ack_with`] transaction committed its ack: records the
    /// outcome (this claim is settled either way).
    pub(super) fn acked_with(&mut self, committed: bool) -> Result<()> {
        self.settled = true;
        if committed {
            metrics::queue_event(metrics::QUEUE_ACKS, &self.queue.prefix);
            Ok(())
        } else {
            Err(Error::OwnershipLost(self.claim.key.clone()))
        }
    }

    /// What acking deletes: the item, its claim and its id.
    fn done_ops(&self) -> Ops {
        Ops::new()
            .delete(self.item_key.as_str())
            .delete(self.claim.key.as_str())
            .delete(self.id_key.as_str())
    }

    /// Gives the item back for redelivery now.
    pub async fn nack(self) -> Result<()> {
        self.nack_after(Duration::ZERO).await
    }

    /// Gives the item back, deliverable again after `delay` (a retry backoff).
    pub async fn nack_after(mut self, delay: Duration) -> Result<()> {
        let span = info_span!("coord.queue.nack", id = %self.envelope.id, attempt = self.envelope.attempts, ?delay);
        let mut envelope = self.envelope.clone();
        // Saturating: a huge delay (`Duration::MAX`) parks the item, never overflows.
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        envelope.not_before_ms = now_ms().saturating_add(delay_ms);
        let give_back = Ops::new()
            .put(
                self.item_key.as_str(),
                encode_item(&envelope, &self.payload),
            )
            .delete(self.claim.key.as_str());
        self.settle(give_back, metrics::QUEUE_NACKS)
            .instrument(span)
            .await
    }

    /// Commits `ops` only while the claim is still ours, and counts `event` if it did.
    /// Either way the claim is settled: [`Error::OwnershipLost`] when it was not ours.
    async fn settle(&mut self, ops: Ops, event: &'static str) -> Result<()> {
        let outcome = Txn::new()
            .when(self.is_owner())
            .then(ops)
            .commit(&self.queue.client)
            .await?;
        self.settled = true;
        if outcome.succeeded() {
            metrics::queue_event(event, &self.queue.prefix);
            Ok(())
        } else {
            Err(Error::OwnershipLost(self.claim.key.clone()))
        }
    }
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("item", &self.item_key)
            .field("envelope", &self.envelope)
            .field("claim_rev", &self.claim.rev)
            .finish()
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if !self.settled {
            self.claim.delete_in_background(&self.queue.client);
        }
    }
}
