-- Orders: the saga's durable state, one row per idempotency key.

CREATE TABLE orders (
    order_id        UUID PRIMARY KEY,
    -- Same key, same order: the unique index is what makes concurrent duplicate
    -- CreateOrder calls converge on one row.
    idempotency_key TEXT NOT NULL UNIQUE,
    customer_id     TEXT NOT NULL,
    customer_tier   TEXT NOT NULL CHECK (customer_tier IN ('standard', 'gold', 'platinum')),
    strategy        TEXT NOT NULL CHECK (strategy IN ('none', 'mutex', 'stm', 'pg')),
    sale_id         TEXT,
    status          TEXT NOT NULL
                    CHECK (status IN ('PENDING', 'RESERVED', 'REJECTED', 'PAID', 'CANCELLED')),
    status_reason   TEXT NOT NULL DEFAULT '',
    payment_id      TEXT,
    -- PAID/CANCELLED orders: true once inventory confirmed the Commit/Release. A
    -- duplicate PaymentResult repeats the inventory call until it is.
    stock_settled   BOOLEAN NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_by_status ON orders (status, updated_at);

CREATE TABLE order_lines (
    order_id    UUID NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    sku         TEXT NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
