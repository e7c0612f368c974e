//! Migrations embedded in the binary, one list per backend. Each is applied once, in order, in
//! its own transaction, and recorded in `schema_migrations`.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../../migrations/sqlite/0001_init.sql"),
}];

pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../../migrations/postgres/0001_init.sql") },
    Migration { version: 2, name: "allocate_function", sql: include_str!("../../migrations/postgres/0002_allocate_function.sql") },
    Migration { version: 3, name: "allocate_set", sql: include_str!("../../migrations/postgres/0003_allocate_set.sql") },
];

pub const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";
