-- A campaign's allocations indexed by member only where a per-user trigger limit counts them.
-- `requests_by_campaign` held every allocation under a campaign by (company, campaign, member):
-- one entry on a random page per allocation, though only a campaign with a per-user limit ever
-- counts a member's allocations. Now `campaign_limited` marks the allocations of such a
-- campaign (TRUE; NULL otherwise: a campaign's limit is fixed before it starts, so the mark of
-- an allocation made under it never changes) and only they are indexed by member; the count of
-- each campaign's allocations (the campaigns page) reads an index by campaign alone, where a
-- campaign's new allocations all land on its last page.
ALTER TABLE requests ADD COLUMN campaign_limited BOOLEAN CHECK (campaign_limited);
UPDATE requests r SET campaign_limited = TRUE FROM campaigns c
 WHERE r.campaign_id IS NOT NULL AND c.company_id = r.company_id
   AND r.campaign_id = 'CMP' || CAST(c.seq + 100000 AS TEXT) AND c.max_triggers_per_user IS NOT NULL;

-- Every writer of this version marks what it writes: the step-by-step plan its allocations under
-- a limited campaign, and the set-at-once allocation function (0019) writes only allocations
-- under no per-user limit, which carry no mark. A binary older than this migration would write
-- a limited campaign's allocations unmarked, so the upgrade stops older processes first (README).
DROP INDEX requests_by_campaign;
CREATE INDEX requests_by_campaign ON requests (company_id, campaign_id) WHERE campaign_id IS NOT NULL;
CREATE INDEX requests_by_limited_campaign ON requests (company_id, campaign_id, user_id) WHERE campaign_limited;
