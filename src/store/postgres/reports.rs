//! What is read back on PostgreSQL: balances (cached), user summaries, history and `verify`.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::PgStore;
use super::RECORD_FROM;
use crate::domain::config::DAY_MS;
use crate::domain::ledger::EntryKind;
use crate::domain::report::Moved;
use crate::domain::{CompanyId, EventName, OrderId, RequestId, UserId};
use crate::store::as_of;
use crate::store::model::{RECORD_COLUMNS, RecordKinds, RecordRow};
use crate::store::verify::{CHECKS, DayFact, POSTGRES_CHECKS, TIER_FACTS, TierFacts, tier_credits_sql, tier_problems};
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
                           AND u.pending_balance <> 0 AND l.remaining > 0 AND l.pending_until <= $2), 0)::BIGINT \
               - COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                           AND l.remaining > 0 AND l.expires_at <= $2), 0)::BIGINT, \
     (SELECT MIN(t.at) FROM (SELECT l.expires_at AS at FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                                AND l.remaining > 0 AND l.expires_at > $2 \
                             UNION ALL SELECT l.pending_until FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
                                AND u.pending_balance <> 0 AND l.remaining > 0 AND l.pending_until > $2) t) \
     FROM users u WHERE u.user_id = $1";

/// The stored account, with the coins of held lots whose hold has ended and of lots past expiry
/// that no entry has written yet (held lots looked at only when there are any, as above).
const SUMMARY_SQL: &str = "SELECT u.company_id, u.balance, u.lifetime_earned, u.lifetime_redeemed, u.lifetime_expired, \
     COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
               AND l.remaining > 0 AND l.expires_at <= $2), 0)::BIGINT, u.pending_balance, \
     COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id \
               AND u.pending_balance <> 0 AND l.remaining > 0 AND l.pending_until <= $2), 0)::BIGINT FROM users u WHERE u.user_id = $1";

const EXPIRING_SQL: &str = "SELECT remaining, expires_at FROM lots WHERE company_id = $1 AND user_id = $2 AND remaining > 0 \
     AND expires_at > $3 AND expires_at <= $4 AND (pending_until IS NULL OR pending_until <= $3) ORDER BY expires_at, lot_id";

/// Held lots still held, soonest activation first, with the allocation that opened each.
const PENDING_LIST_SQL: &str = "SELECT e.request_id, l.remaining, l.pending_until FROM lots l JOIN ledger_entries e ON e.entry_id = l.entry_id \
     WHERE l.company_id = $1 AND l.user_id = $2 AND l.remaining > 0 AND l.pending_until > $3 \
     ORDER BY l.pending_until, l.lot_id LIMIT 100";

const HISTORY_SQL: &str = "SELECT e.entry_id, e.type, e.coins, e.balance_after, e.event, e.request_id, e.coin_config_id, e.created_at, e.expires_at, \
     e.pending_coins, e.pending_after, e.effective_at, e.order_id, e.amount_minor, e.original_request_id, e.reason, e.client_id \
     FROM users u JOIN ledger_entries e ON e.company_id = u.company_id AND e.user_id = u.user_id \
     WHERE u.user_id = $1 AND e.entry_id < $2 ORDER BY e.entry_id DESC LIMIT $3";

/// The companies in scope: `$1` an array of ids, or NULL for all.
const IN_SCOPE: &str = "($1::TEXT[] IS NULL OR company_id = ANY($1))";

fn scope_ids(scope: &CompanyScope) -> Option<Vec<&str>> {
    scope.as_ref().map(|c| c.iter().map(CompanyId::as_str).collect())
}

fn moved_rows<K: for<'a> tokio_postgres::types::FromSql<'a>>(rows: &[tokio_postgres::Row]) -> StoreResult<Vec<(K, EntryKind, Moved)>> {
    rows.iter()
        .map(|r| {
            let kind: &str = r.get(1);
            let kind = EntryKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("roll-up row of unknown type {kind}")))?;
            Ok((r.get::<_, K>(0), kind, Moved { credit: r.get(2), debit: r.get(3), entries: r.get(4) }))
        })
        .collect()
}

/// A page of a company's ledger for an export (see `ReportStore::export_entries`). It walks the
/// ledger in id order from `afterEntryId` (`company_id || ''`: not through the per-user index,
/// which would sort the company's every entry for each page: 2 s a page at 1M entries).
const EXPORT_ENTRIES_SQL: &str = "SELECT e.entry_id, e.type, e.coins, e.balance_after, e.event, e.request_id, e.coin_config_id, e.created_at, e.expires_at, \
     e.pending_coins, e.pending_after, e.effective_at, e.order_id, e.amount_minor, e.original_request_id, e.reason, e.client_id, \
     e.user_id, COALESCE(r.currency, o.currency), r.activates_at \
     FROM ledger_entries e \
     LEFT JOIN requests r ON r.company_id = e.company_id AND r.request_id = e.request_id AND e.type IN ('ALLOCATE', 'ADJUST') \
     LEFT JOIN requests o ON o.company_id = e.company_id AND o.request_id = e.original_request_id \
     WHERE e.company_id || '' = $1 AND e.entry_id > $4 AND e.created_at >= $2 AND e.created_at < $3 ORDER BY e.entry_id LIMIT $5";

/// A page of a company's balances for an export, as a read shows them now.
const EXPORT_BALANCES_SQL: &str = "SELECT u.user_id, u.balance, u.pending_balance, u.lifetime_earned, u.lifetime_redeemed, u.lifetime_expired, \
     (SELECT COALESCE(SUM(l.remaining), 0)::BIGINT FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND l.pending_until <= $3), \
     (SELECT COALESCE(SUM(l.remaining), 0)::BIGINT FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND l.expires_at <= $3 AND (l.pending_until IS NULL OR l.pending_until <= $3)), \
     (SELECT MIN(l.expires_at) FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND l.expires_at > $3 AND (l.pending_until IS NULL OR l.pending_until <= $3)), \
     (SELECT SUM(l.remaining)::BIGINT FROM lots l WHERE l.company_id = u.company_id AND l.user_id = u.user_id AND l.remaining > 0 \
        AND (l.pending_until IS NULL OR l.pending_until <= $3) AND l.expires_at = (SELECT MIN(m.expires_at) FROM lots m \
        WHERE m.company_id = u.company_id AND m.user_id = u.user_id AND m.remaining > 0 AND m.expires_at > $3 \
        AND (m.pending_until IS NULL OR m.pending_until <= $3))) \
     FROM users u WHERE u.company_id = $1 AND u.user_id > $2 ORDER BY u.user_id LIMIT $4";

/// A ledger entry from the first 17 columns of a row (`HISTORY_SQL`'s order).
fn entry_of(r: &tokio_postgres::Row) -> LedgerEntry {
    LedgerEntry {
        entry_id: r.get(0),
        kind: r.get(1),
        coins: r.get(2),
        balance_after: r.get(3),
        event: r.get(4),
        request_id: r.get(5),
        coin_config_id: r.get(6),
        created_at_ms: r.get(7),
        expires_at_ms: r.get(8),
        extra: EntryExtra {
            pending_coins: r.get(9),
            pending_after: r.get(10),
            effective_at_ms: r.get(11),
            order_id: r.get(12),
            amount_minor: r.get(13),
            original_request_id: r.get(14),
            reason: r.get(15),
            client_id: r.get(16),
        },
    }
}

#[async_trait]
impl ReportStore for PgStore {
    async fn balance(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserBalance>> {
        let cache = &self.core.caches.balances;
        if let Some(cached) = cache.get(user.as_str(), now_ms) {
            return Ok(cached);
        }
        let ticket = cache.ticket(user.as_str());
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(BALANCE_SQL).await?;
        let (balance, next_expiry) = match client.query_opt(&stmt, &[&user.as_str(), &now_ms]).await? {
            Some(r) => (Some(UserBalance { company: CompanyId::from_trusted(r.get(0)), balance: r.get(1) }), r.get(2)),
            None => (None, None),
        };
        cache.fill(user.as_str(), ticket, balance.clone(), next_expiry);
        Ok(balance)
    }

    async fn user_summary(&self, user: &UserId, now_ms: i64) -> StoreResult<Option<UserSummary>> {
        let client = self.core.client().await?;
        let Some(r) = client.query_opt(SUMMARY_SQL, &[&user.as_str(), &now_ms]).await? else { return Ok(None) };
        let company: String = r.get(0);
        let soon = client.query(EXPIRING_SQL, &[&company, &user.as_str(), &now_ms, &(now_ms + EXPIRING_SOON_DAYS * DAY_MS)]).await?;
        let held = client.query(PENDING_LIST_SQL, &[&company, &user.as_str(), &now_ms]).await?;
        let stored = [r.get(1), r.get(2), r.get(3), r.get(4)];
        let unwritten = Unwritten { expired: r.get(5), held: r.get(6), activated: r.get(7) };
        let lists = SummaryLists {
            expiring_soon: soon.iter().map(|s| (s.get(0), s.get(1))).collect(),
            pending: held.iter().map(|h| (RequestId::from_trusted(h.get(0)), h.get(1), h.get(2))).collect(),
        };
        Ok(Some(UserSummary::from_stored(user.clone(), CompanyId::from_trusted(company), stored, unwritten, lists)))
    }

    async fn transactions(&self, user: &UserId, before_entry_id: Option<i64>, limit: i64) -> StoreResult<Vec<LedgerEntry>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(HISTORY_SQL).await?;
        let rows = client.query(&stmt, &[&user.as_str(), &before_entry_id.unwrap_or(i64::MAX), &limit]).await?;
        Ok(rows.iter().map(entry_of).collect())
    }

    async fn daily_totals(&self, scope: &CompanyScope, from_day: i64, to_day: i64) -> StoreResult<DailyTotals> {
        let client = self.core.client().await?;
        let scope = scope_ids(scope);
        let grouped = |key: &str| {
            format!(
                "SELECT {key}, type, SUM(credit)::BIGINT, SUM(debit)::BIGINT, SUM(entries)::BIGINT FROM ledger_daily \
                 WHERE {IN_SCOPE} AND day BETWEEN $2 AND $3 GROUP BY {key}, type ORDER BY {key}, type"
            )
        };
        let mut totals = DailyTotals::default();
        for (key, out) in [("day", 0), ("event", 1), ("company_id", 2)] {
            let stmt = client.prepare_cached(&grouped(key)).await?;
            let rows = client.query(&stmt, &[&scope, &from_day, &to_day]).await?;
            match out {
                0 => totals.by_day = moved_rows(&rows)?,
                1 => totals.by_event = moved_rows(&rows)?,
                _ => totals.by_company = moved_rows(&rows)?,
            }
        }
        Ok(totals)
    }

    async fn outstanding(&self, scope: &CompanyScope, now_ms: i64) -> StoreResult<Vec<Outstanding>> {
        // The lots read only those expired and not yet swept, or expiring within the window,
        // through the expiry index, and the scope filters what that finds (`OFFSET 0` keeps the
        // planner from walking a scoped company's every open lot instead: 57 ms at 10M lots).
        let client = self.core.client().await?;
        let sql = format!(
            "SELECT company_id, SUM(held)::BIGINT, SUM(soon)::BIGINT, SUM(owed)::BIGINT, SUM(debtors)::BIGINT FROM ( \
               SELECT company_id, SUM(credit) - SUM(debit) AS held, 0 AS soon, 0 AS owed, 0 AS debtors FROM ledger_daily WHERE {IN_SCOPE} GROUP BY company_id \
               UNION ALL SELECT company_id, -SUM(remaining), 0, 0, 0 FROM ( \
                 SELECT company_id, remaining FROM lots WHERE remaining > 0 AND expires_at <= $2 OFFSET 0) l WHERE {IN_SCOPE} GROUP BY company_id \
               UNION ALL SELECT company_id, 0, SUM(remaining), 0, 0 FROM ( \
                 SELECT company_id, remaining FROM lots WHERE remaining > 0 AND expires_at > $2 AND expires_at <= $3 OFFSET 0) l WHERE {IN_SCOPE} GROUP BY company_id \
               UNION ALL SELECT company_id, -SUM(balance), 0, -SUM(balance), COUNT(*) FROM users WHERE in_debt AND {IN_SCOPE} GROUP BY company_id \
             ) t GROUP BY company_id HAVING SUM(held) <> 0 OR SUM(soon) <> 0 OR SUM(owed) <> 0 ORDER BY company_id"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &[&scope_ids(scope), &now_ms, &(now_ms + EXPIRING_SOON_DAYS * DAY_MS)]).await?;
        Ok(rows
            .iter()
            .map(|r| Outstanding {
                company: CompanyId::from_trusted(r.get(0)),
                balance: r.get(1),
                expiring_soon: r.get(2),
                debt: r.get(3),
                users_in_debt: r.get(4),
            })
            .collect())
    }

    async fn verify(&self) -> StoreResult<VerifyReport> {
        let mut client = self.core.client().await?;
        // One snapshot for all checks, so a concurrent write cannot show up as a false difference;
        // a transaction object, so an early return rolls back instead of pooling an open one.
        let tx = client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let mut report = VerifyReport {
            users_checked: tx.query_one("SELECT COUNT(*) FROM users", &[]).await?.get(0),
            entries_checked: tx.query_one("SELECT COUNT(*) FROM ledger_entries", &[]).await?.get(0),
            problems: Vec::new(),
        };
        for (sql, what) in CHECKS.iter().chain(POSTGRES_CHECKS) {
            for row in tx.query(*sql, &[]).await? {
                report.problems.push(format!("{what}: {}", row.get::<_, String>(0)));
            }
        }
        let [schemes, days, members, latest] = TIER_FACTS;
        let facts = TierFacts {
            schemes: tx.query(schemes, &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect(),
            credits: tx.query(&tier_credits_sql(RECORD_FROM), &[]).await?.iter().map(|r| (record_from_row(r), r.get(22))).collect(),
            days: tx.query(days, &[]).await?.iter().map(|r| DayFact { company: r.get(0), user: r.get(1), day: r.get(2), coins: r.get(3) }).collect(),
            members: tx.query(members, &[]).await?.iter().map(|r| (r.get(0), r.get(1), super::tiers::tier_state(r, 2), r.get(8))).collect(),
            latest_ms: tx.query_one(latest, &[]).await?.get(0),
        };
        report.problems.extend(tier_problems(&facts, crate::clock::system_now_ms()));
        tx.commit().await?;
        Ok(report)
    }

    async fn allocation(&self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<AllocationRecord>> {
        record_in(&self.core.client().await?, company, request_id).await
    }

    async fn export_entries(&self, company: &CompanyId, from_ms: i64, to_ms: i64, after_entry_id: i64, limit: i64) -> StoreResult<Vec<ExportEntry>> {
        let mut client = self.core.client().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        // A page must walk the primary key from `after_entry_id` and stop at its limit. Planned
        // for its own parameters, with the table's statistics behind a ledger that grew fast, the
        // planner believes few rows match and scans the whole table in parallel and sorts it
        // instead: 0.9 s a page at 1M entries against 8 ms for the index walk (measured with
        // EXPLAIN ANALYZE on the benchmark's database). This transaction rules those plans out.
        tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; SET LOCAL max_parallel_workers_per_gather = 0").await?;
        let stmt = tx.prepare_cached(EXPORT_ENTRIES_SQL).await?;
        let rows = tx.query(&stmt, &[&company.as_str(), &from_ms, &to_ms, &after_entry_id, &limit]).await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| ExportEntry { entry: entry_of(r), user: r.get(17), currency: r.get(18), activates_at_ms: r.get(19) }).collect())
    }

    async fn export_balances_at(&self, company: &CompanyId, after_user: &str, limit: i64, at_ms: i64) -> StoreResult<Vec<ExportBalance>> {
        static SUMS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| as_of::numbered_for_postgres(as_of::PAST_SUMS_SQL));
        static LOTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| as_of::numbered_for_postgres(as_of::PAST_LOTS_SQL));
        let mut client = self.core.client().await?;
        // One snapshot for the sums and the lots of the page.
        let tx = client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let stmt = tx.prepare_cached(&SUMS).await?;
        let sums: Vec<(String, as_of::PastSums)> = tx
            .query(&stmt, &[&company.as_str(), &after_user, &at_ms, &limit])
            .await?
            .iter()
            .map(|r| (r.get(0), [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)]))
            .collect();
        let Some(last) = sums.last().map(|s| s.0.clone()) else { return Ok(Vec::new()) };
        let stmt = tx.prepare_cached(&LOTS).await?;
        let lots = tx
            .query(&stmt, &[&company.as_str(), &after_user, &last, &at_ms])
            .await?
            .iter()
            .map(|r| as_of::LotAt {
                user: r.get(0),
                expires_at: r.get(1),
                remaining: r.get(2),
                held: r.get::<_, i64>(3) == 1,
                hold_ended: r.get::<_, i64>(4) == 1,
            })
            .collect();
        tx.commit().await?;
        Ok(as_of::rows_at(sums, lots, at_ms))
    }

    async fn export_balances(&self, company: &CompanyId, after_user: &str, limit: i64, now_ms: i64) -> StoreResult<Vec<ExportBalance>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(EXPORT_BALANCES_SQL).await?;
        let rows = client.query(&stmt, &[&company.as_str(), &after_user, &now_ms, &limit]).await?;
        Ok(rows
            .iter()
            .map(|r| ExportBalance::from_stored(r.get(0), [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)], r.get(6), r.get(7), r.get(8), r.get(9)))
            .collect())
    }

    async fn allocations_of(&self, company: &CompanyId, user: &UserId, limit: i64) -> StoreResult<Vec<AllocationRecord>> {
        let client = self.core.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT request_id FROM ledger_entries WHERE company_id = $1 AND user_id = $2 AND type = 'ALLOCATE' ORDER BY entry_id DESC LIMIT $3",
            )
            .await?;
        let mut out = Vec::new();
        for row in client.query(&stmt, &[&company.as_str(), &user.as_str(), &limit]).await? {
            out.extend(record_in(&client, company, &RequestId::from_trusted(row.get(0))).await?);
        }
        Ok(out)
    }

    async fn allocation_by_order(&self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<AllocationRecord>> {
        let client = self.core.client().await?;
        match order_holder(&client, company, event, order).await? {
            Some(id) => record_in(&client, company, &id).await,
            None => Ok(None),
        }
    }
}

/// The allocation an order names: its live one first, else its latest.
pub(super) async fn order_holder(client: &impl GenericClient, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<RequestId>> {
    let stmt = client
        .prepare_cached(
            "SELECT request_id FROM requests WHERE company_id = $1 AND event = $2 AND order_id = $3 AND alias_of IS NULL \
             ORDER BY CASE WHEN state IN ('PENDING', 'ACTIVE', 'ZERO') THEN 0 ELSE 1 END, created_at DESC, request_id DESC LIMIT 1",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&company.as_str(), &event.as_str(), &order.as_str()]).await?.map(|row| RequestId::from_trusted(row.get(0))))
}

/// One allocation's row (an alias's own row, not the allocation it repeats).
pub(super) async fn record_row(client: &impl GenericClient, company: &CompanyId, request_id: &str, kinds: RecordKinds) -> StoreResult<Option<RecordRow>> {
    let stmt = client
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM {RECORD_FROM} WHERE r.company_id = $1 AND r.request_id = $2 AND r.kind IN {}", kinds.sql()))
        .await?;
    Ok(client.query_opt(&stmt, &[&company.as_str(), &request_id]).await?.as_ref().map(record_from_row))
}

/// A row of [`RECORD_COLUMNS`].
pub(super) fn record_from_row(row: &tokio_postgres::Row) -> RecordRow {
    RecordRow {
        request_id: row.get(0),
        order_id: row.get(1),
        user: row.get(2),
        event: row.get(3),
        coin_config_id: row.get(4),
        state: row.get(5),
        coins: row.get(6),
        base_coins: row.get(7),
        coins_canceled: row.get(8),
        coins_reversed: row.get(9),
        coins_waived: row.get(10),
        amount_minor: row.get(11),
        amount_refunded_minor: row.get(12),
        currency: row.get(13),
        calculation: row.get(14),
        created_at: row.get(15),
        activates_at: row.get(16),
        activated_at: row.get(17),
        expires_at: row.get(18),
        zero_reason: row.get(19),
        alias_of: row.get(20),
        kind: row.get(21),
    }
}

/// An allocation's record by its request id or an alias of it.
async fn record_in(client: &deadpool_postgres::Client, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<AllocationRecord>> {
    let Some(mut row) = record_row(client, company, request_id.as_str(), RecordKinds::Allocations).await? else { return Ok(None) };
    if let Some(holder) = row.alias_of.clone() {
        let held = record_row(client, company, &holder, RecordKinds::Allocations).await?;
        row = held.ok_or_else(|| StoreError::Corrupt(format!("alias {request_id} of a missing {holder}")))?;
    }
    let aliases = client
        .query(
            "SELECT request_id FROM requests WHERE company_id = $1 AND event = $2 AND order_id = $3 AND alias_of = $4 ORDER BY created_at, request_id",
            &[&company.as_str(), &row.event, &row.order_id, &row.request_id],
        )
        .await?
        .iter()
        .map(|r| RequestId::from_trusted(r.get(0)))
        .collect();
    row.into_record(company, aliases).map(Some)
}
