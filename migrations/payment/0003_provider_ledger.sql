-- The simulated provider's ledger, as a real provider keeps one: every charge it accepts
-- is a row of its own, under an id the provider makes up (`ch_…`). The order id is only
-- the merchant's reference on the charge, NOT a key: two charges for one order are two
-- rows, so a double charge is representable here and has to be prevented by the
-- payment service (claims, acks, idempotency keys), not by this schema.

ALTER TABLE provider_charges RENAME TO old_provider_charges;
ALTER TABLE old_provider_charges RENAME CONSTRAINT provider_charges_pkey TO old_provider_charges_pkey;
ALTER TABLE provider_refunds RENAME TO old_provider_refunds;
ALTER TABLE old_provider_refunds RENAME CONSTRAINT provider_refunds_pkey TO old_provider_refunds_pkey;

CREATE TABLE provider_charges (
    charge_id     TEXT PRIMARY KEY,
    -- The merchant's reference (like a real API's metadata); many charges may name one order.
    order_id      UUID NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    -- AUTHORIZED: money held; CAPTURED: taken; DECLINED: nothing moved.
    status        TEXT NOT NULL CHECK (status IN ('AUTHORIZED', 'CAPTURED', 'DECLINED')),
    reason        TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    captured_at   TIMESTAMPTZ
);
CREATE INDEX provider_charges_by_order ON provider_charges (order_id);

-- Refunds, each under its own id; a charge may be refunded in parts, never beyond what
-- was captured (the provider checks that under a row lock on the charge).
CREATE TABLE provider_refunds (
    refund_id     TEXT PRIMARY KEY,
    charge_id     TEXT NOT NULL REFERENCES provider_charges (charge_id),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor > 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX provider_refunds_by_charge ON provider_refunds (charge_id);

-- Idempotency keys: the first request with a key records what it asked (`request`) and
-- what it made (`result_id`, a charge or refund id); a repeat with the same key gets that
-- result back and moves no money; the same key with a different request is refused. A
-- request without a key is always a new operation.
CREATE TABLE provider_idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    operation       TEXT NOT NULL CHECK (operation IN ('authorize', 'capture', 'refund')),
    request         TEXT NOT NULL,
    result_id       TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the old ledger held: one charge per order (charged and captured in one step), under
-- the key the payment service now uses for it; refunds likewise.
INSERT INTO provider_charges (charge_id, order_id, amount_minor, status, reason, created_at, captured_at)
SELECT provider_ref, order_id, amount_minor, CASE WHEN ok THEN 'CAPTURED' ELSE 'DECLINED' END,
       reason, charged_at, CASE WHEN ok THEN charged_at END
FROM old_provider_charges;
INSERT INTO provider_idempotency_keys (idempotency_key, operation, request, result_id, created_at)
SELECT 'order-' || order_id || '-charge', 'authorize',
       'authorize order=' || order_id || ' amount=' || amount_minor || ' capture=true',
       provider_ref, charged_at
FROM old_provider_charges;
INSERT INTO provider_refunds (refund_id, charge_id, amount_minor, created_at)
SELECT r.refund_ref, c.provider_ref, r.amount_minor, r.refunded_at
FROM old_provider_refunds r JOIN old_provider_charges c USING (order_id);
INSERT INTO provider_idempotency_keys (idempotency_key, operation, request, result_id, created_at)
SELECT 'order-' || r.order_id || '-refund', 'refund', 'refund charge=' || c.provider_ref,
       r.refund_ref, r.refunded_at
FROM old_provider_refunds r JOIN old_provider_charges c USING (order_id);

DROP TABLE old_provider_refunds;
DROP TABLE old_provider_charges;
