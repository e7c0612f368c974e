//! API clients, password-grant users, lockout and tokens on PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::PgStore;
use crate::domain::lockout::{self, LockState, LockoutPolicy};
use crate::store::model::{join_companies, split_companies};
use crate::store::{AuthSubject, ClientRecord, ClientStore, PasswordUserRecord, StoreResult, TokenKind, TokenRecord, TokenStore};

const CLIENT_COLUMNS: &str = "client_id, name, secret_hash, is_admin, companies, created_at, revoked_at, failed_attempts, locked_until";

fn client_from_row(row: &Row) -> ClientRecord {
    ClientRecord {
        client_id: row.get(0),
        name: row.get(1),
        secret_hash: row.get(2),
        admin: row.get(3),
        companies: split_companies(row.get::<_, &str>(4)),
        created_at_ms: row.get(5),
        revoked_at_ms: row.get(6),
        lock: LockState { failed_attempts: row.get(7), locked_until_ms: row.get(8) },
    }
}

/// The subject's table and key, for the lockout columns.
fn subject(who: AuthSubject<'_>) -> (&'static str, &'static str, Vec<String>) {
    match who {
        AuthSubject::Client(id) => ("clients", "client_id = $1", vec![id.to_owned()]),
        AuthSubject::PasswordUser { client_id, username } => {
            ("password_users", "client_id = $1 AND username = $2", vec![client_id.to_owned(), username.to_owned()])
        }
    }
}

fn lock_update_sql(table: &str, filter: &str, keys: usize) -> String {
    format!("UPDATE {table} SET failed_attempts = ${}, locked_until = ${} WHERE {filter}", keys + 1, keys + 2)
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

fn with_lock<'a>(keys: &'a [String], state: &'a LockState) -> Vec<Param<'a>> {
    keys.iter().map(|k| k as Param<'a>).chain([&state.failed_attempts as Param<'a>, &state.locked_until_ms as Param<'a>]).collect()
}

#[async_trait]
impl ClientStore for PgStore {
    async fn insert_client(&self, c: ClientRecord) -> StoreResult<()> {
        self.core
            .client()
            .await?
            .execute(
                &format!("INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                &[
                    &c.client_id,
                    &c.name,
                    &c.secret_hash,
                    &c.admin,
                    &join_companies(&c.companies),
                    &c.created_at_ms,
                    &c.revoked_at_ms,
                    &c.lock.failed_attempts,
                    &c.lock.locked_until_ms,
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1")).await?;
        Ok(client.query_opt(&stmt, &[&client_id]).await?.as_ref().map(client_from_row))
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        let rows = self.core.client().await?.query(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id"), &[]).await?;
        Ok(rows.iter().map(client_from_row).collect())
    }

    async fn count_clients(&self) -> StoreResult<i64> {
        Ok(self.core.client().await?.query_one("SELECT COUNT(*) FROM clients", &[]).await?.get(0))
    }

    async fn revoke_client(&self, client_id: &str, now_ms: i64) -> StoreResult<bool> {
        let id = client_id.to_owned();
        self.core
            .transact(move |tx| {
                let id = id.clone();
                Box::pin(async move {
                    tx.execute("UPDATE clients SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL", &[&id, &now_ms]).await?;
                    tx.execute("DELETE FROM tokens WHERE client_id = $1", &[&id]).await?;
                    Ok(tx.query_one("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = $1)", &[&id]).await?.get(0))
                })
            })
            .await
    }

    async fn upsert_password_user(&self, client_id: &str, username: &str, password_hash: &str, now_ms: i64) -> StoreResult<bool> {
        let n = self
            .core
            .client()
            .await?
            .execute(
                "INSERT INTO password_users (client_id, username, password_hash, created_at) \
                 SELECT client_id, $2, $3, $4 FROM clients WHERE client_id = $1 \
                 ON CONFLICT (client_id, username) DO UPDATE SET password_hash = excluded.password_hash, \
                 failed_attempts = 0, locked_until = NULL",
                &[&client_id, &username, &password_hash, &now_ms],
            )
            .await?;
        Ok(n == 1)
    }

    async fn get_password_user(&self, client_id: &str, username: &str) -> StoreResult<Option<PasswordUserRecord>> {
        let client = self.core.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT client_id, username, password_hash, failed_attempts, locked_until FROM password_users WHERE client_id = $1 AND username = $2",
            )
            .await?;
        Ok(client.query_opt(&stmt, &[&client_id, &username]).await?.map(|r| PasswordUserRecord {
            client_id: r.get(0),
            username: r.get(1),
            password_hash: r.get(2),
            lock: LockState { failed_attempts: r.get(3), locked_until_ms: r.get(4) },
        }))
    }

    async fn reserve_auth_attempt(&self, who: AuthSubject<'_>, now_ms: i64, policy: LockoutPolicy) -> StoreResult<bool> {
        let (table, filter, keys) = subject(who);
        self.core
            .transact(move |tx| {
                let keys = keys.clone();
                Box::pin(async move {
                    let select = format!("SELECT failed_attempts, locked_until FROM {table} WHERE {filter} FOR UPDATE");
                    let params: Vec<Param<'_>> = keys.iter().map(|k| k as Param<'_>).collect();
                    let state = tx.query_opt(&select, &params).await?.map(|r| LockState { failed_attempts: r.get(0), locked_until_ms: r.get(1) });
                    let Some(next) = state.and_then(|s| lockout::reserve_attempt(s, now_ms, policy)) else { return Ok(false) };
                    tx.execute(&lock_update_sql(table, filter, keys.len()), &with_lock(&keys, &next)).await?;
                    Ok(true)
                })
            })
            .await
    }

    async fn record_auth_success(&self, who: AuthSubject<'_>) -> StoreResult<()> {
        let (table, filter, keys) = subject(who);
        let reset = LockState::default();
        self.core.client().await?.execute(&lock_update_sql(table, filter, keys.len()), &with_lock(&keys, &reset)).await?;
        Ok(())
    }
}

#[async_trait]
impl TokenStore for PgStore {
    async fn insert_tokens(&self, tokens: Vec<TokenRecord>) -> StoreResult<()> {
        self.core
            .transact(move |tx| {
                let tokens = tokens.clone();
                Box::pin(async move {
                    let stmt = tx
                        .prepare_cached("INSERT INTO tokens (token_hash, kind, client_id, username, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                        .await?;
                    for t in &tokens {
                        tx.execute(&stmt, &[&t.token_hash, &t.kind.as_str(), &t.client_id, &t.username, &t.created_at_ms, &t.expires_at_ms]).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn expire_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<()> {
        self.core
            .client()
            .await?
            .execute("UPDATE tokens SET expires_at = $2 WHERE token_hash = $1 AND kind = 'access' AND expires_at > $2", &[&token_hash, &now_ms])
            .await?;
        Ok(())
    }

    async fn lookup_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<(TokenRecord, ClientRecord)>> {
        let client = self.core.client().await?;
        let cols = CLIENT_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {cols}, t.username, t.created_at, t.expires_at FROM tokens t JOIN clients c ON c.client_id = t.client_id \
                 WHERE t.token_hash = $1 AND t.kind = 'access' AND t.expires_at > $2 AND c.revoked_at IS NULL"
            ))
            .await?;
        Ok(client.query_opt(&stmt, &[&token_hash, &now_ms]).await?.map(|r| {
            let c = client_from_row(&r);
            let token = TokenRecord {
                token_hash: token_hash.to_owned(),
                kind: TokenKind::Access,
                client_id: c.client_id.clone(),
                username: r.get(9),
                created_at_ms: r.get(10),
                expires_at_ms: r.get(11),
            };
            (token, c)
        }))
    }

    async fn consume_refresh_token(&self, token_hash: &str, client_id: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>> {
        let row = self
            .core
            .client()
            .await?
            .query_opt(
                "UPDATE tokens SET used_at = $2 WHERE token_hash = $1 AND kind = 'refresh' AND used_at IS NULL AND expires_at > $2 \
                 AND client_id = $3 RETURNING client_id, username, created_at, expires_at",
                &[&token_hash, &now_ms, &client_id],
            )
            .await?;
        Ok(row.map(|r| TokenRecord {
            token_hash: token_hash.to_owned(),
            kind: TokenKind::Refresh,
            client_id: r.get(0),
            username: r.get(1),
            created_at_ms: r.get(2),
            expires_at_ms: r.get(3),
        }))
    }
}
