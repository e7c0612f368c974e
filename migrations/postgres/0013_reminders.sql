-- Coins-expiring-soon reminders: each company's lead times, how far the sweeper has looked for
-- each, and every reminder sent (the record that makes each one go out at most once).
--
-- `swept_to`/`swept_user`: expiries up to `swept_to` were considered for this lead time, and at
-- exactly `swept_to` those of users up to `swept_user` (NULL: every user). A lead time turned
-- on starts at the moment it was set.
CREATE TABLE reminder_schedules (
    company_id   TEXT NOT NULL,
    lead_days    BIGINT NOT NULL CHECK (lead_days BETWEEN 1 AND 365),
    swept_to     BIGINT NOT NULL,
    swept_user   TEXT,
    updated_by   TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (company_id, lead_days)
);

-- One row per reminder sent: at most one per (company, user, expiry instant, lead time).
-- `message_key` is the event's webhook-id, derived from those four.
CREATE TABLE expiry_reminders (
    reminder_id  BIGSERIAL PRIMARY KEY,
    company_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    lead_days    BIGINT NOT NULL,
    coins        BIGINT NOT NULL CHECK (coins >= 1),
    days_left    BIGINT NOT NULL,
    message_key  TEXT NOT NULL UNIQUE,
    sent_at      BIGINT NOT NULL,
    UNIQUE (company_id, user_id, expires_at, lead_days)
);

-- A webhook message reports a ledger entry, a reminder, or (neither) a test.
ALTER TABLE webhook_messages ADD COLUMN reminder_id BIGINT REFERENCES expiry_reminders (reminder_id);
-- A reminder's messages, for retrying one by its id.
CREATE INDEX webhook_messages_by_reminder ON webhook_messages (reminder_id) WHERE reminder_id IS NOT NULL;
