//! Status tiers on SQLite: the scheme, members' tiers and qualifying coins (changes on the
//! writer, which clears its configuration cache after every batch of such jobs).

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::RECORD_FROM;
use super::reports::record_from_row;
use super::{SqliteStore, SqliteTx};
use crate::domain::ledger::Account;
use crate::domain::tiers::{TierChange, TierScheme, TierState, qualifying_day};
use crate::domain::{CompanyId, UserId};
use crate::store::ledger::run_now;
use crate::store::ledger::{LedgerTx, Member};
use crate::store::model::{RECORD_COLUMNS, RecordRow};
use crate::store::tiers::{
    self, ADD_DAY_SQL, MEMBERS_PAGE_SQL, MemberTier, QualifyingDay, StoredScheme, TIER_COLUMNS, TIERS_AT_SQL, TIERS_NOW_SQL, TierCount, TierHistory, TierStore,
    TierTx,
};
use crate::store::{StoreError, StoreResult};

fn parse_scheme(company: &str, text: &str) -> StoreResult<TierScheme> {
    TierScheme::parse(text).ok_or_else(|| StoreError::Corrupt(format!("the tier scheme of company {company} is unreadable")))
}

/// The company's scheme.
pub(super) fn scheme(conn: &Connection, company: &CompanyId) -> StoreResult<Option<TierScheme>> {
    Ok(stored(conn, company)?.map(|s| s.scheme))
}

fn stored(conn: &Connection, company: &CompanyId) -> StoreResult<Option<StoredScheme>> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT scheme, updated_at FROM tier_schemes WHERE company_id = ?1")?
        .query_row(params![company.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(text, updated_at)| Ok(StoredScheme { scheme: parse_scheme(company.as_str(), &text)?, updated_at })).transpose()
}

/// The six [`TIER_COLUMNS`] of a row, from column `at` on.
pub(super) fn tier_state(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<TierState> {
    Ok(TierState {
        code: r.get(at)?,
        entered_at: r.get(at + 1)?,
        expires_at: r.get(at + 2)?,
        cause: r.get(at + 3)?,
        floor: r.get(at + 4)?,
        floor_reason: r.get(at + 5)?,
    })
}

pub(super) fn state(conn: &Connection, user: &UserId) -> StoreResult<TierState> {
    Ok(conn
        .prepare_cached(&format!("SELECT {TIER_COLUMNS} FROM users WHERE user_id = ?1"))?
        .query_row(params![user.as_str()], |r| tier_state(r, 0))
        .optional()?
        .unwrap_or_default())
}

/// The member's account, tier and running total, in one read of their row.
pub(super) fn member(conn: &Connection, user: &UserId) -> StoreResult<Member> {
    Ok(conn
        .prepare_cached(&format!("SELECT company_id, balance, pending_balance, qualifying_total, {TIER_COLUMNS} FROM users WHERE user_id = ?1"))?
        .query_row(params![user.as_str()], |r| {
            Ok(Member {
                account: Some(Account { company: CompanyId::from_trusted(r.get(0)?), balance: r.get(1)?, pending: r.get(2)? }),
                qualifying_total: r.get(3)?,
                tier: tier_state(r, 4)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

pub(super) fn qualifying(conn: &Connection, user: &UserId, since_ms: Option<i64>) -> StoreResult<i64> {
    Ok(match since_ms {
        None => conn
            .prepare_cached("SELECT qualifying_total FROM users WHERE user_id = ?1")?
            .query_row(params![user.as_str()], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
        Some(since) => conn
            .prepare_cached("SELECT COALESCE(SUM(coins), 0) FROM qualifying_days WHERE user_id = ?1 AND day >= ?2")?
            .query_row(params![user.as_str(), qualifying_day(since)], |r| r.get(0))?,
    })
}

impl TierTx for SqliteTx<'_> {
    async fn write_scheme(&mut self, company: &CompanyId, scheme: &TierScheme, actor: &str, now_ms: i64) -> StoreResult<Option<TierScheme>> {
        let before = stored(self.0, company)?.map(|s| s.scheme);
        self.0
            .prepare_cached(
                "INSERT INTO tier_schemes (company_id, scheme, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (company_id) DO UPDATE SET scheme = excluded.scheme, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )?
            .execute(params![company.as_str(), scheme.to_json(), actor, now_ms])?;
        Ok(before)
    }

    async fn add_days(&mut self, company: &CompanyId, days: &[QualifyingDay]) -> StoreResult<()> {
        let mut add = self.0.prepare_cached(ADD_DAY_SQL)?;
        for d in days {
            add.execute(params![d.user.as_str(), d.day, company.as_str(), d.coins])?;
        }
        Ok(())
    }

    async fn days_counted(&mut self, _company: &CompanyId) -> StoreResult<()> {
        // Written as added: a row updated again in the same transaction costs SQLite nothing more.
        Ok(())
    }

    async fn add_totals(&mut self, company: &CompanyId, totals: &[(UserId, i64)]) -> StoreResult<()> {
        let mut update = self.0.prepare_cached("UPDATE users SET qualifying_total = qualifying_total + ?3 WHERE company_id = ?1 AND user_id = ?2")?;
        for (user, n) in totals {
            update.execute(params![company.as_str(), user.as_str(), n])?;
        }
        Ok(())
    }

    async fn reset_qualifying(&mut self, company: &CompanyId) -> StoreResult<()> {
        self.0.prepare_cached("DELETE FROM qualifying_days WHERE company_id = ?1")?.execute(params![company.as_str()])?;
        self.0.prepare_cached("UPDATE users SET qualifying_total = 0 WHERE company_id = ?1 AND qualifying_total <> 0")?.execute(params![company.as_str()])?;
        Ok(())
    }

    async fn remove_scheme(&mut self, company: &CompanyId) -> StoreResult<bool> {
        if self.0.prepare_cached("DELETE FROM tier_schemes WHERE company_id = ?1")?.execute(params![company.as_str()])? == 0 {
            return Ok(false);
        }
        self.reset_qualifying(company).await?;
        self.0
            .prepare_cached(
                "UPDATE users SET tier_code = NULL, tier_entered_at = NULL, tier_expires_at = NULL, tier_cause = NULL, tier_floor = NULL, \
                 tier_floor_reason = NULL WHERE company_id = ?1 AND (tier_code IS NOT NULL OR tier_floor IS NOT NULL)",
            )?
            .execute(params![company.as_str()])?;
        Ok(true)
    }

    async fn credit_records(&mut self, company: &CompanyId, after: &str, limit: i64) -> StoreResult<Vec<RecordRow>> {
        Ok(self
            .0
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM {RECORD_FROM} WHERE r.company_id = ?1 AND r.request_id > ?2 AND r.kind IN ('ALLOCATE', 'ADJUST') \
                 AND r.alias_of IS NULL AND r.coins > 0 ORDER BY r.request_id LIMIT ?3"
            ))?
            .query_map(params![company.as_str(), after, limit], record_from_row)?
            .collect::<Result<_, _>>()?)
    }

    async fn members_page(&mut self, company: &CompanyId, after: &str, limit: i64, since_ms: Option<i64>) -> StoreResult<Vec<(UserId, TierState, i64)>> {
        // The writer thread is the only writer: reading is locking.
        let rows: Vec<(UserId, TierState, i64)> = self
            .0
            .prepare_cached(MEMBERS_PAGE_SQL)?
            .query_map(params![company.as_str(), after, limit], |r| Ok((UserId::from_trusted(r.get(0)?), tier_state(r, 1)?, r.get(7)?)))?
            .collect::<Result<_, _>>()?;
        let Some(since) = since_ms else { return Ok(rows) };
        rows.into_iter().map(|(user, state, _)| Ok((user.clone(), state, qualifying(self.0, &user, Some(since))?))).collect()
    }

    async fn write_tiers(&mut self, company: &CompanyId, tiers: &[(UserId, TierState, Option<TierChange>)], now_ms: i64) -> StoreResult<()> {
        for (user, state, change) in tiers {
            self.set_tier(company, user, state, change.as_ref(), now_ms).await?;
        }
        Ok(())
    }

    async fn announce_tiers_change(&mut self) -> StoreResult<()> {
        // The writer clears its configuration cache after every batch of generic jobs.
        Ok(())
    }
}

#[async_trait]
impl TierStore for SqliteStore {
    async fn put_tiers(&self, company: &CompanyId, scheme: TierScheme, actor: &str, now_ms: i64) -> StoreResult<u64> {
        let (company, actor) = (company.clone(), actor.to_owned());
        self.write(move |conn| run_now(tiers::put(&mut SqliteTx(conn), &company, &scheme, &actor, now_ms))).await
    }

    async fn tiers(&self, company: &CompanyId) -> StoreResult<Option<StoredScheme>> {
        let company = company.clone();
        self.read(move |conn| stored(conn, &company)).await
    }

    async fn delete_tiers(&self, company: &CompanyId) -> StoreResult<()> {
        let company = company.clone();
        self.write(move |conn| run_now(tiers::delete(&mut SqliteTx(conn), &company))).await
    }

    async fn set_tier_floor(&self, company: &CompanyId, user: &UserId, floor: Option<String>, reason: Option<String>, now_ms: i64) -> StoreResult<MemberTier> {
        let (company, user) = (company.clone(), user.clone());
        self.write(move |conn| run_now(tiers::floor(&mut SqliteTx(conn), &company, &user, (floor, reason), now_ms))).await
    }

    async fn member_tier(&self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Option<MemberTier>> {
        let (company, user) = (company.clone(), user.clone());
        self.read(move |conn| {
            let Some(scheme) = scheme(conn, &company)? else { return Ok(None) };
            let q = qualifying(conn, &user, scheme.window_start(now_ms))?;
            Ok(Some(tiers::member_tier(&scheme, &state(conn, &user)?, q)))
        })
        .await
    }

    async fn tier_history(&self, company: &CompanyId, user: &UserId, limit: i64) -> StoreResult<Vec<TierHistory>> {
        let (company, user) = (company.clone(), user.clone());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT kind, from_tier, to_tier, qualifying_coins, tier_expires_at, cause, request_id, created_at FROM tier_changes \
                     WHERE user_id = ?1 AND company_id = ?2 ORDER BY change_id DESC LIMIT ?3",
                )?
                .query_map(params![user.as_str(), company.as_str(), limit], |r| {
                    Ok(TierHistory {
                        kind: r.get(0)?,
                        from: r.get(1)?,
                        to: r.get(2)?,
                        qualifying: r.get(3)?,
                        expires_at: r.get(4)?,
                        cause: r.get(5)?,
                        request_id: r.get(6)?,
                        at: r.get(7)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn tiers_between(&self, company: &CompanyId, (first, last): (&str, &str), at_ms: Option<i64>) -> StoreResult<HashMap<String, String>> {
        let (company, first, last) = (company.clone(), first.to_owned(), last.to_owned());
        self.read(move |conn| {
            let Some(scheme) = scheme(conn, &company)? else { return Ok(HashMap::new()) };
            let now = conn
                .prepare_cached(TIERS_NOW_SQL)?
                .query_map(params![company.as_str(), first, last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let at = match at_ms {
                Some(at) => Some(
                    conn.prepare_cached(TIERS_AT_SQL)?
                        .query_map(params![company.as_str(), first, last, at], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?,
                ),
                None => None,
            };
            Ok(tiers::codes(&scheme, now, at))
        })
        .await
    }

    async fn tier_counts(&self, company: &CompanyId) -> StoreResult<Vec<TierCount>> {
        let company = company.clone();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT tier_code, tier_floor, COUNT(*) FROM users WHERE company_id = ?1 GROUP BY tier_code, tier_floor")?
                .query_map(params![company.as_str()], |r| Ok(TierCount { code: r.get(0)?, floor: r.get(1)?, members: r.get(2)? }))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}
