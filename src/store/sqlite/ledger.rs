//! The ledger on SQLite: the fetches and writes of `store/ledger.rs` in SQLite's dialect, and the
//! [`LedgerStore`] entry points that hand them to the writer thread.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::configs::coin_value_in;
use super::reports::{order_holder, record_row};
use super::writer::Queued;
use super::{SqliteStore, SqliteTx};
use crate::domain::activate::{ActivateCmd, ActivateReceipt};
use crate::domain::adjust::{AdjustCmd, AdjustReceipt};
use crate::domain::allocate::{AllocateCmd, AllocateOk, NewLot, RecordFields};
use crate::domain::allocation::{AllocationState, HeldLot, OrderHolder};
use crate::domain::campaigns::CampaignId;
use crate::domain::earn::ZeroReason;
use crate::domain::expire::DueLot;
use crate::domain::ledger::{Account, Lifetime, LotMove, NewEntry, RequestKind, StoredRequest};
use crate::domain::lots::OpenLot;
use crate::domain::redeem::{CoinValue, RedeemCmd, RedeemReceipt};
use crate::domain::report;
use crate::domain::reverse::{Original, OwnLot, ReverseCmd, ReverseReceipt, Taken};
use crate::domain::simulate::{SimulateCmd, Simulation};
use crate::domain::tiers::{QualifyingMove, TierChange, TierScheme, TierState, qualifying_day};
use crate::domain::webhooks::EventType;
use crate::domain::{CompanyId, EventName, OrderId, RequestId, UserId};
use crate::store::config_cache::{ConfigCache, Resolved};
use crate::store::dry_run;
use crate::store::ledger::{self, Claim, CreditRecord, LedgerTx, Member, Returned, run_now};
use crate::store::model::{RecordKinds, RecordRow};
use crate::store::tiers::{ADD_DAY_SQL, change_columns};
use crate::store::{Applied, Expired, LedgerStore, SWEEP_USERS_MAX, StoreError, StoreResult, SweepReport};

/// A held lot with the allocation that opened it (`l` the lot, `e` its ALLOCATE entry).
const HELD_SQL: &str = "SELECT l.lot_id, e.request_id, l.remaining, l.pending_until, l.expires_at, e.event, e.coin_config_id \
     FROM lots l JOIN ledger_entries e ON e.entry_id = l.entry_id";

fn held_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HeldLot> {
    Ok(HeldLot {
        lot_id: r.get(0)?,
        request_id: RequestId::from_trusted(r.get(1)?),
        remaining: r.get(2)?,
        pending_until: r.get(3)?,
        expires_at: r.get(4)?,
        event: r.get(5)?,
        coin_config_id: r.get(6)?,
    })
}

/// A member's allocations under a campaign, asked only of one with a per-user limit: its
/// allocations are all marked, and only those are indexed by member.
const LIMITED_TRIGGERS_SQL: &str = "SELECT COUNT(*) FROM requests WHERE company_id = ?1 AND campaign_id = ?2 AND user_id = ?3 AND campaign_limited = 1";

fn corrupt_kind(kind: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown request kind {kind}"))
}

/// The live allocation holding an order id. Its state test is the condition of
/// `requests_live_order` word for word, so the lookup uses that index.
const LIVE_ORDER_SQL: &str = "SELECT request_id, user_id, amount_minor, coins FROM requests WHERE company_id = ?1 AND event = ?2 AND order_id = ?3 \
     AND order_id IS NOT NULL AND (state = 'PENDING' OR state = 'ACTIVE' OR state = 'ZERO')";

impl LedgerTx for SqliteTx<'_> {
    async fn request(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<StoredRequest>> {
        let row = self
            .0
            .prepare_cached(
                "SELECT kind, user_id, event, coins, fingerprint, original_request_id, response, alias_of, state FROM requests \
                 WHERE company_id = ?1 AND request_id = ?2",
            )?
            .query_row(params![company.as_str(), request_id.as_str()], |r| {
                let kind: String = r.get(0)?;
                let request = StoredRequest {
                    kind: RequestKind::Allocate,
                    user: UserId::from_trusted(r.get(1)?),
                    event: r.get(2)?,
                    coins: r.get(3)?,
                    fingerprint: r.get(4)?,
                    original: r.get::<_, Option<String>>(5)?.map(RequestId::from_trusted),
                    response: r.get(6)?,
                    alias_of: r.get::<_, Option<String>>(7)?.map(RequestId::from_trusted),
                    state: r.get::<_, Option<String>>(8)?.as_deref().and_then(AllocationState::parse),
                };
                Ok((kind, request))
            })
            .optional()?;
        let Some((kind, request)) = row else { return Ok(None) };
        Ok(Some(StoredRequest { kind: RequestKind::parse(&kind).ok_or_else(|| corrupt_kind(&kind))?, ..request }))
    }

    async fn claim(&mut self, company: &CompanyId, request_id: &RequestId, c: &Claim<'_>, now_ms: i64) -> StoreResult<bool> {
        // OR IGNORE: a taken id, or an order id a live allocation holds (requests_live_order).
        let Some(r) = c.record else {
            return Ok(self
                .0
                .prepare_cached(
                    "INSERT OR IGNORE INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, original_request_id, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    company.as_str(),
                    request_id.as_str(),
                    c.kind.as_str(),
                    c.user.as_str(),
                    c.event,
                    c.coins,
                    c.fingerprint,
                    c.original.map(RequestId::as_str),
                    now_ms
                ])?
                == 1);
        };
        Ok(self
            .0
            .prepare_cached(
                "INSERT OR IGNORE INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, order_id, state, \
                 zero_reason, coin_config_id, base_coins, amount_minor, amount_refunded_minor, currency, calculation, activated_at, expires_at, \
                 activates_at, campaign_id, campaign_limited) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
            )?
            .execute(params![
                company.as_str(),
                request_id.as_str(),
                c.kind.as_str(),
                c.user.as_str(),
                c.event,
                c.coins,
                now_ms,
                r.order_id.as_ref().map(OrderId::as_str),
                r.state.as_str(),
                r.zero_reason.map(ZeroReason::as_str),
                r.coin_config_id,
                r.base_coins,
                r.amount_minor,
                r.amount_minor.map(|_| 0),
                r.currency,
                r.calculation,
                r.activated_at,
                r.expires_at,
                r.activates_at,
                r.campaign_id.map(|c| c.to_string()),
                r.campaign_limited_mark()
            ])?
            == 1)
    }

    async fn live_order(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<OrderHolder>> {
        Ok(self
            .0
            .prepare_cached(LIVE_ORDER_SQL)?
            .query_row(params![company.as_str(), event.as_str(), order.as_str()], |r| {
                Ok(OrderHolder {
                    request_id: RequestId::from_trusted(r.get(0)?),
                    user: UserId::from_trusted(r.get(1)?),
                    amount_minor: r.get(2)?,
                    coins: r.get(3)?,
                })
            })
            .optional()?)
    }

    async fn add_alias(
        &mut self,
        company: &CompanyId,
        request_id: &RequestId,
        event: &EventName,
        order: &OrderId,
        holder: &OrderHolder,
        now_ms: i64,
    ) -> StoreResult<bool> {
        Ok(self
            .0
            .prepare_cached(
                "INSERT OR IGNORE INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, alias_of, order_id) \
                 VALUES (?1, ?2, 'ALLOCATE', ?3, ?4, ?5, '', ?6, ?7, ?8)",
            )?
            .execute(params![
                company.as_str(),
                request_id.as_str(),
                holder.user.as_str(),
                event.as_str(),
                holder.coins,
                now_ms,
                holder.request_id.as_str(),
                order.as_str()
            ])?
            == 1)
    }

    async fn finish(&mut self, company: &CompanyId, request_id: &RequestId, coins: i64, response: &str) -> StoreResult<()> {
        self.0.prepare_cached("UPDATE requests SET coins = ?3, response = ?4 WHERE company_id = ?1 AND request_id = ?2")?.execute(params![
            company.as_str(),
            request_id.as_str(),
            coins,
            response
        ])?;
        Ok(())
    }

    async fn release(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<()> {
        self.0.prepare_cached("DELETE FROM requests WHERE company_id = ?1 AND request_id = ?2")?.execute(params![company.as_str(), request_id.as_str()])?;
        Ok(())
    }

    async fn account(&mut self, user: &UserId) -> StoreResult<Option<Account>> {
        // The writer thread is the only writer: reading is locking.
        Ok(self
            .0
            .prepare_cached("SELECT company_id, balance, pending_balance FROM users WHERE user_id = ?1")?
            .query_row(params![user.as_str()], |r| Ok(Account { company: CompanyId::from_trusted(r.get(0)?), balance: r.get(1)?, pending: r.get(2)? }))
            .optional()?)
    }

    async fn open_account(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<()> {
        self.0.prepare_cached("INSERT INTO users (company_id, user_id, balance, created_at) VALUES (?1, ?2, 0, ?3)")?.execute(params![
            company.as_str(),
            user.as_str(),
            now_ms
        ])?;
        Ok(())
    }

    async fn count_allocations(&mut self, cmd: &AllocateCmd, since_ms: i64) -> StoreResult<i64> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT COUNT(*) FROM ledger_entries WHERE company_id = ?1 AND user_id = ?2 AND event = ?3 AND type = 'ALLOCATE' AND created_at >= ?4",
            )?
            .query_row(params![cmd.company.as_str(), cmd.user.as_str(), cmd.event.as_str(), since_ms], |r| r.get(0))?)
    }

    async fn campaign_triggers(&mut self, company: &CompanyId, campaign: CampaignId, user: &UserId) -> StoreResult<i64> {
        Ok(self.0.prepare_cached(LIMITED_TRIGGERS_SQL)?.query_row(params![company.as_str(), campaign.to_string(), user.as_str()], |r| r.get(0))?)
    }

    async fn rewrite_record(&mut self, company: &CompanyId, request_id: &RequestId, coins: i64, r: &RecordFields) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "UPDATE requests SET coins = ?3, state = ?4, zero_reason = ?5, base_coins = ?6, calculation = ?7, activated_at = ?8, \
                 expires_at = ?9, activates_at = ?10, campaign_id = ?11, campaign_limited = ?12 WHERE company_id = ?1 AND request_id = ?2",
            )?
            .execute(params![
                company.as_str(),
                request_id.as_str(),
                coins,
                r.state.as_str(),
                r.zero_reason.map(ZeroReason::as_str),
                r.base_coins,
                r.calculation,
                r.activated_at,
                r.expires_at,
                r.activates_at,
                r.campaign_id.map(|c| c.to_string()),
                r.campaign_limited_mark()
            ])?;
        Ok(())
    }

    async fn due_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<DueLot>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT l.lot_id, l.remaining, l.expires_at, e.event, e.coin_config_id FROM lots l JOIN ledger_entries e ON e.entry_id = l.entry_id \
                 WHERE l.company_id = ?1 AND l.user_id = ?2 AND l.remaining > 0 AND l.expires_at <= ?3 AND l.pending_until IS NULL",
            )?
            .query_map(params![company.as_str(), user.as_str(), now_ms], |r| {
                Ok(DueLot { lot_id: r.get(0)?, remaining: r.get(1)?, expires_at: r.get(2)?, event: r.get(3)?, coin_config_id: r.get(4)? })
            })?
            .collect::<Result<_, _>>()?)
    }

    async fn open_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<OpenLot>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT lot_id, remaining, expires_at FROM lots WHERE company_id = ?1 AND user_id = ?2 AND remaining > 0 \
                 AND (expires_at IS NULL OR expires_at > ?3) AND pending_until IS NULL",
            )?
            .query_map(params![company.as_str(), user.as_str(), now_ms], |r| Ok(OpenLot { lot_id: r.get(0)?, remaining: r.get(1)?, expires_at: r.get(2)? }))?
            .collect::<Result<_, _>>()?)
    }

    async fn coin_value(&mut self, company: &CompanyId) -> StoreResult<CoinValue> {
        coin_value_in(self.0, Some(company))
    }

    async fn original_entry(&mut self, company: &CompanyId, request_id: &RequestId, kind: RequestKind) -> StoreResult<Original> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT e.entry_id, e.coins, e.event, e.coin_config_id FROM requests r JOIN ledger_entries e ON e.entry_id = r.entry_id \
                 WHERE r.company_id = ?1 AND r.request_id = ?2 AND e.type = ?3",
            )?
            .query_row(params![company.as_str(), request_id.as_str(), kind.as_str()], |r| {
                Ok(Original { entry_id: r.get(0)?, kind, coins: r.get(1)?, event: r.get(2)?, coin_config_id: r.get(3)? })
            })?)
    }

    async fn own_lots(&mut self, entry_id: i64) -> StoreResult<Vec<OwnLot>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT l.lot_id, COALESCE((SELECT -SUM(m.coins) FROM lot_moves m JOIN ledger_entries e ON e.entry_id = m.entry_id \
                 WHERE m.lot_id = l.lot_id AND e.type = 'EXPIRE'), 0) FROM lots l WHERE l.entry_id = ?1",
            )?
            .query_map(params![entry_id], |r| Ok(OwnLot { lot_id: r.get(0)?, expired: r.get(1)? }))?
            .collect::<Result<_, _>>()?)
    }

    async fn allocation(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<RecordRow>> {
        record_row(self.0, company, request_id.as_str(), RecordKinds::Credits)
    }

    async fn order_allocation(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<RequestId>> {
        order_holder(self.0, company, event, order)
    }

    async fn returned_coins(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64> {
        Ok(self
            .0
            .prepare_cached("SELECT COALESCE(SUM(coins), 0) FROM requests WHERE company_id = ?1 AND original_request_id = ?2 AND kind = 'REVERSE'")?
            .query_row(params![company.as_str(), original.as_str()], |r| r.get(0))?)
    }

    async fn record_return(&mut self, company: &CompanyId, original: &RequestId, r: &Returned) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "UPDATE requests SET state = COALESCE(?3, state), coins_canceled = ?4, coins_reversed = ?5, coins_waived = ?6, \
                 amount_refunded_minor = ?7 WHERE company_id = ?1 AND request_id = ?2",
            )?
            .execute(params![
                company.as_str(),
                original.as_str(),
                r.state.map(AllocationState::as_str),
                r.coins_canceled,
                r.coins_reversed,
                r.coins_waived,
                r.amount_refunded_minor
            ])?;
        Ok(())
    }

    async fn due_held(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<HeldLot>> {
        Ok(self
            .0
            .prepare_cached(&format!("{HELD_SQL} WHERE l.company_id = ?1 AND l.user_id = ?2 AND l.remaining > 0 AND l.pending_until <= ?3"))?
            .query_map(params![company.as_str(), user.as_str(), now_ms], held_from_row)?
            .collect::<Result<_, _>>()?)
    }

    async fn held_lot(&mut self, entry_id: i64) -> StoreResult<Option<HeldLot>> {
        Ok(self
            .0
            .prepare_cached(&format!("{HELD_SQL} WHERE l.entry_id = ?1 AND l.pending_until IS NOT NULL"))?
            .query_row(params![entry_id], held_from_row)
            .optional()?)
    }

    async fn activate_lot(&mut self, lot_id: i64, expires_at: Option<i64>) -> StoreResult<()> {
        self.0.prepare_cached("UPDATE lots SET pending_until = NULL, expires_at = ?2 WHERE lot_id = ?1")?.execute(params![lot_id, expires_at])?;
        Ok(())
    }

    async fn record_activation(&mut self, company: &CompanyId, request_id: &RequestId, activated_at: i64, expires_at: Option<i64>) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "UPDATE requests SET state = CASE WHEN state = 'PENDING' THEN 'ACTIVE' ELSE state END, activated_at = ?3, expires_at = ?4 \
                 WHERE company_id = ?1 AND request_id = ?2",
            )?
            .execute(params![company.as_str(), request_id.as_str(), activated_at, expires_at])?;
        Ok(())
    }

    async fn record_credit(&mut self, company: &CompanyId, request_id: &RequestId, credit: &CreditRecord, now_ms: i64) -> StoreResult<()> {
        let CreditRecord { state, activates_at, expires_at, qualifying_base } = *credit;
        let activated_at = activates_at.is_none().then_some(now_ms);
        let base = (qualifying_base > 0).then_some(qualifying_base);
        self.0
            .prepare_cached(
                "UPDATE requests SET state = ?3, activates_at = ?4, activated_at = ?5, expires_at = ?6, base_coins = ?7 WHERE company_id = ?1 AND request_id = ?2",
            )?
            .execute(params![company.as_str(), request_id.as_str(), state.as_str(), activates_at, activated_at, expires_at, base])?;
        Ok(())
    }

    async fn set_pending(&mut self, company: &CompanyId, user: &UserId, pending: i64) -> StoreResult<()> {
        self.0.prepare_cached("UPDATE users SET pending_balance = ?3 WHERE company_id = ?1 AND user_id = ?2")?.execute(params![
            company.as_str(),
            user.as_str(),
            pending
        ])?;
        Ok(())
    }

    async fn restored_to_lots(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT COALESCE(SUM(m.coins), 0) FROM requests r JOIN lot_moves m ON m.entry_id = r.entry_id WHERE r.company_id = ?1 AND r.original_request_id = ?2 AND r.kind = 'REVERSE' AND m.coins > 0",
            )?
            .query_row(params![company.as_str(), original.as_str()], |r| r.get(0))?)
    }

    async fn taken_by(&mut self, entry_id: i64) -> StoreResult<Vec<Taken>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT m.lot_id, -m.coins, l.expires_at FROM lot_moves m JOIN lots l ON l.lot_id = m.lot_id WHERE m.entry_id = ?1 ORDER BY m.lot_id",
            )?
            .query_map(params![entry_id], |r| Ok(Taken { lot_id: r.get(0)?, coins: r.get(1)?, expires_at: r.get(2)? }))?
            .collect::<Result<_, _>>()?)
    }

    async fn insert_entry(&mut self, company: &CompanyId, user: &UserId, e: &NewEntry, now_ms: i64) -> StoreResult<i64> {
        self.0
            .prepare_cached(
                "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at, \
                 order_id, amount_minor, original_request_id, pending_coins, pending_after, effective_at, reason, client_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?
            .execute(params![
                company.as_str(),
                user.as_str(),
                e.kind.as_str(),
                e.coins,
                e.balance_after,
                e.event,
                e.request_id.as_ref().map(RequestId::as_str),
                e.coin_config_id,
                now_ms,
                e.expires_at,
                e.order_id,
                e.amount_minor,
                e.original_request_id.as_ref().map(RequestId::as_str),
                e.pending_coins,
                e.pending_after,
                e.effective_at,
                e.reason,
                e.client_id
            ])?;
        Ok(self.0.last_insert_rowid())
    }

    async fn record_events(&mut self, company: &CompanyId, user: &UserId, entry_id: i64, event: EventType, now_ms: i64) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, event_type, state, next_attempt_at, created_at) \
                 SELECT webhook_id, ?1, ?2, ?3, ?4, 'pending', ?5, ?5 FROM webhooks WHERE company_id = ?1 AND enabled = 1 AND (event_mask & ?6) <> 0",
            )?
            .execute(params![company.as_str(), user.as_str(), entry_id, event.as_str(), now_ms, event.bit()])?;
        Ok(())
    }

    async fn add_to_daily(&mut self, company: &CompanyId, e: &NewEntry, now_ms: i64) -> StoreResult<()> {
        let (credit, debit) = report::credit_debit(e.coins);
        self.0
            .prepare_cached(
                "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, 1) \
                 ON CONFLICT (company_id, day, event, type, shard) DO UPDATE SET credit = credit + excluded.credit, \
                 debit = debit + excluded.debit, entries = entries + 1",
            )?
            .execute(params![company.as_str(), report::day_of(now_ms), e.event.as_deref().unwrap_or(""), e.kind.as_str(), credit, debit])?;
        Ok(())
    }

    async fn insert_lot(&mut self, company: &CompanyId, user: &UserId, entry_id: i64, lot: &NewLot, now_ms: i64) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at, pending_until) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![company.as_str(), user.as_str(), entry_id, lot.coins, lot.expires_at, now_ms, lot.pending_until])?;
        Ok(())
    }

    async fn apply_moves(&mut self, entry_id: i64, moves: &[LotMove]) -> StoreResult<()> {
        for m in moves {
            self.0.prepare_cached("UPDATE lots SET remaining = remaining + ?2 WHERE lot_id = ?1")?.execute(params![m.lot_id, m.coins])?;
            self.0.prepare_cached("INSERT INTO lot_moves (entry_id, lot_id, coins) VALUES (?1, ?2, ?3)")?.execute(params![entry_id, m.lot_id, m.coins])?;
        }
        Ok(())
    }

    async fn set_balance(&mut self, company: &CompanyId, user: &UserId, balance: i64, lifetime: Lifetime, delta: i64) -> StoreResult<()> {
        let sql = match lifetime {
            Lifetime::Earned => "UPDATE users SET balance = ?3, lifetime_earned = lifetime_earned + ?4 WHERE company_id = ?1 AND user_id = ?2",
            Lifetime::Redeemed => "UPDATE users SET balance = ?3, lifetime_redeemed = lifetime_redeemed + ?4 WHERE company_id = ?1 AND user_id = ?2",
            Lifetime::Expired => "UPDATE users SET balance = ?3, lifetime_expired = lifetime_expired + ?4 WHERE company_id = ?1 AND user_id = ?2",
        };
        self.0.prepare_cached(sql)?.execute(params![company.as_str(), user.as_str(), balance, delta])?;
        Ok(())
    }

    async fn set_balance_qualifying(&mut self, company: &CompanyId, user: &UserId, balance: i64, delta: i64, qualifying: i64) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "UPDATE users SET balance = ?3, lifetime_earned = lifetime_earned + ?4, qualifying_total = qualifying_total + ?5 \
                 WHERE company_id = ?1 AND user_id = ?2",
            )?
            .execute(params![company.as_str(), user.as_str(), balance, delta, qualifying])?;
        Ok(())
    }

    async fn tier_scheme(&mut self, company: &CompanyId) -> StoreResult<Option<TierScheme>> {
        super::tiers::scheme(self.0, company)
    }

    async fn current_scheme(&mut self, _company: &CompanyId, cached: Option<&Arc<TierScheme>>) -> StoreResult<Option<Arc<TierScheme>>> {
        // Allocations run on the writer with its own cache, cleared after every batch of other
        // jobs (a scheme change among them) and before the next allocation: exact.
        Ok(cached.cloned())
    }

    async fn tier(&mut self, user: &UserId) -> StoreResult<TierState> {
        super::tiers::state(self.0, user)
    }

    async fn member(&mut self, user: &UserId, _locked: bool) -> StoreResult<Member> {
        // The writer thread is the only writer: reading is locking.
        super::tiers::member(self.0, user)
    }

    async fn member_locked(&mut self, _user: &UserId, read: Member) -> StoreResult<Member> {
        // On the writer, the only writer, nothing changed it since it was read.
        Ok(read)
    }

    async fn qualifying(&mut self, user: &UserId, since_ms: Option<i64>) -> StoreResult<i64> {
        super::tiers::qualifying(self.0, user, since_ms)
    }

    async fn add_qualifying(
        &mut self,
        company: &CompanyId,
        user: &UserId,
        q: &QualifyingMove,
        dated: bool,
        before: Option<i64>,
        counted: bool,
    ) -> StoreResult<i64> {
        if !counted {
            self.0.prepare_cached("UPDATE users SET qualifying_total = qualifying_total + ?2 WHERE user_id = ?1")?.execute(params![user.as_str(), q.coins])?;
        }
        // Not `RETURNING`: SQLite collects a DML statement's returned rows in a temporary B-tree,
        // which cost more than reading the row again (a page just written, in cache). Neither
        // when the total was read in this transaction: the writer is the only writer.
        let total = match before {
            Some(before) => before.checked_add(q.coins).ok_or_else(|| StoreError::Corrupt(format!("the qualifying coins of {user} overflow")))?,
            None => super::tiers::qualifying(self.0, user, None)?,
        };
        if dated {
            // Most moves add to a day the member already has (today's): one seek. An upsert
            // would seek twice, once to find the conflict and once to update.
            let day = qualifying_day(q.earned_at);
            let added = self.0.prepare_cached("UPDATE qualifying_days SET coins = coins + ?3 WHERE user_id = ?1 AND day = ?2")?.execute(params![
                user.as_str(),
                day,
                q.coins
            ])?;
            if added == 0 {
                self.0.prepare_cached(ADD_DAY_SQL)?.execute(params![user.as_str(), day, company.as_str(), q.coins])?;
            }
        }
        Ok(total)
    }

    async fn set_tier(&mut self, company: &CompanyId, user: &UserId, t: &TierState, change: Option<&TierChange>, now_ms: i64) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "UPDATE users SET tier_code = ?3, tier_entered_at = ?4, tier_expires_at = ?5, tier_cause = ?6, tier_floor = ?7, tier_floor_reason = ?8 \
                 WHERE company_id = ?1 AND user_id = ?2",
            )?
            .execute(params![company.as_str(), user.as_str(), t.code, t.entered_at, t.expires_at, t.cause, t.floor, t.floor_reason])?;
        let Some(change) = change else { return Ok(()) };
        let (kind, from, to, qualifying, expires_at, cause, request_id) = change_columns(change);
        self.0
            .prepare_cached(
                "INSERT INTO tier_changes (company_id, user_id, kind, from_tier, to_tier, qualifying_coins, tier_expires_at, cause, request_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![company.as_str(), user.as_str(), kind, from, to, qualifying, expires_at, cause, request_id, now_ms])?;
        let change_id = self.0.last_insert_rowid();
        let event = EventType::of_tier_change(change.kind);
        self.0
            .prepare_cached(
                "INSERT INTO webhook_messages (webhook_id, company_id, user_id, tier_change_id, event_type, state, next_attempt_at, created_at) \
                 SELECT webhook_id, ?1, ?2, ?3, ?4, 'pending', ?5, ?5 FROM webhooks WHERE company_id = ?1 AND enabled = 1 AND (event_mask & ?6) <> 0",
            )?
            .execute(params![company.as_str(), user.as_str(), change_id, event.as_str(), now_ms, event.bit()])?;
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn allocate(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>> {
        let n = cmds.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let outcome = match self.writer.enqueue(Queued::Allocate { cmds, reply }) {
            Ok(()) => answer.await.map_err(|_| "the writer dropped the job"),
            Err(StoreError::Busy(why)) => Err(why),
            Err(_) => Err("the writer refused the job"),
        };
        outcome.unwrap_or_else(|why| (0..n).map(|_| Err(StoreError::Busy(why))).collect())
    }

    async fn redeem(&self, cmd: RedeemCmd) -> StoreResult<Applied<RedeemReceipt>> {
        self.write(move |conn| run_now(ledger::redeem(&mut SqliteTx(conn), &cmd))).await
    }

    async fn reverse(&self, cmd: ReverseCmd) -> StoreResult<Applied<ReverseReceipt>> {
        self.write(move |conn| run_now(ledger::reverse(&mut SqliteTx(conn), &cmd))).await
    }

    async fn simulate(&self, cmd: SimulateCmd) -> StoreResult<Simulation> {
        // On a reader, in a transaction that refuses every write and is rolled back.
        self.read(move |conn| {
            conn.execute_batch("PRAGMA query_only = ON; BEGIN")?;
            let outcome = (|| {
                let resolved = match &cmd {
                    SimulateCmd::Allocate(c) => super::configs::resolve(conn, &ConfigCache::new(true), &c.company, &c.event, c.now_ms)?,
                    SimulateCmd::Reverse(_) => Resolved::default(),
                };
                run_now(dry_run::simulate(SqliteTx(conn), &cmd, &resolved))
            })();
            conn.execute_batch("ROLLBACK; PRAGMA query_only = OFF")?;
            outcome
        })
        .await
    }

    async fn adjust(&self, cmd: AdjustCmd) -> StoreResult<Applied<AdjustReceipt>> {
        self.write(move |conn| run_now(ledger::adjust(&mut SqliteTx(conn), &cmd))).await
    }

    async fn activate(&self, cmd: ActivateCmd) -> StoreResult<Applied<ActivateReceipt>> {
        self.write(move |conn| run_now(ledger::activate(&mut SqliteTx(conn), &cmd))).await
    }

    async fn settle_expired(&self, user: &UserId, now_ms: i64) -> StoreResult<Expired> {
        // Most reads find nothing due: look first, so they do not queue a write.
        let u = user.clone();
        let due: bool = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM lots WHERE company_id = (SELECT company_id FROM users WHERE user_id = ?1) \
                         AND user_id = ?1 AND remaining > 0 AND (expires_at <= ?2 OR pending_until <= ?2))",
                    )?
                    .query_row(params![u.as_str(), now_ms], |r| r.get(0))?)
            })
            .await?;
        if !due {
            return Ok(Expired::default());
        }
        let user = user.clone();
        self.write(move |conn| run_now(ledger::settle(&mut SqliteTx(conn), &user, now_ms))).await
    }

    async fn sweep_expired(&self, now_ms: i64) -> StoreResult<SweepReport> {
        let users: Vec<String> = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT user_id FROM lots WHERE remaining > 0 AND expires_at <= ?1 \
                         UNION SELECT user_id FROM lots WHERE remaining > 0 AND pending_until <= ?1 \
                         UNION SELECT user_id FROM users WHERE tier_expires_at <= ?1 LIMIT {SWEEP_USERS_MAX}"
                    ))?
                    .query_map(params![now_ms], |r| r.get(0))?
                    .collect::<Result<_, _>>()?)
            })
            .await?;
        // One job per user, queued together: they share a commit, and each runs in a savepoint
        // of its own, so one user's failure undoes only that user's expiry.
        let mut pending = Vec::with_capacity(users.len());
        for user in users {
            let id = UserId::from_trusted(user);
            let job_user = id.clone();
            pending.push((id, self.submit(move |conn| run_now(ledger::settle(&mut SqliteTx(conn), &job_user, now_ms)))));
        }
        let mut report = SweepReport::default();
        for (user, job) in pending {
            let outcome = match job {
                Ok(answer) => answer.await.unwrap_or(Err(StoreError::Busy("the writer dropped the job"))),
                Err(e) => Err(e),
            };
            report.add(&user, outcome);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::{SqliteStore, open_connection};
    use crate::store::{Store, StoreOptions};

    /// SQLite checks `x IN ('a', 'b', 'c')` by building a temporary B-tree of the values each
    /// time a statement runs; the rows every allocation writes are checked with comparisons
    /// instead (migration 0012), which must still refuse what the list refused.
    #[tokio::test]
    async fn the_rows_an_allocation_writes_are_checked_without_a_temporary_btree() {
        let dir = std::env::temp_dir().join(format!("coins-checks-{}", hex::encode(crate::crypto::random_bytes::<6>())));
        let path = dir.join("coins.db");
        let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
        store.migrate().await.unwrap();
        let conn = open_connection(&path, 1024).unwrap();
        let temporary_btrees = |sql: &str| {
            let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
            let ops: Vec<String> = stmt.query_map(rusqlite::params_from_iter(unbound), |r| r.get(1)).unwrap().map(Result::unwrap).collect();
            ops.iter().filter(|op| *op == "OpenEphemeral").count()
        };
        for table in ["requests", "ledger_entries", "lots", "users", "webhook_messages", "ledger_daily"] {
            assert_eq!(temporary_btrees(&format!("INSERT INTO {table} DEFAULT VALUES")), 0, "{table}");
        }
        assert_eq!(temporary_btrees("UPDATE webhook_messages SET state = 'delivered' WHERE message_seq = 1"), 0);
        assert_eq!(temporary_btrees("UPDATE requests SET state = 'ACTIVE' WHERE company_id = 'C' AND request_id = 'R'"), 0);
        assert_eq!(temporary_btrees(super::LIVE_ORDER_SQL), 0);
        let plan: String = conn.query_row(&format!("EXPLAIN QUERY PLAN {}", super::LIVE_ORDER_SQL), ["C", "E", "O"], |r| r.get(3)).unwrap();
        assert!(plan.contains("USING INDEX requests_live_order"), "{plan}");
        // The order lookups of a record read: each through its partial index (ties on the time
        // are sorted by request id among one order's rows).
        let plan_of = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
            stmt.query_map(rusqlite::params_from_iter(unbound), |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let live = plan_of(super::super::reports::LIVE_HOLDER_SQL);
        assert!(live.contains("USING INDEX requests_live_order"), "{live}");
        for sql in [super::super::reports::ENDED_ORDER_SQL, super::super::reports::ALIASES_SQL] {
            let plan = plan_of(sql);
            assert!(plan.contains("USING INDEX requests_ended_by_order (company_id=? AND event=? AND order_id=?)"), "{plan}");
        }
        // A campaign's allocations: a member's through the index of limited campaigns' ones, the
        // count of each (the campaigns page) from the index by campaign alone, read whole.
        let plan = plan_of(super::LIMITED_TRIGGERS_SQL);
        assert!(plan.contains("USING COVERING INDEX requests_by_limited_campaign (company_id=? AND campaign_id=? AND user_id=?)"), "{plan}");
        let plan = plan_of(super::super::campaigns::CAMPAIGN_TRIGGERS_SQL);
        assert!(plan.contains("USING COVERING INDEX requests_by_campaign (company_id=? AND campaign_id>?)"), "{plan}");
        // The control: a CHECK with a list of three constants does build one (two do not), so
        // this test notices if SQLite stops doing it and the comparisons could go back to lists.
        conn.execute_batch("CREATE TEMP TABLE three (x TEXT CHECK (x IN ('a', 'b', 'c'))); CREATE TEMP TABLE two (x TEXT CHECK (x IN ('a', 'b')))").unwrap();
        assert_eq!(temporary_btrees("INSERT INTO three DEFAULT VALUES"), 1);
        assert_eq!(temporary_btrees("INSERT INTO two DEFAULT VALUES"), 0);

        let insert = |table: &str, columns: &str, values: &str| conn.execute(&format!("INSERT INTO {table} ({columns}) VALUES ({values})"), []);
        let request = |kind: &str| {
            insert("requests", "company_id, request_id, kind, user_id, coins, fingerprint, created_at", &format!("'C', 'R-{kind}', '{kind}', 'U', 1, '', 0"))
        };
        for kind in ["ALLOCATE", "REDEEM", "REVERSE", "ACTIVATE", "ADJUST"] {
            request(kind).unwrap();
        }
        assert!(request("allocate").unwrap_err().to_string().contains("CHECK constraint failed"));
        let entry =
            |kind: &str| insert("ledger_entries", "company_id, user_id, type, coins, balance_after, created_at", &format!("'C', 'U', '{kind}', 1, 1, 0"));
        for kind in ["ALLOCATE", "ACTIVATE", "CANCEL", "REDEEM", "REVERSE", "EXPIRE", "ADJUST"] {
            entry(kind).unwrap();
        }
        assert!(entry("BONUS").unwrap_err().to_string().contains("CHECK constraint failed"));
        // The live-order index holds the same rows: one live allocation per order id.
        let order = |id: &str, state: &str| {
            insert(
                "requests",
                "company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, order_id, state",
                &format!("'C', '{id}', 'ALLOCATE', 'U', 'E', 1, '', 0, 'O-1', '{state}'"),
            )
        };
        order("O-A", "ACTIVE").unwrap();
        for (id, state) in [("O-B", "PENDING"), ("O-C", "ZERO"), ("O-D", "ACTIVE")] {
            assert!(order(id, state).unwrap_err().to_string().contains("UNIQUE constraint failed"), "{state}");
        }
        order("O-E", "CANCELED").unwrap();
        order("O-F", "REVERSED").unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
