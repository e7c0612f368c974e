//! Balances at a past instant, read back from the ledger (a balances export with a past `asOf`),
//! in SQL both backends speak (`?N` placeholders; PostgreSQL numbers them `$N`).
//!
//! At an instant T a user's account is what the entries in effect at T say — an entry written
//! before T, or an activation written later whose hold had ended by T (its `effectiveAt`) — read
//! as a read at T would have shown it: held coins whose hold had ended count as spendable, and
//! coins past expiry as expired, even where the sweeper wrote that later. The lots say the rest:
//! a lot's coins at T are its credit plus the moves of the entries written before T (what a read
//! at T saw in the lot: an activation written later had not paid any debt from it yet). So a past
//! `asOf` gives the very rows a balances export made at that instant.

/// Whether entry `e` is in effect at the instant `?3` (see above), as SQL text.
macro_rules! in_effect_sql {
    ($e:literal, $at:literal) => {
        concat!("(", $e, ".created_at < ", $at, " OR ", $e, ".effective_at <= ", $at, ")")
    };
}

use super::model::ExportBalance;

/// The counter an entry `e` counts in, as SQL text: the SQL form of
/// [`crate::domain::ledger::counter_of`] (`EARNED`, `REDEEMED` or `EXPIRED`).
macro_rules! counter_sql {
    () => {
        "(CASE WHEN e.type = 'EXPIRE' THEN 'EXPIRED' WHEN e.type = 'REDEEM' OR (e.type = 'REVERSE' AND EXISTS \
         (SELECT 1 FROM requests o WHERE o.company_id = e.company_id AND o.request_id = e.original_request_id AND o.kind = 'REDEEM')) \
         THEN 'REDEEMED' ELSE 'EARNED' END)"
    };
}
pub(crate) use counter_sql;

/// A page of users that existed before `?3` (after `?2`, at most `?4`, of company `?1`) with what
/// their entries in effect before `?3` sum to: balance, pending, earned, redeemed, expired.
pub(crate) const PAST_SUMS_SQL: &str = concat!(
    "SELECT u.user_id, CAST(COALESCE(SUM(e.coins), 0) AS BIGINT), CAST(COALESCE(SUM(e.pending_coins), 0) AS BIGINT), ",
    "CAST(COALESCE(SUM(CASE WHEN ",
    counter_sql!(),
    " = 'EARNED' THEN e.coins ELSE 0 END), 0) AS BIGINT), ",
    "CAST(COALESCE(SUM(CASE WHEN ",
    counter_sql!(),
    " = 'REDEEMED' THEN -e.coins ELSE 0 END), 0) AS BIGINT), ",
    "CAST(COALESCE(SUM(CASE WHEN e.type = 'EXPIRE' THEN -e.coins ELSE 0 END), 0) AS BIGINT) ",
    "FROM (SELECT company_id, user_id FROM users WHERE company_id = ?1 AND user_id > ?2 AND created_at < ?3 ORDER BY user_id LIMIT ?4) u ",
    "LEFT JOIN ledger_entries e ON e.company_id = u.company_id AND e.user_id = u.user_id AND ",
    in_effect_sql!("e", "?3"),
    " ",
    "GROUP BY u.user_id ORDER BY u.user_id"
);

/// The lots of company `?1`'s users in `(?2, ?3]` that held coins at `?4` and say something at
/// that instant (an expiry, or a hold that had ended): the user, the expiry (NULL: never), the coins, whether it was still held then (1: no activation in effect yet), and
/// whether it is still held now though its hold had ended by `?4` (not activated yet). The page's
/// activations are looked up once, not per lot.
pub(crate) const PAST_LOTS_SQL: &str = concat!(
    "SELECT user_id, expires_at, remaining, held, hold_ended FROM ( ",
    "SELECT c.user_id, l.expires_at, CAST(l.coins + COALESCE((SELECT SUM(m.coins) FROM lot_moves m JOIN ledger_entries me ON me.entry_id = m.entry_id ",
    "WHERE m.lot_id = l.lot_id AND me.created_at < ?4), 0) AS BIGINT) AS remaining, ",
    "CAST(CASE WHEN c.pending_coins > 0 AND a.original_request_id IS NULL THEN 1 ELSE 0 END AS BIGINT) AS held, ",
    "CAST(CASE WHEN l.pending_until <= ?4 THEN 1 ELSE 0 END AS BIGINT) AS hold_ended ",
    "FROM ledger_entries c JOIN lots l ON l.entry_id = c.entry_id ",
    "LEFT JOIN (SELECT DISTINCT ae.user_id, ae.original_request_id FROM ledger_entries ae WHERE ae.company_id = ?1 AND ae.user_id > ?2 ",
    "AND ae.user_id <= ?3 AND ae.type = 'ACTIVATE' AND ",
    in_effect_sql!("ae", "?4"),
    ") a ON a.user_id = c.user_id AND a.original_request_id = c.request_id ",
    "WHERE c.company_id = ?1 AND c.user_id > ?2 AND c.user_id <= ?3 AND c.created_at < ?4) x ",
    // A lot without an expiry matters only while its ended hold awaits activation.
    "WHERE remaining > 0 AND (expires_at IS NOT NULL OR (held = 1 AND hold_ended = 1))"
);

/// `?N` placeholders as PostgreSQL's `$N` (a `?` not followed by a digit stays as it is).
pub(crate) fn numbered_for_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) { '$' } else { c });
    }
    out
}

/// A user's entries in effect before the instant, summed: balance, pending, earned, redeemed,
/// expired.
pub type PastSums = [i64; 5];

/// A lot that held coins at the instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotAt {
    pub user: String,
    /// `None`: never expires.
    pub expires_at: Option<i64>,
    pub remaining: i64,
    /// Created held and not activated by the instant.
    pub held: bool,
    /// Still held now, though its hold had ended by the instant.
    pub hold_ended: bool,
}

/// The rows of a page at `at_ms`: each user's sums with that user's lots.
pub fn rows_at(sums: Vec<(String, PastSums)>, lots: Vec<LotAt>, at_ms: i64) -> Vec<ExportBalance> {
    let mut by_user: std::collections::HashMap<String, Vec<LotAt>> = std::collections::HashMap::new();
    for lot in lots {
        by_user.entry(lot.user.clone()).or_default().push(lot);
    }
    sums.into_iter()
        .map(|(user, sums)| {
            let lots = by_user.remove(&user).unwrap_or_default();
            balance_at(user, sums, &lots, at_ms)
        })
        .collect()
}

/// A user's row at `at_ms` from its sums and its lots (`lots`: this user's only).
pub fn balance_at(user: String, sums: PastSums, lots: &[LotAt], at_ms: i64) -> ExportBalance {
    let spendable = |l: &&LotAt| !l.held || l.hold_ended;
    // Held coins whose hold had ended, not activated yet: spendable at the instant.
    let held: i64 = lots.iter().filter(|l| l.held && l.hold_ended).map(|l| l.remaining).sum();
    let (past, ahead): (Vec<&LotAt>, Vec<&LotAt>) = lots.iter().filter(spendable).filter(|l| l.expires_at.is_some()).partition(|l| l.expires_at <= Some(at_ms));
    let gone: i64 = past.iter().map(|l| l.remaining).sum();
    let next_at = ahead.iter().filter_map(|l| l.expires_at).min();
    let next_coins = next_at.map(|at| ahead.iter().filter(|l| l.expires_at == Some(at)).map(|l| l.remaining).sum());
    ExportBalance::from_stored(user, sums, held, gone, next_at, next_coins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::{EntryKind, Lifetime, counter_of};

    /// The SQL form of the counter rule answers as the rule does, for every kind of entry.
    #[test]
    fn the_counter_sql_is_the_counter_rule() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE requests (company_id TEXT, request_id TEXT, kind TEXT); \
             CREATE TABLE ledger_entries (company_id TEXT, type TEXT, original_request_id TEXT); \
             INSERT INTO requests VALUES ('C', 'R', 'REDEEM'), ('C', 'A', 'ALLOCATE'), ('C', 'D', 'ADJUST');",
        )
        .unwrap();
        let kinds = [EntryKind::Allocate, EntryKind::Activate, EntryKind::Cancel, EntryKind::Redeem, EntryKind::Reverse, EntryKind::Expire, EntryKind::Adjust];
        for kind in kinds {
            for (original, of_redemption) in [(None, false), (Some("R"), true), (Some("A"), false), (Some("D"), false)] {
                let sql = format!("SELECT {} FROM ledger_entries e", counter_sql!());
                conn.execute("DELETE FROM ledger_entries", []).unwrap();
                conn.execute("INSERT INTO ledger_entries VALUES ('C', ?1, ?2)", rusqlite::params![kind.as_str(), original]).unwrap();
                let got: String = conn.query_row(&sql, [], |r| r.get(0)).unwrap();
                let want = match counter_of(kind, of_redemption && kind == EntryKind::Reverse) {
                    Lifetime::Earned => "EARNED",
                    Lifetime::Redeemed => "REDEEMED",
                    Lifetime::Expired => "EXPIRED",
                };
                assert_eq!(got, want, "{kind:?} of {original:?}");
            }
        }
    }

    #[test]
    fn placeholders_are_numbered_for_postgres_and_nothing_else_changes() {
        assert_eq!(numbered_for_postgres("a = ?1 AND b <= ?12 AND c ? 'k'"), "a = $1 AND b <= $12 AND c ? 'k'");
        for sql in [PAST_SUMS_SQL, PAST_LOTS_SQL] {
            assert!(!numbered_for_postgres(sql).contains('?'), "{sql}");
        }
    }

    #[test]
    fn a_past_row_counts_ended_holds_as_spendable_and_lapsed_lots_as_expired() {
        let lot = |expires_at: Option<i64>, remaining, held, hold_ended| LotAt { user: "U".into(), expires_at, remaining, held, hold_ended };
        let lots = [
            lot(Some(50), 10, false, false),
            lot(Some(200), 7, false, false),
            lot(Some(200), 3, true, true),
            lot(Some(150), 4, true, false),
            lot(Some(300), 5, false, false),
            lot(None, 2, true, true),
            lot(None, 6, false, false),
        ];
        let row = balance_at("U".into(), [32, 9, 42, 10, 0], &lots, 100);
        // 32 in effect, +3 and +2 whose holds ended (one never expires), −10 lapsed at 50; the
        // held 4 stay pending.
        assert_eq!(
            row,
            ExportBalance {
                user: "U".into(),
                balance: 27,
                pending_balance: 4,
                lifetime_earned: 47,
                lifetime_redeemed: 10,
                lifetime_expired: 10,
                next_expiry_at_ms: Some(200),
                next_expiry_coins: Some(10),
            }
        );
    }
}
