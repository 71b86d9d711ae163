//! The order database (`migrations/order/`).
//!
//! Every status change is a compare-and-set on the current status
//! (`UPDATE ... WHERE status = 'PENDING'`), so concurrent duplicates of a request race
//! harmlessly: one moves the order, the others read where it went.

use shop_common::domain::{Cart, CustomerId, OrderId, SaleId, Strategy};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::domain::{CustomerTier, IdempotencyKey, NewOrder, Order, OrderStatus};

/// What inserting a new order found.
#[derive(Debug)]
pub enum Inserted {
    /// A new PENDING order.
    New(Order),
    /// The idempotency key was used before: this is that order.
    Existing(Order),
}

/// The order database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OrdersDb {
    pool: PgPool,
}

const ORDER_COLUMNS: &str = "order_id, idempotency_key, customer_id, customer_tier, strategy, \
     sale_id, status, status_reason, payment_id, stock_settled, created_at, updated_at, \
     (SELECT COALESCE(array_agg(l.sku ORDER BY l.sku COLLATE \"C\"), '{}') FROM order_lines l WHERE l.order_id = o.order_id) AS skus, \
     (SELECT COALESCE(array_agg(l.quantity ORDER BY l.sku COLLATE \"C\"), '{}') FROM order_lines l WHERE l.order_id = o.order_id) AS quantities";

/// The insert of a new order; a key that exists already inserts nothing.
#[cfg(not(feature = "knockout-idempotency-key"))]
const INSERT_PENDING: &str =
    "INSERT INTO orders (order_id, idempotency_key, customer_id, customer_tier,
                         strategy, sale_id, status)
     VALUES ($1, $2, $3, $4, $5, $6, 'PENDING')
     ON CONFLICT (customer_id, idempotency_key) DO NOTHING";

/// Knockout (tests only, with the unique index dropped by the test): every
/// CreateOrder inserts an order, whatever its key.
#[cfg(feature = "knockout-idempotency-key")]
const INSERT_PENDING: &str =
    "INSERT INTO orders (order_id, idempotency_key, customer_id, customer_tier,
                         strategy, sale_id, status)
     VALUES ($1, $2, $3, $4, $5, $6, 'PENDING')";

impl OrdersDb {
    pub fn new(pool: PgPool) -> OrdersDb {
        OrdersDb { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts `new` as a PENDING order, unless its customer used its idempotency key: then the
    /// existing order is returned instead. Two concurrent calls with one key get one
    /// order (the unique index makes the second insert wait for the first, then yield).
    ///
    /// A new order is one statement: the order and its lines are inserted together and
    /// the order is built from what was inserted, so the common case is one round trip.
    pub async fn insert_pending(&self, new: &NewOrder) -> Result<Inserted, sqlx::Error> {
        // The existing order can vanish between our insert conflict and our read (a
        // failed attempt deleting its PENDING order); then try again.
        for _ in 0..3 {
            let id = OrderId::new_random();
            let (skus, quantities) = new.cart.columns();
            let inserted = sqlx::query(&format!(
                "WITH o AS ({INSERT_PENDING} RETURNING order_id, created_at, updated_at),
                      l AS (INSERT INTO order_lines (order_id, sku, quantity)
                            SELECT o.order_id, l.sku, l.quantity
                            FROM o, UNNEST($7::text[], $8::int[]) AS l (sku, quantity))
                 SELECT created_at, updated_at FROM o"
            ))
            .bind(id.as_uuid())
            .bind(new.idempotency_key.as_str())
            .bind(new.customer_id.as_str())
            .bind(new.customer_tier.as_str())
            .bind(new.strategy.map(Strategy::as_str))
            .bind(new.sale_id.as_ref().map(SaleId::as_str))
            .bind(&skus)
            .bind(&quantities)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = inserted {
                return Ok(Inserted::New(pending_order(id, new, &row)?));
            }
            if let Some(existing) = self
                .get_by_key(&new.customer_id, &new.idempotency_key)
                .await?
            {
                return Ok(Inserted::Existing(existing));
            }
        }
        Err(sqlx::Error::Protocol(format!(
            "idempotency key {:?} kept conflicting with an order that then disappeared",
            new.idempotency_key.as_str()
        )))
    }

    pub async fn get(&self, id: OrderId) -> Result<Option<Order>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders o WHERE order_id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| order_from_row(&row))
        .transpose()
    }

    /// Orders in `status` whose last change is more than `age` ago, oldest first: the
    /// expiry job's view of orders stuck PENDING or RESERVED.
    pub async fn in_status_since(
        &self,
        status: OrderStatus,
        age: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<OrderId>, sqlx::Error> {
        self.ids_older_than(&[status], "true", age, limit).await
    }

    /// PAID or CANCELLED orders whose Commit/Release inventory has not confirmed, last
    /// changed more than `age` ago, oldest first.
    pub async fn unsettled_since(
        &self,
        age: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<OrderId>, sqlx::Error> {
        let settled = [OrderStatus::Paid, OrderStatus::Cancelled];
        self.ids_older_than(&settled, "NOT stock_settled", age, limit)
            .await
    }

    async fn ids_older_than(
        &self,
        statuses: &[OrderStatus],
        condition: &str,
        age: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<OrderId>, sqlx::Error> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(&format!(
            "SELECT order_id FROM orders
             WHERE status = ANY($1) AND {condition}
               AND updated_at < now() - make_interval(secs => $2)
             ORDER BY updated_at LIMIT $3"
        ))
        .bind(&statuses)
        .bind(age.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(OrderId::from).collect())
    }

    /// The order of `customer` with idempotency key `key` (keys are per customer).
    pub async fn get_by_key(
        &self,
        customer: &CustomerId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders o WHERE customer_id = $1 AND idempotency_key = $2"
        ))
        .bind(customer.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| order_from_row(&row))
        .transpose()
    }

    /// Moves the order from `from` to `to` (with a reason, payment id and, if the
    /// order has none yet, the strategy inventory applied) if it is still in `from`.
    /// Returns the order as it is afterwards — moved by us (`true`), or by whoever got
    /// there first (`false`) — or `None` if it no longer exists.
    pub async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        reason: &str,
        payment_id: Option<&str>,
        strategy: Option<Strategy>,
    ) -> Result<Option<(Order, bool)>, sqlx::Error> {
        // One statement in the common case: the update returns the order as it left it.
        // Only when the compare-and-set found another status is the order read again.
        let moved = sqlx::query(&format!(
            "UPDATE orders o SET status = $3, status_reason = $4,
                                 payment_id = COALESCE($5, payment_id),
                                 strategy = COALESCE(strategy, $6), updated_at = now()
             WHERE order_id = $1 AND status = $2
             RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id.as_uuid())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(reason)
        .bind(payment_id)
        .bind(strategy.map(Strategy::as_str))
        .fetch_optional(&self.pool)
        .await?;
        match moved {
            Some(row) => Ok(Some((order_from_row(&row)?, true))),
            None => Ok(self.get(id).await?.map(|order| (order, false))),
        }
    }

    /// Sets the order's `updated_at` to now, which moves it to the back of the jobs'
    /// oldest-first views: an order whose repair keeps failing must not hide the ones
    /// behind it.
    pub async fn touch(&self, id: OrderId) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE orders SET updated_at = now() WHERE order_id = $1")
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that inventory confirmed the Commit/Release of a PAID/CANCELLED order;
    /// returns the order as it is now (`None` if it no longer exists).
    pub async fn mark_stock_settled(&self, id: OrderId) -> Result<Option<Order>, sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE orders o SET stock_settled = true, updated_at = now() WHERE order_id = $1
             RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| order_from_row(&row))
        .transpose()
    }

    /// Deletes the order (and its lines) if it is in `status`: used for an order a
    /// failed CreateOrder attempt claimed and released, so nothing half-done stays
    /// behind and a retry with the same key starts afresh.
    pub async fn delete_in(&self, id: OrderId, status: OrderStatus) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM orders WHERE order_id = $1 AND status = $2")
            .bind(id.as_uuid())
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The order `insert_pending` just inserted: what it was given, with the id and the
/// database's timestamps, its lines in the order a read gives them (by SKU, bytewise).
fn pending_order(id: OrderId, new: &NewOrder, row: &PgRow) -> Result<Order, sqlx::Error> {
    let mut lines: Vec<(&str, i32)> = new
        .cart
        .lines()
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity.get()))
        .collect();
    lines.sort_unstable();
    let cart = Cart::parse("order_lines", lines)
        .map_err(|e| decode_error("order lines", &e.to_string()))?;
    Ok(Order {
        id,
        request: NewOrder {
            cart,
            ..new.clone()
        },
        status: OrderStatus::Pending,
        status_reason: String::new(),
        payment_id: None,
        stock_settled: false,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn decode_error(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} {value:?} in the orders table").into())
}

fn order_from_row(row: &PgRow) -> Result<Order, sqlx::Error> {
    let id: uuid::Uuid = row.try_get("order_id")?;
    let key: String = row.try_get("idempotency_key")?;
    let customer: String = row.try_get("customer_id")?;
    let tier: String = row.try_get("customer_tier")?;
    let strategy: Option<String> = row.try_get("strategy")?;
    let sale: Option<String> = row.try_get("sale_id")?;
    let status: String = row.try_get("status")?;
    let skus: Vec<String> = row.try_get("skus")?;
    let quantities: Vec<i32> = row.try_get("quantities")?;
    let bad = |what: &str, value: &str| decode_error(what, value);
    let cart = Cart::parse(
        "order_lines",
        skus.iter()
            .map(String::as_str)
            .zip(quantities.iter().copied()),
    )
    .map_err(|e| bad("order lines", &e.to_string()))?;
    Ok(Order {
        id: OrderId::from(id),
        request: NewOrder {
            idempotency_key: IdempotencyKey::parse("idempotency_key", &key)
                .map_err(|_| bad("idempotency key", &key))?,
            customer_id: CustomerId::parse("customer_id", &customer)
                .map_err(|_| bad("customer id", &customer))?,
            customer_tier: CustomerTier::from_db(&tier).ok_or_else(|| bad("tier", &tier))?,
            cart,
            strategy: strategy
                .map(|s| s.parse::<Strategy>().map_err(|_| bad("strategy", &s)))
                .transpose()?,
            sale_id: sale
                .map(|s| SaleId::parse("sale_id", &s).map_err(|_| bad("sale id", &s)))
                .transpose()?,
        },
        status: OrderStatus::from_db(&status).ok_or_else(|| bad("status", &status))?,
        status_reason: row.try_get("status_reason")?,
        payment_id: row.try_get("payment_id")?,
        stock_settled: row.try_get("stock_settled")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
