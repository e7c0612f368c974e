//! The domain: validated types and every ledger rule, as pure functions. No I/O here.
//!
//! Each operation is decided from the rows a backend fetched and answered with a plan (the
//! entries, lot moves and balance to write) or a typed [`Refusal`]; the backends only fetch and
//! write what the plan says (see `store/ledger.rs` for the order they do it in).
//!
//! - [`ids`], [`coins`]: identifiers and coin amounts, valid once constructed.
//! - [`config`]: coin configurations and their resolution.
//! - [`principal`]: who is calling and for which companies; [`lockout`]: failed-authentication locks.
//! - [`ledger`]: the shared vocabulary of plans — entry kinds, lot moves, stored requests.
//! - [`allocate`], [`redeem`], [`reverse`], [`activate`], [`adjust`], [`expire`]: one module per operation.
//! - [`earn`]: coins earned on a purchase value (fixed or percentage, minimum, cap, rounding),
//!   in exact integer arithmetic; [`allocation`]: an allocation's life (held, active, canceled,
//!   reversed, zero), one live allocation per order, and how much each return takes.
//! - [`campaigns`]: bonus campaigns, their windows and which one an allocation gets.
//! - [`lots`]: which lots a debit takes; [`refusal`]: why an operation was refused.
//! - [`webhooks`]: event types, retries, disabling, forbidden targets; [`reminders`]: which
//!   expiry reminder is due.

pub mod activate;
pub mod adjust;
pub mod allocate;
pub mod allocation;
pub mod campaigns;
pub mod coins;
pub mod config;
pub mod earn;
pub mod expire;
pub mod export;
pub mod ids;
pub mod ledger;
pub mod lockout;
pub mod lots;
pub mod principal;
pub mod redeem;
pub mod refusal;
pub mod reminders;
pub mod report;
pub mod reverse;
pub mod simulate;
pub mod tiers;
pub mod webhooks;

pub use coins::Coins;
pub use config::{CoinConfig, ConfigKind};
pub use ids::{CampaignId, CoinConfigId, CompanyId, EventName, OrderId, RequestId, UserId};
pub use principal::Principal;
pub use refusal::Refusal;
