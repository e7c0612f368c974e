//! Sealed migrations: a database migrated by an older binary (with a webhook migration as it
//! first shipped, before it was edited) upgrades to exactly the schema of a fresh database, and a
//! shipped migration that changed refuses to start, naming it.

use std::process::Command;

use coins::domain::allocation::AllocationState;
use coins::store::{self, migrate};

use crate::helpers::{Backend, BlankDb, blank_db};

/// The migrations an older binary applied: today's files, except the one edited after it
/// shipped, which is taken as it was then; nothing newer than that binary knew.
fn old_migrations(backend: Backend) -> Vec<(i64, &'static str, &'static str)> {
    let (list, edited, old_sql, last) = match backend {
        Backend::Sqlite => (migrate::SQLITE, 3, include_str!("../fixtures/migrations/sqlite/0003_webhooks.sql"), 4),
        Backend::Postgres => (migrate::POSTGRES, 6, include_str!("../fixtures/migrations/postgres/0006_webhooks.sql"), 7),
    };
    list.iter().filter(|m| m.version <= last).map(|m| (m.version, m.name, if m.version == edited { old_sql } else { m.sql })).collect()
}

/// Builds the database as a pre-sealing binary did: its bookkeeping table had no checksum.
async fn migrate_like_an_old_binary(backend: Backend, db: &BlankDb) {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(&db.url).unwrap();
            conn.execute_batch(migrate::CREATE_TABLE).unwrap();
            for (version, name, sql) in old_migrations(backend) {
                conn.execute_batch(sql).unwrap();
                conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 0)", rusqlite::params![version, name]).unwrap();
            }
        }
        Backend::Postgres => {
            let client = pg(&db.url).await;
            client.batch_execute(migrate::CREATE_TABLE).await.unwrap();
            for (version, name, sql) in old_migrations(backend) {
                client.batch_execute(sql).await.unwrap();
                client.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0)", &[&version, &name]).await.unwrap();
            }
        }
    }
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Every table, column, index, constraint, trigger and function, as text, with the test's own
/// schema name taken out so two databases compare.
async fn schema_dump(backend: Backend, url: &str) -> Vec<String> {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn.prepare("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name").unwrap();
            let rows = stmt.query_map([], |r| {
                Ok(format!("{} {} on {}: {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            });
            rows.unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => {
            let client = pg(url).await;
            let schema: String = client.query_one("SELECT current_schema()", &[]).await.unwrap().get(0);
            let queries = [
                "SELECT 'column ' || table_name || '.' || column_name || ' #' || ordinal_position || ' ' || data_type || ' null=' || is_nullable \
                 || ' default=' || coalesce(column_default, '') FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1",
                "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1",
                "SELECT 'constraint ' || conrelid::regclass::text || '.' || conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE connamespace = current_schema()::regnamespace ORDER BY 1",
                "SELECT 'trigger ' || tgname || ': ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                 WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace ORDER BY 1",
                "SELECT 'function ' || proname || ': ' || pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = current_schema()::regnamespace ORDER BY 1",
            ];
            let mut dump = Vec::new();
            for q in queries {
                for row in client.query(q, &[]).await.unwrap() {
                    dump.push(row.get::<_, String>(0).replace(&schema, "SCHEMA"));
                }
            }
            dump
        }
    }
}

async fn upgrade_with_this_binary(url: &str) -> coins::store::StoreResult<()> {
    store::open(url).await.expect("open").migrate().await
}

async fn migrated_at_the_old_version_then_upgraded_has_the_schema_of_a_fresh_database(backend: Backend) {
    let Some(old) = blank_db(backend).await else { return };
    let Some(fresh) = blank_db(backend).await else { return };
    migrate_like_an_old_binary(backend, &old).await;
    let before = schema_dump(backend, &old.url).await;
    assert!(!before.iter().any(|l| l.contains("webhook_attempts_by_message")), "the old database must lack the edited-in index");

    upgrade_with_this_binary(&old.url).await.expect("upgrade the old database");
    upgrade_with_this_binary(&fresh.url).await.expect("migrate a fresh database");
    let (upgraded, fresh_dump) = (schema_dump(backend, &old.url).await, schema_dump(backend, &fresh.url).await);
    assert!(upgraded.iter().any(|l| l.contains("webhook_attempts_by_message")), "the upgrade must add the index");
    let only_upgraded: Vec<_> = upgraded.iter().filter(|l| !fresh_dump.contains(l)).collect();
    let only_fresh: Vec<_> = fresh_dump.iter().filter(|l| !upgraded.contains(l)).collect();
    assert_eq!((only_upgraded, only_fresh), (vec![], vec![]), "schemas differ after the upgrade");
    assert_eq!(upgraded.len(), fresh_dump.len());

    // Every row is sealed now, old ones with the shipped checksum; a second start changes nothing.
    let list = if backend == Backend::Sqlite { migrate::SQLITE } else { migrate::POSTGRES };
    let expected: Vec<(i64, String)> = list.iter().map(|m| (m.version, m.checksum())).collect();
    assert_eq!(checksums(backend, &old.url).await, expected);
    assert_eq!(checksums(backend, &fresh.url).await, expected);
    upgrade_with_this_binary(&old.url).await.expect("a second start");
}

async fn checksums(backend: Backend, url: &str) -> Vec<(i64, String)> {
    let sql = "SELECT version, checksum FROM schema_migrations ORDER BY version";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => pg(url).await.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect(),
    }
}

async fn execute(backend: Backend, url: &str, sql: &str) {
    match backend {
        Backend::Sqlite => {
            rusqlite::Connection::open(url).unwrap().execute_batch(sql).unwrap();
        }
        Backend::Postgres => pg(url).await.batch_execute(sql).await.unwrap(),
    }
}

/// A ledger as the first version wrote it: U credited 10 (R1, still active) and 5 (R2, reversed
/// by X2), with the lots, moves, requests and daily roll-up that version kept.
const OLD_LEDGER: &[&str] = &[
    "INSERT INTO users (company_id, user_id, balance, lifetime_earned, created_at) VALUES ('C', 'U', 10, 10, 1000)",
    "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at) VALUES ('C', 'R1', 'ALLOCATE', 'U', 'E', 10, '', 1000)",
    "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at) VALUES ('C', 'R2', 'ALLOCATE', 'U', 'E', 5, '', 1001)",
    "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, original_request_id, response, created_at) \
     VALUES ('C', 'X2', 'REVERSE', 'U', NULL, 5, 'R2', 'R2', '{}', 1002)",
    "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at) \
     VALUES ('C', 'U', 'ALLOCATE', 10, 10, 'E', 'R1', 'WCC100001', 1000, 90000000)",
    "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at) \
     VALUES ('C', 'U', 'ALLOCATE', 5, 15, 'E', 'R2', 'WCC100001', 1001)",
    "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at) \
     VALUES ('C', 'U', 'REVERSE', -5, 10, 'E', 'X2', 'WCC100001', 1002)",
    "INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at) \
     SELECT 'C', 'U', entry_id, 10, 10, 90000000, 1000 FROM ledger_entries WHERE request_id = 'R1'",
    "INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, created_at) SELECT 'C', 'U', entry_id, 5, 0, 1001 FROM ledger_entries WHERE request_id = 'R2'",
    "INSERT INTO lot_moves (entry_id, lot_id, coins) SELECT e.entry_id, l.lot_id, -5 FROM ledger_entries e, lots l \
     WHERE e.request_id = 'X2' AND l.entry_id = (SELECT entry_id FROM ledger_entries WHERE request_id = 'R2')",
    "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) VALUES ('C', 0, 'E', 'ALLOCATE', 0, 15, 0, 2)",
    "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) VALUES ('C', 0, 'E', 'REVERSE', 0, 0, 5, 1)",
];

/// Existing allocations are carried forward in place: each reads as a record (ACTIVE, or
/// REVERSED if it was reversed), nothing in the ledger is rewritten, and verify passes.
async fn an_old_ledger_reads_as_records_after_the_upgrade(backend: Backend) {
    let Some(old) = blank_db(backend).await else { return };
    migrate_like_an_old_binary(backend, &old).await;
    for sql in OLD_LEDGER {
        execute(backend, &old.url, sql).await;
    }
    let store = store::open(&old.url).await.expect("open");
    store.migrate().await.expect("upgrade");
    assert!(store.verify().await.unwrap().problems.is_empty(), "{:?}", store.verify().await.unwrap().problems);
    let company = coins::domain::CompanyId::parse("C").unwrap();
    let r1 = store.allocation(&company, &coins::domain::RequestId::parse("R1").unwrap()).await.unwrap().expect("R1");
    assert_eq!((r1.state, r1.coins, r1.coins_reversed, r1.expires_at_ms, r1.activated_at_ms), (AllocationState::Active, 10, 0, Some(90_000_000), Some(1000)));
    assert_eq!(r1.coin_config_id.as_deref(), Some("WCC100001"));
    assert_eq!(r1.calculation.exact, "10");
    let r2 = store.allocation(&company, &coins::domain::RequestId::parse("R2").unwrap()).await.unwrap().expect("R2");
    assert_eq!((r2.state, r2.coins_reversed), (AllocationState::Reversed, 5));
    // The upgraded tables take a balance below zero (debt), which the first version refused.
    let claw_back = coins::domain::adjust::AdjustCmd {
        company: company.clone(),
        user: coins::domain::UserId::parse("U").unwrap(),
        request_id: coins::domain::RequestId::parse("CLAW").unwrap(),
        coins: -30,
        reason: "Fraud".into(),
        expiry: coins::domain::adjust::AdjustExpiry::Never,
        pending_days: None,
        qualifying: false,
        on_shortfall: coins::domain::allocation::OnShortfall::Negative,
        client_id: "test".into(),
        now_ms: 2000,
    };
    assert_eq!(store.adjust(claw_back).await.expect("a debt on an upgraded database").receipt.balance, -20);
    assert!(store.verify().await.unwrap().problems.is_empty(), "{:?}", store.verify().await.unwrap().problems);
}

/// Builds the database as the binary that shipped migration `last` left it (today's files up to
/// it; rows left unsealed, which the upgrade seals).
async fn migrate_up_to(backend: Backend, db: &BlankDb, last: i64) {
    let list = if backend == Backend::Sqlite { migrate::SQLITE } else { migrate::POSTGRES };
    execute(backend, &db.url, migrate::CREATE_TABLE).await;
    for m in list.iter().filter(|m| m.version <= last) {
        execute(backend, &db.url, m.sql).await;
        execute(backend, &db.url, &format!("INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, '{}', 0)", m.version, m.name)).await;
    }
}

/// A rolling scheme's qualifying coins, kept one row per credit and per return before, are
/// carried forward as one sum per member and UTC day (a day before 1970 rounded down), and the
/// old table is gone.
async fn a_rolling_schemes_coins_are_summed_by_day_after_the_upgrade(backend: Backend) {
    let Some(db) = blank_db(backend).await else { return };
    let before_days = if backend == Backend::Sqlite { 12 } else { 17 };
    migrate_up_to(backend, &db, before_days).await;
    const DAY: i64 = 86_400_000;
    for (user, at, request, by, coins) in [
        ("U1", 1_000, "R1", "R1", 10),
        ("U1", DAY - 1, "R2", "R2", 5),
        ("U1", DAY, "R3", "R3", 7),
        ("U1", DAY, "R3", "X3", -2),
        ("U1", 3 * DAY + 5, "R4", "R4", 1),
        ("U1", 3 * DAY + 6, "R4", "X4", -1),
        ("U2", -1, "R5", "R5", 4),
    ] {
        execute(
            backend,
            &db.url,
            &format!(
                "INSERT INTO qualifying_coins (user_id, earned_at, request_id, by_request_id, company_id, coins) VALUES ('{user}', {at}, '{request}', '{by}', 'C', {coins})"
            ),
        )
        .await;
    }
    upgrade_with_this_binary(&db.url).await.expect("upgrade");
    let sql = "SELECT user_id, day, company_id, coins FROM qualifying_days ORDER BY user_id, day";
    let days: Vec<(String, i64, String, i64)> = match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(&db.url).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => pg(&db.url).await.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect(),
    };
    let row = |u: &str, day, coins| (u.to_owned(), day, "C".to_owned(), coins);
    // A day whose credit was returned in full keeps its row, at nothing: it changes no sum.
    assert_eq!(days, vec![row("U1", 0, 15), row("U1", 1, 5), row("U1", 3, 0), row("U2", -1, 4)]);
    let dump = schema_dump(backend, &db.url).await;
    assert!(dump.iter().any(|l| l.contains("qualifying_days")), "the dump must show tables");
    assert!(!dump.iter().any(|l| l.contains("table qualifying_coins") || l.contains("column qualifying_coins.")), "the per-credit table must be gone");
}

/// `coins migrate` (and `serve`, which runs the same step first) on a database whose record of
/// a shipped migration no longer matches: a clear error naming it, a failing exit, nothing applied.
async fn a_changed_shipped_migration_refuses_to_start_naming_it(backend: Backend) {
    let Some(db) = blank_db(backend).await else { return };
    upgrade_with_this_binary(&db.url).await.expect("migrate");
    let (version, named) = if backend == Backend::Sqlite { (3, "0003_webhooks") } else { (6, "0006_webhooks") };
    execute(backend, &db.url, &format!("UPDATE schema_migrations SET checksum = 'edited' WHERE version = {version}")).await;
    let before = schema_dump(backend, &db.url).await;

    for command in ["migrate", "serve"] {
        let out =
            Command::new(env!("CARGO_BIN_EXE_coins")).arg(command).env("COINS_DATABASE_URL", &db.url).env("COINS_LISTEN", "127.0.0.1:0").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command} must refuse to start: {stderr}");
        assert!(stderr.contains(&format!("migration {named} differs")), "{command}: {stderr}");
        assert!(stderr.contains("must never change"), "{command}: {stderr}");
    }
    assert_eq!(schema_dump(backend, &db.url).await, before, "nothing may be applied");

    // A database that a newer binary migrated is refused too.
    execute(backend, &db.url, &format!("UPDATE schema_migrations SET checksum = NULL WHERE version = {version}")).await;
    execute(backend, &db.url, "INSERT INTO schema_migrations (version, name, applied_at, checksum) VALUES (999, 'future', 0, 'x')").await;
    let err = upgrade_with_this_binary(&db.url).await.unwrap_err().to_string();
    assert!(err.contains("migration 999") && err.contains("newer version of coins"), "{err}");
}

macro_rules! on_both {
    ($($name:ident),*) => {$(
        mod $name {
            use crate::helpers::Backend;
            #[tokio::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    migrated_at_the_old_version_then_upgraded_has_the_schema_of_a_fresh_database,
    a_changed_shipped_migration_refuses_to_start_naming_it,
    an_old_ledger_reads_as_records_after_the_upgrade,
    a_rolling_schemes_coins_are_summed_by_day_after_the_upgrade,
    only_a_limited_campaigns_allocations_are_indexed_by_member_after_the_upgrade
);

/// PostgreSQL updates a member's row in place (no new index entries, a HOT update) only when no
/// column an index of `users` uses changes, the condition of a partial index included. Every
/// allocation changes the balances, lifetime totals and qualifying coins, so no index may use
/// them (0012's `balance < 0` condition did, until 0020: no update of `users` was in place).
/// Members already in debt before the upgrade are found by the new index's condition after it.
#[tokio::test]
async fn no_index_of_users_uses_a_column_every_allocation_changes_on_postgres() {
    let Some(db) = blank_db(Backend::Postgres).await else { return };
    migrate_up_to(Backend::Postgres, &db, 19).await;
    let users = "INSERT INTO users (company_id, user_id, balance, created_at) VALUES ('C', 'OWES', -5, 0), ('C', 'HAS', 5, 0), ('C', 'NONE', 0, 0)";
    execute(Backend::Postgres, &db.url, users).await;
    upgrade_with_this_binary(&db.url).await.unwrap();
    let client = pg(&db.url).await;
    let owing: Vec<String> = client.query("SELECT user_id FROM users WHERE in_debt ORDER BY user_id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(owing, ["OWES"]);
    let rows = client.query("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'users'::regclass", &[]).await.unwrap();
    let definitions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(definitions.iter().any(|d| d.contains("users_in_debt")), "{definitions:?}");
    let changed = ["balance", "pending_balance", "lifetime_earned", "lifetime_redeemed", "lifetime_expired", "qualifying_total"];
    for definition in &definitions {
        let words: Vec<&str> = definition.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
        assert!(!changed.iter().any(|c| words.contains(c)), "{definition} uses a column every allocation changes");
    }
    // Room on the page for the new version, then a balance update that PostgreSQL does in place.
    let options: Option<Vec<String>> = client.query_one("SELECT reloptions FROM pg_class WHERE oid = 'users'::regclass", &[]).await.unwrap().get(0);
    assert_eq!(options, Some(vec!["fillfactor=80".to_owned()]));
    client.batch_execute("BEGIN; UPDATE users SET balance = balance + 1, lifetime_earned = lifetime_earned + 1 WHERE user_id = 'HAS'").await.unwrap();
    let in_place: i64 = client.query_one("SELECT pg_stat_get_xact_tuples_hot_updated('users'::regclass)", &[]).await.unwrap().get(0);
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(in_place, 1, "the balance update was not done in place");
}

/// SQLite finds a request's own ledger entry by the entry's number kept on the request (0014),
/// not by an index of entries by request: existing requests point to the entry of their kind
/// (a return of held coins to its CANCEL entry, an activation to its own; nothing for an
/// allocation that earned nothing, an alias, an activation of an active allocation, and never an
/// entry of another type that carries the request's id), the index is gone, and an entry written after the upgrade is
/// pointed to as it is written. The caps index goes too while no configuration has a cap, and the
/// first start with a capped configuration builds it back.
#[tokio::test]
async fn requests_point_to_their_own_entries_after_the_upgrade_on_sqlite() {
    let Some(db) = blank_db(Backend::Sqlite).await else { return };
    migrate_up_to(Backend::Sqlite, &db, 13).await;
    let request = |id: &str, kind: &str, coins: i64, alias: &str| {
        format!(
            "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, alias_of, created_at) \
             VALUES ('C', '{id}', '{kind}', 'U', 'E', {coins}, '', {alias}, 1000)"
        )
    };
    let entry = |id: &str, kind: &str, coins: i64| {
        format!(
            "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, created_at) \
             VALUES ('C', 'U', '{kind}', {coins}, 0, 'E', '{id}', 1000)"
        )
    };
    for sql in [
        request("R1", "ALLOCATE", 10, "NULL"),
        request("Z1", "ALLOCATE", 0, "NULL"),
        request("Y1", "ALLOCATE", 10, "'R1'"),
        request("X1", "REVERSE", 4, "NULL"),
        request("D1", "REDEEM", 2, "NULL"),
        request("A1", "ADJUST", 3, "NULL"),
        request("P1", "ACTIVATE", 0, "NULL"),
        request("P2", "ACTIVATE", 6, "NULL"),
        entry("R1", "ALLOCATE", 10),
        entry("R1", "ACTIVATE", 0),
        entry("X1", "CANCEL", -4),
        entry("D1", "REDEEM", -2),
        entry("A1", "ADJUST", 3),
        entry("P2", "ACTIVATE", 0),
    ] {
        execute(Backend::Sqlite, &db.url, &sql).await;
    }
    upgrade_with_this_binary(&db.url).await.expect("upgrade");

    let conn = rusqlite::Connection::open(&db.url).unwrap();
    let own = |id: &str, kind: &str| -> Option<i64> {
        conn.query_row("SELECT entry_id FROM ledger_entries WHERE request_id = ?1 AND type = ?2", [id, kind], |r| r.get(0)).ok()
    };
    let expected: Vec<(String, Option<i64>)> = [
        ("A1", own("A1", "ADJUST")),
        ("D1", own("D1", "REDEEM")),
        ("P1", None),
        ("P2", own("P2", "ACTIVATE")),
        ("R1", own("R1", "ALLOCATE")),
        ("X1", own("X1", "CANCEL")),
        ("Y1", None),
        ("Z1", None),
    ]
    .into_iter()
    .map(|(id, e)| (id.to_owned(), e))
    .collect();
    assert!(expected.iter().filter(|(_, e)| e.is_some()).count() == 5, "every own entry exists: {expected:?}");
    let pointers = |conn: &rusqlite::Connection| -> Vec<(String, Option<i64>)> {
        let mut stmt = conn.prepare("SELECT request_id, entry_id FROM requests ORDER BY request_id").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(pointers(&conn), expected);
    let index = |name: &str| -> bool {
        rusqlite::Connection::open(&db.url)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?1", [name], |r| r.get::<_, i64>(0))
            .unwrap()
            == 1
    };
    assert!(!index("ledger_by_request"), "the index of entries by request is gone");
    assert!(!index("ledger_caps"), "no configuration has a cap");

    conn.execute_batch(&format!("{}; {}", request("N1", "ALLOCATE", 5, "NULL"), entry("N1", "ALLOCATE", 5))).unwrap();
    let n1: Option<i64> = conn.query_row("SELECT entry_id FROM requests WHERE request_id = 'N1'", [], |r| r.get(0)).unwrap();
    assert_eq!(n1, own("N1", "ALLOCATE"));
    assert!(n1.is_some());

    conn.execute_batch(
        "INSERT INTO coin_configs (configuration, company_id, event, amount, max_per_user, created_at, updated_at) VALUES ('DEFAULT', '', 'E', 1, 3, 0, 0)",
    )
    .unwrap();
    upgrade_with_this_binary(&db.url).await.expect("a start with a capped configuration");
    assert!(index("ledger_caps"), "a capped configuration has its index when the store opens");
}

/// An order's allocations are indexed only once no longer live (0015): after the upgrade the
/// index holds the reversed and canceled allocations and the aliases, not the live ones, and a
/// reversal made after it moves its allocation in.
#[tokio::test]
async fn only_ended_allocations_and_aliases_are_indexed_by_order_after_the_upgrade_on_sqlite() {
    let Some(db) = blank_db(Backend::Sqlite).await else { return };
    migrate_up_to(Backend::Sqlite, &db, 14).await;
    for (id, order, state, alias) in [
        ("LIVE", "O1", "'ACTIVE'", "NULL"),
        ("HELD", "O2", "'PENDING'", "NULL"),
        ("NONE", "O3", "'ZERO'", "NULL"),
        ("GONE", "O1", "'REVERSED'", "NULL"),
        ("VOID", "O2", "'CANCELED'", "NULL"),
        ("AGAIN", "O1", "NULL", "'LIVE'"),
    ] {
        execute(
            Backend::Sqlite,
            &db.url,
            &format!(
                "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, order_id, state, alias_of) \
                 VALUES ('C', '{id}', 'ALLOCATE', 'U', 'E', 1, '', 1000, '{order}', {state}, {alias})"
            ),
        )
        .await;
    }
    upgrade_with_this_binary(&db.url).await.expect("upgrade");
    let conn = rusqlite::Connection::open(&db.url).unwrap();
    let indexed = |conn: &rusqlite::Connection| -> Vec<String> {
        let sql = "SELECT request_id FROM requests INDEXED BY requests_ended_by_order WHERE company_id = 'C' AND event = 'E' AND order_id IS NOT NULL \
                   AND (state IS NULL OR NOT (state = 'PENDING' OR state = 'ACTIVE' OR state = 'ZERO')) ORDER BY request_id";
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(indexed(&conn), ["AGAIN", "GONE", "VOID"]);
    let old: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'requests_by_order'", [], |r| r.get(0)).unwrap();
    assert_eq!(old, 0, "the index of every allocation by order is gone");
    conn.execute_batch("UPDATE requests SET state = 'REVERSED' WHERE request_id = 'LIVE'").unwrap();
    assert_eq!(indexed(&conn), ["AGAIN", "GONE", "LIVE", "VOID"]);
}

/// A query's rows on either backend, one text column each.
async fn texts(backend: Backend, url: &str, sql: &str) -> Vec<String> {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => pg(url).await.query(sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect(),
    }
}

/// A campaign's allocations are indexed by member only under a per-user limit (SQLite 0016,
/// PostgreSQL 0021): after the upgrade the allocations of a limited campaign carry the mark and
/// are in that index, those of an unlimited one and the rest are not; every campaign's
/// allocations are still counted by campaign, from an index that no longer holds the member.
async fn only_a_limited_campaigns_allocations_are_indexed_by_member_after_the_upgrade(backend: Backend) {
    let Some(db) = blank_db(backend).await else { return };
    migrate_up_to(backend, &db, if backend == Backend::Sqlite { 15 } else { 20 }).await;
    for (name, limit) in [("limited", "2"), ("open", "NULL")] {
        execute(
            backend,
            &db.url,
            &format!(
                "INSERT INTO campaigns (company_id, name, events, starts_at, ends_at, bonus_coins, max_triggers_per_user, created_by, created_at, updated_by, updated_at) \
                 VALUES ('C', '{name}', NULL, 0, 9000000000000000, 5, {limit}, 'x', 0, 'x', 0)"
            ),
        )
        .await;
    }
    let campaign = |name: &str| format!("(SELECT 'CMP' || CAST(seq + 100000 AS TEXT) FROM campaigns WHERE name = '{name}')");
    let insert = |id: &str, user: &str, under: &str| {
        format!(
            "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, campaign_id) \
             VALUES ('C', '{id}', 'ALLOCATE', '{user}', 'E', 1, '', 1000, {under})"
        )
    };
    for (id, user, under) in [("L1", "U", campaign("limited")), ("L2", "V", campaign("limited")), ("O1", "U", campaign("open")), ("N1", "U", "NULL".into())] {
        execute(backend, &db.url, &insert(id, user, &under)).await;
    }
    upgrade_with_this_binary(&db.url).await.expect("upgrade");
    let marked = "SELECT request_id FROM requests WHERE campaign_limited ORDER BY request_id";
    assert_eq!(texts(backend, &db.url, marked).await, ["L1", "L2"]);
    let by_campaign = "SELECT campaign_id || ':' || CAST(COUNT(*) AS TEXT) FROM requests WHERE company_id = 'C' AND campaign_id IS NOT NULL \
                       GROUP BY campaign_id ORDER BY campaign_id";
    assert_eq!(texts(backend, &db.url, by_campaign).await, ["CMP100001:2", "CMP100002:1"]);
    match backend {
        Backend::Sqlite => {
            let limited = format!(
                "SELECT request_id FROM requests INDEXED BY requests_by_limited_campaign WHERE company_id = 'C' AND campaign_id = {} AND user_id = 'U' \
                 AND campaign_limited = 1",
                campaign("limited")
            );
            assert_eq!(texts(backend, &db.url, &limited).await, ["L1"]);
            let indexed = by_campaign.replace("FROM requests", "FROM requests INDEXED BY requests_by_campaign");
            assert_eq!(texts(backend, &db.url, &indexed).await, ["CMP100001:2", "CMP100002:1"]);
            let columns = texts(backend, &db.url, "SELECT name FROM pragma_index_info('requests_by_campaign') ORDER BY seqno").await;
            assert_eq!(columns, ["company_id", "campaign_id"], "the index by campaign no longer holds the member");
        }
        Backend::Postgres => {
            let definitions = texts(
                backend,
                &db.url,
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE 'requests_by_%campaign' ORDER BY indexname",
            )
            .await;
            assert_eq!(definitions.len(), 2, "{definitions:?}");
            assert!(definitions[0].ends_with("(company_id, campaign_id) WHERE (campaign_id IS NOT NULL)"), "{definitions:?}");
            assert!(definitions[1].ends_with("(company_id, campaign_id, user_id) WHERE campaign_limited"), "{definitions:?}");
            // A binary older than the migration, left running beside a newer one, writes no mark:
            // verify names its allocations under a limited campaign, and the statement the README
            // gives for that case marks them (and nothing else).
            for (id, under) in [("L3", campaign("limited")), ("O2", campaign("open"))] {
                execute(backend, &db.url, &insert(id, "W", &under)).await;
            }
            let unmarked = |problems: Vec<String>| -> Vec<String> { problems.into_iter().filter(|p| p.contains("marked")).collect() };
            let problems = unmarked(store::open(&db.url).await.unwrap().verify().await.unwrap().problems);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains("C/L3 under CMP100001, limited per user, is not marked"), "{problems:?}");
            let readme = include_str!("../../README.md");
            let section = &readme[readme.find("**Upgrading to `0021_campaign_members_only_when_limited`").expect("the README's upgrade note")..];
            let statement = section.split("```sql\n").nth(1).and_then(|s| s.split("```").next()).expect("the statement in the upgrade note");
            execute(backend, &db.url, statement).await;
            assert_eq!(texts(backend, &db.url, marked).await, ["L1", "L2", "L3"]);
            assert_eq!(unmarked(store::open(&db.url).await.unwrap().verify().await.unwrap().problems), Vec::<String>::new());
        }
    }
}
