-- Balance updates in place again. PostgreSQL updates a row without new index entries (a HOT
-- update) only when no column an index uses changes, the condition of a partial index included.
-- 0012's `users_in_debt` has the condition `balance < 0`, so since then every balance update
-- wrote new entries into both unique indexes of `users` (and left the old ones for later scans to
-- clean up): under allocation load, none of 254,397 updates of `users` was HOT. The index now
-- has a stored generated column as its condition, which changes only when a balance crosses
-- zero; the rule stays the balance's sign, kept by PostgreSQL itself on every write.
-- An update in place also needs room on the row's page: pages are left a fifth empty
-- (`fillfactor`), which the table's rewrite below applies to every existing page too. Adding the
-- column rewrites the table once (users are a small table beside the ledger).
ALTER TABLE users SET (fillfactor = 80);
ALTER TABLE users ADD COLUMN in_debt BOOLEAN GENERATED ALWAYS AS (balance < 0) STORED;
DROP INDEX users_in_debt;
CREATE INDEX users_in_debt ON users (company_id, user_id) WHERE in_debt;
