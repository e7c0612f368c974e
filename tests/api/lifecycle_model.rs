//! Model-based property test of the whole lifecycle (version 2 of the ledger): random sequences
//! of allocations (fixed, capped, a percentage of a purchase value, held before they can be
//! spent, raised by bonus campaigns with windows, events and per-user limits, and by the member's
//! status tier), early activations, redemptions (by coins and by currency), staff adjustments
//! (credits with an expiry or a hold, some qualifying for tiers; debits), returns (whole, by coins,
//! by refunded amount, refused, capped or driven into debt when the coins were spent, re-placing
//! a member whose upgrading allocation they return), debt paid by later credits, clock jumps and
//! sweeps (which renew or downgrade tiers whose retention is up), run
//! against the store on both backends and against a small in-memory reference model written
//! independently of `src/domain`. Every allocation and return is simulated first, and the real
//! call must then do exactly what was simulated. After every step each user's balance, summary,
//! full ledger history (spendable and held coins), tier and qualifying coins match the model, and
//! `verify` finds nothing.

use std::collections::HashMap;

use coins::domain::Refusal;
use coins::domain::activate::ActivateCmd;
use coins::domain::adjust::{AdjustCmd, AdjustExpiry, AdjustReceipt};
use coins::domain::allocate::{AllocateCmd, AllocateOk, Purchase};
use coins::domain::allocation::{OnShortfall, ReturnAsk, ReturnKind};
use coins::domain::campaigns::{CampaignTerms, Reward};
use coins::domain::config::{ConfigValues, Earning};
use coins::domain::earn::AmountType;
use coins::domain::redeem::{CoinValue, RedeemAmount, RedeemCmd};
use coins::domain::reverse::{ReverseCmd, Target};
use coins::domain::simulate::{SimOutcome, SimulateCmd};
use coins::domain::tiers::{Basis, Downgrade, Tier, TierScheme};
use coins::domain::{Coins, CompanyId, ConfigKind, EventName, RequestId, UserId};
use coins::store::{Store, StoreError};
use proptest::prelude::*;

use crate::helpers::*;

const COMPANY: &str = "C";
const USERS: usize = 3;
const REQUESTS: usize = 12;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const START_MS: i64 = 1_700_000_000_000;
const MINOR_PER_COIN: i64 = 3;

/// How an event earns.
#[derive(Debug, Clone, Copy)]
enum Earn {
    Fixed(i64),
    /// Basis points of the purchase value, rounded down.
    Percent(i64),
}

/// (event, earning, validity days, maxPerUser, pendingDays)
type EventDef = (&'static str, Earn, Option<i64>, Option<i64>, Option<i64>);

const EVENTS: [EventDef; 5] = [
    ("E0", Earn::Fixed(10), Some(2), None, None),
    ("E1", Earn::Fixed(7), None, None, None),
    ("E2", Earn::Fixed(5), Some(1), Some(3), None),
    // 10 %: a purchase of `minor` earns minor / 30 coins at 3 minor units a coin.
    ("E3", Earn::Percent(1_000), Some(3), None, None),
    ("E4", Earn::Fixed(12), Some(2), None, Some(1)),
];

/// A campaign's reward: a multiplier (basis points) or fixed bonus coins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bonus {
    Times(i64),
    Plus(i64),
}

/// (events it applies to (`None`: all), starts and ends in hours after the start, reward, limit
/// per user), created in this order (so a later one is newer).
type CampaignDef = (Option<&'static [&'static str]>, i64, i64, Bonus, Option<i64>);

const CAMPAIGNS: [CampaignDef; 3] = [
    (Some(&["E1", "E3"]), 24, 72, Bonus::Times(20_000), Some(2)),
    (None, 0, 36, Bonus::Plus(4), None),
    (Some(&["E0", "E4"]), 6, 96, Bonus::Times(15_000), Some(1)),
];

/// The tier scheme: a rolling window of 3 days, tiers kept 2 days, one tier down at a time.
/// (code, threshold, earning multiplier in basis points)
const TIERS: [(&str, i64, i64); 3] = [("T0", 0, 10_000), ("T1", 20, 15_000), ("T2", 60, 20_000)];
const TIER_WINDOW_DAYS: i64 = 3;
const TIER_RETENTION_DAYS: i64 = 2;

/// A member's tier as the model keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TierM {
    idx: usize,
    expires: Option<i64>,
    /// The request whose qualifying coins raised the member to it.
    cause: Option<usize>,
}

/// The share of `base` coins a credit of `coins` keeps once `returned` of them are returned
/// (written here again, apart from `src/domain`).
fn qualifying_share(base: i64, coins: i64, returned: i64) -> i64 {
    if coins <= 0 || base <= 0 { 0 } else { (i128::from(base) * i128::from((coins - returned).max(0)) / i128::from(coins)) as i64 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Whole,
    Coins(i64),
    Minor(i64),
}

/// What a return or a debit does when the user has too few coins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Short {
    Reject,
    Cap,
    Negative,
}

impl Short {
    fn policy(self) -> OnShortfall {
        match self {
            Short::Reject => OnShortfall::Reject,
            Short::Cap => OnShortfall::Cap,
            Short::Negative => OnShortfall::Negative,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        user: usize,
        event: usize,
        req: usize,
        minor: i64,
    },
    RedeemCoins {
        user: usize,
        req: usize,
        coins: i64,
    },
    RedeemMinor {
        user: usize,
        req: usize,
        minor: i64,
    },
    Return {
        req: usize,
        original: usize,
        ask: Ask,
        short: Short,
    },
    /// A credit (positive coins, maybe expiring, maybe held a day) or a debit (negative).
    Adjust {
        user: usize,
        req: usize,
        coins: i64,
        validity: Option<i64>,
        held: bool,
        short: Short,
    },
    Activate {
        req: usize,
        original: usize,
    },
    Advance {
        hours: i64,
    },
    Sweep,
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![2 => Just(Ask::Whole), 2 => (1..15i64).prop_map(Ask::Coins), 2 => (1..2_000i64).prop_map(Ask::Minor)]
}

fn short() -> impl Strategy<Value = Short> {
    prop_oneof![2 => Just(Short::Reject), 1 => Just(Short::Cap), 2 => Just(Short::Negative)]
}

fn adjustment() -> impl Strategy<Value = Op> {
    let credit = (0..USERS, 0..REQUESTS, 1..40i64, proptest::option::of(1..4i64), any::<bool>()).prop_map(|(user, req, coins, validity, held)| Op::Adjust {
        user,
        req,
        coins,
        validity,
        held,
        short: Short::Reject,
    });
    let debit = (0..USERS, 0..REQUESTS, 1..40i64, short()).prop_map(|(user, req, coins, short)| Op::Adjust {
        user,
        req,
        coins: -coins,
        validity: None,
        held: false,
        short,
    });
    prop_oneof![credit, debit]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..USERS, 0..EVENTS.len(), 0..REQUESTS, 1..3_000i64).prop_map(|(user, event, req, minor)| Op::Allocate { user, event, req, minor }),
        2 => (0..USERS, 0..REQUESTS, 1..25i64).prop_map(|(user, req, coins)| Op::RedeemCoins { user, req, coins }),
        1 => (0..USERS, 0..REQUESTS, 1..60i64).prop_map(|(user, req, minor)| Op::RedeemMinor { user, req, minor }),
        3 => (0..REQUESTS, 0..REQUESTS, ask(), short()).prop_map(|(req, original, ask, short)| Op::Return { req, original, ask, short }),
        2 => adjustment(),
        1 => (0..REQUESTS, 0..REQUESTS).prop_map(|(req, original)| Op::Activate { req, original }),
        2 => (1..60i64).prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Sweep),
    ]
}

#[derive(Debug, Clone)]
struct Lot {
    user: usize,
    remaining: i64,
    expires_at: Option<i64>,
    /// Held until then (not spendable); cleared when it activates.
    pending_until: Option<i64>,
    /// Coins of this lot that left the balance through EXPIRE.
    expired: i64,
    /// The allocation (request number) that opened it.
    alloc: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Pending,
    Active,
    Canceled,
    Reversed,
    Zero,
}

#[derive(Debug, Clone)]
struct Alloc {
    user: usize,
    event: usize,
    coins: i64,
    lot: Option<usize>,
    paid: Option<i64>,
    refunded: i64,
    canceled: i64,
    reversed: i64,
    waived: i64,
    /// Of `reversed`, the coins that had expired already (ended without being taken).
    absorbed: i64,
    state: St,
    /// Days its coins stay spendable once active.
    validity: Option<i64>,
    /// A staff adjustment's credit: what a replay must repeat, and its answer.
    adjust: Option<(String, Adjusted)>,
    /// The campaign that applied (refunds recompute with its reward).
    campaign: Option<usize>,
    /// The member's tier multiplier it earned at, its coins before any multiplier (what
    /// qualifies for tiers), and when it became spendable.
    tier_bps: i64,
    base: i64,
    activated_at: Option<i64>,
}

/// What an adjustment answers: (coins, short, activatesAt, expiresAt, balance, pending).
type Adjusted = (i64, i64, Option<i64>, Option<i64>, i64, i64);

/// What a return answers: (kind, coins, short, shortMinor, remaining, refunded, balance, pending).
type ReturnReceipt = (&'static str, i64, i64, i64, i64, Option<i64>, i64, i64);

#[derive(Debug, Clone)]
enum Req {
    Allocate(Alloc),
    /// A redemption, or (with `adjust`) a staff adjustment's debit. `taken` is what it moved,
    /// `moves` what of that came out of lots (the rest became debt); returns gave back
    /// `given_back` in all and put `restored` of it back into those lots.
    Redeem {
        user: usize,
        fingerprint: String,
        receipt: (i64, i64, i64),
        taken: i64,
        moves: Vec<(usize, i64)>,
        given_back: i64,
        restored: i64,
        adjust: Option<(String, Adjusted)>,
    },
    Return {
        original: usize,
        ask: Ask,
        short: Short,
        receipt: ReturnReceipt,
    },
    Activate {
        original: usize,
        receipt: (bool, i64, i64, i64),
    },
}

#[derive(Debug, Clone, Default)]
struct Account {
    exists: bool,
    earned: i64,
    redeemed: i64,
    expired: i64,
    /// (type, coins, balanceAfter, pendingCoins, pendingAfter), oldest first.
    entries: Vec<(&'static str, i64, i64, i64, i64)>,
}

impl Account {
    fn stored_balance(&self) -> i64 {
        self.entries.last().map_or(0, |e| e.2)
    }
    fn pending(&self) -> i64 {
        self.entries.last().map_or(0, |e| e.4)
    }
    /// What the user owes: the stored balance below zero.
    fn debt(&self) -> i64 {
        (-self.stored_balance()).max(0)
    }
    fn push(&mut self, kind: &'static str, coins: i64, pending_coins: i64) {
        let (balance, pending) = (self.stored_balance() + coins, self.pending() + pending_coins);
        self.entries.push((kind, coins, balance, pending_coins, pending));
    }
}

#[derive(Debug, Clone, Default)]
struct Model {
    lots: Vec<Lot>,
    requests: HashMap<usize, Req>,
    accounts: [Account; USERS],
    allocations: HashMap<(usize, usize), i64>,
    /// Allocations each campaign applied to, per (campaign, user).
    triggers: HashMap<(usize, usize), i64>,
    /// Qualifying coins: (user, earned at, coins), returns negative and dated at their credit's
    /// activation.
    qualified: Vec<(usize, i64, i64)>,
    tiers: [TierM; USERS],
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Allocated(i64),
    Zero,
    Replayed(i64),
    Redeemed(i64, i64, i64),
    RedeemReplayed(i64, i64, i64),
    Returned(ReturnReceipt),
    ReturnReplayed(ReturnReceipt),
    Activated(bool, i64, i64, i64),
    ActivateReplayed(bool, i64, i64, i64),
    Adjusted(Adjusted),
    AdjustReplayed(Adjusted),
    Refused(&'static str),
}

/// What a credit of `coins` keeps after paying the debt of a user whose stored balance is
/// `balance` (written here again, apart from `src/domain`).
fn kept(balance: i64, coins: i64) -> i64 {
    if balance >= 0 { coins } else { (coins + balance).max(0) }
}

impl Model {
    fn alloc_mut(&mut self, req: usize) -> &mut Alloc {
        match self.requests.get_mut(&req) {
            Some(Req::Allocate(a)) => a,
            _ => unreachable!("request {req} is an allocation"),
        }
    }

    /// What the sweeper (or any write for the user) does first: held lots whose hold ended
    /// activate, then lots past expiry expire.
    fn settle(&mut self, user: usize, now: i64) {
        let mut due: Vec<usize> = (0..self.lots.len())
            .filter(|&i| self.lots[i].user == user && self.lots[i].remaining > 0 && self.lots[i].pending_until.is_some_and(|t| t <= now))
            .collect();
        due.sort_by_key(|&i| (self.lots[i].pending_until, i));
        let mut activated = Vec::new();
        for i in due {
            let (n, alloc, at) = (self.lots[i].remaining, self.lots[i].alloc, self.lots[i].pending_until.unwrap());
            self.lots[i].pending_until = None;
            // Spendable now: it pays the user's debt first.
            self.lots[i].remaining = kept(self.accounts[user].stored_balance(), n);
            let a = self.alloc_mut(alloc);
            if a.state == St::Pending {
                a.state = St::Active;
            }
            a.activated_at = Some(at);
            let acct = &mut self.accounts[user];
            acct.earned += n;
            acct.push("ACTIVATE", n, -n);
            activated.push(alloc);
        }
        // Then each activation qualifies, in order (an upgrade names the first that reached it).
        for alloc in activated {
            self.qualify_credit(alloc, now);
        }
        let mut due: Vec<usize> = (0..self.lots.len())
            .filter(|&i| {
                let l = &self.lots[i];
                l.user == user && l.remaining > 0 && l.pending_until.is_none() && l.expires_at.is_some_and(|t| t <= now)
            })
            .collect();
        due.sort_by_key(|&i| (self.lots[i].expires_at, i));
        for i in due {
            let n = std::mem::take(&mut self.lots[i].remaining);
            self.lots[i].expired += n;
            let acct = &mut self.accounts[user];
            acct.expired += n;
            acct.push("EXPIRE", -n, 0);
        }
    }

    fn spendable(&self, i: usize, now: i64) -> bool {
        let l = &self.lots[i];
        l.remaining > 0 && l.pending_until.is_none_or(|t| t <= now) && l.expires_at.is_none_or(|t| t > now)
    }

    /// Spendable lots of the user in debit order: soonest expiry, never-expiring last, then age.
    fn open_lots(&self, user: usize, now: i64) -> Vec<usize> {
        let mut open: Vec<usize> = (0..self.lots.len()).filter(|&i| self.lots[i].user == user && self.spendable(i, now)).collect();
        open.sort_by_key(|&i| (self.lots[i].expires_at.is_none(), self.lots[i].expires_at, i));
        open
    }

    fn take(&self, order: &[usize], coins: i64) -> Option<Vec<(usize, i64)>> {
        let mut left = coins;
        let mut takes = Vec::new();
        for &i in order {
            if left == 0 {
                break;
            }
            let n = self.lots[i].remaining.min(left);
            if n > 0 {
                takes.push((i, n));
                left -= n;
            }
        }
        (left == 0).then_some(takes)
    }

    fn visible(&self, user: usize, now: i64) -> i64 {
        self.open_lots(user, now).iter().map(|&i| self.lots[i].remaining).sum()
    }

    /// The balance a read shows: the spendable coins less the debt.
    fn balance(&self, user: usize, now: i64) -> i64 {
        self.visible(user, now) - self.accounts[user].debt()
    }

    fn held(&self, user: usize, now: i64) -> i64 {
        self.lots.iter().filter(|l| l.user == user && l.remaining > 0 && l.pending_until.is_some_and(|t| t > now)).map(|l| l.remaining).sum()
    }

    /// What an allocation of `event` on a purchase of `minor` earns under campaign `k`: rounded
    /// down, then a campaign's bonus on top. Nothing bought earns nothing.
    fn earns(event: usize, minor: i64, k: Option<usize>, tier_bps: i64) -> i64 {
        let times = match k.map(|k| CAMPAIGNS[k].3) {
            Some(Bonus::Times(bps)) => tier_bps * bps / 10_000,
            _ => tier_bps,
        };
        let plus = match k.map(|k| CAMPAIGNS[k].3) {
            Some(Bonus::Plus(n)) => n,
            _ => 0,
        };
        match EVENTS[event].1 {
            Earn::Fixed(n) => n * times / 10_000 + plus,
            Earn::Percent(_) if minor <= 0 => 0,
            Earn::Percent(bps) => minor * bps * times / (100_000_000 * MINOR_PER_COIN) + plus,
        }
    }

    /// What an allocation earns before any multiplier: what qualifies for tiers.
    fn base(event: usize, minor: i64) -> i64 {
        match EVENTS[event].1 {
            Earn::Fixed(n) => n,
            Earn::Percent(_) if minor <= 0 => 0,
            Earn::Percent(bps) => minor * bps / (10_000 * MINOR_PER_COIN),
        }
    }

    /// The member's qualifying coins at `now`: those activated on `now`'s UTC day or on the
    /// window's days before it.
    fn qualifying(&self, user: usize, now: i64) -> i64 {
        let since = (now.div_euclid(DAY_MS) - (TIER_WINDOW_DAYS - 1)) * DAY_MS;
        self.qualified.iter().filter(|&&(u, at, _)| u == user && at >= since).map(|&(.., n)| n).sum()
    }

    fn reached(q: i64) -> usize {
        TIERS.iter().rposition(|t| t.1 <= q).unwrap_or(0)
    }

    fn placed(idx: usize, now: i64, cause: Option<usize>) -> TierM {
        TierM { idx, expires: (idx > 0).then_some(now + TIER_RETENTION_DAYS * DAY_MS), cause }
    }

    /// A credit's qualifying coins once it is spendable (dated at its activation), and the
    /// upgrade they may bring.
    fn qualify_credit(&mut self, req: usize, now: i64) {
        let Some(Req::Allocate(a)) = self.requests.get(&req) else { unreachable!() };
        let n = qualifying_share(a.base, a.coins, a.canceled + a.reversed + a.waived);
        if n == 0 {
            return;
        }
        let (user, at) = (a.user, a.activated_at.unwrap());
        self.qualified.push((user, at, n));
        let reached = Self::reached(self.qualifying(user, now));
        if reached > self.tiers[user].idx {
            self.tiers[user] = Self::placed(reached, now, Some(req));
        }
    }

    /// A return of credit `req` that moved its returned coins from `before` to what it has now:
    /// its qualifying coins go down, and if it raised the member to their tier, they are placed
    /// again at once.
    fn requalify(&mut self, req: usize, before: i64, now: i64) {
        let Some(Req::Allocate(a)) = self.requests.get(&req) else { unreachable!() };
        let user = a.user;
        if let Some(at) = a.activated_at {
            let after = a.canceled + a.reversed + a.waived;
            let delta = qualifying_share(a.base, a.coins, after) - qualifying_share(a.base, a.coins, before);
            if delta != 0 {
                self.qualified.push((user, at, delta));
            }
        }
        if self.tiers[user].cause == Some(req) {
            let to = Self::reached(self.qualifying(user, now));
            if to != self.tiers[user].idx {
                self.tiers[user] = Self::placed(to, now, None);
            }
        }
    }

    /// The sweeper's evaluation of a tier whose retention is up: renewed while the qualifying
    /// coins reach it, else one tier down.
    fn evaluate(&mut self, user: usize, now: i64) {
        let t = self.tiers[user];
        let Some(expires) = t.expires.filter(|&e| e <= now) else { return };
        let q = self.qualifying(user, now);
        self.tiers[user] = if q >= TIERS[t.idx].1 {
            let next = expires + TIER_RETENTION_DAYS * DAY_MS;
            TierM { idx: t.idx, expires: Some(if next <= now { now + TIER_RETENTION_DAYS * DAY_MS } else { next }), cause: None }
        } else {
            Self::placed((t.idx - 1).max(Self::reached(q)), now, None)
        };
    }

    /// The multiplier the member's allocations earn at.
    fn tier_bps(&self, user: usize) -> i64 {
        TIERS[self.tiers[user].idx].2
    }

    /// The campaign an allocation gets: of those running at `now` for its event that give it
    /// more coins than it earns without one (at the member's tier), the most coins, then the
    /// highest multiplier, then the newest, whose limit for the user has room.
    fn campaign(&self, user: usize, event: usize, minor: i64, now: i64) -> Option<usize> {
        let tier_bps = self.tier_bps(user);
        let name = EVENTS[event].0;
        let mut running: Vec<(i64, i64, usize)> = (0..CAMPAIGNS.len())
            .filter(|&k| {
                let (events, from, to, ..) = CAMPAIGNS[k];
                START_MS + from * HOUR_MS <= now && now < START_MS + to * HOUR_MS && events.is_none_or(|e| e.contains(&name))
            })
            .map(|k| (Self::earns(event, minor, Some(k), tier_bps), if let Bonus::Times(bps) = CAMPAIGNS[k].3 { bps } else { 10_000 }, k))
            .filter(|&(coins, ..)| coins > Self::earns(event, minor, None, tier_bps))
            .collect();
        running.sort_by(|a, b| b.cmp(a));
        running.into_iter().map(|(.., k)| k).find(|&k| CAMPAIGNS[k].4.is_none_or(|limit| self.triggers.get(&(k, user)).copied().unwrap_or(0) < limit))
    }

    fn allocate(&mut self, user: usize, event: usize, req: usize, minor: i64, now: i64) -> Outcome {
        match self.requests.get(&req) {
            Some(Req::Allocate(a)) if a.adjust.is_none() && a.user == user && a.event == event => return Outcome::Replayed(a.coins),
            Some(_) => return Outcome::Refused("REQUEST_ID_CONFLICT"),
            None => {}
        }
        let (_, earn, validity, cap, pending_days) = EVENTS[event];
        let count = self.allocations.get(&(user, event)).copied().unwrap_or(0);
        if cap.is_some_and(|c| count >= c) {
            return Outcome::Refused("LIMIT_REACHED");
        }
        let paid = matches!(earn, Earn::Percent(_)).then_some(minor);
        // A tier whose retention is up is evaluated first: no allocation earns a multiplier the
        // member no longer has.
        if self.accounts[user].exists {
            self.evaluate(user, now);
        }
        let campaign = self.campaign(user, event, minor, now);
        let tier_bps = self.tier_bps(user);
        let coins = Self::earns(event, minor, campaign, tier_bps);
        let mut a = Alloc {
            user,
            event,
            coins,
            lot: None,
            paid,
            refunded: 0,
            canceled: 0,
            reversed: 0,
            waived: 0,
            absorbed: 0,
            state: St::Zero,
            validity,
            adjust: None,
            campaign,
            tier_bps,
            base: Self::base(event, minor),
            activated_at: None,
        };
        self.accounts[user].exists = true;
        if coins == 0 {
            self.requests.insert(req, Req::Allocate(a));
            return Outcome::Zero;
        }
        *self.allocations.entry((user, event)).or_default() += 1;
        if let Some(k) = campaign {
            *self.triggers.entry((k, user)).or_default() += 1;
        }
        let pending_until = pending_days.map(|d| now + d * DAY_MS);
        let starts = pending_until.unwrap_or(now);
        // A spendable credit pays the debt first (one held does when it activates).
        let remaining = if pending_until.is_some() { coins } else { kept(self.accounts[user].stored_balance(), coins) };
        self.lots.push(Lot { user, remaining, expires_at: validity.map(|d| starts + d * DAY_MS), pending_until, expired: 0, alloc: req });
        a.lot = Some(self.lots.len() - 1);
        let acct = &mut self.accounts[user];
        if pending_until.is_some() {
            a.state = St::Pending;
            acct.push("ALLOCATE", 0, coins);
        } else {
            a.state = St::Active;
            a.activated_at = Some(now);
            acct.earned += coins;
            acct.push("ALLOCATE", coins, 0);
        }
        let active = a.state == St::Active;
        self.requests.insert(req, Req::Allocate(a));
        if active {
            self.qualify_credit(req, now);
        }
        Outcome::Allocated(coins)
    }

    fn redeem(&mut self, user: usize, req: usize, amount: RedeemAmount, now: i64) -> Outcome {
        let fingerprint = amount.fingerprint();
        match self.requests.get(&req) {
            Some(Req::Redeem { user: u, fingerprint: f, receipt, adjust: None, .. }) if *u == user && *f == fingerprint => {
                return Outcome::RedeemReplayed(receipt.0, receipt.1, receipt.2);
            }
            Some(_) => return Outcome::Refused("REQUEST_ID_CONFLICT"),
            None => {}
        }
        if !self.accounts[user].exists {
            return Outcome::Refused("USER_NOT_FOUND");
        }
        let (coins, minor) = match amount {
            RedeemAmount::Coins(c) => (c.get(), c.get() * MINOR_PER_COIN),
            RedeemAmount::Minor(m) => ((m + MINOR_PER_COIN - 1) / MINOR_PER_COIN, m),
        };
        // A refused request rolls back everything, the settling of what was due included.
        let mut next = self.clone();
        next.settle(user, now);
        let order = next.open_lots(user, now);
        let Some(takes) = next.take(&order, coins) else { return Outcome::Refused("INSUFFICIENT_BALANCE") };
        for &(i, n) in &takes {
            next.lots[i].remaining -= n;
        }
        let acct = &mut next.accounts[user];
        acct.redeemed += coins;
        acct.push("REDEEM", -coins, 0);
        let receipt = (coins, minor, acct.stored_balance());
        next.requests.insert(req, Req::Redeem { user, fingerprint, receipt, taken: coins, moves: takes, given_back: 0, restored: 0, adjust: None });
        *self = next;
        Outcome::Redeemed(receipt.0, receipt.1, receipt.2)
    }

    fn give_back(&mut self, original: usize, ask: Ask, now: i64) -> Result<ReturnReceipt, &'static str> {
        let Some(Req::Redeem { user, taken, moves, given_back, restored, adjust, .. }) = self.requests.get(&original).cloned() else { unreachable!() };
        let remaining = taken - given_back;
        if remaining <= 0 {
            return Err("ALREADY_REVERSED");
        }
        let coins = match ask {
            Ask::Whole => remaining,
            Ask::Coins(k) if k <= remaining => k,
            Ask::Coins(_) => return Err("REVERSAL_EXCEEDS_REMAINING"),
            Ask::Minor(_) => return Err("AMOUNT_NOT_RECORDED"),
        };
        self.settle(user, now);
        // The debt is paid first; the rest goes back to the lots it came from, latest-expiring
        // (never-expiring latest of all) first, where earlier returns put theirs; what those lots
        // never gave (it was debt) goes to a new lot that never expires.
        let mut order = moves.clone();
        order.sort_by_key(|&(i, _)| std::cmp::Reverse((self.lots[i].expires_at.unwrap_or(i64::MAX), i)));
        let (mut skip, mut left) = (restored, kept(self.accounts[user].stored_balance(), coins));
        let mut placed = 0;
        for (i, n) in order {
            let skipped = skip.min(n);
            skip -= skipped;
            let back = (n - skipped).min(left);
            self.lots[i].remaining += back;
            left -= back;
            placed += back;
        }
        if left > 0 {
            self.lots.push(Lot { user, remaining: left, expires_at: None, pending_until: None, expired: 0, alloc: usize::MAX });
        }
        if let Some(Req::Redeem { given_back, restored, .. }) = self.requests.get_mut(&original) {
            *given_back += coins;
            *restored += placed;
        }
        let acct = &mut self.accounts[user];
        if adjust.is_some() {
            acct.earned += coins;
        } else {
            acct.redeemed -= coins;
        }
        acct.push("REVERSE", coins, 0);
        self.settle(user, now);
        Ok(("REVERSE", coins, 0, 0, remaining - coins, None, self.accounts[user].stored_balance(), self.accounts[user].pending()))
    }

    fn take_back(&mut self, original: usize, ask: Ask, policy: Short, now: i64) -> Result<ReturnReceipt, &'static str> {
        let user = match &self.requests[&original] {
            Req::Allocate(a) => a.user,
            _ => unreachable!(),
        };
        self.settle(user, now);
        let Some(Req::Allocate(a)) = self.requests.get(&original).cloned() else { unreachable!() };
        let refund_left = matches!(ask, Ask::Minor(_)) && a.paid.is_some_and(|p| a.refunded < p);
        if matches!(a.state, St::Canceled | St::Reversed) && !refund_left {
            return Err("ALREADY_REVERSED");
        }
        let remaining = a.coins - a.canceled - a.reversed - a.waived;
        let (nominal, refunded) = match ask {
            Ask::Whole => (remaining, a.paid.unwrap_or(0)),
            Ask::Coins(k) if k > remaining => return Err("REVERSAL_EXCEEDS_REMAINING"),
            Ask::Coins(k) => (k, a.refunded),
            Ask::Minor(m) => {
                let Some(paid) = a.paid else { return Err("AMOUNT_NOT_RECORDED") };
                if a.refunded + m > paid {
                    return Err("REVERSAL_EXCEEDS_REMAINING");
                }
                let kept = a.coins.min(Self::earns(a.event, paid - a.refunded - m, a.campaign, a.tier_bps));
                ((remaining - kept).max(0), a.refunded + m)
            }
        };
        let after = remaining - nominal;
        let mut next = a.clone();
        next.refunded = refunded;
        if a.state == St::Pending {
            // Still held (anything due was activated above): a cancel, never short.
            let lot = a.lot.expect("a held allocation has a lot");
            self.lots[lot].remaining -= nominal;
            next.canceled += nominal;
            next.state = if after == 0 { St::Canceled } else { St::Pending };
            self.accounts[user].push("CANCEL", 0, -nominal);
            *self.alloc_mut(original) = next.clone();
            self.requalify(original, a.canceled + a.reversed + a.waived, now);
            let acct = &self.accounts[user];
            return Ok(("CANCEL", -nominal, 0, 0, after, a.paid.map(|_| refunded), acct.stored_balance(), acct.pending()));
        }
        // Coins that expired from its own lot are ended first, without being taken again.
        let expired = a.lot.map_or(0, |l| self.lots[l].expired);
        let absorbed = (expired - a.absorbed).clamp(0, nominal);
        let wanted = nominal - absorbed;
        let available = self.visible(user, now);
        if wanted > available && policy == Short::Reject {
            return Err("INSUFFICIENT_BALANCE");
        }
        // NEGATIVE takes it all, the part beyond the user's coins as debt.
        let take = if policy == Short::Negative { wanted } else { wanted.min(available) };
        let short = wanted - take;
        let open = self.open_lots(user, now);
        let order: Vec<usize> = open.iter().copied().filter(|&i| Some(i) == a.lot).chain(open.iter().copied().filter(|&i| Some(i) != a.lot)).collect();
        for (i, n) in self.take(&order, take.min(available)).expect("the balance covers what is taken") {
            self.lots[i].remaining -= n;
        }
        next.reversed += take + absorbed;
        next.absorbed += absorbed;
        next.waived += short;
        next.state = match after {
            // A refund recorded after every coin is back: the state stays (canceled or reversed).
            _ if matches!(a.state, St::Canceled | St::Reversed) => a.state,
            0 => St::Reversed,
            _ => St::Active,
        };
        *self.alloc_mut(original) = next;
        self.requalify(original, a.canceled + a.reversed + a.waived, now);
        let acct = &mut self.accounts[user];
        acct.earned -= take;
        acct.push("REVERSE", -take, 0);
        self.settle(user, now);
        let acct = &self.accounts[user];
        Ok(("REVERSE", -take, short, short * MINOR_PER_COIN, after, a.paid.map(|_| refunded), acct.stored_balance(), acct.pending()))
    }

    fn ret(&mut self, req: usize, original: usize, ask: Ask, policy: Short, now: i64) -> Outcome {
        match self.requests.get(&req) {
            Some(Req::Return { original: o, ask: a, short: c, receipt }) if (*o, *a, *c) == (original, ask, policy) => {
                return Outcome::ReturnReplayed(*receipt);
            }
            Some(_) => return Outcome::Refused("REQUEST_ID_CONFLICT"),
            None => {}
        }
        let mut next = self.clone();
        let done = match self.requests.get(&original) {
            None => Err("NOT_FOUND"),
            Some(Req::Return { .. } | Req::Activate { .. }) => Err("NOT_REVERSIBLE"),
            Some(Req::Redeem { .. }) => next.give_back(original, ask, now),
            Some(Req::Allocate(_)) => next.take_back(original, ask, policy, now),
        };
        match done {
            Ok(receipt) => {
                next.requests.insert(req, Req::Return { original, ask, short: policy, receipt });
                *self = next;
                Outcome::Returned(receipt)
            }
            Err(code) => Outcome::Refused(code),
        }
    }

    fn adjust(&mut self, user: usize, req: usize, (coins, validity, held, policy): (i64, Option<i64>, bool, Short), now: i64) -> Outcome {
        let fingerprint = format!("{coins} {validity:?} {held} {policy:?}");
        let qualifying = qualifies(coins);
        let same = |u: usize, adjust: &Option<(String, Adjusted)>| u == user && adjust.as_ref().is_some_and(|(f, _)| *f == fingerprint);
        match self.requests.get(&req) {
            Some(Req::Allocate(a)) if same(a.user, &a.adjust) => return Outcome::AdjustReplayed(a.adjust.as_ref().unwrap().1),
            Some(Req::Redeem { user: u, adjust, .. }) if same(*u, adjust) => return Outcome::AdjustReplayed(adjust.as_ref().unwrap().1),
            Some(_) => return Outcome::Refused("REQUEST_ID_CONFLICT"),
            None => {}
        }
        if coins < 0 && !self.accounts[user].exists {
            return Outcome::Refused("USER_NOT_FOUND");
        }
        let mut next = self.clone();
        next.accounts[user].exists = true;
        next.settle(user, now);
        let stored = next.accounts[user].stored_balance();
        let answer = if coins > 0 {
            let pending_until = held.then_some(now + DAY_MS);
            let starts = pending_until.unwrap_or(now);
            let expires_at = validity.map(|d| starts + d * DAY_MS);
            let remaining = if held { coins } else { kept(stored, coins) };
            next.lots.push(Lot { user, remaining, expires_at, pending_until, expired: 0, alloc: req });
            let acct = &mut next.accounts[user];
            if held {
                acct.push("ADJUST", 0, coins);
            } else {
                acct.earned += coins;
                acct.push("ADJUST", coins, 0);
            }
            let answer = (coins, 0, pending_until, expires_at.filter(|_| !held), acct.stored_balance(), acct.pending());
            let a = Alloc {
                user,
                event: 0,
                coins,
                lot: Some(next.lots.len() - 1),
                paid: None,
                refunded: 0,
                canceled: 0,
                reversed: 0,
                waived: 0,
                absorbed: 0,
                state: if held { St::Pending } else { St::Active },
                validity,
                adjust: Some((fingerprint, answer)),
                campaign: None,
                tier_bps: 10_000,
                base: if qualifying { coins } else { 0 },
                activated_at: (!held).then_some(now),
            };
            next.requests.insert(req, Req::Allocate(a));
            if !held {
                next.qualify_credit(req, now);
            }
            answer
        } else {
            let asked = -coins;
            let available = next.visible(user, now);
            let taken = match policy {
                _ if asked <= available => asked,
                Short::Cap => available,
                Short::Negative => asked,
                Short::Reject => return Outcome::Refused("INSUFFICIENT_BALANCE"),
            };
            let order = next.open_lots(user, now);
            let takes = next.take(&order, taken.min(available)).expect("the lots hold what is available");
            for &(i, n) in &takes {
                next.lots[i].remaining -= n;
            }
            let acct = &mut next.accounts[user];
            acct.earned -= taken;
            acct.push("ADJUST", -taken, 0);
            let answer = (-taken, asked - taken, None, None, acct.stored_balance(), acct.pending());
            let receipt = (taken, 0, acct.stored_balance());
            let adjust = Some((fingerprint, answer));
            next.requests.insert(req, Req::Redeem { user, fingerprint: String::new(), receipt, taken, moves: takes, given_back: 0, restored: 0, adjust });
            answer
        };
        *self = next;
        Outcome::Adjusted(answer)
    }

    fn activate(&mut self, req: usize, original: usize, now: i64) -> Outcome {
        match self.requests.get(&req) {
            Some(Req::Activate { original: o, receipt }) if *o == original => return Outcome::ActivateReplayed(receipt.0, receipt.1, receipt.2, receipt.3),
            Some(_) => return Outcome::Refused("REQUEST_ID_CONFLICT"),
            None => {}
        }
        let Some(Req::Allocate(a)) = self.requests.get(&original).cloned() else { return Outcome::Refused("NOT_FOUND") };
        let mut next = self.clone();
        next.settle(a.user, now);
        let Some(Req::Allocate(a)) = next.requests.get(&original).cloned() else { unreachable!() };
        let coins = match a.state {
            St::Canceled | St::Reversed => return Outcome::Refused("ALREADY_REVERSED"),
            St::Active | St::Zero => 0,
            St::Pending => {
                // Early: spendable now, and the expiry clock starts now.
                let lot = a.lot.expect("a held allocation has a lot");
                let n = next.lots[lot].remaining;
                next.lots[lot].pending_until = None;
                next.lots[lot].expires_at = a.validity.map(|d| now + d * DAY_MS);
                next.lots[lot].remaining = kept(next.accounts[a.user].stored_balance(), n);
                next.alloc_mut(original).state = St::Active;
                next.alloc_mut(original).activated_at = Some(now);
                let acct = &mut next.accounts[a.user];
                acct.earned += n;
                acct.push("ACTIVATE", n, -n);
                next.qualify_credit(original, now);
                n
            }
        };
        let acct = &next.accounts[a.user];
        let receipt = (coins == 0, coins, acct.stored_balance(), acct.pending());
        next.requests.insert(req, Req::Activate { original, receipt });
        *self = next;
        Outcome::Activated(receipt.0, receipt.1, receipt.2, receipt.3)
    }
}

fn refusal_code(e: StoreError) -> &'static str {
    match e {
        StoreError::Refused(r) => match r {
            Refusal::RequestIdConflict(_) => "REQUEST_ID_CONFLICT",
            Refusal::LimitReached { .. } | Refusal::AmountTooLarge => "LIMIT_REACHED",
            Refusal::UserNotFound(_) => "USER_NOT_FOUND",
            Refusal::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            Refusal::OriginalNotFound(_) | Refusal::AllocationNotFound(_) => "NOT_FOUND",
            Refusal::NotReversible(_) => "NOT_REVERSIBLE",
            Refusal::AlreadyReversed(_) => "ALREADY_REVERSED",
            Refusal::ReversalExceedsRemaining { .. } => "REVERSAL_EXCEEDS_REMAINING",
            Refusal::AmountNotRecorded(_) => "AMOUNT_NOT_RECORDED",
            other => panic!("unexpected refusal {other:?}"),
        },
        other => panic!("unexpected store error {other}"),
    }
}

/// Which staff credits the model makes with `qualifying: true`.
fn qualifies(coins: i64) -> bool {
    coins > 0 && coins % 3 == 0
}

fn ids(user: usize, req: usize) -> (CompanyId, UserId, RequestId) {
    (CompanyId::parse(COMPANY).unwrap(), UserId::parse(&format!("U{user}")).unwrap(), RequestId::parse(&format!("R{req}")).unwrap())
}

async fn apply(store: &dyn Store, model: &mut Model, op: &Op, now: i64) -> Option<(Outcome, Outcome)> {
    Some(match *op {
        Op::Allocate { user, event, req, minor } => {
            let (company, user_id, request_id) = ids(user, req);
            let amount_minor = matches!(EVENTS[event].1, Earn::Percent(_)).then_some(minor);
            let cmd = AllocateCmd {
                purchase: Purchase { amount_minor, ..Default::default() },
                company,
                user: user_id,
                event: EventName::parse(EVENTS[event].0).unwrap(),
                request_id,
                now_ms: now,
            };
            // Simulated first: the real call must then do exactly that.
            let sim = store.simulate(SimulateCmd::Allocate(cmd.clone())).await.unwrap();
            let (got, balance) = match store.allocate(vec![cmd]).await.pop().unwrap() {
                Ok(AllocateOk::Allocated { coins, balance, .. }) => (Outcome::Allocated(coins.get()), Some(balance)),
                Ok(AllocateOk::Replayed { coins }) => (Outcome::Replayed(coins.get()), None),
                Ok(AllocateOk::Zero) => (Outcome::Zero, None),
                Err(e) => (Outcome::Refused(refusal_code(e)), None),
            };
            let predicted = match sim.outcome {
                Some(SimOutcome::Apply) if sim.coins == Some(0) => Outcome::Zero,
                Some(SimOutcome::Apply) => Outcome::Allocated(sim.coins.unwrap()),
                Some(SimOutcome::Replay) => Outcome::Replayed(sim.coins.unwrap()),
                _ => Outcome::Refused(refusal_code(StoreError::Refused(sim.refusal.clone().unwrap()))),
            };
            assert_eq!(predicted, got, "simulated {sim:?}");
            if let Some(balance) = balance {
                assert_eq!(sim.balance_after, Some(balance), "simulated {sim:?}");
            }
            (got, model.allocate(user, event, req, minor, now))
        }
        Op::RedeemCoins { user, req, .. } | Op::RedeemMinor { user, req, .. } => {
            let amount = match *op {
                Op::RedeemCoins { coins, .. } => RedeemAmount::Coins(Coins::amount(coins).unwrap()),
                Op::RedeemMinor { minor, .. } => RedeemAmount::Minor(minor),
                _ => unreachable!(),
            };
            let (company, user_id, request_id) = ids(user, req);
            let got = match store.redeem(RedeemCmd { company, user: user_id, request_id, amount, now_ms: now }).await {
                Ok(a) if a.replayed => Outcome::RedeemReplayed(a.receipt.coins, a.receipt.amount_minor, a.receipt.balance),
                Ok(a) => Outcome::Redeemed(a.receipt.coins, a.receipt.amount_minor, a.receipt.balance),
                Err(e) => Outcome::Refused(refusal_code(e)),
            };
            (got, model.redeem(user, req, amount, now))
        }
        Op::Return { req, original, ask, short } => {
            let (company, _, request_id) = ids(0, req);
            let original_id = RequestId::parse(&format!("R{original}")).unwrap();
            let mut cmd = ReverseCmd::whole(company, request_id, original_id, now);
            cmd.ask = match ask {
                Ask::Whole => ReturnAsk::Whole,
                Ask::Coins(k) => ReturnAsk::Coins(k),
                Ask::Minor(m) => ReturnAsk::AmountMinor(m),
            };
            cmd.on_shortfall = short.policy();
            let receipt = |r: &coins::domain::reverse::ReverseReceipt| -> ReturnReceipt {
                let kind = if r.kind == ReturnKind::Cancel { "CANCEL" } else { "REVERSE" };
                (kind, r.coins, r.coins_short, r.short_amount_minor, r.coins_remaining, r.amount_refunded_minor, r.balance, r.pending_balance)
            };
            // Simulated first: the real call must then do exactly that.
            let sim = store.simulate(SimulateCmd::Reverse(cmd.clone())).await.unwrap();
            let got = match store.reverse(cmd).await {
                Ok(a) if a.replayed => Outcome::ReturnReplayed(receipt(&a.receipt)),
                Ok(a) => Outcome::Returned(receipt(&a.receipt)),
                Err(e) => Outcome::Refused(refusal_code(e)),
            };
            match &got {
                Outcome::Returned(r) | Outcome::ReturnReplayed(r) => {
                    let outcome = if matches!(got, Outcome::Returned(_)) { SimOutcome::Apply } else { SimOutcome::Replay };
                    assert_eq!((sim.outcome, sim.coins, sim.balance_after, sim.pending_after), (Some(outcome), Some(r.1), Some(r.6), Some(r.7)), "{sim:?}");
                }
                Outcome::Refused(code) => assert_eq!(sim.refusal.clone().map(|r| refusal_code(StoreError::Refused(r))), Some(*code), "{sim:?}"),
                other => unreachable!("a return answered {other:?}"),
            }
            (got, model.ret(req, original, ask, short, now))
        }
        Op::Adjust { user, req, coins, validity, held, short } => {
            let (company, user_id, request_id) = ids(user, req);
            let cmd = AdjustCmd {
                company,
                user: user_id,
                request_id,
                coins,
                reason: "model".into(),
                expiry: validity.map_or(AdjustExpiry::Never, AdjustExpiry::ValidityDays),
                pending_days: held.then_some(1),
                qualifying: qualifies(coins),
                on_shortfall: short.policy(),
                client_id: "model".into(),
                now_ms: now,
            };
            cmd.check().expect("the model makes valid adjustments");
            let answer = |r: &AdjustReceipt| (r.coins, r.coins_short, r.activates_at, r.expires_at, r.balance, r.pending_balance);
            let got = match store.adjust(cmd).await {
                Ok(a) if a.replayed => Outcome::AdjustReplayed(answer(&a.receipt)),
                Ok(a) => Outcome::Adjusted(answer(&a.receipt)),
                Err(e) => Outcome::Refused(refusal_code(e)),
            };
            (got, model.adjust(user, req, (coins, validity, held, short), now))
        }
        Op::Activate { req, original } => {
            let (company, _, request_id) = ids(0, req);
            let target = Target::Request(RequestId::parse(&format!("R{original}")).unwrap());
            let got = match store.activate(ActivateCmd { company, request_id, target, now_ms: now }).await {
                Ok(a) if a.replayed => Outcome::ActivateReplayed(a.receipt.already_active, a.receipt.coins, a.receipt.balance, a.receipt.pending_balance),
                Ok(a) => Outcome::Activated(a.receipt.already_active, a.receipt.coins, a.receipt.balance, a.receipt.pending_balance),
                Err(e) => Outcome::Refused(refusal_code(e)),
            };
            (got, model.activate(req, original, now))
        }
        Op::Advance { .. } => return None,
        Op::Sweep => {
            store.sweep_expired(now).await.unwrap();
            for user in 0..USERS {
                model.settle(user, now);
                model.evaluate(user, now);
            }
            return None;
        }
    })
}

async fn check_sequence(backend: Backend, ops: Vec<Op>) {
    let Some(db) = test_db(backend).await else { return };
    let store = &*db.store;
    for (event, earn, validity, cap, pending_days) in EVENTS {
        let (amount, earning) = match earn {
            Earn::Fixed(n) => (Coins::amount(n), Earning { pending_days, ..Default::default() }),
            Earn::Percent(bps) => (None, Earning { amount_type: AmountType::Percent, rate_bps: Some(bps), pending_days, ..Default::default() }),
        };
        let values = ConfigValues {
            kind: ConfigKind::Default,
            company_id: CompanyId::parse(COMPANY).unwrap(),
            event: EventName::parse(event).unwrap(),
            amount,
            earning,
            validity_days: validity,
            max_per_user_per_day: None,
            max_per_user: cap,
            active: true,
        };
        store.create_config(values, "model", START_MS).await.unwrap();
    }
    let value = CoinValue { company: Some(CompanyId::parse(COMPANY).unwrap()), currency: "INR".into(), minor_units_per_coin: MINOR_PER_COIN };
    store.set_coin_value(value, "model", START_MS).await.unwrap();
    for (i, (events, from, to, bonus, limit)) in CAMPAIGNS.into_iter().enumerate() {
        let terms = CampaignTerms {
            name: format!("K{i}"),
            events: events.map(|e| e.iter().map(|n| EventName::parse(n).unwrap()).collect()),
            starts_at: START_MS + from * HOUR_MS,
            ends_at: START_MS + to * HOUR_MS,
            reward: match bonus {
                Bonus::Times(bps) => Reward::Multiplier(bps),
                Bonus::Plus(n) => Reward::Bonus(n),
            },
            max_triggers_per_user: limit,
        };
        store.create_campaign(&CompanyId::parse(COMPANY).unwrap(), terms, "model", START_MS).await.unwrap();
    }
    let scheme = TierScheme {
        basis: Basis::Rolling,
        window_days: Some(TIER_WINDOW_DAYS),
        retention_days: Some(TIER_RETENTION_DAYS),
        downgrade: Downgrade::OneDown,
        tiers: TIERS.iter().map(|&(code, threshold, bps)| Tier { code: code.into(), name: code.into(), threshold, earn_multiplier_bps: bps }).collect(),
    };
    store.put_tiers(&CompanyId::parse(COMPANY).unwrap(), scheme, "model", START_MS).await.unwrap();

    let mut model = Model::default();
    let mut now = START_MS;
    for (step, op) in ops.iter().enumerate() {
        if let Op::Advance { hours } = op {
            now += hours * HOUR_MS;
        }
        if let Some((got, expected)) = apply(store, &mut model, op, now).await {
            assert_eq!(got, expected, "step {step}: {op:?}");
        }
        for user in 0..USERS {
            let user_id = UserId::parse(&format!("U{user}")).unwrap();
            let acct = &model.accounts[user];
            let balance = store.balance(&user_id, now).await.unwrap().map(|b| b.balance);
            assert_eq!(balance, acct.exists.then(|| model.balance(user, now)), "balance of U{user} after step {step}: {op:?}");
            let Some(summary) = store.user_summary(&user_id, now).await.unwrap() else { continue };
            // Due but unwritten (no read writes): held lots whose hold ended, lots past expiry.
            let lots = model.lots.iter().filter(|l| l.user == user && l.remaining > 0);
            let activated: i64 = lots.clone().filter(|l| l.pending_until.is_some_and(|t| t <= now)).map(|l| l.remaining).sum();
            let unswept: i64 = lots.filter(|l| l.expires_at.is_some_and(|t| t <= now)).map(|l| l.remaining).sum();
            assert_eq!(
                (summary.balance, summary.pending_balance, summary.lifetime_earned, summary.lifetime_redeemed, summary.lifetime_expired),
                (model.balance(user, now), model.held(user, now), acct.earned + activated, acct.redeemed, acct.expired + unswept),
                "summary of U{user} after step {step}: {op:?}"
            );
            let history: Vec<(String, i64, i64, i64, i64)> = store
                .transactions(&user_id, None, 500)
                .await
                .unwrap()
                .into_iter()
                .rev()
                .map(|e| (e.kind.as_str().to_owned(), e.coins, e.balance_after, e.extra.pending_coins, e.extra.pending_after))
                .collect();
            let expected: Vec<(String, i64, i64, i64, i64)> = acct.entries.iter().map(|&(k, c, b, p, pa)| (k.to_owned(), c, b, p, pa)).collect();
            assert_eq!(history, expected, "history of U{user} after step {step}: {op:?}");
            let tier = store.member_tier(&CompanyId::parse(COMPANY).unwrap(), &user_id, now).await.unwrap().expect("the company has tiers");
            let t = model.tiers[user];
            assert_eq!(
                (tier.view.code.as_str(), tier.view.qualifying_coins, tier.view.expires_at),
                (TIERS[t.idx].0, model.qualifying(user, now), t.expires),
                "tier of U{user} after step {step}: {op:?}"
            );
        }
        let report = store.verify().await.unwrap();
        assert!(report.problems.is_empty(), "after step {step} ({op:?}): {:?}", report.problems);
    }
}

/// `cases` per run; `MODEL_CASES` sets more for a long run (`MODEL_CASES=2000 cargo nextest run lifecycle_model`).
fn run_cases(backend: Backend, cases: u32) {
    let cases = std::env::var("MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    let config = ProptestConfig { cases, ..ProptestConfig::default() };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..45))| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check_sequence(backend, ops));
    });
}

#[test]
fn random_lifecycle_sequences_match_the_model_on_sqlite() {
    run_cases(Backend::Sqlite, 64);
}

#[test]
fn random_lifecycle_sequences_match_the_model_on_postgres() {
    run_cases(Backend::Postgres, 32);
}

/// An allocation whose own lot expired in part gives back only what is left of it (here 10
/// credited, 4 spent, 6 expired: the reversal takes 4, from the other lot), and one whose lot
/// expired whole takes nothing; the model and both backends agree step by step.
fn reversal_after_expiry() -> Vec<Op> {
    vec![
        Op::Allocate { user: 0, event: 0, req: 0, minor: 1 },
        Op::Allocate { user: 0, event: 1, req: 1, minor: 1 },
        Op::RedeemCoins { user: 0, req: 2, coins: 4 },
        Op::Advance { hours: 49 },
        Op::Return { req: 3, original: 0, ask: Ask::Whole, short: Short::Reject },
        Op::Allocate { user: 1, event: 2, req: 4, minor: 1 },
        Op::Advance { hours: 25 },
        Op::Sweep,
        Op::Return { req: 5, original: 4, ask: Ask::Whole, short: Short::Reject },
        Op::Return { req: 6, original: 2, ask: Ask::Whole, short: Short::Reject },
    ]
}

/// A held purchase refunded in part during the hold (a cancel), activated early, spent, then
/// refunded further with the coins gone (refused, then capped), and a redemption returned in parts.
fn a_shops_week() -> Vec<Op> {
    vec![
        Op::Allocate { user: 0, event: 4, req: 0, minor: 1 },
        Op::Allocate { user: 0, event: 3, req: 1, minor: 2_999 },
        Op::Return { req: 2, original: 0, ask: Ask::Coins(5), short: Short::Reject },
        Op::Activate { req: 3, original: 0 },
        Op::Activate { req: 4, original: 0 },
        Op::RedeemCoins { user: 0, req: 5, coins: 24 },
        Op::Return { req: 6, original: 1, ask: Ask::Minor(1_500), short: Short::Reject },
        Op::Return { req: 6, original: 1, ask: Ask::Minor(1_500), short: Short::Cap },
        Op::Return { req: 7, original: 5, ask: Ask::Coins(10), short: Short::Reject },
        Op::Return { req: 8, original: 1, ask: Ask::Minor(1_499), short: Short::Reject },
        Op::Advance { hours: 30 },
        Op::Return { req: 9, original: 5, ask: Ask::Whole, short: Short::Reject },
        Op::Return { req: 10, original: 3, ask: Ask::Whole, short: Short::Reject },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversing_an_allocation_whose_lot_expired_takes_back_only_what_is_left_on_sqlite() {
    check_sequence(Backend::Sqlite, reversal_after_expiry()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversing_an_allocation_whose_lot_expired_takes_back_only_what_is_left_on_postgres() {
    check_sequence(Backend::Postgres, reversal_after_expiry()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shops_week_of_holds_refunds_and_returns_matches_the_model_on_sqlite() {
    check_sequence(Backend::Sqlite, a_shops_week()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shops_week_of_holds_refunds_and_returns_matches_the_model_on_postgres() {
    check_sequence(Backend::Postgres, a_shops_week()).await;
}
