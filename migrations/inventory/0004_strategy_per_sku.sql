-- A SKU's guard is the shop's decision, not the buyer's: the strategy belongs to the
-- stock row (SetStock sets it, GetStock shows it), and a Reserve naming another one
-- is refused. One client's `none` can then no longer undo another's lock on the same
-- SKU.
--
-- Rows stocked before this migration get 'mutex': it is the inventory's
-- DEFAULT_STRATEGY default, i.e. what every Reserve that named no strategy already
-- ran under, and a guarded strategy, so no existing SKU silently becomes unguarded.
-- An operator who meant another guard re-stocks the SKU with it.
ALTER TABLE stock ADD COLUMN strategy TEXT NOT NULL DEFAULT 'mutex'
    CHECK (strategy IN ('none', 'mutex-unfenced', 'mutex', 'stm', 'pg'));
-- New rows always name their strategy (the service inserts it).
ALTER TABLE stock ALTER COLUMN strategy DROP DEFAULT;

-- `mutex-unfenced`: the mutex strategy's lock without its fencing token.
ALTER TABLE reservations DROP CONSTRAINT reservations_strategy_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_strategy_check
    CHECK (strategy IN ('none', 'mutex-unfenced', 'mutex', 'stm', 'pg'));
