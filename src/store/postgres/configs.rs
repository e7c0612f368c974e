//! Coin configurations, their audit trail and coin values on PostgreSQL, and the resolution of
//! allocation batches (cached per process, see `store/config_cache.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::listen::{CONFIGS_CHANNEL, Caches};
use super::{PgStore, PgTx};
use crate::domain::allocate::AllocateCmd;
use crate::domain::config::{self as cfg, ConfigValues, Earning};
use crate::domain::earn::{AmountType, Rounding};
use crate::domain::redeem::CoinValue;
use crate::domain::{CoinConfig, CoinConfigId, Coins, CompanyId, ConfigKind, EventName};
use crate::store::config_cache::{Resolved, campaigns_since};
use crate::store::configs::{self, ConfigTx};
use crate::store::model::{coin_value_from, coin_value_key};
use crate::store::{AuditRecord, ConfigFilter, ConfigStore, StoreError, StoreResult};

pub(super) const CONFIG_COLUMNS: &str = "seq, configuration, company_id, event, amount, validity_days, max_per_user_per_day, max_per_user, active, version, \
     amount_type, rate_bps, min_amount_minor, max_coins_per_allocation, rounding, pending_days, tier_multiplier";

pub(super) fn config_from_row(row: &Row) -> CoinConfig {
    CoinConfig {
        id: CoinConfigId::from_seq(row.get(0)),
        values: ConfigValues {
            kind: ConfigKind::parse(row.get(1)).unwrap_or(ConfigKind::Custom),
            company_id: CompanyId::from_trusted(row.get(2)),
            event: EventName::from_trusted(row.get(3)),
            amount: row.get::<_, Option<i64>>(4).map(Coins::from_stored),
            earning: Earning {
                amount_type: AmountType::parse(row.get(10)).unwrap_or(AmountType::Fixed),
                rate_bps: row.get(11),
                min_amount_minor: row.get(12),
                max_coins_per_allocation: row.get(13),
                rounding: Rounding::parse(row.get(14)).unwrap_or(Rounding::Floor),
                pending_days: row.get(15),
                tier_multiplier: row.get(16),
            },
            validity_days: row.get(5),
            max_per_user_per_day: row.get(6),
            max_per_user: row.get(7),
            active: row.get(8),
        },
        version: row.get(9),
    }
}

async fn slot_holder(client: &impl GenericClient, values: &ConfigValues, except: Option<CoinConfigId>) -> StoreResult<Option<CoinConfigId>> {
    let except = except.map_or(-1, CoinConfigId::seq);
    let row = match values.kind {
        ConfigKind::Default => {
            let stmt = client.prepare_cached("SELECT seq FROM coin_configs WHERE configuration = 'DEFAULT' AND event = $1 AND seq <> $2").await?;
            client.query_opt(&stmt, &[&values.event.as_str(), &except]).await?
        }
        ConfigKind::Custom => {
            let stmt =
                client.prepare_cached("SELECT seq FROM coin_configs WHERE configuration = 'CUSTOM' AND company_id = $1 AND event = $2 AND seq <> $3").await?;
            client.query_opt(&stmt, &[&values.company_id.as_str(), &values.event.as_str(), &except]).await?
        }
    };
    Ok(row.map(|r| CoinConfigId::from_seq(r.get(0))))
}

pub(super) async fn coin_value_in(client: &impl GenericClient, company: Option<&CompanyId>) -> StoreResult<CoinValue> {
    let stmt = client
        .prepare_cached("SELECT company_id, currency, minor_units_per_coin FROM coin_values WHERE company_id IN ($1, '') ORDER BY company_id DESC LIMIT 1")
        .await?;
    let row = client.query_opt(&stmt, &[&coin_value_key(company)]).await?;
    Ok(coin_value_from(row.map(|r| (r.get(0), r.get(1), r.get(2)))))
}

/// What each allocation resolves to — its configuration, its company's campaigns for the event,
/// tier scheme and coin value — from the cache where possible; the misses are resolved with one
/// query each for configurations, campaigns, tier schemes and coin values, and cached. One
/// resolution per (company, event) per batch, so every item of a pair is decided under the same
/// configuration.
pub(super) async fn resolve_batch(tx: &Transaction<'_>, cmds: &[AllocateCmd], caches: &Caches) -> StoreResult<Vec<Resolved>> {
    let mut resolved: HashMap<(&str, &str), Resolved> = HashMap::new();
    let mut missing: Vec<(&str, &str)> = Vec::new();
    for cmd in cmds {
        let key = (cmd.company.as_str(), cmd.event.as_str());
        if resolved.contains_key(&key) || missing.contains(&key) {
            continue;
        }
        match caches.configs.get(key.0, key.1) {
            Some(hit) => {
                resolved.insert(key, hit);
            }
            None => missing.push(key),
        }
    }
    if !missing.is_empty() {
        let generation = caches.configs.generation();
        let events: Vec<&str> = missing.iter().map(|k| k.1).collect();
        let companies: Vec<&str> = missing.iter().map(|k| k.0).collect();
        let stmt = tx
            .prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE event = ANY($1) AND (configuration = 'DEFAULT' OR company_id = ANY($2))"))
            .await?;
        let candidates: Vec<CoinConfig> = tx.query(&stmt, &[&events, &companies]).await?.iter().map(config_from_row).collect();
        let earliest = cmds.iter().map(|c| c.now_ms).min().unwrap_or(0);
        let campaigns = super::campaigns::running(tx, &companies, campaigns_since(earliest)).await?;
        let schemes = super::tiers::schemes(tx, &companies, &caches.schemes).await?;
        let stmt =
            tx.prepare_cached("SELECT company_id, currency, minor_units_per_coin FROM coin_values WHERE company_id = ANY($1) OR company_id = ''").await?;
        let values: HashMap<String, (String, String, i64)> =
            tx.query(&stmt, &[&companies]).await?.iter().map(|r| (r.get(0), (r.get(0), r.get(1), r.get(2)))).collect();
        let mut fills = Vec::with_capacity(missing.len());
        for (company, event) in missing {
            let custom =
                candidates.iter().find(|c| c.values.kind == ConfigKind::Custom && c.values.company_id.as_str() == company && c.values.event.as_str() == event);
            let default = candidates.iter().find(|c| c.values.kind == ConfigKind::Default && c.values.event.as_str() == event);
            let event_name = EventName::from_trusted(event.to_owned());
            let theirs = campaigns.iter().filter(|c| c.company.as_str() == company && c.terms.applies_to(&event_name)).cloned().collect();
            let tiers = schemes.iter().find(|(c, _)| c == company).map(|(_, s)| s.clone());
            let value = Some(coin_value_from(values.get(company).or_else(|| values.get("")).cloned()));
            let value = Resolved { config: cfg::resolve(custom, default).cloned(), campaigns: Arc::new(theirs), tiers, value, webhook_events: None };
            fills.push((company.to_owned(), event.to_owned(), value.clone()));
            resolved.insert((company, event), value);
        }
        caches.configs.fill(generation, fills);
    }
    Ok(cmds.iter().map(|c| resolved.get(&(c.company.as_str(), c.event.as_str())).cloned().unwrap_or_default()).collect())
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// A configuration's text and number columns, borrowed for binding.
struct Columns<'a> {
    kind: &'a str,
    company: &'a str,
    event: &'a str,
    amount: Option<i64>,
    amount_type: &'a str,
    rounding: &'a str,
}

impl<'a> Columns<'a> {
    fn of(v: &'a ConfigValues) -> Self {
        Self {
            kind: v.kind.as_str(),
            company: v.company_id.as_str(),
            event: v.event.as_str(),
            amount: v.amount.map(Coins::get),
            amount_type: v.earning.amount_type.as_str(),
            rounding: v.earning.rounding.as_str(),
        }
    }

    /// As bound by insert and update: `$1`..`$8`, the time as `$9`, then how it earns as
    /// `$10`..`$16`.
    fn params(&'a self, v: &'a ConfigValues, now_ms: &'a i64) -> [Param<'a>; 16] {
        let e = &v.earning;
        [
            &self.kind,
            &self.company,
            &self.event,
            &self.amount,
            &v.validity_days,
            &v.max_per_user_per_day,
            &v.max_per_user,
            &v.active,
            now_ms,
            &self.amount_type,
            &e.rate_bps,
            &e.min_amount_minor,
            &e.max_coins_per_allocation,
            &self.rounding,
            &e.pending_days,
            &e.tier_multiplier,
        ]
    }
}

impl ConfigTx for PgTx<'_> {
    async fn slot_holder(&mut self, values: &ConfigValues, except: Option<CoinConfigId>) -> StoreResult<Option<CoinConfigId>> {
        slot_holder(self.0, values, except).await
    }

    async fn config_for_update(&mut self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>> {
        let stmt = self.0.prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE seq = $1 FOR UPDATE")).await?;
        Ok(self.0.query_opt(&stmt, &[&id.seq()]).await?.as_ref().map(config_from_row))
    }

    async fn insert_config(&mut self, v: &ConfigValues, now_ms: i64) -> StoreResult<CoinConfigId> {
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO coin_configs (configuration, company_id, event, amount, validity_days, max_per_user_per_day, \
                 max_per_user, active, version, created_at, updated_at, amount_type, rate_bps, min_amount_minor, max_coins_per_allocation, \
                 rounding, pending_days, tier_multiplier) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9, $10, $11, $12, $13, $14, $15, $16) \
                 RETURNING seq",
            )
            .await?;
        let row = self.0.query_one(&stmt, &Columns::of(v).params(v, &now_ms)).await?;
        Ok(CoinConfigId::from_seq(row.get(0)))
    }

    async fn update_config(&mut self, id: CoinConfigId, v: &ConfigValues, now_ms: i64) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE coin_configs SET configuration = $1, company_id = $2, event = $3, amount = $4, validity_days = $5, \
                 max_per_user_per_day = $6, max_per_user = $7, active = $8, version = version + 1, updated_at = $9, amount_type = $10, \
                 rate_bps = $11, min_amount_minor = $12, max_coins_per_allocation = $13, rounding = $14, pending_days = $15, tier_multiplier = $16 \
                 WHERE seq = $17",
            )
            .await?;
        let (columns, seq) = (Columns::of(v), id.seq());
        let mut params = columns.params(v, &now_ms).to_vec();
        params.push(&seq);
        self.0.execute(&stmt, &params).await?;
        Ok(())
    }

    async fn insert_audit(&mut self, id: CoinConfigId, action: &str, actor: &str, now_ms: i64, before: Option<String>, after: String) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached("INSERT INTO coin_config_audit (seq, action, client_id, at, before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6)")
            .await?;
        self.0.execute(&stmt, &[&id.seq(), &action, &actor, &now_ms, &before, &after]).await?;
        Ok(())
    }

    async fn announce_change(&mut self) -> StoreResult<()> {
        // Delivered to every listening process if and only if the transaction commits.
        self.0.execute("SELECT pg_notify($1, '')", &[&CONFIGS_CHANNEL]).await?;
        Ok(())
    }
}

impl PgStore {
    /// Two processes creating the same configuration at once both pass the slot check; the
    /// unique index stops the second. Name the winner, as a sequential conflict would.
    async fn name_slot_holder(&self, outcome: StoreResult<CoinConfig>, values: &ConfigValues, except: Option<CoinConfigId>) -> StoreResult<CoinConfig> {
        match outcome {
            Err(StoreError::Unique(cause)) => match slot_holder(&self.core.client().await?, values, except).await {
                Ok(Some(existing)) => Err(values.duplicate_of(existing).into()),
                _ => Err(StoreError::Unique(cause)),
            },
            other => other,
        }
    }
}

#[async_trait]
impl ConfigStore for PgStore {
    async fn create_config(&self, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let (v, actor) = (values.clone(), actor.to_owned());
        let outcome = self
            .core
            .transact(move |tx| {
                let (v, actor) = (v.clone(), actor.clone());
                Box::pin(async move { configs::create(&mut PgTx(tx), v, &actor, now_ms).await })
            })
            .await;
        // At once in this process; other processes clear on the notification.
        self.core.caches.configs.clear();
        self.name_slot_holder(outcome, &values, None).await
    }

    async fn get_config(&self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE seq = $1")).await?;
        Ok(client.query_opt(&stmt, &[&id.seq()]).await?.as_ref().map(config_from_row))
    }

    async fn update_config(&self, id: CoinConfigId, expected_version: i64, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let (v, actor) = (values.clone(), actor.to_owned());
        let outcome = self
            .core
            .transact(move |tx| {
                let (v, actor) = (v.clone(), actor.clone());
                Box::pin(async move { configs::update(&mut PgTx(tx), id, expected_version, v, &actor, now_ms).await })
            })
            .await;
        self.core.caches.configs.clear();
        self.name_slot_holder(outcome, &values, Some(id)).await
    }

    async fn list_configs(&self, filter: ConfigFilter) -> StoreResult<Vec<CoinConfig>> {
        let client = self.core.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE ($1::TEXT IS NULL OR company_id = $1) AND ($2::TEXT IS NULL OR event = $2) \
                 AND ($3::TEXT IS NULL OR configuration = $3) ORDER BY seq"
            ))
            .await?;
        let company = filter.company.as_ref().map(CompanyId::as_str);
        let event = filter.event.as_ref().map(EventName::as_str);
        let kind = filter.kind.map(ConfigKind::as_str);
        Ok(client.query(&stmt, &[&company, &event, &kind]).await?.iter().map(config_from_row).collect())
    }

    async fn config_history(&self, id: CoinConfigId) -> StoreResult<Vec<AuditRecord>> {
        let rows = self
            .core
            .client()
            .await?
            .query("SELECT action, client_id, at, before_json, after_json FROM coin_config_audit WHERE seq = $1 ORDER BY audit_id", &[&id.seq()])
            .await?;
        Ok(rows.iter().map(|r| AuditRecord { action: r.get(0), client_id: r.get(1), at_ms: r.get(2), before_json: r.get(3), after_json: r.get(4) }).collect())
    }

    async fn set_coin_value(&self, value: CoinValue, actor: &str, now_ms: i64) -> StoreResult<()> {
        let actor = actor.to_owned();
        let outcome = self
            .core
            .transact(move |tx| {
                let (value, actor) = (value.clone(), actor.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO coin_values (company_id, currency, minor_units_per_coin, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (company_id) DO UPDATE SET currency = excluded.currency, \
                         minor_units_per_coin = excluded.minor_units_per_coin, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                        &[&coin_value_key(value.company.as_ref()), &value.currency, &value.minor_units_per_coin, &actor, &now_ms],
                    )
                    .await?;
                    // Allocations take the coin value from the cached resolution: announced as a
                    // configuration change, delivered if and only if this commits.
                    tx.execute("SELECT pg_notify($1, '')", &[&CONFIGS_CHANNEL]).await?;
                    Ok(())
                })
            })
            .await;
        // At once in this process; other processes clear on the notification.
        self.core.caches.configs.clear();
        outcome
    }

    async fn coin_value(&self, company: Option<&CompanyId>) -> StoreResult<CoinValue> {
        coin_value_in(&self.core.client().await?, company).await
    }
}
