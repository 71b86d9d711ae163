-- What the `settle-payments` leader job needs to finish what a crashed worker left.
-- Payments recorded before this migration have no `reported_at`: the job reports them
-- once more, which PaymentResult answers idempotently.

-- The tier the request came with, so a payment whose queue item is gone can be put
-- back on the queue at its own priority.
ALTER TABLE payments ADD COLUMN tier TEXT NOT NULL DEFAULT 'standard';

-- Set once the order service accepted this payment's result (PaymentResult answered
-- OK), or once it refused it for good (then `report_refusal` says why). A final
-- payment with no `reported_at` is one the order service may never have heard of.
ALTER TABLE payments ADD COLUMN reported_at TIMESTAMPTZ;
ALTER TABLE payments ADD COLUMN report_refusal TEXT NOT NULL DEFAULT '';

-- REFUNDED: captured, then given back because the order had been cancelled meanwhile.
ALTER TABLE payments DROP CONSTRAINT payments_state_check;
ALTER TABLE payments ADD CONSTRAINT payments_state_check
    CHECK (state IN ('PROCESSING', 'CAPTURED', 'FAILED', 'REFUNDED'));

-- The job's two sweeps: final payments not reported yet, PROCESSING ones by age.
CREATE INDEX payments_unreported ON payments (updated_at) WHERE reported_at IS NULL;
CREATE INDEX payments_processing ON payments (updated_at) WHERE state = 'PROCESSING';

-- The simulated provider's refunds, keyed by order id like its charges: a repeated
-- refund request returns the first refund and gives nothing back twice.
CREATE TABLE provider_refunds (
    order_id      UUID PRIMARY KEY REFERENCES provider_charges (order_id),
    amount_minor  BIGINT NOT NULL,
    refund_ref    TEXT NOT NULL,
    refunded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
