//! Status tiers in storage: a company's scheme set up, changed and removed, manual floors, and
//! what the API and the dashboard read — in one order for both backends (the rules are
//! `domain::tiers`; the ledger flows in `store/ledger.rs` move qualifying coins and upgrade).
//!
//! Setting a scheme up for a company that had none counts every credit it ever made (from the
//! allocation records) and places every member, in the same transaction; a change of scheme
//! places every member again. A scheme change is announced like a configuration change, since
//! allocations read the scheme with their configuration from the same cache.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::StoreResult;
use super::ledger::LedgerTx;
use super::model::RecordRow;
use crate::domain::tiers::{QualifyingMove, TierChange, TierScheme, TierState, TierView, qualifying_day};
use crate::domain::webhooks::EventType;
use crate::domain::{CompanyId, Refusal, UserId};

/// A member's tier as read: the scheme's view of it, or nothing when the company has no scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberTier {
    pub view: TierView,
    pub floor_reason: Option<String>,
}

/// A stored scheme with when it was last set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScheme {
    pub scheme: TierScheme,
    pub updated_at: i64,
}

/// Members by their stored placement and floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierCount {
    pub code: Option<String>,
    pub floor: Option<String>,
    pub members: i64,
}

/// One tier change as the member's history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierHistory {
    pub kind: String,
    pub from: Option<String>,
    pub to: String,
    pub qualifying: i64,
    pub expires_at: Option<i64>,
    pub cause: String,
    pub request_id: Option<String>,
    pub at: i64,
}

#[async_trait]
pub trait TierStore: Send + Sync {
    /// Sets the company's scheme up (counting its history and placing its members) or changes it.
    /// The number of members whose tier changed.
    async fn put_tiers(&self, company: &CompanyId, scheme: TierScheme, actor: &str, now_ms: i64) -> StoreResult<u64>;
    async fn tiers(&self, company: &CompanyId) -> StoreResult<Option<StoredScheme>>;
    /// Removes the scheme, every member's tier and the qualifying coins counted for it.
    async fn delete_tiers(&self, company: &CompanyId) -> StoreResult<()>;
    /// Sets (or, `None`, removes) a member's manual floor.
    async fn set_tier_floor(&self, company: &CompanyId, user: &UserId, floor: Option<String>, reason: Option<String>, now_ms: i64) -> StoreResult<MemberTier>;
    /// A member's tier at `now_ms`; `None` when the company has no scheme.
    async fn member_tier(&self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Option<MemberTier>>;
    /// The member's latest tier changes, newest first.
    async fn tier_history(&self, company: &CompanyId, user: &UserId, limit: i64) -> StoreResult<Vec<TierHistory>>;
    /// The tier code of each of the company's members with a user id in `[first, last]`: now
    /// (`at_ms` `None`), or as the latest tier change at or before `at_ms` left it (a member with
    /// none was in the first tier). Empty when the company has no scheme.
    async fn tiers_between(&self, company: &CompanyId, (first, last): (&str, &str), at_ms: Option<i64>) -> StoreResult<HashMap<String, String>>;
    /// How many members have each (placement, floor): the scheme says which tier that is.
    async fn tier_counts(&self, company: &CompanyId) -> StoreResult<Vec<TierCount>>;
}

/// What setting a scheme needs beyond the ledger's fetches and writes.
pub(crate) trait TierTx: LedgerTx {
    /// Stores the scheme; the one it replaces, if any.
    async fn write_scheme(&mut self, company: &CompanyId, scheme: &TierScheme, actor: &str, now_ms: i64) -> StoreResult<Option<TierScheme>>;
    /// Adds a page of the history's qualifying coins to the members' days (a rolling scheme),
    /// summed by [`by_day`]. A backend may hold them until [`TierTx::days_counted`].
    async fn add_days(&mut self, company: &CompanyId, days: &[QualifyingDay]) -> StoreResult<()>;
    /// The whole history's days were added: anything held is written now.
    async fn days_counted(&mut self, company: &CompanyId) -> StoreResult<()>;
    /// Adds to members' running totals.
    async fn add_totals(&mut self, company: &CompanyId, totals: &[(UserId, i64)]) -> StoreResult<()>;
    /// Forgets every qualifying coin counted for the company (before counting them again).
    async fn reset_qualifying(&mut self, company: &CompanyId) -> StoreResult<()>;
    /// Removes the scheme, the members' tier columns and the qualifying coins.
    async fn remove_scheme(&mut self, company: &CompanyId) -> StoreResult<bool>;
    /// A page of the company's credit records (allocations and adjustment credits, no aliases)
    /// with request ids after `after`, in request id order.
    async fn credit_records(&mut self, company: &CompanyId, after: &str, limit: i64) -> StoreResult<Vec<RecordRow>>;
    /// A page of the members with qualifying coins or a tier, in user id order after `after`
    /// (their rows locked, in the order batches lock them), each with their tier and qualifying
    /// coins since `since_ms` (`None`: their running total).
    async fn members_page(&mut self, company: &CompanyId, after: &str, limit: i64, since_ms: Option<i64>) -> StoreResult<Vec<(UserId, TierState, i64)>>;
    /// Stores members' tiers, each with the change to report, if any.
    async fn write_tiers(&mut self, company: &CompanyId, tiers: &[(UserId, TierState, Option<TierChange>)], now_ms: i64) -> StoreResult<()>;
    /// Tells every process to read configurations (and schemes) again.
    async fn announce_tiers_change(&mut self) -> StoreResult<()>;
}

/// A member's qualifying coins of one UTC day, as a rolling scheme keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QualifyingDay {
    pub user: UserId,
    pub day: i64,
    pub coins: i64,
}

/// Qualifying moves summed by member and day ([`qualifying_day`] of each move's time), in
/// (member, day) order (the order batches lock members in); days that sum to nothing are left
/// out. One row per member and day is what a rolling window needs, and writing each once keeps a
/// statement from touching a row twice.
pub(crate) fn by_day<'a>(moves: impl IntoIterator<Item = (&'a UserId, &'a QualifyingMove)>) -> Vec<QualifyingDay> {
    let mut days: BTreeMap<(&str, i64), (&UserId, i64)> = BTreeMap::new();
    for (user, m) in moves {
        days.entry((user.as_str(), qualifying_day(m.earned_at))).or_insert((user, 0)).1 += m.coins;
    }
    days.into_iter().filter(|(_, (_, coins))| *coins != 0).map(|((_, day), (user, coins))| QualifyingDay { user: user.clone(), day, coins }).collect()
}

/// Adds to a member's qualifying coins of a day (both backends; PostgreSQL numbers the
/// placeholders).
pub(crate) const ADD_DAY_SQL: &str = "INSERT INTO qualifying_days (user_id, day, company_id, coins) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (user_id, day) DO UPDATE SET coins = qualifying_days.coins + excluded.coins";

/// Credit records (and members) read at a time when a scheme is set up.
const HISTORY_PAGE: i64 = 10_000;

/// Sets the scheme up or changes it, then places every member.
pub(crate) async fn put<T: TierTx>(tx: &mut T, company: &CompanyId, scheme: &TierScheme, actor: &str, now_ms: i64) -> StoreResult<u64> {
    // A new scheme, or one counting on another basis, counts the history afresh.
    let before = tx.write_scheme(company, scheme, actor, now_ms).await?;
    if before.is_none_or(|b| b.basis != scheme.basis) {
        tx.reset_qualifying(company).await?;
        // The history, a page at a time; each member's total is added once at the end (memory
        // grows with the members, not with the history).
        let (mut after, mut totals) = (String::new(), HashMap::<UserId, i64>::new());
        loop {
            let page = tx.credit_records(company, &after, HISTORY_PAGE).await?;
            let moves: Vec<(UserId, QualifyingMove)> = page
                .iter()
                .filter_map(|row| {
                    let (earned_at, coins) = row.qualifying_with(row.returned()).filter(|(_, c)| *c != 0)?;
                    let moved = QualifyingMove { earned_at, request_id: row.request_id.clone(), by: row.request_id.clone(), coins };
                    Some((UserId::from_trusted(row.user.clone()), moved))
                })
                .collect();
            for (user, moved) in &moves {
                *totals.entry(user.clone()).or_default() += moved.coins;
            }
            if scheme.dated() {
                tx.add_days(company, &by_day(moves.iter().map(|(user, m)| (user, m)))).await?;
            }
            match page.last() {
                Some(last) if page.len() as i64 == HISTORY_PAGE => after.clone_from(&last.request_id),
                _ => break,
            }
        }
        if scheme.dated() {
            tx.days_counted(company).await?;
        }
        // In user id order: the order every batch locks members in.
        let mut totals: Vec<(UserId, i64)> = totals.into_iter().filter(|(_, n)| *n != 0).collect();
        totals.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for page in totals.chunks(HISTORY_PAGE as usize) {
            tx.add_totals(company, page).await?;
        }
    }
    let (mut changed, mut after) = (0, String::new());
    loop {
        let page = tx.members_page(company, &after, HISTORY_PAGE, scheme.window_start(now_ms)).await?;
        let mut writes = Vec::new();
        for (user, state, qualifying) in &page {
            let (placed, change) = scheme.after_scheme_change(state, *qualifying, now_ms);
            if placed != *state {
                changed += u64::from(change.is_some());
                writes.push((user.clone(), placed, change));
            }
        }
        tx.write_tiers(company, &writes, now_ms).await?;
        match page.last() {
            Some((user, ..)) if page.len() as i64 == HISTORY_PAGE => after = user.to_string(),
            _ => break,
        }
    }
    tx.announce_tiers_change().await?;
    Ok(changed)
}

pub(crate) async fn delete<T: TierTx>(tx: &mut T, company: &CompanyId) -> StoreResult<()> {
    if !tx.remove_scheme(company).await? {
        return Err(Refusal::TiersNotConfigured(company.clone()).into());
    }
    tx.announce_tiers_change().await
}

/// Sets a member's floor (the member must belong to the company; a new one is opened, as a
/// credit would).
pub(crate) async fn floor<T: TierTx>(
    tx: &mut T,
    company: &CompanyId,
    user: &UserId,
    (floor, reason): (Option<String>, Option<String>),
    now_ms: i64,
) -> StoreResult<MemberTier> {
    let scheme = tx.tier_scheme(company).await?.ok_or_else(|| Refusal::TiersNotConfigured(company.clone()))?;
    if let Some(code) = floor.as_deref().filter(|c| scheme.index_of(Some(c)).is_none()) {
        return Err(Refusal::TierUnknown(code.to_owned()).into());
    }
    match tx.account(user).await? {
        None => tx.open_account(company, user, now_ms).await?,
        Some(a) if a.company != *company => return Err(Refusal::UserCompanyMismatch { user: user.clone(), company: company.clone() }.into()),
        Some(_) => {}
    }
    let qualifying = tx.qualifying(user, scheme.window_start(now_ms)).await?;
    let state = tx.tier(user).await?;
    let (after, change) = scheme.with_floor(&state, floor.as_deref(), reason.as_deref(), qualifying, now_ms);
    tx.set_tier(company, user, &after, change.as_ref(), now_ms).await?;
    Ok(MemberTier { view: scheme.view(&after, qualifying), floor_reason: after.floor_reason })
}

/// The SQL of [`TierStore::tiers_between`], in both backends' dialect but for the placeholders:
/// each member's stored placement and floor, and each member's latest change at or before an
/// instant.
pub(crate) const TIERS_NOW_SQL: &str = "SELECT user_id, tier_code, tier_floor FROM users WHERE company_id = ?1 AND user_id >= ?2 AND user_id <= ?3";
pub(crate) const TIERS_AT_SQL: &str = "SELECT t.user_id, t.to_tier FROM tier_changes t WHERE t.company_id = ?1 AND t.user_id >= ?2 AND t.user_id <= ?3 \
     AND t.change_id = (SELECT MAX(x.change_id) FROM tier_changes x WHERE x.user_id = t.user_id AND x.company_id = t.company_id AND x.created_at <= ?4)";

/// Each member's tier code from what [`TIERS_NOW_SQL`] or [`TIERS_AT_SQL`] read.
pub(crate) fn codes(scheme: &TierScheme, now: Vec<(String, Option<String>, Option<String>)>, at: Option<Vec<(String, String)>>) -> HashMap<String, String> {
    match at {
        Some(changes) => {
            let mut codes: HashMap<String, String> = now.into_iter().map(|(user, ..)| (user, scheme.tiers[0].code.clone())).collect();
            codes.extend(changes);
            codes
        }
        None => now
            .into_iter()
            .map(|(user, code, floor)| {
                let state = TierState { code, floor, ..TierState::default() };
                (user, scheme.tiers[scheme.current(&state)].code.clone())
            })
            .collect(),
    }
}

/// A member's tier from its parts, as the read side assembles it.
pub fn member_tier(scheme: &TierScheme, state: &TierState, qualifying: i64) -> MemberTier {
    MemberTier { view: scheme.view(state, qualifying), floor_reason: state.floor_reason.clone() }
}

/// A page of members with their tier columns and running total, in both backends' dialect but
/// for the placeholders (PostgreSQL adds `FOR UPDATE`).
pub(crate) const MEMBERS_PAGE_SQL: &str = "SELECT user_id, tier_code, tier_entered_at, tier_expires_at, tier_cause, tier_floor, tier_floor_reason, qualifying_total \
     FROM users WHERE company_id = ?1 AND user_id > ?2 AND (qualifying_total <> 0 OR tier_code IS NOT NULL OR tier_floor IS NOT NULL) \
     ORDER BY user_id LIMIT ?3";

/// The event each change of a batch is reported as, with its subscription bit.
pub(crate) fn change_events<'a>(changes: impl Iterator<Item = &'a TierChange>) -> (Vec<&'static str>, Vec<i64>) {
    changes.map(|c| EventType::of_tier_change(c.kind)).map(|e| (e.as_str(), e.bit())).unzip()
}

/// The tier columns of a user row, as both backends read them.
pub(crate) const TIER_COLUMNS: &str = "tier_code, tier_entered_at, tier_expires_at, tier_cause, tier_floor, tier_floor_reason";

/// A tier change's columns, as both backends write them.
pub(crate) fn change_columns(change: &TierChange) -> (&'static str, Option<&str>, &str, i64, Option<i64>, &'static str, Option<&str>) {
    (
        change.kind.as_str(),
        change.from.as_deref(),
        change.to.as_str(),
        change.qualifying,
        change.state.expires_at,
        change.cause.as_str(),
        change.cause.request_id(),
    )
}
