//! API clients, password-grant users, lockout and tokens on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::domain::lockout::{self, LockState, LockoutPolicy};
use crate::store::model::{join_companies, split_companies};
use crate::store::{AuthSubject, ClientRecord, ClientStore, PasswordUserRecord, StoreResult, TokenKind, TokenRecord, TokenStore};

const CLIENT_COLUMNS: &str = "client_id, name, secret_hash, is_admin, companies, created_at, revoked_at, failed_attempts, locked_until";

fn client_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRecord> {
    Ok(ClientRecord {
        client_id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: row.get(2)?,
        admin: row.get(3)?,
        companies: split_companies(&row.get::<_, String>(4)?),
        created_at_ms: row.get(5)?,
        revoked_at_ms: row.get(6)?,
        lock: LockState { failed_attempts: row.get(7)?, locked_until_ms: row.get(8)? },
    })
}

/// The subject's table and key, for the lockout columns.
fn subject(who: AuthSubject<'_>) -> (&'static str, &'static str, Vec<String>) {
    match who {
        AuthSubject::Client(id) => ("clients", "client_id = ?1", vec![id.to_owned()]),
        AuthSubject::PasswordUser { client_id, username } => {
            ("password_users", "client_id = ?1 AND username = ?2", vec![client_id.to_owned(), username.to_owned()])
        }
    }
}

fn store_lock(conn: &Connection, table: &str, filter: &str, keys: &[String], state: LockState) -> StoreResult<()> {
    let n = keys.len();
    conn.prepare_cached(&format!("UPDATE {table} SET failed_attempts = ?{}, locked_until = ?{} WHERE {filter}", n + 1, n + 2))?.execute(
        rusqlite::params_from_iter(
            keys.iter().map(|k| rusqlite::types::Value::Text(k.clone())).chain([state.failed_attempts.into(), state.locked_until_ms.into()]),
        ),
    )?;
    Ok(())
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn insert_client(&self, c: ClientRecord) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                &format!("INSERT INTO clients ({CLIENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    c.client_id,
                    c.name,
                    c.secret_hash,
                    c.admin,
                    join_companies(&c.companies),
                    c.created_at_ms,
                    c.revoked_at_ms,
                    c.lock.failed_attempts,
                    c.lock.locked_until_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
        let id = client_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?1"))?
                .query_row(params![id], client_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        self.read(|conn| {
            Ok(conn
                .prepare(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id"))?
                .query_map([], client_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn count_clients(&self) -> StoreResult<i64> {
        self.read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM clients", [], |r| r.get(0))?)).await
    }

    async fn revoke_client(&self, client_id: &str, now_ms: i64) -> StoreResult<bool> {
        let id = client_id.to_owned();
        self.write(move |conn| {
            conn.execute("UPDATE clients SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL", params![id, now_ms])?;
            conn.execute("DELETE FROM tokens WHERE client_id = ?1", params![id])?;
            Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = ?1)", params![id], |r| r.get(0))?)
        })
        .await
    }

    async fn upsert_password_user(&self, client_id: &str, username: &str, password_hash: &str, now_ms: i64) -> StoreResult<bool> {
        let (client_id, username, hash) = (client_id.to_owned(), username.to_owned(), password_hash.to_owned());
        self.write(move |conn| {
            let exists: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = ?1)", params![client_id], |r| r.get(0))?;
            if exists {
                conn.execute(
                    "INSERT INTO password_users (client_id, username, password_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (client_id, username) DO UPDATE SET password_hash = excluded.password_hash, \
                     failed_attempts = 0, locked_until = NULL",
                    params![client_id, username, hash, now_ms],
                )?;
            }
            Ok(exists)
        })
        .await
    }

    async fn get_password_user(&self, client_id: &str, username: &str) -> StoreResult<Option<PasswordUserRecord>> {
        let (client_id, username) = (client_id.to_owned(), username.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT client_id, username, password_hash, failed_attempts, locked_until FROM password_users \
                     WHERE client_id = ?1 AND username = ?2",
                )?
                .query_row(params![client_id, username], |r| {
                    Ok(PasswordUserRecord {
                        client_id: r.get(0)?,
                        username: r.get(1)?,
                        password_hash: r.get(2)?,
                        lock: LockState { failed_attempts: r.get(3)?, locked_until_ms: r.get(4)? },
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn reserve_auth_attempt(&self, who: AuthSubject<'_>, now_ms: i64, policy: LockoutPolicy) -> StoreResult<bool> {
        let (table, filter, keys) = subject(who);
        self.write(move |conn| {
            let state = conn
                .prepare_cached(&format!("SELECT failed_attempts, locked_until FROM {table} WHERE {filter}"))?
                .query_row(rusqlite::params_from_iter(keys.iter()), |r| Ok(LockState { failed_attempts: r.get(0)?, locked_until_ms: r.get(1)? }))
                .optional()?;
            let Some(next) = state.and_then(|s| lockout::reserve_attempt(s, now_ms, policy)) else { return Ok(false) };
            store_lock(conn, table, filter, &keys, next)?;
            Ok(true)
        })
        .await
    }

    async fn record_auth_success(&self, who: AuthSubject<'_>) -> StoreResult<()> {
        let (table, filter, keys) = subject(who);
        self.write(move |conn| store_lock(conn, table, filter, &keys, LockState::default())).await
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_tokens(&self, tokens: Vec<TokenRecord>) -> StoreResult<()> {
        self.write(move |conn| {
            let mut stmt =
                conn.prepare_cached("INSERT INTO tokens (token_hash, kind, client_id, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for t in &tokens {
                stmt.execute(params![t.token_hash, t.kind.as_str(), t.client_id, t.username, t.created_at_ms, t.expires_at_ms])?;
            }
            Ok(())
        })
        .await
    }

    async fn expire_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<()> {
        let hash = token_hash.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE tokens SET expires_at = ?2 WHERE token_hash = ?1 AND kind = 'access' AND expires_at > ?2")?
                .execute(params![hash, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn lookup_access_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<(TokenRecord, ClientRecord)>> {
        let hash = token_hash.to_owned();
        self.read(move |conn| {
            let cols = CLIENT_COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {cols}, t.username, t.created_at, t.expires_at FROM tokens t JOIN clients c ON c.client_id = t.client_id \
                     WHERE t.token_hash = ?1 AND t.kind = 'access' AND t.expires_at > ?2 AND c.revoked_at IS NULL"
                ))?
                .query_row(params![hash, now_ms], |r| {
                    let client = client_from_row(r)?;
                    let token = TokenRecord {
                        token_hash: hash.clone(),
                        kind: TokenKind::Access,
                        client_id: client.client_id.clone(),
                        username: r.get(9)?,
                        created_at_ms: r.get(10)?,
                        expires_at_ms: r.get(11)?,
                    };
                    Ok((token, client))
                })
                .optional()?)
        })
        .await
    }

    async fn consume_refresh_token(&self, token_hash: &str, client_id: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>> {
        let (hash, client) = (token_hash.to_owned(), client_id.to_owned());
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE tokens SET used_at = ?2 WHERE token_hash = ?1 AND kind = 'refresh' AND used_at IS NULL AND expires_at > ?2 \
                     AND client_id = ?3 RETURNING client_id, username, created_at, expires_at",
                )?
                .query_row(params![hash, now_ms, client], |r| {
                    Ok(TokenRecord {
                        token_hash: hash.clone(),
                        kind: TokenKind::Refresh,
                        client_id: r.get(0)?,
                        username: r.get(1)?,
                        created_at_ms: r.get(2)?,
                        expires_at_ms: r.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }
}
