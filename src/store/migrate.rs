//! Migrations embedded in the binary, one list per backend, and the one runner both use: each
//! pending migration is applied once, in order, together with its row in `schema_migrations`
//! (the backend makes that atomic).
//!
//! Migrations are append-only, and sealed: the row of each applied migration keeps the SHA-256
//! of the SQL that ran, and every start compares it with the SQL this binary ships. A shipped
//! migration that was edited since (or a database migrated by a newer binary) refuses to start
//! with an error naming the migration, before anything is applied: a schema change is always a
//! new migration that carries existing data forward, never an edit. The checksums of the shipped
//! files are also pinned in this module's tests, so an edit fails CI before it reaches a database.
//!
//! Rows written before sealing existed have no checksum; the first start of a sealed binary
//! records the shipped one for them (there is nothing older to compare with).

use sha2::{Digest, Sha256};

use super::{StoreError, StoreResult};

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
    Migration { version: 5, name: "webhook_attempts_by_message", sql: include_str!("../../migrations/sqlite/0005_webhook_attempts_by_message.sql") },
    Migration { version: 6, name: "commerce", sql: include_str!("../../migrations/sqlite/0006_commerce.sql") },
    Migration { version: 7, name: "partial_returns", sql: include_str!("../../migrations/sqlite/0007_partial_returns.sql") },
    Migration { version: 8, name: "debt", sql: include_str!("../../migrations/sqlite/0008_debt.sql") },
    Migration { version: 9, name: "reminders", sql: include_str!("../../migrations/sqlite/0009_reminders.sql") },
    Migration { version: 10, name: "campaigns", sql: include_str!("../../migrations/sqlite/0010_campaigns.sql") },
    Migration { version: 11, name: "tiers", sql: include_str!("../../migrations/sqlite/0011_tiers.sql") },
    Migration { version: 12, name: "checks_without_lists", sql: include_str!("../../migrations/sqlite/0012_checks_without_lists.sql") },
    Migration { version: 13, name: "qualifying_days", sql: include_str!("../../migrations/sqlite/0013_qualifying_days.sql") },
    Migration { version: 14, name: "entry_found_from_request", sql: include_str!("../../migrations/sqlite/0014_entry_found_from_request.sql") },
    Migration { version: 15, name: "ended_allocations_by_order", sql: include_str!("../../migrations/sqlite/0015_ended_allocations_by_order.sql") },
    Migration {
        version: 16,
        name: "campaign_members_only_when_limited",
        sql: include_str!("../../migrations/sqlite/0016_campaign_members_only_when_limited.sql"),
    },
];

pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../../migrations/postgres/0001_init.sql") },
    Migration { version: 2, name: "allocate_function", sql: include_str!("../../migrations/postgres/0002_allocate_function.sql") },
    Migration { version: 3, name: "allocate_set", sql: include_str!("../../migrations/postgres/0003_allocate_set.sql") },
    Migration { version: 4, name: "drop_unused_allocate", sql: include_str!("../../migrations/postgres/0004_drop_unused_allocate.sql") },
    Migration { version: 5, name: "lots_by_entry", sql: include_str!("../../migrations/postgres/0005_lots_by_entry.sql") },
    Migration { version: 6, name: "webhooks", sql: include_str!("../../migrations/postgres/0006_webhooks.sql") },
    Migration { version: 7, name: "ledger_daily", sql: include_str!("../../migrations/postgres/0007_ledger_daily.sql") },
    Migration { version: 8, name: "webhook_attempts_by_message", sql: include_str!("../../migrations/postgres/0008_webhook_attempts_by_message.sql") },
    Migration { version: 9, name: "commerce", sql: include_str!("../../migrations/postgres/0009_commerce.sql") },
    Migration { version: 10, name: "partial_returns", sql: include_str!("../../migrations/postgres/0010_partial_returns.sql") },
    Migration { version: 11, name: "allocate_set_pending", sql: include_str!("../../migrations/postgres/0011_allocate_set_pending.sql") },
    Migration { version: 12, name: "debt", sql: include_str!("../../migrations/postgres/0012_debt.sql") },
    Migration { version: 13, name: "reminders", sql: include_str!("../../migrations/postgres/0013_reminders.sql") },
    Migration { version: 14, name: "campaigns", sql: include_str!("../../migrations/postgres/0014_campaigns.sql") },
    Migration { version: 15, name: "tiers", sql: include_str!("../../migrations/postgres/0015_tiers.sql") },
    Migration { version: 16, name: "allocate_set_records", sql: include_str!("../../migrations/postgres/0016_allocate_set_records.sql") },
    Migration { version: 17, name: "allocate_one_whole", sql: include_str!("../../migrations/postgres/0017_allocate_one_whole.sql") },
    Migration { version: 18, name: "qualifying_days", sql: include_str!("../../migrations/postgres/0018_qualifying_days.sql") },
    Migration { version: 19, name: "allocate_set_qualifying", sql: include_str!("../../migrations/postgres/0019_allocate_set_qualifying.sql") },
    Migration { version: 20, name: "users_in_debt_by_flag", sql: include_str!("../../migrations/postgres/0020_users_in_debt_by_flag.sql") },
    Migration {
        version: 21,
        name: "campaign_members_only_when_limited",
        sql: include_str!("../../migrations/postgres/0021_campaign_members_only_when_limited.sql"),
    },
];

impl Migration {
    /// The seal: SHA-256 of the SQL text, in lowercase hex.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// The bookkeeping table, in SQL both backends speak. Its `checksum` column came with sealing
/// and is added by [`MigrationTarget::applied`] where missing, on new databases as on old ones,
/// so both end with the same table.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// A migration as recorded in `schema_migrations`; `checksum` is `None` on rows recorded before
/// migrations were sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub checksum: Option<String>,
}

/// What a backend offers the runner. The whole run happens under whatever keeps two processes
/// from migrating at once (SQLite: the write lock; PostgreSQL: an advisory lock).
pub(crate) trait MigrationTarget {
    /// Migrations already applied (after creating the bookkeeping table, with its `checksum`
    /// column, if needed).
    async fn applied(&mut self) -> StoreResult<Vec<AppliedMigration>>;
    /// Records the checksum of a migration applied before sealing.
    async fn seal(&mut self, version: i64, checksum: &str) -> StoreResult<()>;
    /// Runs one migration's SQL and records it with its checksum, atomically.
    async fn apply(&mut self, migration: &Migration, checksum: &str, now_ms: i64) -> StoreResult<()>;
}

/// Checks every applied migration against the shipped ones: the same SQL, and none unknown.
/// Returns `(version, checksum)` for each one applied before checksums were kept, to seal.
pub fn check_applied(applied: &[AppliedMigration], migrations: &[Migration]) -> StoreResult<Vec<(i64, String)>> {
    let mut unsealed = Vec::new();
    for row in applied {
        let Some(shipped) = migrations.iter().find(|m| m.version == row.version) else {
            let newest = migrations.last().map_or(0, |m| m.version);
            return Err(StoreError::Migration(format!(
                "the database has migration {} applied, which this binary does not know (it knows up to {newest}): \
                 it was migrated by a newer version of coins; run that version",
                row.version
            )));
        };
        match &row.checksum {
            None => unsealed.push((row.version, shipped.checksum())),
            Some(stored) if *stored != shipped.checksum() => {
                return Err(StoreError::Migration(format!(
                    "migration {:04}_{} differs from the one this database applied (checksum {} stored, {} shipped): \
                     a shipped migration must never change; restore it and put the change in a new migration",
                    shipped.version,
                    shipped.name,
                    stored,
                    shipped.checksum()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(unsealed)
}

pub(crate) async fn run<T: MigrationTarget>(target: &mut T, migrations: &[Migration]) -> StoreResult<()> {
    let applied = target.applied().await?;
    for (version, checksum) in check_applied(&applied, migrations)? {
        target.seal(version, &checksum).await?;
    }
    for m in migrations.iter().filter(|m| !applied.iter().any(|a| a.version == m.version)) {
        target.apply(m, &m.checksum(), crate::clock::system_now_ms()).await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seal of every shipped migration. A new migration adds its line; a line here is never
    /// changed, because databases in the field applied exactly that SQL.
    const SHIPPED_SQLITE: &[(i64, &str)] = &[
        (1, "4143041caf78483cb0fecc7559dc46598631817db847adfee3a7756ff34ec619"),
        (2, "43166d40a1a18f9945fb2a3343c2e0c8cd92f5050527479df944289ed02ed650"),
        (3, "242cbe1164be5b12890c02e08cf556bdffc99052216792e22365960d6be568cb"),
        (4, "0f3ac76dac23cc17443b4c4efd2b2fdac59118dc3d0dcb73a1f9a7333cbe046b"),
        (5, "4ae986632190983daec7045e43043a1cefa6b10862ce531c435e7fd5bcdf1df4"),
        (6, "973eca8c2ce650a2ec0083f55a19511a1c5d6be9107e736d1fe2529f023a14e7"),
        (7, "fdb829f71ba6f21ea6659bbd508198fb05bac4c699e91faeff42c17d0beb0049"),
        (8, "e9d561b8ab8db2f1b5c26ebf6e40bd882f2f6eb84296d2ea0a5e12fb760c2721"),
        (9, "44e77fa9f9b9b784b2f51520dd291c75223779a9d6126754b7ec8630296da2a3"),
        (10, "8ff446cb3dd9b82964239fd1c7a9b992e9ff621407b7d8f251a6d4e643c7b12c"),
        (11, "6eeb571e6ffa7724de1147e9aed24e1ac9f83b008458c47fcd372a2a505e73ba"),
        (12, "0dea14b54a0d61ba595f1b45ce2792f8dba834c1dd1be20429dc40cdb48a95ab"),
        (13, "d9c04102918f1bb34eccb25401786140a664fc7b8530e000073d6092f58965ee"),
        (14, "682b04f84ef5d948b6b35a08c936801ef7c251775a870eea015c24255aeeab2d"),
        (15, "fa802c9d6157b8f2c8f2c482a08b4db3eca6b5fa9b3f2875aafa3d7502f722c8"),
        (16, "7802660251012a87f3dd8dc089f9f381f45fef1381b2cc5c43e160e00a529099"),
    ];
    const SHIPPED_POSTGRES: &[(i64, &str)] = &[
        (1, "0f54320a3829807969ad290ead1b73368874f0ac15f6727152894a3794ceacfe"),
        (2, "2987e10ea2bcb61336d8f41cdd42801ae5bb3044dbb5ba17f90c28a3c6604dc7"),
        (3, "e4b29df8dc66f19ea9e53c1484f6292a9d84752c42f7273e72ba444a2154c54b"),
        (4, "6d268f89fd1fd438603bdc6293fd42a1b89acbafdc5d0eb86a9da40c837762f7"),
        (5, "43166d40a1a18f9945fb2a3343c2e0c8cd92f5050527479df944289ed02ed650"),
        (6, "f748761af353df70648e4262051a7afce0adde1f7ecdb5200659e0e61d19a193"),
        (7, "f216ce71c8aad45e0e2120766e5253abc746924c4b90bdb14bab91d6fc1f39e3"),
        (8, "28b7da00faacfd166f36066d21d03b181ac40a83945d5007e85ace07f84c3729"),
        (9, "30fa506f947249224f1b6f03bfb68f95b4c2b0e943bae0431439cbc26206f053"),
        (10, "fdb829f71ba6f21ea6659bbd508198fb05bac4c699e91faeff42c17d0beb0049"),
        (11, "73e4330a85f61cd3973c46608c6ee3794890b03ee4ed8f438738862e3cefb34d"),
        (12, "b1813efae4a385c2c85bb25df8212fd25fb1da5e55104cc95c2e24aec8bbcaff"),
        (13, "94da4598194f2ef964a31ec3d689ebe82df3f8d3dabe6b5c55adf93888abfdd1"),
        (14, "d1088e624d9483af87006d3c8040fcd84266313a35796a180524c1c25cf54315"),
        (15, "084e4b371c24799a33190ca6bc5434643b7a5f1e79c08318f742c11742508244"),
        (16, "6558bbd3398ecbb4e2f334c16406edeeeac7be54d77a2f693be79a774521db9a"),
        (17, "1f877f320af98ed66bee6370b851bd8694cefcebf604058b2b6e1fcf77afb8c5"),
        (18, "36e9f38908a2e3ed682b70395681a3a86d441f6364871579e427d1eab4029906"),
        (19, "26013aa55d0d29a75e37aebf431547fbcf5a47162a98758efdc576600b306561"),
        (20, "4fa16c929b4e788487761bfa111450591bcc7262684c45b511917d45eeff7e71"),
        (21, "736b3fba97bb5e92405610ce0e63428fda33180899db4723f990cf1d62b521b6"),
    ];

    #[test]
    fn no_shipped_migration_has_changed_and_versions_run_from_one_without_gaps() {
        for (migrations, shipped) in [(SQLITE, SHIPPED_SQLITE), (POSTGRES, SHIPPED_POSTGRES)] {
            for (i, m) in migrations.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "migration {} is out of sequence", m.name);
                let sealed = shipped.iter().find(|(v, _)| *v == m.version).map(|(_, c)| *c);
                let sealed = sealed.unwrap_or_else(|| panic!("add the checksum of new migration {:04}_{} to this test: {}", m.version, m.name, m.checksum()));
                assert_eq!(m.checksum(), sealed, "shipped migration {:04}_{} was edited", m.version, m.name);
            }
            assert_eq!(shipped.len(), migrations.len(), "a sealed migration is missing from the list");
        }
    }

    fn row(version: i64, checksum: Option<&str>) -> AppliedMigration {
        AppliedMigration { version, checksum: checksum.map(str::to_owned) }
    }

    #[test]
    fn an_applied_migration_whose_sql_changed_is_refused_by_name() {
        let err = check_applied(&[row(1, Some(&SQLITE[0].checksum())), row(3, Some("0badc0de"))], SQLITE).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("migration 0003_webhooks differs"), "{text}");
        assert!(text.contains("0badc0de") && text.contains(&SQLITE[2].checksum()), "{text}");
    }

    #[test]
    fn a_database_from_a_newer_binary_is_refused() {
        let text = check_applied(&[row(99, Some("x"))], SQLITE).unwrap_err().to_string();
        assert!(text.contains("migration 99") && text.contains("newer version"), "{text}");
    }

    #[test]
    fn rows_from_before_sealing_are_sealed_with_the_shipped_checksum() {
        let sealed = SQLITE[0].checksum();
        let to_seal = check_applied(&[row(1, Some(&sealed)), row(2, None)], SQLITE).unwrap();
        assert_eq!(to_seal, [(2, SQLITE[1].checksum())]);
    }
}
