//! Bonus campaigns on SQLite (changes on the writer, which clears its configuration cache after
//! every batch of such jobs).

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::{SqliteStore, SqliteTx};
use crate::domain::CompanyId;
use crate::domain::campaigns::{Campaign, CampaignId, CampaignPatch, CampaignTerms};
use crate::store::campaigns::{self, CAMPAIGN_COLUMNS, CampaignRow, CampaignStore, CampaignTx, TermsColumns};
use crate::store::ledger::run_now;
use crate::store::{StoreError, StoreResult};

fn campaign_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Campaign> {
    Ok(CampaignRow {
        seq: r.get(0)?,
        company: r.get(1)?,
        terms: TermsColumns {
            name: r.get(2)?,
            events: r.get(3)?,
            starts_at: r.get(4)?,
            ends_at: r.get(5)?,
            multiplier_bps: r.get(6)?,
            bonus_coins: r.get(7)?,
            max_triggers_per_user: r.get(8)?,
        },
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    }
    .into_campaign())
}

fn campaign_by_id(conn: &Connection, id: CampaignId) -> StoreResult<Option<Campaign>> {
    Ok(conn.prepare_cached(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE seq = ?1"))?.query_row(params![id.seq()], campaign_from_row).optional()?)
}

/// The company's campaigns that had not ended at `since_ms` (what allocations resolve with).
pub(super) fn running(conn: &Connection, company: &CompanyId, since_ms: i64) -> StoreResult<Vec<Campaign>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE company_id = ?1 AND ends_at > ?2"))?
        .query_map(params![company.as_str(), since_ms], campaign_from_row)?
        .collect::<Result<_, _>>()?)
}

/// `?1` the key (company or seq), `?2`..`?8` the terms, `?9` the actor, `?10` the time.
fn terms_params(key: Value, t: &CampaignTerms, actor: &str, now_ms: i64) -> [Value; 10] {
    let c = TermsColumns::of(t);
    [
        key,
        c.name.into(),
        c.events.into(),
        c.starts_at.into(),
        c.ends_at.into(),
        c.multiplier_bps.into(),
        c.bonus_coins.into(),
        c.max_triggers_per_user.into(),
        actor.to_owned().into(),
        now_ms.into(),
    ]
}

impl CampaignTx for SqliteTx<'_> {
    async fn campaign_for_update(&mut self, id: CampaignId) -> StoreResult<Option<Campaign>> {
        // The writer thread is the only writer: nothing else can change it before the commit.
        campaign_by_id(self.0, id)
    }

    async fn insert_campaign(&mut self, company: &CompanyId, t: &CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<CampaignId> {
        self.0
            .prepare_cached(
                "INSERT INTO campaigns (company_id, name, events, starts_at, ends_at, multiplier_bps, bonus_coins, max_triggers_per_user, \
                 created_by, created_at, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9, ?10)",
            )?
            .execute(params_from_iter(terms_params(company.to_string().into(), t, actor, now_ms)))?;
        Ok(CampaignId::from_seq(self.0.last_insert_rowid()))
    }

    async fn update_campaign(&mut self, id: CampaignId, t: &CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "UPDATE campaigns SET name = ?2, events = ?3, starts_at = ?4, ends_at = ?5, multiplier_bps = ?6, bonus_coins = ?7, \
                 max_triggers_per_user = ?8, updated_by = ?9, updated_at = ?10 WHERE seq = ?1",
            )?
            .execute(params_from_iter(terms_params(id.seq().into(), t, actor, now_ms)))?;
        Ok(())
    }

    async fn delete_campaign(&mut self, id: CampaignId) -> StoreResult<()> {
        self.0.prepare_cached("DELETE FROM campaigns WHERE seq = ?1")?.execute(params![id.seq()])?;
        Ok(())
    }

    async fn announce_change(&mut self) -> StoreResult<()> {
        // The writer clears its configuration cache after every batch of generic jobs.
        Ok(())
    }
}

#[async_trait]
impl CampaignStore for SqliteStore {
    async fn create_campaign(&self, company: &CompanyId, terms: CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<Campaign> {
        let (company, actor) = (company.clone(), actor.to_owned());
        self.write(move |conn| run_now(campaigns::create(&mut SqliteTx(conn), &company, terms, &actor, now_ms))).await
    }

    async fn campaigns(&self, company: &CompanyId) -> StoreResult<Vec<Campaign>> {
        let company = company.clone();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE company_id = ?1 ORDER BY seq DESC"))?
                .query_map(params![company.as_str()], campaign_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn campaign(&self, id: CampaignId) -> StoreResult<Option<Campaign>> {
        self.read(move |conn| campaign_by_id(conn, id)).await
    }

    async fn update_campaign(&self, id: CampaignId, patch: CampaignPatch, actor: &str, now_ms: i64) -> StoreResult<Campaign> {
        let actor = actor.to_owned();
        self.write(move |conn| run_now(campaigns::update(&mut SqliteTx(conn), id, &patch, &actor, now_ms))).await
    }

    async fn delete_campaign(&self, id: CampaignId, now_ms: i64) -> StoreResult<()> {
        self.write(move |conn| run_now(campaigns::delete(&mut SqliteTx(conn), id, now_ms))).await
    }

    async fn campaign_triggers(&self, company: &CompanyId) -> StoreResult<Vec<(CampaignId, i64)>> {
        let company = company.clone();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(CAMPAIGN_TRIGGERS_SQL)?
                .query_map(params![company.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(id, n)| CampaignId::parse(&id).map(|id| (id, n)).ok_or_else(|| StoreError::Corrupt(format!("an allocation names campaign {id}"))))
                .collect()
        })
        .await
    }
}

/// How many allocations each campaign of a company applied to, from `requests_by_campaign`: by
/// campaign alone, so each campaign's new allocations land on its last page.
pub(super) const CAMPAIGN_TRIGGERS_SQL: &str =
    "SELECT campaign_id, COUNT(*) FROM requests WHERE company_id = ?1 AND campaign_id IS NOT NULL GROUP BY campaign_id";
