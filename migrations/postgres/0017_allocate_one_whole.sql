-- One allocation alone, written whole. With one transaction per allocation (group commit off, or
-- a quiet moment) the application sent seven statements per allocation: BEGIN, the ledger-order
-- lock, the read of tier schemes, coins_allocate_one (itself seven statements), the webhook
-- outbox, the daily roll-up and COMMIT, and PostgreSQL spent about 1 ms of CPU on each
-- transaction, most of it starting executors for one-row statements. This overload takes what the
-- application decided (the coin configuration id, the coins, the lot's expiry) and the event type
-- its entry reports, and writes the entry, its lot, the balance, the roll-up and the outbox
-- messages in one statement, after one read that locks the member's row and one claim.
--
-- The roll-up row is the connection's shard (`pg_backend_pid() % p_shards`), as the application
-- chooses it for a batch; the application calls this only for a batch of one item, so the row is
-- the transaction's last lock but the outbox's, as a batch takes it at its end.
-- The 10-argument overload of 0012 stays for binaries of the previous release during a rolling
-- upgrade (they write the outbox and roll-up themselves); nothing in this release calls it.

CREATE FUNCTION coins_allocate_one(
    p_company TEXT, p_user TEXT, p_event TEXT, p_request TEXT, p_now BIGINT,
    p_cfg TEXT, p_coins BIGINT, p_expires BIGINT, p_cap_day BIGINT, p_cap_ever BIGINT,
    p_event_type TEXT, p_event_bit BIGINT, p_shards INT)
RETURNS TABLE (out_idx INT, out_status TEXT, out_coins BIGINT, out_balance BIGINT, out_entry BIGINT)
LANGUAGE plpgsql
-- As in 0003: generic plans cached per connection, and no sequential scans.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    prev RECORD;
    acct RECORD;
    v_member BOOLEAN;
    v_balance BIGINT;
BEGIN
    out_idx := 1;
    IF p_cfg IS NOT NULL THEN
        -- The member's row, then the request id: the batch function's lock order.
        SELECT u.company_id, u.balance, u.pending_balance INTO acct FROM users u WHERE u.user_id = p_user FOR UPDATE;
        v_member := FOUND;
        INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at)
        VALUES (p_company, p_request, 'ALLOCATE', p_user, p_event, p_coins, '', p_now)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            IF NOT v_member THEN
                -- A new member (another transaction may have opened them meanwhile).
                INSERT INTO users (company_id, user_id, balance, created_at) VALUES (p_company, p_user, 0, p_now)
                ON CONFLICT DO NOTHING;
                SELECT u.company_id, u.balance, u.pending_balance INTO acct FROM users u WHERE u.user_id = p_user FOR UPDATE;
            END IF;
            IF acct.company_id <> p_company THEN
                out_status := 'USER_COMPANY_MISMATCH';
            ELSIF p_cap_day IS NOT NULL AND (
                    SELECT count(*) FROM ledger_entries le
                     WHERE le.company_id = p_company AND le.user_id = p_user AND le.event = p_event AND le.type = 'ALLOCATE'
                       AND le.created_at >= p_now - p_now % 86400000) >= p_cap_day THEN
                out_status := 'LIMIT_PER_DAY'; out_coins := p_cap_day;
            ELSIF p_cap_ever IS NOT NULL AND (
                    SELECT count(*) FROM ledger_entries le
                     WHERE le.company_id = p_company AND le.user_id = p_user AND le.event = p_event AND le.type = 'ALLOCATE') >= p_cap_ever THEN
                out_status := 'LIMIT_EVER'; out_coins := p_cap_ever;
            ELSIF acct.balance > 9223372036854775807 - p_coins THEN
                out_status := 'BALANCE_OVERFLOW';
            END IF;
            IF out_status IS NOT NULL THEN
                DELETE FROM requests WHERE company_id = p_company AND request_id = p_request;
                RETURN NEXT;
                RETURN;
            END IF;
            v_balance := acct.balance + p_coins;
            -- A credit pays the user's debt first: its lot keeps what is left (none when nothing is).
            WITH e AS (
                INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at,
                                            expires_at, pending_after)
                VALUES (p_company, p_user, 'ALLOCATE', p_coins, v_balance, p_event, p_request, p_cfg, p_now, p_expires, acct.pending_balance)
                RETURNING entry_id),
            l AS (
                INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at)
                SELECT p_company, p_user, e.entry_id, least(p_coins, v_balance), least(p_coins, v_balance), p_expires, p_now
                  FROM e WHERE v_balance > 0),
            b AS (
                UPDATE users SET balance = v_balance, lifetime_earned = lifetime_earned + p_coins
                 WHERE company_id = p_company AND user_id = p_user),
            d AS (
                INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries)
                VALUES (p_company, p_now / 86400000, p_event, 'ALLOCATE', pg_backend_pid() % p_shards, greatest(p_coins, 0), greatest(-p_coins, 0), 1)
                ON CONFLICT (company_id, day, event, type, shard) DO UPDATE SET credit = ledger_daily.credit + EXCLUDED.credit,
                    debit = ledger_daily.debit + EXCLUDED.debit, entries = ledger_daily.entries + EXCLUDED.entries),
            m AS (
                INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, event_type, state, next_attempt_at, created_at)
                SELECT w.webhook_id, p_company, p_user, e.entry_id, p_event_type, 'pending', p_now, p_now
                  FROM e JOIN webhooks w ON w.company_id = p_company AND w.enabled AND (w.event_mask & p_event_bit) <> 0
                 ORDER BY w.webhook_id)
            SELECT e.entry_id INTO out_entry FROM e;
            out_status := 'ALLOCATED'; out_coins := p_coins; out_balance := v_balance;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    -- Not claimed: a replay, a request-id conflict, or no configuration.
    SELECT r.kind, r.user_id, r.event, r.coins INTO prev FROM requests r WHERE r.company_id = p_company AND r.request_id = p_request;
    IF NOT FOUND THEN
        out_status := 'CONFIG_NOT_FOUND';
    ELSIF prev.kind = 'ALLOCATE' AND prev.user_id = p_user AND prev.event = p_event THEN
        out_status := 'REPLAYED'; out_coins := prev.coins;
    ELSE
        out_status := 'REQUEST_ID_CONFLICT';
    END IF;
    RETURN NEXT;
END;
$$;
