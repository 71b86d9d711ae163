-- What a SKU's stock adds up to, fixed when stock is set: available + reserved + sold
-- must stay equal to it. Lost updates (strategy `none`) break exactly this, and the
-- reconcile job reports it.
ALTER TABLE stock ADD COLUMN total BIGINT;
UPDATE stock SET total = available + reserved + sold;
