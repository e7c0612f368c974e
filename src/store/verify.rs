//! The ledger invariants `coins verify` checks (README, "How it is built"), in SQL both backends speak: each query returns one text column per problem
//! found, so `coins verify` can print what differs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::as_of::counter_sql;
use super::model::{RECORD_COLUMNS, RecordRow};
use crate::domain::config::DAY_MS;
use crate::domain::tiers::{TierScheme, TierState, qualifying_day};

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
         (SELECT company_id, user_id, SUM(remaining) AS total FROM lots WHERE pending_until IS NULL GROUP BY company_id, user_id) l \
         ON l.company_id = u.company_id AND l.user_id = u.user_id \
         WHERE COALESCE(l.total, 0) <> CASE WHEN u.balance > 0 THEN u.balance ELSE 0 END",
        "balance differs from the coins left in lots less the debt",
    ),
    (
        "SELECT u.company_id || '/' || u.user_id || ': pending ' || CAST(u.pending_balance AS TEXT) || ', entries move ' \
         || CAST(COALESCE(e.total, 0) AS TEXT) || ', held lots hold ' || CAST(COALESCE(l.total, 0) AS TEXT) FROM users u \
         LEFT JOIN (SELECT company_id, user_id, SUM(pending_coins) AS total FROM ledger_entries GROUP BY company_id, user_id) e \
         ON e.company_id = u.company_id AND e.user_id = u.user_id \
         LEFT JOIN (SELECT company_id, user_id, SUM(remaining) AS total FROM lots WHERE pending_until IS NOT NULL GROUP BY company_id, user_id) l \
         ON l.company_id = u.company_id AND l.user_id = u.user_id \
         WHERE u.pending_balance <> COALESCE(e.total, 0) OR u.pending_balance <> COALESCE(l.total, 0) OR u.pending_balance < 0",
        "pending balance differs from its entries or its held lots",
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
        "SELECT company_id || '/' || user_id || ': entry ' || CAST(entry_id AS TEXT) || ' says ' || CAST(pending_after AS TEXT) \
         || ' pending, running sum is ' || CAST(prev + pending_coins AS TEXT) FROM (SELECT entry_id, company_id, user_id, pending_coins, \
         pending_after, LAG(pending_after, 1, 0) OVER (PARTITION BY company_id, user_id ORDER BY entry_id) AS prev FROM ledger_entries) chain \
         WHERE pending_after <> prev + pending_coins",
        "pendingAfter breaks the running sum",
    ),
    (
        "SELECT CAST(l.lot_id AS TEXT) || ' holds ' || CAST(l.remaining AS TEXT) || ' of ' || CAST(l.coins AS TEXT) \
         || ', moves sum to ' || CAST(COALESCE(m.total, 0) AS TEXT) FROM lots l LEFT JOIN \
         (SELECT lot_id, SUM(coins) AS total FROM lot_moves GROUP BY lot_id) m ON m.lot_id = l.lot_id \
         WHERE l.remaining <> l.coins + COALESCE(m.total, 0)",
        "lot remainder differs from its credit and moves",
    ),
    (
        "SELECT CAST(e.entry_id AS TEXT) || ' (' || e.type || ') moves ' || CAST(e.moved AS TEXT) || ', its lots ' \
         || CAST(COALESCE(m.total, 0) + COALESCE(l.total, 0) AS TEXT) || ', the debt ' || CAST(e.debt_delta AS TEXT) FROM \
         (SELECT entry_id, type, coins + pending_coins AS moved, \
           CASE WHEN balance_after < 0 THEN -balance_after ELSE 0 END - CASE WHEN prev < 0 THEN -prev ELSE 0 END AS debt_delta FROM \
          (SELECT entry_id, type, coins, pending_coins, balance_after, \
           LAG(balance_after, 1, 0) OVER (PARTITION BY company_id, user_id ORDER BY entry_id) AS prev FROM ledger_entries) chain) e \
         LEFT JOIN (SELECT entry_id, SUM(coins) AS total FROM lot_moves GROUP BY entry_id) m ON m.entry_id = e.entry_id \
         LEFT JOIN (SELECT entry_id, SUM(coins) AS total FROM lots GROUP BY entry_id) l ON l.entry_id = e.entry_id \
         WHERE e.moved <> COALESCE(m.total, 0) + COALESCE(l.total, 0) - e.debt_delta",
        "entry differs from the lots it opened or touched and the debt it changed",
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
    (
        "SELECT r.company_id || '/' || r.request_id || ': record says ' || CAST(r.coins AS TEXT) || ', entry ' || CAST(e.coins + e.pending_coins AS TEXT) \
         FROM requests r JOIN ledger_entries e ON e.company_id = r.company_id AND e.request_id = r.request_id AND e.type = r.kind \
         WHERE r.kind IN ('ALLOCATE', 'ADJUST') AND r.coins <> ABS(e.coins + e.pending_coins)",
        "allocation or adjustment record differs from its entry",
    ),
    (
        "SELECT company_id || '/' || request_id || ': ' || CAST(coins_canceled AS TEXT) || ' canceled + ' || CAST(coins_reversed AS TEXT) \
         || ' reversed + ' || CAST(coins_waived AS TEXT) || ' waived of ' || CAST(coins AS TEXT) || ' coins, ' \
         || COALESCE(CAST(amount_refunded_minor AS TEXT), '-') || ' refunded of ' || COALESCE(CAST(amount_minor AS TEXT), '-') FROM requests \
         WHERE coins_canceled + coins_reversed + coins_waived > coins OR amount_refunded_minor > amount_minor \
         OR (amount_refunded_minor IS NOT NULL AND amount_minor IS NULL)",
        "returns exceed what the original holds",
    ),
    (
        "SELECT company_id || '/' || event || '/' || order_id || ': ' || CAST(COUNT(*) AS TEXT) || ' live allocations' FROM requests \
         WHERE order_id IS NOT NULL AND state IN ('PENDING', 'ACTIVE', 'ZERO') GROUP BY company_id, event, order_id HAVING COUNT(*) > 1",
        "more than one live allocation for an order",
    ),
    (
        "SELECT r.company_id || '/' || r.request_id || ' (' || r.kind || ' ' || COALESCE(r.state, 'ACTIVE') || '): ' \
         || CAST(r.coins_canceled + r.coins_reversed + r.coins_waived AS TEXT) || ' of ' || CAST(r.coins AS TEXT) || ' ended, its returns moved ' \
         || CAST(COALESCE(x.total, 0) AS TEXT) FROM requests r LEFT JOIN \
         (SELECT company_id, original_request_id, SUM(coins) AS total FROM requests WHERE kind = 'REVERSE' GROUP BY company_id, original_request_id) x \
         ON x.company_id = r.company_id AND x.original_request_id = r.request_id \
         WHERE ((r.kind = 'REDEEM' OR (r.kind = 'ADJUST' AND r.state IS NULL)) AND r.coins_reversed <> COALESCE(x.total, 0)) \
         OR ((r.kind = 'ALLOCATE' OR (r.kind = 'ADJUST' AND r.state IS NOT NULL)) AND r.alias_of IS NULL AND (COALESCE(x.total, 0) > r.coins_canceled + r.coins_reversed \
             OR (r.state IN ('REVERSED', 'CANCELED') AND r.coins_canceled + r.coins_reversed + r.coins_waived < r.coins) \
             OR (COALESCE(r.state, 'ACTIVE') IN ('ACTIVE', 'PENDING') AND r.coins_canceled + r.coins_reversed + r.coins_waived >= r.coins)))",
        "return counters or state disagree with the returns",
    ),
    (
        "SELECT company_id || '/' || original_request_id || ': ' || CAST(COUNT(*) AS TEXT) || ' activations' FROM ledger_entries \
         WHERE type = 'ACTIVATE' GROUP BY company_id, original_request_id HAVING COUNT(*) > 1",
        "an allocation activated more than once",
    ),
    (
        concat!(
            "SELECT u.company_id || '/' || u.user_id || ': earned/redeemed/expired ' || CAST(u.lifetime_earned AS TEXT) || '/' \
             || CAST(u.lifetime_redeemed AS TEXT) || '/' || CAST(u.lifetime_expired AS TEXT) || ', the ledger says ' \
             || CAST(COALESCE(s.earned, 0) AS TEXT) || '/' || CAST(COALESCE(s.redeemed, 0) AS TEXT) || '/' || CAST(COALESCE(s.expired, 0) AS TEXT) \
             FROM users u LEFT JOIN (SELECT e.company_id, e.user_id, SUM(CASE WHEN ",
            counter_sql!(),
            " = 'EARNED' THEN e.coins ELSE 0 END) AS earned, SUM(CASE WHEN ",
            counter_sql!(),
            " = 'REDEEMED' THEN -e.coins ELSE 0 END) AS redeemed, SUM(CASE WHEN e.type = 'EXPIRE' THEN -e.coins ELSE 0 END) AS expired \
             FROM ledger_entries e GROUP BY e.company_id, e.user_id) s ON s.company_id = u.company_id AND s.user_id = u.user_id \
             WHERE u.lifetime_earned <> COALESCE(s.earned, 0) OR u.lifetime_redeemed <> COALESCE(s.redeemed, 0) OR u.lifetime_expired <> COALESCE(s.expired, 0)"
        ),
        "lifetime counters differ from the ledger",
    ),
    (
        "SELECT a.company_id || '/' || a.request_id || ' names ' || a.alias_of FROM requests a WHERE a.alias_of IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM requests r WHERE r.company_id = a.company_id AND r.request_id = a.alias_of AND r.kind = 'ALLOCATE' AND r.alias_of IS NULL)",
        "alias of no allocation",
    ),
    (
        "SELECT r.company_id || '/' || r.request_id || ' (' || COALESCE(r.event, '') || ' at ' || CAST(r.created_at AS TEXT) || ') names ' || r.campaign_id \
         FROM requests r LEFT JOIN campaigns c ON c.company_id = r.company_id AND 'CMP' || CAST(c.seq + 100000 AS TEXT) = r.campaign_id \
         WHERE r.campaign_id IS NOT NULL AND (c.seq IS NULL OR r.created_at < c.starts_at OR r.created_at >= c.ends_at \
         OR (c.events IS NOT NULL AND replace(',' || c.events || ',', ',' || r.event || ',', '') = ',' || c.events || ','))",
        "allocation outside its campaign's window or events",
    ),
    (
        "SELECT r.company_id || '/' || r.user_id || ': ' || CAST(COUNT(*) AS TEXT) || ' allocations under ' || r.campaign_id \
         || ', limit ' || CAST(MIN(c.max_triggers_per_user) AS TEXT) FROM requests r \
         JOIN campaigns c ON c.company_id = r.company_id AND 'CMP' || CAST(c.seq + 100000 AS TEXT) = r.campaign_id \
         WHERE r.campaign_id IS NOT NULL AND c.max_triggers_per_user IS NOT NULL \
         GROUP BY r.company_id, r.user_id, r.campaign_id HAVING COUNT(*) > MIN(c.max_triggers_per_user)",
        "campaign applied more often than its per-user limit",
    ),
    // Every allocation under a campaign with a per-user limit, and only those, carries the mark
    // that indexes it by member for the limit's count.
    (
        "SELECT r.company_id || '/' || r.request_id || ' is marked limited, ' || COALESCE(r.campaign_id, 'under no campaign') FROM requests r \
         WHERE r.campaign_limited AND NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.company_id = r.company_id \
         AND 'CMP' || CAST(c.seq + 100000 AS TEXT) = r.campaign_id AND c.max_triggers_per_user IS NOT NULL) \
         UNION ALL \
         SELECT r.company_id || '/' || r.request_id || ' under ' || r.campaign_id || ', limited per user, is not marked' FROM campaigns c \
         JOIN requests r ON r.company_id = c.company_id AND r.campaign_id = 'CMP' || CAST(c.seq + 100000 AS TEXT) \
         WHERE c.max_triggers_per_user IS NOT NULL AND r.campaign_limited IS NOT TRUE",
        "allocation marked unlike its campaign's per-user limit",
    ),
];

/// What a request's own entries are: the entry of its kind, or for a return of held coins its
/// CANCEL entry. None for an alias, an allocation that earned nothing or an activation of an
/// allocation already active; one for every other request.
const ONE_ENTRY: &str = "request without exactly one ledger entry (none for an alias, an allocation that earned nothing or an activation of an active one)";
macro_rules! expected_entries {
    () => {
        "(CASE WHEN r.alias_of IS NOT NULL OR (r.kind = 'ALLOCATE' AND r.coins = 0) THEN 0 ELSE 1 END, CASE WHEN r.kind = 'ACTIVATE' THEN 0 ELSE 1 END)"
    };
}

/// The checks of PostgreSQL's layout, which indexes entries by request: each request's own
/// entries counted.
pub(crate) const POSTGRES_CHECKS: &[(&str, &str)] = &[(
    concat!(
        "SELECT r.company_id || '/' || r.request_id || ' (' || r.kind || ')' FROM requests r WHERE (SELECT COUNT(*) \
         FROM ledger_entries e WHERE e.company_id = r.company_id AND e.request_id = r.request_id \
         AND (e.type = r.kind OR (r.kind = 'REVERSE' AND e.type = 'CANCEL'))) NOT IN ",
        expected_entries!()
    ),
    ONE_ENTRY,
)];

/// The checks of SQLite's layout, where a request keeps the number of the entry it wrote (it has
/// no index of entries by request). Every own entry is the one its request points to, and every
/// pointer leads to an own entry, so a request has as many own entries as pointers (a second
/// one would not be pointed to), and counting them reads the requests alone. A pointer lost
/// altogether is reported by both checks.
pub(crate) const SQLITE_CHECKS: &[(&str, &str)] = &[
    (
        "SELECT r.company_id || '/' || r.request_id || ' (' || r.kind || ') points to entry ' || COALESCE(CAST(r.entry_id AS TEXT), 'none') \
         || ', its entry is ' || CAST(e.entry_id AS TEXT) FROM ledger_entries e JOIN requests r ON r.company_id = e.company_id \
         AND r.request_id = e.request_id AND (e.type = r.kind OR (r.kind = 'REVERSE' AND e.type = 'CANCEL')) WHERE r.entry_id IS NOT e.entry_id \
         UNION ALL \
         SELECT r.company_id || '/' || r.request_id || ' (' || r.kind || ') points to entry ' || CAST(r.entry_id AS TEXT) \
         || ', which is not its own' FROM requests r LEFT JOIN ledger_entries e ON e.entry_id = r.entry_id WHERE r.entry_id IS NOT NULL \
         AND (e.entry_id IS NULL OR e.company_id <> r.company_id OR e.request_id IS NOT r.request_id \
              OR NOT (e.type = r.kind OR (r.kind = 'REVERSE' AND e.type = 'CANCEL')))",
        "request that does not point to its own ledger entry",
    ),
    (
        concat!(
            "SELECT r.company_id || '/' || r.request_id || ' (' || r.kind || ')' FROM requests r \
             WHERE CASE WHEN r.entry_id IS NULL THEN 0 ELSE 1 END NOT IN ",
            expected_entries!()
        ),
        ONE_ENTRY,
    ),
];

/// The checks of status tiers, made in Rust over what [`TIER_FACTS`] read (the scheme is JSON and
/// a credit's qualifying share is exact integer arithmetic).
pub const TIER_CHECKS: [&str; 3] =
    ["qualifying coins differ from the credits' records", "member below the tier their qualifying coins reach", "tier unknown to the company's scheme"];

/// The name of every check, as `coins verify` prints it before each problem found.
pub fn check_names() -> impl Iterator<Item = &'static str> {
    // PostgreSQL's layout check is one of SQLite's too.
    CHECKS.iter().chain(SQLITE_CHECKS).map(|(_, name)| *name).chain(TIER_CHECKS)
}

/// What the tier checks read, in SQL both backends speak: the schemes; every member's qualifying
/// coins by day (a rolling scheme's);
/// the members of companies with a scheme and anyone with a tier; the time of the latest request
/// or tier change (verify judges tiers at the later of it and the clock: a rolling window only
/// loses coins as time passes, so no earlier instant may be used). The credits come from
/// [`tier_credits_sql`].
pub(crate) const TIER_FACTS: [&str; 4] = [
    "SELECT company_id, scheme FROM tier_schemes",
    "SELECT company_id, user_id, day, coins FROM qualifying_days",
    "SELECT company_id, user_id, tier_code, tier_entered_at, tier_expires_at, tier_cause, tier_floor, tier_floor_reason, qualifying_total FROM users \
     WHERE company_id IN (SELECT company_id FROM tier_schemes) OR tier_code IS NOT NULL OR tier_floor IS NOT NULL OR qualifying_total <> 0",
    "SELECT COALESCE(MAX(t), 0) FROM (SELECT MAX(created_at) AS t FROM requests UNION ALL SELECT MAX(created_at) FROM tier_changes) latest",
];

/// The credits of companies with a scheme: their records, and their company after them.
pub(crate) fn tier_credits_sql(from: &str) -> String {
    format!(
        "SELECT {RECORD_COLUMNS}, r.company_id FROM {from} WHERE r.company_id IN (SELECT company_id FROM tier_schemes) \
         AND r.kind IN ('ALLOCATE', 'ADJUST') AND r.alias_of IS NULL AND r.coins > 0"
    )
}

/// A member's qualifying coins of one UTC day, as the tier checks read them.
pub(crate) struct DayFact {
    pub company: String,
    pub user: String,
    pub day: i64,
    pub coins: i64,
}

/// What [`TIER_FACTS`] read.
pub(crate) struct TierFacts {
    pub schemes: Vec<(String, String)>,
    /// Each credit with its company.
    pub credits: Vec<(RecordRow, String)>,
    pub days: Vec<DayFact>,
    /// Each member with their tier and running total of qualifying coins.
    pub members: Vec<(String, String, TierState, i64)>,
    pub latest_ms: i64,
}

/// The tier checks: every member's running total of qualifying coins is what their credits'
/// records say and, under a rolling scheme, so is each of their days (every credit counted on its
/// activation day; a lifetime scheme keeps none); every member is at least in the tier their
/// qualifying coins reach now; every stored tier code is one of the scheme's.
pub(crate) fn tier_problems(facts: &TierFacts, now_ms: i64) -> Vec<String> {
    let [counted_wrong, below, unknown] = TIER_CHECKS;
    let now_ms = now_ms.max(facts.latest_ms);
    let mut problems = Vec::new();
    let mut schemes = HashMap::new();
    for (company, text) in &facts.schemes {
        match TierScheme::parse(text) {
            Some(s) => {
                schemes.insert(company.as_str(), s);
            }
            None => problems.push(format!("{unknown}: {company}: the scheme is unreadable")),
        }
    }
    // Each member's days as stored, and as the records say (rolling schemes only).
    let mut stored: BTreeMap<(&str, &str, i64), i64> = BTreeMap::new();
    for d in &facts.days {
        *stored.entry((d.company.as_str(), d.user.as_str(), d.day)).or_default() += d.coins;
    }
    let mut said: BTreeMap<(&str, &str, i64), i64> = BTreeMap::new();
    let mut totals: HashMap<(&str, &str), i64> = HashMap::new();
    for (row, company) in &facts.credits {
        let Some((at, q)) = row.qualifying_with(row.returned()).filter(|(_, q)| *q != 0) else { continue };
        *totals.entry((company.as_str(), row.user.as_str())).or_default() += q;
        if schemes.get(company.as_str()).is_some_and(TierScheme::dated) {
            *said.entry((company.as_str(), row.user.as_str(), qualifying_day(at))).or_default() += q;
        }
    }
    let keys: BTreeSet<(&str, &str, i64)> = stored.keys().chain(said.keys()).copied().collect();
    for key @ (company, user, day) in keys {
        let (counted, expected) = (stored.get(&key).copied().unwrap_or(0), said.get(&key).copied().unwrap_or(0));
        if counted != expected {
            let date = crate::clock::rfc3339(day.saturating_mul(DAY_MS));
            let date = date.get(..10).map_or_else(|| format!("day {day}"), str::to_owned);
            problems.push(format!("{counted_wrong}: {company}/{user} on {date}: the records say {expected}, counted {counted}"));
        }
    }
    for (company, user, _, total) in &facts.members {
        let expected = totals.get(&(company.as_str(), user.as_str())).copied().unwrap_or(0);
        if *total != expected {
            problems.push(format!("{counted_wrong}: {company}/{user}: a running total of {total}, the records say {expected}"));
        }
    }
    for (company, user, state, total) in &facts.members {
        let Some(scheme) = schemes.get(company.as_str()) else {
            problems.push(format!("{unknown}: {company}/{user}: a tier in a company without a scheme"));
            continue;
        };
        for code in [&state.code, &state.floor].into_iter().flatten() {
            if scheme.index_of(Some(code)).is_none() {
                problems.push(format!("{unknown}: {company}/{user}: {code}"));
            }
        }
        let q: i64 = match scheme.window_start(now_ms) {
            None => *total,
            Some(since) => {
                stored.range((company.as_str(), user.as_str(), qualifying_day(since))..=(company.as_str(), user.as_str(), i64::MAX)).map(|(_, c)| c).sum()
            }
        };
        let (is, reached) = (scheme.current(state), scheme.reached(q));
        if is < reached {
            problems.push(format!("{below}: {company}/{user}: in {}, {q} qualifying coins reach {}", scheme.tiers[is].code, scheme.tiers[reached].code));
        }
    }
    problems
}
