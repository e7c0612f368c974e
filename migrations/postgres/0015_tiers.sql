-- Status tiers: each company's tier scheme, every member's tier, the coins that qualify for a
-- tier, and every tier change (what `tier.*` webhooks report). Nothing existing is rewritten.

-- A company's scheme, as JSON (basis, window, retention, downgrade policy, tiers).
CREATE TABLE tier_schemes (
    company_id  TEXT PRIMARY KEY,
    scheme      TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- A member's tier: NULL `tier_code` is the scheme's first tier, never placed. `tier_cause` is
-- the request whose qualifying coins raised them to it (returning it places them again);
-- `tier_floor` a tier staff set them never to fall below.
ALTER TABLE users ADD COLUMN tier_code TEXT;
ALTER TABLE users ADD COLUMN tier_entered_at BIGINT;
ALTER TABLE users ADD COLUMN tier_expires_at BIGINT;
ALTER TABLE users ADD COLUMN tier_cause TEXT;
ALTER TABLE users ADD COLUMN tier_floor TEXT;
ALTER TABLE users ADD COLUMN tier_floor_reason TEXT;
-- Every qualifying coin the member ever earned (less returns), kept beside the balance: a
-- LIFETIME scheme reads it as is, and a ROLLING one never counts more than it.
ALTER TABLE users ADD COLUMN qualifying_total BIGINT NOT NULL DEFAULT 0;
-- The sweeper evaluates tiers whose retention is up.
CREATE INDEX users_tier_due ON users (tier_expires_at) WHERE tier_expires_at IS NOT NULL;

-- Qualifying coins, as moves: a credit's base coins when it becomes spendable, and what each
-- later return takes off it, all dated at the credit's activation (`earned_at`), so a rolling
-- window sums one range of one member's rows. Kept only for companies with a ROLLING scheme
-- (written in full from the allocation records when one is set up). `request_id` is the credit,
-- `by_request_id` the request that moved it (the credit itself, or a return).
CREATE TABLE qualifying_coins (
    user_id        TEXT NOT NULL,
    earned_at      BIGINT NOT NULL,
    request_id     TEXT NOT NULL,
    by_request_id  TEXT NOT NULL,
    company_id     TEXT NOT NULL,
    coins          BIGINT NOT NULL,
    PRIMARY KEY (user_id, earned_at, request_id, by_request_id)
);

-- Every tier change, as reported.
CREATE TABLE tier_changes (
    change_id         BIGSERIAL PRIMARY KEY,
    company_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('UPGRADED', 'DOWNGRADED', 'RENEWED')),
    from_tier         TEXT,
    to_tier           TEXT NOT NULL,
    qualifying_coins  BIGINT NOT NULL,
    tier_expires_at   BIGINT,
    cause             TEXT NOT NULL,
    request_id        TEXT,
    created_at        BIGINT NOT NULL
);
CREATE INDEX tier_changes_by_user ON tier_changes (user_id, change_id);

-- A webhook message reports a ledger entry, a reminder, a tier change, or a test.
ALTER TABLE webhook_messages ADD COLUMN tier_change_id BIGINT REFERENCES tier_changes (change_id);

-- Whether a configuration's allocations earn the member's tier multiplier.
ALTER TABLE coin_configs ADD COLUMN tier_multiplier BOOLEAN NOT NULL DEFAULT TRUE;
