//! Crash cycles with every operation: several client workers drive single and bulk allocations,
//! purchases earning a percentage under an order id and a till's retries of them under new request
//! ids (which must credit nothing), allocations held a day (activated by time or early by request,
//! canceled when returned during the hold), replays, redemptions (by coins and by currency), staff
//! adjustments (credits, some expiring; debits refused, capped or driven into debt, which later
//! credits pay first), allocations under two bonus campaigns (a multiplier for everyone and a
//! bigger fixed bonus limited to two per user), members moving through status tiers (upgraded as
//! they earn, re-placed by returns, renewed or moved down by the sweeper; the tiers multiply by 1,
//! so every coin stays predictable), reversals of every kind (capped or into debt too) and expiry sweeps
//! against the real `coins serve`, which is SIGKILLed mid-load again and again and restarted on
//! the same database with its clock two days further on (so lots expire between cycles and the
//! sweeper, every second, is killed mid-pass too).
//!
//! Each worker owns its users, so it knows the outcome of everything it was told: a client-side
//! model of every definite outcome. After the last restart every unanswered request is retried
//! and every acknowledged one replayed; then each must have had exactly one effect (its one
//! ledger entry, of its kind and its coins), no refused one any, every balance must equal the
//! model, and `coins verify` must pass. `COINS_CRASH_CYCLES` sets the number of kills
//! (default 5; `COINS_CRASH_CYCLES=20 cargo nextest run crash_cycles` for a long run).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const ADMIN_ID: &str = "cycles-admin";
const ADMIN_SECRET: &str = "cycles-secret-for-tests-only";
const WORKERS: usize = 6;
const USERS_PER_WORKER: usize = 3;
/// (event, coins, validityDays)
const EVENTS: [(&str, i64, Option<i64>); 2] = [("KEEP", 10, None), ("SHORT", 5, Some(1))];
const DAY_SECS: i64 = 86_400;
/// A PERCENT configuration: 10 % of the purchase value at 100 minor units a coin, so a purchase of
/// `amountMinor` earns `amountMinor / 1000` coins (rounded down).
const BUY_RATE_BPS: i64 = 1_000;
/// (event, coins, pendingDays, validityDays): held a day, so most activate between cycles (the
/// clock moves two days per cycle), by a read or the sweeper, and some early, by request.
const HELD: (&str, i64, i64, i64) = ("HELD", 8, 1, 3);
/// A fixed 10 coins, raised by two campaigns for the whole run: ×2 for every allocation, and
/// +30 (which gives more, so it wins) for a user's first two. Which one an allocation got is
/// read from the ledger: 20 or 40 coins, and never 40 more than twice per user.
const PROMO: (&str, i64) = ("PROMO", 10);
const PROMO_LIMIT: usize = 2;
/// The coins of a promotion allocation before it is read back from the ledger.
const PROMO_COINS_UNKNOWN: i64 = i64::MIN;

fn kills() -> usize {
    std::env::var("COINS_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

/// A request as sent, so it can be sent again byte for byte.
#[derive(Debug, Clone)]
struct Sent {
    path: &'static str,
    body: Value,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Allocate {
        rid: String,
        user: String,
        coins: i64,
    },
    Bulk {
        items: Vec<(String, String, i64)>,
    },
    Redeem {
        rid: String,
        user: String,
    },
    Reverse {
        rid: String,
        user: String,
        original: String,
    },
    /// A purchase under a new order id.
    Purchase {
        rid: String,
        user: String,
        order: String,
        amount: u64,
        coins: i64,
    },
    /// The same purchase again under a new request id: a replay, crediting nothing.
    TillRetry {
        rid: String,
    },
    /// An allocation held for a day (`pendingDays`): its entry moves held coins only.
    Held {
        rid: String,
        user: String,
        coins: i64,
    },
    /// An allocation under the campaigns: 20 or 40 coins.
    Promo {
        rid: String,
        user: String,
    },
    /// An early activation of a held allocation (which may have activated by itself already).
    Activate {
        rid: String,
        user: String,
    },
    /// A staff adjustment: a credit, or a debit (refused, capped or into debt).
    Adjust {
        rid: String,
        user: String,
    },
}

/// A definite effect: one ledger entry with this request id, type and coins.
#[derive(Debug, Clone, PartialEq)]
struct Effect {
    user: String,
    kind: &'static str,
    coins: i64,
}

#[derive(Default)]
struct Tally {
    requests: usize,
    acknowledged: usize,
    refused: usize,
    unanswered: usize,
    busy: usize,
    /// Answered requests of each kind under load, and the time they took (to compare backends).
    latency: BTreeMap<&'static str, (u32, Duration)>,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Allocate { .. } => "allocate",
            Kind::Bulk { .. } => "bulk",
            Kind::Redeem { .. } => "redeem",
            Kind::Reverse { .. } => "reverse",
            Kind::Purchase { .. } => "purchase",
            Kind::TillRetry { .. } => "till retry",
            Kind::Held { .. } => "held",
            Kind::Promo { .. } => "campaign",
            Kind::Activate { .. } => "activate",
            Kind::Adjust { .. } => "adjust",
        }
    }
}

struct Worker {
    id: usize,
    seq: u64,
    rng: u64,
    /// Request id -> its one effect, for everything acknowledged as applied.
    effects: HashMap<String, Effect>,
    /// Acknowledged requests, with the answer to expect on a replay.
    acked: Vec<(Sent, Value)>,
    /// Requests refused for good (nothing may be in the ledger for them).
    refused: HashSet<String>,
    /// Sent, outcome unknown (no answer, or 503): retried after the last restart.
    unknown: Vec<Sent>,
    /// Originals already targeted by a whole reversal.
    reversed: HashSet<String>,
    /// Originals targeted by a partial return: they may be returned again, until nothing
    /// remains (then `ALREADY_REVERSED` is a right answer); a till no longer retries them.
    partly: HashSet<String>,
    /// Acknowledged purchases a till may retry: (request id, user, order id, amount).
    purchases: Vec<(String, String, String, u64)>,
    /// Request ids answered as retries of a purchase: none may have a ledger entry.
    aliases: HashSet<String>,
    /// Held allocations acknowledged: request id -> (user, coins).
    held: HashMap<String, (String, i64)>,
    /// Held coins canceled by returns during the hold, per user.
    canceled: HashMap<String, i64>,
    /// Activations answered `alreadyActive`: they wrote nothing.
    idle: HashSet<String>,
    tally: Tally,
}

impl Worker {
    fn new(id: usize) -> Self {
        Self {
            id,
            seq: 0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1),
            effects: HashMap::new(),
            acked: Vec::new(),
            refused: HashSet::new(),
            unknown: Vec::new(),
            reversed: HashSet::new(),
            partly: HashSet::new(),
            held: HashMap::new(),
            canceled: HashMap::new(),
            idle: HashSet::new(),
            purchases: Vec::new(),
            aliases: HashSet::new(),
            tally: Tally::default(),
        }
    }

    fn next(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n
    }

    fn rid(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("W{}-{prefix}{}", self.id, self.seq)
    }

    fn user(&mut self) -> String {
        let n = self.next(USERS_PER_WORKER as u64);
        format!("W{}U{n}", self.id)
    }

    /// The next request to send: mostly allocations and purchases, then redemptions, reversals,
    /// till retries and replays.
    fn plan(&mut self) -> Sent {
        match self.next(18) {
            17 => {
                let (rid, user) = (self.rid("M"), self.user());
                let body = json!({"companyId":"C","event":PROMO.0,"requestId":rid,"userId":user});
                Sent { path: "/api/v0/enkash-coins/allocate-coin", body, kind: Kind::Promo { rid, user } }
            }
            15 => {
                let (rid, user) = (self.rid("J"), self.user());
                let mut body = json!({"companyId":"C","userId":user,"requestId":rid,"coins":1 + self.next(20),"reason":"goodwill"});
                if self.next(2) == 0 {
                    body["validityDays"] = json!(1);
                }
                Sent { path: "/api/v0/coins/adjust", body, kind: Kind::Adjust { rid, user } }
            }
            16 => {
                let (rid, user) = (self.rid("K"), self.user());
                let coins = -(1 + self.next(400) as i64);
                let mut body = json!({"companyId":"C","userId":user,"requestId":rid,"coins":coins,"reason":"claw-back"});
                match self.next(3) {
                    0 => body["onShortfall"] = json!("CAP"),
                    1 => body["onShortfall"] = json!("NEGATIVE"),
                    _ => {}
                }
                Sent { path: "/api/v0/coins/adjust", body, kind: Kind::Adjust { rid, user } }
            }
            13 => {
                let (rid, user) = (self.rid("H"), self.user());
                let body = json!({"companyId":"C","event":HELD.0,"requestId":rid,"userId":user});
                Sent { path: "/api/v0/enkash-coins/allocate-coin", body, kind: Kind::Held { rid, user, coins: HELD.1 } }
            }
            14 => {
                let mut held: Vec<(String, String)> = self.held.iter().map(|(rid, (user, _))| (rid.clone(), user.clone())).collect();
                if held.is_empty() {
                    return self.plan();
                }
                held.sort();
                let (original, user) = held[self.next(held.len() as u64) as usize].clone();
                let rid = self.rid("V");
                let body = json!({"companyId":"C","requestId":rid,"originalRequestId":original});
                Sent { path: "/api/v0/coins/activate", body, kind: Kind::Activate { rid, user } }
            }
            10 | 11 => {
                let (rid, user) = (self.rid("P"), self.user());
                let order = format!("W{}-O{}", self.id, self.seq);
                let amount = 1_000 + self.next(20_000);
                let coins = (amount / 1_000) as i64;
                let body = json!({"companyId":"C","event":"BUY","requestId":rid,"userId":user,"orderId":order,"amountMinor":amount});
                Sent { path: "/api/v0/enkash-coins/allocate-coin", body, kind: Kind::Purchase { rid, user, order, amount, coins } }
            }
            12 => {
                // Only a purchase known to be applied and never reversed holds its order.
                let live: Vec<_> = self.purchases.iter().filter(|p| !self.reversed.contains(&p.0) && !self.partly.contains(&p.0)).cloned().collect();
                if live.is_empty() {
                    return self.plan();
                }
                let (_, user, order, amount) = live[self.next(live.len() as u64) as usize].clone();
                let rid = self.rid("T");
                let body = json!({"companyId":"C","event":"BUY","requestId":rid,"userId":user,"orderId":order,"amountMinor":amount});
                Sent { path: "/api/v0/enkash-coins/allocate-coin", body, kind: Kind::TillRetry { rid } }
            }
            0..=3 => {
                let (event, coins, _) = EVENTS[self.next(2) as usize];
                let (rid, user) = (self.rid("A"), self.user());
                let body = json!({"companyId":"C","event":event,"requestId":rid,"userId":user});
                Sent { path: "/api/v0/enkash-coins/allocate-coin", body, kind: Kind::Allocate { rid, user, coins } }
            }
            4 => {
                let mut items = Vec::new();
                let mut json_items = Vec::new();
                for _ in 0..5 {
                    let (event, coins, _) = EVENTS[self.next(2) as usize];
                    let (rid, user) = (self.rid("B"), self.user());
                    json_items.push(json!({"companyId":"C","event":event,"requestId":rid,"userId":user}));
                    items.push((rid, user, coins));
                }
                Sent { path: "/api/v0/enkash-coins/allocate-coins", body: json!({"allocations": json_items}), kind: Kind::Bulk { items } }
            }
            5 | 6 => {
                let (rid, user) = (self.rid("R"), self.user());
                let amount = if self.next(2) == 0 { json!({"coins": 1 + self.next(4)}) } else { json!({"amountMinor": 50 + self.next(300)}) };
                let mut body = json!({"companyId":"C","userId":user,"requestId":rid});
                for (k, v) in amount.as_object().unwrap() {
                    body[k] = v.clone();
                }
                Sent { path: "/api/v0/coins/redeem", body, kind: Kind::Redeem { rid, user } }
            }
            7 | 8 => {
                let candidates: Vec<(String, String)> = self
                    .effects
                    .iter()
                    .filter(|(rid, e)| {
                        matches!(e.kind, "ALLOCATE" | "REDEEM" | "ADJUST") && e.coins != 0 && !self.reversed.contains(*rid) && !self.aliases.contains(*rid)
                    })
                    .map(|(rid, e)| (rid.clone(), e.user.clone()))
                    .collect();
                if candidates.is_empty() {
                    return self.plan();
                }
                let mut candidates = candidates;
                candidates.sort();
                let (original, user) = candidates[self.next(candidates.len() as u64) as usize].clone();
                let rid = self.rid("X");
                let mut body = json!({"companyId":"C","requestId":rid,"originalRequestId":original});
                // Half are partial: some coins, or (a purchase) part of its amount, capped at
                // what the user has half the time.
                if self.next(2) == 0 {
                    let paid = self.purchases.iter().find(|p| p.0 == original).map(|p| p.3);
                    match paid {
                        Some(paid) if self.next(2) == 0 => body["amountMinor"] = json!(1 + self.next(paid / 2)),
                        _ => body["coins"] = json!(1 + self.next(3)),
                    }
                    match self.next(4) {
                        0 => body["onShortfall"] = json!("CAP"),
                        1 => body["onShortfall"] = json!("NEGATIVE"),
                        _ => {}
                    }
                    self.partly.insert(original.clone());
                } else {
                    if self.next(3) == 0 {
                        body["onShortfall"] = json!("NEGATIVE");
                    }
                    self.reversed.insert(original.clone());
                }
                Sent { path: "/api/v0/coins/reverse", body, kind: Kind::Reverse { rid, user, original } }
            }
            _ => match self.acked.len() {
                0 => self.plan(),
                n => {
                    let pick = self.next(n as u64) as usize;
                    self.acked[pick].0.clone()
                }
            },
        }
    }

    /// Records a definite answer; `Err` for an answer the contract does not allow here.
    fn record(&mut self, sent: &Sent, status: u16, body: &Value) -> Result<(), String> {
        match (status, &sent.kind) {
            (200, Kind::Allocate { rid, user, coins }) => {
                self.applied(rid, Effect { user: user.clone(), kind: "ALLOCATE", coins: *coins });
            }
            (200, Kind::Promo { rid, user }) => {
                self.applied(rid, Effect { user: user.clone(), kind: "ALLOCATE", coins: PROMO_COINS_UNKNOWN });
            }
            (200, Kind::Purchase { rid, user, order, amount, coins }) => {
                self.applied(rid, Effect { user: user.clone(), kind: "ALLOCATE", coins: *coins });
                if !self.purchases.iter().any(|p| &p.0 == rid) {
                    self.purchases.push((rid.clone(), user.clone(), order.clone(), *amount));
                }
            }
            (200, Kind::TillRetry { rid }) => {
                self.aliases.insert(rid.clone());
            }
            (200, Kind::Bulk { items }) => {
                for ((rid, user, coins), result) in items.iter().zip(body["payload"]["results"].as_array().ok_or("bulk results")?) {
                    match result["status"].as_str() {
                        Some("ALLOCATED" | "REPLAYED") => self.applied(rid, Effect { user: user.clone(), kind: "ALLOCATE", coins: *coins }),
                        other => return Err(format!("bulk item {rid}: {other:?} {result}")),
                    }
                }
            }
            (200, Kind::Redeem { rid, user }) => {
                let coins = body["payload"]["coins"].as_i64().ok_or("redeem coins")?;
                self.applied(rid, Effect { user: user.clone(), kind: "REDEEM", coins: -coins });
            }
            (200, Kind::Reverse { rid, user, .. }) => {
                let coins = body["payload"]["coins"].as_i64().ok_or("reverse coins")?;
                if body["payload"]["kind"] == "CANCEL" {
                    // Held coins released: the entry moves no spendable coins.
                    self.applied(rid, Effect { user: user.clone(), kind: "CANCEL", coins: 0 });
                    if !self.acked.iter().any(|(s, _)| s.body == sent.body) {
                        *self.canceled.entry(user.clone()).or_default() -= coins;
                    }
                } else {
                    self.applied(rid, Effect { user: user.clone(), kind: "REVERSE", coins });
                }
            }
            (200, Kind::Adjust { rid, user }) => {
                let coins = body["payload"]["coins"].as_i64().ok_or("adjusted coins")?;
                self.applied(rid, Effect { user: user.clone(), kind: "ADJUST", coins });
            }
            (200, Kind::Held { rid, user, coins }) => {
                self.applied(rid, Effect { user: user.clone(), kind: "ALLOCATE", coins: 0 });
                self.held.insert(rid.clone(), (user.clone(), *coins));
            }
            (200, Kind::Activate { rid, user }) => match body["payload"]["alreadyActive"].as_bool() {
                Some(true) => {
                    self.idle.insert(rid.clone());
                }
                Some(false) => {
                    let coins = body["payload"]["coins"].as_i64().ok_or("activated coins")?;
                    self.applied(rid, Effect { user: user.clone(), kind: "ACTIVATE", coins });
                }
                None => return Err(format!("activate answered {body}")),
            },
            // A held allocation returned in full cannot be activated.
            (409, Kind::Activate { rid, .. }) if body["error_code"] == json!("ALREADY_REVERSED") => {
                self.tally.refused += 1;
                self.refused.insert(rid.clone());
                return Ok(());
            }
            // Refused for good: a short balance, a redemption for a user never credited yet, or a
            // return of an original that partial returns left with less than asked (or nothing).
            (409, Kind::Redeem { rid, .. } | Kind::Reverse { rid, .. } | Kind::Adjust { rid, .. })
            | (404, Kind::Redeem { rid, .. } | Kind::Adjust { rid, .. })
                if body["error_code"] == json!("INSUFFICIENT_BALANCE")
                    || body["error_code"] == json!("USER_NOT_FOUND")
                    || matches!(&sent.kind, Kind::Reverse { original, .. } if self.partly.contains(original)
                        && (body["error_code"] == json!("REVERSAL_EXCEEDS_REMAINING") || body["error_code"] == json!("ALREADY_REVERSED"))) =>
            {
                self.tally.refused += 1;
                self.refused.insert(rid.clone());
                return Ok(());
            }
            _ => return Err(format!("{} answered {status}: {body}", sent.path)),
        }
        if !self.acked.iter().any(|(s, _)| s.body == sent.body) {
            self.acked.push((sent.clone(), body["payload"].clone()));
        }
        self.tally.acknowledged += 1;
        Ok(())
    }

    fn applied(&mut self, rid: &str, effect: Effect) {
        let previous = self.effects.insert(rid.to_owned(), effect.clone());
        assert!(previous.is_none_or(|p| p == effect), "{rid} changed its effect");
    }
}

/// One attempt: `Some((status, body))`, or `None` when no whole answer came (the server died).
async fn send(http: &reqwest::Client, base: &str, token: &str, sent: &Sent) -> Option<(u16, Value, bool)> {
    let res = http.post(format!("{base}{}", sent.path)).bearer_auth(token).json(&sent.body).send().await.ok()?;
    let status = res.status().as_u16();
    let replayed = res.headers().get("idempotent-replayed").is_some();
    let text = res.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null), replayed))
}

fn start(url: &str, cycle: usize) -> (Child, String) {
    let offset = (cycle as i64 * 2 * DAY_SECS).to_string();
    start_coins_serve(
        url,
        &[
            ("COINS_ADMIN_CLIENT_ID", ADMIN_ID),
            ("COINS_ADMIN_CLIENT_SECRET", ADMIN_SECRET),
            ("COINS_CLOCK_OFFSET_SECS", offset.as_str()),
            ("COINS_SWEEP_INTERVAL_SECS", "1"),
            ("COINS_RATE_LIMIT_PER_SEC", "0"),
            // A webhook that never answers collects an outbox row per entry; it must not be
            // disabled during the run (the clock moves two days per cycle).
            ("COINS_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            ("COINS_WEBHOOK_ALLOW_HTTP", "true"),
            ("COINS_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("COINS_WEBHOOK_DISABLE_AFTER_SECS", "31536000"),
        ],
    )
}

/// (entries without exactly one outbox message, messages without their entry, messages).
async fn outbox_mismatches(backend: Backend, url: &str) -> (i64, i64, i64) {
    let sql = "SELECT \
        (SELECT COUNT(*) FROM ledger_entries e WHERE (SELECT COUNT(*) FROM webhook_messages m WHERE m.entry_id = e.entry_id) <> 1) \
          + (SELECT COUNT(*) FROM tier_changes t WHERE (SELECT COUNT(*) FROM webhook_messages m WHERE m.tier_change_id = t.change_id) <> 1), \
        (SELECT COUNT(*) FROM webhook_messages m WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.entry_id = m.entry_id) \
          AND NOT EXISTS (SELECT 1 FROM tier_changes t WHERE t.change_id = m.tier_change_id)), \
        (SELECT COUNT(*) FROM webhook_messages)";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap()
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let r = client.query_one(sql, &[]).await.unwrap();
            (r.get(0), r.get(1), r.get(2))
        }
    }
}

async fn token(http: &reqwest::Client, base: &str) -> String {
    token_at(http, base, ADMIN_ID, ADMIN_SECRET).await
}

fn kill(child: &mut Child) {
    assert!(std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap().success());
    let _ = child.wait();
}

/// Every ledger entry with a request id: (request id, type, coins, user).
async fn ledger(backend: Backend, url: &str) -> Vec<(String, String, i64, String)> {
    let sql = "SELECT request_id, type, coins, user_id FROM ledger_entries WHERE request_id IS NOT NULL";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
        }
    }
}

/// A sum per user, from a `SELECT user_id, sum ... GROUP BY user_id` on the database directly.
async fn sums_by_user(backend: Backend, url: &str, sql: &str) -> HashMap<String, i64> {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get::<_, Option<i64>>(1).unwrap_or(0))).collect()
        }
    }
}

/// Each user's `EXPIRE` total (negative), after the history read settles every due lot.
async fn expired(backend: Backend, url: &str) -> HashMap<String, i64> {
    sums_by_user(backend, url, "SELECT user_id, CAST(SUM(coins) AS BIGINT) FROM ledger_entries WHERE type = 'EXPIRE' GROUP BY user_id").await
}

/// Each user's activations written because their hold ended (no request id: a read or the sweeper).
async fn due_activations(backend: Backend, url: &str) -> HashMap<String, i64> {
    let sql = "SELECT user_id, CAST(SUM(coins) AS BIGINT) FROM ledger_entries WHERE type = 'ACTIVATE' AND request_id IS NULL GROUP BY user_id";
    sums_by_user(backend, url, sql).await
}

async fn run_cycles(backend: Backend) {
    let Some(db) = test_db(backend).await else { return };
    let url = db.url.clone();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let (child, base) = start(&url, 0);
    // Ended by its PID however the test ends: a failed assertion must not leave it running.
    let mut server = KillOnDrop(child);
    let admin = token(&http, &base).await;
    for (event, coins, validity) in EVENTS {
        let body = json!({"configuration":"DEFAULT","companyId":"C","event":event,"amount":coins,"validityDays":validity});
        let res = http.post(format!("{base}/api/v0/enkash-coins/create-coins-config")).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    let body = json!({"configuration":"DEFAULT","companyId":"C","event":"BUY","amountType":"PERCENT","rateBps":BUY_RATE_BPS});
    let res = http.post(format!("{base}/api/v0/enkash-coins/create-coins-config")).bearer_auth(&admin).json(&body).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (event, coins, pending_days, validity) = HELD;
    let body = json!({"configuration":"DEFAULT","companyId":"C","event":event,"amount":coins,"pendingDays":pending_days,"validityDays":validity});
    let res = http.post(format!("{base}/api/v0/enkash-coins/create-coins-config")).bearer_auth(&admin).json(&body).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body = json!({"configuration":"DEFAULT","companyId":"C","event":PROMO.0,"amount":PROMO.1});
    let res = http.post(format!("{base}/api/v0/enkash-coins/create-coins-config")).bearer_auth(&admin).json(&body).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (from, to) = (coins::clock::system_now_ms() - 60_000, coins::clock::system_now_ms() + 300 * DAY_SECS * 1000);
    for reward in [json!({"multiplierBps":20000}), json!({"bonusCoins":30,"maxTriggersPerUser":PROMO_LIMIT})] {
        let mut body = json!({"companyId":"C","name":"promo","events":[PROMO.0],"startsAt":coins::clock::rfc3339(from),"endsAt":coins::clock::rfc3339(to)});
        body.as_object_mut().unwrap().extend(reward.as_object().unwrap().clone());
        let res = http.post(format!("{base}/api/v0/coins/campaigns")).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    // Three tiers over a rolling 1-day window, kept a day: members go up as they earn, and down
    // when a restart moves the clock two days on and the sweeper evaluates them. Every
    // multiplier is ×1, so the model's coins hold.
    let tiers = json!({"companyId":"C","basis":"ROLLING","windowDays":1,"retentionDays":1,"downgrade":"ONE_DOWN","tiers":[
        {"code":"T0","name":"T0","threshold":0,"earnMultiplierBps":10000},{"code":"T1","name":"T1","threshold":30,"earnMultiplierBps":10000},
        {"code":"T2","name":"T2","threshold":150,"earnMultiplierBps":10000}]});
    let res = http.put(format!("{base}/api/v0/coins/tiers")).bearer_auth(&admin).json(&tiers).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // Every entry and tier change of the run is reported to this endpoint (which refuses
    // connections).
    let events = [
        "coins.allocated",
        "coins.redeemed",
        "coins.reversed",
        "coins.expired",
        "coins.pending",
        "coins.activated",
        "coins.canceled",
        "coins.adjusted",
        "tier.upgraded",
        "tier.downgraded",
        "tier.renewed",
    ];
    let hook = json!({"companyId":"C","url":"http://127.0.0.1:9/never","events":events});
    let res = http.post(format!("{base}/api/v0/coins/webhooks")).bearer_auth(&admin).json(&hook).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut workers: Vec<Worker> = (0..WORKERS).map(Worker::new).collect();
    let (mut base, mut admin) = (base, admin);
    let cycles = kills();
    for cycle in 0..=cycles {
        if cycle > 0 {
            let (c, b) = start(&url, cycle);
            (server.0, base) = (c, b);
            admin = token(&http, &base).await;
        }
        let last = cycle == cycles;
        let dying = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for mut w in workers.drain(..) {
            let (http, base, admin, dying) = (http.clone(), base.clone(), admin.clone(), dying.clone());
            tasks.spawn(async move {
                // Unknown outcomes first: once the server answers, each becomes definite.
                let pending = std::mem::take(&mut w.unknown);
                for sent in pending {
                    loop {
                        match send(&http, &base, &admin, &sent).await {
                            Some((503, _, _)) => tokio::time::sleep(Duration::from_millis(50)).await,
                            Some((status, body, _)) => {
                                w.record(&sent, status, &body).unwrap_or_else(|e| panic!("retrying: {e}"));
                                break;
                            }
                            None if last => panic!("the server stopped answering in the last cycle"),
                            None => {
                                w.unknown.push(sent.clone());
                                break;
                            }
                        }
                    }
                }
                while !last && !dying.load(Ordering::Relaxed) {
                    let sent = w.plan();
                    w.tally.requests += 1;
                    let started = std::time::Instant::now();
                    let answer = send(&http, &base, &admin, &sent).await;
                    if answer.is_some() {
                        let took = w.tally.latency.entry(sent.kind.name()).or_default();
                        *took = (took.0 + 1, took.1 + started.elapsed());
                    }
                    match answer {
                        None => {
                            w.tally.unanswered += 1;
                            w.unknown.push(sent);
                            break;
                        }
                        Some((503, _, _)) => {
                            w.tally.busy += 1;
                            w.unknown.push(sent);
                        }
                        Some((status, body, _)) => w.record(&sent, status, &body).unwrap_or_else(|e| panic!("{e}")),
                    }
                }
                w
            });
        }
        if !last {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            kill(&mut server.0);
            dying.store(true, Ordering::Relaxed);
        }
        while let Some(w) = tasks.join_next().await {
            workers.push(w.unwrap());
        }
        workers.sort_by_key(|w| w.id);
    }

    // Every acknowledged request replays its first answer exactly, and changes nothing.
    for w in &workers {
        for (sent, payload) in &w.acked {
            let (status, body, replayed) = send(&http, &base, &admin, sent).await.expect("replay answered");
            assert_eq!(status, 200, "replaying {sent:?}: {body}");
            match &sent.kind {
                Kind::Bulk { .. } => {
                    assert!(body["payload"]["results"].as_array().unwrap().iter().all(|r| r["status"] == json!("REPLAYED")), "{body}");
                }
                _ => {
                    assert!(replayed, "no Idempotent-Replayed on {sent:?}");
                    assert_eq!(&body["payload"], payload, "the replay of {sent:?} differs from its first answer");
                }
            }
        }
    }
    // Settle every due lot so the ledger says what the balances say.
    let mut summaries = HashMap::new();
    for w in &workers {
        for u in 0..USERS_PER_WORKER {
            let user = format!("W{}U{u}", w.id);
            let res = http.get(format!("{base}/api/v0/coins/users/{user}")).bearer_auth(&admin).send().await.unwrap();
            let body: Value = res.json().await.unwrap();
            let p = &body["payload"];
            summaries.insert(user, (p["balance"].as_i64().unwrap_or(0), p["pendingBalance"].as_i64().unwrap_or(0)));
        }
    }
    let entries = ledger(backend, &url).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let expected: HashMap<&String, &Effect> = workers.iter().flat_map(|w| w.effects.iter()).collect();
    let refused: HashSet<&String> = workers.iter().flat_map(|w| w.refused.iter()).collect();
    // What each promotion allocation got, read from its entry.
    let mut promo: HashMap<&str, i64> = HashMap::new();
    let mut bonused: HashMap<&str, usize> = HashMap::new();
    for (rid, kind, coins, user) in &entries {
        *seen.entry(rid.as_str()).or_default() += 1;
        let effect = expected.get(rid).unwrap_or_else(|| panic!("{rid} ({kind} {coins}) is in the ledger but no client was told it was applied"));
        if effect.coins == PROMO_COINS_UNKNOWN {
            assert!(*coins == 2 * PROMO.1 || *coins == PROMO.1 + 30, "{rid}: a promotion earns 20 or 40, not {coins}");
            promo.insert(rid.as_str(), *coins);
            if *coins == PROMO.1 + 30 {
                *bonused.entry(user.as_str()).or_default() += 1;
            }
        } else {
            assert_eq!((effect.kind, effect.coins, &effect.user), (kind.as_str(), *coins, user), "the entry of {rid}");
        }
        assert!(!refused.contains(rid), "{rid} was refused but has an entry");
    }
    assert!(bonused.values().all(|n| *n <= PROMO_LIMIT), "the +30 campaign went past its limit of {PROMO_LIMIT} per user: {bonused:?}");
    let coins_of = |rid: &str, e: &Effect| if e.coins == PROMO_COINS_UNKNOWN { promo[rid] } else { e.coins };
    for rid in expected.keys() {
        assert_eq!(seen.get(rid.as_str()), Some(&1), "{rid}: acknowledged, so exactly one entry");
    }
    let aliases: HashSet<&String> = workers.iter().flat_map(|w| w.aliases.iter()).collect();
    for rid in &aliases {
        assert_eq!(seen.get(rid.as_str()), None, "{rid} retried a purchase: it credits nothing");
    }
    for rid in workers.iter().flat_map(|w| w.idle.iter()) {
        assert_eq!(seen.get(rid.as_str()), None, "{rid} found its allocation active already: it writes nothing");
    }
    // The outbox row of an entry is in the entry's own transaction: never one without the other.
    let (unreported, orphans, messages) = outbox_mismatches(backend, &url).await;
    assert_eq!((unreported, orphans), (0, 0), "entries and tier changes without exactly one webhook message, messages without either ({messages} messages)");
    let changes = sums_by_user(backend, &url, "SELECT kind, COUNT(*) FROM tier_changes GROUP BY kind").await;
    let expired = expired(backend, &url).await;
    let due = due_activations(backend, &url).await;
    for (user, (balance, pending)) in &summaries {
        let activated_by_time = due.get(user).copied().unwrap_or(0);
        let model: i64 = expected.iter().filter(|(_, e)| &e.user == user).map(|(rid, e)| coins_of(rid, e)).sum::<i64>()
            + expired.get(user).copied().unwrap_or(0)
            + activated_by_time;
        assert_eq!(*balance, model, "balance of {user}");
        // Held: what held allocations credited, less what returns canceled and activations released.
        let held: i64 = workers.iter().flat_map(|w| w.held.values()).filter(|(u, _)| u == user).map(|(_, c)| c).sum();
        let canceled: i64 = workers.iter().filter_map(|w| w.canceled.get(user)).sum();
        let activated_by_request: i64 = expected.values().filter(|e| &e.user == user && e.kind == "ACTIVATE").map(|e| e.coins).sum();
        assert_eq!(*pending, held - canceled - activated_by_request - activated_by_time, "pending balance of {user}");
    }
    assert!(std::process::Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap().success());
    assert!(server.0.wait().unwrap().success());
    let verify =
        std::process::Command::new(env!("CARGO_BIN_EXE_coins")).arg("verify").env("COINS_DATABASE_URL", &url).env("COINS_LOG", "warn").output().unwrap();
    assert!(verify.status.success(), "coins verify: {}", String::from_utf8_lossy(&verify.stdout));
    let sum = |f: fn(&Tally) -> usize| workers.iter().map(|w| f(&w.tally)).sum::<usize>();
    let expirations = entries.len(); // request-bearing entries
    let held: usize = workers.iter().map(|w| w.held.len()).sum();
    let early = expected.values().filter(|e| e.kind == "ACTIVATE").count();
    let cancels = expected.values().filter(|e| e.kind == "CANCEL").count();
    let adjustments = expected.values().filter(|e| e.kind == "ADJUST").count();
    let in_debt = summaries.values().filter(|(balance, _)| *balance < 0).count();
    // Entries that left their user in debt, and credits that paid some of it.
    let debts = sums_by_user(backend, &url, "SELECT user_id, COUNT(*) FROM ledger_entries WHERE balance_after < 0 GROUP BY user_id").await;
    let debt_entries: i64 = debts.values().sum();
    let paying = "SELECT e.user_id, COUNT(*) FROM ledger_entries e JOIN ledger_entries p ON p.user_id = e.user_id AND p.entry_id = \
                  (SELECT MAX(q.entry_id) FROM ledger_entries q WHERE q.user_id = e.user_id AND q.entry_id < e.entry_id) \
                  WHERE p.balance_after < 0 AND e.coins > 0 GROUP BY e.user_id";
    let debt_paying: i64 = sums_by_user(backend, &url, paying).await.values().sum();
    assert!(debt_entries > 0 && debt_paying > 0, "no user went into debt and paid it back: the mix proves nothing about debt");
    let by_time: i64 = due.values().sum();
    eprintln!(
        "crash cycles ({backend:?}): {cycles} kills, {} requests, {} acknowledged ({} till retries of a purchase; {held} held allocations, \
         {early} activated early by request, {by_time} coins activated by time, {cancels} returns during a hold; {adjustments} adjustments, \
         {debt_entries} entries leaving a user in debt, {debt_paying} credits paying debt, {in_debt} users in debt at the end), {} refused, \
         {} unanswered and retried, {} busy and retried, {} ledger entries with a request id, {} coins expired, {messages} webhook messages (one per entry)",
        sum(|t| t.requests),
        sum(|t| t.acknowledged),
        aliases.len(),
        sum(|t| t.refused),
        sum(|t| t.unanswered),
        sum(|t| t.busy),
        expirations,
        -expired.values().sum::<i64>()
    );
    let mut latency: BTreeMap<&str, (u32, Duration)> = BTreeMap::new();
    for (kind, (n, took)) in workers.iter().flat_map(|w| w.tally.latency.iter()) {
        let all = latency.entry(kind).or_default();
        *all = (all.0 + n, all.1 + *took);
    }
    let means: Vec<String> =
        latency.iter().map(|(kind, (n, took))| format!("{kind} {:.1} ms ×{n}", took.as_secs_f64() * 1000.0 / f64::from((*n).max(1)))).collect();
    eprintln!("crash cycles ({backend:?}): mean latency under load, {WORKERS} clients: {}", means.join(", "));
    assert!(sum(|t| t.unanswered) >= 1, "no request was in flight at any kill: the test proves nothing");
    let (doubled, with_bonus) = (promo.values().filter(|c| **c == 2 * PROMO.1).count(), bonused.values().sum::<usize>());
    eprintln!("crash cycles ({backend:?}): {with_bonus} promotion allocations got the limited +30 campaign, {doubled} the ×2 one");
    assert!(doubled > 0 && with_bonus > 0, "the mix must allocate under both campaigns");
    eprintln!("crash cycles ({backend:?}): tier changes {changes:?}");
    assert!(changes.get("UPGRADED").is_some_and(|n| *n > 0) && changes.get("DOWNGRADED").is_some_and(|n| *n > 0), "members must move up and down: {changes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_survives_repeated_sigkills_on_sqlite() {
    run_cycles(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_survives_repeated_sigkills_on_postgres() {
    run_cycles(Backend::Postgres).await;
}
