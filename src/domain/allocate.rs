//! Allocation: the decision for one allocation from the rows fetched — what it earns (fixed or on
//! the purchase value), replay or conflict for a request id or order id seen before, the user's
//! company, the caps, overflow — and the plan of what a new credit writes, with its record.

use super::allocation::{self, AllocationState};
use super::campaigns::{Campaign, CampaignId};
use super::config::{self, CoinConfig, ConfigValues};
use super::earn::{BPS_ONE, Calculation, CalculationRecord, EarnRule, EarnTerms, Earned, ZeroReason};
use super::ledger::{Account, EntryKind, NewEntry, RequestKind, StoredRequest};
use super::lots;
use super::redeem::CoinValue;
use super::refusal::{Cap, Refusal};
use super::{Coins, CompanyId, EventName, OrderId, RequestId, UserId};

/// What an allocation says about the purchase, beyond EnKash's four fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purchase {
    /// The business's key for the purchase (one live allocation per company, event and order).
    pub order_id: Option<OrderId>,
    /// The purchase value to earn on, in minor units of the company's coin-value currency.
    pub amount_minor: Option<i64>,
    /// When given, it must be the company's currency.
    pub currency: Option<String>,
}

/// One allocation request, validated and authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateCmd {
    pub company: CompanyId,
    pub user: UserId,
    pub event: EventName,
    pub request_id: RequestId,
    pub purchase: Purchase,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocateOk {
    /// Newly credited; durable once the caller sees it.
    Allocated { coins: Coins, balance: i64, entry_id: i64 },
    /// Recorded, earning nothing (below the minimum spend, or rounded to 0): no entry, no credit.
    Zero,
    /// The same request (or, by order id, the same purchase) was applied before; nothing was
    /// credited now.
    Replayed { coins: Coins },
}

/// The answer for a request id that could not be claimed, or for an allocation with no active
/// configuration: the stored allocation if it is the same one (a replay answers even after its
/// configuration was deactivated), a conflict if the id was used otherwise, else no configuration.
pub fn answer_repeat(prev: Option<&StoredRequest>, cmd: &AllocateCmd) -> Result<AllocateOk, Refusal> {
    match prev {
        Some(p) if p.kind == RequestKind::Allocate && p.user == cmd.user && p.event.as_deref() == Some(cmd.event.as_str()) => {
            Ok(AllocateOk::Replayed { coins: Coins::from_stored(p.coins) })
        }
        Some(_) => Err(Refusal::RequestIdConflict(cmd.request_id.clone())),
        None => Err(Refusal::ConfigNotFound { company: cmd.company.clone(), event: cmd.event.clone() }),
    }
}

/// A cap to check: count the user's allocations of the event since `since_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapWindow {
    pub cap: Cap,
    pub limit: i64,
    pub since_ms: i64,
}

/// The allocation counts a configuration's caps need, per-day first: the backend fetches one
/// count per window and hands them to [`plan_credit`] in the same order.
pub fn cap_windows(values: &ConfigValues, now_ms: i64) -> Vec<CapWindow> {
    let day = values.max_per_user_per_day.map(|limit| CapWindow { cap: Cap::PerDay, limit, since_ms: config::utc_day_start(now_ms) });
    let ever = values.max_per_user.map(|limit| CapWindow { cap: Cap::Ever, limit, since_ms: i64::MIN });
    day.into_iter().chain(ever).collect()
}

/// The lot a credit opens. A held lot (`pending_until`) is not spendable until then, and its
/// `expires_at` is provisional: `validityDays` after `pending_until`, moved if it activates early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLot {
    pub coins: i64,
    pub expires_at: Option<i64>,
    pub pending_until: Option<i64>,
}

/// The record an allocation keeps on its request row, for every allocation beyond the EnKash
/// fields (an order id, a purchase value, a percentage, a cap that bit, zero coins). A plain
/// allocation writes none: its record is read from its ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFields {
    pub order_id: Option<OrderId>,
    pub state: AllocationState,
    pub zero_reason: Option<ZeroReason>,
    pub coin_config_id: String,
    pub base_coins: i64,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    /// JSON ([`CalculationRecord`]).
    pub calculation: String,
    /// The bonus campaign that applied.
    pub campaign_id: Option<CampaignId>,
    /// That campaign has a per-user trigger limit, which counts this allocation (fixed before
    /// the campaign starts, so it never changes for an allocation made under it).
    pub campaign_limited: bool,
    /// Held credits: when they become spendable (their expiry is known only then).
    pub activates_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl RecordFields {
    /// The stored mark of an allocation a campaign's per-user limit counts: `Some(true)` for one,
    /// NULL for every other, so the index of such allocations by member (its condition is the
    /// mark) holds only them.
    pub fn campaign_limited_mark(&self) -> Option<bool> {
        (self.campaign_id.is_some() && self.campaign_limited).then_some(true)
    }
}

/// What an allocation earns, decided before its claim (it depends on nothing the claim guards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarnPlan {
    pub coins: i64,
    /// `None` for a plain allocation.
    pub record: Option<RecordFields>,
}

impl EarnPlan {
    /// When a held credit becomes spendable; `None`: at once.
    pub fn held_until(&self) -> Option<i64> {
        self.record.as_ref().and_then(|r| r.activates_at)
    }

    /// When the credit's lot expires: `validityDays` after it becomes spendable (a held credit's
    /// clock starts when it activates).
    pub fn lot_expiry(&self, now_ms: i64, config: &CoinConfig) -> Option<i64> {
        config::expiry_for(self.held_until().unwrap_or(now_ms), config.values.validity_days)
    }
}

/// A plain allocation: EnKash's fields only, under a configuration that credits a fixed amount at
/// once and nothing else. It keeps no record of its own (its ledger entry says everything), and on
/// PostgreSQL it is decided set-based with the rest of its batch (`coins_allocate_set`).
pub fn is_plain(purchase: &Purchase, values: &ConfigValues, terms: &EarnTerms) -> bool {
    *purchase == Purchase::default()
        && values.earning.pending_days.is_none()
        && matches!(terms.rule, EarnRule::Fixed { amount } if *terms == EarnTerms::fixed(amount))
}

/// How this allocation earns before any campaign: the configuration's terms on the purchase
/// value at the company's coin value. PERCENT (and a minimum spend) need `amountMinor`; a
/// `currency`, when given, must be the company's.
pub fn calculation(cmd: &AllocateCmd, terms: EarnTerms, value: &CoinValue) -> Result<Calculation, Refusal> {
    let purchase = &cmd.purchase;
    if terms.needs_amount() && purchase.amount_minor.is_none() {
        return Err(Refusal::AmountMinorRequired(cmd.event.clone()));
    }
    if let Some(currency) = purchase.currency.as_ref().filter(|c| **c != value.currency) {
        return Err(Refusal::CurrencyMismatch { given: currency.clone(), expected: value.currency.clone() });
    }
    Ok(Calculation { terms, amount_minor: purchase.amount_minor, minor_units_per_coin: value.minor_units_per_coin, multiplier_bps: BPS_ONE, bonus_coins: 0 })
}

/// The calculation at a member's tier multiplier (`tier`: its code and basis points; `None`: ×1).
/// A campaign's multiplier applies on top of it.
pub fn with_tier(calculation: &Calculation, tier: Option<(&str, i64)>) -> Calculation {
    match tier {
        Some((_, bps)) => Calculation { multiplier_bps: calculation.multiplier_bps * bps / BPS_ONE, ..*calculation },
        None => *calculation,
    }
}

/// What the allocation earns by `calculation` (already at the member's tier multiplier, which
/// `tier` names) under `campaign`. It keeps a record unless it is plain; `keeps_record` (a
/// campaign or a tier may apply to it) makes it keep one too.
pub fn plan_earning(
    cmd: &AllocateCmd,
    config: &CoinConfig,
    value: &CoinValue,
    calculation: &Calculation,
    (campaign, tier): (Option<&Campaign>, Option<(&str, i64)>),
    keeps_record: bool,
) -> EarnPlan {
    let calculation = campaign.map_or(*calculation, |c| c.on(calculation));
    let earned = calculation.earn();
    let expires_at = config::expiry_for(cmd.now_ms, config.values.validity_days);
    let plain = is_plain(&cmd.purchase, &config.values, &calculation.terms) && !keeps_record;
    let record = (!plain).then(|| record_of(cmd, config, &calculation, &earned, (value, campaign, tier), expires_at));
    EarnPlan { coins: earned.coins, record }
}

fn record_of(
    cmd: &AllocateCmd,
    config: &CoinConfig,
    calculation: &Calculation,
    earned: &Earned,
    (value, campaign, tier): (&CoinValue, Option<&Campaign>, Option<(&str, i64)>),
    expires_at: Option<i64>,
) -> RecordFields {
    let zero = earned.coins == 0;
    let activates_at = if zero { None } else { allocation::activates_at(cmd.now_ms, config.values.earning.pending_days) };
    let state = match (zero, activates_at) {
        (true, _) => AllocationState::Zero,
        (false, Some(_)) => AllocationState::Pending,
        (false, None) => AllocationState::Active,
    };
    RecordFields {
        order_id: cmd.purchase.order_id.clone(),
        state,
        zero_reason: earned.zero,
        coin_config_id: config.id.to_string(),
        base_coins: earned.base_coins,
        amount_minor: cmd.purchase.amount_minor,
        currency: cmd.purchase.amount_minor.map(|_| value.currency.clone()),
        calculation: CalculationRecord {
            campaign_id: campaign.map(|c| c.id.to_string()),
            campaign_bps: campaign.and_then(|c| c.terms.reward.multiplier_bps()),
            campaign_bonus_coins: campaign.and_then(|c| c.terms.reward.bonus_coins()),
            tier_code: tier.map(|(code, _)| code.to_owned()),
            tier_bps: tier.map(|(_, bps)| bps),
            ..CalculationRecord::of(calculation, earned)
        }
        .to_json(),
        campaign_id: campaign.map(|c| c.id),
        campaign_limited: campaign.is_some_and(|c| c.terms.max_triggers_per_user.is_some()),
        activates_at,
        activated_at: (state == AllocationState::Active).then_some(cmd.now_ms),
        expires_at: if state == AllocationState::Active { expires_at } else { None },
    }
}

/// What a new allocation writes: its entry and lot (none when it earned nothing), and the user's
/// balance after it (a new account if the user was never credited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPlan {
    pub entry: Option<NewEntry>,
    /// None when it earned nothing, or when its every coin paid debt.
    pub lot: Option<NewLot>,
    pub balance: i64,
    /// The user's held coins after it.
    pub pending: i64,
    pub new_account: bool,
}

/// Decides a new allocation that earns `earn`: the user must belong to the company (or be new),
/// every cap must have room (`counts[i]` is the count for `cap_windows(..)[i]`), and the balance
/// must not overflow. Refused: nothing is written.
pub fn plan_credit(cmd: &AllocateCmd, earn: &EarnPlan, config: &CoinConfig, account: Option<&Account>, counts: &[i64]) -> Result<CreditPlan, Refusal> {
    if account.is_some_and(|a| a.company != cmd.company) {
        return Err(Refusal::UserCompanyMismatch { user: cmd.user.clone(), company: cmd.company.clone() });
    }
    for (window, &count) in cap_windows(&config.values, cmd.now_ms).iter().zip(counts) {
        if count >= window.limit {
            return Err(Refusal::LimitReached {
                cap: window.cap,
                limit: window.limit,
                user: cmd.user.clone(),
                event: cmd.event.clone(),
                company: cmd.company.clone(),
            });
        }
    }
    let old = account.map_or(0, |a| a.balance);
    let held = account.map_or(0, |a| a.pending);
    // Earning nothing still makes the user the company's (as any allocation does).
    if earn.coins == 0 {
        return Ok(CreditPlan { entry: None, lot: None, balance: old, pending: held, new_account: account.is_none() });
    }
    // A held credit goes to the pending balance; its expiry clock starts when it activates.
    let pending_until = earn.held_until();
    let (coins, pending_coins) = if pending_until.is_some() { (0, earn.coins) } else { (earn.coins, 0) };
    let balance = old.checked_add(coins).ok_or_else(|| Refusal::BalanceOverflow(cmd.user.clone()))?;
    let pending = held.checked_add(pending_coins).ok_or_else(|| Refusal::BalanceOverflow(cmd.user.clone()))?;
    let expires_at = earn.lot_expiry(cmd.now_ms, config);
    Ok(CreditPlan {
        entry: Some(NewEntry {
            kind: EntryKind::Allocate,
            coins,
            balance_after: balance,
            event: Some(cmd.event.to_string()),
            request_id: Some(cmd.request_id.clone()),
            coin_config_id: Some(config.id.to_string()),
            expires_at,
            order_id: cmd.purchase.order_id.as_ref().map(ToString::to_string),
            amount_minor: cmd.purchase.amount_minor,
            original_request_id: None,
            pending_coins,
            pending_after: pending,
            effective_at: None,
            reason: None,
            client_id: None,
        }),
        // A spendable credit pays the user's debt first; a held one, when it activates.
        lot: Some(earn.coins - coins + lots::kept_after_debt(old, coins)).filter(|n| *n > 0).map(|coins| NewLot { coins, expires_at, pending_until }),
        balance,
        pending,
        new_account: account.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CoinConfigId;
    use crate::domain::config::{ConfigKind, DAY_MS, Earning};
    use crate::domain::earn::{AmountType, Rounding};

    fn cmd(user: &str) -> AllocateCmd {
        AllocateCmd {
            company: CompanyId::parse("C").unwrap(),
            user: UserId::parse(user).unwrap(),
            event: EventName::parse("E").unwrap(),
            request_id: RequestId::parse("R").unwrap(),
            purchase: Purchase::default(),
            now_ms: 10 * DAY_MS + 5,
        }
    }

    fn config(amount: i64, day: Option<i64>, ever: Option<i64>) -> CoinConfig {
        CoinConfig {
            id: CoinConfigId::from_seq(1),
            values: ConfigValues {
                kind: ConfigKind::Default,
                company_id: CompanyId::parse("C").unwrap(),
                event: EventName::parse("E").unwrap(),
                amount: Coins::amount(amount),
                earning: Earning::default(),
                validity_days: Some(2),
                max_per_user_per_day: day,
                max_per_user: ever,
                active: true,
            },
            version: 1,
        }
    }

    fn percent(rate_bps: i64, min: Option<i64>) -> CoinConfig {
        let mut c = config(1, None, None);
        c.values.amount = None;
        c.values.earning = Earning { amount_type: AmountType::Percent, rate_bps: Some(rate_bps), min_amount_minor: min, ..Earning::default() };
        c
    }

    fn earn(cmd: &AllocateCmd, c: &CoinConfig) -> Result<EarnPlan, Refusal> {
        let value = CoinValue::builtin();
        let calc = calculation(cmd, c.values.terms().unwrap(), &value)?;
        Ok(plan_earning(cmd, c, &value, &calc, (None, None), false))
    }

    #[test]
    fn a_new_user_gets_an_account_a_lot_and_an_entry() {
        let c = config(5, None, None);
        let e = earn(&cmd("U"), &c).unwrap();
        assert_eq!(e, EarnPlan { coins: 5, record: None }, "a plain allocation keeps no record of its own");
        let plan = plan_credit(&cmd("U"), &e, &c, None, &[]).unwrap();
        assert!(plan.new_account);
        assert_eq!(plan.balance, 5);
        assert_eq!(plan.lot, Some(NewLot { coins: 5, expires_at: Some(12 * DAY_MS + 5), pending_until: None }));
        assert_eq!(plan.entry.unwrap().coin_config_id.as_deref(), Some("WCC100001"));
    }

    #[test]
    fn a_credit_pays_debt_first_and_keeps_the_rest_in_its_lot() {
        let c = config(5, None, None);
        let e = earn(&cmd("U"), &c).unwrap();
        let owing = |balance| Account { company: CompanyId::parse("C").unwrap(), balance, pending: 0 };
        let plan = plan_credit(&cmd("U"), &e, &c, Some(&owing(-3)), &[]).unwrap();
        assert_eq!((plan.balance, plan.lot.map(|l| l.coins), plan.entry.map(|e| e.coins)), (2, Some(2), Some(5)));
        let plan = plan_credit(&cmd("U"), &e, &c, Some(&owing(-5)), &[]).unwrap();
        assert_eq!((plan.balance, plan.lot, plan.entry.map(|e| e.coins)), (0, None, Some(5)), "every coin paid debt: no lot");
        let plan = plan_credit(&cmd("U"), &e, &c, Some(&owing(-9)), &[]).unwrap();
        assert_eq!((plan.balance, plan.lot), (-4, None));
    }

    #[test]
    fn another_companys_user_caps_and_overflow_are_refused() {
        let other = Account { company: CompanyId::parse("D").unwrap(), balance: 0, pending: 0 };
        let c5 = config(5, None, None);
        let e5 = earn(&cmd("U"), &c5).unwrap();
        assert!(matches!(plan_credit(&cmd("U"), &e5, &c5, Some(&other), &[]), Err(Refusal::UserCompanyMismatch { .. })));
        let c = config(5, Some(2), Some(3));
        let windows = cap_windows(&c.values, cmd("U").now_ms);
        assert_eq!(windows.iter().map(|w| (w.cap, w.since_ms)).collect::<Vec<_>>(), [(Cap::PerDay, 10 * DAY_MS), (Cap::Ever, i64::MIN)]);
        assert!(plan_credit(&cmd("U"), &e5, &c, None, &[1, 2]).is_ok());
        assert!(matches!(plan_credit(&cmd("U"), &e5, &c, None, &[2, 2]), Err(Refusal::LimitReached { cap: Cap::PerDay, limit: 2, .. })));
        assert!(matches!(plan_credit(&cmd("U"), &e5, &c, None, &[0, 3]), Err(Refusal::LimitReached { cap: Cap::Ever, limit: 3, .. })));
        let rich = Account { company: CompanyId::parse("C").unwrap(), balance: i64::MAX - 4, pending: 0 };
        assert!(matches!(plan_credit(&cmd("U"), &e5, &c5, Some(&rich), &[]), Err(Refusal::BalanceOverflow(_))));
    }

    #[test]
    fn a_repeated_request_id_replays_only_the_same_allocation() {
        let c = cmd("U");
        let stored = StoredRequest {
            kind: RequestKind::Allocate,
            user: c.user.clone(),
            event: Some("E".into()),
            coins: 7,
            fingerprint: String::new(),
            original: None,
            response: None,
            alias_of: None,
            state: None,
        };
        assert_eq!(answer_repeat(Some(&stored), &c), Ok(AllocateOk::Replayed { coins: Coins::from_stored(7) }));
        assert!(matches!(answer_repeat(Some(&stored), &cmd("V")), Err(Refusal::RequestIdConflict(_))));
        assert!(matches!(answer_repeat(None, &c), Err(Refusal::ConfigNotFound { .. })));
    }

    #[test]
    fn a_percentage_needs_the_purchase_value_in_the_companys_currency() {
        let c = percent(200, None);
        assert_eq!(earn(&cmd("U"), &c), Err(Refusal::AmountMinorRequired(EventName::parse("E").unwrap())));
        let mut with_amount = cmd("U");
        with_amount.purchase = Purchase { order_id: None, amount_minor: Some(49_999), currency: Some("USD".into()) };
        assert!(matches!(earn(&with_amount, &c), Err(Refusal::CurrencyMismatch { .. })));
        with_amount.purchase.currency = Some("INR".into());
        let e = earn(&with_amount, &c).unwrap();
        let record = e.record.expect("a percentage is recorded");
        assert_eq!((e.coins, record.state, record.base_coins, record.currency.as_deref()), (9, AllocationState::Active, 9, Some("INR")));
        assert!(record.calculation.contains(r#""exact":"9.9998""#), "{}", record.calculation);
    }

    #[test]
    fn earning_nothing_is_recorded_and_credits_nothing() {
        let c = percent(200, Some(10_000));
        let mut small = cmd("U");
        small.purchase.amount_minor = Some(9_999);
        let e = earn(&small, &c).unwrap();
        let record = e.record.clone().unwrap();
        assert_eq!((e.coins, record.state, record.zero_reason, record.activated_at), (0, AllocationState::Zero, Some(ZeroReason::BelowMinimum), None));
        let plan = plan_credit(&small, &e, &c, None, &[]).unwrap();
        assert_eq!((plan.entry, plan.lot, plan.new_account), (None, None, true));
        let mut rounding = percent(1, None);
        rounding.values.earning.rounding = Rounding::Floor;
        small.purchase.amount_minor = Some(5);
        assert_eq!(earn(&small, &rounding).unwrap().record.unwrap().zero_reason, Some(ZeroReason::RoundedToZero));
    }

    #[test]
    fn an_order_id_or_a_purchase_value_makes_a_fixed_allocation_keep_its_record() {
        let c = config(50, None, None);
        let mut ordered = cmd("U");
        ordered.purchase.order_id = Some(OrderId::parse("O1").unwrap());
        let record = earn(&ordered, &c).unwrap().record.unwrap();
        assert_eq!((record.order_id.as_ref().map(OrderId::as_str), record.amount_minor, record.currency), (Some("O1"), None, None));
        assert_eq!(record.expires_at, Some(12 * DAY_MS + 5));
    }
}
