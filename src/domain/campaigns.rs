//! Bonus campaigns: a company's limited-time offers ("double coins this weekend", "50 extra
//! coins on every purchase in December") that raise what allocations earn.
//!
//! A campaign has a window `[startsAt, endsAt)`, the events it applies to (all of the company's
//! when `null`), a reward — a multiplier in basis points or a fixed number of bonus coins — and
//! optionally a limit on how many of one user's allocations it applies to. The rules:
//! - The window is checked against the allocation's own time.
//! - At most one campaign applies to an allocation: the one that gives it the most coins, then
//!   the highest multiplier, then the newest. A campaign whose per-user limit is used up gives
//!   way to the next one.
//! - The reward is part of the same credit: held, expired and returned with the coins it came
//!   with, and recorded in the allocation's calculation.
//! - An allocation below the configuration's minimum spend gets no campaign (it earns nothing).
//! - A campaign can be edited and deleted until shortly before it starts ([`CHANGE_NOTICE_MS`]);
//!   after that only its end can be moved earlier (ending it early), and never to less than that
//!   notice from now. The notice is what every process needs to see a change (its cache of
//!   campaigns is read again at least every 4 s), so no allocation decided on the campaign as it
//!   was can fall outside the campaign as it is.

use super::earn::{BPS_ONE, Calculation, MULTIPLIER_BPS_MAX};
use super::{CompanyId, EventName};

pub use super::ids::CampaignId;

/// Longest name, in characters.
pub const NAME_CHARS_MAX: usize = 100;
/// Most events one campaign may name.
pub const EVENTS_MAX: usize = 50;
/// Largest fixed bonus (the largest configured `amount`).
pub const BONUS_COINS_MAX: i64 = 1_000_000_000;
/// Largest per-user trigger limit.
pub const TRIGGERS_MAX: i64 = 1_000_000;
/// Longest window: 366 days.
pub const WINDOW_MS_MAX: i64 = 366 * 24 * 3_600_000;
/// How long before it takes effect a change to a campaign must be made: longer than any process
/// may go on allocating with what it read before the change (the cache's 4 s).
pub const CHANGE_NOTICE_MS: i64 = 5_000;

/// What a campaign adds to an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reward {
    /// The allocation's coins multiplied (basis points, above 10,000).
    Multiplier(i64),
    /// A fixed number of coins on top.
    Bonus(i64),
}

impl Reward {
    pub fn multiplier_bps(self) -> Option<i64> {
        match self {
            Self::Multiplier(bps) => Some(bps),
            Self::Bonus(_) => None,
        }
    }

    pub fn bonus_coins(self) -> Option<i64> {
        match self {
            Self::Multiplier(_) => None,
            Self::Bonus(coins) => Some(coins),
        }
    }
}

/// Where a campaign stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Scheduled,
    Active,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Active => "ACTIVE",
            Self::Ended => "ENDED",
        }
    }
}

/// What a campaign is, as created or edited (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignTerms {
    pub name: String,
    /// `None`: every event of the company.
    pub events: Option<Vec<EventName>>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub reward: Reward,
    pub max_triggers_per_user: Option<i64>,
}

impl CampaignTerms {
    /// Checks what a request cannot check field by field: the window's order and length, the
    /// reward's range, the name. The error names the field.
    pub fn check(&self) -> Result<(), String> {
        let chars = self.name.chars().count();
        if chars == 0 || chars > NAME_CHARS_MAX || self.name.trim().is_empty() {
            return Err(format!("name must be 1 to {NAME_CHARS_MAX} characters, not only spaces"));
        }
        if let Some(events) = &self.events {
            if events.is_empty() || events.len() > EVENTS_MAX {
                return Err(format!("events must be null (every event) or a list of 1 to {EVENTS_MAX} event names"));
            }
            if let Some(e) = events.iter().enumerate().find_map(|(i, e)| events[..i].contains(e).then_some(e)) {
                return Err(format!("events repeats {e}"));
            }
        }
        if self.ends_at <= self.starts_at {
            return Err("endsAt must be after startsAt".into());
        }
        if self.ends_at - self.starts_at > WINDOW_MS_MAX {
            return Err("endsAt must be at most 366 days after startsAt".into());
        }
        match self.reward {
            Reward::Multiplier(bps) if !(BPS_ONE + 1..=MULTIPLIER_BPS_MAX).contains(&bps) => {
                Err(format!("multiplierBps must be a whole number from {} to {MULTIPLIER_BPS_MAX} (10000 is ×1)", BPS_ONE + 1))
            }
            Reward::Bonus(coins) if !(1..=BONUS_COINS_MAX).contains(&coins) => Err(format!("bonusCoins must be a whole number from 1 to {BONUS_COINS_MAX}")),
            _ => match self.max_triggers_per_user {
                Some(n) if !(1..=TRIGGERS_MAX).contains(&n) => Err(format!("maxTriggersPerUser must be null or a whole number from 1 to {TRIGGERS_MAX}")),
                _ => Ok(()),
            },
        }
    }

    /// Whether it names `event` (or every event).
    pub fn applies_to(&self, event: &EventName) -> bool {
        self.events.as_ref().is_none_or(|events| events.contains(event))
    }
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: CampaignId,
    pub company: CompanyId,
    pub terms: CampaignTerms,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Campaign {
    pub fn status(&self, now_ms: i64) -> Status {
        if now_ms < self.terms.starts_at {
            Status::Scheduled
        } else if now_ms < self.terms.ends_at {
            Status::Active
        } else {
            Status::Ended
        }
    }

    /// Whether it applies to an allocation of `event` at `at_ms` (its limit aside).
    pub fn applies(&self, event: &EventName, at_ms: i64) -> bool {
        self.status(at_ms) == Status::Active && self.terms.applies_to(event)
    }

    /// The calculation with this campaign's reward.
    pub fn on(&self, calc: &Calculation) -> Calculation {
        match self.terms.reward {
            Reward::Multiplier(bps) => Calculation { multiplier_bps: calc.multiplier_bps * bps / BPS_ONE, ..*calc },
            Reward::Bonus(coins) => Calculation { bonus_coins: coins, ..*calc },
        }
    }
}

/// A change to a campaign: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignPatch {
    pub name: Option<String>,
    pub events: Option<Option<Vec<EventName>>>,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub reward: Option<Reward>,
    pub max_triggers_per_user: Option<Option<i64>>,
}

impl CampaignPatch {
    /// Only `endsAt` is set.
    fn ends_only(&self) -> bool {
        *self == Self { ends_at: self.ends_at, ..Self::default() }
    }
}

/// Why a campaign change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRefused {
    /// It has started: only an earlier end (not before now) may be set, and it cannot be deleted.
    Started,
    /// The result is invalid; the sentence names the field.
    Invalid(String),
}

/// Whether the campaign is past changing freely at `now_ms`: started, or starting within the
/// notice.
fn settled(c: &Campaign, now_ms: i64) -> bool {
    now_ms >= c.terms.starts_at - CHANGE_NOTICE_MS
}

/// The terms after `patch`, as of `now_ms`. Until the notice before its start a campaign takes any
/// change (a new start not within the notice); after that, only `endsAt` moved earlier: ending it
/// early, at the soonest the notice from now (an earlier or past end is moved there).
pub fn patched(c: &Campaign, patch: &CampaignPatch, now_ms: i64) -> Result<CampaignTerms, ChangeRefused> {
    let old = &c.terms;
    if settled(c, now_ms) {
        let ends = patch.ends_at.filter(|_| patch.ends_only()).ok_or(ChangeRefused::Started)?;
        let soonest = now_ms + CHANGE_NOTICE_MS;
        if ends > old.ends_at || old.ends_at <= soonest {
            return Err(ChangeRefused::Started);
        }
        return Ok(CampaignTerms { ends_at: ends.max(soonest), ..old.clone() });
    }
    let terms = CampaignTerms {
        name: patch.name.clone().unwrap_or_else(|| old.name.clone()),
        events: patch.events.clone().unwrap_or_else(|| old.events.clone()),
        starts_at: patch.starts_at.unwrap_or(old.starts_at),
        ends_at: patch.ends_at.unwrap_or(old.ends_at),
        reward: patch.reward.unwrap_or(old.reward),
        max_triggers_per_user: patch.max_triggers_per_user.unwrap_or(old.max_triggers_per_user),
    };
    if patch.starts_at.is_some_and(|s| s < now_ms + CHANGE_NOTICE_MS) {
        return Err(ChangeRefused::Invalid("startsAt must be at least 5 seconds from now".into()));
    }
    terms.check().map_err(ChangeRefused::Invalid)?;
    Ok(terms)
}

/// Whether it may be deleted: only until the notice before its start (after that its
/// allocations may name it).
pub fn deletable(c: &Campaign, now_ms: i64) -> Result<(), ChangeRefused> {
    if settled(c, now_ms) { Err(ChangeRefused::Started) } else { Ok(()) }
}

/// The campaigns that apply to an allocation of `event` at `at_ms` earning by `calc`, best first:
/// the most coins, then the highest multiplier, then the newest. The allocation takes the first
/// whose per-user limit has room. None when it is below the minimum spend, and none that would
/// add nothing (a multiplier on a purchase too small to earn, or on coins the configuration's
/// `maxCoinsPerAllocation` caps anyway): a campaign that gives nothing uses no trigger.
pub fn ranked<'a>(campaigns: &'a [Campaign], event: &EventName, at_ms: i64, calc: &Calculation) -> Vec<&'a Campaign> {
    if calc.below_minimum() {
        return Vec::new();
    }
    let without = calc.earn().coins;
    let mut candidates: Vec<(i64, i64, i64, &Campaign)> = campaigns
        .iter()
        .filter(|c| c.applies(event, at_ms))
        .map(|c| (c.on(calc).earn().coins, c.terms.reward.multiplier_bps().unwrap_or(BPS_ONE), c.id.seq(), c))
        .filter(|(coins, ..)| *coins > without)
        .collect();
    candidates.sort_by_key(|&(coins, bps, seq, _)| std::cmp::Reverse((coins, bps, seq)));
    candidates.into_iter().map(|(.., c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::earn::EarnTerms;

    const DAY: i64 = 86_400_000;

    fn campaign(seq: i64, reward: Reward, events: Option<&[&str]>, limit: Option<i64>) -> Campaign {
        Campaign {
            id: CampaignId::from_seq(seq),
            company: CompanyId::parse("C").unwrap(),
            terms: CampaignTerms {
                name: format!("c{seq}"),
                events: events.map(|e| e.iter().map(|n| EventName::parse(n).unwrap()).collect()),
                starts_at: 10 * DAY,
                ends_at: 12 * DAY,
                reward,
                max_triggers_per_user: limit,
            },
            created_at: 0,
            updated_at: 0,
        }
    }

    fn fixed(amount: i64) -> Calculation {
        Calculation { terms: EarnTerms::fixed(amount), amount_minor: None, minor_units_per_coin: 1, multiplier_bps: BPS_ONE, bonus_coins: 0 }
    }

    fn event(name: &str) -> EventName {
        EventName::parse(name).unwrap()
    }

    #[test]
    fn a_campaign_applies_inside_its_window_to_its_events_only() {
        let c = campaign(1, Reward::Multiplier(20_000), Some(&["BUY"]), None);
        assert!(!c.applies(&event("BUY"), 10 * DAY - 1), "before the start");
        assert!(c.applies(&event("BUY"), 10 * DAY), "the start is inside");
        assert!(c.applies(&event("BUY"), 12 * DAY - 1));
        assert!(!c.applies(&event("BUY"), 12 * DAY), "the end is outside");
        assert!(!c.applies(&event("REFER"), 11 * DAY));
        assert!(campaign(2, Reward::Bonus(5), None, None).applies(&event("REFER"), 11 * DAY), "null events: every event");
        assert_eq!([c.status(0), c.status(11 * DAY), c.status(12 * DAY)], [Status::Scheduled, Status::Active, Status::Ended]);
    }

    #[test]
    fn the_campaign_giving_the_most_coins_wins_then_the_highest_multiplier_then_the_newest() {
        let double = campaign(1, Reward::Multiplier(20_000), None, None);
        let triple = campaign(2, Reward::Multiplier(30_000), None, None);
        let bonus = campaign(3, Reward::Bonus(25), None, None);
        let also_triple = campaign(4, Reward::Multiplier(30_000), None, None);
        let all = [double.clone(), triple.clone(), bonus.clone(), also_triple.clone()];
        let ids = |calc: &Calculation| ranked(&all, &event("E"), 11 * DAY, calc).iter().map(|c| c.id.seq()).collect::<Vec<_>>();
        // 10 coins: the bonus gives 35, more than ×3 (30); the two ×3 tie and the newer goes first.
        assert_eq!(ids(&fixed(10)), [3, 4, 2, 1]);
        // 20 coins: ×3 gives 60, more than the bonus (45) and ×2 (40).
        assert_eq!(ids(&fixed(20)), [4, 2, 3, 1]);
        assert_eq!(triple.on(&fixed(20)).earn().coins, 60);
        assert_eq!(bonus.on(&fixed(20)).earn(), crate::domain::earn::Earned { coins: 45, base_coins: 20, ..fixed(20).earn() });
        assert!(ranked(&all, &event("E"), 9 * DAY, &fixed(10)).is_empty(), "outside every window");
        let nothing = Calculation { terms: EarnTerms { rounding: crate::domain::earn::Rounding::Floor, ..EarnTerms::fixed(0) }, ..fixed(0) };
        assert_eq!(
            ranked(&all, &event("E"), 11 * DAY, &nothing).iter().map(|c| c.id.seq()).collect::<Vec<_>>(),
            [3],
            "a multiplier of nothing is not a campaign"
        );
    }

    #[test]
    fn a_purchase_below_the_minimum_gets_no_campaign() {
        let mut calc = fixed(10);
        calc.terms.min_amount_minor = Some(1_000);
        calc.amount_minor = Some(999);
        assert!(ranked(&[campaign(1, Reward::Bonus(50), None, None)], &event("E"), 11 * DAY, &calc).is_empty());
    }

    #[test]
    fn terms_are_checked_field_by_field() {
        let ok = campaign(1, Reward::Multiplier(20_000), Some(&["A"]), Some(3)).terms;
        assert_eq!(ok.check(), Ok(()));
        let bad = |f: &dyn Fn(&mut CampaignTerms)| {
            let mut t = ok.clone();
            f(&mut t);
            t.check().unwrap_err()
        };
        assert!(bad(&|t| t.name = " ".into()).starts_with("name"));
        assert!(bad(&|t| t.ends_at = t.starts_at).starts_with("endsAt must be after"));
        assert!(bad(&|t| t.ends_at = t.starts_at + WINDOW_MS_MAX + 1).starts_with("endsAt must be at most"));
        assert!(bad(&|t| t.reward = Reward::Multiplier(BPS_ONE)).starts_with("multiplierBps"));
        assert!(bad(&|t| t.reward = Reward::Bonus(0)).starts_with("bonusCoins"));
        assert!(bad(&|t| t.max_triggers_per_user = Some(0)).starts_with("maxTriggersPerUser"));
        assert_eq!(bad(&|t| t.events = Some(vec![event("A"), event("A")])), "events repeats A");
        assert!(bad(&|t| t.events = Some(vec![])).starts_with("events"));
    }

    #[test]
    fn before_its_start_anything_changes_after_it_only_an_earlier_end() {
        let c = campaign(1, Reward::Multiplier(20_000), None, None);
        let rename = CampaignPatch { name: Some("new".into()), ..CampaignPatch::default() };
        assert_eq!(patched(&c, &rename, 9 * DAY).unwrap().name, "new");
        assert_eq!(patched(&c, &rename, 10 * DAY - CHANGE_NOTICE_MS), Err(ChangeRefused::Started), "starting within the notice");
        let earlier = CampaignPatch { ends_at: Some(11 * DAY), ..CampaignPatch::default() };
        assert_eq!(patched(&c, &earlier, 10 * DAY + 5).unwrap().ends_at, 11 * DAY);
        let later = CampaignPatch { ends_at: Some(13 * DAY), ..CampaignPatch::default() };
        assert_eq!(patched(&c, &later, 10 * DAY), Err(ChangeRefused::Started));
        let now = 11 * DAY + 1;
        assert_eq!(patched(&c, &earlier, now).unwrap().ends_at, now + CHANGE_NOTICE_MS, "a past end ends it after the notice");
        assert_eq!(patched(&c, &earlier, 12 * DAY - CHANGE_NOTICE_MS), Err(ChangeRefused::Started), "ending within the notice anyway");
        assert_eq!(patched(&c, &earlier, 12 * DAY), Err(ChangeRefused::Started), "ended");
        let soon = CampaignPatch { starts_at: Some(9 * DAY + 1_000), ..CampaignPatch::default() };
        assert!(matches!(patched(&c, &soon, 9 * DAY), Err(ChangeRefused::Invalid(_))), "a new start within the notice");
        assert_eq!(deletable(&c, 9 * DAY), Ok(()));
        assert_eq!(deletable(&c, 10 * DAY - 1), Err(ChangeRefused::Started));
    }
}
