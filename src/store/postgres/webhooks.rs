//! Webhook subscriptions, their outbox and delivery log on PostgreSQL. Several processes claim
//! from one outbox: `FOR UPDATE SKIP LOCKED` keeps two claims apart, and the lease keeps a
//! message with the process that claimed it until it reports back or the lease ends.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, PgTx};
use crate::domain::CompanyId;
use crate::domain::webhooks::{EventType, RetryPolicy};
use crate::store::reminders::ReminderData;
use crate::store::webhooks::TierChangeData;
use crate::store::webhooks::{
    self, AttemptOutcome, AttemptRecord, Delivery, EventData, Finished, MessageData, MessageRef, MessageState, WebhookChange, WebhookRecord, WebhookTx,
};
use crate::store::{EntryExtra, LedgerEntry, StoreError, StoreResult, WebhookStore};

const WEBHOOK_COLUMNS: &str = "webhook_id, company_id, url, event_mask, description, enabled, disabled_reason, secret_sealed, previous_sealed, \
                               previous_until, failing_since, created_by, created_at, updated_at";

fn webhook_from_row(r: &Row) -> WebhookRecord {
    WebhookRecord {
        webhook_id: r.get(0),
        company: CompanyId::from_trusted(r.get(1)),
        url: r.get(2),
        event_mask: r.get(3),
        description: r.get(4),
        enabled: r.get(5),
        disabled_reason: r.get(6),
        secret_sealed: r.get(7),
        previous_sealed: r.get(8),
        previous_until: r.get(9),
        failing_since: r.get(10),
        created_by: r.get(11),
        created_at: r.get(12),
        updated_at: r.get(13),
    }
}

/// Leases due messages, each the oldest pending one of its (endpoint, user), of an enabled
/// endpoint, not leased and not locked by another claim.
const CLAIM_SQL: &str = "WITH due AS ( \
       SELECT m.message_seq FROM webhook_messages m JOIN webhooks w ON w.webhook_id = m.webhook_id AND w.enabled \
       WHERE m.state = 'pending' AND m.next_attempt_at <= $1 AND (m.lease_until IS NULL OR m.lease_until <= $1) \
       AND NOT EXISTS (SELECT 1 FROM webhook_messages p WHERE p.webhook_id = m.webhook_id AND p.user_id = m.user_id \
                       AND p.state = 'pending' AND p.message_seq < m.message_seq) \
       ORDER BY m.next_attempt_at, m.message_seq LIMIT $2 FOR UPDATE OF m SKIP LOCKED) \
     UPDATE webhook_messages m SET lease_until = $1 + $3, lease_owner = $4 FROM due WHERE m.message_seq = due.message_seq \
     RETURNING m.message_seq";

const DELIVERY_SQL: &str = "SELECT m.message_seq, m.webhook_id, w.url, w.secret_sealed, CASE WHEN w.previous_until > $2 THEN w.previous_sealed END, \
     m.event_type, m.attempts, m.company_id, m.created_at, e.entry_id, e.user_id, e.coins, e.balance_after, e.event, e.request_id, \
     e.coin_config_id, e.created_at, e.expires_at, e.type, e.pending_coins, e.pending_after, e.effective_at, e.order_id, e.amount_minor, \
     e.original_request_id, e.reason, e.client_id, q.response, x.user_id, x.coins, x.expires_at, x.days_left, x.message_key, \
     t.change_id, t.user_id, t.from_tier, t.to_tier, t.qualifying_coins, t.tier_expires_at, t.cause, t.request_id \
     FROM webhook_messages m JOIN webhooks w ON w.webhook_id = m.webhook_id LEFT JOIN ledger_entries e ON e.entry_id = m.entry_id \
     LEFT JOIN requests q ON q.company_id = e.company_id AND q.request_id = e.request_id AND q.kind = 'REVERSE' \
     LEFT JOIN expiry_reminders x ON x.reminder_id = m.reminder_id LEFT JOIN tier_changes t ON t.change_id = m.tier_change_id \
     WHERE m.message_seq = ANY($1) ORDER BY m.message_seq";

fn delivery_from_row(r: &Row) -> StoreResult<Delivery> {
    let event_type: &str = r.get(5);
    let company_id: String = r.get(7);
    let data = match (r.get::<_, Option<i64>>(9), r.get::<_, Option<String>>(32)) {
        (Some(entry_id), _) => MessageData::Entry(Box::new(EventData {
            user_id: r.get(10),
            company_id: company_id.clone(),
            entry: LedgerEntry {
                entry_id,
                kind: r.get(18),
                coins: r.get(11),
                balance_after: r.get(12),
                event: r.get(13),
                request_id: r.get(14),
                coin_config_id: r.get(15),
                created_at_ms: r.get(16),
                expires_at_ms: r.get(17),
                extra: EntryExtra {
                    pending_coins: r.get(19),
                    pending_after: r.get(20),
                    effective_at_ms: r.get(21),
                    order_id: r.get(22),
                    amount_minor: r.get(23),
                    original_request_id: r.get(24),
                    reason: r.get(25),
                    client_id: r.get(26),
                },
            },
            coins_remaining: webhooks::coins_remaining(r.get::<_, Option<&str>>(27)),
        })),
        (None, Some(message_key)) => {
            MessageData::Expiring(ReminderData { user_id: r.get(28), coins: r.get(29), expires_at: r.get(30), days_left: r.get(31), message_key })
        }
        (None, None) => match r.get::<_, Option<i64>>(33) {
            Some(_) => MessageData::Tier(TierChangeData {
                user_id: r.get(34),
                from_tier: r.get(35),
                to_tier: r.get(36),
                qualifying_coins: r.get(37),
                tier_expires_at: r.get(38),
                cause: r.get(39),
                request_id: r.get(40),
            }),
            None => MessageData::Test,
        },
    };
    Ok(Delivery {
        message_seq: r.get(0),
        webhook_id: r.get(1),
        url: r.get(2),
        secret_sealed: r.get(3),
        previous_sealed: r.get(4),
        event_type: EventType::parse(event_type).ok_or_else(|| StoreError::Corrupt(format!("unknown event type {event_type}")))?,
        attempts: r.get(6),
        company_id,
        data,
        created_at: r.get(8),
    })
}

const ATTEMPTS_SQL: &str = "SELECT a.attempt_id, a.message_seq, m.event_type, m.entry_id, a.attempted_at, a.outcome, a.http_status, a.latency_ms, \
     a.excerpt, a.next_attempt_at, m.state, x.message_key FROM webhook_attempts a JOIN webhook_messages m ON m.message_seq = a.message_seq \
     LEFT JOIN expiry_reminders x ON x.reminder_id = m.reminder_id \
     WHERE a.webhook_id = $1 AND a.attempt_id < $2 ORDER BY a.attempt_id DESC LIMIT $3";

fn attempt_from_row(r: &Row) -> AttemptRecord {
    AttemptRecord {
        attempt_id: r.get(0),
        message_seq: r.get(1),
        event_type: r.get(2),
        entry_id: r.get(3),
        attempted_at: r.get(4),
        outcome: r.get(5),
        http_status: r.get(6),
        latency_ms: r.get(7),
        excerpt: r.get(8),
        next_attempt_at: r.get(9),
        message_state: r.get(10),
        message_key: r.get(11),
    }
}

impl WebhookTx for PgTx<'_> {
    async fn lock_webhooks(&mut self, webhook_ids: &[String]) -> StoreResult<HashMap<String, Option<i64>>> {
        let stmt =
            self.0.prepare_cached("SELECT webhook_id, failing_since FROM webhooks WHERE webhook_id = ANY($1) ORDER BY webhook_id FOR NO KEY UPDATE").await?;
        Ok(self.0.query(&stmt, &[&webhook_ids]).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn insert_attempts(&mut self, attempts: &[(&AttemptOutcome, Option<i64>)]) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO webhook_attempts (message_seq, webhook_id, attempted_at, outcome, http_status, latency_ms, excerpt, next_attempt_at) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])",
            )
            .await?;
        let seqs: Vec<i64> = attempts.iter().map(|(o, _)| o.message_seq).collect();
        let webhooks: Vec<&str> = attempts.iter().map(|(o, _)| o.webhook_id.as_str()).collect();
        let times: Vec<i64> = attempts.iter().map(|(o, _)| o.attempted_at).collect();
        let outcomes: Vec<&str> = attempts.iter().map(|(o, _)| if o.delivered { "delivered" } else { "failed" }).collect();
        let statuses: Vec<Option<i64>> = attempts.iter().map(|(o, _)| o.http_status.map(i64::from)).collect();
        let latencies: Vec<i64> = attempts.iter().map(|(o, _)| o.latency_ms).collect();
        let excerpts: Vec<Option<&str>> = attempts.iter().map(|(o, _)| o.excerpt.as_deref()).collect();
        let nexts: Vec<Option<i64>> = attempts.iter().map(|(_, next)| *next).collect();
        self.0.execute(&stmt, &[&seqs, &webhooks, &times, &outcomes, &statuses, &latencies, &excerpts, &nexts]).await?;
        Ok(())
    }

    async fn finish_messages(&mut self, finished: &[Finished]) -> StoreResult<HashSet<(i64, i64)>> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE webhook_messages m SET attempts = m.attempts + 1, state = u.state, next_attempt_at = COALESCE(u.next, m.next_attempt_at), \
                 delivered_at = COALESCE(u.delivered_at, m.delivered_at), lease_until = NULL, lease_owner = NULL \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) AS u (seq, before, state, next, delivered_at) \
                 WHERE m.message_seq = u.seq AND m.attempts = u.before RETURNING m.message_seq, u.before",
            )
            .await?;
        let columns: Vec<_> = finished.iter().map(|&(_, _, state, now_ms)| webhooks::state_columns(state, now_ms)).collect();
        let seqs: Vec<i64> = finished.iter().map(|f| f.0).collect();
        let befores: Vec<i64> = finished.iter().map(|f| f.1).collect();
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let nexts: Vec<Option<i64>> = columns.iter().map(|c| c.1).collect();
        let delivered: Vec<Option<i64>> = columns.iter().map(|c| c.2).collect();
        let rows = self.0.query(&stmt, &[&seqs, &befores, &names, &nexts, &delivered]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn set_failing_since(&mut self, webhook_id: &str, since: Option<i64>) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("UPDATE webhooks SET failing_since = $2 WHERE webhook_id = $1 AND failing_since IS DISTINCT FROM $2").await?;
        self.0.execute(&stmt, &[&webhook_id, &since]).await?;
        Ok(())
    }

    async fn disable(&mut self, webhook_id: &str, reason: &str, now_ms: i64) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("UPDATE webhooks SET enabled = FALSE, disabled_reason = $2, updated_at = $3 WHERE webhook_id = $1").await?;
        self.0.execute(&stmt, &[&webhook_id, &reason, &now_ms]).await?;
        Ok(())
    }
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, w: WebhookRecord) -> StoreResult<()> {
        self.core
            .client()
            .await?
            .execute(
                &format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"),
                &[
                    &w.webhook_id,
                    &w.company.as_str(),
                    &w.url,
                    &w.event_mask,
                    &w.description,
                    &w.enabled,
                    &w.disabled_reason,
                    &w.secret_sealed,
                    &w.previous_sealed,
                    &w.previous_until,
                    &w.failing_since,
                    &w.created_by,
                    &w.created_at,
                    &w.updated_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn list_webhooks(&self, company: Option<&CompanyId>) -> StoreResult<Vec<WebhookRecord>> {
        let company = company.map(CompanyId::as_str);
        let rows = self
            .core
            .client()
            .await?
            .query(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE $1::TEXT IS NULL OR company_id = $1 ORDER BY created_at, webhook_id"), &[&company])
            .await?;
        Ok(rows.iter().map(webhook_from_row).collect())
    }

    async fn get_webhook(&self, webhook_id: &str) -> StoreResult<Option<WebhookRecord>> {
        let row = self.core.client().await?.query_opt(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = $1"), &[&webhook_id]).await?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    async fn update_webhook(&self, webhook_id: &str, change: WebhookChange, now_ms: i64) -> StoreResult<Option<WebhookRecord>> {
        let (set_description, description) = match change.description {
            Some(d) => (true, d),
            None => (false, None),
        };
        let row = self
            .core
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE webhooks SET url = COALESCE($2, url), event_mask = COALESCE($3, event_mask), \
                     description = CASE WHEN $4 THEN $5 ELSE description END, enabled = COALESCE($6, enabled), \
                     disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END, \
                     failing_since = CASE WHEN $6 AND NOT enabled THEN NULL ELSE failing_since END, updated_at = $7 \
                     WHERE webhook_id = $1 RETURNING {WEBHOOK_COLUMNS}"
                ),
                &[&webhook_id, &change.url, &change.event_mask, &set_description, &description, &change.enabled, &now_ms],
            )
            .await?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    async fn delete_webhook(&self, webhook_id: &str) -> StoreResult<bool> {
        // Attempts go with their messages, messages with their webhook (ON DELETE CASCADE). The
        // webhook's row is locked first, as recording an attempt locks it first.
        let id = webhook_id.to_owned();
        self.core
            .transact(move |tx| {
                let id = id.clone();
                Box::pin(async move { Ok(tx.execute("DELETE FROM webhooks WHERE webhook_id = $1", &[&id]).await? == 1) })
            })
            .await
    }

    async fn rotate_webhook_secret(&self, webhook_id: &str, sealed: String, previous_until: i64, now_ms: i64) -> StoreResult<bool> {
        let n = self
            .core
            .client()
            .await?
            .execute(
                "UPDATE webhooks SET previous_sealed = secret_sealed, secret_sealed = $2, previous_until = $3, updated_at = $4 WHERE webhook_id = $1",
                &[&webhook_id, &sealed, &previous_until, &now_ms],
            )
            .await?;
        Ok(n == 1)
    }

    async fn enqueue_test_message(&self, webhook_id: &str, company: &CompanyId, now_ms: i64) -> StoreResult<i64> {
        let row = self
            .core
            .client()
            .await?
            .query_one(
                "INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, event_type, state, next_attempt_at, created_at) \
                 VALUES ($1, $2, '', NULL, $3, 'pending', $4, $4) RETURNING message_seq",
                &[&webhook_id, &company.as_str(), &EventType::Test.as_str(), &now_ms],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn webhook_attempts(&self, webhook_id: &str, before: Option<i64>, limit: i64) -> StoreResult<Vec<AttemptRecord>> {
        let client = self.core.client().await?;
        let stmt = client.prepare_cached(ATTEMPTS_SQL).await?;
        Ok(client.query(&stmt, &[&webhook_id, &before.unwrap_or(i64::MAX), &limit]).await?.iter().map(attempt_from_row).collect())
    }

    async fn retry_message(&self, webhook_id: &str, message: &MessageRef, now_ms: i64) -> StoreResult<bool> {
        const RETRY: &str = "UPDATE webhook_messages SET state = 'pending', next_attempt_at = $3, lease_until = NULL, lease_owner = NULL WHERE webhook_id = $1";
        let client = self.core.client().await?;
        let n = match message {
            MessageRef::Seq(seq) => client.execute(&format!("{RETRY} AND message_seq = $2 AND reminder_id IS NULL"), &[&webhook_id, seq, &now_ms]).await?,
            MessageRef::Reminder(key) => {
                let sql = format!("{RETRY} AND reminder_id = (SELECT reminder_id FROM expiry_reminders WHERE message_key = $2)");
                client.execute(&sql, &[&webhook_id, key, &now_ms]).await?
            }
        };
        Ok(n == 1)
    }

    async fn claim_deliveries(&self, now_ms: i64, limit: usize, lease_ms: i64, owner: &str) -> StoreResult<Vec<Delivery>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.core.client().await?;
        let tx = client.transaction().await?;
        // A lease lost in a crash only means the message goes out again: no need to wait for
        // the commit to reach the disk. The claim must walk the head of the due index in order
        // and stop at its limit. An outbox filling fast outruns the table's statistics, and the
        // planner, believing a few rows match, reads every due message and sorts them instead
        // (20-30 ms with a backlog of 10k, which capped delivery near 1k messages a second):
        // this transaction plans each claim for its own `now`, without bitmap scans or sorts.
        tx.batch_execute(
            "SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_custom_plan; \
             SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off",
        )
        .await?;
        let claim = tx.prepare_cached(CLAIM_SQL).await?;
        let seqs: Vec<i64> = tx.query(&claim, &[&now_ms, &limit, &lease_ms, &owner]).await?.iter().map(|r| r.get(0)).collect();
        let deliveries = if seqs.is_empty() {
            Vec::new()
        } else {
            let fetch = tx.prepare_cached(DELIVERY_SQL).await?;
            tx.query(&fetch, &[&seqs, &now_ms]).await?.iter().map(delivery_from_row).collect::<StoreResult<_>>()?
        };
        tx.commit().await?;
        Ok(deliveries)
    }

    async fn record_attempts(&self, outcomes: Vec<(AttemptOutcome, i64)>, policy: &RetryPolicy) -> StoreResult<Vec<Option<MessageState>>> {
        let policy = policy.clone();
        self.core
            .transact(move |tx| {
                let (outcomes, policy) = (outcomes.clone(), policy.clone());
                Box::pin(async move {
                    // An outcome lost in a crash only means the message goes out again.
                    tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
                    webhooks::record_all(&mut PgTx(tx), &outcomes, &policy).await
                })
            })
            .await
    }

    async fn outbox_depth(&self) -> StoreResult<i64> {
        Ok(self.core.client().await?.query_one("SELECT COUNT(*) FROM webhook_messages WHERE state = 'pending'", &[]).await?.get(0))
    }
}
