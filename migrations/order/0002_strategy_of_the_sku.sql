-- The strategy is the SKU's (inventory decides): an order names one only to assert
-- it. NULL until inventory answers the order's Reserve when the client named none;
-- then the strategy inventory applied.
ALTER TABLE orders ALTER COLUMN strategy DROP NOT NULL;
ALTER TABLE orders DROP CONSTRAINT orders_strategy_check;
ALTER TABLE orders ADD CONSTRAINT orders_strategy_check
    CHECK (strategy IN ('none', 'mutex-unfenced', 'mutex', 'stm', 'pg'));
