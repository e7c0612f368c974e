//! Bonus campaigns on PostgreSQL. A change sends `NOTIFY coins_configs` in its transaction, as a
//! configuration change does: every process drops its cached resolutions, which carry campaigns.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::listen::CONFIGS_CHANNEL;
use super::{PgStore, PgTx};
use crate::domain::CompanyId;
use crate::domain::campaigns::{Campaign, CampaignId, CampaignPatch, CampaignTerms};
use crate::store::campaigns::{self, CAMPAIGN_COLUMNS, CampaignRow, CampaignStore, CampaignTx, TermsColumns};
use crate::store::{StoreError, StoreResult};

fn campaign_from_row(r: &Row) -> Campaign {
    CampaignRow {
        seq: r.get(0),
        company: r.get(1),
        terms: TermsColumns {
            name: r.get(2),
            events: r.get(3),
            starts_at: r.get(4),
            ends_at: r.get(5),
            multiplier_bps: r.get(6),
            bonus_coins: r.get(7),
            max_triggers_per_user: r.get(8),
        },
        created_at: r.get(9),
        updated_at: r.get(10),
    }
    .into_campaign()
}

/// The campaigns of `companies` that had not ended at `since_ms` (what allocations resolve with).
pub(super) async fn running(client: &impl GenericClient, companies: &[&str], since_ms: i64) -> StoreResult<Vec<Campaign>> {
    let stmt = client.prepare_cached(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE company_id = ANY($1) AND ends_at > $2")).await?;
    Ok(client.query(&stmt, &[&companies, &since_ms]).await?.iter().map(campaign_from_row).collect())
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// `$1` the key (company or seq), `$2`..`$8` the terms, `$9` the actor, `$10` the time.
fn terms_params<'a>(key: Param<'a>, c: &'a TermsColumns, actor: &'a &str, now_ms: &'a i64) -> [Param<'a>; 10] {
    [key, &c.name, &c.events, &c.starts_at, &c.ends_at, &c.multiplier_bps, &c.bonus_coins, &c.max_triggers_per_user, actor, now_ms]
}

impl CampaignTx for PgTx<'_> {
    async fn campaign_for_update(&mut self, id: CampaignId) -> StoreResult<Option<Campaign>> {
        let stmt = self.0.prepare_cached(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE seq = $1 FOR UPDATE")).await?;
        Ok(self.0.query_opt(&stmt, &[&id.seq()]).await?.as_ref().map(campaign_from_row))
    }

    async fn insert_campaign(&mut self, company: &CompanyId, t: &CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<CampaignId> {
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO campaigns (company_id, name, events, starts_at, ends_at, multiplier_bps, bonus_coins, max_triggers_per_user, \
                 created_by, created_at, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9, $10) RETURNING seq",
            )
            .await?;
        let (c, company) = (TermsColumns::of(t), company.as_str());
        let row = self.0.query_one(&stmt, &terms_params(&company, &c, &actor, &now_ms)).await?;
        Ok(CampaignId::from_seq(row.get(0)))
    }

    async fn update_campaign(&mut self, id: CampaignId, t: &CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE campaigns SET name = $2, events = $3, starts_at = $4, ends_at = $5, multiplier_bps = $6, bonus_coins = $7, \
                 max_triggers_per_user = $8, updated_by = $9, updated_at = $10 WHERE seq = $1",
            )
            .await?;
        let (c, seq) = (TermsColumns::of(t), id.seq());
        self.0.execute(&stmt, &terms_params(&seq, &c, &actor, &now_ms)).await?;
        Ok(())
    }

    async fn delete_campaign(&mut self, id: CampaignId) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("DELETE FROM campaigns WHERE seq = $1").await?;
        self.0.execute(&stmt, &[&id.seq()]).await?;
        Ok(())
    }

    async fn announce_change(&mut self) -> StoreResult<()> {
        self.0.execute("SELECT pg_notify($1, '')", &[&CONFIGS_CHANNEL]).await?;
        Ok(())
    }
}

#[async_trait]
impl CampaignStore for PgStore {
    async fn create_campaign(&self, company: &CompanyId, terms: CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<Campaign> {
        let (company, actor) = (company.clone(), actor.to_owned());
        let outcome = self
            .core
            .transact(move |tx| {
                let (company, terms, actor) = (company.clone(), terms.clone(), actor.clone());
                Box::pin(async move { campaigns::create(&mut PgTx(tx), &company, terms, &actor, now_ms).await })
            })
            .await;
        // At once in this process; other processes clear on the notification.
        self.core.caches.configs.clear();
        outcome
    }

    async fn campaigns(&self, company: &CompanyId) -> StoreResult<Vec<Campaign>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE company_id = $1 ORDER BY seq DESC")).await?;
        Ok(client.query(&stmt, &[&company.as_str()]).await?.iter().map(campaign_from_row).collect())
    }

    async fn campaign(&self, id: CampaignId) -> StoreResult<Option<Campaign>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE seq = $1")).await?;
        Ok(client.query_opt(&stmt, &[&id.seq()]).await?.as_ref().map(campaign_from_row))
    }

    async fn update_campaign(&self, id: CampaignId, patch: CampaignPatch, actor: &str, now_ms: i64) -> StoreResult<Campaign> {
        let actor = actor.to_owned();
        let outcome = self
            .core
            .transact(move |tx| {
                let (patch, actor) = (patch.clone(), actor.clone());
                Box::pin(async move { campaigns::update(&mut PgTx(tx), id, &patch, &actor, now_ms).await })
            })
            .await;
        self.core.caches.configs.clear();
        outcome
    }

    async fn delete_campaign(&self, id: CampaignId, now_ms: i64) -> StoreResult<()> {
        let outcome = self.core.transact(move |tx| Box::pin(async move { campaigns::delete(&mut PgTx(tx), id, now_ms).await })).await;
        self.core.caches.configs.clear();
        outcome
    }

    async fn campaign_triggers(&self, company: &CompanyId) -> StoreResult<Vec<(CampaignId, i64)>> {
        let client = self.core.client().await?;
        let stmt =
            client.prepare_cached("SELECT campaign_id, COUNT(*) FROM requests WHERE company_id = $1 AND campaign_id IS NOT NULL GROUP BY campaign_id").await?;
        client
            .query(&stmt, &[&company.as_str()])
            .await?
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                CampaignId::parse(&id).map(|c| (c, r.get(1))).ok_or_else(|| StoreError::Corrupt(format!("an allocation names campaign {id}")))
            })
            .collect()
    }
}
