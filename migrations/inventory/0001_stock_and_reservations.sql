-- Inventory: stock per SKU and the reservations orders hold against it.
--
-- Every stock change is a relative UPDATE (available = available - q, ...) except in
-- the deliberately broken `none` strategy. The CHECKs are the last line of defence: no
-- bug, stale lock holder or mix of strategies can drive a counter below zero.

CREATE TABLE stock (
    sku         TEXT PRIMARY KEY,
    -- Units that can still be reserved.
    available   BIGINT NOT NULL CHECK (available >= 0),
    -- Units held by RESERVED reservations.
    reserved    BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    -- Units of COMMITTED reservations.
    sold        BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    -- Highest fencing token (create revision of the SKU's etcd lock key) a fenced
    -- write was accepted with. A write carrying a lower token comes from a holder
    -- whose lock expired and is rejected (mutex strategy).
    fence_token BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per order that ever reserved or was released: the order's reservation
-- state, and the per-order serialisation point (Reserve and Release both start by
-- inserting it). A RELEASED row with no lines is a tombstone: the Release came before
-- the Reserve, and the late Reserve must take nothing (null compensation + hanging
-- prevention).
CREATE TABLE reservations (
    order_id    UUID PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('RESERVED', 'COMMITTED', 'RELEASED')),
    -- The strategy that reserved it; NULL for a tombstone.
    strategy    TEXT CHECK (strategy IN ('none', 'mutex', 'stm', 'pg')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What a reservation holds: one line per (order, SKU). Lines share their order's
-- state (a reservation is all-or-nothing).
CREATE TABLE reservation_lines (
    order_id    UUID NOT NULL REFERENCES reservations (order_id),
    sku         TEXT NOT NULL REFERENCES stock (sku),
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

CREATE INDEX reservation_lines_by_sku ON reservation_lines (sku);
