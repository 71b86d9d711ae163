//! Reserve: the per-order claim, all of a cart's lines or none, a retry's same answer,
//! and the stm strategy's two-step claim (`prepare`, then `reserve` with
//! `StockCheck::Decided`). How each line's units are taken is in `strategies`.

use shop_common::domain::{Cart, OrderId};

use shop_common::domain::Sku;

use super::model::{shortage, ReservationState, ReserveDbError, ReserveInput, ReserveOutcome};
use super::stock::InventoryDb;
use super::strategies::{
    count_purchase, read_in_section, take_conditional, take_decided, write_in_section, Guard,
    StockCheck,
};

impl InventoryDb {
    pub async fn reservation_state(
        &self,
        order: OrderId,
    ) -> Result<Option<ReservationState>, sqlx::Error> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1")
                .bind(order.as_uuid())
                .fetch_optional(self.pool())
                .await?;
        state.as_deref().map(ReservationState::from_db).transpose()
    }

    /// What an earlier Reserve or Release of `order` decided, if there was one: a
    /// retry gets the same answer. A retry must ask for the same lines; a different
    /// cart under the same order id is [`ReserveDbError::DifferentCart`].
    pub async fn earlier_outcome(
        &self,
        order: OrderId,
        cart: &Cart,
    ) -> Result<Option<ReserveOutcome>, ReserveDbError> {
        let state = self.reservation_state(order).await?;
        self.outcome_in_state(state, order, cart).await
    }

    /// [`Self::earlier_outcome`] for a reservation state already read (`None`: the
    /// order has no row).
    pub async fn outcome_in_state(
        &self,
        state: Option<ReservationState>,
        order: OrderId,
        cart: &Cart,
    ) -> Result<Option<ReserveOutcome>, ReserveDbError> {
        match state {
            None | Some(ReservationState::Preparing) => Ok(None),
            Some(ReservationState::Released) => Ok(Some(ReserveOutcome::AlreadyReleased)),
            Some(_) => {
                let held: Vec<(String, i32)> = sqlx::query_as(
                    "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
                )
                .bind(order.as_uuid())
                .fetch_all(self.pool())
                .await?;
                let same = held.len() == cart.lines().len()
                    && held
                        .iter()
                        .zip(cart.lines())
                        .all(|((sku, quantity), line)| {
                            sku == line.sku.as_str() && *quantity == line.quantity.get()
                        });
                if same {
                    Ok(Some(ReserveOutcome::Reserved))
                } else {
                    Err(ReserveDbError::DifferentCart(order))
                }
            }
        }
    }

    /// Step 1 of an stm Reserve (the `stm` module has all three): claims the order as PREPARING.
    /// `Ok(None)`: claimed now, or by an earlier stm attempt that did not finish — go
    /// on to etcd. `Ok(Some(outcome))`: decided already.
    pub async fn prepare(
        &self,
        input: ReserveInput<'_>,
    ) -> Result<Option<ReserveOutcome>, ReserveDbError> {
        let claimed = sqlx::query(
            "INSERT INTO reservations (order_id, state, strategy, sale_id, customer_id)
             VALUES ($1, 'PREPARING', 'stm', $2, $3)
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(input.order.as_uuid())
        .bind(input.buyer.map(|b| b.sale.as_str()))
        .bind(input.buyer.map(|b| b.customer.as_str()))
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        if claimed {
            return Ok(None);
        }
        match self.reservation_state(input.order).await? {
            Some(ReservationState::Preparing) => {
                let strategy: Option<String> =
                    sqlx::query_scalar("SELECT strategy FROM reservations WHERE order_id = $1")
                        .bind(input.order.as_uuid())
                        .fetch_one(self.pool())
                        .await?;
                match strategy.as_deref() {
                    Some("stm") => Ok(None),
                    _ => Err(ReserveDbError::InProgress(input.order)),
                }
            }
            _ => self.earlier_outcome(input.order, input.cart).await,
        }
    }

    /// Removes the PREPARING claim of an stm Reserve that etcd refused (out of stock,
    /// limit): nothing was taken, and a later Reserve may try again.
    pub async fn unprepare(&self, order: OrderId) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM reservations WHERE order_id = $1 AND state = 'PREPARING'")
            .bind(order.as_uuid())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Reserves every line of the cart for the order, or nothing (see the module
    /// docs); in a sale, also counts the units against the customer's limit.
    pub async fn reserve(
        &self,
        input: ReserveInput<'_>,
        check: StockCheck<'_>,
    ) -> Result<ReserveOutcome, ReserveDbError> {
        let ReserveInput {
            order,
            cart,
            strategy,
            buyer,
        } = input;
        // The critical section's read comes first, outside the transaction (see
        // `read_in_section`): one value per line, in the cart's (sorted) order.
        let mut section_reads = Vec::new();
        if let StockCheck::Section { guard, .. } = check {
            for line in cart.lines() {
                let token = fencing_token(guard, &line.sku)?;
                section_reads.push(read_in_section(self.pool(), &line.sku, token).await?);
            }
        }
        let mut tx = self.pool().begin().await?;
        // Claim the order, and record its lines with the claim (one statement; if a
        // line cannot be served, the transaction rolls both back). If its row exists
        // (or appears while we wait on a concurrent insert of it), an earlier Reserve
        // or a Release decided already. An stm Reserve claimed it as PREPARING before
        // going to etcd and now completes it.
        let (skus, quantities) = cart.columns();
        let claim = match check {
            StockCheck::Decided => sqlx::query(CLAIM_PREPARED),
            _ => sqlx::query(CLAIM_NEW)
                .bind(strategy.as_str())
                .bind(buyer.map(|b| b.sale.as_str()))
                .bind(buyer.map(|b| b.customer.as_str())),
        };
        let claimed = claim
            .bind(order.as_uuid())
            .bind(&skus)
            .bind(&quantities)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !claimed {
            tx.rollback().await?;
            if self.reservation_state(order).await? == Some(ReservationState::Preparing) {
                return Err(ReserveDbError::InProgress(order));
            }
            // No row at all: the claim we conflicted with (or, for `Decided`, our own
            // PREPARING claim) was an stm attempt's, withdrawn since because etcd
            // refused that attempt. Nothing is reserved; the caller may retry.
            return self
                .earlier_outcome(order, cart)
                .await?
                .ok_or(ReserveDbError::ClaimWithdrawn(order));
        }
        for (i, line) in cart.lines().iter().enumerate() {
            let (sku, quantity) = (&line.sku, line.quantity.get());
            let taken = match check {
                StockCheck::Section { guard, think_time } => {
                    let read = section_reads[i];
                    if read < i64::from(quantity) {
                        Err(shortage(sku, quantity, Some(read)))
                    } else {
                        moment!(InSection, order);
                        #[cfg(feature = "test-hooks")]
                        crate::hooks::reached_remote(sku, order).await;
                        tokio::time::sleep(think_time).await;
                        let token = fencing_token(guard, sku)?;
                        write_in_section(&mut tx, sku, quantity, read, token).await?;
                        Ok(())
                    }
                }
                StockCheck::Conditional => take_conditional(&mut tx, sku, quantity).await?,
                StockCheck::Decided => take_decided(&mut tx, sku, quantity).await?,
            };
            if let Err(shortage) = taken {
                tx.rollback().await?;
                return Ok(ReserveOutcome::OutOfStock(shortage));
            }
            moment!(LineTaken, order);
        }
        if let Some(buyer) = buyer {
            let counted = count_purchase(&mut tx, buyer, cart.units(), check.limit_guard()).await?;
            if let Err(exceeded) = counted {
                tx.rollback().await?;
                return Ok(ReserveOutcome::LimitExceeded(exceeded));
            }
        }
        tx.commit().await?;
        Ok(ReserveOutcome::Reserved)
    }
}

/// A Reserve's claim of the order (`$4`: the order) with its lines (`$5`, `$6`: SKUs and
/// quantities), inserted only if the order's row is new (`$1`..`$3`: strategy, sale,
/// customer). Inserts no line if the row exists.
const CLAIM_NEW: &str = "
    WITH claimed AS (
        INSERT INTO reservations (order_id, state, strategy, sale_id, customer_id)
        VALUES ($4, 'RESERVED', $1, $2, $3)
        ON CONFLICT (order_id) DO NOTHING
        RETURNING order_id
    )
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT claimed.order_id, l.sku, l.quantity
    FROM claimed, UNNEST($5::text[], $6::int[]) AS l (sku, quantity)";

/// [`CLAIM_NEW`] for an stm Reserve that claimed the order as PREPARING (`$1`: the
/// order; `$2`, `$3`: SKUs and quantities): the row moves to RESERVED, and the lines
/// go in, only if it is still PREPARING.
const CLAIM_PREPARED: &str = "
    WITH claimed AS (
        UPDATE reservations SET state = 'RESERVED', updated_at = now()
        WHERE order_id = $1 AND state = 'PREPARING'
        RETURNING order_id
    )
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT claimed.order_id, l.sku, l.quantity
    FROM claimed, UNNEST($2::text[], $3::int[]) AS l (sku, quantity)";

/// The SKU's fencing token under a fenced guard (`None` for the others).
fn fencing_token(guard: Guard<'_>, sku: &Sku) -> Result<Option<i64>, ReserveDbError> {
    match guard {
        Guard::Fenced(tokens) => tokens
            .get(sku)
            .copied()
            .map(Some)
            .ok_or_else(|| ReserveDbError::MissingToken(sku.clone())),
        Guard::Nothing | Guard::Lock => Ok(None),
    }
}
