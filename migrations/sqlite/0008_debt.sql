-- Debt: a return or a staff adjustment with `onShortfall: NEGATIVE` may take more coins than the
-- user has, and the balance goes below zero by what they owe. Every later credit pays the debt
-- first; only what is left goes into its lot, so a user in debt has no spendable coins and the
-- balance is always the spendable coins less the debt.
--
-- 1. The balance and each entry's balance after it may be negative now. As in 0006, the two
--    CHECK constraints of 0001 are relaxed where they stand (every stored row satisfies the new
--    text); RESET reloads the schema on this connection, and the CREATE INDEX below bumps the
--    schema cookie so every other connection reloads it too. The guard aborts the migration
--    unless both edits took.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'balance           INTEGER NOT NULL CHECK (balance >= 0)', 'balance           INTEGER NOT NULL')
 WHERE type = 'table' AND name = 'users';
UPDATE sqlite_schema
   SET sql = replace(sql, 'balance_after  INTEGER NOT NULL CHECK (balance_after >= 0)', 'balance_after  INTEGER NOT NULL')
 WHERE type = 'table' AND name = 'ledger_entries';
PRAGMA writable_schema = RESET;
CREATE TEMP TABLE migration_guard (edits INTEGER CHECK (edits = 2));
INSERT INTO migration_guard
SELECT COUNT(*) FROM sqlite_schema
 WHERE (name = 'users' AND sql LIKE '%balance           INTEGER NOT NULL,%' AND sql NOT LIKE '%balance >= 0%')
    OR (name = 'ledger_entries' AND sql LIKE '%balance_after  INTEGER NOT NULL,%' AND sql NOT LIKE '%balance_after >= 0%');
DROP TABLE migration_guard;

-- 2. The users who owe coins, for the dashboard (few: an index of them alone).
CREATE INDEX users_in_debt ON users (company_id, user_id) WHERE balance < 0;
