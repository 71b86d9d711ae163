-- Idempotency keys are scoped per customer: two customers who happen to pick the same
-- key get two orders, and neither learns of the other's. (0001 made the key unique on
-- its own; applied migrations are never edited, so the scope changes here.)

ALTER TABLE orders DROP CONSTRAINT orders_idempotency_key_key;
ALTER TABLE orders ADD CONSTRAINT orders_customer_idempotency_key
    UNIQUE (customer_id, idempotency_key);
