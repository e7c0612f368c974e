//! Property test of group commit: a batch of allocations must decide every item exactly as the
//! same items applied one at a time, in order. Random batches mixing replays, request-id
//! conflicts, duplicates within the batch, users of another company, missing configurations,
//! per-day / lifetime caps (some batches straddle midnight UTC), held coins, and percentages of a
//! purchase value under order ids (retries of an order under new ids, orders of other users,
//! purchases too small to earn a coin), and a company with a tier scheme (LIFETIME or ROLLING,
//! members upgraded mid-batch) and campaigns running, run as one `allocate` call on one
//! database and item by item on another; the per-item answers, every user's ledger history and
//! `verify` must agree. Both must also agree with the pure plan: the same items decided by
//! `domain::allocate` alone, on rows kept in memory (PostgreSQL decides batches in set-based SQL,
//! so this is what holds that SQL to the rules).

use std::collections::HashMap;

use coins::domain::CoinConfigId;
use coins::domain::Refusal;
use coins::domain::allocate::{AllocateCmd, AllocateOk};
use coins::domain::allocate::{Purchase, answer_repeat, calculation, cap_windows, plan_credit, plan_earning, with_tier};
use coins::domain::allocation::{AllocationState, OrderClaim, OrderHolder, check_order};
use coins::domain::campaigns::{Campaign, CampaignTerms, Reward, ranked};
use coins::domain::config::{CoinConfig, ConfigValues, Earning, resolve};
use coins::domain::earn::{AmountType, CalculationRecord};
use coins::domain::ledger::{Account, RequestKind, StoredRequest};
use coins::domain::redeem::CoinValue;
use coins::domain::refusal::Cap;
use coins::domain::tiers::{Basis, Downgrade, Tier, TierScheme, TierState};
use coins::domain::{Coins, CompanyId, ConfigKind, EventName, OrderId, RequestId, UserId};
use coins::store::{AllocationRecord, Store, StoreError};
use proptest::prelude::*;

use crate::helpers::*;

/// C3 has a tier scheme and campaigns: ×2 on E0 and 3 coins more on E1 (no limit), ×3 on E4 twice
/// per member (its items leave the set-based path on PostgreSQL, between set-based runs).
const COMPANIES: [&str; 3] = ["C1", "C2", "C3"];
const TIERED: &str = "C3";
const USERS: usize = 4;
const REQUESTS: usize = 20;
/// Midnight UTC.
const MIDNIGHT_MS: i64 = 1_700_006_400_000;

/// (kind, company, event, amount (a PERCENT configuration's rate, in basis points), validity
/// days, maxPerUserPerDay, maxPerUser, pendingDays). E3 has none; E5 and E7 hold their coins; E6
/// and E7 earn a percentage of the purchase value, and their items carry one and an order id.
type Cfg = (ConfigKind, &'static str, &'static str, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
const CONFIGS: [Cfg; 8] = [
    (ConfigKind::Default, "C1", "E0", 5, None, None, None, None),
    (ConfigKind::Default, "C1", "E1", 3, None, None, Some(2), None),
    (ConfigKind::Default, "C1", "E2", 7, Some(1), Some(1), None, None),
    (ConfigKind::Custom, "C2", "E4", 11, Some(3), Some(2), Some(3), None),
    (ConfigKind::Default, "C1", "E4", 13, None, None, None, None),
    (ConfigKind::Default, "C1", "E5", 9, Some(2), None, Some(2), Some(2)),
    (ConfigKind::Default, "C1", "E6", 1_000, Some(4), None, Some(2), None),
    (ConfigKind::Default, "C1", "E7", 500, Some(2), Some(1), None, Some(3)),
];
const EVENTS: [&str; 7] = ["E0", "E1", "E2", "E4", "E5", "E6", "E7"];
/// Events whose configuration earns a percentage.
const PERCENT: [&str; 2] = ["E6", "E7"];
/// Purchase values: at 10% or 5% of 100 minor units a coin, the smallest earns nothing.
const AMOUNTS: [i64; 4] = [50, 1_000, 25_000, 99_999];
const ORDERS: usize = 8;

#[derive(Debug, Clone)]
struct Item {
    company: usize,
    user: usize,
    event: usize,
    req: usize,
    /// For E6 and E7: the order id and the purchase value.
    order: usize,
    amount: usize,
}

fn item() -> impl Strategy<Value = Item> {
    // Mostly C1 so users are shared; E3 (no configuration) now and then.
    let event = prop_oneof![6 => 0..5usize, 1 => Just(7usize), 4 => 5..7usize];
    (prop_oneof![4 => Just(0usize), 1 => Just(1usize), 2 => Just(2usize)], 0..USERS, event, 0..REQUESTS, 0..ORDERS, 0..AMOUNTS.len())
        .prop_map(|(company, user, event, req, order, amount)| Item { company, user, event, req, order, amount })
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Allocated(i64, i64),
    Zero,
    Replayed(i64),
    Refused(&'static str),
}

fn outcome(r: Result<AllocateOk, StoreError>) -> Outcome {
    match r {
        Ok(AllocateOk::Allocated { coins, balance, .. }) => Outcome::Allocated(coins.get(), balance),
        Ok(AllocateOk::Replayed { coins }) => Outcome::Replayed(coins.get()),
        Ok(AllocateOk::Zero) => Outcome::Zero,
        Err(StoreError::Refused(r)) => Outcome::Refused(match r {
            Refusal::RequestIdConflict(_) => "REQUEST_ID_CONFLICT",
            Refusal::OrderIdConflict(_) => "ORDER_ID_CONFLICT",
            Refusal::ConfigNotFound { .. } => "CONFIG_NOT_FOUND",
            Refusal::UserCompanyMismatch { .. } => "USER_COMPANY_MISMATCH",
            Refusal::LimitReached { cap: Cap::PerDay, .. } => "LIMIT_PER_DAY",
            Refusal::LimitReached { cap: Cap::Ever, .. } => "LIMIT_EVER",
            other => panic!("unexpected refusal {other:?}"),
        }),
        Err(other) => panic!("unexpected store error {other}"),
    }
}

fn cmd(it: &Item, now_ms: i64) -> AllocateCmd {
    let event = EVENTS.get(it.event).copied().unwrap_or("E3");
    let purchase = match PERCENT.contains(&event) {
        true => Purchase { order_id: Some(OrderId::parse(&format!("O{}", it.order)).unwrap()), amount_minor: Some(AMOUNTS[it.amount]), currency: None },
        false => Purchase::default(),
    };
    AllocateCmd {
        purchase,
        company: CompanyId::parse(COMPANIES[it.company]).unwrap(),
        user: UserId::parse(&format!("U{}", it.user)).unwrap(),
        event: EventName::parse(event).unwrap(),
        request_id: RequestId::parse(&format!("R{}", it.req)).unwrap(),
        now_ms,
    }
}

fn values(&(kind, company, event, amount, validity, per_day, ever, pending_days): &Cfg) -> ConfigValues {
    let percent = PERCENT.contains(&event);
    ConfigValues {
        kind,
        company_id: CompanyId::parse(company).unwrap(),
        event: EventName::parse(event).unwrap(),
        amount: if percent { None } else { Coins::amount(amount) },
        earning: match percent {
            true => Earning { amount_type: AmountType::Percent, rate_bps: Some(amount), pending_days, ..Default::default() },
            false => Earning { pending_days, ..Default::default() },
        },
        validity_days: validity,
        max_per_user_per_day: per_day,
        max_per_user: ever,
        active: true,
    }
}

fn config_values() -> Vec<CoinConfig> {
    CONFIGS.iter().enumerate().map(|(i, cfg)| CoinConfig { id: CoinConfigId::from_seq(i as i64 + 1), values: values(cfg), version: 1 }).collect()
}

/// The pure plan: `domain::allocate` deciding each item from rows kept in memory.
#[derive(Default)]
struct PurePlan {
    requests: HashMap<(CompanyId, RequestId), StoredRequest>,
    accounts: HashMap<UserId, Account>,
    /// (company, user, event, created_at) of every allocation.
    allocations: Vec<(CompanyId, UserId, EventName, i64)>,
    /// What the plans wrote, per user, oldest first (as [`ledger`] reads it back).
    entries: HashMap<String, Vec<Written>>,
    /// The record fields the plans wrote for allocations that keep a record (held ones here).
    records: HashMap<(CompanyId, RequestId), RecordWritten>,
    /// The live allocation of each (company, event, order id).
    orders: HashMap<(CompanyId, EventName, OrderId), OrderHolder>,
    /// C3's scheme and campaigns, and each of its members' tier and qualifying coins.
    scheme: Option<TierScheme>,
    campaigns: Vec<Campaign>,
    tiers: HashMap<UserId, (TierState, i64)>,
    /// How many allocations each campaign applied to, per member.
    triggers: HashMap<(i64, UserId), i64>,
}

/// What an allocation's record says beyond its entry, as the store reads it back.
#[derive(Debug, PartialEq)]
struct RecordWritten {
    coin_config_id: Option<String>,
    state: AllocationState,
    zero_reason: Option<String>,
    base_coins: i64,
    order_id: Option<String>,
    aliases: Vec<RequestId>,
    amount_minor: Option<i64>,
    amount_refunded_minor: Option<i64>,
    currency: Option<String>,
    calculation: CalculationRecord,
    activates_at: Option<i64>,
    activated_at: Option<i64>,
    expires_at: Option<i64>,
}

impl RecordWritten {
    fn read(r: AllocationRecord) -> Self {
        Self {
            coin_config_id: r.coin_config_id,
            state: r.state,
            zero_reason: r.zero_reason,
            base_coins: r.base_coins,
            order_id: r.order_id,
            aliases: r.aliases,
            amount_minor: r.amount_minor,
            amount_refunded_minor: r.amount_refunded_minor,
            currency: r.currency,
            calculation: r.calculation,
            activates_at: r.activates_at_ms,
            activated_at: r.activated_at_ms,
            expires_at: r.expires_at_ms,
        }
    }
}

/// What an entry says, as the history reads it: (type, coins, balanceAfter, requestId, expiresAt,
/// coinConfigId, pendingCoins, pendingAfter). A held credit's `expiresAt` is its lot's provisional
/// expiry, so this holds the lot's expiry and the activation time (`expiresAt - validityDays`) too.
type Written = (String, i64, i64, Option<String>, Option<i64>, Option<String>, i64, i64);

impl PurePlan {
    fn allocate(&mut self, cmd: &AllocateCmd, configs: &[CoinConfig]) -> Outcome {
        let find = |kind: ConfigKind| {
            configs.iter().find(|c| c.values.kind == kind && c.values.event == cmd.event && (kind == ConfigKind::Default || c.values.company_id == cmd.company))
        };
        let key = (cmd.company.clone(), cmd.request_id.clone());
        let prev = self.requests.get(&key);
        let config = match resolve(find(ConfigKind::Custom), find(ConfigKind::Default)) {
            Some(config) if prev.is_none() => config,
            _ => return outcome(answer_repeat(prev, cmd).map_err(StoreError::from)),
        };
        let counts: Vec<i64> = cap_windows(&config.values, cmd.now_ms)
            .iter()
            .map(|w| {
                let same = |a: &&(CompanyId, UserId, EventName, i64)| a.0 == cmd.company && a.1 == cmd.user && a.2 == cmd.event && a.3 >= w.since_ms;
                self.allocations.iter().filter(same).count() as i64
            })
            .collect();
        let value = CoinValue::builtin();
        let calculation = calculation(cmd, config.values.terms().unwrap(), &value).unwrap();
        // C3's members earn at their tier's multiplier, and the best campaign on top.
        let scheme = self.scheme.as_ref().filter(|_| cmd.company.as_str() == TIERED);
        let member = self.accounts.get(&cmd.user).filter(|a| a.company == cmd.company).and(self.tiers.get(&cmd.user));
        let state = member.map(|(state, _)| state.clone()).unwrap_or_default();
        let multiplier = scheme
            .map(|s| (s.tiers[s.current(&state)].code.clone(), s.multiplier_bps(&state)))
            .filter(|(_, bps)| *bps != 10_000 && config.values.earning.tier_multiplier);
        let at_tier = multiplier.as_ref().map(|(code, bps)| (code.as_str(), *bps));
        let tiered = with_tier(&calculation, at_tier);
        let campaigns = if scheme.is_some() { &self.campaigns[..] } else { &[] };
        let ranked = ranked(campaigns, &cmd.event, cmd.now_ms, &tiered);
        let earn = match ranked.first() {
            // The best campaign has a per-user limit: the best one with room applies.
            Some(best) if best.terms.max_triggers_per_user.is_some() => {
                let room =
                    |c: &&&Campaign| c.terms.max_triggers_per_user.is_none_or(|n| self.triggers.get(&(c.id.seq(), cmd.user.clone())).copied().unwrap_or(0) < n);
                plan_earning(cmd, config, &value, &tiered, (ranked.iter().find(room).copied(), at_tier), true)
            }
            best => plan_earning(cmd, config, &value, &tiered, (best.copied(), at_tier), best.is_some() || multiplier.is_some()),
        };
        // The order id next: its live allocation makes this a replay under an alias, or a conflict.
        let order = cmd.purchase.order_id.clone().map(|o| (cmd.company.clone(), cmd.event.clone(), o));
        let stored = |user: &UserId, coins: i64| StoredRequest {
            kind: RequestKind::Allocate,
            user: user.clone(),
            event: Some(cmd.event.to_string()),
            coins,
            fingerprint: String::new(),
            original: None,
            response: None,
            alias_of: None,
            state: None,
        };
        if let Some(holder) = order.as_ref().and_then(|o| self.orders.get(o)) {
            return match check_order(Some(holder), &cmd.user, cmd.purchase.amount_minor) {
                Ok(OrderClaim::ReplayOf(_)) => {
                    let coins = holder.coins;
                    let holder_key = (cmd.company.clone(), holder.request_id.clone());
                    self.requests.insert(key, stored(&holder.user, coins));
                    if let Some(record) = self.records.get_mut(&holder_key) {
                        record.aliases.push(cmd.request_id.clone());
                    }
                    Outcome::Replayed(coins)
                }
                Ok(OrderClaim::Free) => unreachable!("a holder was given"),
                Err(refusal) => outcome(Err(refusal.into())),
            };
        }
        let plan = match plan_credit(cmd, &earn, config, self.accounts.get(&cmd.user), &counts) {
            Ok(plan) => plan,
            Err(refusal) => return outcome(Err(refusal.into())),
        };
        if let Some(o) = order {
            let holder = OrderHolder { request_id: cmd.request_id.clone(), user: cmd.user.clone(), amount_minor: cmd.purchase.amount_minor, coins: earn.coins };
            self.orders.insert(o, holder);
        }
        let stored = stored(&cmd.user, earn.coins);
        if let Some(r) = &earn.record {
            let record = RecordWritten {
                coin_config_id: Some(r.coin_config_id.clone()),
                state: r.state,
                zero_reason: r.zero_reason.map(|z| z.as_str().to_owned()),
                base_coins: r.base_coins,
                order_id: r.order_id.as_ref().map(ToString::to_string),
                aliases: Vec::new(),
                amount_minor: r.amount_minor,
                amount_refunded_minor: r.amount_minor.map(|_| 0),
                currency: r.currency.clone(),
                calculation: serde_json::from_str(&r.calculation).unwrap(),
                activates_at: r.activates_at,
                activated_at: r.activated_at,
                expires_at: r.expires_at,
            };
            self.records.insert(key.clone(), record);
            if let Some(campaign) = r.campaign_id {
                *self.triggers.entry((campaign.seq(), cmd.user.clone())).or_default() += 1;
            }
        }
        self.requests.insert(key, stored);
        self.accounts.insert(cmd.user.clone(), Account { company: cmd.company.clone(), balance: plan.balance, pending: plan.pending });
        if let Some(e) = &plan.entry {
            let written = (
                e.kind.as_str().to_owned(),
                e.coins,
                e.balance_after,
                e.request_id.as_ref().map(ToString::to_string),
                e.expires_at,
                e.coin_config_id.clone(),
                e.pending_coins,
                e.pending_after,
            );
            self.entries.entry(cmd.user.to_string()).or_default().push(written);
        }
        // An allocation that earned nothing writes no entry, so no cap counts it.
        let Some(entry) = &plan.entry else { return Outcome::Zero };
        // Spendable at once: its base coins qualify now, and may upgrade the member.
        if let (Some(scheme), 0) = (scheme, entry.pending_coins) {
            let base = earn.record.as_ref().map_or(earn.coins, |r| r.base_coins);
            let (state, total) = self.tiers.entry(cmd.user.clone()).or_default();
            *total += base;
            if let Some(change) = scheme.after_earning(state, *total, cmd.now_ms, cmd.request_id.as_str()) {
                *state = change.state;
            }
        }
        self.allocations.push((cmd.company.clone(), cmd.user.clone(), cmd.event.clone(), cmd.now_ms));
        Outcome::Allocated(earn.coins, plan.balance)
    }
}

fn history_cmd(i: usize, it: &Item, start: i64) -> AllocateCmd {
    let mut c = cmd(it, start - 50_000 + i as i64);
    c.request_id = RequestId::parse(&format!("R{}", 100 + i)).unwrap();
    c
}

/// C3's scheme: ×1, ×1.5 from 20 qualifying coins, ×2 from 60, kept 30 days.
fn scheme(rolling: bool) -> TierScheme {
    let tier = |code: &str, threshold, earn_multiplier_bps| Tier { code: code.into(), name: code.into(), threshold, earn_multiplier_bps };
    TierScheme {
        basis: if rolling { Basis::Rolling } else { Basis::Lifetime },
        window_days: rolling.then_some(30),
        retention_days: Some(30),
        downgrade: Downgrade::OneDown,
        tiers: vec![tier("T0", 0, 10_000), tier("T1", 20, 15_000), tier("T2", 60, 20_000)],
    }
}

async fn setup(backend: Backend, history: &[Item], start: i64, rolling: bool) -> Option<TestDb> {
    let db = test_db(backend).await?;
    for cfg in &CONFIGS {
        db.store.create_config(values(cfg), "model", start - 100_000).await.unwrap();
    }
    let tiered = CompanyId::parse(TIERED).unwrap();
    db.store.put_tiers(&tiered, scheme(rolling), "model", start - 100_000).await.unwrap();
    let offers = [("E0", Reward::Multiplier(20_000), None), ("E1", Reward::Bonus(3), None), ("E4", Reward::Multiplier(30_000), Some(2))];
    for (event, reward, max_triggers_per_user) in offers {
        let terms = CampaignTerms {
            name: format!("{event} offer"),
            events: Some(vec![EventName::parse(event).unwrap()]),
            starts_at: start - 100_000,
            ends_at: start + 86_400_000,
            reward,
            max_triggers_per_user,
        };
        db.store.create_campaign(&tiered, terms, "model", start - 100_000).await.unwrap();
    }
    // Earlier traffic, one by one on both sides; request ids R100+ so the batch can replay none.
    for (i, it) in history.iter().enumerate() {
        db.store.allocate(vec![history_cmd(i, it, start)]).await;
    }
    Some(db)
}

async fn ledger(store: &dyn Store) -> Vec<(String, Vec<Written>)> {
    let mut out = Vec::new();
    for u in 0..USERS {
        let user = UserId::parse(&format!("U{u}")).unwrap();
        let entries = store.transactions(&user, None, 500).await.unwrap();
        let entries = entries
            .into_iter()
            .rev()
            .map(|e| {
                (
                    e.kind.as_str().to_owned(),
                    e.coins,
                    e.balance_after,
                    e.request_id,
                    e.expires_at_ms,
                    e.coin_config_id,
                    e.extra.pending_coins,
                    e.extra.pending_after,
                )
            })
            .collect();
        out.push((format!("U{u}"), entries));
    }
    out
}

async fn check(backend: Backend, history: Vec<Item>, batch: Vec<Item>, (straddle, rolling): (bool, bool)) {
    // Straddling batches put some items after midnight, so a per-day cap restarts mid-batch.
    let start = if straddle { MIDNIGHT_MS - 3_000 } else { MIDNIGHT_MS - 3_600_000 };
    let Some(batched) = setup(backend, &history, start, rolling).await else { return };
    let Some(single) = setup(backend, &history, start, rolling).await else { return };
    let cmds: Vec<AllocateCmd> = batch.iter().enumerate().map(|(i, it)| cmd(it, start + 1_000 * i as i64)).collect();

    let answers = batched.store.allocate(cmds.clone()).await;
    // Each ledger entry id a batch answers with is the entry of that very request.
    let mut entry_requests = std::collections::HashMap::new();
    for u in 0..USERS {
        for e in batched.store.transactions(&UserId::parse(&format!("U{u}")).unwrap(), None, 500).await.unwrap() {
            entry_requests.insert(e.entry_id, e.request_id);
        }
    }
    for (c, answer) in cmds.iter().zip(&answers) {
        if let Ok(AllocateOk::Allocated { entry_id, .. }) = answer {
            assert_eq!(entry_requests.get(entry_id), Some(&Some(c.request_id.to_string())), "entry id answered for {}", c.request_id);
        }
    }
    let together: Vec<Outcome> = answers.into_iter().map(outcome).collect();
    let mut apart = Vec::new();
    for c in &cmds {
        apart.push(outcome(single.store.allocate(vec![c.clone()]).await.pop().unwrap()));
    }
    assert_eq!(together, apart, "per-item answers differ for batch {batch:?} after {history:?}");
    let configs = config_values();
    let tiered = CompanyId::parse(TIERED).unwrap();
    let mut pure = PurePlan { scheme: Some(scheme(rolling)), campaigns: batched.store.campaigns(&tiered).await.unwrap(), ..PurePlan::default() };
    for (i, it) in history.iter().enumerate() {
        pure.allocate(&history_cmd(i, it, start), &configs);
    }
    let planned: Vec<Outcome> = cmds.iter().map(|c| pure.allocate(c, &configs)).collect();
    assert_eq!(together, planned, "the store differs from the pure plan for batch {batch:?} after {history:?}");
    let written = ledger(&*batched.store).await;
    assert_eq!(written, ledger(&*single.store).await, "ledgers differ");
    // What the batch wrote is what the plans wrote: expiry, configuration, held coins, every field.
    let plans: Vec<(String, Vec<Written>)> = (0..USERS).map(|u| (format!("U{u}"), pure.entries.remove(&format!("U{u}")).unwrap_or_default())).collect();
    assert_eq!(written, plans, "the store wrote other than the pure plan for batch {batch:?} after {history:?}");
    // Every record the batch wrote (its calculation, configuration, hold and expiry) is the one
    // the same item wrote alone, and, where the plan keeps a record, the plan's.
    for c in &cmds {
        let record = batched.store.allocation(&c.company, &c.request_id).await.unwrap();
        assert_eq!(record, single.store.allocation(&c.company, &c.request_id).await.unwrap(), "records of {} differ", c.request_id);
        if let Some(planned) = pure.records.get(&(c.company.clone(), c.request_id.clone())) {
            let r = record.unwrap_or_else(|| panic!("{} keeps no record", c.request_id));
            assert_eq!(&RecordWritten::read(r), planned, "record of {}", c.request_id);
        }
    }
    // Every member of C3 is in the tier the plan placed them in, with its qualifying coins, and
    // the same on both sides.
    let now = start + 1_000 * cmds.len() as i64;
    for u in 0..USERS {
        let user = UserId::parse(&format!("U{u}")).unwrap();
        let tier = batched.store.member_tier(&tiered, &user, now).await.unwrap();
        assert_eq!(tier, single.store.member_tier(&tiered, &user, now).await.unwrap(), "tiers of {user} differ");
        let member = pure.accounts.get(&user).is_some_and(|a| a.company == tiered);
        if let (Some(tier), true) = (tier, member) {
            let (state, total) = pure.tiers.get(&user).cloned().unwrap_or_default();
            let scheme = scheme(rolling);
            let planned = (scheme.tiers[scheme.current(&state)].code.clone(), total, state.expires_at);
            assert_eq!((tier.view.code, tier.view.qualifying_coins, tier.view.expires_at), planned, "tier of {user}");
        }
    }
    for db in [&batched, &single] {
        let report = db.store.verify().await.unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}

/// `cases` per run; `MODEL_CASES` sets more for a long run.
fn run_cases(backend: Backend, cases: u32) {
    let cases = std::env::var("MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    let config = ProptestConfig { cases, ..ProptestConfig::default() };
    let items = |n| proptest::collection::vec(item(), 0..n);
    proptest!(config, |(history in items(8), batch in items(40), straddle in proptest::bool::weighted(0.3), rolling in any::<bool>())| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(backend, history, batch, (straddle, rolling)));
    });
}

#[test]
fn a_batch_decides_each_item_as_if_applied_alone_on_sqlite() {
    run_cases(Backend::Sqlite, 48);
}

#[test]
fn a_batch_decides_each_item_as_if_applied_alone_on_postgres() {
    run_cases(Backend::Postgres, 48);
}

/// One member of the tiered company, five allocations of E0 (5 base coins each, ×2 campaign) in
/// one batch: the fourth reaches the second tier (20), so it is the upgrade's cause and earns at
/// ×1 still, and the fifth earns at ×1.5. Both bases, decided exactly as one by one.
async fn upgrade_mid_batch(backend: Backend) {
    let items: Vec<Item> = (0..5).map(|req| Item { company: 2, user: 0, event: 0, req, order: 0, amount: 0 }).collect();
    for rolling in [false, true] {
        check(backend, Vec::new(), items.clone(), (false, rolling)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_upgraded_mid_batch_earns_the_new_multiplier_from_the_next_item_on_sqlite() {
    upgrade_mid_batch(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_upgraded_mid_batch_earns_the_new_multiplier_from_the_next_item_on_postgres() {
    upgrade_mid_batch(Backend::Postgres).await;
}

/// A ROLLING member whose earlier credits fell out of the window: their running total reaches the
/// second tier (20) at the batch's first item but their window does not until the fourth, so the
/// fourth is the upgrade's cause. Counting the total instead of the window, or skipping the
/// window's sum when it is needed, upgrades them at another item.
async fn window_in_batch(backend: Backend) {
    const DAY: i64 = 86_400_000;
    let Some(db) = test_db(backend).await else { return };
    let start = MIDNIGHT_MS - 3_600_000;
    db.store.create_config(values(&CONFIGS[0]), "model", start - 5 * DAY).await.unwrap();
    let tiered = CompanyId::parse(TIERED).unwrap();
    let scheme = TierScheme { window_days: Some(1), ..scheme(true) };
    db.store.put_tiers(&tiered, scheme, "model", start - 5 * DAY).await.unwrap();
    let item = |req| Item { company: 2, user: 0, event: 0, req, order: 0, amount: 0 };
    // 15 qualifying coins three days ago, one by one.
    for req in 10..13 {
        assert_eq!(
            outcome(db.store.allocate(vec![cmd(&item(req), start - 3 * DAY + req as i64)]).await.remove(0)),
            Outcome::Allocated(5, 5 * (req as i64 - 9))
        );
    }
    let batch: Vec<AllocateCmd> = (0..5).map(|req| cmd(&item(req), start + 1_000 * req as i64)).collect();
    let answers: Vec<Outcome> = db.store.allocate(batch).await.into_iter().map(outcome).collect();
    // ×1 up to the upgrade's cause, ×1.5 after it (5 base coins: 7.5, rounded as the plan rounds).
    let upgraded = plan_at_tier_t1();
    assert_eq!(
        answers,
        vec![
            Outcome::Allocated(5, 20),
            Outcome::Allocated(5, 25),
            Outcome::Allocated(5, 30),
            Outcome::Allocated(5, 35),
            Outcome::Allocated(upgraded, 35 + upgraded)
        ]
    );
    let history = db.store.tier_history(&tiered, &UserId::parse("U0").unwrap(), 10).await.unwrap();
    let changes: Vec<(&str, &str, Option<&str>, i64)> =
        history.iter().map(|h| (h.kind.as_str(), h.to.as_str(), h.request_id.as_deref(), h.qualifying)).collect();
    assert_eq!(changes, vec![("UPGRADED", "T1", Some("R3"), 20)]);
}

/// What E0 (5 coins) earns at T1 (×1.5), as the domain rounds it.
fn plan_at_tier_t1() -> i64 {
    let config = &config_values()[0];
    let value = CoinValue::builtin();
    let c = cmd(&Item { company: 2, user: 0, event: 0, req: 0, order: 0, amount: 0 }, MIDNIGHT_MS);
    let calc = calculation(&c, config.values.terms().unwrap(), &value).unwrap();
    plan_earning(&c, config, &value, &with_tier(&calc, Some(("T1", 15_000))), (None, Some(("T1", 15_000))), true).coins
}

/// Two companies with tier schemes, and a member of C3 at 15 qualifying coins. A batch holds an
/// item of theirs for C2 first (refused: they are C3's), then two of C3: the first reaches T1
/// (20) and the second earns at T1's ×1.5. The refused item must not make the round count the
/// member's running total from 0, which would decide the second C3 item in the same round at ×1.
async fn another_companys_item_first(backend: Backend) {
    let Some(db) = test_db(backend).await else { return };
    let start = MIDNIGHT_MS - 3_600_000;
    db.store.create_config(values(&CONFIGS[0]), "model", start - 1_000_000).await.unwrap();
    for company in ["C2", TIERED] {
        db.store.put_tiers(&CompanyId::parse(company).unwrap(), scheme(false), "model", start - 1_000_000).await.unwrap();
    }
    let item = |company, req| Item { company, user: 0, event: 0, req, order: 0, amount: 0 };
    for req in 10..13 {
        assert_eq!(
            outcome(db.store.allocate(vec![cmd(&item(2, req), start - 100_000 + req as i64)]).await.remove(0)),
            Outcome::Allocated(5, 5 * (req as i64 - 9))
        );
    }
    let batch = vec![cmd(&item(1, 0), start), cmd(&item(2, 1), start + 1_000), cmd(&item(2, 2), start + 2_000)];
    let answers: Vec<Outcome> = db.store.allocate(batch).await.into_iter().map(outcome).collect();
    let upgraded = plan_at_tier_t1();
    assert_eq!(answers, vec![Outcome::Refused("USER_COMPANY_MISMATCH"), Outcome::Allocated(5, 20), Outcome::Allocated(upgraded, 20 + upgraded)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_companys_item_first_in_a_batch_leaves_the_members_running_total_on_sqlite() {
    another_companys_item_first(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_companys_item_first_in_a_batch_leaves_the_members_running_total_on_postgres() {
    another_companys_item_first(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_member_counts_only_the_window_within_a_batch_on_sqlite() {
    window_in_batch(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_member_counts_only_the_window_within_a_batch_on_postgres() {
    window_in_batch(Backend::Postgres).await;
}
