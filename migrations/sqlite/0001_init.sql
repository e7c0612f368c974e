-- coins schema, SQLite dialect. Times are Unix milliseconds (UTC). Every ledger-side table carries
-- company_id so the PostgreSQL twin of this schema can be partitioned by company.

CREATE TABLE clients (
    client_id       TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_hash     TEXT NOT NULL,             -- Argon2 PHC string
    is_admin        INTEGER NOT NULL CHECK (is_admin IN (0, 1)),
    companies       TEXT NOT NULL,             -- space-separated company ids (ids have no spaces)
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER
);

CREATE TABLE password_users (
    client_id       TEXT NOT NULL REFERENCES clients (client_id),
    username        TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    PRIMARY KEY (client_id, username)
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,               -- SHA-256 hex of the token; the token is never stored
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    client_id  TEXT NOT NULL REFERENCES clients (client_id),
    username   TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER                         -- refresh tokens are single use
);
CREATE INDEX tokens_by_client ON tokens (client_id);

CREATE TABLE coin_configs (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: ids never reused
    configuration        TEXT NOT NULL CHECK (configuration IN ('DEFAULT', 'CUSTOM')),
    company_id           TEXT NOT NULL,
    event                TEXT NOT NULL,
    amount               INTEGER NOT NULL CHECK (amount BETWEEN 1 AND 1000000000),
    validity_days        INTEGER CHECK (validity_days >= 1),
    max_per_user_per_day INTEGER CHECK (max_per_user_per_day >= 1),
    max_per_user         INTEGER CHECK (max_per_user >= 1),
    active               INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    version              INTEGER NOT NULL DEFAULT 1,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
-- SPEC §1: at most one DEFAULT per event, at most one CUSTOM per (company, event).
CREATE UNIQUE INDEX coin_configs_one_default ON coin_configs (event) WHERE configuration = 'DEFAULT';
CREATE UNIQUE INDEX coin_configs_one_custom ON coin_configs (company_id, event) WHERE configuration = 'CUSTOM';

CREATE TABLE coin_config_audit (
    audit_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL REFERENCES coin_configs (seq),
    action      TEXT NOT NULL CHECK (action IN ('CREATE', 'UPDATE')),
    client_id   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    before_json TEXT,
    after_json  TEXT NOT NULL
);
CREATE INDEX coin_config_audit_by_config ON coin_config_audit (seq, audit_id);

CREATE TABLE users (
    company_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    balance           INTEGER NOT NULL CHECK (balance >= 0),
    lifetime_earned   INTEGER NOT NULL DEFAULT 0,
    lifetime_redeemed INTEGER NOT NULL DEFAULT 0,
    lifetime_expired  INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (company_id, user_id)
);
-- A userId is unique across the installation: it belongs to the company that first credited it.
CREATE UNIQUE INDEX users_by_user_id ON users (user_id);

-- Idempotency: one row per (company, requestId) across allocations, redemptions and reversals.
CREATE TABLE requests (
    company_id  TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('ALLOCATE', 'REDEEM', 'REVERSE')),
    user_id     TEXT NOT NULL,
    event       TEXT,
    coins       INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,                -- further parameters a replay must repeat
    original_request_id TEXT,                 -- for REVERSE: the request it reverses
    response    TEXT,                         -- the original response payload, replayed verbatim
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (company_id, request_id)
);
-- A request is reversed at most once, even when two reversals race.
CREATE UNIQUE INDEX requests_one_reversal ON requests (company_id, original_request_id) WHERE kind = 'REVERSE';

CREATE TABLE ledger_entries (
    entry_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    type           TEXT NOT NULL CHECK (type IN ('ALLOCATE', 'REDEEM', 'REVERSE', 'EXPIRE')),
    coins          INTEGER NOT NULL,           -- signed: credits positive, debits negative
    balance_after  INTEGER NOT NULL CHECK (balance_after >= 0),
    event          TEXT,
    request_id     TEXT,
    coin_config_id TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER
);
CREATE INDEX ledger_by_user ON ledger_entries (company_id, user_id, entry_id);
CREATE INDEX ledger_by_request ON ledger_entries (company_id, request_id);
-- Per-user caps count a user's allocations of one event, overall and per UTC day.
CREATE INDEX ledger_caps ON ledger_entries (company_id, user_id, event, created_at) WHERE type = 'ALLOCATE';
-- SPEC §6 rule 1: the ledger is append-only, enforced by the database itself.
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;

-- The unspent coins of one credit. Debits consume lots soonest expiry first.
CREATE TABLE lots (
    lot_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    entry_id   INTEGER NOT NULL REFERENCES ledger_entries (entry_id),
    coins      INTEGER NOT NULL CHECK (coins >= 1),
    remaining  INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= coins),
    expires_at INTEGER,                        -- NULL: never expires
    created_at INTEGER NOT NULL
);
CREATE INDEX lots_open_by_user ON lots (company_id, user_id, expires_at, lot_id) WHERE remaining > 0;
CREATE INDEX lots_open_by_expiry ON lots (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;

-- Which lots each debit or restore touched, so a reversal can give coins back to the same lots.
CREATE TABLE lot_moves (
    entry_id INTEGER NOT NULL REFERENCES ledger_entries (entry_id),
    lot_id   INTEGER NOT NULL REFERENCES lots (lot_id),
    coins    INTEGER NOT NULL,                 -- signed, like the entry
    PRIMARY KEY (entry_id, lot_id)
);
CREATE INDEX lot_moves_by_lot ON lot_moves (lot_id);

-- What one coin is worth, per company; company_id '' holds the installation-wide default.
CREATE TABLE coin_values (
    company_id           TEXT PRIMARY KEY,
    currency             TEXT NOT NULL,
    minor_units_per_coin INTEGER NOT NULL CHECK (minor_units_per_coin >= 1),
    updated_by           TEXT NOT NULL,
    updated_at           INTEGER NOT NULL
);
