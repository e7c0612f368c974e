//! Expiry reminders in storage: each company's lead times, and the sweeper's pass that sends
//! `coins.expiring` once per (user, expiry instant, lead time). Which reminder is due is decided
//! by `domain::reminders`; the backends fetch the expiring coins and write what this pass decides.
//!
//! A pass walks, for each lead time of each company with an endpoint for `coins.expiring`, the
//! expiries that came within reach since the last pass (`swept_to`, advanced as it goes), a page
//! at a time. Sending is one transaction per page: the schedule's new position (only from the one
//! the page was read at), the reminder rows (unique per user, instant and lead time, so a second
//! process or a pass repeated after a crash inserts nothing), and a webhook message per
//! subscribed endpoint for each row that was new.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::CompanyId;
use crate::domain::reminders::{self, LeadTimes};

/// Where a lead time's walk over expiry instants stands: every instant before `at` is done, and
/// at `at` the users up to `user` (`None`: all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub at: i64,
    pub user: Option<String>,
}

/// One lead time of one company, with the company's other lead times and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub company: CompanyId,
    pub leads: LeadTimes,
    pub lead_days: u16,
    pub position: Position,
}

/// A user's unspent, spendable coins that expire at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringCoins {
    pub user_id: String,
    pub expires_at: i64,
    pub coins: i64,
}

/// A reminder to record and announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub user_id: String,
    pub expires_at: i64,
    pub coins: i64,
    pub days_left: i64,
    /// The event's `webhook-id`.
    pub message_key: String,
}

/// What a `coins.expiring` event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderData {
    pub user_id: String,
    pub coins: i64,
    pub expires_at: i64,
    pub days_left: i64,
    pub message_key: String,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemindReport {
    pub sent: u64,
    /// Some lead time has more expiries in reach than one page: pass again.
    pub more: bool,
}

#[async_trait]
pub trait ReminderStore: Send + Sync {
    /// The company's lead times (empty: reminders off, or never set).
    async fn reminder_days(&self, company: &CompanyId) -> StoreResult<LeadTimes>;
    /// Replaces the company's lead times. A lead time kept keeps its position; a new one starts
    /// at `now_ms`.
    async fn set_reminder_days(&self, company: &CompanyId, leads: &LeadTimes, actor: &str, now_ms: i64) -> StoreResult<()>;
    /// The lead times, with their positions, of every company that has an enabled endpoint
    /// subscribed to `coins.expiring` (without one, reminders wait: nothing is recorded).
    async fn reminder_schedules(&self) -> StoreResult<Vec<Schedule>>;
    /// A page of the company's coins expiring after `after` and at most at `until`, grouped
    /// by (instant, user), in that order: only spendable lots (held ones have no final expiry).
    async fn expiring_coins(&self, company: &CompanyId, after: &Position, until: i64, limit: i64) -> StoreResult<Vec<ExpiringCoins>>;
    /// In one transaction: moves the schedule from the position it was read at to `position`
    /// (if another pass or a change of lead times moved it meanwhile, nothing is written and 0 is
    /// answered), records each reminder not recorded yet, and queues its event for every endpoint
    /// subscribed to `coins.expiring`. The number of reminders that were new.
    async fn send_reminders(&self, schedule: &Schedule, reminders: &[Reminder], position: &Position, now_ms: i64) -> StoreResult<u64>;
}

/// Schedules from stored rows `(company, lead days, position)` ordered by company: each with
/// its company's lead times.
pub(crate) fn schedules_from(rows: Vec<(String, u16, Position)>) -> Vec<Schedule> {
    rows.chunk_by(|a, b| a.0 == b.0)
        .flat_map(|company_rows| {
            let leads = LeadTimes::from_stored(company_rows.iter().map(|r| r.1).collect());
            company_rows.iter().map(move |(company, lead_days, position)| Schedule {
                company: CompanyId::from_trusted(company.clone()),
                leads: leads.clone(),
                lead_days: *lead_days,
                position: position.clone(),
            })
        })
        .collect()
}

/// The `webhook-id` of a reminder: derived from what makes it unique, so it is the same however
/// often it were queued.
pub fn message_key(company: &CompanyId, user_id: &str, expires_at: i64, lead_days: u16) -> String {
    let digest = crate::crypto::token_hash(&format!("{}\n{user_id}\n{expires_at}\n{lead_days}", company.as_str()));
    format!("msg_exp_{}", &digest[..32])
}

/// One pass of the sweeper over every schedule: a page of each. A schedule that fails is logged
/// and left where it was (the next pass takes it again); the others go on.
pub async fn remind<S: ReminderStore + ?Sized>(store: &S, now_ms: i64) -> StoreResult<RemindReport> {
    let mut report = RemindReport::default();
    for schedule in store.reminder_schedules().await? {
        match remind_one(store, &schedule, now_ms).await {
            Ok((sent, more)) => {
                report.sent += sent;
                report.more |= more;
            }
            Err(e) => tracing::error!(company = %schedule.company, lead_days = schedule.lead_days, error = %super::error::chain(&e),
                "expiry reminders of one lead time failed; retrying next pass"),
        }
    }
    Ok(report)
}

/// A page of one schedule: (reminders sent, whether more is in reach).
async fn remind_one<S: ReminderStore + ?Sized>(store: &S, schedule: &Schedule, now_ms: i64) -> StoreResult<(u64, bool)> {
    let until = reminders::horizon(schedule.lead_days, now_ms);
    if schedule.position.at > until || (schedule.position.at == until && schedule.position.user.is_none()) {
        return Ok((0, false));
    }
    let page = store.expiring_coins(&schedule.company, &schedule.position, until, reminders::PAGE_GROUPS).await?;
    let Some(last) = page.last() else {
        // Nothing in reach: the position may stay (an empty range costs nothing to look at again).
        return Ok((0, false));
    };
    let full = page.len() as i64 == reminders::PAGE_GROUPS;
    let position = if full { Position { at: last.expires_at, user: Some(last.user_id.clone()) } } else { Position { at: until, user: None } };
    let due: Vec<Reminder> = page
        .into_iter()
        .filter(|c| reminders::is_due(&schedule.leads, schedule.lead_days, c.expires_at, now_ms))
        .map(|c| Reminder {
            message_key: message_key(&schedule.company, &c.user_id, c.expires_at, schedule.lead_days),
            days_left: reminders::days_left(c.expires_at, now_ms),
            user_id: c.user_id,
            expires_at: c.expires_at,
            coins: c.coins,
        })
        .collect();
    Ok((store.send_reminders(schedule, &due, &position, now_ms).await?, full))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_key_is_stable_and_names_its_four_parts() {
        let c = CompanyId::from_trusted("C".into());
        let key = message_key(&c, "U1", 1_000, 7);
        assert_eq!(key, message_key(&c, "U1", 1_000, 7));
        assert!(key.starts_with("msg_exp_") && key.len() == 8 + 32, "{key}");
        for other in [message_key(&c, "U2", 1_000, 7), message_key(&c, "U1", 1_001, 7), message_key(&c, "U1", 1_000, 1)] {
            assert_ne!(key, other);
        }
        assert_ne!(key, message_key(&CompanyId::from_trusted("D".into()), "U1", 1_000, 7));
    }
}
