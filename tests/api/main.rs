//! One integration test binary (faster to link than one per file): the real server over HTTP,
//! every test on SQLite and on PostgreSQL.

mod helpers;

mod adjust;
mod allocate;
mod batch_model;
mod browser;
mod caches;
mod campaigns;
mod cli;
mod commerce;
mod concurrency;
mod configs;
mod crash;
mod crash_cycles;
mod dashboard;
mod errors;
mod exports;
mod failover;
mod faults;
mod fuzz;
mod hardening;
mod holds;
mod http_property;
mod isolation;
mod lifecycle;
mod lifecycle_model;
mod logs;
mod metrics;
mod migrations;
mod model;
mod oauth;
mod openapi;
mod patroni;
mod processes;
mod reminders;
mod returns;
mod schemathesis;
mod secrets;
mod simulate;
mod tiers;
mod verify;
mod wal;
mod webhooks;
