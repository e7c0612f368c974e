-- Commerce-grade earning: the allocation record (state, order id, aliases, what its coins were
-- computed from), earning on purchase value, held (pending) coins, and the columns later returns
-- and adjustments fill. Existing data is carried forward in place: no table is rewritten.

-- 1. Constraints of 0001 widened: a PERCENT configuration has no `amount`; requests gain the
--    kinds ACTIVATE and ADJUST, entries ACTIVATE, CANCEL and ADJUST.
ALTER TABLE coin_configs ALTER COLUMN amount DROP NOT NULL;
ALTER TABLE requests DROP CONSTRAINT requests_kind_check,
    ADD CONSTRAINT requests_kind_check CHECK (kind IN ('ALLOCATE', 'REDEEM', 'REVERSE', 'ACTIVATE', 'ADJUST'));
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_type_check,
    ADD CONSTRAINT ledger_entries_type_check CHECK (type IN ('ALLOCATE', 'ACTIVATE', 'CANCEL', 'REDEEM', 'REVERSE', 'EXPIRE', 'ADJUST'));

-- 2. How a configuration earns: FIXED (`amount` coins) or PERCENT (`rate_bps` of the purchase
--    value), with an optional minimum spend, a cap per allocation, a rounding rule and a hold.
ALTER TABLE coin_configs
    ADD COLUMN amount_type TEXT NOT NULL DEFAULT 'FIXED' CHECK (amount_type IN ('FIXED', 'PERCENT')),
    ADD COLUMN rate_bps BIGINT CHECK (rate_bps BETWEEN 1 AND 1000000),
    ADD COLUMN min_amount_minor BIGINT CHECK (min_amount_minor >= 1),
    ADD COLUMN max_coins_per_allocation BIGINT CHECK (max_coins_per_allocation >= 1),
    ADD COLUMN rounding TEXT NOT NULL DEFAULT 'FLOOR' CHECK (rounding IN ('FLOOR', 'HALF_UP')),
    ADD COLUMN pending_days BIGINT CHECK (pending_days BETWEEN 1 AND 365);

-- 3. The allocation record lives on the allocation's own request row (the claim). A row whose
--    `state` is NULL is an allocation with nothing beyond the EnKash fields: FIXED, credited at
--    once, no order id and no purchase value; it is ACTIVE and its record is read from its
--    ledger entry (so coins_allocate_set, which writes only such rows, is unchanged). Every
--    other allocation writes its record here. An alias (a till's retry of a live order under a
--    new request id) is a row of its own naming the allocation it repeats, with its order id.
ALTER TABLE requests
    ADD COLUMN order_id TEXT,
    ADD COLUMN alias_of TEXT,
    ADD COLUMN state TEXT CHECK (state IN ('PENDING', 'ACTIVE', 'CANCELED', 'REVERSED', 'ZERO')),
    ADD COLUMN zero_reason TEXT CHECK (zero_reason IN ('BELOW_MINIMUM', 'ROUNDED_TO_ZERO')),
    ADD COLUMN coin_config_id TEXT,
    ADD COLUMN base_coins BIGINT,
    ADD COLUMN coins_canceled BIGINT NOT NULL DEFAULT 0 CHECK (coins_canceled >= 0),
    ADD COLUMN coins_reversed BIGINT NOT NULL DEFAULT 0 CHECK (coins_reversed >= 0),
    ADD COLUMN coins_waived BIGINT NOT NULL DEFAULT 0 CHECK (coins_waived >= 0),
    ADD COLUMN amount_minor BIGINT,
    ADD COLUMN amount_refunded_minor BIGINT,
    ADD COLUMN currency TEXT,
    ADD COLUMN calculation TEXT,             -- JSON: what the coins were computed from
    ADD COLUMN activates_at BIGINT,
    ADD COLUMN activated_at BIGINT,
    ADD COLUMN expires_at BIGINT;
-- At most one live allocation per (company, event, order id), enforced inside the ledger
-- transaction: a reversed or canceled one frees its order id, a zero one holds it.
CREATE UNIQUE INDEX requests_live_order ON requests (company_id, event, order_id)
 WHERE order_id IS NOT NULL AND state IN ('PENDING', 'ACTIVE', 'ZERO');
-- The latest allocation of an order, live or not, and its aliases (which carry its order id).
CREATE INDEX requests_by_order ON requests (company_id, event, order_id, created_at) WHERE order_id IS NOT NULL;

-- Allocations and redemptions reversed before this migration: their records say so.
UPDATE requests q SET state = 'REVERSED', coins_reversed = q.coins
  FROM requests r
 WHERE q.kind = 'ALLOCATE' AND r.kind = 'REVERSE' AND r.company_id = q.company_id AND r.original_request_id = q.request_id;
UPDATE requests q SET coins_reversed = q.coins
  FROM requests r
 WHERE q.kind = 'REDEEM' AND r.kind = 'REVERSE' AND r.company_id = q.company_id AND r.original_request_id = q.request_id;

-- 4. Entries: held coins move `pending_coins` (and `pending_after` chains them as `balance_after`
--    chains coins); the rest say where an entry came from.
ALTER TABLE ledger_entries
    ADD COLUMN pending_coins BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN pending_after BIGINT NOT NULL DEFAULT 0 CHECK (pending_after >= 0),
    ADD COLUMN effective_at BIGINT,   -- NULL: created_at
    ADD COLUMN order_id TEXT,
    ADD COLUMN amount_minor BIGINT,
    ADD COLUMN original_request_id TEXT,
    ADD COLUMN reason TEXT,
    ADD COLUMN client_id TEXT;

-- 5. Held coins: a user's pending balance, and a lot that is held until `pending_until` (its
--    `expires_at` is then provisional: the expiry clock starts at activation).
ALTER TABLE users ADD COLUMN pending_balance BIGINT NOT NULL DEFAULT 0 CHECK (pending_balance >= 0);
ALTER TABLE lots ADD COLUMN pending_until BIGINT;
CREATE INDEX lots_pending ON lots (pending_until) WHERE pending_until IS NOT NULL AND remaining > 0;
