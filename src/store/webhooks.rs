//! Webhooks in storage: the records, and the one order a delivery's outcome is written in, for
//! both backends (the attempt row, the message's next state, the endpoint's failing streak and,
//! after five days of failures, its disabling — each decided by `domain::webhooks`).
//!
//! The outbox itself is written by the ledger's flows (`LedgerTx::record_events`), in the same
//! transaction as the entry it reports, one message per entry and enabled subscription that
//! wants its event type.

use std::collections::{HashMap, HashSet};

use super::reminders::ReminderData;
use super::{LedgerEntry, StoreResult};
use crate::domain::CompanyId;
use crate::domain::webhooks::{EventType, RetryPolicy, should_disable};

/// A subscription as stored. The secrets are sealed (see `keys`).
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
    /// A return: the coins of its original that no return has ended yet.
    pub coins_remaining: Option<i64>,
}

/// What a return's stored answer says remains of its original.
pub(crate) fn coins_remaining(stored_answer: Option<&str>) -> Option<i64> {
    use super::model::StoredReceipt;
    let answer = crate::domain::reverse::ReverseReceipt::from_stored(Some(stored_answer?)).ok()?;
    Some(answer.coins_remaining)
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
    pub data: MessageData,
    pub created_at: i64,
}

/// What a `tier.*` event reports: one row of the member's tier history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChangeData {
    pub user_id: String,
    pub from_tier: Option<String>,
    pub to_tier: String,
    pub qualifying_coins: i64,
    pub tier_expires_at: Option<i64>,
    pub cause: String,
    pub request_id: Option<String>,
}

/// What a message reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageData {
    /// A ledger entry.
    Entry(Box<EventData>),
    /// A `coins.expiring` reminder.
    Expiring(ReminderData),
    /// A `tier.*` event.
    Tier(TierChangeData),
    /// `webhook.test`.
    Test,
}

impl Delivery {
    /// The message id of the Standard Webhooks headers: stable per event and endpoint.
    pub fn message_id(&self) -> String {
        match &self.data {
            MessageData::Expiring(r) => r.message_key.clone(),
            _ => message_id(self.message_seq),
        }
    }
}

/// The id of a message that reports an entry or a test; a reminder's is its key.
pub fn message_id(seq: i64) -> String {
    format!("msg_{seq}")
}

/// A message id as a caller names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageRef {
    Seq(i64),
    /// A reminder's key (`msg_exp_…`).
    Reminder(String),
}

pub fn parse_message_id(id: &str) -> Option<MessageRef> {
    let rest = id.strip_prefix("msg_")?;
    if let Some(hex) = rest.strip_prefix("exp_") {
        return (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then(|| MessageRef::Reminder(id.to_owned()));
    }
    rest.parse().ok().filter(|n: &i64| *n > 0).map(MessageRef::Seq)
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
    /// Not sent, because what it announced no longer holds (a reminder of coins that expired
    /// meanwhile): the message fails for good, and the endpoint is not held to account for it.
    pub withdrawn: bool,
}

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt_id: i64,
    pub message_seq: i64,
    /// A reminder's message key (its message id); `None` for other messages.
    pub message_key: Option<String>,
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

/// The fetches and writes of recording attempts, inside one database transaction.
pub(crate) trait WebhookTx {
    /// Of these webhooks (sorted), the ones that still exist with the start of their failing
    /// streak, locked in id order for the rest of the transaction: recording and deleting a
    /// webhook both lock it first, so they never deadlock.
    async fn lock_webhooks(&mut self, webhook_ids: &[String]) -> StoreResult<HashMap<String, Option<i64>>>;
    /// One row per attempt, with the time of its retry (`None`: no retry).
    async fn insert_attempts(&mut self, attempts: &[(&AttemptOutcome, Option<i64>)]) -> StoreResult<()>;
    /// Each message's state after its attempt, made at the time given, applied only while the
    /// message still has the number of attempts it had when the attempt was claimed (given with
    /// it); the (message, attempts before) pairs it was applied to. The pairs are distinct.
    async fn finish_messages(&mut self, finished: &[Finished]) -> StoreResult<HashSet<(i64, i64)>>;
    async fn set_failing_since(&mut self, webhook_id: &str, since: Option<i64>) -> StoreResult<()>;
    async fn disable(&mut self, webhook_id: &str, reason: &str, now_ms: i64) -> StoreResult<()>;
}

/// A message's state after an attempt: its sequence number, the number of attempts it had
/// when the attempt was claimed, the state and the time of the attempt.
pub(crate) type Finished = (i64, i64, MessageState, i64);

/// Records attempts, each with the number made before it: the message is delivered, retried
/// later (spread by its own jitter) or failed; a delivery ends its endpoint's failing streak, a
/// failure starts one; an endpoint failing for the policy's period is disabled. The attempts are
/// taken in order, as if recorded one by one, and written a few statements per batch.
///
/// An attempt whose webhook was deleted meanwhile has nothing left to record it against and is
/// skipped (`None`), so it cannot fail the others of its batch. So is a stale one: two attempts
/// of one message can be in flight when a lease runs out before its attempt ends, and the first
/// recorded decides; the later one, counted from the same attempts, would otherwise overwrite
/// whatever came after the first (a manual retry accepted meanwhile would never be sent). Its
/// attempt still goes in the log, without a retry time, and still counts for the endpoint's
/// failing streak: the endpoint answered (or did not) all the same. (A manual retry accepted
/// while the message's current attempt is in flight is answered by that attempt: its outcome
/// decides the message, delivered or retried on the policy's schedule.)
pub(crate) async fn record_all<T: WebhookTx>(tx: &mut T, outcomes: &[(AttemptOutcome, i64)], policy: &RetryPolicy) -> StoreResult<Vec<Option<MessageState>>> {
    let mut ids: Vec<String> = outcomes.iter().map(|(o, _)| o.webhook_id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let before = tx.lock_webhooks(&ids).await?;
    let mut failing = before.clone();
    let (mut states, mut finished, mut disabled) = (Vec::new(), Vec::<Finished>::new(), Vec::<(&str, i64)>::new());
    for (outcome, attempts_before) in outcomes {
        let Some(since) = failing.get_mut(&outcome.webhook_id) else {
            states.push(None);
            continue;
        };
        let now = outcome.attempted_at;
        let state = if outcome.delivered {
            MessageState::Delivered
        } else if outcome.withdrawn {
            MessageState::Failed
        } else {
            match crate::domain::webhooks::next_attempt(policy, attempts_before + 1, now, jitter()) {
                Some(at) => MessageState::Retry { at },
                None => MessageState::Failed,
            }
        };
        // A second attempt counted from the same attempts in this batch is stale: the first one
        // recorded decides. (One counted from more attempts is not: it came after.)
        let first = !finished.iter().any(|f| (f.0, f.1) == (outcome.message_seq, *attempts_before));
        if first {
            finished.push((outcome.message_seq, *attempts_before, state, now));
        }
        if outcome.delivered {
            *since = None;
        } else if !outcome.withdrawn && should_disable(policy, *since.get_or_insert(now), now) && !disabled.iter().any(|(id, _)| *id == outcome.webhook_id) {
            disabled.push((&outcome.webhook_id, now));
        }
        states.push(first.then_some(state));
    }
    let applied = tx.finish_messages(&finished).await?;
    let mut attempts = Vec::with_capacity(outcomes.len());
    for ((outcome, attempts_before), state) in outcomes.iter().zip(states.iter_mut()) {
        if !failing.contains_key(&outcome.webhook_id) {
            continue;
        }
        if !applied.contains(&(outcome.message_seq, *attempts_before)) {
            *state = None;
        }
        attempts.push((
            outcome,
            match state {
                Some(MessageState::Retry { at }) => Some(*at),
                _ => None,
            },
        ));
    }
    tx.insert_attempts(&attempts).await?;
    for id in &ids {
        if let (Some(was), Some(now)) = (before.get(id), failing.get(id))
            && was != now
        {
            tx.set_failing_since(id, *now).await?;
        }
    }
    for (id, now) in disabled {
        tx.disable(id, "failing", now).await?;
        tracing::warn!(webhook_id = %id, "webhook disabled: every delivery failed for the configured period");
    }
    Ok(states)
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
