//! [`Claimed`]: an item a consumer holds, until it acks it (done) or nacks it (give it
//! back); dropped unsettled, its claim is released in the background.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare};
use tracing::{info_span, Instrument};

use super::now_ms;
use super::wire::{encode_item, Envelope};
use crate::metrics;
use crate::ownership::owned::Placed;
use crate::txn::{Ops, Txn};
use crate::{Error, Result};

/// An item this consumer holds. Finish it with [`Claimed::ack`] (done) or
/// [`Claimed::nack`] (give it back); if dropped unsettled, the claim is released in
/// the background and the item is delivered again.
pub struct Claimed {
    pub(super) client: Client,
    pub(super) item_key: String,
    pub(super) id_key: String,
    pub(super) claim: Placed,
    pub(super) envelope: Envelope,
    pub(super) payload: Vec<u8>,
    pub(super) priority: u32,
    pub(super) settled: bool,
    /// The queue's prefix, the `queue` label of its metrics.
    pub(super) queue: String,
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
        let done = Ops::new()
            .delete(self.item_key.as_str())
            .delete(self.claim.key.as_str())
            .delete(self.id_key.as_str());
        self.settle(done, metrics::QUEUE_ACKS)
            .instrument(span)
            .await
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
            .commit(&self.client)
            .await?;
        self.settled = true;
        if outcome.succeeded() {
            metrics::queue_event(event, &self.queue);
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
            self.claim.delete_in_background(&self.client);
        }
    }
}
