-- A campaign's allocations indexed by member only where a per-user trigger limit counts them.
-- `requests_by_campaign` held every allocation under a campaign by (company, campaign, member):
-- one entry on a random page per allocation, though only a campaign with a per-user limit ever
-- counts a member's allocations. Now `campaign_limited` marks the allocations of such a
-- campaign (1; NULL otherwise: a campaign's limit is fixed before it starts, so the mark never
-- changes) and only they are indexed by member; the count of each campaign's allocations (the
-- campaigns page) reads an index by campaign alone, where a campaign's new allocations all
-- land on its last page.
ALTER TABLE requests ADD COLUMN campaign_limited INTEGER CHECK (campaign_limited = 1);
UPDATE requests SET campaign_limited = 1
 WHERE campaign_id IS NOT NULL AND (company_id, campaign_id) IN
   (SELECT company_id, 'CMP' || CAST(seq + 100000 AS TEXT) FROM campaigns WHERE max_triggers_per_user IS NOT NULL);
DROP INDEX requests_by_campaign;
CREATE INDEX requests_by_campaign ON requests (company_id, campaign_id) WHERE campaign_id IS NOT NULL;
CREATE INDEX requests_by_limited_campaign ON requests (company_id, campaign_id, user_id) WHERE campaign_limited = 1;
