-- One payment per order, ever: order_id is the primary key.
CREATE TABLE payments (
    order_id      UUID PRIMARY KEY,
    customer_id   TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    state         TEXT NOT NULL CHECK (state IN ('PROCESSING', 'CAPTURED', 'FAILED')),
    provider_ref  TEXT,
    reason        TEXT NOT NULL DEFAULT '',
    deliveries    INT NOT NULL DEFAULT 1,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The simulated provider's own ledger. A real provider keeps one too: a charge request
-- carries an idempotency key (the order id) and a repeat returns the first outcome, so
-- a worker that dies after charging but before recording cannot charge twice.
CREATE TABLE provider_charges (
    order_id      UUID PRIMARY KEY,
    amount_minor  BIGINT NOT NULL,
    ok            BOOLEAN NOT NULL,
    provider_ref  TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    charged_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
