//! Allocation (SPEC §4, §5): the decision for one allocation from the rows fetched — replay or
//! conflict for a request id seen before, the user's company, the caps, overflow — and the plan
//! of what a new credit writes.

use super::config::{self, CoinConfig, ConfigValues};
use super::ledger::{Account, EntryKind, NewEntry, RequestKind, StoredRequest};
use super::refusal::{Cap, Refusal};
use super::{Coins, CompanyId, EventName, RequestId, UserId};

/// One allocation request, validated and authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateCmd {
    pub company: CompanyId,
    pub user: UserId,
    pub event: EventName,
    pub request_id: RequestId,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocateOk {
    /// Newly credited; durable once the caller sees it.
    Allocated { coins: Coins, balance: Coins, entry_id: i64 },
    /// The same request was applied before; nothing was credited now.
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

/// The lot a credit opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLot {
    pub coins: i64,
    pub expires_at: Option<i64>,
}

/// What a new allocation writes: its entry, its lot, and the user's new balance (a new account
/// if the user was never credited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPlan {
    pub entry: NewEntry,
    pub lot: NewLot,
    pub balance: Coins,
    pub new_account: bool,
}

/// Decides a new allocation: the user must belong to the company (or be new), every cap must
/// have room (`counts[i]` is the count for `cap_windows(..)[i]`), and the balance must not
/// overflow. Refused: nothing is written.
pub fn plan_credit(cmd: &AllocateCmd, config: &CoinConfig, account: Option<&Account>, counts: &[i64]) -> Result<CreditPlan, Refusal> {
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
    let amount = config.values.amount;
    let old = account.map_or(Coins::ZERO, |a| a.balance);
    let balance = old.checked_add(amount).ok_or_else(|| Refusal::BalanceOverflow(cmd.user.clone()))?;
    let expires_at = config::expiry_for(cmd.now_ms, config.values.validity_days);
    Ok(CreditPlan {
        entry: NewEntry {
            kind: EntryKind::Allocate,
            coins: amount.get(),
            balance_after: balance.get(),
            event: Some(cmd.event.to_string()),
            request_id: Some(cmd.request_id.clone()),
            coin_config_id: Some(config.id.to_string()),
            expires_at,
        },
        lot: NewLot { coins: amount.get(), expires_at },
        balance,
        new_account: account.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CoinConfigId;
    use crate::domain::config::{ConfigKind, DAY_MS};

    fn cmd(user: &str) -> AllocateCmd {
        AllocateCmd {
            company: CompanyId::parse("C").unwrap(),
            user: UserId::parse(user).unwrap(),
            event: EventName::parse("E").unwrap(),
            request_id: RequestId::parse("R").unwrap(),
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
                amount: Coins::amount(amount).unwrap(),
                validity_days: Some(2),
                max_per_user_per_day: day,
                max_per_user: ever,
                active: true,
            },
            version: 1,
        }
    }

    #[test]
    fn a_new_user_gets_an_account_a_lot_and_an_entry() {
        let plan = plan_credit(&cmd("U"), &config(5, None, None), None, &[]).unwrap();
        assert!(plan.new_account);
        assert_eq!(plan.balance.get(), 5);
        assert_eq!(plan.lot, NewLot { coins: 5, expires_at: Some(12 * DAY_MS + 5) });
        assert_eq!(plan.entry.coin_config_id.as_deref(), Some("WCC100001"));
    }

    #[test]
    fn another_companys_user_caps_and_overflow_are_refused() {
        let other = Account { company: CompanyId::parse("D").unwrap(), balance: Coins::ZERO };
        assert!(matches!(plan_credit(&cmd("U"), &config(5, None, None), Some(&other), &[]), Err(Refusal::UserCompanyMismatch { .. })));
        let c = config(5, Some(2), Some(3));
        let windows = cap_windows(&c.values, cmd("U").now_ms);
        assert_eq!(windows.iter().map(|w| (w.cap, w.since_ms)).collect::<Vec<_>>(), [(Cap::PerDay, 10 * DAY_MS), (Cap::Ever, i64::MIN)]);
        assert!(plan_credit(&cmd("U"), &c, None, &[1, 2]).is_ok());
        assert!(matches!(plan_credit(&cmd("U"), &c, None, &[2, 2]), Err(Refusal::LimitReached { cap: Cap::PerDay, limit: 2, .. })));
        assert!(matches!(plan_credit(&cmd("U"), &c, None, &[0, 3]), Err(Refusal::LimitReached { cap: Cap::Ever, limit: 3, .. })));
        let rich = Account { company: CompanyId::parse("C").unwrap(), balance: Coins::from_stored(i64::MAX - 4) };
        assert!(matches!(plan_credit(&cmd("U"), &config(5, None, None), Some(&rich), &[]), Err(Refusal::BalanceOverflow(_))));
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
        };
        assert_eq!(answer_repeat(Some(&stored), &c), Ok(AllocateOk::Replayed { coins: Coins::from_stored(7) }));
        assert!(matches!(answer_repeat(Some(&stored), &cmd("V")), Err(Refusal::RequestIdConflict(_))));
        assert!(matches!(answer_repeat(None, &c), Err(Refusal::ConfigNotFound { .. })));
    }
}
