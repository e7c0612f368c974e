//! Expiry reminders on SQLite: lead times, the page of expiring coins, and the write that
//! records reminders with their webhook messages (on the writer, like every write).

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::domain::CompanyId;
use crate::domain::reminders::LeadTimes;
use crate::domain::webhooks::EventType;
use crate::store::StoreResult;
use crate::store::reminders::{ExpiringCoins, Position, Reminder, ReminderStore, Schedule, schedules_from};

/// Spendable lots only: a held lot's `expires_at` is provisional until it activates. A range of
/// the expiry index (a pass looks at the few expiries that came within reach since the last one).
const EXPIRING_SQL: &str = "SELECT user_id, expires_at, SUM(remaining) FROM lots INDEXED BY lots_open_by_expiry \
     WHERE expires_at >= ?2 AND expires_at <= ?4 AND remaining > 0 AND company_id = ?1 AND pending_until IS NULL \
     AND (expires_at > ?2 OR (?3 IS NOT NULL AND user_id > ?3)) \
     GROUP BY expires_at, user_id ORDER BY expires_at, user_id LIMIT ?5";

/// The companies' schedules, of companies with an enabled endpoint for `coins.expiring`.
const SCHEDULES_SQL: &str = "SELECT s.company_id, s.lead_days, s.swept_to, s.swept_user FROM reminder_schedules s \
     WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.company_id = s.company_id AND w.enabled = 1 AND (w.event_mask & ?1) <> 0) \
     ORDER BY s.company_id, s.lead_days DESC";

fn lead_days(conn: &Connection, company: &str) -> StoreResult<Vec<u16>> {
    Ok(conn
        .prepare_cached("SELECT lead_days FROM reminder_schedules WHERE company_id = ?1")?
        .query_map(params![company], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

#[async_trait]
impl ReminderStore for SqliteStore {
    async fn reminder_days(&self, company: &CompanyId) -> StoreResult<LeadTimes> {
        let company = company.clone();
        self.read(move |conn| Ok(LeadTimes::from_stored(lead_days(conn, company.as_str())?))).await
    }

    async fn set_reminder_days(&self, company: &CompanyId, leads: &LeadTimes, actor: &str, now_ms: i64) -> StoreResult<()> {
        let (company, leads, actor) = (company.clone(), leads.clone(), actor.to_owned());
        self.write(move |conn| {
            for old in lead_days(conn, company.as_str())? {
                if !leads.days().contains(&old) {
                    conn.prepare_cached("DELETE FROM reminder_schedules WHERE company_id = ?1 AND lead_days = ?2")?.execute(params![company.as_str(), old])?;
                }
            }
            for d in leads.days() {
                conn.prepare_cached(
                    "INSERT INTO reminder_schedules (company_id, lead_days, swept_to, swept_user, updated_by, updated_at) VALUES (?1, ?2, ?3, NULL, ?4, ?3) \
                     ON CONFLICT (company_id, lead_days) DO UPDATE SET updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                )?
                .execute(params![company.as_str(), d, now_ms, actor])?;
            }
            Ok(())
        })
        .await
    }

    async fn reminder_schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached(SCHEDULES_SQL)?
                .query_map(params![EventType::Expiring.bit()], |r| Ok((r.get(0)?, r.get(1)?, Position { at: r.get(2)?, user: r.get(3)? })))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(schedules_from(rows))
        })
        .await
    }

    async fn expiring_coins(&self, company: &CompanyId, after: &Position, until: i64, limit: i64) -> StoreResult<Vec<ExpiringCoins>> {
        let (company, after) = (company.clone(), after.clone());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(EXPIRING_SQL)?
                .query_map(params![company.as_str(), after.at, after.user, until, limit], |r| {
                    Ok(ExpiringCoins { user_id: r.get(0)?, expires_at: r.get(1)?, coins: r.get(2)? })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn send_reminders(&self, schedule: &Schedule, reminders: &[Reminder], position: &Position, now_ms: i64) -> StoreResult<u64> {
        let (company, lead, reminders, from, to) =
            (schedule.company.clone(), schedule.lead_days, reminders.to_vec(), schedule.position.clone(), position.clone());
        self.write(move |conn| {
            let moved = conn
                .prepare_cached(
                    "UPDATE reminder_schedules SET swept_to = ?5, swept_user = ?6 WHERE company_id = ?1 AND lead_days = ?2 AND swept_to = ?3 AND swept_user IS ?4",
                )?
                .execute(params![company.as_str(), lead, from.at, from.user, to.at, to.user])?;
            if moved == 0 {
                return Ok(0);
            }
            let mut sent = 0;
            for r in &reminders {
                let new = conn
                    .prepare_cached(
                        "INSERT INTO expiry_reminders (company_id, user_id, expires_at, lead_days, coins, days_left, message_key, sent_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![company.as_str(), r.user_id, r.expires_at, lead, r.coins, r.days_left, r.message_key, now_ms])?;
                if new == 0 {
                    continue;
                }
                sent += 1;
                let event = EventType::Expiring;
                conn.prepare_cached(
                    "INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, reminder_id, event_type, state, next_attempt_at, created_at) \
                     SELECT webhook_id, ?1, ?2, NULL, ?3, ?4, 'pending', ?5, ?5 FROM webhooks WHERE company_id = ?1 AND enabled = 1 AND (event_mask & ?6) <> 0",
                )?
                .execute(params![company.as_str(), r.user_id, conn.last_insert_rowid(), event.as_str(), now_ms, event.bit()])?;
            }
            Ok(sent)
        })
        .await
    }
}
