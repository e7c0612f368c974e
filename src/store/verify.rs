//! SPEC §6 checks, in SQL both backends speak: each query returns one text column per problem
//! found, so `coins verify` can print what differs.

pub(crate) const CHECKS: &[(&str, &str)] = &[
    (
        "SELECT u.company_id || '/' || u.user_id || ': balance ' || CAST(u.balance AS TEXT) || ', entries sum to ' \
         || CAST(COALESCE(e.total, 0) AS TEXT) FROM users u LEFT JOIN \
         (SELECT company_id, user_id, SUM(coins) AS total FROM ledger_entries GROUP BY company_id, user_id) e \
         ON e.company_id = u.company_id AND e.user_id = u.user_id WHERE u.balance <> COALESCE(e.total, 0)",
        "balance differs from the sum of the ledger",
    ),
    (
        "SELECT u.company_id || '/' || u.user_id || ': balance ' || CAST(u.balance AS TEXT) || ', lots hold ' \
         || CAST(COALESCE(l.total, 0) AS TEXT) FROM users u LEFT JOIN \
         (SELECT company_id, user_id, SUM(remaining) AS total FROM lots GROUP BY company_id, user_id) l \
         ON l.company_id = u.company_id AND l.user_id = u.user_id WHERE u.balance <> COALESCE(l.total, 0)",
        "balance differs from the coins left in lots",
    ),
    (
        "SELECT e.company_id || '/' || e.user_id || ': entry ' || CAST(e.entry_id AS TEXT) FROM ledger_entries e \
         WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.company_id = e.company_id AND u.user_id = e.user_id)",
        "ledger entry of a user with no account",
    ),
    (
        "SELECT company_id || '/' || user_id || ': entry ' || CAST(entry_id AS TEXT) || ' says ' || CAST(balance_after AS TEXT) \
         || ', running sum is ' || CAST(prev + coins AS TEXT) FROM (SELECT entry_id, company_id, user_id, coins, balance_after, \
         LAG(balance_after, 1, 0) OVER (PARTITION BY company_id, user_id ORDER BY entry_id) AS prev FROM ledger_entries) chain \
         WHERE balance_after <> prev + coins",
        "balanceAfter breaks the running sum",
    ),
    (
        "SELECT r.company_id || '/' || r.request_id || ' (' || r.kind || ')' FROM requests r WHERE (SELECT COUNT(*) \
         FROM ledger_entries e WHERE e.company_id = r.company_id AND e.request_id = r.request_id AND e.type = r.kind) <> 1",
        "request without exactly one ledger entry",
    ),
    (
        "SELECT CAST(l.lot_id AS TEXT) || ' holds ' || CAST(l.remaining AS TEXT) || ' of ' || CAST(l.coins AS TEXT) \
         || ', moves sum to ' || CAST(COALESCE(m.total, 0) AS TEXT) FROM lots l LEFT JOIN \
         (SELECT lot_id, SUM(coins) AS total FROM lot_moves GROUP BY lot_id) m ON m.lot_id = l.lot_id \
         WHERE l.remaining <> l.coins + COALESCE(m.total, 0)",
        "lot remainder differs from its credit and moves",
    ),
    (
        "SELECT CAST(e.entry_id AS TEXT) || ' (' || e.type || ') moves ' || CAST(e.coins AS TEXT) || ', its lot moves sum to ' \
         || CAST(COALESCE(m.total, 0) AS TEXT) FROM ledger_entries e LEFT JOIN \
         (SELECT entry_id, SUM(coins) AS total FROM lot_moves GROUP BY entry_id) m ON m.entry_id = e.entry_id \
         WHERE e.type <> 'ALLOCATE' AND e.coins <> COALESCE(m.total, 0)",
        "debit or restore differs from the lots it touched",
    ),
    (
        "SELECT e.company_id || '/' || e.request_id || ': entry ' || CAST(e.entry_id AS TEXT) FROM ledger_entries e \
         WHERE e.request_id IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM requests r WHERE r.company_id = e.company_id AND r.request_id = e.request_id)",
        "ledger entry without its request",
    ),
    (
        "SELECT COALESCE(l.company_id, d.company_id) || ' day ' || CAST(COALESCE(l.day, d.day) AS TEXT) || ' ' || COALESCE(l.type, d.type) \
         || ' ' || COALESCE(l.event, d.event) || ': ledger ' || CAST(COALESCE(l.credit, 0) AS TEXT) || '/' || CAST(COALESCE(l.debit, 0) AS TEXT) \
         || ' in ' || CAST(COALESCE(l.entries, 0) AS TEXT) || ' entries, roll-up ' || CAST(COALESCE(d.credit, 0) AS TEXT) || '/' \
         || CAST(COALESCE(d.debit, 0) AS TEXT) || ' in ' || CAST(COALESCE(d.entries, 0) AS TEXT) FROM \
         (SELECT company_id, created_at / 86400000 AS day, COALESCE(event, '') AS event, type, SUM(CASE WHEN coins > 0 THEN coins ELSE 0 END) AS credit, \
          SUM(CASE WHEN coins < 0 THEN -coins ELSE 0 END) AS debit, COUNT(*) AS entries FROM ledger_entries GROUP BY 1, 2, 3, 4) l \
         FULL OUTER JOIN (SELECT company_id, day, event, type, SUM(credit) AS credit, SUM(debit) AS debit, SUM(entries) AS entries \
          FROM ledger_daily GROUP BY 1, 2, 3, 4) d \
         ON d.company_id = l.company_id AND d.day = l.day AND d.event = l.event AND d.type = l.type \
         WHERE COALESCE(l.credit, 0) <> COALESCE(d.credit, 0) OR COALESCE(l.debit, 0) <> COALESCE(d.debit, 0) OR COALESCE(l.entries, 0) <> COALESCE(d.entries, 0)",
        "daily roll-up differs from the ledger",
    ),
];

/// The name of every check, as `coins verify` prints it before each problem found.
pub fn check_names() -> impl Iterator<Item = &'static str> {
    CHECKS.iter().map(|(_, name)| *name)
}
