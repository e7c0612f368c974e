//! Status tiers on PostgreSQL. A scheme change sends `NOTIFY coins_configs` in its transaction,
//! as a configuration change does: every process drops its cached resolutions, which carry the
//! scheme.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::listen::CONFIGS_CHANNEL;
use super::reports::record_from_row;
use super::{PgStore, PgTx};
use crate::domain::tiers::{TierScheme, TierState};
use crate::domain::{CompanyId, UserId};
use crate::store::model::{RECORD_COLUMNS, RECORD_FROM, RecordRow};
use crate::store::tiers::{self, MemberTier, StoredScheme, TIER_COLUMNS, TIERS_AT_SQL, TIERS_NOW_SQL, TierCount, TierHistory, TierStore, TierTx};
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

/// The schemes of `companies` (what allocations resolve with).
pub(super) async fn schemes(client: &impl GenericClient, companies: &[&str]) -> StoreResult<Vec<(String, TierScheme)>> {
    let stmt = client.prepare_cached("SELECT company_id, scheme FROM tier_schemes WHERE company_id = ANY($1)").await?;
    client
        .query(&stmt, &[&companies])
        .await?
        .iter()
        .map(|r| {
            let company: String = r.get(0);
            let scheme = parse_scheme(&company, r.get(1))?;
            Ok((company, scheme))
        })
        .collect()
}

pub(super) async fn state(client: &impl GenericClient, user: &UserId) -> StoreResult<TierState> {
    let stmt = client.prepare_cached(&format!("SELECT {TIER_COLUMNS} FROM users WHERE user_id = $1")).await?;
    Ok(client
        .query_opt(&stmt, &[&user.as_str()])
        .await?
        .map(|r| TierState { code: r.get(0), entered_at: r.get(1), expires_at: r.get(2), cause: r.get(3), floor: r.get(4), floor_reason: r.get(5) })
        .unwrap_or_default())
}

pub(super) async fn qualifying(client: &impl GenericClient, user: &UserId, since_ms: Option<i64>) -> StoreResult<i64> {
    Ok(match since_ms {
        None => {
            let stmt = client.prepare_cached("SELECT qualifying_total FROM users WHERE user_id = $1").await?;
            client.query_opt(&stmt, &[&user.as_str()]).await?.map_or(0, |r| r.get(0))
        }
        Some(since) => {
            let stmt = client.prepare_cached("SELECT COALESCE(SUM(coins), 0)::BIGINT FROM qualifying_coins WHERE user_id = $1 AND earned_at >= $2").await?;
            client.query_one(&stmt, &[&user.as_str(), &since]).await?.get(0)
        }
    })
}

/// Waits for every ledger write under way to commit and holds off new ones until this
/// transaction ends. Every ledger flow writes `requests` (a claim, or an activation's record)
/// before it reads whether the company has a scheme, so none can decide without a scheme that this
/// transaction sets up, or count coins for one it removes, and the history counted here is all of
/// it. Every company's writes wait meanwhile: setting a scheme up is rare and counted in one pass.
async fn hold_the_ledger(tx: &tokio_postgres::Transaction<'_>) -> StoreResult<()> {
    tx.batch_execute("LOCK TABLE requests IN SHARE MODE").await?;
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

    async fn reset_qualifying(&mut self, company: &CompanyId) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("DELETE FROM qualifying_coins WHERE company_id = $1").await?;
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

    async fn members_to_place(&mut self, company: &CompanyId) -> StoreResult<Vec<UserId>> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT user_id FROM users WHERE company_id = $1 AND (qualifying_total <> 0 OR tier_code IS NOT NULL OR tier_floor IS NOT NULL) ORDER BY 1",
            )
            .await?;
        Ok(self.0.query(&stmt, &[&company.as_str()]).await?.iter().map(|r| UserId::from_trusted(r.get(0))).collect())
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
