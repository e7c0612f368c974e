//! Coin configurations, their audit trail and coin values on SQLite.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, SqliteTx};
use crate::domain::config::{self as cfg, ConfigValues, Earning};
use crate::domain::earn::{AmountType, Rounding};
use crate::domain::redeem::CoinValue;
use crate::domain::{CoinConfig, CoinConfigId, Coins, CompanyId, ConfigKind, EventName};
use crate::store::config_cache::{ConfigCache, Resolved, campaigns_since};
use crate::store::configs::{self, ConfigTx};
use crate::store::ledger::run_now;
use crate::store::model::{coin_value_from, coin_value_key};
use crate::store::{AuditRecord, ConfigFilter, ConfigStore, StoreResult};

const CONFIG_COLUMNS: &str = "seq, configuration, company_id, event, amount, validity_days, max_per_user_per_day, max_per_user, active, version, \
     amount_type, rate_bps, min_amount_minor, max_coins_per_allocation, rounding, pending_days, tier_multiplier";

fn config_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CoinConfig> {
    let kind: String = row.get(1)?;
    Ok(CoinConfig {
        id: CoinConfigId::from_seq(row.get(0)?),
        values: ConfigValues {
            kind: ConfigKind::parse(&kind).unwrap_or(ConfigKind::Custom),
            company_id: CompanyId::from_trusted(row.get(2)?),
            event: EventName::from_trusted(row.get(3)?),
            amount: row.get::<_, Option<i64>>(4)?.map(Coins::from_stored),
            earning: Earning {
                amount_type: AmountType::parse(&row.get::<_, String>(10)?).unwrap_or(AmountType::Fixed),
                rate_bps: row.get(11)?,
                min_amount_minor: row.get(12)?,
                max_coins_per_allocation: row.get(13)?,
                rounding: Rounding::parse(&row.get::<_, String>(14)?).unwrap_or(Rounding::Floor),
                pending_days: row.get(15)?,
                tier_multiplier: row.get(16)?,
            },
            validity_days: row.get(5)?,
            max_per_user_per_day: row.get(6)?,
            max_per_user: row.get(7)?,
            active: row.get(8)?,
        },
        version: row.get(9)?,
    })
}

/// The index the per-user caps count a member's allocations of an event with. It exists only
/// while some configuration has a cap (checked after every configuration change, in its
/// transaction, and when the store opens): without one, every allocation would write an entry
/// into it for nothing, on a random page. Setting the first cap builds it from the whole ledger,
/// once; removing the last drops it. Counting is right either way, only slower without it.
const CAPS_INDEX: &str = "CREATE INDEX IF NOT EXISTS ledger_caps ON ledger_entries (company_id, user_id, event, created_at) WHERE type = 'ALLOCATE'";

pub(super) fn keep_caps_index(conn: &Connection) -> StoreResult<()> {
    let capped: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM coin_configs WHERE max_per_user_per_day IS NOT NULL OR max_per_user IS NOT NULL)")?
        .query_row([], |r| r.get(0))?;
    conn.execute_batch(if capped { CAPS_INDEX } else { "DROP INDEX IF EXISTS ledger_caps" })?;
    Ok(())
}

fn config_by_id(conn: &Connection, id: CoinConfigId) -> StoreResult<Option<CoinConfig>> {
    Ok(conn.prepare_cached(&format!("SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE seq = ?1"))?.query_row(params![id.seq()], config_from_row).optional()?)
}

/// What an allocation of (company, event) at `now_ms` resolves to — its configuration, the
/// company's campaigns for the event, its tier scheme and its coin value — from the writer's
/// cache when it has it.
pub(super) fn resolve(conn: &Connection, cache: &ConfigCache, company: &CompanyId, event: &EventName, now_ms: i64) -> StoreResult<Resolved> {
    if let Some(hit) = cache.get(company.as_str(), event.as_str()) {
        return Ok(hit);
    }
    let generation = cache.generation();
    let candidates: Vec<CoinConfig> = conn
        .prepare_cached(&format!(
            "SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE event = ?1 AND (configuration = 'DEFAULT' OR (configuration = 'CUSTOM' AND company_id = ?2))"
        ))?
        .query_map(params![event.as_str(), company.as_str()], config_from_row)?
        .collect::<Result<_, _>>()?;
    let custom = candidates.iter().find(|c| c.values.kind == ConfigKind::Custom);
    let default = candidates.iter().find(|c| c.values.kind == ConfigKind::Default);
    let campaigns = super::campaigns::running(conn, company, campaigns_since(now_ms))?.into_iter().filter(|c| c.terms.applies_to(event)).collect();
    let tiers = super::tiers::scheme(conn, company)?.map(Arc::new);
    let value = Some(coin_value_in(conn, Some(company))?);
    // Exact while cached: every webhook change is a write of this process's writer thread, and
    // the writer clears the cache after each round that held one.
    let webhook_events = Some(
        conn.prepare_cached("SELECT event_mask FROM webhooks WHERE company_id = ?1 AND enabled = 1")?
            .query_map(params![company.as_str()], |r| r.get::<_, i64>(0))?
            .try_fold(0, |mask, m| m.map(|m| mask | m))?,
    );
    let resolved = Resolved { config: cfg::resolve(custom, default).cloned(), campaigns: Arc::new(campaigns), tiers, value, webhook_events };
    cache.fill(generation, [(company.to_string(), event.to_string(), resolved.clone())]);
    Ok(resolved)
}

pub(super) fn coin_value_in(conn: &Connection, company: Option<&CompanyId>) -> StoreResult<CoinValue> {
    let row: Option<(String, String, i64)> = conn
        .prepare_cached("SELECT company_id, currency, minor_units_per_coin FROM coin_values WHERE company_id IN (?1, '') ORDER BY company_id DESC LIMIT 1")?
        .query_row(params![coin_value_key(company)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(coin_value_from(row))
}

/// A configuration's columns as bound by insert and update: `?1`..`?8`, the time as `?9`, then
/// how it earns as `?10`..`?15`.
fn values_params(v: &ConfigValues, now_ms: i64) -> [rusqlite::types::Value; 16] {
    let e = &v.earning;
    [
        v.kind.as_str().to_owned().into(),
        v.company_id.to_string().into(),
        v.event.to_string().into(),
        v.amount.map(Coins::get).into(),
        v.validity_days.into(),
        v.max_per_user_per_day.into(),
        v.max_per_user.into(),
        v.active.into(),
        now_ms.into(),
        e.amount_type.as_str().to_owned().into(),
        e.rate_bps.into(),
        e.min_amount_minor.into(),
        e.max_coins_per_allocation.into(),
        e.rounding.as_str().to_owned().into(),
        e.pending_days.into(),
        e.tier_multiplier.into(),
    ]
}

impl ConfigTx for SqliteTx<'_> {
    async fn slot_holder(&mut self, values: &ConfigValues, except: Option<CoinConfigId>) -> StoreResult<Option<CoinConfigId>> {
        let except = except.map_or(-1, CoinConfigId::seq);
        let seq: Option<i64> = match values.kind {
            ConfigKind::Default => self
                .0
                .prepare_cached("SELECT seq FROM coin_configs WHERE configuration = 'DEFAULT' AND event = ?1 AND seq <> ?2")?
                .query_row(params![values.event.as_str(), except], |r| r.get(0))
                .optional()?,
            ConfigKind::Custom => self
                .0
                .prepare_cached("SELECT seq FROM coin_configs WHERE configuration = 'CUSTOM' AND company_id = ?1 AND event = ?2 AND seq <> ?3")?
                .query_row(params![values.company_id.as_str(), values.event.as_str(), except], |r| r.get(0))
                .optional()?,
        };
        Ok(seq.map(CoinConfigId::from_seq))
    }

    async fn config_for_update(&mut self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>> {
        // The writer thread is the only writer: nothing else can change it before the commit.
        config_by_id(self.0, id)
    }

    async fn insert_config(&mut self, v: &ConfigValues, now_ms: i64) -> StoreResult<CoinConfigId> {
        self.0
            .prepare_cached(
                "INSERT INTO coin_configs (configuration, company_id, event, amount, validity_days, max_per_user_per_day, \
                 max_per_user, active, version, created_at, updated_at, amount_type, rate_bps, min_amount_minor, max_coins_per_allocation, \
                 rounding, pending_days, tier_multiplier) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?
            .execute(rusqlite::params_from_iter(values_params(v, now_ms)))?;
        Ok(CoinConfigId::from_seq(self.0.last_insert_rowid()))
    }

    async fn update_config(&mut self, id: CoinConfigId, v: &ConfigValues, now_ms: i64) -> StoreResult<()> {
        let mut params = values_params(v, now_ms).to_vec();
        params.push(id.seq().into());
        self.0
            .prepare_cached(
                "UPDATE coin_configs SET configuration = ?1, company_id = ?2, event = ?3, amount = ?4, validity_days = ?5, \
                 max_per_user_per_day = ?6, max_per_user = ?7, active = ?8, version = version + 1, updated_at = ?9, amount_type = ?10, \
                 rate_bps = ?11, min_amount_minor = ?12, max_coins_per_allocation = ?13, rounding = ?14, pending_days = ?15, tier_multiplier = ?16 \
                 WHERE seq = ?17",
            )?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(())
    }

    async fn insert_audit(&mut self, id: CoinConfigId, action: &str, actor: &str, now_ms: i64, before: Option<String>, after: String) -> StoreResult<()> {
        self.0
            .prepare_cached("INSERT INTO coin_config_audit (seq, action, client_id, at, before_json, after_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![id.seq(), action, actor, now_ms, before, after])?;
        Ok(())
    }

    async fn announce_change(&mut self) -> StoreResult<()> {
        // The writer clears its configuration cache after every batch of generic jobs.
        keep_caps_index(self.0)
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn create_config(&self, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let actor = actor.to_owned();
        self.write(move |conn| run_now(configs::create(&mut SqliteTx(conn), values, &actor, now_ms))).await
    }

    async fn get_config(&self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>> {
        self.read(move |conn| config_by_id(conn, id)).await
    }

    async fn update_config(&self, id: CoinConfigId, expected_version: i64, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
        let actor = actor.to_owned();
        self.write(move |conn| run_now(configs::update(&mut SqliteTx(conn), id, expected_version, values, &actor, now_ms))).await
    }

    async fn list_configs(&self, filter: ConfigFilter) -> StoreResult<Vec<CoinConfig>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {CONFIG_COLUMNS} FROM coin_configs WHERE (?1 IS NULL OR company_id = ?1) AND (?2 IS NULL OR event = ?2) \
                 AND (?3 IS NULL OR configuration = ?3) ORDER BY seq"
            );
            let company = filter.company.as_ref().map(CompanyId::as_str);
            let event = filter.event.as_ref().map(EventName::as_str);
            let kind = filter.kind.map(ConfigKind::as_str);
            Ok(conn.prepare_cached(&sql)?.query_map(params![company, event, kind], config_from_row)?.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn config_history(&self, id: CoinConfigId) -> StoreResult<Vec<AuditRecord>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT action, client_id, at, before_json, after_json FROM coin_config_audit WHERE seq = ?1 ORDER BY audit_id")?
                .query_map(params![id.seq()], |r| {
                    Ok(AuditRecord { action: r.get(0)?, client_id: r.get(1)?, at_ms: r.get(2)?, before_json: r.get(3)?, after_json: r.get(4)? })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_coin_value(&self, value: CoinValue, actor: &str, now_ms: i64) -> StoreResult<()> {
        let actor = actor.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO coin_values (company_id, currency, minor_units_per_coin, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (company_id) DO UPDATE SET currency = excluded.currency, \
                 minor_units_per_coin = excluded.minor_units_per_coin, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )?
            .execute(params![coin_value_key(value.company.as_ref()), value.currency, value.minor_units_per_coin, actor, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn coin_value(&self, company: Option<&CompanyId>) -> StoreResult<CoinValue> {
        let company = company.cloned();
        self.read(move |conn| coin_value_in(conn, company.as_ref())).await
    }
}
