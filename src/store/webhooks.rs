//! Webhooks in storage: the records, and the one order a delivery's outcome is written in, for
//! both backends (the attempt row, the message's next state, the endpoint's failing streak and,
//! after five days of failures, its disabling — each decided by `domain::webhooks`).
//!
//! The outbox itself is written by the ledger's flows (`LedgerTx::record_events`), in the same
//! transaction as the entry it reports, one message per entry and enabled subscription that
//! wants its event type.

use super::{LedgerEntry, StoreResult};
use crate::domain::CompanyId;
use crate::domain::webhooks::{EventType, RetryPolicy, should_disable};

/// A subscription as stored. The secrets are sealed (see `webhooks::secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub webhook_id: String,
    pub company: CompanyId,
    pub url: String,
    pub event_mask: i64,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret_sealed: String,
    pub previous_sealed: Option<String>,
    pub previous_until: Option<i64>,
    pub failing_since: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A change to a subscription; `None` leaves a field as it is. Enabling clears the failing
/// streak, so a re-enabled endpoint gets its backlog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub event_mask: Option<i64>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// The ledger entry a message reports, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    pub user_id: String,
    pub company_id: String,
    pub entry: LedgerEntry,
}

/// A message claimed for delivery, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_seq: i64,
    pub webhook_id: String,
    pub url: String,
    pub secret_sealed: String,
    /// The secret before a rotation, while it still signs.
    pub previous_sealed: Option<String>,
    pub event_type: EventType,
    pub attempts: i64,
    pub company_id: String,
    /// `None` for `webhook.test`.
    pub data: Option<EventData>,
    pub created_at: i64,
}

impl Delivery {
    /// The message id of the Standard Webhooks headers: stable per event and endpoint.
    pub fn message_id(&self) -> String {
        message_id(self.message_seq)
    }
}

pub fn message_id(seq: i64) -> String {
    format!("msg_{seq}")
}

pub fn parse_message_id(id: &str) -> Option<i64> {
    id.strip_prefix("msg_")?.parse().ok().filter(|n: &i64| *n > 0)
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub message_seq: i64,
    pub webhook_id: String,
    pub attempted_at: i64,
    pub delivered: bool,
    pub http_status: Option<u16>,
    pub latency_ms: i64,
    /// The start of the response body, or what went wrong.
    pub excerpt: Option<String>,
}

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt_id: i64,
    pub message_seq: i64,
    pub event_type: String,
    pub entry_id: Option<i64>,
    pub attempted_at: i64,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub latency_ms: i64,
    pub excerpt: Option<String>,
    pub next_attempt_at: Option<i64>,
    /// The message's state now: pending, delivered or failed.
    pub message_state: String,
}

/// The message's state after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Delivered,
    Retry { at: i64 },
    Failed,
}

/// The fetches and writes of recording an attempt, inside one database transaction.
pub(crate) trait WebhookTx {
    async fn insert_attempt(&mut self, outcome: &AttemptOutcome, next_attempt_at: Option<i64>) -> StoreResult<()>;
    async fn finish_message(&mut self, seq: i64, state: MessageState, now_ms: i64) -> StoreResult<()>;
    async fn failing_since(&mut self, webhook_id: &str) -> StoreResult<Option<i64>>;
    async fn set_failing_since(&mut self, webhook_id: &str, since: Option<i64>) -> StoreResult<()>;
    async fn disable(&mut self, webhook_id: &str, reason: &str, now_ms: i64) -> StoreResult<()>;
}

/// Records attempts in order (see [`record`]), each retry spread by its own jitter.
pub(crate) async fn record_all<T: WebhookTx>(tx: &mut T, outcomes: &[(AttemptOutcome, i64)], policy: &RetryPolicy) -> StoreResult<Vec<MessageState>> {
    let mut states = Vec::with_capacity(outcomes.len());
    for (outcome, attempts_before) in outcomes {
        states.push(record(tx, outcome, *attempts_before, policy, jitter()).await?);
    }
    Ok(states)
}

/// Records one attempt; `jitter` in [0, 1) spreads the retry (see `domain::webhooks`).
pub(crate) async fn record<T: WebhookTx>(tx: &mut T, outcome: &AttemptOutcome, attempts_before: i64, policy: &RetryPolicy, jitter: f64) -> StoreResult<MessageState> {
    let now = outcome.attempted_at;
    let state = if outcome.delivered {
        MessageState::Delivered
    } else {
        match crate::domain::webhooks::next_attempt(policy, attempts_before + 1, now, jitter) {
            Some(at) => MessageState::Retry { at },
            None => MessageState::Failed,
        }
    };
    let next = match state {
        MessageState::Retry { at } => Some(at),
        _ => None,
    };
    tx.insert_attempt(outcome, next).await?;
    tx.finish_message(outcome.message_seq, state, now).await?;
    if outcome.delivered {
        tx.set_failing_since(&outcome.webhook_id, None).await?;
    } else {
        let since = match tx.failing_since(&outcome.webhook_id).await? {
            Some(since) => since,
            None => {
                tx.set_failing_since(&outcome.webhook_id, Some(now)).await?;
                now
            }
        };
        if should_disable(policy, since, now) {
            tx.disable(&outcome.webhook_id, "failing", now).await?;
            tracing::warn!(webhook_id = %outcome.webhook_id, "webhook disabled: every delivery failed for the configured period");
        }
    }
    Ok(state)
}

/// A message's `state`, `next_attempt_at` (None: unchanged) and `delivered_at` columns.
pub(crate) fn state_columns(state: MessageState, now_ms: i64) -> (&'static str, Option<i64>, Option<i64>) {
    match state {
        MessageState::Delivered => ("delivered", None, Some(now_ms)),
        MessageState::Retry { at } => ("pending", Some(at), None),
        MessageState::Failed => ("failed", None, None),
    }
}

/// A uniform number in [0, 1) to spread retries.
pub(crate) fn jitter() -> f64 {
    let bytes = crate::crypto::random_bytes::<8>();
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
