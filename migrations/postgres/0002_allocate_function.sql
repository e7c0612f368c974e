-- Allocation as one server-side call per batch: the whole per-item decision (replay or conflict,
-- configuration resolution, user binding, caps, overflow) and the writes run inside PostgreSQL,
-- so a batch of N allocations costs one round trip instead of about 10 N. The Rust side calls it
-- inside a transaction and commits once for the whole batch (group commit).
--
-- Items are applied in array order, each exactly as a single allocation would be. A refused item
-- removes its own request claim and writes nothing else. out_status is ALLOCATED, REPLAYED,
-- REQUEST_ID_CONFLICT, CONFIG_NOT_FOUND, USER_COMPANY_MISMATCH, LIMIT_PER_DAY, LIMIT_EVER or
-- BALANCE_OVERFLOW; for the LIMIT_* statuses out_coins carries the cap.
CREATE FUNCTION coins_allocate(p_company TEXT[], p_user TEXT[], p_event TEXT[], p_request TEXT[], p_now BIGINT[])
RETURNS TABLE (out_idx INT, out_status TEXT, out_coins BIGINT, out_balance BIGINT, out_entry BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    i INT;
    prev RECORD;
    cfg RECORD;
    acct RECORD;
    v_count BIGINT;
    v_balance BIGINT;
    v_expires BIGINT;
    v_entry BIGINT;
BEGIN
    -- Lock the batch's existing users up front, in user_id order: concurrent batches then take
    -- these locks in one global order and cannot deadlock on them (a deadlock would still be
    -- retried whole by the caller, but costs PostgreSQL's deadlock_timeout first).
    PERFORM 1 FROM users WHERE user_id = ANY (p_user) ORDER BY user_id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_company, 1), 0) LOOP
        out_idx := i; out_coins := NULL; out_balance := NULL; out_entry := NULL;

        -- Replays first: they must answer even if the configuration has changed since.
        SELECT r.kind, r.user_id, r.event, r.coins INTO prev FROM requests r
         WHERE r.company_id = p_company[i] AND r.request_id = p_request[i];
        IF FOUND THEN
            IF prev.kind = 'ALLOCATE' AND prev.user_id = p_user[i] AND prev.event = p_event[i] THEN
                out_status := 'REPLAYED'; out_coins := prev.coins;
            ELSE
                out_status := 'REQUEST_ID_CONFLICT';
            END IF;
            RETURN NEXT; CONTINUE;
        END IF;

        -- SPEC §1: the active CUSTOM of the company, else the active DEFAULT.
        SELECT c.seq, c.amount, c.validity_days, c.max_per_user_per_day, c.max_per_user INTO cfg FROM coin_configs c
         WHERE c.event = p_event[i] AND c.active
           AND (c.configuration = 'DEFAULT' OR (c.configuration = 'CUSTOM' AND c.company_id = p_company[i]))
         ORDER BY (c.configuration = 'CUSTOM') DESC LIMIT 1;
        IF NOT FOUND THEN
            out_status := 'CONFIG_NOT_FOUND'; RETURN NEXT; CONTINUE;
        END IF;

        -- Claim the request id. A concurrent duplicate in another transaction waits here for the
        -- first to commit, then finds its row and replays it.
        INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at)
        VALUES (p_company[i], p_request[i], 'ALLOCATE', p_user[i], p_event[i], cfg.amount, '', p_now[i])
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT r.kind, r.user_id, r.event, r.coins INTO prev FROM requests r
             WHERE r.company_id = p_company[i] AND r.request_id = p_request[i];
            IF prev.kind = 'ALLOCATE' AND prev.user_id = p_user[i] AND prev.event = p_event[i] THEN
                out_status := 'REPLAYED'; out_coins := prev.coins;
            ELSE
                out_status := 'REQUEST_ID_CONFLICT';
            END IF;
            RETURN NEXT; CONTINUE;
        END IF;

        -- The user's row lock serialises everything that changes this balance. No conflict
        -- target: users has two unique keys (the primary key and user_id), and a concurrent first
        -- credit of the same user can collide on either; a targeted ON CONFLICT would let the
        -- other one surface as an error.
        INSERT INTO users (company_id, user_id, balance, created_at) VALUES (p_company[i], p_user[i], 0, p_now[i])
        ON CONFLICT DO NOTHING;
        SELECT u.company_id, u.balance INTO acct FROM users u WHERE u.user_id = p_user[i] FOR UPDATE;
        IF acct.company_id <> p_company[i] THEN
            DELETE FROM requests WHERE company_id = p_company[i] AND request_id = p_request[i];
            out_status := 'USER_COMPANY_MISMATCH'; RETURN NEXT; CONTINUE;
        END IF;

        IF cfg.max_per_user_per_day IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM ledger_entries e
             WHERE e.company_id = p_company[i] AND e.user_id = p_user[i] AND e.event = p_event[i] AND e.type = 'ALLOCATE'
               AND e.created_at >= p_now[i] - (p_now[i] % 86400000);
            IF v_count >= cfg.max_per_user_per_day THEN
                DELETE FROM requests WHERE company_id = p_company[i] AND request_id = p_request[i];
                out_status := 'LIMIT_PER_DAY'; out_coins := cfg.max_per_user_per_day; RETURN NEXT; CONTINUE;
            END IF;
        END IF;
        IF cfg.max_per_user IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM ledger_entries e
             WHERE e.company_id = p_company[i] AND e.user_id = p_user[i] AND e.event = p_event[i] AND e.type = 'ALLOCATE';
            IF v_count >= cfg.max_per_user THEN
                DELETE FROM requests WHERE company_id = p_company[i] AND request_id = p_request[i];
                out_status := 'LIMIT_EVER'; out_coins := cfg.max_per_user; RETURN NEXT; CONTINUE;
            END IF;
        END IF;
        IF acct.balance > 9223372036854775807 - cfg.amount THEN
            DELETE FROM requests WHERE company_id = p_company[i] AND request_id = p_request[i];
            out_status := 'BALANCE_OVERFLOW'; RETURN NEXT; CONTINUE;
        END IF;

        v_balance := acct.balance + cfg.amount;
        v_expires := CASE WHEN cfg.validity_days IS NULL THEN NULL ELSE p_now[i] + cfg.validity_days * 86400000 END;
        INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at)
        VALUES (p_company[i], p_user[i], 'ALLOCATE', cfg.amount, v_balance, p_event[i], p_request[i],
                'WCC' || (cfg.seq + 100000)::TEXT, p_now[i], v_expires)
        RETURNING entry_id INTO v_entry;
        INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at)
        VALUES (p_company[i], p_user[i], v_entry, cfg.amount, cfg.amount, v_expires, p_now[i]);
        UPDATE users SET balance = v_balance, lifetime_earned = lifetime_earned + cfg.amount
         WHERE company_id = p_company[i] AND user_id = p_user[i];
        out_status := 'ALLOCATED'; out_coins := cfg.amount; out_balance := v_balance; out_entry := v_entry;
        RETURN NEXT;
    END LOOP;
END;
$$;
