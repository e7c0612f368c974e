//! Status tiers: a company's levels ("Silver", "Gold") that members reach by earning, and that
//! raise what they earn.
//!
//! A company has at most one tier scheme: its tiers with their thresholds and multipliers, the
//! basis qualifying coins are counted on, how long a tier is kept, and what happens when it is up.
//! The rules:
//! - **Qualifying coins** are the base coins (before any tier or campaign multiplier) of the
//!   member's allocations once they are spendable, less the share of them later canceled, returned
//!   or waived ([`qualifying_of`]), plus staff adjustments made with `qualifying: true`. Redeeming
//!   and expiry never lower them; held (pending) coins count from their activation. On the
//!   `ROLLING` basis only coins activated in the last `windowDays` count, in whole UTC days: the
//!   current day and the `windowDays - 1` before it ([`TierScheme::window_start`]; a return counts
//!   on its allocation's activation day, so it never lowers a window its allocation is not in).
//!   Counting by day is what lets the store keep one row per member and day instead of one per
//!   credit, and it is how members read "the last 365 days".
//! - **Upgrade at once**: the transaction that raises a member's qualifying coins places them in
//!   the highest tier reached. The allocation that causes the upgrade earns at the old multiplier;
//!   the next one at the new.
//! - **Retention**: a tier entered above the first is kept `retentionDays` (`tierExpiresAt`);
//!   then the sweeper renews it if the qualifying coins still reach it, or downgrades by the
//!   scheme's policy (`ONE_DOWN`, `TO_QUALIFYING`; `NEVER` keeps every tier for good, with no
//!   `tierExpiresAt`). Without `retentionDays` a tier is kept until the policy's next evaluation,
//!   which never comes: tiers are then for good as well.
//! - **Returns**: returning the allocation that caused the upgrade places the member again at
//!   once, by their qualifying coins then (a buy-to-upgrade-then-return loses the tier at once);
//!   other returns lower the qualifying coins and count at the next evaluation.
//! - **Manual floors**: staff may set a tier a member never falls below, with a reason.
//! - Every change is reported as `tier.upgraded`, `tier.downgraded` or `tier.renewed`.

use serde::{Deserialize, Serialize};

use super::earn::BPS_ONE;

/// Most tiers in a scheme.
pub const TIERS_MAX: usize = 20;
/// Smallest and largest earning multiplier of a tier (×1 to ×10).
pub const TIER_BPS_MIN: i64 = BPS_ONE;
pub const TIER_BPS_MAX: i64 = 100_000;
/// Largest threshold, in qualifying coins.
pub const THRESHOLD_MAX: i64 = 1_000_000_000_000;
/// Longest window and retention, in days (ten years).
pub const DAYS_MAX: i64 = 3_650;
/// Longest tier code and name.
pub const CODE_CHARS_MAX: usize = 32;
pub const NAME_CHARS_MAX: usize = 100;
/// Most characters in a manual floor's reason.
pub const REASON_CHARS_MAX: usize = 500;

const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since 1970-01-01) qualifying coins earned at `at_ms` are counted on: a
/// rolling scheme keeps a member's qualifying coins as one sum per day.
pub fn qualifying_day(at_ms: i64) -> i64 {
    at_ms.div_euclid(DAY_MS)
}

/// What qualifying coins are counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Basis {
    /// Every qualifying coin ever.
    Lifetime,
    /// Coins activated in the last `windowDays` UTC days, today included.
    Rolling,
}

/// What happens at `tierExpiresAt` when the qualifying coins no longer reach the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Downgrade {
    /// One tier down (and again a retention later, if still short).
    OneDown,
    /// Straight to the tier the qualifying coins reach.
    ToQualifying,
    /// Never: a tier reached is kept for good.
    Never,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lifetime => "LIFETIME",
            Self::Rolling => "ROLLING",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Lifetime, Self::Rolling].into_iter().find(|b| b.as_str() == s)
    }
}

impl Downgrade {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneDown => "ONE_DOWN",
            Self::ToQualifying => "TO_QUALIFYING",
            Self::Never => "NEVER",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::OneDown, Self::ToQualifying, Self::Never].into_iter().find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tier {
    pub code: String,
    pub name: String,
    /// Qualifying coins needed; the first tier's is 0.
    pub threshold: i64,
    pub earn_multiplier_bps: i64,
}

/// A company's tier scheme, as configured (and stored, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierScheme {
    pub basis: Basis,
    pub window_days: Option<i64>,
    pub retention_days: Option<i64>,
    pub downgrade: Downgrade,
    pub tiers: Vec<Tier>,
}

/// Whether a tier code is well-formed: 1 to 32 of `A-Z a-z 0-9 _ -`.
pub fn code_is_valid(code: &str) -> bool {
    (1..=CODE_CHARS_MAX).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl TierScheme {
    /// The rules a scheme must satisfy; the message names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.tiers.is_empty() || self.tiers.len() > TIERS_MAX {
            return Err(format!("tiers must have 1 to {TIERS_MAX} tiers"));
        }
        match (self.basis, self.window_days) {
            (Basis::Rolling, Some(d)) if (1..=DAYS_MAX).contains(&d) => {}
            (Basis::Rolling, _) => return Err(format!("windowDays is required with basis ROLLING: 1 to {DAYS_MAX}")),
            (Basis::Lifetime, Some(_)) => return Err("windowDays applies to basis ROLLING only".into()),
            (Basis::Lifetime, None) => {}
        }
        if self.retention_days.is_some_and(|d| !(1..=DAYS_MAX).contains(&d)) {
            return Err(format!("retentionDays must be 1 to {DAYS_MAX}, or null to keep tiers for good"));
        }
        if self.tiers[0].threshold != 0 {
            return Err("the first tier's threshold must be 0".into());
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if !code_is_valid(&t.code) {
                return Err(format!("tiers[{i}].code must be 1 to {CODE_CHARS_MAX} characters from A-Z a-z 0-9 _ -"));
            }
            if self.tiers[..i].iter().any(|o| o.code == t.code) {
                return Err(format!("tiers[{i}].code {} is used twice", t.code));
            }
            if !(TIER_BPS_MIN..=TIER_BPS_MAX).contains(&t.earn_multiplier_bps) {
                return Err(format!("tiers[{i}].earnMultiplierBps must be {TIER_BPS_MIN} to {TIER_BPS_MAX}"));
            }
            if !(0..=THRESHOLD_MAX).contains(&t.threshold) || (i > 0 && t.threshold <= self.tiers[i - 1].threshold) {
                return Err(format!("tiers[{i}].threshold must be greater than the tier before it (at most {THRESHOLD_MAX})"));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// Whether qualifying coins are kept by day as well (a rolling window needs them; a lifetime
    /// count needs only the running total).
    pub fn dated(&self) -> bool {
        self.basis == Basis::Rolling
    }

    /// Qualifying coins count from this instant on (`None`: ever): the start of the UTC day
    /// `windowDays - 1` days before `now_ms`'s, so the window is whole days, today included, and a
    /// credit leaves it at a midnight. Always the start of a day: what is counted by
    /// [`qualifying_day`] and what is counted by instant agree.
    pub fn window_start(&self, now_ms: i64) -> Option<i64> {
        match self.basis {
            Basis::Lifetime => None,
            Basis::Rolling => Some((qualifying_day(now_ms) - self.window_days.unwrap_or(DAYS_MAX) + 1) * DAY_MS),
        }
    }

    /// The index of a tier code; `None` for no code (a member never placed: the first tier) too.
    pub fn index_of(&self, code: Option<&str>) -> Option<usize> {
        code.map_or(Some(0), |c| self.tiers.iter().position(|t| t.code == c))
    }

    /// The highest tier `qualifying` coins reach.
    pub fn reached(&self, qualifying: i64) -> usize {
        self.tiers.iter().rposition(|t| t.threshold <= qualifying).unwrap_or(0)
    }

    /// The tier a member is in: their placement, or their floor if higher.
    pub fn current(&self, state: &TierState) -> usize {
        let placed = self.index_of(state.code.as_deref()).unwrap_or(0);
        placed.max(self.floor(state))
    }

    fn floor(&self, state: &TierState) -> usize {
        state.floor.as_deref().and_then(|f| self.index_of(Some(f))).unwrap_or(0)
    }

    /// Whether a member whose running total of qualifying coins is `total` may reach a tier above
    /// theirs. A rolling window never counts more than the running total (each day's sum is its
    /// credits less what was returned of them, never below nothing), so when this is false their
    /// window need not be counted: it upgrades no one.
    pub fn may_upgrade(&self, state: &TierState, total: i64) -> bool {
        self.reached(total) > self.current(state)
    }

    /// The multiplier a member's allocations earn at.
    pub fn multiplier_bps(&self, state: &TierState) -> i64 {
        self.tiers[self.current(state)].earn_multiplier_bps
    }

    /// When a tier entered at `now_ms` is evaluated: never for the first tier, with no retention
    /// or under the policy `NEVER`.
    fn expiry(&self, index: usize, from_ms: i64) -> Option<i64> {
        match (index, self.retention_days, self.downgrade) {
            (0, ..) | (_, None, _) | (_, _, Downgrade::Never) => None,
            (_, Some(days), _) => Some(from_ms + days * DAY_MS),
        }
    }

    fn moved(&self, state: &TierState, to: usize, change: ChangeKind, (qualifying, now_ms): (i64, i64), cause: Cause) -> TierChange {
        let from = self.current(state);
        let after = TierState {
            code: Some(self.tiers[to].code.clone()),
            entered_at: if change == ChangeKind::Renewed { state.entered_at } else { Some(now_ms) },
            expires_at: match change {
                // A renewal continues from the old expiry (unless the sweeper is that far behind).
                ChangeKind::Renewed => {
                    self.expiry(to, state.expires_at.unwrap_or(now_ms)).map(|at| if at <= now_ms { self.expiry(to, now_ms).unwrap_or(at) } else { at })
                }
                _ => self.expiry(to, now_ms),
            },
            cause: match &cause {
                Cause::Earned(request) => Some(request.clone()),
                _ => None,
            },
            ..state.clone()
        };
        TierChange {
            kind: change,
            from: state.code.as_ref().map(|_| self.tiers[from].code.clone()).or_else(|| Some(self.tiers[0].code.clone())),
            to: self.tiers[to].code.clone(),
            qualifying,
            state: after,
            cause,
        }
    }

    /// After a member's qualifying coins went up (to `qualifying`), by `request_id`: an upgrade
    /// to the highest tier they reach, if it is above theirs.
    pub fn after_earning(&self, state: &TierState, qualifying: i64, now_ms: i64, request_id: &str) -> Option<TierChange> {
        let to = self.reached(qualifying);
        (to > self.current(state)).then(|| self.moved(state, to, ChangeKind::Upgraded, (qualifying, now_ms), Cause::Earned(request_id.to_owned())))
    }

    /// After a return of `original` by `request_id`: when `original` is what raised the member
    /// to their tier, they are placed again, by their qualifying coins now (never below a floor).
    pub fn after_return(&self, state: &TierState, qualifying: i64, now_ms: i64, original: &str, request_id: &str) -> Option<TierChange> {
        if state.cause.as_deref() != Some(original) {
            return None;
        }
        let (from, to) = (self.current(state), self.reached(qualifying).max(self.floor(state)));
        let kind = match to.cmp(&from) {
            std::cmp::Ordering::Less => ChangeKind::Downgraded,
            std::cmp::Ordering::Equal => return None,
            std::cmp::Ordering::Greater => ChangeKind::Upgraded,
        };
        Some(self.moved(state, to, kind, (qualifying, now_ms), Cause::Returned(request_id.to_owned())))
    }

    /// The sweeper's evaluation at `tierExpiresAt`: renewed if the qualifying coins still reach
    /// the tier (or a floor holds it), else moved down by the policy.
    pub fn at_expiry(&self, state: &TierState, qualifying: i64, now_ms: i64) -> TierChange {
        let from = self.current(state);
        let floor = self.floor(state);
        let to = if qualifying >= self.tiers[from].threshold {
            from
        } else {
            match self.downgrade {
                Downgrade::OneDown => from.saturating_sub(1).max(self.reached(qualifying)),
                Downgrade::ToQualifying => self.reached(qualifying),
                Downgrade::Never => from,
            }
            .max(floor)
        };
        let kind = if to < from { ChangeKind::Downgraded } else { ChangeKind::Renewed };
        self.moved(state, to, kind, (qualifying, now_ms), Cause::Evaluation)
    }

    /// A manual floor set (or, `None`, removed). A floor above the member's tier places them in
    /// it at once; removing one changes nothing until the next evaluation.
    pub fn with_floor(&self, state: &TierState, floor: Option<&str>, reason: Option<&str>, qualifying: i64, now_ms: i64) -> (TierState, Option<TierChange>) {
        let floored = TierState { floor: floor.map(str::to_owned), floor_reason: reason.map(str::to_owned), ..state.clone() };
        let to = self.floor(&floored);
        let from = self.current(state);
        if to > from {
            let mut change = self.moved(state, to, ChangeKind::Upgraded, (qualifying, now_ms), Cause::Manual);
            change.state.floor.clone_from(&floored.floor);
            change.state.floor_reason.clone_from(&floored.floor_reason);
            return (change.state.clone(), Some(change));
        }
        (floored, None)
    }

    /// After the scheme itself changed (or was set up): every member is placed in the highest
    /// tier their qualifying coins reach, if that is above the tier they keep. A member whose
    /// tier the new scheme no longer has is placed by their qualifying coins, and a floor on a
    /// tier it no longer has is removed. The state to store, and the change to report.
    pub fn after_scheme_change(&self, state: &TierState, qualifying: i64, now_ms: i64) -> (TierState, Option<TierChange>) {
        let kept_floor = state.floor.as_deref().is_none_or(|f| self.index_of(Some(f)).is_some());
        let state = if kept_floor { state.clone() } else { TierState { floor: None, floor_reason: None, ..state.clone() } };
        let to = self.reached(qualifying).max(self.floor(&state));
        let change = match self.index_of(state.code.as_deref()) {
            Some(kept) => (to > kept.max(self.floor(&state))).then(|| self.moved(&state, to, ChangeKind::Upgraded, (qualifying, now_ms), Cause::Scheme)),
            None => {
                let mut change = self.moved(&TierState { code: None, ..state.clone() }, to, ChangeKind::Downgraded, (qualifying, now_ms), Cause::Scheme);
                change.from.clone_from(&state.code);
                Some(change)
            }
        };
        (change.as_ref().map_or(state, |c| c.state.clone()), change)
    }

    /// What a member's tier looks like to the API.
    pub fn view(&self, state: &TierState, qualifying: i64) -> TierView {
        let i = self.current(state);
        let next = self.tiers.get(i + 1);
        TierView {
            code: self.tiers[i].code.clone(),
            name: self.tiers[i].name.clone(),
            entered_at: state.entered_at,
            expires_at: state.expires_at,
            qualifying_coins: qualifying,
            next_tier: next.map(|t| t.code.clone()),
            coins_to_next_tier: next.map(|t| (t.threshold - qualifying).max(0)),
            earn_multiplier_bps: self.tiers[i].earn_multiplier_bps,
            floor: state.floor.clone(),
        }
    }
}

/// The share of an allocation's base coins that qualifies: all of them, less the part of them
/// that went with returned (canceled, reversed or waived) coins, rounded down. Exact: any
/// sequence of partial returns ends at 0 when everything is returned.
pub fn qualifying_of(base_coins: i64, coins: i64, returned: i64) -> i64 {
    if coins <= 0 || base_coins <= 0 {
        return 0;
    }
    let kept = (coins - returned).clamp(0, coins);
    i64::try_from(i128::from(base_coins) * i128::from(kept) / i128::from(coins)).unwrap_or(0)
}

/// Qualifying coins gained or lost: by credit `request_id`, moved by `by` (the credit itself, or
/// a return of it), dated at the credit's activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifyingMove {
    pub earned_at: i64,
    pub request_id: String,
    pub by: String,
    pub coins: i64,
}

/// A member's tier as stored: where they were placed, until when, by which request, and a floor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierState {
    /// `None`: never placed (the first tier).
    pub code: Option<String>,
    pub entered_at: Option<i64>,
    /// When the sweeper evaluates the tier.
    pub expires_at: Option<i64>,
    /// The request whose qualifying coins raised the member to this tier.
    pub cause: Option<String>,
    pub floor: Option<String>,
    pub floor_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Upgraded,
    Downgraded,
    Renewed,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upgraded => "UPGRADED",
            Self::Downgraded => "DOWNGRADED",
            Self::Renewed => "RENEWED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Upgraded, Self::Downgraded, Self::Renewed].into_iter().find(|k| k.as_str() == s)
    }
}

/// Why a tier changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Qualifying coins went up: an allocation, an activation or a qualifying adjustment (its
    /// request id).
    Earned(String),
    /// The upgrading allocation was returned (the return's request id).
    Returned(String),
    /// The sweeper's evaluation at `tierExpiresAt`.
    Evaluation,
    /// A manual floor.
    Manual,
    /// The scheme was set up or changed.
    Scheme,
}

impl Cause {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Earned(_) => "QUALIFYING_COINS",
            Self::Returned(_) => "RETURN",
            Self::Evaluation => "EVALUATION",
            Self::Manual => "MANUAL_FLOOR",
            Self::Scheme => "SCHEME_CHANGE",
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Earned(r) | Self::Returned(r) => Some(r),
            _ => None,
        }
    }
}

/// A tier change: the event it is reported as, and the member's state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    pub kind: ChangeKind,
    pub from: Option<String>,
    pub to: String,
    pub qualifying: i64,
    pub state: TierState,
    pub cause: Cause,
}

/// A member's tier as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierView {
    pub code: String,
    pub name: String,
    pub entered_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub qualifying_coins: i64,
    pub next_tier: Option<String>,
    pub coins_to_next_tier: Option<i64>,
    pub earn_multiplier_bps: i64,
    pub floor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = DAY_MS;

    fn scheme(downgrade: Downgrade, retention: Option<i64>) -> TierScheme {
        let tier = |code: &str, threshold, bps| Tier { code: code.into(), name: code.into(), threshold, earn_multiplier_bps: bps };
        TierScheme {
            basis: Basis::Lifetime,
            window_days: None,
            retention_days: retention,
            downgrade,
            tiers: vec![tier("BRONZE", 0, 10_000), tier("SILVER", 1_000, 12_500), tier("GOLD", 5_000, 15_000)],
        }
    }

    #[test]
    fn a_scheme_is_checked_tier_by_tier() {
        let s = scheme(Downgrade::OneDown, Some(365));
        assert_eq!(s.check(), Ok(()));
        let mut bad = s.clone();
        bad.tiers[0].threshold = 1;
        assert!(bad.check().unwrap_err().contains("first tier"));
        let mut bad = s.clone();
        bad.tiers[2].threshold = 1_000;
        assert!(bad.check().unwrap_err().contains("tiers[2].threshold"));
        let mut bad = s.clone();
        bad.tiers[1].earn_multiplier_bps = 9_999;
        assert!(bad.check().unwrap_err().contains("tiers[1].earnMultiplierBps"));
        let mut bad = s.clone();
        bad.tiers[1].code = "BRONZE".into();
        assert!(bad.check().unwrap_err().contains("used twice"));
        let rolling = TierScheme { basis: Basis::Rolling, ..s.clone() };
        assert!(rolling.check().unwrap_err().contains("windowDays is required"));
        assert_eq!(TierScheme { window_days: Some(365), ..rolling }.check(), Ok(()));
        assert!(TierScheme { window_days: Some(30), ..s }.check().unwrap_err().contains("ROLLING only"));
    }

    #[test]
    fn earning_upgrades_at_once_to_the_highest_tier_reached() {
        let s = scheme(Downgrade::OneDown, Some(365));
        let none = TierState::default();
        assert_eq!(s.after_earning(&none, 999, DAY, "r1"), None);
        let up = s.after_earning(&none, 6_000, DAY, "r1").unwrap();
        assert_eq!((up.kind, up.from.as_deref(), up.to.as_str()), (ChangeKind::Upgraded, Some("BRONZE"), "GOLD"));
        assert_eq!(up.state.expires_at, Some(366 * DAY));
        assert_eq!(up.state.cause.as_deref(), Some("r1"));
        assert_eq!(s.multiplier_bps(&none), 10_000);
        assert_eq!(s.multiplier_bps(&up.state), 15_000);
        assert_eq!(s.after_earning(&up.state, 7_000, DAY, "r2"), None);
    }

    #[test]
    fn a_running_total_may_upgrade_only_past_the_tier_held_or_the_floor() {
        let s = scheme(Downgrade::OneDown, Some(365));
        let none = TierState::default();
        assert!(!s.may_upgrade(&none, 999));
        assert!(s.may_upgrade(&none, 1_000));
        let silver = s.after_earning(&none, 1_000, DAY, "r1").unwrap().state;
        assert!(!s.may_upgrade(&silver, 4_999));
        assert!(s.may_upgrade(&silver, 5_000));
        // A floor counts as the tier held: nothing below it upgrades.
        let (floored, _) = s.with_floor(&none, Some("GOLD"), Some("partner"), 0, DAY);
        assert!(!s.may_upgrade(&floored, 1_000_000));
        // Whenever the total may not upgrade, neither does any window (never above the total).
        for total in [0, 999, 1_000, 4_999, 5_000, 9_000] {
            for state in [&none, &silver, &floored] {
                if !s.may_upgrade(state, total) {
                    assert!((0..=total).step_by(500).all(|window| s.after_earning(state, window, DAY, "r").is_none()), "{total}");
                }
            }
        }
    }

    #[test]
    fn returning_the_upgrading_allocation_places_again_and_other_returns_wait() {
        let s = scheme(Downgrade::OneDown, Some(365));
        let gold = s.after_earning(&TierState::default(), 5_200, DAY, "big").unwrap().state;
        assert_eq!(s.after_return(&gold, 4_900, 2 * DAY, "small", "ret1"), None);
        let back = s.after_return(&gold, 200, 2 * DAY, "big", "ret2").unwrap();
        assert_eq!((back.kind, back.to.as_str(), back.cause.as_str()), (ChangeKind::Downgraded, "BRONZE", "RETURN"));
        assert_eq!(back.state.expires_at, None);
    }

    #[test]
    fn evaluation_renews_or_moves_down_by_the_policy_never_below_a_floor() {
        let gold = |s: &TierScheme| s.after_earning(&TierState::default(), 5_000, 0, "r").unwrap().state;
        let s = scheme(Downgrade::OneDown, Some(30));
        let renewed = s.at_expiry(&gold(&s), 5_000, 30 * DAY);
        assert_eq!((renewed.kind, renewed.state.expires_at), (ChangeKind::Renewed, Some(60 * DAY)));
        assert_eq!(s.at_expiry(&gold(&s), 10, 30 * DAY).to, "SILVER");
        let s = scheme(Downgrade::ToQualifying, Some(30));
        assert_eq!(s.at_expiry(&gold(&s), 10, 30 * DAY).to, "BRONZE");
        let (floored, change) = s.with_floor(&gold(&s), Some("SILVER"), Some("VIP"), 10, DAY);
        assert_eq!(change, None);
        assert_eq!(s.at_expiry(&floored, 10, 30 * DAY).to, "SILVER");
        let never = scheme(Downgrade::Never, Some(30));
        assert_eq!(gold(&never).expires_at, None);
    }

    #[test]
    fn a_floor_above_the_tier_places_the_member_in_it() {
        let s = scheme(Downgrade::OneDown, Some(30));
        let (state, change) = s.with_floor(&TierState::default(), Some("GOLD"), Some("CEO's friend"), 0, DAY);
        let change = change.unwrap();
        assert_eq!((change.kind, change.to.as_str(), change.cause.as_str()), (ChangeKind::Upgraded, "GOLD", "MANUAL_FLOOR"));
        assert_eq!((state.floor.as_deref(), s.current(&state)), (Some("GOLD"), 2));
        let v = s.view(&state, 0);
        assert_eq!((v.code.as_str(), v.next_tier, v.coins_to_next_tier), ("GOLD", None, None));
    }

    #[test]
    fn a_new_scheme_places_members_and_drops_floors_on_tiers_it_no_longer_has() {
        let old = scheme(Downgrade::OneDown, Some(30));
        let (floored, _) = old.with_floor(&TierState::default(), Some("GOLD"), Some("VIP"), 0, DAY);
        let mut new = old.clone();
        new.tiers.truncate(2);
        let (state, change) = new.after_scheme_change(&floored, 1_500, 2 * DAY);
        assert_eq!((state.floor.as_deref(), state.floor_reason.as_deref(), state.code.as_deref()), (None, None, Some("SILVER")));
        let change = change.unwrap();
        assert_eq!((change.kind, change.from.as_deref(), change.to.as_str()), (ChangeKind::Downgraded, Some("GOLD"), "SILVER"));
        let (same, none) = old.after_scheme_change(&TierState::default(), 10, DAY);
        assert_eq!((same, none), (TierState::default(), None));
        let (up, change) = old.after_scheme_change(&TierState::default(), 6_000, DAY);
        assert_eq!((up.code.as_deref(), change.map(|c| c.cause)), (Some("GOLD"), Some(Cause::Scheme)));
    }

    #[test]
    fn qualifying_coins_of_partial_returns_sum_to_nothing_when_all_is_returned() {
        assert_eq!(qualifying_of(100, 150, 0), 100);
        assert_eq!(qualifying_of(100, 150, 50), 66);
        assert_eq!(qualifying_of(100, 150, 150), 0);
        assert_eq!(qualifying_of(0, 150, 0), 0);
        assert_eq!(qualifying_of(1_000_000_000, 100_000_000_000, 1), 999_999_999);
    }

    #[test]
    fn the_rolling_window_is_whole_utc_days_today_included() {
        let s = TierScheme { basis: Basis::Rolling, window_days: Some(10), ..scheme(Downgrade::OneDown, None) };
        // Day 100 and the nine before it, whatever the hour.
        assert_eq!(s.window_start(100 * DAY), Some(91 * DAY));
        assert_eq!(s.window_start(101 * DAY - 1), Some(91 * DAY));
        assert_eq!(s.window_start(101 * DAY), Some(92 * DAY));
        let one = TierScheme { window_days: Some(1), ..s };
        assert_eq!(one.window_start(100 * DAY + 5), Some(100 * DAY));
        assert_eq!(scheme(Downgrade::OneDown, None).window_start(100 * DAY), None);
    }

    #[test]
    fn a_qualifying_day_is_the_utc_day_even_before_1970() {
        assert_eq!((qualifying_day(0), qualifying_day(DAY - 1), qualifying_day(DAY)), (0, 0, 1));
        assert_eq!((qualifying_day(-1), qualifying_day(-DAY), qualifying_day(-DAY - 1)), (-1, -1, -2));
    }
}
