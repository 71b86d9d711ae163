-- Flash sales with per-customer limits, the STM strategy's bookkeeping, and the
-- catalog's prices.

-- A sale is created closed; Reserves of its orders wait at its etcd Barrier until it
-- opens. per_customer_limit = 0 means no limit.
CREATE TABLE sales (
    sale_id             TEXT PRIMARY KEY,
    per_customer_limit  INTEGER NOT NULL CHECK (per_customer_limit >= 0),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    opened_at           TIMESTAMPTZ
);

-- Units each customer holds (RESERVED or COMMITTED) in a sale. Reserve adds, Release
-- subtracts. Strategies pg and mutex check the limit here with one conditional
-- upsert; `none` reads, thinks and writes (and so can exceed it); stm decides in etcd
-- and records the result here.
CREATE TABLE sale_purchases (
    sale_id     TEXT NOT NULL REFERENCES sales (sale_id),
    customer_id TEXT NOT NULL,
    units       BIGINT NOT NULL CHECK (units >= 0),
    PRIMARY KEY (sale_id, customer_id)
);

-- Who reserved, in which sale (NULL outside sales and for tombstones): Release gives
-- the units back to the customer's count.
ALTER TABLE reservations ADD COLUMN sale_id TEXT;
ALTER TABLE reservations ADD COLUMN customer_id TEXT;

-- PREPARING: an stm Reserve has claimed the order and is deciding in etcd; it becomes
-- RESERVED (with its lines) or disappears (out of stock), or a Release turns it into
-- RELEASED and the etcd hold is given back.
ALTER TABLE reservations DROP CONSTRAINT reservations_state_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_state_check
    CHECK (state IN ('PREPARING', 'RESERVED', 'COMMITTED', 'RELEASED'));

-- Bumped by every SetStock. The stm strategy's etcd counter for the SKU carries the
-- epoch it was seeded at; a counter from an older epoch is stale (the stock was set
-- since) and is re-seeded from `available`.
ALTER TABLE stock ADD COLUMN stm_epoch BIGINT NOT NULL DEFAULT 0;

-- Unit prices in the smallest currency unit; changed together by SetPrices, which
-- bumps the one catalog version.
CREATE TABLE prices (
    sku              TEXT PRIMARY KEY REFERENCES stock (sku),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    version          BIGINT NOT NULL
);

CREATE TABLE catalog (
    id      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    version BIGINT NOT NULL
);
INSERT INTO catalog (version) VALUES (0);
