//! Expiry reminders on PostgreSQL. Several processes may run the same pass at once: the unique
//! reminder row lets exactly one of them queue each event (the other waits for its commit and
//! inserts nothing).

use async_trait::async_trait;

use super::PgStore;
use crate::domain::CompanyId;
use crate::domain::reminders::LeadTimes;
use crate::domain::webhooks::EventType;
use crate::store::StoreResult;
use crate::store::reminders::{ExpiringCoins, Position, Reminder, ReminderStore, Schedule, schedules_from};

/// Spendable lots only: a held lot's `expires_at` is provisional until it activates. A range of
/// the expiry index (a pass looks at the few expiries that came within reach since the last one).
const EXPIRING_SQL: &str = "SELECT user_id, expires_at, SUM(remaining)::BIGINT FROM lots \
     WHERE expires_at >= $2 AND expires_at <= $4 AND remaining > 0 AND company_id = $1 AND pending_until IS NULL \
     AND (expires_at > $2 OR ($3::TEXT IS NOT NULL AND user_id > $3)) \
     GROUP BY expires_at, user_id ORDER BY expires_at, user_id LIMIT $5";

/// The companies' schedules, of companies with an enabled endpoint for `coins.expiring`.
const SCHEDULES_SQL: &str = "SELECT s.company_id, s.lead_days, s.swept_to, s.swept_user FROM reminder_schedules s \
     WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.company_id = s.company_id AND w.enabled AND (w.event_mask & $1) <> 0) \
     ORDER BY s.company_id, s.lead_days DESC";

/// The advisory-lock class of a company's reminder settings (the object is the company's hash):
/// two PUTs of one company take turns, so neither can leave the other's lead times behind.
const SETTINGS_LOCK_CLASS: i32 = 0x636f_696e;

fn lead(days: i64) -> u16 {
    u16::try_from(days).unwrap_or(u16::MAX)
}

#[async_trait]
impl ReminderStore for PgStore {
    async fn reminder_days(&self, company: &CompanyId) -> StoreResult<LeadTimes> {
        let client = self.core.client().await?;
        let rows = client.query("SELECT lead_days FROM reminder_schedules WHERE company_id = $1", &[&company.as_str()]).await?;
        Ok(LeadTimes::from_stored(rows.iter().map(|r| lead(r.get(0))).collect()))
    }

    async fn set_reminder_days(&self, company: &CompanyId, leads: &LeadTimes, actor: &str, now_ms: i64) -> StoreResult<()> {
        let (company, actor) = (company.clone(), actor.to_owned());
        let days: Vec<i64> = leads.days().iter().map(|&d| i64::from(d)).collect();
        self.core
            .transact(move |tx| {
                let (company, actor, days) = (company.clone(), actor.clone(), days.clone());
                Box::pin(async move {
                    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&SETTINGS_LOCK_CLASS, &company.as_str()]).await?;
                    tx.execute("DELETE FROM reminder_schedules WHERE company_id = $1 AND NOT (lead_days = ANY($2))", &[&company.as_str(), &days]).await?;
                    for d in &days {
                        tx.execute(
                            "INSERT INTO reminder_schedules (company_id, lead_days, swept_to, swept_user, updated_by, updated_at) VALUES ($1, $2, $3, NULL, $4, $3) \
                             ON CONFLICT (company_id, lead_days) DO UPDATE SET updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
                            &[&company.as_str(), d, &now_ms, &actor],
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn reminder_schedules(&self) -> StoreResult<Vec<Schedule>> {
        let client = self.core.client().await?;
        let rows = client.query(SCHEDULES_SQL, &[&EventType::Expiring.bit()]).await?;
        Ok(schedules_from(rows.iter().map(|r| (r.get(0), lead(r.get(1)), Position { at: r.get(2), user: r.get(3) })).collect()))
    }

    async fn expiring_coins(&self, company: &CompanyId, after: &Position, until: i64, limit: i64) -> StoreResult<Vec<ExpiringCoins>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(EXPIRING_SQL).await?;
        let rows = client.query(&stmt, &[&company.as_str(), &after.at, &after.user, &until, &limit]).await?;
        Ok(rows.iter().map(|r| ExpiringCoins { user_id: r.get(0), expires_at: r.get(1), coins: r.get(2) }).collect())
    }

    async fn send_reminders(&self, schedule: &Schedule, reminders: &[Reminder], position: &Position, now_ms: i64) -> StoreResult<u64> {
        let (company, lead, reminders) = (schedule.company.clone(), i64::from(schedule.lead_days), reminders.to_vec());
        let (from, to) = (schedule.position.clone(), position.clone());
        self.core
            .transact(move |tx| {
                let (company, reminders, from, to) = (company.clone(), reminders.clone(), from.clone(), to.clone());
                Box::pin(async move {
                    let moved = tx
                        .execute(
                            "UPDATE reminder_schedules SET swept_to = $5, swept_user = $6 WHERE company_id = $1 AND lead_days = $2 \
                             AND swept_to = $3 AND swept_user IS NOT DISTINCT FROM $4",
                            &[&company.as_str(), &lead, &from.at, &from.user, &to.at, &to.user],
                        )
                        .await?;
                    if moved == 0 {
                        return Ok(0);
                    }
                    let event = EventType::Expiring;
                    let record = tx
                        .prepare_cached(
                            "INSERT INTO expiry_reminders (company_id, user_id, expires_at, lead_days, coins, days_left, message_key, sent_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING reminder_id",
                        )
                        .await?;
                    let announce = tx
                        .prepare_cached(
                            "INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, reminder_id, event_type, state, next_attempt_at, created_at) \
                             SELECT webhook_id, $1, $2, NULL, $3, $4, 'pending', $5, $5 FROM webhooks WHERE company_id = $1 AND enabled AND (event_mask & $6) <> 0",
                        )
                        .await?;
                    let mut sent = 0;
                    for r in &reminders {
                        let row = tx
                            .query_opt(&record, &[&company.as_str(), &r.user_id, &r.expires_at, &lead, &r.coins, &r.days_left, &r.message_key, &now_ms])
                            .await?;
                        let Some(row) = row else { continue };
                        let reminder_id: i64 = row.get(0);
                        tx.execute(&announce, &[&company.as_str(), &r.user_id, &reminder_id, &event.as_str(), &now_ms, &event.bit()]).await?;
                        sent += 1;
                    }
                    Ok(sent)
                })
            })
            .await
    }
}
