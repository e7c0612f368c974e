-- coins schema, PostgreSQL dialect; the twin of migrations/sqlite/0001_init.sql.
-- Times are Unix milliseconds (UTC). Every ledger-side table carries company_id so it can be
-- partitioned by company.

CREATE TABLE clients (
    client_id       TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_hash     TEXT NOT NULL,
    is_admin        BOOLEAN NOT NULL,
    companies       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT
);

CREATE TABLE password_users (
    client_id       TEXT NOT NULL REFERENCES clients (client_id),
    username        TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    PRIMARY KEY (client_id, username)
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    client_id  TEXT NOT NULL REFERENCES clients (client_id),
    username   TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX tokens_by_client ON tokens (client_id);

CREATE TABLE coin_configs (
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- sequences never reuse
    configuration        TEXT NOT NULL CHECK (configuration IN ('DEFAULT', 'CUSTOM')),
    company_id           TEXT NOT NULL,
    event                TEXT NOT NULL,
    amount               BIGINT NOT NULL CHECK (amount BETWEEN 1 AND 1000000000),
    validity_days        BIGINT CHECK (validity_days >= 1),
    max_per_user_per_day BIGINT CHECK (max_per_user_per_day >= 1),
    max_per_user         BIGINT CHECK (max_per_user >= 1),
    active               BOOLEAN NOT NULL DEFAULT TRUE,
    version              BIGINT NOT NULL DEFAULT 1,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE UNIQUE INDEX coin_configs_one_default ON coin_configs (event) WHERE configuration = 'DEFAULT';
CREATE UNIQUE INDEX coin_configs_one_custom ON coin_configs (company_id, event) WHERE configuration = 'CUSTOM';

CREATE TABLE coin_config_audit (
    audit_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq         BIGINT NOT NULL REFERENCES coin_configs (seq),
    action      TEXT NOT NULL CHECK (action IN ('CREATE', 'UPDATE')),
    client_id   TEXT NOT NULL,
    at          BIGINT NOT NULL,
    before_json TEXT,
    after_json  TEXT NOT NULL
);
CREATE INDEX coin_config_audit_by_config ON coin_config_audit (seq, audit_id);

CREATE TABLE users (
    company_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    balance           BIGINT NOT NULL CHECK (balance >= 0),
    lifetime_earned   BIGINT NOT NULL DEFAULT 0,
    lifetime_redeemed BIGINT NOT NULL DEFAULT 0,
    lifetime_expired  BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (company_id, user_id)
);
CREATE UNIQUE INDEX users_by_user_id ON users (user_id);

CREATE TABLE requests (
    company_id  TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('ALLOCATE', 'REDEEM', 'REVERSE')),
    user_id     TEXT NOT NULL,
    event       TEXT,
    coins       BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    original_request_id TEXT,
    response    TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (company_id, request_id)
);
CREATE UNIQUE INDEX requests_one_reversal ON requests (company_id, original_request_id) WHERE kind = 'REVERSE';

CREATE TABLE ledger_entries (
    entry_id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    type           TEXT NOT NULL CHECK (type IN ('ALLOCATE', 'REDEEM', 'REVERSE', 'EXPIRE')),
    coins          BIGINT NOT NULL,
    balance_after  BIGINT NOT NULL CHECK (balance_after >= 0),
    event          TEXT,
    request_id     TEXT,
    coin_config_id TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT
);
CREATE INDEX ledger_by_user ON ledger_entries (company_id, user_id, entry_id);
CREATE INDEX ledger_by_request ON ledger_entries (company_id, request_id);
CREATE INDEX ledger_caps ON ledger_entries (company_id, user_id, event, created_at) WHERE type = 'ALLOCATE';

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only';
END;
$$;
CREATE TRIGGER ledger_entries_no_change BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE lots (
    lot_id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    entry_id   BIGINT NOT NULL REFERENCES ledger_entries (entry_id),
    coins      BIGINT NOT NULL CHECK (coins >= 1),
    remaining  BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= coins),
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX lots_open_by_user ON lots (company_id, user_id, expires_at, lot_id) WHERE remaining > 0;
CREATE INDEX lots_open_by_expiry ON lots (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;

CREATE TABLE lot_moves (
    entry_id BIGINT NOT NULL REFERENCES ledger_entries (entry_id),
    lot_id   BIGINT NOT NULL REFERENCES lots (lot_id),
    coins    BIGINT NOT NULL,
    PRIMARY KEY (entry_id, lot_id)
);
CREATE INDEX lot_moves_by_lot ON lot_moves (lot_id);

-- What one coin is worth, per company; company_id '' holds the installation-wide default.
CREATE TABLE coin_values (
    company_id           TEXT PRIMARY KEY,
    currency             TEXT NOT NULL,
    minor_units_per_coin BIGINT NOT NULL CHECK (minor_units_per_coin >= 1),
    updated_by           TEXT NOT NULL,
    updated_at           BIGINT NOT NULL
);
