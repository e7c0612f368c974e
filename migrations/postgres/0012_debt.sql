-- Debt: a return or a staff adjustment with `onShortfall: NEGATIVE` may take more coins than the
-- user has, and the balance goes below zero by what they owe. Every later credit pays the debt
-- first; only what is left goes into its lot, so a user in debt has no spendable coins and the
-- balance is always the spendable coins less the debt.
--
-- 1. The balance and each entry's balance after it may be negative now.
ALTER TABLE users DROP CONSTRAINT users_balance_check;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_balance_after_check;

-- 2. The users who owe coins, for the dashboard (few: an index of them alone).
CREATE INDEX users_in_debt ON users (company_id, user_id) WHERE balance < 0;

-- 3. The set-based allocation functions of 0011, with exactly one change each: the new lot holds
--    what is left of the credit after the debt (the entry's balance after it, at most the credit),
--    and no lot is made when nothing is left. Every other decision is unchanged.

CREATE OR REPLACE FUNCTION coins_allocate_set(
    p_company TEXT[], p_user TEXT[], p_event TEXT[], p_request TEXT[], p_now BIGINT[],
    p_cfg BIGINT[], p_amount BIGINT[], p_validity BIGINT[], p_cap_day BIGINT[], p_cap_ever BIGINT[])
RETURNS TABLE (out_idx INT, out_status TEXT, out_coins BIGINT, out_balance BIGINT, out_entry BIGINT)
LANGUAGE plpgsql
-- Custom plans re-plan the large statement on every call (about 1 ms, more than a one-item batch
-- costs to run), so plans are generic and cached per connection. A generic plan made while the
-- tables were still small would scan them whole forever after (seen: 40% of CPU in sequential
-- scans at 1M entries), so sequential scans are ruled out: every access here has an index.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_single BOOLEAN := coalesce(array_length(p_company, 1), 0) = 1;
    v_claimed BOOLEAN[];
    v_idx INT[];
    v_status TEXT[];
    v_coins BIGINT[];
    v_bal BIGINT[];
    v_rank BIGINT[];
    v_entries BIGINT[];
    v_allocated_keys TEXT[];
    v_entry_keys TEXT[];
BEGIN
    -- Existing users first, in user_id order, so concurrent batches cannot deadlock on them.
    -- (A join with unnest, not `= ANY`: a generic plan for `= ANY ($1)` scans the whole table.)
    PERFORM 1 FROM users u JOIN unnest(p_user) AS x(uid) ON u.user_id = x.uid ORDER BY u.user_id FOR UPDATE OF u;

    -- Claim the request ids of items that have a configuration, in key order. A concurrent
    -- duplicate in another transaction waits here for that one's commit, then is not claimed.
    WITH ins AS (
        INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at)
        SELECT t.c, t.q, 'ALLOCATE', t.u, t.e, t.a, '', t.nw
          FROM unnest(p_company, p_request, p_user, p_event, p_amount, p_now, p_cfg) AS t(c, q, u, e, a, nw, cfg)
         WHERE t.cfg IS NOT NULL
         ORDER BY t.c, t.q
        ON CONFLICT DO NOTHING
        RETURNING company_id, request_id)
    SELECT array_agg(ins.request_id IS NOT NULL ORDER BY i.idx) INTO v_claimed
      FROM unnest(p_company, p_request) WITH ORDINALITY AS i(c, q, idx)
      LEFT JOIN ins ON ins.company_id = i.c AND ins.request_id = i.q;

    -- A new user belongs to the company of its first claimed item. No conflict target: users
    -- has two unique keys and a concurrent first credit can collide on either.
    INSERT INTO users (company_id, user_id, balance, created_at)
    SELECT DISTINCT ON (i.u) i.c, i.u, 0, i.nw
      FROM unnest(p_company, p_user, p_now) WITH ORDINALITY AS i(c, u, nw, idx)
     WHERE v_claimed[i.idx::INT]
     ORDER BY i.u, i.idx
    ON CONFLICT DO NOTHING;
    -- Users another transaction created since the first lock: lock them too (same order).
    PERFORM 1 FROM users u JOIN unnest(p_user) AS x(uid) ON u.user_id = x.uid ORDER BY u.user_id FOR UPDATE OF u;

    -- One statement decides every claimed item and writes the result. Its outputs go into arrays
    -- rather than being joined back to the input: the planner cannot estimate these CTEs, and a
    -- nested-loop join between two of them is quadratic in the batch size.
    WITH items AS (
        SELECT i.idx::INT AS idx, i.c, i.u, i.e, i.q, i.nw, i.cfg, i.a, i.vd, i.cd, i.ce
          FROM unnest(p_company, p_user, p_event, p_request, p_now, p_cfg, p_amount, p_validity, p_cap_day, p_cap_ever)
               WITH ORDINALITY AS i(c, u, e, q, nw, cfg, a, vd, cd, ce, idx)
         WHERE v_claimed[i.idx::INT]),
    -- Each claimed item with its user's row (locked above); a user of another company makes the
    -- item USER_COMPANY_MISMATCH. For the caps: allocations already in the ledger, and the item's
    -- rank among the batch's items of the same (company, user, event). The caller resolves one
    -- configuration per (company, event) per call, so all items of a group carry the same caps.
    owned AS (
        SELECT it.*, acct.balance AS base, acct.pending_balance AS held, acct.company_id IS DISTINCT FROM it.c AS mismatch,
               CASE WHEN it.cd IS NULL THEN 0 ELSE (
                   SELECT count(*) FROM ledger_entries le
                    WHERE le.company_id = it.c AND le.user_id = it.u AND le.event = it.e AND le.type = 'ALLOCATE'
                      AND le.created_at >= it.nw - it.nw % 86400000) END AS day_n,
               CASE WHEN it.ce IS NULL THEN 0 ELSE (
                   SELECT count(*) FROM ledger_entries le
                    WHERE le.company_id = it.c AND le.user_id = it.u AND le.event = it.e AND le.type = 'ALLOCATE') END AS ever_n,
               row_number() OVER w - 1 AS rank_n,
               min(it.nw - it.nw % 86400000) OVER w <> max(it.nw - it.nw % 86400000) OVER w AS split_days
          FROM items it
          -- LATERAL ... OFFSET 0: one index lookup per item, never a scan of the whole table.
          LEFT JOIN LATERAL (SELECT a.balance, a.pending_balance, a.company_id FROM users a WHERE a.user_id = it.u OFFSET 0) acct ON true
        WINDOW w AS (PARTITION BY it.c, it.u, it.e ORDER BY it.idx ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
    -- Refused items do not count towards later ones, and once a cap refuses one item it refuses
    -- every later one of the group, so exactly the first `allowed_n` items of a group pass.
    capped AS (
        SELECT o.*,
               CASE
                   WHEN o.mismatch THEN 'USER_COMPANY_MISMATCH'
                   WHEN o.cd IS NOT NULL AND o.split_days THEN 'ALONE'
                   WHEN o.cd IS NOT NULL AND o.day_n + least(o.rank_n, o.allowed_n) >= o.cd THEN 'LIMIT_PER_DAY'
                   WHEN o.ce IS NOT NULL AND o.ever_n + least(o.rank_n, o.allowed_n) >= o.ce THEN 'LIMIT_EVER'
                   ELSE 'ALLOCATED'
               END AS cap_status
          FROM (SELECT o.*, greatest(0, least(coalesce(o.cd - o.day_n, 9223372036854775807),
                                              coalesce(o.ce - o.ever_n, 9223372036854775807))) AS allowed_n
                  FROM owned o) o),
    balanced AS (
        SELECT c.*, c.base::NUMERIC + sum(c.a) FILTER (WHERE c.cap_status = 'ALLOCATED')
                   OVER (PARTITION BY c.u ORDER BY c.idx) AS bal
          FROM capped c),
    decided AS (
        SELECT b.*,
               CASE
                   WHEN b.cap_status <> 'ALLOCATED' THEN b.cap_status
                   WHEN b.bal > 9223372036854775807 THEN CASE WHEN v_single THEN 'BALANCE_OVERFLOW' ELSE 'ALONE' END
                   ELSE 'ALLOCATED'
               END AS status
          FROM balanced b),
    refused AS (
        DELETE FROM requests r USING (SELECT d.c, d.q FROM decided d WHERE d.status <> 'ALLOCATED' OFFSET 0) x
         WHERE r.company_id = x.c AND r.request_id = x.q),
    -- Entry ids follow the insertion order, which is item order: the n-th allocated item gets the
    -- n-th smallest new entry id.
    entries AS (
        INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at,
                                    pending_after)
        SELECT d.c, d.u, 'ALLOCATE', d.a, d.bal::BIGINT, d.e, d.q, 'WCC' || (d.cfg + 100000)::TEXT, d.nw, d.nw + d.vd * 86400000, d.held
          FROM decided d WHERE d.status = 'ALLOCATED'
         ORDER BY d.idx
        RETURNING entry_id, company_id, user_id, request_id, coins, balance_after, expires_at, created_at),
    -- A credit pays the user's debt first: its lot keeps what is left (none when nothing is).
    new_lots AS (
        INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at)
        SELECT en.company_id, en.user_id, en.entry_id, least(en.coins, en.balance_after), least(en.coins, en.balance_after), en.expires_at,
               en.created_at
          FROM entries en WHERE en.balance_after > 0),
    balances AS (
        UPDATE users u SET balance = s.bal, lifetime_earned = u.lifetime_earned + s.earned
          FROM (SELECT d.c, d.u, max(d.bal)::BIGINT AS bal, sum(d.a)::BIGINT AS earned
                  FROM decided d WHERE d.status = 'ALLOCATED' GROUP BY d.c, d.u) s
         WHERE u.company_id = s.c AND u.user_id = s.u),
    ranked AS (
        SELECT d.idx, d.status, d.c, d.q,
               CASE d.status WHEN 'ALLOCATED' THEN d.a WHEN 'LIMIT_PER_DAY' THEN d.cd WHEN 'LIMIT_EVER' THEN d.ce END AS coins,
               CASE WHEN d.status = 'ALLOCATED' THEN d.bal::BIGINT END AS bal,
               count(*) FILTER (WHERE d.status = 'ALLOCATED') OVER (ORDER BY d.idx) AS alloc_rank
          FROM decided d)
    SELECT array_agg(r.idx), array_agg(r.status), array_agg(r.coins), array_agg(r.bal), array_agg(r.alloc_rank),
           array_agg(r.c || ' ' || r.q ORDER BY r.idx) FILTER (WHERE r.status = 'ALLOCATED'),
           (SELECT array_agg(en.entry_id ORDER BY en.entry_id) FROM entries en),
           (SELECT array_agg(en.company_id || ' ' || en.request_id ORDER BY en.entry_id) FROM entries en)
      INTO v_idx, v_status, v_coins, v_bal, v_rank, v_allocated_keys, v_entries, v_entry_keys
      FROM ranked r;
    -- The rank mapping (and the balance_after chain) relies on identity values following the
    -- insertion order. PostgreSQL does that, but does not promise it: should it ever not, the
    -- batch fails whole and the caller applies its items one by one.
    IF v_allocated_keys IS DISTINCT FROM v_entry_keys THEN
        RAISE EXCEPTION 'coins_allocate_set: ledger entry ids are not in item order';
    END IF;

    RETURN QUERY
    SELECT d.idx, d.status, d.coins, d.bal, CASE WHEN d.status = 'ALLOCATED' THEN v_entries[d.alloc_rank] END
      FROM unnest(v_idx, v_status, v_coins, v_bal, v_rank) AS d(idx, status, coins, bal, alloc_rank)
     WHERE d.idx IS NOT NULL;

    -- Items not claimed: a replay, a request-id conflict, or no configuration.
    RETURN QUERY
    SELECT i.idx::INT,
           CASE
               WHEN r.kind IS NULL THEN 'CONFIG_NOT_FOUND'
               WHEN r.kind = 'ALLOCATE' AND r.user_id = i.u AND r.event = i.e THEN 'REPLAYED'
               ELSE 'REQUEST_ID_CONFLICT'
           END,
           CASE WHEN r.kind = 'ALLOCATE' AND r.user_id = i.u AND r.event = i.e THEN r.coins END,
           NULL::BIGINT,
           NULL::BIGINT
      FROM unnest(p_company, p_user, p_event, p_request) WITH ORDINALITY AS i(c, u, e, q, idx)
      LEFT JOIN LATERAL (SELECT rq.kind, rq.user_id, rq.event, rq.coins FROM requests rq
                          WHERE rq.company_id = i.c AND rq.request_id = i.q OFFSET 0) r ON true
     WHERE NOT v_claimed[i.idx::INT];
END;
$$;

-- One allocation alone: the same decisions as coins_allocate_set for a batch of one, with a
-- handful of simple statements (cheaper than the set-based plan when there is nothing to share:
-- one transaction per allocation, or a quiet moment). Locks in the same order as the batch
-- function: the user's row, then the request id.
CREATE OR REPLACE FUNCTION coins_allocate_one(
    p_company TEXT, p_user TEXT, p_event TEXT, p_request TEXT, p_now BIGINT,
    p_cfg BIGINT, p_amount BIGINT, p_validity BIGINT, p_cap_day BIGINT, p_cap_ever BIGINT)
RETURNS TABLE (out_idx INT, out_status TEXT, out_coins BIGINT, out_balance BIGINT, out_entry BIGINT)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    prev RECORD;
    acct RECORD;
    v_balance BIGINT;
    v_expires BIGINT;
BEGIN
    out_idx := 1;
    PERFORM 1 FROM users WHERE user_id = p_user FOR UPDATE;
    IF p_cfg IS NOT NULL THEN
        INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at)
        VALUES (p_company, p_request, 'ALLOCATE', p_user, p_event, p_amount, '', p_now)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            INSERT INTO users (company_id, user_id, balance, created_at) VALUES (p_company, p_user, 0, p_now)
            ON CONFLICT DO NOTHING;
            SELECT u.company_id, u.balance, u.pending_balance INTO acct FROM users u WHERE u.user_id = p_user FOR UPDATE;
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
            ELSIF acct.balance > 9223372036854775807 - p_amount THEN
                out_status := 'BALANCE_OVERFLOW';
            END IF;
            IF out_status IS NOT NULL THEN
                DELETE FROM requests WHERE company_id = p_company AND request_id = p_request;
                RETURN NEXT;
                RETURN;
            END IF;
            v_balance := acct.balance + p_amount;
            v_expires := p_now + p_validity * 86400000;
            INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at,
                                        pending_after)
            VALUES (p_company, p_user, 'ALLOCATE', p_amount, v_balance, p_event, p_request, 'WCC' || (p_cfg + 100000)::TEXT, p_now, v_expires,
                    acct.pending_balance)
            RETURNING entry_id INTO out_entry;
            -- A credit pays the user's debt first: its lot keeps what is left (none when nothing is).
            IF v_balance > 0 THEN
                INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at)
                VALUES (p_company, p_user, out_entry, least(p_amount, v_balance), least(p_amount, v_balance), v_expires, p_now);
            END IF;
            UPDATE users SET balance = v_balance, lifetime_earned = lifetime_earned + p_amount
             WHERE company_id = p_company AND user_id = p_user;
            out_status := 'ALLOCATED'; out_coins := p_amount; out_balance := v_balance;
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
