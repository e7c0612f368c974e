-- Daily totals of the ledger for the dashboard (issue 11): per company, UTC day, event and entry
-- type, the coins credited and debited and the number of entries. Kept by the write path in the
-- entry's own transaction, so a page view never scans the ledger. `shard` spreads concurrent
-- writers over several rows (PostgreSQL); readers sum over it. Filled here from the ledger so far.

CREATE TABLE ledger_daily (
    company_id TEXT NOT NULL,
    day        INTEGER NOT NULL,    -- days since 1970-01-01, UTC
    event      TEXT NOT NULL,       -- '' for entries without one
    type       TEXT NOT NULL,       -- ALLOCATE, REDEEM, REVERSE, EXPIRE
    shard      INTEGER NOT NULL,
    credit     INTEGER NOT NULL,    -- sum of positive coins
    debit      INTEGER NOT NULL,    -- sum of negative coins, as a positive number
    entries    INTEGER NOT NULL,
    PRIMARY KEY (company_id, day, event, type, shard)
) WITHOUT ROWID;
CREATE INDEX ledger_daily_by_day ON ledger_daily (day);

INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries)
SELECT company_id, created_at / 86400000, COALESCE(event, ''), type, 0,
       SUM(CASE WHEN coins > 0 THEN coins ELSE 0 END), SUM(CASE WHEN coins < 0 THEN -coins ELSE 0 END), COUNT(*)
FROM ledger_entries GROUP BY 1, 2, 3, 4;
