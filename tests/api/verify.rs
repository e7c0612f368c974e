//! Every check of `coins verify`, proven able to fail: a sound ledger (two allocations and a
//! redemption) is corrupted behind the API's back in exactly one invariant, and verify must
//! report that check by name, and no other. Each corruption keeps every other invariant true,
//! so a check that fires for the wrong reason, or stays silent, fails its test.

use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app};

/// Runs statements on the test's database directly, as a person with a database shell would.
async fn tamper(app: &TestApp, statements: &[&str]) {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(&app.db.url).unwrap();
            for sql in statements {
                conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for sql in statements {
                client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }
}

/// U1 is credited 10 coins (R1) and redeems 3 (D1); U2 is credited 10 (R2).
async fn sound_ledger(backend: Backend) -> Option<TestApp> {
    let app = spawn_app(backend).await?;
    app.config("DEFAULT", "C", "E", 10).await;
    app.allocate(&app.admin_token, "C", "E", "R1", "U1").await.assert_ok();
    app.allocate(&app.admin_token, "C", "E", "R2", "U2").await.assert_ok();
    app.post("/api/v0/coins/redeem", &app.admin_token, json!({"companyId": "C", "userId": "U1", "requestId": "D1", "coins": 3})).await.assert_ok();
    app.assert_ledger_consistent().await;
    Some(app)
}

const U1_LOT: &str = "(SELECT MIN(lot_id) FROM lots WHERE user_id = 'U1')";
const U2_LOT: &str = "(SELECT MIN(lot_id) FROM lots WHERE user_id = 'U2')";

async fn corrupted_ledger_fails_verify_naming(backend: Backend, check: &str, statements: &[&str]) {
    let Some(app) = sound_ledger(backend).await else { return };
    let statements: Vec<String> = statements.iter().map(|s| s.replace("{U1_LOT}", U1_LOT).replace("{U2_LOT}", U2_LOT)).collect();
    tamper(&app, &statements.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let problems = app.store().verify().await.expect("verify runs").problems;
    assert!(!problems.is_empty(), "verify must notice: {check}");
    for p in &problems {
        assert!(p.starts_with(&format!("{check}: ")), "only \"{check}\" may fire, got {problems:#?}");
    }
    app.stop().await;
}

macro_rules! verify_check {
    ($($name:ident: $check:literal, [$($sql:literal),* $(,)?];)*) => {$(
        mod $name {
            use crate::helpers::Backend;
            const SQL: &[&str] = &[$($sql),*];
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::corrupted_ledger_fails_verify_naming(Backend::Sqlite, $check, SQL).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::corrupted_ledger_fails_verify_naming(Backend::Postgres, $check, SQL).await
            }
        }
    )*};
}

verify_check! {
    // U2's lot handed to U1 and the balances moved with it: every lot still matches its entry and
    // every balance its lots, so only the ledger sums disagree.
    a_balance_that_differs_from_its_entries: "balance differs from the sum of the ledger", [
        "UPDATE lots SET user_id = 'U1' WHERE lot_id = {U2_LOT}",
        "UPDATE users SET balance = balance + 10 WHERE user_id = 'U1'",
        "UPDATE users SET balance = balance - 10 WHERE user_id = 'U2'",
    ];
    // U1's lot handed to U2 (balances untouched): each user's lots no longer hold its balance.
    a_balance_that_differs_from_its_lots: "balance differs from the coins left in lots less the debt", [
        "UPDATE lots SET user_id = 'U2' WHERE lot_id = {U1_LOT}",
    ];
    // A zero-coin entry (so every sum holds) for a user with no account, counted in the roll-up.
    an_entry_of_a_user_without_an_account: "ledger entry of a user with no account", [
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, created_at) \
         SELECT 'C', 'GHOST', 'EXPIRE', 0, 0, MAX(created_at) FROM ledger_entries",
        "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) \
         SELECT 'C', MAX(created_at) / 86400000, '', 'EXPIRE', 0, 0, 0, 1 FROM ledger_entries",
    ];
    // Two entries that move nothing yet claim a balance of 5, then 0: every sum is right, the
    // running balance is not.
    a_broken_running_balance: "balanceAfter breaks the running sum", [
        "INSERT INTO users (company_id, user_id, balance, created_at) VALUES ('C', 'CHAIN', 0, 0)",
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, created_at) \
         SELECT 'C', 'CHAIN', 'EXPIRE', 0, 5, MAX(created_at) FROM ledger_entries",
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, created_at) \
         SELECT 'C', 'CHAIN', 'EXPIRE', 0, 0, MAX(created_at) FROM ledger_entries",
        "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) \
         SELECT 'C', MAX(created_at) / 86400000, '', 'EXPIRE', 0, 0, 0, 2 FROM ledger_entries",
    ];
    // A claimed request id whose entry was never written.
    a_request_without_its_entry: "request without exactly one ledger entry (none for an alias, an allocation that earned nothing or an activation of an active one)", [
        "INSERT INTO requests (company_id, request_id, kind, user_id, coins, fingerprint, created_at) VALUES ('C', 'LOST', 'REDEEM', 'U1', 0, '', 0)",
    ];
    // A held coin no entry ever moved and no held lot holds.
    a_pending_balance_that_differs_from_its_entries_and_lots: "pending balance differs from its entries or its held lots", [
        "UPDATE users SET pending_balance = 1 WHERE user_id = 'U1'",
    ];
    // An entry that moves no held coins yet says 5 are held after it.
    a_broken_running_pending_balance: "pendingAfter breaks the running sum", [
        "INSERT INTO users (company_id, user_id, balance, created_at) VALUES ('C', 'HELD', 0, 0)",
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, pending_coins, pending_after, created_at) \
         SELECT 'C', 'HELD', 'EXPIRE', 0, 0, 0, 5, MAX(created_at) FROM ledger_entries",
        "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) \
         SELECT 'C', MAX(created_at) / 86400000, '', 'EXPIRE', 0, 0, 0, 1 FROM ledger_entries",
    ];
    // Two activations of R1 that move nothing (so every sum holds).
    an_allocation_activated_twice: "an allocation activated more than once", [
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, original_request_id, created_at) \
         SELECT 'C', 'U1', 'ACTIVATE', 0, (SELECT balance FROM users WHERE user_id = 'U1'), 'R1', MAX(created_at) FROM ledger_entries",
        "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, original_request_id, created_at) \
         SELECT 'C', 'U1', 'ACTIVATE', 0, (SELECT balance FROM users WHERE user_id = 'U1'), 'R1', MAX(created_at) FROM ledger_entries",
        "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) \
         SELECT 'C', MAX(created_at) / 86400000, '', 'ACTIVATE', 0, 0, 0, 2 FROM ledger_entries",
    ];
    // The redemption's move recorded against U2's lot: the entry still moves what it says, but
    // neither lot's remainder follows from its credit and moves.
    a_lot_whose_remainder_does_not_follow_its_moves: "lot remainder differs from its credit and moves", [
        "UPDATE lot_moves SET lot_id = {U2_LOT} WHERE entry_id = (SELECT entry_id FROM ledger_entries WHERE request_id = 'D1')",
    ];
    // The redemption's lot move says 2 where the entry says 3 (the lot's credit follows, so the
    // lot itself still adds up, but R1's lot no longer holds what R1 credited).
    a_debit_that_differs_from_its_lot_moves: "entry differs from the lots it opened or touched and the debt it changed", [
        "UPDATE lot_moves SET coins = coins + 1 WHERE entry_id = (SELECT entry_id FROM ledger_entries WHERE request_id = 'D1')",
        "UPDATE lots SET coins = coins - 1 WHERE lot_id = {U1_LOT}",
    ];
    // The idempotency record of an allocation is gone: a retry would credit it again.
    an_entry_without_its_request: "ledger entry without its request", [
        "DELETE FROM requests WHERE request_id = 'R1'",
    ];
    a_roll_up_that_differs_from_the_ledger: "daily roll-up differs from the ledger", [
        "UPDATE ledger_daily SET credit = credit + 1 WHERE type = 'ALLOCATE'",
    ];
    // The record (what a replay answers) says one coin more than the entry credited.
    a_record_that_differs_from_its_entry: "allocation or adjustment record differs from its entry", [
        "UPDATE requests SET coins = coins + 1 WHERE request_id = 'R1'",
    ];
    // Waived beyond its coins (and so marked returned in full).
    an_allocation_returned_beyond_its_coins: "returns exceed what the original holds", [
        "UPDATE requests SET coins_waived = coins + 1, state = 'REVERSED' WHERE request_id = 'R1'",
    ];
    // Marked returned in full with every coin still there.
    an_allocation_returned_in_name_only: "return counters or state disagree with the returns", [
        "UPDATE requests SET state = 'REVERSED' WHERE request_id = 'R1'",
    ];
    // A redemption that says one coin came back, with no return that gave it.
    a_redemption_given_back_by_no_return: "return counters or state disagree with the returns", [
        "UPDATE requests SET coins_reversed = 1 WHERE request_id = 'D1'",
    ];
    // Only with the unique index gone can an order have two live allocations.
    two_live_allocations_for_one_order: "more than one live allocation for an order", [
        "DROP INDEX requests_live_order",
        "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, order_id, state) \
         VALUES ('C', 'Z1', 'ALLOCATE', 'U1', 'E', 0, '', 0, 'O1', 'ZERO')",
        "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, order_id, state) \
         VALUES ('C', 'Z2', 'ALLOCATE', 'U1', 'E', 0, '', 0, 'O1', 'ZERO')",
    ];
    // A redemption counted as earned as well as redeemed (balance = earned − redeemed − expired no longer holds).
    a_lifetime_counter_off_the_ledger: "lifetime counters differ from the ledger", [
        "UPDATE users SET lifetime_earned = lifetime_earned + 3 WHERE user_id = 'U1'",
    ];
    an_alias_of_no_allocation: "alias of no allocation", [
        "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, alias_of) \
         VALUES ('C', 'AL1', 'ALLOCATE', 'U1', 'E', 10, '', 0, 'GONE')",
    ];
    // R1 names a campaign whose window ended before R1 was made.
    an_allocation_outside_its_campaigns_window: "allocation outside its campaign's window or events", [
        "INSERT INTO campaigns (company_id, name, events, starts_at, ends_at, bonus_coins, created_by, created_at, updated_by, updated_at) \
         VALUES ('C', 'old', NULL, 0, 1, 5, 'x', 0, 'x', 0)",
        "UPDATE requests SET campaign_id = (SELECT 'CMP' || CAST(MAX(seq) + 100000 AS TEXT) FROM campaigns) WHERE request_id = 'R1'",
    ];
    // C gets a tier scheme behind the API's back, so none of its credits were counted.
    credits_of_a_tier_company_never_counted: "qualifying coins differ from the credits' records", [
        "INSERT INTO tier_schemes (company_id, scheme, updated_by, updated_at) VALUES ('C', '{\"basis\":\"LIFETIME\",\"windowDays\":null,\"retentionDays\":null,\"downgrade\":\"NEVER\",\"tiers\":[{\"code\":\"BASE\",\"name\":\"Base\",\"threshold\":0,\"earnMultiplierBps\":10000}]}', 'x', 0)",
    ];
    // C gets a rolling scheme behind the API's back, with its running totals right and each
    // member's coins counted, but on the day before their credits'.
    a_rolling_members_coins_counted_on_another_day: "qualifying coins differ from the credits' records", [
        "INSERT INTO tier_schemes (company_id, scheme, updated_by, updated_at) VALUES ('C', '{\"basis\":\"ROLLING\",\"windowDays\":3650,\"retentionDays\":null,\"downgrade\":\"NEVER\",\"tiers\":[{\"code\":\"BASE\",\"name\":\"Base\",\"threshold\":0,\"earnMultiplierBps\":10000}]}', 'x', 0)",
        "UPDATE users SET qualifying_total = (SELECT SUM(coins) FROM requests r WHERE r.user_id = users.user_id AND r.kind = 'ALLOCATE')",
        "INSERT INTO qualifying_days (user_id, day, company_id, coins) SELECT user_id, created_at / 86400000 - 1, company_id, coins FROM requests WHERE kind = 'ALLOCATE'",
    ];
    // Every credit counted, but nobody placed in the tier their 10 qualifying coins reach.
    members_left_below_their_tier: "member below the tier their qualifying coins reach", [
        "INSERT INTO tier_schemes (company_id, scheme, updated_by, updated_at) VALUES ('C', '{\"basis\":\"LIFETIME\",\"windowDays\":null,\"retentionDays\":null,\"downgrade\":\"NEVER\",\"tiers\":[{\"code\":\"BASE\",\"name\":\"Base\",\"threshold\":0,\"earnMultiplierBps\":10000},{\"code\":\"TOP\",\"name\":\"Top\",\"threshold\":5,\"earnMultiplierBps\":20000}]}', 'x', 0)",
        "UPDATE users SET qualifying_total = (SELECT SUM(coins) FROM requests r WHERE r.user_id = users.user_id AND r.kind = 'ALLOCATE')",
    ];
    // A member placed in a tier the scheme does not have.
    a_member_in_a_tier_the_scheme_lacks: "tier unknown to the company's scheme", [
        "INSERT INTO tier_schemes (company_id, scheme, updated_by, updated_at) VALUES ('C', '{\"basis\":\"LIFETIME\",\"windowDays\":null,\"retentionDays\":null,\"downgrade\":\"NEVER\",\"tiers\":[{\"code\":\"BASE\",\"name\":\"Base\",\"threshold\":0,\"earnMultiplierBps\":10000}]}', 'x', 0)",
        "UPDATE users SET qualifying_total = (SELECT SUM(coins) FROM requests r WHERE r.user_id = users.user_id AND r.kind = 'ALLOCATE')",
        "UPDATE users SET tier_code = 'GOLD' WHERE user_id = 'U1'",
    ];
    // R1 and D1 of U1 both name a campaign that applies once per user (its window and events
    // cover them both), and carry the mark of a limited campaign's allocations, as they would had
    // the campaign applied.
    a_campaign_applied_beyond_its_limit: "campaign applied more often than its per-user limit", [
        "INSERT INTO campaigns (company_id, name, events, starts_at, ends_at, bonus_coins, max_triggers_per_user, created_by, created_at, updated_by, updated_at) \
         VALUES ('C', 'once', NULL, 0, 9000000000000000, 5, 1, 'x', 0, 'x', 0)",
        "UPDATE requests SET campaign_id = (SELECT 'CMP' || CAST(MAX(seq) + 100000 AS TEXT) FROM campaigns) WHERE request_id IN ('R1', 'D1')",
        "UPDATE requests SET campaign_limited = TRUE WHERE request_id IN ('R1', 'D1')",
    ];
    // R1, under no campaign, marked as counted by a per-user limit.
    an_allocation_marked_limited_under_no_campaign: "allocation marked unlike its campaign's per-user limit", [
        "UPDATE requests SET campaign_limited = TRUE WHERE request_id = 'R1'",
    ];
    // R1 put under a campaign limited to 5 per user without the mark: the limit would not see it.
    a_limited_campaigns_allocation_without_the_mark: "allocation marked unlike its campaign's per-user limit", [
        "INSERT INTO campaigns (company_id, name, events, starts_at, ends_at, bonus_coins, max_triggers_per_user, created_by, created_at, updated_by, updated_at) \
         VALUES ('C', 'five', NULL, 0, 9000000000000000, 5, 5, 'x', 0, 'x', 0)",
        "UPDATE requests SET campaign_id = (SELECT 'CMP' || CAST(MAX(seq) + 100000 AS TEXT) FROM campaigns) WHERE request_id = 'R1'",
    ];
}

/// The list above covers every check verify has: adding a check without a test fails here.
#[test]
fn every_verify_check_has_a_corruption_test() {
    let source = include_str!("verify.rs");
    let tested: Vec<&str> = source.lines().filter_map(|l| l.split_once(": \"")).map(|(_, rest)| rest.split('"').next().unwrap_or("")).collect();
    for name in coins::store::verify::check_names() {
        assert!(tested.contains(&name), "no corruption test for verify check \"{name}\"");
    }
}

/// A check of SQLite's own layout (PostgreSQL keeps no such pointer): every request points to the
/// entry it wrote. R1 made to point to R2's entry, then to an entry that does not exist. (A
/// pointer lost altogether is also reported as a request without its entry: SQLite counts a
/// request's entries by its pointer.)
struct SqliteCorruption {
    check: &'static str,
    sql: &'static str,
}

const SQLITE_CORRUPTIONS: [SqliteCorruption; 2] = [
    SqliteCorruption {
        check: "request that does not point to its own ledger entry",
        sql: "UPDATE requests SET entry_id = (SELECT entry_id FROM ledger_entries WHERE request_id = 'R2') WHERE request_id = 'R1'",
    },
    SqliteCorruption { check: "request that does not point to its own ledger entry", sql: "UPDATE requests SET entry_id = 999999 WHERE request_id = 'R1'" },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_point_to_its_own_entry_fails_verify_on_sqlite() {
    for c in SQLITE_CORRUPTIONS {
        corrupted_ledger_fails_verify_naming(Backend::Sqlite, c.check, &[c.sql]).await;
    }
}
