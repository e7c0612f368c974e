//! The delivery worker of every `coins serve`: claims due messages from the outbox (leased, so
//! several processes share one outbox without sending a message twice in the normal case), sends
//! each as a signed POST, and records the attempt, which decides the retry, the failure and the
//! disabling (`store::webhooks::record_all`). A process killed mid-delivery leaves its leases to run
//! out; another process (or itself, restarted) then sends those messages again: at least once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use super::{WebhookSettings, sign, target};
use crate::clock::Clock;
use crate::store::error::chain;
use crate::store::{AttemptOutcome, Delivery, MessageData, Store};

/// Bytes of a response body read at most; the rest is never read.
pub const RESPONSE_BYTES_MAX: usize = 4 * 1024;
/// Characters of a response (or error) kept in the delivery log.
pub const EXCERPT_CHARS_MAX: usize = 256;
/// Messages claimed at once.
const CLAIM_MAX: usize = 64;
/// A claim lasts twice the delivery's time limit and this much more: long enough for the attempt
/// and its recording, short enough that a killed process's messages go out again soon.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Outcomes recorded in one transaction, at most.
const RECORD_BATCH_MAX: usize = 256;
/// Outcomes waiting to be recorded before deliveries wait for the recorder.
const RECORD_QUEUE_MAX: usize = 4096;

/// How a message becomes the body of its request.
pub type BodyOf = fn(&Delivery) -> serde_json::Result<Vec<u8>>;

pub struct Worker {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: Arc<WebhookSettings>,
    client: reqwest::Client,
    /// This process, as lease owner (for the operator reading the table).
    owner: String,
    /// Encodes a message as the body its endpoint receives.
    body: BodyOf,
}

impl Worker {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Arc<WebhookSettings>, body: BodyOf) -> reqwest::Result<Self> {
        let client = target::client(settings.targets, settings.timeout)?;
        let owner = format!("{}-{}", std::process::id(), hex::encode(crate::crypto::random_bytes::<4>()));
        Ok(Self { store, clock, settings, client, owner, body })
    }

    /// Delivers until `stop` turns true, then lets deliveries in flight finish (each is bounded
    /// by the delivery timeout) and records them.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.settings.concurrency.max(1)));
        let claim_min = u32::try_from((this.settings.concurrency / 4).clamp(1, CLAIM_MAX)).unwrap_or(1);
        let lease_ms = i64::try_from((this.settings.timeout * 2 + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX);
        let (outcomes, to_record) = mpsc::channel(RECORD_QUEUE_MAX);
        // Rings after each recorded batch: the messages behind those (the same user's next ones)
        // may be claimed now, without waiting for the next poll.
        let recorded = Arc::new(Notify::new());
        let recorder = tokio::spawn(this.clone().record(to_record, recorded.clone()));
        loop {
            if *stop.borrow() {
                break;
            }
            // A quarter of the slots free first (waiting here while they are busy), then as many
            // messages as there are free slots: one claim (a round trip to the database) then
            // serves many deliveries, however quickly each slot frees up under load.
            let mut held = tokio::select! {
                permits = slots.clone().acquire_many_owned(claim_min) => match permits {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stop.changed() => continue,
            };
            let free = (held.num_permits() + slots.available_permits()).min(CLAIM_MAX);
            let claimed = match this.store.claim_deliveries(this.clock.now_ms(), free, lease_ms, &this.owner).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "claiming webhook deliveries failed; retrying");
                    Vec::new()
                }
            };
            let full = claimed.len() == free;
            for delivery in claimed {
                let permit = match held.split(1) {
                    Some(p) => p,
                    None => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let (worker, outcomes) = (this.clone(), outcomes.clone());
                tokio::spawn(async move {
                    let outcome = worker.attempt(&delivery).await;
                    drop(permit);
                    // The recorder is gone only at shutdown; the lease then runs out and the
                    // message is sent again (at least once).
                    let _ = outcomes.send((outcome, delivery.attempts)).await;
                });
            }
            drop(held);
            if full {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(this.settings.poll) => {}
                () = recorded.notified() => {}
                _ = stop.changed() => {}
            }
        }
        let all = u32::try_from(this.settings.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(this.settings.timeout + Duration::from_secs(1), slots.acquire_many(all)).await;
        drop(outcomes);
        let _ = recorder.await;
    }

    /// Records outcomes as they come, many to a transaction: a delivery slot is free again as
    /// soon as the endpoint has answered, and the database sees one commit per batch.
    async fn record(self: Arc<Self>, mut outcomes: mpsc::Receiver<(AttemptOutcome, i64)>, recorded: Arc<Notify>) {
        while let Some(first) = outcomes.recv().await {
            let mut batch = vec![first];
            while batch.len() < RECORD_BATCH_MAX {
                match outcomes.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            if let Err(e) = self.store.record_attempts(batch, &self.settings.retry).await {
                // Their leases run out and the messages are sent again: at least once.
                tracing::warn!(attempts = n, error = %chain(&e), "recording webhook attempts failed");
            }
            recorded.notify_one();
        }
    }

    /// Sends one message; how it went.
    async fn attempt(&self, d: &Delivery) -> AttemptOutcome {
        if let MessageData::Expiring(r) = &d.data {
            let now = self.clock.now_ms();
            if crate::domain::reminders::is_stale(r.expires_at, now) {
                return AttemptOutcome {
                    message_seq: d.message_seq,
                    webhook_id: d.webhook_id.clone(),
                    attempted_at: now,
                    delivered: false,
                    http_status: None,
                    latency_ms: 0,
                    excerpt: Some("not sent: the coins expired before the reminder could be delivered".into()),
                    withdrawn: true,
                };
            }
        }
        let started = Instant::now();
        let sent = self.send(d).await;
        let now = self.clock.now_ms();
        let delivered = matches!(sent, Sent::Answered { status, .. } if (200..300).contains(&status));
        let (http_status, excerpt) = match sent {
            Sent::Answered { status, excerpt } => (Some(status), excerpt),
            Sent::Failed(reason) => (None, Some(reason)),
        };
        crate::metrics::webhook_delivery(delivered, (now - d.created_at) as f64 / 1000.0);
        AttemptOutcome {
            message_seq: d.message_seq,
            webhook_id: d.webhook_id.clone(),
            attempted_at: now,
            delivered,
            http_status,
            latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            excerpt,
            withdrawn: false,
        }
    }

    async fn send(&self, d: &Delivery) -> Sent {
        let url = match target::check_delivery(&d.url, self.settings.targets) {
            Ok(url) => url,
            Err(reason) => return Sent::Failed(reason),
        };
        let Some(secrets) = self.secrets(d) else {
            return Sent::Failed("the signing secret cannot be opened with this COINS_SECRET_KEY".into());
        };
        let body = match (self.body)(d) {
            Ok(body) => body,
            Err(e) => return Sent::Failed(format!("encoding the event: {e}")),
        };
        let id = d.message_id();
        // Wall-clock time, whatever the injected clock says: receivers hold it against theirs.
        let timestamp = crate::clock::system_now_ms().div_euclid(1000);
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign::header(&secrets, &id, timestamp, &body))
            .body(body);
        match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let mut read = Vec::new();
                while read.len() < RESPONSE_BYTES_MAX {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_BYTES_MAX - read.len())]),
                        Ok(None) | Err(_) => break,
                    }
                }
                Sent::Answered { status, excerpt: excerpt(&String::from_utf8_lossy(&read)) }
            }
            Err(e) => Sent::Failed(failure(&e)),
        }
    }

    /// The secrets that sign now: the current one, and the one before a rotation while it lasts.
    fn secrets(&self, d: &Delivery) -> Option<Vec<SecretString>> {
        let key = self.settings.key.as_ref()?;
        let mut secrets = vec![key.open(&d.webhook_id, &d.secret_sealed)?];
        secrets.extend(d.previous_sealed.as_deref().and_then(|p| key.open(&d.webhook_id, p)));
        Some(secrets)
    }
}

enum Sent {
    Answered { status: u16, excerpt: Option<String> },
    Failed(String),
}

/// What went wrong sending, in a few words (never the URL's query or the body).
fn failure(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    excerpt(&if detail.is_empty() { what.to_owned() } else { format!("{what}: {detail}") }).unwrap_or_default()
}

/// The start of a text, one line, printable only; `None` when empty.
fn excerpt(text: &str) -> Option<String> {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(EXCERPT_CHARS_MAX).collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}
