//! Simulation: the real flows of `ledger.rs` run against [`DryRun`], a [`LedgerTx`] that reads
//! through to the database and keeps every write to itself. The backends run it in a transaction
//! that cannot write (PostgreSQL `READ ONLY`, SQLite `query_only`) and roll it back, so a
//! simulation changes nothing — not a row, not a lock — and still decides exactly as the real call
//! would (the same code decides both).
//!
//! What the flows would have written and read back is kept here instead: a claim is "won" when
//! the request id is free and no live allocation holds the order; held lots the flow activates
//! become spendable; lot moves (expiries among them) are applied to what later reads of lots see.

use std::collections::{HashMap, HashSet};

use super::config_cache::Resolved;
use super::ledger::{self, Claim, CreditRecord, LedgerTx, Returned};
use super::model::RecordRow;
use super::{StoreError, StoreResult};
use crate::domain::allocate::{AllocateOk, NewLot, RecordFields};
use crate::domain::allocation::{AllocationState, HeldLot, OrderHolder};
use crate::domain::campaigns::CampaignId;
use crate::domain::earn::CalculationRecord;
use crate::domain::expire::DueLot;
use crate::domain::ledger::{Account, Lifetime, LotMove, NewEntry, RequestKind, StoredRequest};
use crate::domain::lots::OpenLot;
use crate::domain::redeem::CoinValue;
use crate::domain::reverse::{Original, OwnLot, Taken};
use crate::domain::simulate::{SimOutcome, SimulateCmd, Simulation};
use crate::domain::tiers::{QualifyingMove, TierChange, TierScheme, TierState};
use crate::domain::webhooks::EventType;
use crate::domain::{CoinConfig, CompanyId, EventName, OrderId, Refusal, RequestId, UserId};

/// A [`LedgerTx`] whose writes are kept in memory.
pub(crate) struct DryRun<T> {
    inner: T,
    record: Option<RecordFieldsSeen>,
    entries: Vec<NewEntry>,
    returned: Option<Returned>,
    /// Held lots seen due, and those the flow activated (spendable from then on).
    held: Vec<HeldLot>,
    activated: Vec<OpenLot>,
    /// Net coins moved per lot by the flow's writes, and of those, what its expiries took.
    moved: HashMap<i64, i64>,
    expired: HashMap<i64, i64>,
    /// Lots seen, with what the database holds in them and when they expire (a held lot the flow
    /// activated: its coins and its new expiry).
    known: HashMap<i64, (i64, Option<i64>)>,
    /// The kind of each entry the flow wrote, by the id given it.
    kinds: HashMap<i64, crate::domain::ledger::EntryKind>,
    /// The user's balance and held coins as the flow found them, and who they are.
    account: Option<Account>,
    user: Option<UserId>,
    next_id: i64,
    /// Tiers: the scheme the flow read, the member's tier as found and as the flow would leave
    /// it, and the qualifying coins it would add.
    scheme: Option<TierScheme>,
    tier_found: Option<TierState>,
    tier_left: Option<TierState>,
    qualified: Vec<QualifyingMove>,
    /// Records the flow made active: when, and their new expiry.
    activated_records: HashMap<String, (i64, Option<i64>)>,
}

/// What an allocation's claim would have recorded.
#[derive(Debug, Clone)]
struct RecordFieldsSeen {
    state: AllocationState,
    base_coins: i64,
    coin_config_id: String,
    calculation: String,
    activates_at: Option<i64>,
    expires_at: Option<i64>,
}

impl RecordFieldsSeen {
    fn of(r: &RecordFields) -> Self {
        Self {
            state: r.state,
            base_coins: r.base_coins,
            coin_config_id: r.coin_config_id.clone(),
            calculation: r.calculation.clone(),
            activates_at: r.activates_at,
            expires_at: r.expires_at,
        }
    }
}

impl<T: LedgerTx> DryRun<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            record: None,
            entries: Vec::new(),
            returned: None,
            held: Vec::new(),
            activated: Vec::new(),
            moved: HashMap::new(),
            expired: HashMap::new(),
            known: HashMap::new(),
            kinds: HashMap::new(),
            account: None,
            user: None,
            next_id: -1,
            scheme: None,
            tier_found: None,
            tier_left: None,
            qualified: Vec::new(),
            activated_records: HashMap::new(),
        }
    }
}

/// Simulates `cmd` on `tx` (reads only); `resolved` is the resolution of an allocation's company
/// and event.
pub(crate) async fn simulate<T: LedgerTx>(tx: T, cmd: &SimulateCmd, resolved: &Resolved) -> StoreResult<Simulation> {
    let config = resolved.config.as_ref();
    let mut dry = DryRun::new(tx);
    let company = match cmd {
        SimulateCmd::Allocate(c) => &c.company,
        SimulateCmd::Reverse(c) => &c.company,
    };
    dry.scheme = dry.inner.tier_scheme(company).await?;
    let refused = |r: Refusal| Simulation { outcome: Some(SimOutcome::Refuse), refusal: Some(r), ..Simulation::default() };
    let mut sim = match cmd {
        SimulateCmd::Allocate(c) => match ledger::allocate(&mut dry, c, config, resolved.offers()).await {
            Err(StoreError::Refused(r)) => Ok(refused(r)),
            Err(e) => Err(e),
            Ok(AllocateOk::Replayed { coins }) => Ok(Simulation { outcome: Some(SimOutcome::Replay), coins: Some(coins.get()), ..Simulation::default() }),
            Ok(AllocateOk::Zero | AllocateOk::Allocated { .. }) => Ok(dry.allocation_answer(config)),
        },
        SimulateCmd::Reverse(c) => match ledger::reverse(&mut dry, c).await {
            Err(StoreError::Refused(r)) => Ok(refused(r)),
            Err(e) => Err(e),
            Ok(applied) => {
                let r = applied.receipt;
                let outcome = if applied.replayed { SimOutcome::Replay } else { SimOutcome::Apply };
                Ok(Simulation {
                    outcome: Some(outcome),
                    coins: Some(r.coins),
                    state: dry.returned.and_then(|x| x.state),
                    balance_after: Some(r.balance),
                    pending_after: Some(r.pending_balance),
                    ..Simulation::default()
                })
            }
        },
    }?;
    if sim.outcome == Some(SimOutcome::Apply) {
        (sim.tier_before, sim.tier_after) = dry.tiers(cmd).await?;
    }
    Ok(sim)
}

impl<T: LedgerTx> DryRun<T> {
    /// The member's tier code before and after the simulated operation (none without a scheme).
    async fn tiers(&mut self, cmd: &SimulateCmd) -> StoreResult<(Option<String>, Option<String>)> {
        let Some(scheme) = self.scheme.clone() else { return Ok((None, None)) };
        let user = match cmd {
            SimulateCmd::Allocate(c) => Some(c.user.clone()),
            SimulateCmd::Reverse(_) => self.user.clone(),
        };
        let found = match (&self.tier_found, user) {
            (Some(found), _) => found.clone(),
            (None, Some(user)) => self.inner.tier(&user).await?,
            (None, None) => TierState::default(),
        };
        let code = |state: &TierState| Some(scheme.tiers[scheme.current(state)].code.clone());
        Ok((code(&found), code(self.tier_left.as_ref().unwrap_or(&found))))
    }
}

impl<T> DryRun<T> {
    /// An allocation that would be applied: its record as the claim would keep it (a plain
    /// allocation keeps none: read from its entry), and where the user would stand.
    fn allocation_answer(&self, config: Option<&CoinConfig>) -> Simulation {
        let entry = self.entries.iter().find(|e| e.kind == crate::domain::ledger::EntryKind::Allocate);
        let mut sim = Simulation {
            outcome: Some(SimOutcome::Apply),
            coins: Some(entry.map_or(0, |e| e.coins + e.pending_coins)),
            // Earning nothing leaves the user where they were (a new user at zero).
            balance_after: entry.map(|e| e.balance_after).or(Some(self.account.as_ref().map_or(0, |a| a.balance))),
            pending_after: entry.map(|e| e.pending_after).or(Some(self.account.as_ref().map_or(0, |a| a.pending))),
            coin_config_id: config.map(|c| c.id.to_string()),
            ..Simulation::default()
        };
        match &self.record {
            Some(r) => {
                sim.state = Some(r.state);
                sim.base_coins = Some(r.base_coins);
                sim.coin_config_id = Some(r.coin_config_id.clone());
                sim.calculation = Some(r.calculation.clone());
                sim.activates_at = r.activates_at;
                sim.expires_at = r.expires_at;
            }
            None => {
                let coins = sim.coins.unwrap_or(0);
                sim.state = Some(AllocationState::Active);
                sim.base_coins = Some(coins);
                sim.calculation = Some(CalculationRecord::plain(coins).to_json());
                sim.expires_at = entry.and_then(|e| e.expires_at);
            }
        }
        sim
    }
}

impl<T: LedgerTx> LedgerTx for DryRun<T> {
    async fn request(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<StoredRequest>> {
        self.inner.request(company, request_id).await
    }

    async fn claim(&mut self, company: &CompanyId, request_id: &RequestId, claim: &Claim<'_>, _now_ms: i64) -> StoreResult<bool> {
        if self.inner.request(company, request_id).await?.is_some() {
            return Ok(false);
        }
        if let Some(r) = claim.record {
            if let (Some(order), Some(event)) = (&r.order_id, claim.event) {
                let event = EventName::from_trusted(event.to_owned());
                if self.inner.live_order(company, &event, order).await?.is_some() {
                    return Ok(false);
                }
            }
            self.record = Some(RecordFieldsSeen::of(r));
        }
        Ok(true)
    }

    async fn campaign_triggers(&mut self, company: &CompanyId, campaign: CampaignId, user: &UserId) -> StoreResult<i64> {
        self.inner.campaign_triggers(company, campaign, user).await
    }

    async fn rewrite_record(&mut self, _company: &CompanyId, _request_id: &RequestId, _coins: i64, record: &RecordFields) -> StoreResult<()> {
        self.record = Some(RecordFieldsSeen::of(record));
        Ok(())
    }

    async fn finish(&mut self, _company: &CompanyId, _request_id: &RequestId, _coins: i64, _response: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn release(&mut self, _company: &CompanyId, _request_id: &RequestId) -> StoreResult<()> {
        Ok(())
    }

    async fn account(&mut self, user: &UserId) -> StoreResult<Option<Account>> {
        let account = self.inner.account_unlocked(user).await?;
        self.account = account.clone();
        self.user = Some(user.clone());
        Ok(account)
    }

    async fn open_account(&mut self, _company: &CompanyId, _user: &UserId, _now_ms: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn count_allocations(&mut self, cmd: &crate::domain::allocate::AllocateCmd, since_ms: i64) -> StoreResult<i64> {
        self.inner.count_allocations(cmd, since_ms).await
    }

    async fn due_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<DueLot>> {
        let mut due = Vec::new();
        let mut listed = HashSet::new();
        for lot in self.inner.due_lots(company, user, now_ms).await? {
            listed.insert(lot.lot_id);
            self.known.entry(lot.lot_id).or_insert((lot.remaining, Some(lot.expires_at)));
            let remaining = lot.remaining + self.moved.get(&lot.lot_id).copied().unwrap_or(0);
            if remaining > 0 {
                due.push(DueLot { remaining, ..lot });
            }
        }
        // Lots the database does not list as due but the flow's writes made so: held lots it
        // activated, and lots it refilled (a give-back) that are past their expiry.
        for (&lot_id, &(held, expires_at)) in &self.known {
            let Some(at) = expires_at.filter(|&at| at <= now_ms && !listed.contains(&lot_id)) else { continue };
            let remaining = held + self.moved.get(&lot_id).copied().unwrap_or(0);
            if remaining > 0 {
                due.push(DueLot { lot_id, remaining, expires_at: at, event: None, coin_config_id: None });
            }
        }
        Ok(due)
    }

    async fn open_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<OpenLot>> {
        let mut open = self.inner.open_lots(company, user, now_ms).await?;
        for lot in &open {
            self.known.entry(lot.lot_id).or_insert((lot.remaining, lot.expires_at));
        }
        open.extend(self.activated.iter().filter(|l| l.expires_at.is_none_or(|t| t > now_ms)).copied());
        for lot in &mut open {
            lot.remaining += self.moved.get(&lot.lot_id).copied().unwrap_or(0);
        }
        open.retain(|l| l.remaining > 0);
        Ok(open)
    }

    async fn coin_value(&mut self, company: &CompanyId) -> StoreResult<CoinValue> {
        self.inner.coin_value(company).await
    }

    async fn live_order(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<OrderHolder>> {
        self.inner.live_order(company, event, order).await
    }

    async fn add_alias(
        &mut self,
        _company: &CompanyId,
        _request_id: &RequestId,
        _event: &EventName,
        _order: &OrderId,
        _holder: &OrderHolder,
        _now_ms: i64,
    ) -> StoreResult<bool> {
        Ok(true)
    }

    async fn original_entry(&mut self, company: &CompanyId, request_id: &RequestId, kind: RequestKind) -> StoreResult<Original> {
        self.inner.original_entry(company, request_id, kind).await
    }

    async fn own_lots(&mut self, entry_id: i64) -> StoreResult<Vec<OwnLot>> {
        let mut own = self.inner.own_lots(entry_id).await?;
        for lot in &mut own {
            lot.expired += self.expired.get(&lot.lot_id).copied().unwrap_or(0);
        }
        Ok(own)
    }

    async fn allocation(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<RecordRow>> {
        let mut row = self.inner.allocation(company, request_id).await?;
        // As `record_activation` would have left it.
        if let (Some(r), Some(&(at, expires))) = (row.as_mut(), self.activated_records.get(request_id.as_str())) {
            if r.state.as_deref() == Some(AllocationState::Pending.as_str()) {
                r.state = Some(AllocationState::Active.as_str().to_owned());
            }
            (r.activated_at, r.expires_at) = (Some(at), expires);
        }
        Ok(row)
    }

    async fn order_allocation(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<RequestId>> {
        self.inner.order_allocation(company, event, order).await
    }

    async fn returned_coins(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64> {
        self.inner.returned_coins(company, original).await
    }

    async fn record_return(&mut self, _company: &CompanyId, _original: &RequestId, returned: &Returned) -> StoreResult<()> {
        self.returned = Some(*returned);
        Ok(())
    }

    async fn taken_by(&mut self, entry_id: i64) -> StoreResult<Vec<Taken>> {
        let taken = self.inner.taken_by(entry_id).await?;
        // What these lots hold now is not read here; a lot not listed as due or open holds none.
        for t in &taken {
            self.known.entry(t.lot_id).or_insert((0, t.expires_at));
        }
        Ok(taken)
    }

    async fn restored_to_lots(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64> {
        self.inner.restored_to_lots(company, original).await
    }

    async fn due_held(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<HeldLot>> {
        let due = self.inner.due_held(company, user, now_ms).await?;
        self.held.extend(due.iter().cloned());
        Ok(due)
    }

    async fn held_lot(&mut self, entry_id: i64) -> StoreResult<Option<HeldLot>> {
        let lot = self.inner.held_lot(entry_id).await?;
        self.held.extend(lot.iter().cloned());
        Ok(lot)
    }

    async fn activate_lot(&mut self, lot_id: i64, expires_at: Option<i64>) -> StoreResult<()> {
        if let Some(h) = self.held.iter().find(|h| h.lot_id == lot_id) {
            self.activated.push(OpenLot { lot_id, remaining: h.remaining, expires_at });
            self.known.insert(lot_id, (h.remaining, expires_at));
        }
        Ok(())
    }

    async fn record_activation(&mut self, _company: &CompanyId, request_id: &RequestId, activated_at: i64, expires_at: Option<i64>) -> StoreResult<()> {
        self.activated_records.insert(request_id.to_string(), (activated_at, expires_at));
        Ok(())
    }

    async fn set_pending(&mut self, _company: &CompanyId, _user: &UserId, _pending: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn record_credit(&mut self, _company: &CompanyId, _request_id: &RequestId, _credit: &CreditRecord, _now_ms: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn insert_entry(&mut self, _company: &CompanyId, _user: &UserId, entry: &NewEntry, _now_ms: i64) -> StoreResult<i64> {
        self.entries.push(entry.clone());
        self.next_id -= 1;
        self.kinds.insert(self.next_id, entry.kind);
        Ok(self.next_id)
    }

    async fn record_events(&mut self, _company: &CompanyId, _user: &UserId, _entry_id: i64, _event: EventType, _now_ms: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn add_to_daily(&mut self, _company: &CompanyId, _entry: &NewEntry, _now_ms: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn insert_lot(&mut self, _company: &CompanyId, _user: &UserId, _entry_id: i64, _lot: &NewLot, _now_ms: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn apply_moves(&mut self, entry_id: i64, moves: &[LotMove]) -> StoreResult<()> {
        let expiry = self.kinds.get(&entry_id) == Some(&crate::domain::ledger::EntryKind::Expire);
        for m in moves {
            *self.moved.entry(m.lot_id).or_default() += m.coins;
            if expiry {
                *self.expired.entry(m.lot_id).or_default() -= m.coins;
            }
        }
        Ok(())
    }

    async fn set_balance(&mut self, _company: &CompanyId, _user: &UserId, _balance: i64, _lifetime: Lifetime, _delta: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn set_balance_qualifying(&mut self, _company: &CompanyId, _user: &UserId, _balance: i64, _delta: i64, _qualifying: i64) -> StoreResult<()> {
        // The qualifying coins are kept by `add_qualifying`, which follows.
        Ok(())
    }

    async fn tier_scheme(&mut self, company: &CompanyId) -> StoreResult<Option<TierScheme>> {
        let scheme = self.inner.tier_scheme(company).await?;
        self.scheme.clone_from(&scheme);
        Ok(scheme)
    }

    async fn current_scheme(&mut self, company: &CompanyId, _cached: Option<&std::sync::Arc<TierScheme>>) -> StoreResult<Option<std::sync::Arc<TierScheme>>> {
        Ok(self.tier_scheme(company).await?.map(std::sync::Arc::new))
    }

    async fn tier(&mut self, user: &UserId) -> StoreResult<TierState> {
        if let Some(left) = &self.tier_left {
            return Ok(left.clone());
        }
        let found = self.inner.tier(user).await?;
        self.tier_found = Some(found.clone());
        Ok(found)
    }

    async fn qualifying(&mut self, user: &UserId, since_ms: Option<i64>) -> StoreResult<i64> {
        let since = since_ms.unwrap_or(i64::MIN);
        let added: i64 = self.qualified.iter().filter(|q| q.earned_at >= since).map(|q| q.coins).sum();
        Ok(self.inner.qualifying(user, since_ms).await? + added)
    }

    async fn add_qualifying(
        &mut self,
        _company: &CompanyId,
        user: &UserId,
        qualifying: &QualifyingMove,
        _dated: bool,
        _before: Option<i64>,
        _counted: bool,
    ) -> StoreResult<i64> {
        self.qualified.push(qualifying.clone());
        self.qualifying(user, None).await
    }

    async fn set_tier(&mut self, _company: &CompanyId, _user: &UserId, state: &TierState, _change: Option<&TierChange>, _now_ms: i64) -> StoreResult<()> {
        self.tier_left = Some(state.clone());
        Ok(())
    }
}
