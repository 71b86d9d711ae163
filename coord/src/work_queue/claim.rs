//! Claiming: find the first deliverable item at the head of the queue, claim it under
//! the consumer's lease (cancel-safely), dead-letter what used up its attempts or is
//! not an item at all, and wait on a watch when nothing is deliverable.

use std::collections::HashSet;
use std::time::Duration;

use etcd_client::{
    Client, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tracing::{debug, field, info_span, Instrument, Span};

use super::wire::{decode_item, encode_item, parse_slot, Envelope};
use super::{now_ms, Claimed, WorkQueue};
use crate::metrics;
use crate::ownership::owned::{PendingPut, Placed};
use crate::plumbing::key::{show, txn_get, txn_rev};
use crate::plumbing::retry::{retrying, Backoff};
use crate::plumbing::watch::watch_from_now;
use crate::txn::{self, create_rev_is, key_missing, mod_rev_is, Ops};
use crate::{Error, Result, Session};

/// Items read per round when looking for a claimable one.
const BATCH: i64 = 64;

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The claim key's put options: under the consumer's lease, so the claim ends with
/// the consumer (a crashed one's items come back). The test-only knockout
/// `knockout-claim-lease` (scripts/knockouts.sh) puts it without a lease: a claim
/// then outlives its consumer.
fn claim_lease(session: &Session) -> Option<PutOptions> {
    if cfg!(feature = "knockout-claim-lease") {
        return None;
    }
    Some(PutOptions::new().with_lease(session.lease()))
}

/// Deliverable items one claim transaction tries, in queue order (see
/// [`WorkQueue::claim_first_free`]).
const CANDIDATES: usize = 8;

/// An item a claim may take: what it was when the page was read, decoded.
struct Candidate {
    item_key: String,
    slot: String,
    /// The item's mod revision when read: the claim holds only if it is unchanged.
    rev: i64,
    envelope: Envelope,
    payload: Vec<u8>,
    priority: u32,
}

/// The first key after `key` (for paging through a range).
fn kv_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

impl WorkQueue {
    /// Claims the next deliverable item for `session`'s consumer, waiting until there
    /// is one. Cancel-safe: dropping the future leaves no claim behind.
    pub async fn claim(&self, session: &Session) -> Result<Claimed> {
        let span = info_span!("coord.queue.claim", queue = %self.prefix, id = field::Empty, attempt = field::Empty);
        async {
            session.check_alive()?;
            // Look first: a queue with a deliverable item answers without opening a
            // watch (one etcd request fewer per claim while the queue is busy). Only a
            // queue with nothing deliverable is watched, and looked at again once the
            // watch is open, so nothing committed between the two looks is missed.
            if let (Some(claimed), _) = self.try_claim_round(session, &mut None).await? {
                Span::current().record("id", claimed.id());
                Span::current().record("attempt", claimed.attempt());
                return Ok(claimed);
            }
            let mut client = self.client.clone();
            let lost = session.done();
            tokio::pin!(lost);
            let mut backoff = Backoff::default();
            // Watch, then look: whatever changes after the look is in the stream.
            let mut stream = watch_from_now(
                &mut client,
                self.prefix.as_bytes(),
                WatchOptions::new().with_prefix(),
            )
            .await?;
            loop {
                let (claimed, wake_at) = self.try_claim_round(session, &mut None).await?;
                if let Some(claimed) = claimed {
                    Span::current().record("id", claimed.id());
                    Span::current().record("attempt", claimed.attempt());
                    return Ok(claimed);
                }
                let delay = wake_at
                    .map(|ms| Duration::from_millis(ms.saturating_sub(now_ms())))
                    .unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    message = stream.message() => match message {
                        // Something under the queue changed (an item, a claim gone): look again.
                        Ok(Some(resp)) if !resp.canceled() => {}
                        // A broken, closed or canceled watch says nothing about the queue:
                        // re-open it and look again.
                        _ => {
                            backoff.wait(&"queue watch broke; re-opening").await;
                            stream = watch_from_now(
                                &mut client,
                                self.prefix.as_bytes(),
                                WatchOptions::new().with_prefix(),
                            )
                            .await?;
                        }
                    },
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut lost => return Err(Error::SessionExpired(session.lease())),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Claims the next deliverable item if there is one, without waiting.
    pub async fn try_claim(&self, session: &Session) -> Result<Option<Claimed>> {
        session.check_alive()?;
        Ok(self.try_claim_round(session, &mut None).await?.0)
    }

    /// One pass over the head of the queue. Returns the claim, or when the earliest
    /// delayed item becomes deliverable (ms since epoch), if any.
    ///
    /// With an item in `ack`, the first claim attempt also acks it, in one transaction
    /// ([`Claimed::ack_and_claim_next`]); `ack` is emptied once that transaction
    /// committed the ack (whether or not its claim won), and the round goes on with
    /// plain claims. If the ack's claim was no longer ours, nothing committed and the
    /// round ends with [`Error::OwnershipLost`]. Left in `ack`: no claim was attempted.
    pub(super) async fn try_claim_round(
        &self,
        session: &Session,
        ack: &mut Option<Claimed>,
    ) -> Result<(Option<Claimed>, Option<u64>)> {
        let client = self.client.clone();
        let items_end = prefix_end(&self.items());
        let mut from = self.items().into_bytes();
        let mut wake_at: Option<u64> = None;
        loop {
            // Items and claims at one revision.
            let page = Txn::new().and_then([
                TxnOp::get(
                    from.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(items_end.clone())
                            .with_sort(SortTarget::Key, SortOrder::Ascend)
                            .with_limit(BATCH),
                    ),
                ),
                TxnOp::get(
                    self.claims(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                ),
            ]);
            let resp = retrying(|| {
                let (mut c, t) = (client.clone(), page.clone());
                async move { c.txn(t).await }
            })
            .await?;
            let items = txn_get(&resp, 0)
                .map(|g| g.kvs().to_vec())
                .unwrap_or_default();
            let claimed_slots: HashSet<String> = txn_get(&resp, 1)
                .map(|g| {
                    g.kvs()
                        .iter()
                        .map(|kv| show(kv.key())[self.claims().len()..].to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let now = now_ms();
            // The page's unclaimed, deliverable items, in order, tried by up to
            // CANDIDATES per transaction; on the way, what used up its attempts is
            // dead-lettered and what is not an item is set aside.
            let mut candidates = Vec::new();
            for kv in &items {
                let item_key = show(kv.key());
                let slot = self.slot_of(&item_key).to_owned();
                if claimed_slots.contains(&slot) {
                    continue;
                }
                let decoded = parse_slot(&slot)
                    .and_then(|(priority, _)| Ok((decode_item(&item_key, kv.value())?, priority)));
                let ((envelope, payload), priority) = match decoded {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        self.set_aside_malformed(&client, &item_key, &slot, kv, &e)
                            .await?;
                        continue;
                    }
                };
                if envelope.not_before_ms > now {
                    wake_at = Some(
                        wake_at.map_or(envelope.not_before_ms, |w| w.min(envelope.not_before_ms)),
                    );
                    continue;
                }
                if envelope.attempts >= self.max_attempts {
                    self.dead_letter(&client, &item_key, &slot, kv, Some(&envelope))
                        .await?;
                    continue;
                }
                candidates.push(Candidate {
                    item_key,
                    slot,
                    rev: kv.mod_revision(),
                    envelope,
                    payload,
                    priority,
                });
                if candidates.len() == CANDIDATES {
                    let tried = std::mem::take(&mut candidates);
                    if let Some(claimed) = self.claim_tried(session, tried, ack).await? {
                        return Ok((Some(claimed), wake_at));
                    }
                }
            }
            if !candidates.is_empty() {
                if let Some(claimed) = self.claim_tried(session, candidates, ack).await? {
                    return Ok((Some(claimed), wake_at));
                }
            }
            if (items.len() as i64) < BATCH {
                return Ok((None, wake_at));
            }
            // Every item of this page is taken or delayed: look further down the queue.
            from = kv_after(items.last().expect("a full page").key());
        }
    }

    /// [`Self::claim_first_free`], settling `ack` by the outcome: once a transaction
    /// with the ack in it committed, the ack is done (whether or not a claim won) and
    /// `ack` is emptied; [`Error::OwnershipLost`] (nothing committed) settles it too.
    async fn claim_tried(
        &self,
        session: &Session,
        candidates: Vec<Candidate>,
        ack: &mut Option<Claimed>,
    ) -> Result<Option<Claimed>> {
        let claimed = self
            .claim_first_free(session, candidates, ack.as_ref())
            .await;
        if let Some(mut acked) =
            ack.take_if(|_| matches!(claimed, Ok(_) | Err(Error::OwnershipLost(_))))
        {
            acked.acked_with(claimed.is_ok())?;
        }
        claimed
    }

    /// Claims the first of `candidates` (in queue order) that is still unchanged and
    /// unclaimed, in **one** transaction: each candidate's claim is a transaction
    /// nested in the failure branch of the one before, so etcd tries them in turn and
    /// commits the first that holds. A claim creates the claim key under the
    /// consumer's lease and raises the item's attempt counter. Consumers racing for
    /// the head of the queue thus cost one request each, not one per item lost.
    ///
    /// With `ack`, the whole chain is nested inside the transaction that acks that item:
    /// then [`Error::OwnershipLost`] means neither happened, and any other answer that
    /// the ack committed.
    async fn claim_first_free(
        &self,
        session: &Session,
        candidates: Vec<Candidate>,
        ack: Option<&Claimed>,
    ) -> Result<Option<Claimed>> {
        let claimed_ms = now_ms();
        let lease_hex = format!("{:x}", session.lease());
        let claim_keys: Vec<String> = candidates
            .iter()
            .map(|c| format!("{}{}", self.claims(), c.slot))
            .collect();
        // Each candidate as it would be once claimed, the last one innermost.
        let mut chain: Option<Txn> = None;
        for (c, claim_key) in candidates.iter().zip(&claim_keys).rev() {
            let mut envelope = c.envelope.clone();
            envelope.attempts = envelope.attempts.saturating_add(1);
            let claim_value = serde_json::json!({
                "lease": lease_hex,
                "attempt": envelope.attempts,
                "claimed_ms": claimed_ms,
            })
            .to_string();
            let mut claim = Txn::new()
                .when([
                    mod_rev_is(c.item_key.as_str(), c.rev),
                    key_missing(claim_key.as_str()),
                ])
                .and_then([
                    TxnOp::put(claim_key.as_str(), claim_value, claim_lease(session)),
                    TxnOp::put(
                        c.item_key.as_str(),
                        encode_item(&envelope, &c.payload),
                        None,
                    ),
                ]);
            if let Some(next) = chain.take() {
                claim = claim.or_else([TxnOp::txn(next)]);
            }
            chain = Some(claim);
        }
        let Some(chain) = chain else { return Ok(None) };
        // Shared with the undo, which restores the winner as it was (attempt counter
        // included) if the claim is cancelled in flight: encoded only if that happens.
        let candidates = std::sync::Arc::new(candidates);
        let (undo_from, undo_keys) = (candidates.clone(), claim_keys.clone());
        // The ack's claim key, when the chain rides in the ack's transaction.
        let acking = ack.map(|a| a.claim.key.clone());
        let txn = match ack {
            Some(acked) => acked.ack_with(chain),
            None => chain,
        };
        let (mut client, lease) = (self.client.clone(), session.lease());
        #[cfg(feature = "test-hooks")]
        let moment = crate::test_hooks::claim_moment(&self.prefix);
        // The transaction runs inline; if this future is dropped mid-flight, the pending
        // guard finishes it in the background and undoes the claim (never left behind),
        // putting the item back as it was (attempt counter included) while nobody
        // else changed it since the claim.
        let mut pending = PendingPut::start(self.client.clone(), async move {
            #[cfg(feature = "test-hooks")]
            crate::test_hooks::reached(&moment).await;
            let resp = client.txn(txn).await.map_err(|e| match e {
                etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found") => {
                    Error::SessionExpired(lease)
                }
                other => other.into(),
            })?;
            let chain = match acking {
                None => resp.clone(),
                // The ack's own claim was gone: nothing committed, no claim either.
                Some(acked_claim) if !resp.succeeded() => {
                    return Err(Error::OwnershipLost(acked_claim))
                }
                // The ack committed; the chain is the nested transaction, last.
                Some(acked_claim) => match resp.op_responses().pop() {
                    Some(TxnOpResponse::Txn(chain)) => chain,
                    _ => {
                        return Err(Error::Malformed {
                            key: acked_claim,
                            reason: "the ack answered without its claim transaction".into(),
                        })
                    }
                },
            };
            match first_to_hold(chain, claim_keys.len()) {
                Some(won) => Ok((
                    Placed {
                        key: claim_keys[won].clone(),
                        rev: txn_rev(&resp),
                    },
                    won,
                )),
                // Every candidate was claimed or changed first: not ours, nothing created.
                None => Err(Error::Locked(claim_keys[0].clone())),
            }
        })
        .with_undo(move |placed| {
            let won = undo_keys
                .iter()
                .position(|claim_key| *claim_key == placed.key)
                .expect("the placed claim is one of the candidates");
            let c = &undo_from[won];
            Txn::new()
                .when([
                    create_rev_is(placed.key.as_str(), placed.rev),
                    mod_rev_is(c.item_key.as_str(), placed.rev),
                ])
                .and_then([
                    TxnOp::delete(placed.key.as_str(), None),
                    TxnOp::put(
                        c.item_key.as_str(),
                        encode_item(&c.envelope, &c.payload),
                        None,
                    ),
                ])
        });
        let won = match pending.placed().await {
            Ok((_, won)) => won,
            Err(Error::Locked(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let claim = pending.keep();
        let winner = &candidates[won];
        let (item_key, mut envelope) = (winner.item_key.clone(), winner.envelope.clone());
        let (payload, priority) = (winner.payload.clone(), winner.priority);
        envelope.attempts = envelope.attempts.saturating_add(1);
        debug!(id = %envelope.id, attempt = envelope.attempts, "claimed");
        metrics::queue_event(metrics::QUEUE_CLAIMS, &self.prefix);
        Ok(Some(Claimed {
            queue: self.clone(),
            item_key,
            id_key: self.id_key(&envelope.id),
            claim,
            envelope,
            payload,
            priority,
            settled: false,
        }))
    }

    /// A value under `items/` this crate did not write: set aside (dead-lettered as it
    /// is) rather than left to block every consumer of the queue.
    async fn set_aside_malformed(
        &self,
        client: &Client,
        item_key: &str,
        slot: &str,
        item: &etcd_client::KeyValue,
        error: &Error,
    ) -> Result<()> {
        tracing::warn!(key = %item_key, error = %error, "malformed queue item dead-lettered");
        self.dead_letter(client, item_key, slot, item, None).await
    }

    /// Moves an item that used up its attempts to the dead-letter area: the item and
    /// its id key are deleted and the dead key written in **one** transaction, and only
    /// if the item is unchanged and unclaimed — so an item is never lost between the
    /// two areas, and a concurrent claim or nack wins over the move.
    async fn dead_letter(
        &self,
        client: &Client,
        item_key: &str,
        slot: &str,
        item: &etcd_client::KeyValue,
        envelope: Option<&Envelope>,
    ) -> Result<()> {
        let claim_key = format!("{}{slot}", self.claims());
        let dead_key = format!("{}{slot}", self.dead());
        let mut moved = Ops::new()
            .put(dead_key.as_str(), item.value())
            .delete(item_key);
        // A malformed item has no readable id; its id key (if any) is left behind.
        if let Some(envelope) = envelope {
            moved = moved.delete(self.id_key(&envelope.id));
        }
        let outcome = txn::Txn::new()
            .when(mod_rev_is(item_key, item.mod_revision()))
            .when(key_missing(claim_key.as_str()))
            .then(moved)
            .commit(client)
            .await?;
        if outcome.succeeded() {
            if let Some(envelope) = envelope {
                tracing::warn!(id = %envelope.id, attempts = envelope.attempts, "item dead-lettered");
            }
        }
        Ok(())
    }
}

/// Which of a chain of `n` claim transactions (each nested in the failure branch of
/// the one before, see [`WorkQueue::claim_first_free`]) committed, if any.
fn first_to_hold(mut txn: etcd_client::TxnResponse, n: usize) -> Option<usize> {
    for i in 0..n {
        if txn.succeeded() {
            return Some(i);
        }
        match txn.op_responses().pop() {
            Some(TxnOpResponse::Txn(next)) => txn = next,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
