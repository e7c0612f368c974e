-- A tiered allocation's qualifying coins written with its balance. For a company with a tier
-- scheme the application called coins_allocate_set (0016), then updated the same members' rows
-- again to add their qualifying coins, and on a ROLLING basis added to their day rows in a third
-- statement: each member's row got two new versions per batch instead of one. This overload takes,
-- per item, the qualifying coins an allocated item adds to its member's running total
-- (`p_qualify`, NULL or 0 for none) and, on a ROLLING basis, the UTC day they count on
-- (`p_qualify_day`, NULL on a LIFETIME basis), adds them in the balance's own update and the day
-- rows in the same statement. The application read each member's running total under the lock
-- before the call, so it knows the total after each item without reading it back. What the coins
-- and the day are stays the application's rule; only an allocated item adds them, as an
-- allocation answered otherwise earns nothing.
-- Everything else is 0016's, unchanged. The 21-argument overload of 0016 stays for binaries of
-- the previous release during a rolling upgrade (they add the qualifying coins themselves).

CREATE FUNCTION coins_allocate_set(
    p_company TEXT[], p_user TEXT[], p_event TEXT[], p_request TEXT[], p_now BIGINT[],
    p_cfg TEXT[], p_coins BIGINT[], p_expires BIGINT[], p_cap_day BIGINT[], p_cap_ever BIGINT[],
    p_hold_until BIGINT[], p_state TEXT[], p_zero_reason TEXT[], p_base BIGINT[], p_order TEXT[],
    p_amount_minor BIGINT[], p_currency TEXT[], p_calculation TEXT[], p_campaign TEXT[],
    p_activated_at BIGINT[], p_record_expires BIGINT[], p_qualify BIGINT[], p_qualify_day BIGINT[])
RETURNS TABLE (out_idx INT, out_status TEXT, out_coins BIGINT, out_balance BIGINT, out_entry BIGINT)
LANGUAGE plpgsql
-- As in 0003: generic plans cached per connection, and no sequential scans (every access here
-- has an index; a generic plan made on small tables would otherwise scan them forever after).
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
    v_lot BIGINT[];
    v_entries BIGINT[];
    v_allocated_keys TEXT[];
    v_entry_keys TEXT[];
BEGIN
    -- Existing users first, in user_id order, so concurrent batches cannot deadlock on them.
    -- (A join with unnest, not `= ANY`: a generic plan for `= ANY ($1)` scans the whole table.)
    PERFORM 1 FROM users u JOIN unnest(p_user) AS x(uid) ON u.user_id = x.uid ORDER BY u.user_id FOR UPDATE OF u;

    -- Claim the request ids of items that have a configuration, in key order, each with its
    -- record. A concurrent duplicate in another transaction waits here for that one's commit,
    -- then is not claimed; so does an item whose order id a live allocation holds (the caller
    -- never puts two items of one order id in one call).
    WITH ins AS (
        INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, order_id, state, zero_reason,
                              coin_config_id, base_coins, amount_minor, amount_refunded_minor, currency, calculation, activated_at, expires_at,
                              activates_at, campaign_id)
        SELECT t.c, t.q, 'ALLOCATE', t.u, t.e, t.a, '', t.nw, t.o, t.st, t.zr, CASE WHEN t.st IS NOT NULL THEN t.cfg END, t.bc, t.am,
               CASE WHEN t.am IS NOT NULL THEN 0 END, t.cur, t.calc, t.acd, t.rx, t.h, t.cmp
          FROM unnest(p_company, p_request, p_user, p_event, p_coins, p_now, p_cfg, p_order, p_state, p_zero_reason, p_base, p_amount_minor,
                      p_currency, p_calculation, p_activated_at, p_record_expires, p_hold_until, p_campaign)
               AS t(c, q, u, e, a, nw, cfg, o, st, zr, bc, am, cur, calc, acd, rx, h, cmp)
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

    -- One statement decides every claimed item and writes its entry and balances. Its outputs go
    -- into arrays rather than being joined back to the input: the planner cannot estimate these
    -- CTEs, and a nested-loop join between two of them is quadratic in the batch size.
    WITH items AS (
        SELECT i.idx::INT AS idx, i.c, i.u, i.e, i.q, i.nw, i.cfg, i.a, i.x, i.cd, i.ce, i.h, i.o, i.am, greatest(coalesce(i.qf, 0), 0) AS qf, i.qd,
               CASE WHEN i.h IS NULL THEN i.a ELSE 0 END AS spendable, CASE WHEN i.h IS NULL THEN 0 ELSE i.a END AS held_now
          FROM unnest(p_company, p_user, p_event, p_request, p_now, p_cfg, p_coins, p_expires, p_cap_day, p_cap_ever, p_hold_until, p_order,
                      p_amount_minor, p_qualify, p_qualify_day)
               WITH ORDINALITY AS i(c, u, e, q, nw, cfg, a, x, cd, ce, h, o, am, qf, qd, idx)
         WHERE v_claimed[i.idx::INT]),
    -- Each claimed item with its user's row (locked above); a user of another company makes the
    -- item USER_COMPANY_MISMATCH. For the caps: allocations already in the ledger, and how many
    -- earlier items of the batch with the same (company, user, event) write an entry (one that
    -- earned nothing writes none, so it counts towards no cap). The caller resolves one
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
               coalesce(count(*) FILTER (WHERE it.a > 0) OVER before, 0) AS rank_n,
               min(it.nw - it.nw % 86400000) OVER w <> max(it.nw - it.nw % 86400000) OVER w AS split_days
          FROM items it
          -- LATERAL ... OFFSET 0: one index lookup per item, never a scan of the whole table.
          LEFT JOIN LATERAL (SELECT a.balance, a.pending_balance, a.company_id FROM users a WHERE a.user_id = it.u OFFSET 0) acct ON true
        WINDOW w AS (PARTITION BY it.c, it.u, it.e ORDER BY it.idx ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
               before AS (PARTITION BY it.c, it.u, it.e ORDER BY it.idx ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
    -- Refused items do not count towards later ones, and once a cap refuses one item it refuses
    -- every later one of the group, so exactly the first `allowed_n` entries of a group pass.
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
    -- The spendable and the held balance after each item, chained per user in item order.
    balanced AS (
        SELECT c.*,
               c.base::NUMERIC + sum(c.spendable) FILTER (WHERE c.cap_status = 'ALLOCATED') OVER (PARTITION BY c.u ORDER BY c.idx) AS bal,
               c.held::NUMERIC + sum(c.held_now) FILTER (WHERE c.cap_status = 'ALLOCATED') OVER (PARTITION BY c.u ORDER BY c.idx) AS pend
          FROM capped c),
    decided AS (
        SELECT b.*,
               CASE
                   WHEN b.cap_status <> 'ALLOCATED' THEN b.cap_status
                   WHEN b.a = 0 THEN 'ZERO'
                   WHEN b.bal > 9223372036854775807 OR b.pend > 9223372036854775807 THEN CASE WHEN v_single THEN 'BALANCE_OVERFLOW' ELSE 'ALONE' END
                   ELSE 'ALLOCATED'
               END AS status
          FROM balanced b),
    refused AS (
        DELETE FROM requests r USING (SELECT d.c, d.q FROM decided d WHERE d.status NOT IN ('ALLOCATED', 'ZERO') OFFSET 0) x
         WHERE r.company_id = x.c AND r.request_id = x.q),
    -- Entry ids follow the insertion order, which is item order: the n-th allocated item gets the
    -- n-th smallest new entry id.
    entries AS (
        INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at,
                                    order_id, amount_minor, pending_coins, pending_after)
        SELECT d.c, d.u, 'ALLOCATE', d.spendable, d.bal::BIGINT, d.e, d.q, d.cfg, d.nw, d.x, d.o, d.am, d.held_now, d.pend::BIGINT
          FROM decided d WHERE d.status = 'ALLOCATED'
         ORDER BY d.idx
        RETURNING entry_id, company_id, request_id),
    -- The qualifying coins go into the same update as the balance: one new row version per member.
    balances AS (
        UPDATE users u SET balance = s.bal, pending_balance = s.pend, lifetime_earned = u.lifetime_earned + s.earned,
                           qualifying_total = u.qualifying_total + s.qual
          FROM (SELECT d.c, d.u, max(d.bal)::BIGINT AS bal, max(d.pend)::BIGINT AS pend, sum(d.spendable)::BIGINT AS earned,
                       sum(d.qf)::BIGINT AS qual
                  FROM decided d WHERE d.status = 'ALLOCATED' GROUP BY d.c, d.u) s
         WHERE u.company_id = s.c AND u.user_id = s.u),
    -- A ROLLING member's coins of the day, one row per member and day (an allocated item's
    -- member is of its company, so each pair occurs once), in key order.
    days AS (
        INSERT INTO qualifying_days (user_id, day, company_id, coins)
        SELECT d.u, d.qd, min(d.c), sum(d.qf)::BIGINT
          FROM decided d WHERE d.status = 'ALLOCATED' AND d.qf > 0 AND d.qd IS NOT NULL
         GROUP BY d.u, d.qd
         ORDER BY d.u, d.qd
        ON CONFLICT (user_id, day) DO UPDATE SET coins = qualifying_days.coins + excluded.coins),
    ranked AS (
        SELECT d.idx, d.status, d.c, d.q,
               CASE d.status WHEN 'ALLOCATED' THEN d.a WHEN 'ZERO' THEN 0 WHEN 'LIMIT_PER_DAY' THEN d.cd WHEN 'LIMIT_EVER' THEN d.ce END AS coins,
               CASE WHEN d.status = 'ALLOCATED' THEN d.bal::BIGINT END AS bal,
               count(*) FILTER (WHERE d.status = 'ALLOCATED') OVER (ORDER BY d.idx) AS alloc_rank,
               -- A held credit keeps all its coins in its lot; a spendable one pays the user's
               -- debt first and keeps what is left (none when nothing is).
               CASE WHEN d.status <> 'ALLOCATED' THEN 0
                    WHEN d.h IS NOT NULL THEN d.a
                    ELSE greatest(0, least(d.a, d.bal))::BIGINT END AS lot
          FROM decided d)
    SELECT array_agg(r.idx), array_agg(r.status), array_agg(r.coins), array_agg(r.bal), array_agg(r.alloc_rank), array_agg(r.lot),
           array_agg(r.c || ' ' || r.q ORDER BY r.idx) FILTER (WHERE r.status = 'ALLOCATED'),
           (SELECT array_agg(en.entry_id ORDER BY en.entry_id) FROM entries en),
           (SELECT array_agg(en.company_id || ' ' || en.request_id ORDER BY en.entry_id) FROM entries en)
      INTO v_idx, v_status, v_coins, v_bal, v_rank, v_lot, v_allocated_keys, v_entries, v_entry_keys
      FROM ranked r;
    -- The rank mapping (and the balance_after chain) relies on identity values following the
    -- insertion order. PostgreSQL does that, but does not promise it: should it ever not, the
    -- batch fails whole and the caller applies its items one by one.
    IF v_allocated_keys IS DISTINCT FROM v_entry_keys THEN
        RAISE EXCEPTION 'coins_allocate_set: ledger entry ids are not in item order';
    END IF;

    -- Each allocated item's lot, beside its entry.
    INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at, pending_until)
    SELECT p_company[d.idx], p_user[d.idx], v_entries[d.alloc_rank], d.lot, d.lot, p_expires[d.idx], p_now[d.idx], p_hold_until[d.idx]
      FROM unnest(v_idx, v_status, v_rank, v_lot) AS d(idx, status, alloc_rank, lot)
     WHERE d.status = 'ALLOCATED' AND d.lot > 0
     ORDER BY d.idx;

    RETURN QUERY
    SELECT d.idx, d.status, d.coins, d.bal, CASE WHEN d.status = 'ALLOCATED' THEN v_entries[d.alloc_rank] END
      FROM unnest(v_idx, v_status, v_coins, v_bal, v_rank) AS d(idx, status, coins, bal, alloc_rank)
     WHERE d.idx IS NOT NULL;

    -- Items not claimed: a replay, a request-id conflict, an order id a live allocation holds,
    -- or no configuration.
    RETURN QUERY
    SELECT i.idx::INT,
           CASE
               WHEN r.kind IS NULL AND i.cfg IS NOT NULL THEN 'ORDER_HELD'
               WHEN r.kind IS NULL THEN 'CONFIG_NOT_FOUND'
               WHEN r.kind = 'ALLOCATE' AND r.user_id = i.u AND r.event = i.e THEN 'REPLAYED'
               ELSE 'REQUEST_ID_CONFLICT'
           END,
           CASE WHEN r.kind = 'ALLOCATE' AND r.user_id = i.u AND r.event = i.e THEN r.coins END,
           NULL::BIGINT,
           NULL::BIGINT
      FROM unnest(p_company, p_user, p_event, p_request, p_cfg) WITH ORDINALITY AS i(c, u, e, q, cfg, idx)
      LEFT JOIN LATERAL (SELECT rq.kind, rq.user_id, rq.event, rq.coins FROM requests rq
                          WHERE rq.company_id = i.c AND rq.request_id = i.q OFFSET 0) r ON true
     WHERE NOT v_claimed[i.idx::INT];
END;
$$;
