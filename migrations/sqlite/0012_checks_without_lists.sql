-- The CHECK constraints on the three tables every allocation writes, and the condition of the
-- index of live order ids, rewritten from a list of values (`kind IN ('ALLOCATE', 'REDEEM',
-- ...)`) to the same test spelled as comparisons (`kind = 'ALLOCATE' OR kind = 'REDEEM' OR
-- ...`). SQLite evaluates a list of more than two constants by building a temporary B-tree of
-- them each time a statement runs: on the writer that was a tenth of its time per allocation
-- (one for the request row, one for the entry, one per outbox message, and for an allocation
-- under an order id one more for the index). The comparisons accept exactly the same values
-- (NULL passes both forms, and these columns are NOT NULL anyway) and the index holds exactly
-- the same rows, so nothing stored changes: the text is rewritten where it stands, as in 0006
-- and 0008. RESET reloads the schema on this connection, and creating and dropping the guard
-- table bumps the schema cookie so every other connection reloads it too. The guard aborts the
-- migration unless all four edits took.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (kind IN (''ALLOCATE'', ''REDEEM'', ''REVERSE'', ''ACTIVATE'', ''ADJUST''))',
                     'CHECK (kind = ''ALLOCATE'' OR kind = ''REDEEM'' OR kind = ''REVERSE'' OR kind = ''ACTIVATE'' OR kind = ''ADJUST'')')
 WHERE type = 'table' AND name = 'requests';
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (type IN (''ALLOCATE'', ''ACTIVATE'', ''CANCEL'', ''REDEEM'', ''REVERSE'', ''EXPIRE'', ''ADJUST''))',
                     'CHECK (type = ''ALLOCATE'' OR type = ''ACTIVATE'' OR type = ''CANCEL'' OR type = ''REDEEM'' OR type = ''REVERSE'' OR type = ''EXPIRE'' OR type = ''ADJUST'')')
 WHERE type = 'table' AND name = 'ledger_entries';
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (state IN (''pending'', ''delivered'', ''failed''))',
                     'CHECK (state = ''pending'' OR state = ''delivered'' OR state = ''failed'')')
 WHERE type = 'table' AND name = 'webhook_messages';
UPDATE sqlite_schema
   SET sql = replace(sql, 'state IN (''PENDING'', ''ACTIVE'', ''ZERO'')', '(state = ''PENDING'' OR state = ''ACTIVE'' OR state = ''ZERO'')')
 WHERE type = 'index' AND name = 'requests_live_order';
PRAGMA writable_schema = RESET;
CREATE TABLE migration_guard (edits INTEGER CHECK (edits = 4));
INSERT INTO migration_guard
SELECT COUNT(*) FROM sqlite_schema
 WHERE name IN ('requests', 'ledger_entries', 'webhook_messages', 'requests_live_order') AND sql NOT LIKE '% IN (''%';
DROP TABLE migration_guard;
