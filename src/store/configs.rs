//! The order a configuration change takes, once for both backends: the unique slot is checked
//! (naming the configuration that holds it), the change is written with its audit row, and other
//! processes are told (PostgreSQL: `NOTIFY`; SQLite: the writer clears its cache after the batch).

use super::StoreResult;
use super::model::audit_json;
use crate::domain::config::ConfigValues;
use crate::domain::{CoinConfig, CoinConfigId, Refusal};

/// The fetches and writes of a configuration change, inside one database transaction.
pub(crate) trait ConfigTx {
    /// The configuration other than `except` that holds the unique slot `values` wants.
    async fn slot_holder(&mut self, values: &ConfigValues, except: Option<CoinConfigId>) -> StoreResult<Option<CoinConfigId>>;
    /// The stored configuration, locked until the commit.
    async fn config_for_update(&mut self, id: CoinConfigId) -> StoreResult<Option<CoinConfig>>;
    async fn insert_config(&mut self, values: &ConfigValues, now_ms: i64) -> StoreResult<CoinConfigId>;
    async fn update_config(&mut self, id: CoinConfigId, values: &ConfigValues, now_ms: i64) -> StoreResult<()>;
    async fn insert_audit(&mut self, id: CoinConfigId, action: &str, actor: &str, now_ms: i64, before: Option<String>, after: String) -> StoreResult<()>;
    /// What the backend does once configurations changed, in the same transaction: PostgreSQL tells
    /// other processes (delivered with the commit); SQLite keeps its caps index to them.
    async fn announce_change(&mut self) -> StoreResult<()>;
}

pub(crate) async fn create<T: ConfigTx>(tx: &mut T, values: ConfigValues, actor: &str, now_ms: i64) -> StoreResult<CoinConfig> {
    if let Some(existing) = tx.slot_holder(&values, None).await? {
        return Err(values.duplicate_of(existing).into());
    }
    let id = tx.insert_config(&values, now_ms).await?;
    tx.insert_audit(id, "CREATE", actor, now_ms, None, audit_json(&values)).await?;
    tx.announce_change().await?;
    Ok(CoinConfig { id, values, version: 1 })
}

pub(crate) async fn update<T: ConfigTx>(
    tx: &mut T,
    id: CoinConfigId,
    expected_version: i64,
    values: ConfigValues,
    actor: &str,
    now_ms: i64,
) -> StoreResult<CoinConfig> {
    let before = tx.config_for_update(id).await?.ok_or_else(|| Refusal::UnknownConfig(id.to_string()))?;
    if before.version != expected_version {
        return Err(Refusal::ConcurrentUpdate(id).into());
    }
    if let Some(existing) = tx.slot_holder(&values, Some(id)).await? {
        return Err(values.duplicate_of(existing).into());
    }
    tx.update_config(id, &values, now_ms).await?;
    tx.insert_audit(id, "UPDATE", actor, now_ms, Some(audit_json(&before.values)), audit_json(&values)).await?;
    tx.announce_change().await?;
    Ok(CoinConfig { id, values, version: expected_version + 1 })
}
