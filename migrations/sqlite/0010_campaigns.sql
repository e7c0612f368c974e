-- Bonus campaigns: a company's limited-time offers. An allocation inside a campaign's window
-- `[starts_at, ends_at)`, of one of its events (`events` comma-separated; NULL: every event),
-- earns its multiplier or its fixed bonus. `seq` is never reused (the id is CMP + seq), so an
-- allocation's record names its campaign for good; a campaign is deleted only before it starts.
CREATE TABLE campaigns (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id             TEXT NOT NULL,
    name                   TEXT NOT NULL,
    events                 TEXT,
    starts_at              INTEGER NOT NULL,
    ends_at                INTEGER NOT NULL,
    multiplier_bps         INTEGER CHECK (multiplier_bps BETWEEN 10001 AND 1000000),
    bonus_coins            INTEGER CHECK (bonus_coins BETWEEN 1 AND 1000000000),
    max_triggers_per_user  INTEGER CHECK (max_triggers_per_user >= 1),
    created_by             TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_by             TEXT NOT NULL,
    updated_at             INTEGER NOT NULL,
    CHECK ((multiplier_bps IS NULL) <> (bonus_coins IS NULL)),
    CHECK (ends_at > starts_at)
);
-- Allocations read the company's campaigns that have not ended.
CREATE INDEX campaigns_by_company ON campaigns (company_id, ends_at);

-- The campaign an allocation earned under (its record's calculation names it too). The
-- per-user trigger limit counts these rows, inside the allocation's transaction.
ALTER TABLE requests ADD COLUMN campaign_id TEXT;
CREATE INDEX requests_by_campaign ON requests (company_id, campaign_id, user_id) WHERE campaign_id IS NOT NULL;
