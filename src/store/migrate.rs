//! Migrations embedded in the binary, one list per backend, and the one runner both use: each
//! pending migration is applied once, in order, together with its row in `schema_migrations`
//! (the backend makes that atomic). Migrations are append-only: a shipped one is never edited.

use super::StoreResult;

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../../migrations/sqlite/0001_init.sql") },
    Migration { version: 2, name: "lots_by_entry", sql: include_str!("../../migrations/sqlite/0002_lots_by_entry.sql") },
    Migration { version: 3, name: "webhooks", sql: include_str!("../../migrations/sqlite/0003_webhooks.sql") },
    Migration { version: 4, name: "ledger_daily", sql: include_str!("../../migrations/sqlite/0004_ledger_daily.sql") },
];

pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../../migrations/postgres/0001_init.sql") },
    Migration { version: 2, name: "allocate_function", sql: include_str!("../../migrations/postgres/0002_allocate_function.sql") },
    Migration { version: 3, name: "allocate_set", sql: include_str!("../../migrations/postgres/0003_allocate_set.sql") },
    Migration { version: 4, name: "drop_unused_allocate", sql: include_str!("../../migrations/postgres/0004_drop_unused_allocate.sql") },
    Migration { version: 5, name: "lots_by_entry", sql: include_str!("../../migrations/postgres/0005_lots_by_entry.sql") },
    Migration { version: 6, name: "webhooks", sql: include_str!("../../migrations/postgres/0006_webhooks.sql") },
    Migration { version: 7, name: "ledger_daily", sql: include_str!("../../migrations/postgres/0007_ledger_daily.sql") },
];

/// The bookkeeping table, in SQL both backends speak.
pub const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// What a backend offers the runner. The whole run happens under whatever keeps two processes
/// from migrating at once (SQLite: the write lock; PostgreSQL: an advisory lock).
pub(crate) trait MigrationTarget {
    /// Versions already applied (after creating the bookkeeping table if needed).
    async fn applied(&mut self) -> StoreResult<Vec<i64>>;
    /// Runs one migration's SQL and records it, atomically.
    async fn apply(&mut self, migration: &Migration, now_ms: i64) -> StoreResult<()>;
}

pub(crate) async fn run<T: MigrationTarget>(target: &mut T, migrations: &[Migration]) -> StoreResult<()> {
    let applied = target.applied().await?;
    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        target.apply(m, crate::clock::system_now_ms()).await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}
