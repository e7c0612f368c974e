//! Bonus campaigns in storage: created, read, edited and deleted in one order for both backends
//! (the rules are `domain::campaigns`). A change is announced like a configuration change, since
//! allocations read a company's campaigns with its configuration from the same cache.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::campaigns::{self, Campaign, CampaignId, CampaignPatch, CampaignTerms, ChangeRefused, Reward};
use crate::domain::{CompanyId, EventName, Refusal};

#[async_trait]
pub trait CampaignStore: Send + Sync {
    async fn create_campaign(&self, company: &CompanyId, terms: CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<Campaign>;
    /// The company's campaigns, newest first.
    async fn campaigns(&self, company: &CompanyId) -> StoreResult<Vec<Campaign>>;
    async fn campaign(&self, id: CampaignId) -> StoreResult<Option<Campaign>>;
    /// Applies `patch` if the campaign may still change that way at `now_ms`.
    async fn update_campaign(&self, id: CampaignId, patch: CampaignPatch, actor: &str, now_ms: i64) -> StoreResult<Campaign>;
    /// Deletes a campaign that has not started.
    async fn delete_campaign(&self, id: CampaignId, now_ms: i64) -> StoreResult<()>;
    /// How many allocations each of the company's campaigns applied to.
    async fn campaign_triggers(&self, company: &CompanyId) -> StoreResult<Vec<(CampaignId, i64)>>;
}

/// The columns of a stored campaign, in the order both backends select them.
pub(crate) const CAMPAIGN_COLUMNS: &str =
    "seq, company_id, name, events, starts_at, ends_at, multiplier_bps, bonus_coins, max_triggers_per_user, created_at, updated_at";

/// A campaign as stored.
pub(crate) struct CampaignRow {
    pub seq: i64,
    pub company: String,
    pub terms: TermsColumns,
    pub created_at: i64,
    pub updated_at: i64,
}

impl CampaignRow {
    pub fn into_campaign(self) -> Campaign {
        Campaign {
            id: CampaignId::from_seq(self.seq),
            company: CompanyId::from_trusted(self.company),
            terms: self.terms.into_terms(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A campaign's terms as stored, in the order both backends select and bind them: name, events
/// (comma-separated: event names hold no commas; `NULL` for all), starts_at, ends_at,
/// multiplier_bps, bonus_coins, max_triggers_per_user. Written after the key (`company_id` on
/// insert, `seq` on update).
pub(crate) struct TermsColumns {
    pub name: String,
    pub events: Option<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub multiplier_bps: Option<i64>,
    pub bonus_coins: Option<i64>,
    pub max_triggers_per_user: Option<i64>,
}

impl TermsColumns {
    pub fn of(t: &CampaignTerms) -> Self {
        Self {
            name: t.name.clone(),
            events: t.events.as_ref().map(|e| e.iter().map(EventName::as_str).collect::<Vec<_>>().join(",")),
            starts_at: t.starts_at,
            ends_at: t.ends_at,
            multiplier_bps: t.reward.multiplier_bps(),
            bonus_coins: t.reward.bonus_coins(),
            max_triggers_per_user: t.max_triggers_per_user,
        }
    }

    fn into_terms(self) -> CampaignTerms {
        let reward = match (self.multiplier_bps, self.bonus_coins) {
            (Some(bps), _) => Reward::Multiplier(bps),
            (None, coins) => Reward::Bonus(coins.unwrap_or(0)),
        };
        CampaignTerms {
            name: self.name,
            events: self.events.map(|e| e.split(',').map(|n| EventName::from_trusted(n.to_owned())).collect()),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            reward,
            max_triggers_per_user: self.max_triggers_per_user,
        }
    }
}

/// The fetches and writes of a campaign change, inside one database transaction.
pub(crate) trait CampaignTx {
    /// The stored campaign, locked until the commit.
    async fn campaign_for_update(&mut self, id: CampaignId) -> StoreResult<Option<Campaign>>;
    async fn insert_campaign(&mut self, company: &CompanyId, terms: &CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<CampaignId>;
    async fn update_campaign(&mut self, id: CampaignId, terms: &CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<()>;
    async fn delete_campaign(&mut self, id: CampaignId) -> StoreResult<()>;
    /// Tells other processes that a company's campaigns changed (delivered with the commit).
    async fn announce_change(&mut self) -> StoreResult<()>;
}

fn refused(id: CampaignId, why: ChangeRefused) -> Refusal {
    match why {
        ChangeRefused::Started => Refusal::CampaignStarted(id),
        ChangeRefused::Invalid(sentence) => Refusal::CampaignInvalid(sentence),
    }
}

pub(crate) async fn create<T: CampaignTx>(tx: &mut T, company: &CompanyId, terms: CampaignTerms, actor: &str, now_ms: i64) -> StoreResult<Campaign> {
    let id = tx.insert_campaign(company, &terms, actor, now_ms).await?;
    tx.announce_change().await?;
    Ok(Campaign { id, company: company.clone(), terms, created_at: now_ms, updated_at: now_ms })
}

pub(crate) async fn update<T: CampaignTx>(tx: &mut T, id: CampaignId, patch: &CampaignPatch, actor: &str, now_ms: i64) -> StoreResult<Campaign> {
    let before = tx.campaign_for_update(id).await?.ok_or_else(|| Refusal::CampaignNotFound(id.to_string()))?;
    let terms = campaigns::patched(&before, patch, now_ms).map_err(|why| refused(id, why))?;
    tx.update_campaign(id, &terms, actor, now_ms).await?;
    tx.announce_change().await?;
    Ok(Campaign { terms, updated_at: now_ms, ..before })
}

pub(crate) async fn delete<T: CampaignTx>(tx: &mut T, id: CampaignId, now_ms: i64) -> StoreResult<()> {
    let before = tx.campaign_for_update(id).await?.ok_or_else(|| Refusal::CampaignNotFound(id.to_string()))?;
    campaigns::deletable(&before, now_ms).map_err(|why| refused(id, why))?;
    tx.delete_campaign(id).await?;
    tx.announce_change().await
}
