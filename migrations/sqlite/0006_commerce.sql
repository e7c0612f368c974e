-- Commerce-grade earning: the allocation record (state, order id, aliases, what its coins were
-- computed from), earning on purchase value, held (pending) coins, and the columns later returns
-- and adjustments fill. Existing data is carried forward in place: no table is rebuilt.
--
-- 1. Three constraints of 0001 are widened where they stand: a PERCENT configuration has no
--    `amount`; requests gain the kinds ACTIVATE and ADJUST, entries ACTIVATE, CANCEL and ADJUST.
--    SQLite documents this in-place edit of a table's SQL for relaxing CHECK and NOT NULL
--    constraints (every stored row still satisfies the new text); RESET reloads the schema on
--    this connection, and the ALTER TABLEs below bump the schema cookie so every other
--    connection reloads it too. The guard aborts the migration unless all three edits took.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'amount               INTEGER NOT NULL CHECK (amount BETWEEN 1 AND 1000000000)',
                          'amount               INTEGER CHECK (amount BETWEEN 1 AND 1000000000)')
 WHERE type = 'table' AND name = 'coin_configs';
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (kind IN (''ALLOCATE'', ''REDEEM'', ''REVERSE''))',
                          'CHECK (kind IN (''ALLOCATE'', ''REDEEM'', ''REVERSE'', ''ACTIVATE'', ''ADJUST''))')
 WHERE type = 'table' AND name = 'requests';
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (type IN (''ALLOCATE'', ''REDEEM'', ''REVERSE'', ''EXPIRE''))',
                          'CHECK (type IN (''ALLOCATE'', ''ACTIVATE'', ''CANCEL'', ''REDEEM'', ''REVERSE'', ''EXPIRE'', ''ADJUST''))')
 WHERE type = 'table' AND name = 'ledger_entries';
PRAGMA writable_schema = RESET;
CREATE TEMP TABLE migration_guard (edits INTEGER CHECK (edits = 3));
INSERT INTO migration_guard
SELECT COUNT(*) FROM sqlite_schema
 WHERE (name = 'coin_configs' AND sql LIKE '%amount               INTEGER CHECK (amount BETWEEN%')
    OR (name = 'requests' AND sql LIKE '%''REVERSE'', ''ACTIVATE'', ''ADJUST''))%')
    OR (name = 'ledger_entries' AND sql LIKE '%''ACTIVATE'', ''CANCEL'', ''REDEEM''%');
DROP TABLE migration_guard;

-- 2. How a configuration earns: FIXED (`amount` coins) or PERCENT (`rate_bps` of the purchase
--    value), with an optional minimum spend, a cap per allocation, a rounding rule and a hold.
ALTER TABLE coin_configs ADD COLUMN amount_type TEXT NOT NULL DEFAULT 'FIXED' CHECK (amount_type IN ('FIXED', 'PERCENT'));
ALTER TABLE coin_configs ADD COLUMN rate_bps INTEGER CHECK (rate_bps BETWEEN 1 AND 1000000);
ALTER TABLE coin_configs ADD COLUMN min_amount_minor INTEGER CHECK (min_amount_minor >= 1);
ALTER TABLE coin_configs ADD COLUMN max_coins_per_allocation INTEGER CHECK (max_coins_per_allocation >= 1);
ALTER TABLE coin_configs ADD COLUMN rounding TEXT NOT NULL DEFAULT 'FLOOR' CHECK (rounding IN ('FLOOR', 'HALF_UP'));
ALTER TABLE coin_configs ADD COLUMN pending_days INTEGER CHECK (pending_days BETWEEN 1 AND 365);

-- 3. The allocation record lives on the allocation's own request row (the claim). A row whose
--    `state` is NULL is an allocation with nothing beyond the EnKash fields: FIXED, credited at
--    once, no order id and no purchase value; it is ACTIVE and its record is read from its
--    ledger entry. Every other allocation writes its record here. An alias (a till's retry of a
--    live order under a new request id) is a row of its own naming the allocation it repeats,
--    with its order id. The new columns carry no CHECK constraints (measured: each one costs the
--    insert of every allocation); `coins verify` checks what they would.
ALTER TABLE requests ADD COLUMN order_id TEXT;
ALTER TABLE requests ADD COLUMN alias_of TEXT;
ALTER TABLE requests ADD COLUMN state TEXT;
ALTER TABLE requests ADD COLUMN zero_reason TEXT;
ALTER TABLE requests ADD COLUMN coin_config_id TEXT;
ALTER TABLE requests ADD COLUMN base_coins INTEGER;
ALTER TABLE requests ADD COLUMN coins_canceled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN coins_reversed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN coins_waived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN amount_minor INTEGER;
ALTER TABLE requests ADD COLUMN amount_refunded_minor INTEGER;
ALTER TABLE requests ADD COLUMN currency TEXT;
ALTER TABLE requests ADD COLUMN calculation TEXT;             -- JSON: what the coins were computed from
ALTER TABLE requests ADD COLUMN activates_at INTEGER;
ALTER TABLE requests ADD COLUMN activated_at INTEGER;
ALTER TABLE requests ADD COLUMN expires_at INTEGER;
-- At most one live allocation per (company, event, order id), enforced inside the ledger
-- transaction: a reversed or canceled one frees its order id, a zero one holds it.
CREATE UNIQUE INDEX requests_live_order ON requests (company_id, event, order_id)
 WHERE order_id IS NOT NULL AND state IN ('PENDING', 'ACTIVE', 'ZERO');
-- The latest allocation of an order, live or not, and its aliases (which carry its order id).
CREATE INDEX requests_by_order ON requests (company_id, event, order_id, created_at) WHERE order_id IS NOT NULL;

-- Allocations and redemptions reversed before this migration: their records say so.
UPDATE requests SET state = 'REVERSED', coins_reversed = coins
 WHERE kind = 'ALLOCATE' AND EXISTS (SELECT 1 FROM requests r WHERE r.company_id = requests.company_id
                                       AND r.original_request_id = requests.request_id AND r.kind = 'REVERSE');
UPDATE requests SET coins_reversed = coins
 WHERE kind = 'REDEEM' AND EXISTS (SELECT 1 FROM requests r WHERE r.company_id = requests.company_id
                                     AND r.original_request_id = requests.request_id AND r.kind = 'REVERSE');

-- 4. Entries: held coins move `pending_coins` (and `pending_after` chains them as `balance_after`
--    chains coins); the rest say where an entry came from. As above, `coins verify` checks the
--    held balances rather than a CHECK on every write.
ALTER TABLE ledger_entries ADD COLUMN pending_coins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger_entries ADD COLUMN pending_after INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger_entries ADD COLUMN effective_at INTEGER;   -- NULL: created_at
ALTER TABLE ledger_entries ADD COLUMN order_id TEXT;
ALTER TABLE ledger_entries ADD COLUMN amount_minor INTEGER;
ALTER TABLE ledger_entries ADD COLUMN original_request_id TEXT;
ALTER TABLE ledger_entries ADD COLUMN reason TEXT;
ALTER TABLE ledger_entries ADD COLUMN client_id TEXT;

-- 5. Held coins: a user's pending balance, and a lot that is held until `pending_until` (its
--    `expires_at` is then provisional: the expiry clock starts at activation).
ALTER TABLE users ADD COLUMN pending_balance INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lots ADD COLUMN pending_until INTEGER;
CREATE INDEX lots_pending ON lots (pending_until) WHERE pending_until IS NOT NULL AND remaining > 0;
