//! The operator commands besides `serve` (README, "Running it"): migrations, clients, ledger verification,
//! and the first-run admin bootstrap `serve` performs.
//!
//! Credentials are printed to stdout as `client_id: ...` / `client_secret: ...` lines so scripts
//! can read them; logs go to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use crate::clock::system_now_ms;
use crate::config::ServeSettings;
use crate::crypto;
use crate::domain::CompanyId;
use secrecy::ExposeSecret;

use crate::domain::lockout::LockState;
use crate::store::model::join_companies;
use crate::store::{ClientRecord, Store, StoreResult};

/// A new client id: `cl_` and 20 hex digits (80 random bits; ids are not secrets).
pub fn new_client_id() -> String {
    format!("cl_{}", hex::encode(crypto::random_bytes::<10>()))
}

pub fn new_client(client_id: String, name: &str, secret: &str, admin: bool, companies: Vec<CompanyId>) -> ClientRecord {
    ClientRecord {
        client_id,
        name: name.to_owned(),
        secret_hash: crypto::hash_secret(secret),
        admin,
        companies,
        created_at_ms: system_now_ms(),
        revoked_at_ms: None,
        lock: LockState::default(),
    }
}

/// Creates a client and returns its (id, secret); the secret exists only in the return value.
pub async fn create_client(store: &dyn Store, name: &str, admin: bool, companies: Vec<CompanyId>) -> StoreResult<(String, String)> {
    let id = new_client_id();
    let secret = crypto::random_token::<{ crypto::SECRET_BYTES }>();
    store.insert_client(new_client(id.clone(), name, &secret, admin, companies)).await?;
    Ok((id, secret))
}

/// Make sure the configured admin exists, or create one on an empty database.
pub async fn bootstrap_admin(store: &dyn Store, settings: &ServeSettings, listen: std::net::SocketAddr) -> StoreResult<()> {
    if let Some((id, secret)) = &settings.admin {
        match store.get_client(id).await? {
            Some(existing) => {
                if !existing.admin || existing.revoked_at_ms.is_some() || !crypto::verify_secret(secret.expose_secret(), &existing.secret_hash) {
                    tracing::warn!(client_id = %id, "COINS_ADMIN_CLIENT_ID exists but is not an active admin with that secret; left unchanged");
                }
            }
            None => {
                store.insert_client(new_client(id.clone(), "admin (from environment)", secret.expose_secret(), true, Vec::new())).await?;
                tracing::info!(client_id = %id, "created the admin client named by COINS_ADMIN_CLIENT_ID");
            }
        }
        return Ok(());
    }
    if store.count_clients().await? == 0 {
        let (id, secret) = create_client(store, "admin (first run)", true, Vec::new()).await?;
        println!("No API client existed, so an admin client was created. Its secret is shown only this once:");
        println!("client_id: {id}");
        println!("client_secret: {secret}");
        println!("Get a token with:");
        println!("  curl -s -u '{id}:{secret}' -d grant_type=client_credentials http://{listen}/oauth/token");
    }
    Ok(())
}

pub fn parse_companies(raw: &[String]) -> Result<Vec<CompanyId>, String> {
    raw.iter().map(|c| CompanyId::parse(c).map_err(|_| format!("--company {c}: must be {}", CompanyId::RULE))).collect()
}

pub async fn print_clients(store: Arc<dyn Store>) -> StoreResult<()> {
    let clients = store.list_clients().await?;
    println!("{:<24} {:<8} {:<8} {:<30} NAME", "CLIENT_ID", "ADMIN", "STATUS", "COMPANIES");
    for c in clients {
        let status = if c.revoked_at_ms.is_some() { "revoked" } else { "active" };
        let companies = if c.admin { "*".to_owned() } else { join_companies(&c.companies) };
        println!("{:<24} {:<8} {:<8} {:<30} {}", c.client_id, c.admin, status, companies, c.name);
    }
    Ok(())
}

pub async fn verify(store: Arc<dyn Store>) -> StoreResult<ExitCode> {
    let report = store.verify().await?;
    for p in &report.problems {
        println!("MISMATCH {p}");
    }
    if report.problems.is_empty() {
        println!("ledger OK: {} users, {} entries; every balance equals its entries and its lots", report.users_checked, report.entries_checked);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("ledger INCONSISTENT: {} problem(s) in {} users, {} entries", report.problems.len(), report.users_checked, report.entries_checked);
        Ok(ExitCode::FAILURE)
    }
}
