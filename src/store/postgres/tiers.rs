//! Status tiers on PostgreSQL. A scheme change sends `NOTIFY coins_configs` in its transaction,
//! as a configuration change does: every process drops its cached resolutions, which carry the
//! scheme.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::RECORD_FROM;
use super::listen::CONFIGS_CHANNEL;
use super::reports::record_from_row;
use super::{PgStore, PgTx};
use crate::domain::tiers::{TierChange, TierScheme, TierState, qualifying_day};
use crate::domain::{CompanyId, UserId};
use crate::store::model::{RECORD_COLUMNS, RecordRow};
use crate::store::tiers::change_columns;
use crate::store::tiers::{
    self, MEMBERS_PAGE_SQL, MemberTier, QualifyingDay, StoredScheme, TIER_COLUMNS, TIERS_AT_SQL, TIERS_NOW_SQL, TierCount, TierHistory, TierStore, TierTx,
};
use crate::store::{StoreError, StoreResult};

/// SQL written with SQLite's `?n` placeholders, in PostgreSQL's `$n`.
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

fn parse_scheme(company: &str, text: &str) -> StoreResult<TierScheme> {
    TierScheme::parse(text).ok_or_else(|| StoreError::Corrupt(format!("the tier scheme of company {company} is unreadable")))
}

async fn stored(client: &impl GenericClient, company: &CompanyId) -> StoreResult<Option<StoredScheme>> {
    let stmt = client.prepare_cached("SELECT scheme, updated_at FROM tier_schemes WHERE company_id = $1").await?;
    match client.query_opt(&stmt, &[&company.as_str()]).await? {
        Some(row) => Ok(Some(StoredScheme { scheme: parse_scheme(company.as_str(), row.get(0))?, updated_at: row.get(1) })),
        None => Ok(None),
    }
}

pub(super) async fn scheme(client: &impl GenericClient, company: &CompanyId) -> StoreResult<Option<TierScheme>> {
    Ok(stored(client, company).await?.map(|s| s.scheme))
}

/// The schemes of `companies` (what allocations resolve with), each parsed once per text: every
/// allocation batch reads its companies' schemes again (see `fresh_schemes`), and parsing one
/// cost more than the read.
pub(super) async fn schemes(client: &impl GenericClient, companies: &[&str], parsed: &SchemeTexts) -> StoreResult<Vec<(String, Arc<TierScheme>)>> {
    let stmt = client.prepare_cached("SELECT company_id, scheme FROM tier_schemes WHERE company_id = ANY($1)").await?;
    client
        .query(&stmt, &[&companies])
        .await?
        .iter()
        .map(|r| {
            let company: String = r.get(0);
            let scheme = parsed.parse(&company, r.get(1))?;
            Ok((company, scheme))
        })
        .collect()
}

/// The last text of each company's scheme this process parsed, with what it parsed to.
#[derive(Default)]
pub struct SchemeTexts(Mutex<HashMap<String, (String, Arc<TierScheme>)>>);

impl SchemeTexts {
    /// Companies remembered at most; past that the memory starts over (a reparse costs microseconds).
    const COMPANIES_MAX: usize = 1_024;

    fn parse(&self, company: &str, text: &str) -> StoreResult<Arc<TierScheme>> {
        if let Some((known, scheme)) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get(company)
            && known == text
        {
            return Ok(scheme.clone());
        }
        let scheme = Arc::new(parse_scheme(company, text)?);
        let mut texts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if texts.len() >= Self::COMPANIES_MAX && !texts.contains_key(company) {
            texts.clear();
        }
        texts.insert(company.to_owned(), (text.to_owned(), scheme.clone()));
        Ok(scheme)
    }
}

/// The six [`TIER_COLUMNS`] of a row, from column `at` on.
pub(super) fn tier_state(r: &tokio_postgres::Row, at: usize) -> TierState {
    TierState { code: r.get(at), entered_at: r.get(at + 1), expires_at: r.get(at + 2), cause: r.get(at + 3), floor: r.get(at + 4), floor_reason: r.get(at + 5) }
}

pub(super) async fn state(client: &impl GenericClient, user: &UserId) -> StoreResult<TierState> {
    let stmt = client.prepare_cached(&format!("SELECT {TIER_COLUMNS} FROM users WHERE user_id = $1")).await?;
    Ok(client.query_opt(&stmt, &[&user.as_str()]).await?.map(|r| tier_state(&r, 0)).unwrap_or_default())
}

pub(super) async fn qualifying(client: &impl GenericClient, user: &UserId, since_ms: Option<i64>) -> StoreResult<i64> {
    Ok(match since_ms {
        None => {
            let stmt = client.prepare_cached("SELECT qualifying_total FROM users WHERE user_id = $1").await?;
            client.query_opt(&stmt, &[&user.as_str()]).await?.map_or(0, |r| r.get(0))
        }
        Some(since) => {
            let stmt = client.prepare_cached("SELECT COALESCE(SUM(coins), 0)::BIGINT FROM qualifying_days WHERE user_id = $1 AND day >= $2").await?;
            client.query_one(&stmt, &[&user.as_str(), &qualifying_day(since)]).await?.get(0)
        }
    })
}

/// The table a `ROLLING` history's days are staged in while a scheme is set up (this
/// transaction's own; created by the first page, summed and dropped after the last).
const STAGE_DAYS_SQL: &str =
    "CREATE TEMP TABLE IF NOT EXISTS qualifying_days_staged (user_id TEXT NOT NULL, day BIGINT NOT NULL, coins BIGINT NOT NULL) ON COMMIT DROP";

/// Waits for every ledger write under way to commit and holds off new ones until this
/// transaction ends. Every ledger flow writes `requests` (a claim, or an activation's record)
/// before it reads whether the company has a scheme, so none can decide without a scheme that this
/// transaction sets up, or count coins for one it removes, and the history counted here is all of
/// it. Every company's writes wait meanwhile: setting a scheme up is rare and counted in one pass.
///
/// The history and the members are then read a page at a time in key order. Planned for its own
/// parameters with the statistics behind a ledger that grew fast, a page's query scans and sorts
/// the company's every credit instead of walking the key (measured: 3 s a page against 24 ms at
/// 1.1M credits), so this transaction rules those plans out, as the ledger export's does. Notices
/// are kept out of the log too (the staging table of a `ROLLING` history is created if missing,
/// once per page).
async fn hold_the_ledger(tx: &tokio_postgres::Transaction<'_>) -> StoreResult<()> {
    tx.batch_execute(
        "LOCK TABLE requests IN SHARE MODE; SET LOCAL client_min_messages = warning; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; \
         SET LOCAL max_parallel_workers_per_gather = 0",
    )
    .await?;
    Ok(())
}

impl TierTx for PgTx<'_> {
    async fn write_scheme(&mut self, company: &CompanyId, scheme: &TierScheme, actor: &str, now_ms: i64) -> StoreResult<Option<TierScheme>> {
        hold_the_ledger(self.0).await?;
        // Read under the row's lock, so concurrent setups of one company take turns.
        let stmt = self.0.prepare_cached("SELECT scheme FROM tier_schemes WHERE company_id = $1 FOR UPDATE").await?;
        let before = match self.0.query_opt(&stmt, &[&company.as_str()]).await? {
            Some(row) => Some(parse_scheme(company.as_str(), row.get(0))?),
            None => None,
        };
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO tier_schemes (company_id, scheme, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (company_id) DO UPDATE SET scheme = excluded.scheme, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &scheme.to_json(), &actor, &now_ms]).await?;
        Ok(before)
    }

    async fn add_totals(&mut self, company: &CompanyId, totals: &[(UserId, i64)]) -> StoreResult<()> {
        let users: Vec<&str> = totals.iter().map(|(u, _)| u.as_str()).collect();
        let sums: Vec<i64> = totals.iter().map(|(_, n)| *n).collect();
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE users u SET qualifying_total = u.qualifying_total + x.coins FROM unnest($2::TEXT[], $3::BIGINT[]) AS x(uid, coins) \
                 WHERE u.company_id = $1 AND u.user_id = x.uid",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &users, &sums]).await?;
        Ok(())
    }

    async fn add_days(&mut self, _company: &CompanyId, days: &[QualifyingDay]) -> StoreResult<()> {
        // Staged, then summed once: the pages of the history come in request id order, so a
        // member's day recurs on many pages, and updating its row once per page left a chain of
        // row versions (all of this transaction's, none prunable) that every later update
        // walked: over 30 s at 1.3M credits against 13 s for one row per credit.
        let (users, numbers, coins): (Vec<&str>, Vec<i64>, Vec<i64>) = days.iter().map(|d| (d.user.as_str(), d.day, d.coins)).collect();
        self.0.batch_execute(STAGE_DAYS_SQL).await?;
        // Not a cached statement: the staging table is a new one in every transaction.
        let stmt = self.0.prepare("INSERT INTO qualifying_days_staged SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[])").await?;
        self.0.execute(&stmt, &[&users, &numbers, &coins]).await?;
        Ok(())
    }

    async fn days_counted(&mut self, company: &CompanyId) -> StoreResult<()> {
        self.0.batch_execute(STAGE_DAYS_SQL).await?;
        let stmt = self
            .0
            .prepare(
                "INSERT INTO qualifying_days (user_id, day, company_id, coins) SELECT user_id, day, $1, SUM(coins)::BIGINT FROM qualifying_days_staged \
                 GROUP BY user_id, day HAVING SUM(coins) <> 0 ON CONFLICT (user_id, day) DO UPDATE SET coins = qualifying_days.coins + excluded.coins",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str()]).await?;
        self.0.batch_execute("DROP TABLE qualifying_days_staged").await?;
        Ok(())
    }

    async fn reset_qualifying(&mut self, company: &CompanyId) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("DELETE FROM qualifying_days WHERE company_id = $1").await?;
        self.0.execute(&stmt, &[&company.as_str()]).await?;
        let stmt = self.0.prepare_cached("UPDATE users SET qualifying_total = 0 WHERE company_id = $1 AND qualifying_total <> 0").await?;
        self.0.execute(&stmt, &[&company.as_str()]).await?;
        Ok(())
    }

    async fn remove_scheme(&mut self, company: &CompanyId) -> StoreResult<bool> {
        hold_the_ledger(self.0).await?;
        let stmt = self.0.prepare_cached("DELETE FROM tier_schemes WHERE company_id = $1").await?;
        if self.0.execute(&stmt, &[&company.as_str()]).await? == 0 {
            return Ok(false);
        }
        self.reset_qualifying(company).await?;
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE users SET tier_code = NULL, tier_entered_at = NULL, tier_expires_at = NULL, tier_cause = NULL, tier_floor = NULL, \
                 tier_floor_reason = NULL WHERE company_id = $1 AND (tier_code IS NOT NULL OR tier_floor IS NOT NULL)",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str()]).await?;
        Ok(true)
    }

    async fn credit_records(&mut self, company: &CompanyId, after: &str, limit: i64) -> StoreResult<Vec<RecordRow>> {
        let stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM {RECORD_FROM} WHERE r.company_id = $1 AND r.request_id > $2 AND r.kind IN ('ALLOCATE', 'ADJUST') \
                 AND r.alias_of IS NULL AND r.coins > 0 ORDER BY r.request_id LIMIT $3"
            ))
            .await?;
        Ok(self.0.query(&stmt, &[&company.as_str(), &after, &limit]).await?.iter().map(record_from_row).collect())
    }

    async fn members_page(&mut self, company: &CompanyId, after: &str, limit: i64, since_ms: Option<i64>) -> StoreResult<Vec<(UserId, TierState, i64)>> {
        let stmt = self.0.prepare_cached(&format!("{} FOR UPDATE", dollars(MEMBERS_PAGE_SQL))).await?;
        let mut rows: Vec<(UserId, TierState, i64)> = self
            .0
            .query(&stmt, &[&company.as_str(), &after, &limit])
            .await?
            .iter()
            .map(|r| (UserId::from_trusted(r.get(0)), tier_state(r, 1), r.get(7)))
            .collect();
        if let Some(since) = since_ms {
            let users: Vec<&str> = rows.iter().map(|(u, ..)| u.as_str()).collect();
            let stmt =
                self.0.prepare_cached("SELECT user_id, SUM(coins)::BIGINT FROM qualifying_days WHERE user_id = ANY($1) AND day >= $2 GROUP BY user_id").await?;
            let sums: HashMap<String, i64> = self.0.query(&stmt, &[&users, &qualifying_day(since)]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
            for (user, _, q) in &mut rows {
                *q = sums.get(user.as_str()).copied().unwrap_or(0);
            }
        }
        Ok(rows)
    }

    async fn write_tiers(&mut self, company: &CompanyId, tiers: &[(UserId, TierState, Option<TierChange>)], now_ms: i64) -> StoreResult<()> {
        if tiers.is_empty() {
            return Ok(());
        }
        // One statement for the states, one for the changes and their webhook messages.
        let col = |f: &dyn Fn(&TierState) -> Option<String>| -> Vec<Option<String>> { tiers.iter().map(|(_, s, _)| f(s)).collect() };
        let times = |f: &dyn Fn(&TierState) -> Option<i64>| -> Vec<Option<i64>> { tiers.iter().map(|(_, s, _)| f(s)).collect() };
        let users: Vec<&str> = tiers.iter().map(|(u, ..)| u.as_str()).collect();
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE users u SET tier_code = x.code, tier_entered_at = x.entered, tier_expires_at = x.expires, tier_cause = x.cause, tier_floor = x.floor, \
                 tier_floor_reason = x.reason FROM unnest($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::TEXT[]) \
                 AS x(uid, code, entered, expires, cause, floor, reason) WHERE u.company_id = $1 AND u.user_id = x.uid",
            )
            .await?;
        self.0
            .execute(
                &stmt,
                &[
                    &company.as_str(),
                    &users,
                    &col(&|s| s.code.clone()),
                    &times(&|s| s.entered_at),
                    &times(&|s| s.expires_at),
                    &col(&|s| s.cause.clone()),
                    &col(&|s| s.floor.clone()),
                    &col(&|s| s.floor_reason.clone()),
                ],
            )
            .await?;
        let changes: Vec<(&UserId, &TierChange)> = tiers.iter().filter_map(|(u, _, c)| c.as_ref().map(|c| (u, c))).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let columns: Vec<_> = changes.iter().map(|(_, c)| change_columns(c)).collect();
        let (events, bits) = tiers::change_events(changes.iter().map(|(_, c)| *c));
        let stmt = self
            .0
            .prepare_cached(
                "WITH c AS (INSERT INTO tier_changes (company_id, user_id, kind, from_tier, to_tier, qualifying_coins, tier_expires_at, cause, request_id, created_at) \
                 SELECT $1, x.uid, x.kind, x.from_tier, x.to_tier, x.q, x.expires, x.cause, x.rid, $2 \
                 FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::BIGINT[]) \
                 WITH ORDINALITY AS x(uid, kind, from_tier, to_tier, q, expires, cause, rid, event, bit, n) ORDER BY x.n \
                 RETURNING change_id, user_id, kind) \
                 INSERT INTO webhook_messages (webhook_id, company_id, user_id, tier_change_id, event_type, state, next_attempt_at, created_at) \
                 SELECT w.webhook_id, $1, c.user_id, c.change_id, e.event, 'pending', $2, $2 FROM c \
                 JOIN (SELECT DISTINCT x.kind, x.event, x.bit FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::BIGINT[], \
                       $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::BIGINT[]) AS x(uid, kind, from_tier, to_tier, q, expires, cause, rid, event, bit)) e ON e.kind = c.kind \
                 JOIN webhooks w ON w.company_id = $1 AND w.enabled AND (w.event_mask & e.bit) <> 0",
            )
            .await?;
        let users: Vec<&str> = changes.iter().map(|(u, _)| u.as_str()).collect();
        let kinds: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let from: Vec<Option<&str>> = columns.iter().map(|c| c.1).collect();
        let to: Vec<&str> = columns.iter().map(|c| c.2).collect();
        let q: Vec<i64> = columns.iter().map(|c| c.3).collect();
        let expires: Vec<Option<i64>> = columns.iter().map(|c| c.4).collect();
        let causes: Vec<&str> = columns.iter().map(|c| c.5).collect();
        let requests: Vec<Option<&str>> = columns.iter().map(|c| c.6).collect();
        self.0.execute(&stmt, &[&company.as_str(), &now_ms, &users, &kinds, &from, &to, &q, &expires, &causes, &requests, &events, &bits]).await?;
        Ok(())
    }

    async fn announce_tiers_change(&mut self) -> StoreResult<()> {
        self.0.execute("SELECT pg_notify($1, '')", &[&CONFIGS_CHANNEL]).await?;
        Ok(())
    }
}

#[async_trait]
impl TierStore for PgStore {
    async fn put_tiers(&self, company: &CompanyId, scheme: TierScheme, actor: &str, now_ms: i64) -> StoreResult<u64> {
        let (company, actor) = (company.clone(), actor.to_owned());
        let outcome = self
            .core
            .transact(move |tx| {
                let (company, scheme, actor) = (company.clone(), scheme.clone(), actor.clone());
                Box::pin(async move { tiers::put(&mut PgTx(tx), &company, &scheme, &actor, now_ms).await })
            })
            .await;
        // At once in this process; other processes clear on the notification.
        self.core.caches.configs.clear();
        outcome
    }

    async fn tiers(&self, company: &CompanyId) -> StoreResult<Option<StoredScheme>> {
        stored(&self.core.client().await?, company).await
    }

    async fn delete_tiers(&self, company: &CompanyId) -> StoreResult<()> {
        let company = company.clone();
        let outcome = self
            .core
            .transact(move |tx| {
                let company = company.clone();
                Box::pin(async move { tiers::delete(&mut PgTx(tx), &company).await })
            })
            .await;
        self.core.caches.configs.clear();
        outcome
    }

    async fn set_tier_floor(&self, company: &CompanyId, user: &UserId, floor: Option<String>, reason: Option<String>, now_ms: i64) -> StoreResult<MemberTier> {
        let (company, who) = (company.clone(), user.clone());
        let outcome = self
            .core
            .transact(move |tx| {
                let (company, user, floor, reason) = (company.clone(), who.clone(), floor.clone(), reason.clone());
                Box::pin(async move { tiers::floor(&mut PgTx(tx), &company, &user, (floor, reason), now_ms).await })
            })
            .await;
        self.core.balances_changed([user.as_str()]);
        outcome
    }

    async fn member_tier(&self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Option<MemberTier>> {
        let client = self.core.client().await?;
        let Some(scheme) = scheme(&client, company).await? else { return Ok(None) };
        let q = qualifying(&client, user, scheme.window_start(now_ms)).await?;
        Ok(Some(tiers::member_tier(&scheme, &state(&client, user).await?, q)))
    }

    async fn tier_history(&self, company: &CompanyId, user: &UserId, limit: i64) -> StoreResult<Vec<TierHistory>> {
        let client = self.core.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT kind, from_tier, to_tier, qualifying_coins, tier_expires_at, cause, request_id, created_at FROM tier_changes \
                 WHERE user_id = $1 AND company_id = $2 ORDER BY change_id DESC LIMIT $3",
            )
            .await?;
        Ok(client
            .query(&stmt, &[&user.as_str(), &company.as_str(), &limit])
            .await?
            .iter()
            .map(|r| TierHistory {
                kind: r.get(0),
                from: r.get(1),
                to: r.get(2),
                qualifying: r.get(3),
                expires_at: r.get(4),
                cause: r.get(5),
                request_id: r.get(6),
                at: r.get(7),
            })
            .collect())
    }

    async fn tiers_between(&self, company: &CompanyId, (first, last): (&str, &str), at_ms: Option<i64>) -> StoreResult<HashMap<String, String>> {
        let client = self.core.client().await?;
        let Some(scheme) = scheme(&client, company).await? else { return Ok(HashMap::new()) };
        let stmt = client.prepare_cached(&dollars(TIERS_NOW_SQL)).await?;
        let now = client.query(&stmt, &[&company.as_str(), &first, &last]).await?.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let at = match at_ms {
            Some(at) => {
                let stmt = client.prepare_cached(&dollars(TIERS_AT_SQL)).await?;
                Some(client.query(&stmt, &[&company.as_str(), &first, &last, &at]).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
            }
            None => None,
        };
        Ok(tiers::codes(&scheme, now, at))
    }

    async fn tier_counts(&self, company: &CompanyId) -> StoreResult<Vec<TierCount>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached("SELECT tier_code, tier_floor, COUNT(*) FROM users WHERE company_id = $1 GROUP BY tier_code, tier_floor").await?;
        Ok(client.query(&stmt, &[&company.as_str()]).await?.iter().map(|r| TierCount { code: r.get(0), floor: r.get(1), members: r.get(2) }).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::SchemeTexts;

    const GOLD: &str = r#"{"basis":"LIFETIME","windowDays":null,"retentionDays":null,"downgrade":"NEVER","tiers":[
        {"code":"BASE","name":"Base","threshold":0,"earnMultiplierBps":10000},{"code":"GOLD","name":"Gold","threshold":100,"earnMultiplierBps":15000}]}"#;

    #[test]
    fn a_scheme_text_is_parsed_once_and_again_when_it_changes() {
        let texts = SchemeTexts::default();
        let first = texts.parse("C1", GOLD).expect("a readable scheme");
        assert_eq!(first.tiers[1].earn_multiplier_bps, 15_000);
        assert!(Arc::ptr_eq(&first, &texts.parse("C1", GOLD).unwrap()), "the same text is not parsed again");
        // Another company with the same text has its own entry.
        assert!(!Arc::ptr_eq(&first, &texts.parse("C2", GOLD).unwrap()));
        let changed = GOLD.replace("15000", "20000");
        let second = texts.parse("C1", &changed).unwrap();
        assert_eq!(second.tiers[1].earn_multiplier_bps, 20_000);
        assert!(Arc::ptr_eq(&second, &texts.parse("C1", &changed).unwrap()));
        assert!(texts.parse("C1", "{").is_err(), "an unreadable text is an error, not the last scheme");
        assert_eq!(texts.parse("C1", &changed).unwrap().tiers[1].earn_multiplier_bps, 20_000);
    }

    #[test]
    fn past_its_bound_the_memory_starts_over() {
        let texts = SchemeTexts::default();
        let kept = texts.parse("C0", GOLD).unwrap();
        for n in 1..SchemeTexts::COMPANIES_MAX {
            texts.parse(&format!("C{n}"), GOLD).unwrap();
        }
        assert!(Arc::ptr_eq(&kept, &texts.parse("C0", GOLD).unwrap()), "within the bound");
        texts.parse("ONE MORE", GOLD).unwrap();
        assert_eq!(texts.0.lock().unwrap().len(), 1, "cleared, then the new company kept");
        assert!(!Arc::ptr_eq(&kept, &texts.parse("C0", GOLD).unwrap()));
    }
}
