-- Webhooks (SPEC §5): subscriptions, the outbox of messages written in the ledger's own
-- transaction (one per entry and subscription that wants it), and every delivery attempt.

CREATE TABLE webhooks (
    webhook_id       TEXT PRIMARY KEY,
    company_id       TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_mask       BIGINT NOT NULL,           -- bit per event type (see src/domain/webhooks.rs)
    description      TEXT,
    enabled          BOOLEAN NOT NULL,
    disabled_reason  TEXT,                       -- 'failing' when disabled for failing 5 days
    secret_sealed    TEXT NOT NULL,              -- the signing secret, encrypted (never plain)
    previous_sealed  TEXT,                       -- the secret before a rotation, while it still signs
    previous_until   BIGINT,
    failing_since    BIGINT,                    -- start of the current run of failed deliveries
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX webhooks_by_company ON webhooks (company_id, enabled);

CREATE TABLE webhook_messages (
    message_seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the message id is 'msg_' || seq
    webhook_id       TEXT NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    company_id       TEXT NOT NULL,
    user_id          TEXT NOT NULL,              -- '' for webhook.test (ordering is per user)
    entry_id         BIGINT,                    -- the ledger entry it reports; NULL for webhook.test
    event_type       TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_until      BIGINT,
    lease_owner      TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at, message_seq) WHERE state = 'pending';
CREATE INDEX webhook_messages_order ON webhook_messages (webhook_id, user_id, message_seq) WHERE state = 'pending';
CREATE INDEX webhook_messages_by_webhook ON webhook_messages (webhook_id, message_seq);

CREATE TABLE webhook_attempts (
    attempt_id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_seq      BIGINT NOT NULL REFERENCES webhook_messages (message_seq) ON DELETE CASCADE,
    webhook_id       TEXT NOT NULL,
    attempted_at     BIGINT NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    http_status      BIGINT,
    latency_ms       BIGINT NOT NULL,
    excerpt          TEXT,                       -- the start of the response body, or the error
    next_attempt_at  BIGINT                     -- NULL: no retry (delivered, or given up)
);
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, attempt_id);
-- Deleting a webhook deletes its messages, and each message its attempts.
CREATE INDEX webhook_attempts_by_message ON webhook_attempts (message_seq);
