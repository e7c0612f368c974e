//! What is read back on SQLite: balances (cached), user summaries, history and `verify`.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::RECORD_FROM;
use super::SqliteStore;
use crate::domain::config::DAY_MS;
use crate::domain::ledger::EntryKind;
use crate::domain::report::Moved;
use crate::domain::{CompanyId, EventName, OrderId, RequestId, UserId};
use crate::store::as_of;
use crate::store::model::{RECORD_COLUMNS, RecordKinds, RecordRow};
use crate::store::verify::{CHECKS, DayFact, SQLITE_CHECKS, TIER_FACTS, TierFacts, tier_credits_sql, tier_problems};
use crate::store::{
    AllocationRecord, CompanyScope, DailyTotals, EXPIRING_SOON_DAYS, EntryExtra, ExportBalance, ExportEntry, LedgerEntry, Outstanding, ReportStore, StoreError,
    StoreResult, SummaryLists, Unwritten, UserBalance, UserSummary, VerifyReport,
};

/// The visible balance — the stored balance, plus held lots whose hold has ended and less lots
/// past expiry, neither written yet — and when it will next change by itself (the soonest lot
/// expiry or end of a hold). Held lots are looked at only when the account holds any: its
/// pending balance is exactly what its held lots hold (`coins verify` checks it), so for a user
/// with none, most users, no walk over all their lots (which made the first read of each user
/// cost a third of the balance benchmark's throughput at 1M entries; docs/BENCHMARKS.md).
const BALANCE_SQL: &str = "SELECT u.company_id, \
     u.balance + COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND u.pending_balance <> 0 AND l.remaining > 0 AND l.pending_until <= ?2), 0) \
               - COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND l.remaining > 0 AND l.expires_at <= ?2), 0), \
     (SELECT MIN(t.at) FROM (SELECT l.expires_at AS at FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                                AND l.remaining > 0 AND l.expires_at > ?2 \
                             UNION ALL SELECT l.pending_until FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                                AND u.pending_balance <> 0 AND l.remaining > 0 AND l.pending_until > ?2) t) \
     FROM users u WHERE u.user_id = ?1";

/// The stored account, with the coins of held lots whose hold has ended and of lots past expiry
/// that no entry has written yet (held lots looked at only when there are any, as above).
const SUMMARY_SQL: &str = "SELECT u.company_id, u.balance, u.lifetime_earned, u.lifetime_redeemed, u.lifetime_expired, \
     COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
               AND l.remaining > 0 AND l.expires_at <= ?2), 0), u.pending_balance, \
     COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
               AND u.pending_balance <> 0 AND l.remaining > 0 AND l.pending_until <= ?2), 0) FROM users u WHERE u.user_id = ?1";

const EXPIRING_SQL: &str = "SELECT remaining, expires_at FROM lots WHERE company_id = ?1 AND user_id = ?2 AND remaining > 0 \
     AND expires_at > ?3 AND expires_at <= ?4 AND (pending_until IS NULL OR pending_until <= ?3) ORDER BY expires_at, lot_id";

/// Held lots still held, soonest activation first, with the allocation that opened each.
const PENDING_LIST_SQL: &str = "SELECT e.request_id, l.remaining, l.pending_until FROM lots l JOIN ledger_entries e ON e.entry_id = l.entry_id \
     WHERE l.company_id = ?1 AND l.user_id = ?2 AND l.remaining > 0 AND l.pending_until > ?3 \
     ORDER BY l.pending_until, l.lot_id LIMIT 100";

/// The companies in scope: `?1` a JSON array of ids, or NULL for all.
const IN_SCOPE: &str = "(?1 IS NULL OR company_id IN (SELECT value FROM json_each(?1)))";

fn scope_json(scope: &CompanyScope) -> Option<String> {
    scope.as_ref().map(|c| serde_json::Value::from(c.iter().map(CompanyId::as_str).collect::<Vec<_>>()).to_string())
}

/// Rows of `(key, type, credit, debit, entries)` as roll-up groups.
fn moved_rows<K: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str, p: impl rusqlite::Params) -> StoreResult<Vec<(K, EntryKind, Moved)>> {
    let mut out = Vec::new();
    for row in conn.prepare_cached(sql)?.query_map(p, |r| Ok((r.get::<_, K>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))? {
        let (key, kind, credit, debit, entries) = row?;
        let kind = EntryKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("roll-up row of unknown type {kind}")))?;
        out.push((key, kind, Moved { credit, debit, entries }));
    }
    Ok(out)
}

const HISTORY_SQL: &str = "SELECT e.entry_id, e.type, e.coins, e.balance_after, e.event, e.request_id, e.coin_config_id, e.created_at, e.expires_at, \
     e.pending_coins, e.pending_after, e.effective_at, e.order_id, e.amount_minor, e.original_request_id, e.reason, e.client_id \
     FROM users u JOIN ledger_entries e ON e.company_id = u.company_id AND e.user_id = u.user_id \
     WHERE u.user_id = ?1 AND e.entry_id < ?2 ORDER BY e.entry_id DESC LIMIT ?3";

/// A page of a company's ledger for an export (see `ReportStore::export_entries`). It walks the
/// ledger in id order from `afterEntryId` (`+company_id`: not through the per-user index, which
/// would sort the company's every entry for each page).
const EXPORT_ENTRIES_SQL: &str = "SELECT e.entry_id, e.type, e.coins, e.balance_after, e.event, e.request_id, e.coin_config_id, e.created_at, e.expires_at, \
     e.pending_coins, e.pending_after, e.effective_at, e.order_id, e.amount_minor, e.original_request_id, e.reason, e.client_id, \
     e.user_id, COALESCE(r.currency, o.currency), r.activates_at \
     FROM ledger_entries e \
     LEFT JOIN requests r ON r.company_id = e.company_id AND r.request_id = e.request_id AND e.type IN ('ALLOCATE', 'ADJUST') \
     LEFT JOIN requests o ON o.company_id = e.company_id AND o.request_id = e.original_request_id \
     WHERE +e.company_id = ?1 AND e.entry_id > ?4 AND e.created_at >= ?2 AND e.created_at < ?3 ORDER BY e.entry_id LIMIT ?5";

/// A page of a company's balances for an export, as a read shows them now.
const EXPORT_BALANCES_SQL: &str = "SELECT u.user_id, u.balance, u.pending_balance, u.lifetime_earned, u.lifetime_redeemed, u.lifetime_expired, \
     (SELECT COALESCE(SUM(l.remaining), 0) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND l.pending_until <= ?3), \
     (SELECT COALESCE(SUM(l.remaining), 0) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND l.expires_at <= ?3 AND (l.pending_until IS NULL OR l.pending_until <= ?3)), \
     (SELECT MIN(l.expires_at) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND l.expires_at > ?3 AND (l.pending_until IS NULL OR l.pending_until <= ?3)), \
     (SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND (l.pending_until IS NULL OR l.pending_until <= ?3) AND l.expires_at = (SELECT MIN(m.expires_at) FROM lots m \
        WHERE m.company_id = u.company_id AND m.user_id = u.user_id AND m.remaining > 0 AND m.expires_at > ?3 \
        AND (m.pending_until IS NULL OR m.pending_until <= ?3))) \
     FROM users u WHERE u.company_id = ?1 AND u.user_id > ?2 ORDER BY u.user_id LIMIT ?4";

/// A ledger entry from the first 17 columns of a row (`HISTORY_SQL`'s order).
fn entry_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        entry_id: r.get(0)?,
        kind: r.get(1)?,
        coins: r.get(2)?,
        balance_after: r.get(3)?,
        event: r.get(4)?,
        request_id: r.get(5)?,
        coin_config_id: r.get(6)?,
        created_at_ms: r.get(7)?,
        expires_at_ms: r.get(8)?,
        extra: EntryExtra {
            pending_coins: r.get(9)?,
            pending_after: r.get(10)?,
            effective_at_ms: r.get(11)?,
            order_id: r.get(12)?,
            amount_minor: r.get(13)?,
            original_request_id: r.get(14)?,
            reason: r.get(15)?,
            client_id: r.get(16)?,
        },
    })
}

#[async_trait]
impl ReportStore for SqliteStore {
    async fn balance(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserBalance>> {
        if let Some(cached) = self.balances.get(user.as_str(), now_ms) {
            return Ok(cached);
        }
        let ticket = self.balances.ticket(user.as_str());
        let row: Option<(String, i64, Option<i64>)> = self.read_inline(|conn| {
            Ok(conn.prepare_cached(BALANCE_SQL)?.query_row(params![user.as_str(), now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?)
        })?;
        let (balance, next_expiry) = match row {
            Some((company, coins, next)) => (Some(UserBalance { company: CompanyId::from_trusted(company), balance: coins }), next),
            None => (None, None),
        };
        self.balances.fill(user.as_str(), ticket, balance.clone(), next_expiry);
        Ok(balance)
    }

    async fn user_summary(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserSummary>> {
        let user = user.clone();
        self.read(move |conn| {
            let row: Option<(String, [i64; 4], Unwritten)> = conn
                .prepare_cached(SUMMARY_SQL)?
                .query_row(params![user.as_str(), now_ms], |r| {
                    Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?], Unwritten { expired: r.get(5)?, held: r.get(6)?, activated: r.get(7)? }))
                })
                .optional()?;
            let Some((company, stored, unwritten)) = row else { return Ok(None) };
            let expiring_soon = conn
                .prepare_cached(EXPIRING_SQL)?
                .query_map(params![company, user.as_str(), now_ms, now_ms + EXPIRING_SOON_DAYS * DAY_MS], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let pending = conn
                .prepare_cached(PENDING_LIST_SQL)?
                .query_map(params![company, user.as_str(), now_ms], |r| Ok((RequestId::from_trusted(r.get(0)?), r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let lists = SummaryLists { expiring_soon, pending };
            Ok(Some(UserSummary::from_stored(user, CompanyId::from_trusted(company), stored, unwritten, lists)))
        })
        .await
    }

    async fn transactions(&self, user: &UserId, before_entry_id: Option<i64>, limit: i64) -> StoreResult<Vec<LedgerEntry>> {
        let user = user.clone();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(HISTORY_SQL)?
                .query_map(params![user.as_str(), before_entry_id.unwrap_or(i64::MAX), limit], entry_of)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn daily_totals(&self, scope: &CompanyScope, from_day: i64, to_day: i64) -> StoreResult<DailyTotals> {
        let scope = scope_json(scope);
        self.read(move |conn| {
            let grouped = |key: &str| {
                format!(
                    "SELECT {key}, type, SUM(credit), SUM(debit), SUM(entries) FROM ledger_daily WHERE {IN_SCOPE} AND day BETWEEN ?2 AND ?3 \
                     GROUP BY {key}, type ORDER BY {key}, type"
                )
            };
            Ok(DailyTotals {
                by_day: moved_rows(conn, &grouped("day"), params![scope, from_day, to_day])?,
                by_event: moved_rows(conn, &grouped("event"), params![scope, from_day, to_day])?,
                by_company: moved_rows(conn, &grouped("company_id"), params![scope, from_day, to_day])?,
            })
        })
        .await
    }

    async fn outstanding(&self, scope: &CompanyScope, now_ms: i64) -> StoreResult<Vec<Outstanding>> {
        let scope = scope_json(scope);
        // The lots read only those expired and not yet swept, or expiring within the window,
        // through the expiry index. Left to itself SQLite walks every open lot in company order
        // to save a sort: 0.8 s at 10M lots against under a millisecond.
        self.read(move |conn| {
            let sql = format!(
                "SELECT company_id, SUM(held), SUM(soon), SUM(owed), SUM(debtors) FROM ( \
                   SELECT company_id, SUM(credit) - SUM(debit) AS held, 0 AS soon, 0 AS owed, 0 AS debtors FROM ledger_daily WHERE {IN_SCOPE} GROUP BY company_id \
                   UNION ALL SELECT company_id, -SUM(remaining), 0, 0, 0 FROM lots INDEXED BY lots_open_by_expiry \
                     WHERE {IN_SCOPE} AND remaining > 0 AND expires_at <= ?2 GROUP BY company_id \
                   UNION ALL SELECT company_id, 0, SUM(remaining), 0, 0 FROM lots INDEXED BY lots_open_by_expiry \
                     WHERE {IN_SCOPE} AND remaining > 0 AND expires_at > ?2 AND expires_at <= ?3 GROUP BY company_id \
                   UNION ALL SELECT company_id, -SUM(balance), 0, -SUM(balance), COUNT(*) FROM users INDEXED BY users_in_debt \
                     WHERE {IN_SCOPE} AND balance < 0 GROUP BY company_id \
                 ) GROUP BY company_id HAVING SUM(held) <> 0 OR SUM(soon) <> 0 OR SUM(owed) <> 0 ORDER BY company_id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![scope, now_ms, now_ms + EXPIRING_SOON_DAYS * DAY_MS], |r| {
                Ok(Outstanding {
                    company: CompanyId::from_trusted(r.get(0)?),
                    balance: r.get(1)?,
                    expiring_soon: r.get(2)?,
                    debt: r.get(3)?,
                    users_in_debt: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        self.read(|conn| {
            let mut report = VerifyReport {
                users_checked: conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?,
                entries_checked: conn.query_row("SELECT COUNT(*) FROM ledger_entries", [], |r| r.get(0))?,
                problems: Vec::new(),
            };
            for (sql, what) in CHECKS.iter().chain(SQLITE_CHECKS) {
                let mut stmt = conn.prepare(sql)?;
                for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                    report.problems.push(format!("{what}: {}", row?));
                }
            }
            let [schemes, days, members, latest] = TIER_FACTS;
            let facts = TierFacts {
                schemes: conn.prepare(schemes)?.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?,
                credits: conn.prepare(&tier_credits_sql(RECORD_FROM))?.query_map([], |r| Ok((record_from_row(r)?, r.get(22)?)))?.collect::<Result<_, _>>()?,
                days: conn
                    .prepare(days)?
                    .query_map([], |r| Ok(DayFact { company: r.get(0)?, user: r.get(1)?, day: r.get(2)?, coins: r.get(3)? }))?
                    .collect::<Result<_, _>>()?,
                members: conn
                    .prepare(members)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, super::tiers::tier_state(r, 2)?, r.get(8)?)))?
                    .collect::<Result<_, _>>()?,
                latest_ms: conn.query_row(latest, [], |r| r.get(0))?,
            };
            report.problems.extend(tier_problems(&facts, crate::clock::system_now_ms()));
            Ok(report)
        })
        .await
    }

    async fn allocation(&self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<AllocationRecord>> {
        let (company, request_id) = (company.clone(), request_id.clone());
        self.read(move |conn| record_in(conn, &company, &request_id)).await
    }

    async fn export_entries(&self, company: &CompanyId, from_ms: i64, to_ms: i64, after_entry_id: i64, limit: i64) -> StoreResult<Vec<ExportEntry>> {
        let company = company.clone();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(EXPORT_ENTRIES_SQL)?
                .query_map(params![company.as_str(), from_ms, to_ms, after_entry_id, limit], |r| {
                    Ok(ExportEntry { entry: entry_of(r)?, user: r.get(17)?, currency: r.get(18)?, activates_at_ms: r.get(19)? })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn export_balances_at(&self, company: &CompanyId, after_user: &str, limit: i64, at_ms: i64) -> StoreResult<Vec<ExportBalance>> {
        let (company, after_user) = (company.clone(), after_user.to_owned());
        self.read(move |conn| {
            // One snapshot for the sums and the lots of the page.
            let tx = conn.unchecked_transaction()?;
            let sums: Vec<(String, as_of::PastSums)> = tx
                .prepare_cached(as_of::PAST_SUMS_SQL)?
                .query_map(params![company.as_str(), after_user, at_ms, limit], |r| Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?])))?
                .collect::<Result<_, _>>()?;
            let Some(last) = sums.last().map(|s| s.0.clone()) else { return Ok(Vec::new()) };
            let lots = tx
                .prepare_cached(as_of::PAST_LOTS_SQL)?
                .query_map(params![company.as_str(), after_user, last, at_ms], |r| {
                    Ok(as_of::LotAt {
                        user: r.get(0)?,
                        expires_at: r.get(1)?,
                        remaining: r.get(2)?,
                        held: r.get::<_, i64>(3)? == 1,
                        hold_ended: r.get::<_, i64>(4)? == 1,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(as_of::rows_at(sums, lots, at_ms))
        })
        .await
    }

    async fn export_balances(&self, company: &CompanyId, after_user: &str, limit: i64, now_ms: i64) -> StoreResult<Vec<ExportBalance>> {
        let (company, after_user) = (company.clone(), after_user.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(EXPORT_BALANCES_SQL)?
                .query_map(params![company.as_str(), after_user, now_ms, limit], |r| {
                    let (held, gone): (i64, i64) = (r.get(6)?, r.get(7)?);
                    Ok(ExportBalance::from_stored(r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?], held, gone, r.get(8)?, r.get(9)?))
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn allocations_of(&self, company: &CompanyId, user: &UserId, limit: i64) -> StoreResult<Vec<AllocationRecord>> {
        let (company, user) = (company.clone(), user.clone());
        self.read(move |conn| {
            let ids: Vec<String> = conn
                .prepare_cached(USER_ALLOCATIONS_SQL)?
                .query_map(params![company.as_str(), user.as_str(), limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(record_in(conn, &company, &RequestId::from_trusted(id))?);
            }
            Ok(out)
        })
        .await
    }

    async fn allocation_by_order(&self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<AllocationRecord>> {
        let (company, event, order) = (company.clone(), event.clone(), order.clone());
        self.read(move |conn| match order_holder(conn, &company, &event, &order)? {
            Some(id) => record_in(conn, &company, &id),
            None => Ok(None),
        })
        .await
    }
}

/// A user's latest allocations, from their ledger entries (indexed by user).
const USER_ALLOCATIONS_SQL: &str =
    "SELECT request_id FROM ledger_entries WHERE company_id = ?1 AND user_id = ?2 AND type = 'ALLOCATE' ORDER BY entry_id DESC LIMIT ?3";

/// The allocation an order names: its live one first, else its latest.
pub(super) fn order_holder(conn: &rusqlite::Connection, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<RequestId>> {
    let params = params![company.as_str(), event.as_str(), order.as_str()];
    let live = conn.prepare_cached(LIVE_HOLDER_SQL)?.query_row(params, |r| r.get::<_, String>(0)).optional()?;
    let holder = match live {
        Some(id) => Some(id),
        None => conn.prepare_cached(ENDED_ORDER_SQL)?.query_row(params, |r| r.get::<_, String>(0)).optional()?,
    };
    Ok(holder.map(RequestId::from_trusted))
}

/// An order's live allocation, through `requests_live_order` (its condition word for word).
pub(super) const LIVE_HOLDER_SQL: &str = "SELECT request_id FROM requests WHERE company_id = ?1 AND event = ?2 AND order_id = ?3 \
     AND order_id IS NOT NULL AND (state = 'PENDING' OR state = 'ACTIVE' OR state = 'ZERO') AND alias_of IS NULL";
/// An order's latest allocation that is no longer live, through `requests_ended_by_order` (its
/// condition word for word; aliases are in it too, and left out here).
pub(super) const ENDED_ORDER_SQL: &str = "SELECT request_id FROM requests WHERE company_id = ?1 AND event = ?2 AND order_id = ?3 \
     AND order_id IS NOT NULL AND (state IS NULL OR NOT (state = 'PENDING' OR state = 'ACTIVE' OR state = 'ZERO')) AND alias_of IS NULL \
     ORDER BY created_at DESC, request_id DESC LIMIT 1";
/// An allocation's aliases (rows with no state, so in `requests_ended_by_order`).
pub(super) const ALIASES_SQL: &str = "SELECT request_id FROM requests WHERE company_id = ?1 AND event = ?2 AND order_id = ?3 \
     AND order_id IS NOT NULL AND (state IS NULL OR NOT (state = 'PENDING' OR state = 'ACTIVE' OR state = 'ZERO')) AND alias_of = ?4 \
     ORDER BY created_at, request_id";

/// One allocation's row (an alias's own row, not the allocation it repeats).
pub(super) fn record_row(conn: &rusqlite::Connection, company: &CompanyId, request_id: &str, kinds: RecordKinds) -> StoreResult<Option<RecordRow>> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM {RECORD_FROM} WHERE r.company_id = ?1 AND r.request_id = ?2 AND r.kind IN {}", kinds.sql());
    Ok(conn.prepare_cached(&sql)?.query_row(params![company.as_str(), request_id], record_from_row).optional()?)
}

/// A row of [`RECORD_COLUMNS`].
pub(super) fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow {
        request_id: r.get(0)?,
        order_id: r.get(1)?,
        user: r.get(2)?,
        event: r.get(3)?,
        coin_config_id: r.get(4)?,
        state: r.get(5)?,
        coins: r.get(6)?,
        base_coins: r.get(7)?,
        coins_canceled: r.get(8)?,
        coins_reversed: r.get(9)?,
        coins_waived: r.get(10)?,
        amount_minor: r.get(11)?,
        amount_refunded_minor: r.get(12)?,
        currency: r.get(13)?,
        calculation: r.get(14)?,
        created_at: r.get(15)?,
        activates_at: r.get(16)?,
        activated_at: r.get(17)?,
        expires_at: r.get(18)?,
        zero_reason: r.get(19)?,
        alias_of: r.get(20)?,
        kind: r.get(21)?,
    })
}

/// An allocation's record by its request id or an alias of it.
fn record_in(conn: &rusqlite::Connection, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<AllocationRecord>> {
    let Some(mut row) = record_row(conn, company, request_id.as_str(), RecordKinds::Allocations)? else { return Ok(None) };
    if let Some(holder) = row.alias_of.clone() {
        let Some(held) = record_row(conn, company, &holder, RecordKinds::Allocations)? else {
            return Err(StoreError::Corrupt(format!("alias {request_id} of a missing {holder}")));
        };
        row = held;
    }
    let aliases = conn
        .prepare_cached(ALIASES_SQL)?
        .query_map(params![company.as_str(), row.event, row.order_id, row.request_id], |r| Ok(RequestId::from_trusted(r.get(0)?)))?
        .collect::<Result<_, _>>()?;
    row.into_record(company, aliases).map(Some)
}
