//! Webhook subscriptions, their outbox and delivery log on SQLite. One `serve` holds the file, so
//! the leases of claimed messages live in its memory and a claim is only a read; outcomes are
//! recorded by the writer, many to a commit.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, SqliteTx};
use crate::domain::CompanyId;
use crate::domain::webhooks::{EventType, RetryPolicy};
use crate::store::ledger::run_now;
use crate::store::reminders::ReminderData;
use crate::store::webhooks::TierChangeData;
use crate::store::webhooks::{
    self, AttemptOutcome, AttemptRecord, Delivery, EventData, Finished, MessageData, MessageRef, MessageState, WebhookChange, WebhookRecord, WebhookTx,
};
use crate::store::{EntryExtra, LedgerEntry, StoreResult, WebhookStore};

const WEBHOOK_COLUMNS: &str = "webhook_id, company_id, url, event_mask, description, enabled, disabled_reason, secret_sealed, previous_sealed, \
                               previous_until, failing_since, created_by, created_at, updated_at";

fn webhook_from_row(r: &Row<'_>) -> rusqlite::Result<WebhookRecord> {
    Ok(WebhookRecord {
        webhook_id: r.get(0)?,
        company: CompanyId::from_trusted(r.get(1)?),
        url: r.get(2)?,
        event_mask: r.get(3)?,
        description: r.get(4)?,
        enabled: r.get(5)?,
        disabled_reason: r.get(6)?,
        secret_sealed: r.get(7)?,
        previous_sealed: r.get(8)?,
        previous_until: r.get(9)?,
        failing_since: r.get(10)?,
        created_by: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

fn webhook_by_id(conn: &Connection, webhook_id: &str) -> StoreResult<Option<WebhookRecord>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?1"))?
        .query_row(params![webhook_id], webhook_from_row)
        .optional()?)
}

/// Due messages, oldest first: each the oldest pending one of its (endpoint, user), of an
/// enabled endpoint (leases are this process's own, kept in memory: see `claim_deliveries`).
/// Only their numbers: the messages in flight are the oldest due and come first, to be skipped,
/// so what sending needs is read ([`DELIVERY_SQL`]) only for the ones claimed, in the same read
/// transaction. (Reading it with every row cost 26% of the async threads' time under delivery
/// load, 15% of the whole server's, most of it on messages in flight.) `?1` is now, `?2` the most to return: `+?2`, because SQLite plans a plain `LIMIT ?`
/// with the value bound, and so compiles the statement again each time a value is bound to it,
/// here every claim (3% of the server's CPU under delivery load); with the `+` the limit is a
/// value read at run time.
const DUE_SQL: &str = "SELECT m.message_seq FROM webhook_messages m JOIN webhooks w ON w.webhook_id = m.webhook_id AND w.enabled = 1 \
     WHERE m.state = 'pending' AND m.next_attempt_at <= ?1 \
     AND NOT EXISTS (SELECT 1 FROM webhook_messages p WHERE p.webhook_id = m.webhook_id AND p.user_id = m.user_id \
                     AND p.state = 'pending' AND p.message_seq < m.message_seq) \
     ORDER BY m.next_attempt_at, m.message_seq LIMIT +?2";

/// What sending message `?1` needs, at `?2` (now); no row once it is no longer pending or its
/// endpoint is disabled.
const DELIVERY_SQL: &str = "SELECT m.message_seq, m.webhook_id, w.url, w.secret_sealed, CASE WHEN w.previous_until > ?2 THEN w.previous_sealed END, \
     m.event_type, m.attempts, m.company_id, m.created_at, e.entry_id, e.user_id, e.coins, e.balance_after, e.event, e.request_id, \
     e.coin_config_id, e.created_at, e.expires_at, e.type, e.pending_coins, e.pending_after, e.effective_at, e.order_id, e.amount_minor, \
     e.original_request_id, e.reason, e.client_id, q.response, x.user_id, x.coins, x.expires_at, x.days_left, x.message_key, \
     t.change_id, t.user_id, t.from_tier, t.to_tier, t.qualifying_coins, t.tier_expires_at, t.cause, t.request_id \
     FROM webhook_messages m JOIN webhooks w ON w.webhook_id = m.webhook_id AND w.enabled = 1 LEFT JOIN ledger_entries e ON e.entry_id = m.entry_id \
     LEFT JOIN requests q ON q.company_id = e.company_id AND q.request_id = e.request_id AND q.kind = 'REVERSE' \
     LEFT JOIN expiry_reminders x ON x.reminder_id = m.reminder_id LEFT JOIN tier_changes t ON t.change_id = m.tier_change_id \
     WHERE m.message_seq = ?1 AND m.state = 'pending'";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let event_type: String = r.get(5)?;
    let company_id: String = r.get(7)?;
    let data = match (r.get::<_, Option<i64>>(9)?, r.get::<_, Option<String>>(32)?) {
        (Some(entry_id), _) => MessageData::Entry(Box::new(EventData {
            user_id: r.get(10)?,
            company_id: company_id.clone(),
            entry: LedgerEntry {
                entry_id,
                kind: r.get(18)?,
                coins: r.get(11)?,
                balance_after: r.get(12)?,
                event: r.get(13)?,
                request_id: r.get(14)?,
                coin_config_id: r.get(15)?,
                created_at_ms: r.get(16)?,
                expires_at_ms: r.get(17)?,
                extra: EntryExtra {
                    pending_coins: r.get(19)?,
                    pending_after: r.get(20)?,
                    effective_at_ms: r.get(21)?,
                    order_id: r.get(22)?,
                    amount_minor: r.get(23)?,
                    original_request_id: r.get(24)?,
                    reason: r.get(25)?,
                    client_id: r.get(26)?,
                },
            },
            coins_remaining: webhooks::coins_remaining(r.get::<_, Option<String>>(27)?.as_deref()),
        })),
        (None, Some(message_key)) => {
            MessageData::Expiring(ReminderData { user_id: r.get(28)?, coins: r.get(29)?, expires_at: r.get(30)?, days_left: r.get(31)?, message_key })
        }
        (None, None) => match r.get::<_, Option<i64>>(33)? {
            Some(_) => MessageData::Tier(TierChangeData {
                user_id: r.get(34)?,
                from_tier: r.get(35)?,
                to_tier: r.get(36)?,
                qualifying_coins: r.get(37)?,
                tier_expires_at: r.get(38)?,
                cause: r.get(39)?,
                request_id: r.get(40)?,
            }),
            None => MessageData::Test,
        },
    };
    Ok(Delivery {
        message_seq: r.get(0)?,
        webhook_id: r.get(1)?,
        url: r.get(2)?,
        secret_sealed: r.get(3)?,
        previous_sealed: r.get(4)?,
        event_type: EventType::parse(&event_type)
            .ok_or_else(|| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, format!("unknown event type {event_type}").into()))?,
        attempts: r.get(6)?,
        company_id,
        data,
        created_at: r.get(8)?,
    })
}

const ATTEMPTS_SQL: &str = "SELECT a.attempt_id, a.message_seq, m.event_type, m.entry_id, a.attempted_at, a.outcome, a.http_status, a.latency_ms, \
     a.excerpt, a.next_attempt_at, m.state, x.message_key FROM webhook_attempts a JOIN webhook_messages m ON m.message_seq = a.message_seq \
     LEFT JOIN expiry_reminders x ON x.reminder_id = m.reminder_id \
     WHERE a.webhook_id = ?1 AND a.attempt_id < ?2 ORDER BY a.attempt_id DESC LIMIT ?3";

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        attempt_id: r.get(0)?,
        message_seq: r.get(1)?,
        event_type: r.get(2)?,
        entry_id: r.get(3)?,
        attempted_at: r.get(4)?,
        outcome: r.get(5)?,
        http_status: r.get(6)?,
        latency_ms: r.get(7)?,
        excerpt: r.get(8)?,
        next_attempt_at: r.get(9)?,
        message_state: r.get(10)?,
        message_key: r.get(11)?,
    })
}

impl WebhookTx for SqliteTx<'_> {
    async fn lock_webhooks(&mut self, webhook_ids: &[String]) -> StoreResult<HashMap<String, Option<i64>>> {
        // One writer: the transaction already excludes every other write.
        let mut stmt = self.0.prepare_cached("SELECT failing_since FROM webhooks WHERE webhook_id = ?1")?;
        let mut existing = HashMap::with_capacity(webhook_ids.len());
        for id in webhook_ids {
            if let Some(since) = stmt.query_row(params![id], |r| r.get(0)).optional()? {
                existing.insert(id.clone(), since);
            }
        }
        Ok(existing)
    }

    async fn insert_attempts(&mut self, attempts: &[(&AttemptOutcome, Option<i64>)]) -> StoreResult<()> {
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO webhook_attempts (message_seq, webhook_id, attempted_at, outcome, http_status, latency_ms, excerpt, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (o, next_attempt_at) in attempts {
            stmt.execute(params![
                o.message_seq,
                o.webhook_id,
                o.attempted_at,
                if o.delivered { "delivered" } else { "failed" },
                o.http_status,
                o.latency_ms,
                o.excerpt,
                next_attempt_at
            ])?;
        }
        Ok(())
    }

    async fn finish_messages(&mut self, finished: &[Finished]) -> StoreResult<HashSet<(i64, i64)>> {
        let mut stmt = self.0.prepare_cached(
            "UPDATE webhook_messages SET attempts = attempts + 1, state = ?3, next_attempt_at = COALESCE(?4, next_attempt_at), \
             delivered_at = COALESCE(?5, delivered_at), lease_until = NULL, lease_owner = NULL WHERE message_seq = ?1 AND attempts = ?2",
        )?;
        let mut applied = HashSet::new();
        for &(seq, attempts_before, state, now_ms) in finished {
            let (name, next, delivered_at) = webhooks::state_columns(state, now_ms);
            if stmt.execute(params![seq, attempts_before, name, next, delivered_at])? == 1 {
                applied.insert((seq, attempts_before));
            }
        }
        Ok(applied)
    }

    async fn set_failing_since(&mut self, webhook_id: &str, since: Option<i64>) -> StoreResult<()> {
        self.0
            .prepare_cached("UPDATE webhooks SET failing_since = ?2 WHERE webhook_id = ?1 AND failing_since IS NOT ?2")?
            .execute(params![webhook_id, since])?;
        Ok(())
    }

    async fn disable(&mut self, webhook_id: &str, reason: &str, now_ms: i64) -> StoreResult<()> {
        self.0
            .prepare_cached("UPDATE webhooks SET enabled = 0, disabled_reason = ?2, updated_at = ?3 WHERE webhook_id = ?1")?
            .execute(params![webhook_id, reason, now_ms])?;
        Ok(())
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, w: WebhookRecord) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached(&format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"))?
                .execute(params![
                    w.webhook_id,
                    w.company.as_str(),
                    w.url,
                    w.event_mask,
                    w.description,
                    w.enabled,
                    w.disabled_reason,
                    w.secret_sealed,
                    w.previous_sealed,
                    w.previous_until,
                    w.failing_since,
                    w.created_by,
                    w.created_at,
                    w.updated_at
                ])?;
            Ok(())
        })
        .await
    }

    async fn list_webhooks(&self, company: Option<&CompanyId>) -> StoreResult<Vec<WebhookRecord>> {
        let company = company.map(|c| c.as_str().to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE ?1 IS NULL OR company_id = ?1 ORDER BY created_at, webhook_id"))?
                .query_map(params![company], webhook_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn get_webhook(&self, webhook_id: &str) -> StoreResult<Option<WebhookRecord>> {
        let id = webhook_id.to_owned();
        self.read(move |conn| webhook_by_id(conn, &id)).await
    }

    async fn update_webhook(&self, webhook_id: &str, change: WebhookChange, now_ms: i64) -> StoreResult<Option<WebhookRecord>> {
        let id = webhook_id.to_owned();
        self.write(move |conn| {
            let (set_description, description) = match change.description {
                Some(d) => (true, d),
                None => (false, None),
            };
            let n = conn
                .prepare_cached(
                    "UPDATE webhooks SET url = COALESCE(?2, url), event_mask = COALESCE(?3, event_mask), \
                     description = CASE WHEN ?4 THEN ?5 ELSE description END, enabled = COALESCE(?6, enabled), \
                     disabled_reason = CASE WHEN ?6 = 1 THEN NULL ELSE disabled_reason END, \
                     failing_since = CASE WHEN ?6 = 1 AND enabled = 0 THEN NULL ELSE failing_since END, updated_at = ?7 \
                     WHERE webhook_id = ?1",
                )?
                .execute(params![id, change.url, change.event_mask, set_description, description, change.enabled, now_ms])?;
            if n == 0 {
                return Ok(None);
            }
            webhook_by_id(conn, &id)
        })
        .await
    }

    async fn delete_webhook(&self, webhook_id: &str) -> StoreResult<bool> {
        let id = webhook_id.to_owned();
        self.write(move |conn| {
            // Attempts go with their messages, messages with their webhook (ON DELETE CASCADE).
            Ok(conn.prepare_cached("DELETE FROM webhooks WHERE webhook_id = ?1")?.execute(params![id])? == 1)
        })
        .await
    }

    async fn rotate_webhook_secret(&self, webhook_id: &str, sealed: String, previous_until: i64, now_ms: i64) -> StoreResult<bool> {
        let id = webhook_id.to_owned();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE webhooks SET previous_sealed = secret_sealed, secret_sealed = ?2, previous_until = ?3, updated_at = ?4 WHERE webhook_id = ?1",
                )?
                .execute(params![id, sealed, previous_until, now_ms])?
                == 1)
        })
        .await
    }

    async fn enqueue_test_message(&self, webhook_id: &str, company: &CompanyId, now_ms: i64) -> StoreResult<i64> {
        let (id, company) = (webhook_id.to_owned(), company.as_str().to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, event_type, state, next_attempt_at, created_at) \
                 VALUES (?1, ?2, '', NULL, ?3, 'pending', ?4, ?4)",
            )?
            .execute(params![id, company, EventType::Test.as_str(), now_ms])?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn webhook_attempts(&self, webhook_id: &str, before: Option<i64>, limit: i64) -> StoreResult<Vec<AttemptRecord>> {
        let id = webhook_id.to_owned();
        self.read(move |conn| {
            Ok(conn.prepare_cached(ATTEMPTS_SQL)?.query_map(params![id, before.unwrap_or(i64::MAX), limit], attempt_from_row)?.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn retry_message(&self, webhook_id: &str, message: &MessageRef, now_ms: i64) -> StoreResult<bool> {
        let (id, message) = (webhook_id.to_owned(), message.clone());
        self.write(move |conn| {
            const RETRY: &str =
                "UPDATE webhook_messages SET state = 'pending', next_attempt_at = ?3, lease_until = NULL, lease_owner = NULL WHERE webhook_id = ?1";
            let n = match &message {
                MessageRef::Seq(seq) => {
                    conn.prepare_cached(&format!("{RETRY} AND message_seq = ?2 AND reminder_id IS NULL"))?.execute(params![id, seq, now_ms])?
                }
                MessageRef::Reminder(key) => conn
                    .prepare_cached(&format!("{RETRY} AND reminder_id = (SELECT reminder_id FROM expiry_reminders WHERE message_key = ?2)"))?
                    .execute(params![id, key, now_ms])?,
            };
            Ok(n == 1)
        })
        .await
    }

    async fn claim_deliveries(&self, now_ms: i64, limit: usize, lease_ms: i64, _owner: &str) -> StoreResult<Vec<Delivery>> {
        // One `serve` per file: leases live in this process, and a claim is a read.
        let leased: HashSet<i64> = {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            leases.retain(|_, until| *until > now_ms);
            leases.keys().copied().collect()
        };
        let scan = i64::try_from(limit + leased.len()).unwrap_or(i64::MAX);
        let claimed = self
            .read(move |conn| {
                // One snapshot for both reads, so a message is claimed as the first read saw it
                // (not, say, pending again with its next attempt still to come).
                let snapshot = conn.unchecked_transaction()?;
                let mut due = Vec::with_capacity(limit);
                for seq in snapshot.prepare_cached(DUE_SQL)?.query_map(params![now_ms, scan], |r| r.get::<_, i64>(0))? {
                    let seq = seq?;
                    if !leased.contains(&seq) {
                        due.push(seq);
                    }
                    if due.len() == limit {
                        break;
                    }
                }
                let mut out = Vec::with_capacity(due.len());
                {
                    let mut stmt = snapshot.prepare_cached(DELIVERY_SQL)?;
                    for seq in due {
                        out.extend(stmt.query_row(params![seq, now_ms], delivery_from_row).optional()?);
                    }
                }
                snapshot.commit()?;
                Ok(out)
            })
            .await?;
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for d in &claimed {
            leases.insert(d.message_seq, now_ms + lease_ms);
        }
        Ok(claimed)
    }

    async fn record_attempts(&self, outcomes: Vec<(AttemptOutcome, i64)>, policy: &RetryPolicy) -> StoreResult<Vec<Option<MessageState>>> {
        let policy = policy.clone();
        let seqs: Vec<i64> = outcomes.iter().map(|(o, _)| o.message_seq).collect();
        let states = self.write(move |conn| run_now(webhooks::record_all(&mut SqliteTx(conn), &outcomes, &policy))).await?;
        // Committed: the messages' next state is visible to the next claim. A stale attempt's
        // message keeps its lease: it is the lease of the attempt still in flight.
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, state) in seqs.iter().zip(&states) {
            if state.is_some() {
                leases.remove(seq);
            }
        }
        Ok(states)
    }

    async fn outbox_depth(&self) -> StoreResult<i64> {
        self.read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM webhook_messages WHERE state = 'pending'", [], |r| r.get(0))?)).await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::store::{Store, StoreOptions};

    /// The claim binds a new limit every time; the statement must not be compiled again each
    /// time (the plain `LIMIT ?2` it replaced was).
    #[tokio::test]
    async fn the_claim_query_is_not_compiled_again_at_each_claim() {
        let dir = std::env::temp_dir().join(format!("coins-due-sql-{}", hex::encode(crate::crypto::random_bytes::<6>())));
        let path = dir.join("coins.db");
        let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
        store.migrate().await.unwrap();
        let conn = super::super::open_connection(&path, 1024).unwrap();
        let recompiled = |sql: &str| {
            let mut stmt = conn.prepare(sql).unwrap();
            for limit in [3, 7, 11, 64] {
                stmt.query_map(params![0, limit], |r| r.get::<_, i64>(0)).unwrap().for_each(drop);
            }
            stmt.get_status(StatementStatus::RePrepare)
        };
        assert_eq!(recompiled(DUE_SQL), 0);
        assert!(recompiled(&DUE_SQL.replace("LIMIT +?2", "LIMIT ?2")) > 0, "SQLite no longer recompiles for a plain LIMIT ?; the + can go");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
