//! Pure domain types and rules: no I/O here.
//!
//! - [`ids`]: validated identifiers (`CompanyId`, `UserId`, `RequestId`, `EventName`, `CoinConfigId`).
//! - [`coins`]: `Coins`, a checked amount, and the per-request limits.
//! - [`config`]: coin configurations, their kinds and the resolution rule of SPEC §1.
//! - [`lots`]: which lots a debit consumes, currency to coins.
//! - [`principal`]: who is calling and which companies they may act for.

pub mod coins;
pub mod config;
pub mod ids;
pub mod lots;
pub mod principal;

pub use coins::Coins;
pub use config::{CoinConfig, ConfigKind};
pub use ids::{CoinConfigId, CompanyId, EventName, RequestId, UserId};
pub use principal::Principal;
