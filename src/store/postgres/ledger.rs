//! The ledger on PostgreSQL: the fetches and writes of `store/ledger.rs` in PostgreSQL's dialect,
//! and allocation batches decided set-based by `coins_allocate_set` (migrations/postgres/0016,
//! and 0019 for the overload called now): one call per run of items, where item-by-item SQL costs
//! about fifteen round trips per item. The application decides what each item earns
//! (`store::ledger::earning_at_tier`: the configuration, purchase value, hold, campaign and the
//! member's tier, read in one statement per run); the function claims, applies caps and
//! balances, writes the records, entries and lots, and adds tiered members' qualifying coins in
//! the same update as their balance; the webhook messages and upgrades follow in a few statements
//! per run, and the set-based entries' daily roll-up in one at the end of the batch. Only an item whose earning depends
//! on what the step-by-step plan reads under the member's lock (a campaign with a per-user limit,
//! a tier whose retention is up) or is refused takes that plan, alone, between runs. A property
//! test (`tests/api/batch_model.rs`) holds the answers, ledger, records and tiers equal to the
//! items applied one by one and to the pure plan of `domain::allocate`. A batch of one plain
//! item of a company without tiers (group commit off, or a quiet moment) takes
//! `coins_allocate_one` (migrations/postgres/0017) instead, which also writes the item's webhook
//! messages and roll-up.
//!
//! Lock order: `requests` (ROW EXCLUSIVE, before any member: a tier scheme's setup takes it in
//! SHARE) -> the users' rows (FOR UPDATE, in user_id order; a batch with more than one run, a
//! tiered item or a step-by-step one locks every user of the batch first) -> request ids and live
//! order ids (by inserting their rows) -> the users' lots -> the daily roll-up's rows (in key
//! order at the end of the batch; a step-by-step item writes its own when it runs, and a batch of
//! one plain item its one row inside `coins_allocate_one`).
//! Any deadlock that remains possible is retried whole by `Core::transact`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::configs::{coin_value_in, resolve_batch};
use super::listen::Caches;
use super::reports::{order_holder, record_row};
use super::tiers::tier_state;
use super::{Core, PgStore, PgTx};
use crate::domain::activate::{ActivateCmd, ActivateReceipt};
use crate::domain::adjust::{AdjustCmd, AdjustReceipt};
use crate::domain::allocate::{AllocateCmd, AllocateOk, EarnPlan, NewLot, RecordFields};
use crate::domain::allocation::{AllocationState, HeldLot, OrderHolder};
use crate::domain::campaigns::CampaignId;
use crate::domain::earn::ZeroReason;
use crate::domain::expire::DueLot;
use crate::domain::ledger::{Account, Lifetime, LotMove, NewEntry, RequestKind, StoredRequest};
use crate::domain::lots::OpenLot;
use crate::domain::redeem::{CoinValue, RedeemCmd, RedeemReceipt};
use crate::domain::refusal::Cap;
use crate::domain::report;
use crate::domain::reverse::{Original, OwnLot, ReverseCmd, ReverseReceipt, Taken};
use crate::domain::simulate::{SimulateCmd, Simulation};
use crate::domain::tiers::{QualifyingMove, TierChange, TierScheme, TierState, qualifying_day};
use crate::domain::webhooks::EventType;
use crate::domain::{CoinConfig, Coins, CompanyId, EventName, OrderId, Refusal, RequestId, UserId};
use crate::store::config_cache::Resolved;
use crate::store::dry_run;
use crate::store::error::Shared;
use crate::store::ledger::{self, Claim, CreditRecord, LedgerTx, Member, Returned};
use crate::store::model::{RecordKinds, RecordRow};
use crate::store::tiers::{ADD_DAY_SQL, TIER_COLUMNS, change_columns};
use crate::store::{Applied, Expired, LedgerStore, SWEEP_USERS_MAX, StoreError, StoreResult, SweepReport};

/// A held lot with the allocation that opened it (`l` the lot, `e` its ALLOCATE entry).
const HELD_SQL: &str = "SELECT l.lot_id, e.request_id, l.remaining, l.pending_until, l.expires_at, e.event, e.coin_config_id \
     FROM lots l JOIN ledger_entries e ON e.entry_id = l.entry_id";

fn held_from_row(r: &Row) -> HeldLot {
    HeldLot {
        lot_id: r.get(0),
        request_id: RequestId::from_trusted(r.get(1)),
        remaining: r.get(2),
        pending_until: r.get(3),
        expires_at: r.get(4),
        event: r.get(5),
        coin_config_id: r.get(6),
    }
}

impl LedgerTx for PgTx<'_> {
    async fn request(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<StoredRequest>> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT kind, user_id, event, coins, fingerprint, original_request_id, response, alias_of, state FROM requests \
                 WHERE company_id = $1 AND request_id = $2",
            )
            .await?;
        let Some(r) = self.0.query_opt(&stmt, &[&company.as_str(), &request_id.as_str()]).await? else { return Ok(None) };
        let kind: &str = r.get(0);
        Ok(Some(StoredRequest {
            kind: RequestKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("unknown request kind {kind}")))?,
            user: UserId::from_trusted(r.get(1)),
            event: r.get(2),
            coins: r.get(3),
            fingerprint: r.get(4),
            original: r.get::<_, Option<String>>(5).map(RequestId::from_trusted),
            response: r.get(6),
            alias_of: r.get::<_, Option<String>>(7).map(RequestId::from_trusted),
            state: r.get::<_, Option<&str>>(8).and_then(AllocationState::parse),
        }))
    }

    async fn claim(&mut self, company: &CompanyId, request_id: &RequestId, c: &Claim<'_>, now_ms: i64) -> StoreResult<bool> {
        // A concurrent duplicate waits here for the other transaction's commit, then is not
        // inserted (ON CONFLICT covers the key and the one-live-allocation-per-order index).
        let Some(r) = c.record else {
            let stmt = self
                .0
                .prepare_cached(
                    "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, original_request_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                )
                .await?;
            let n = self
                .0
                .execute(
                    &stmt,
                    &[
                        &company.as_str(),
                        &request_id.as_str(),
                        &c.kind.as_str(),
                        &c.user.as_str(),
                        &c.event,
                        &c.coins,
                        &c.fingerprint,
                        &c.original.map(RequestId::as_str),
                        &now_ms,
                    ],
                )
                .await?;
            return Ok(n == 1);
        };
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, order_id, state, \
                 zero_reason, coin_config_id, base_coins, amount_minor, amount_refunded_minor, currency, calculation, activated_at, expires_at, \
                 activates_at, campaign_id, campaign_limited) VALUES ($1, $2, $3, $4, $5, $6, '', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        let n = self
            .0
            .execute(
                &stmt,
                &[
                    &company.as_str(),
                    &request_id.as_str(),
                    &c.kind.as_str(),
                    &c.user.as_str(),
                    &c.event,
                    &c.coins,
                    &now_ms,
                    &r.order_id.as_ref().map(OrderId::as_str),
                    &r.state.as_str(),
                    &r.zero_reason.map(ZeroReason::as_str),
                    &r.coin_config_id,
                    &r.base_coins,
                    &r.amount_minor,
                    &r.amount_minor.map(|_| 0i64),
                    &r.currency,
                    &r.calculation,
                    &r.activated_at,
                    &r.expires_at,
                    &r.activates_at,
                    &r.campaign_id.map(|c| c.to_string()),
                    &r.campaign_limited_mark(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn live_order(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<OrderHolder>> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT request_id, user_id, amount_minor, coins FROM requests WHERE company_id = $1 AND event = $2 AND order_id = $3 \
                 AND state IN ('PENDING', 'ACTIVE', 'ZERO')",
            )
            .await?;
        Ok(self.0.query_opt(&stmt, &[&company.as_str(), &event.as_str(), &order.as_str()]).await?.map(|r| OrderHolder {
            request_id: RequestId::from_trusted(r.get(0)),
            user: UserId::from_trusted(r.get(1)),
            amount_minor: r.get(2),
            coins: r.get(3),
        }))
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
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO requests (company_id, request_id, kind, user_id, event, coins, fingerprint, created_at, alias_of, order_id) \
                 VALUES ($1, $2, 'ALLOCATE', $3, $4, $5, '', $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .await?;
        let n = self
            .0
            .execute(
                &stmt,
                &[
                    &company.as_str(),
                    &request_id.as_str(),
                    &holder.user.as_str(),
                    &event.as_str(),
                    &holder.coins,
                    &now_ms,
                    &holder.request_id.as_str(),
                    &order.as_str(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn finish(&mut self, company: &CompanyId, request_id: &RequestId, coins: i64, response: &str) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("UPDATE requests SET coins = $3, response = $4 WHERE company_id = $1 AND request_id = $2").await?;
        self.0.execute(&stmt, &[&company.as_str(), &request_id.as_str(), &coins, &response]).await?;
        Ok(())
    }

    async fn release(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("DELETE FROM requests WHERE company_id = $1 AND request_id = $2").await?;
        self.0.execute(&stmt, &[&company.as_str(), &request_id.as_str()]).await?;
        Ok(())
    }

    async fn account(&mut self, user: &UserId) -> StoreResult<Option<Account>> {
        let stmt = self.0.prepare_cached("SELECT company_id, balance, pending_balance FROM users WHERE user_id = $1 FOR UPDATE").await?;
        Ok(self.0.query_opt(&stmt, &[&user.as_str()]).await?.map(|r| Account {
            company: CompanyId::from_trusted(r.get(0)),
            balance: r.get(1),
            pending: r.get(2),
        }))
    }

    async fn account_unlocked(&mut self, user: &UserId) -> StoreResult<Option<Account>> {
        let stmt = self.0.prepare_cached("SELECT company_id, balance, pending_balance FROM users WHERE user_id = $1").await?;
        Ok(self.0.query_opt(&stmt, &[&user.as_str()]).await?.map(|r| Account {
            company: CompanyId::from_trusted(r.get(0)),
            balance: r.get(1),
            pending: r.get(2),
        }))
    }

    async fn open_account(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("INSERT INTO users (company_id, user_id, balance, created_at) VALUES ($1, $2, 0, $3)").await?;
        self.0.execute(&stmt, &[&company.as_str(), &user.as_str(), &now_ms]).await?;
        Ok(())
    }

    async fn count_allocations(&mut self, cmd: &AllocateCmd, since_ms: i64) -> StoreResult<i64> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT COUNT(*) FROM ledger_entries WHERE company_id = $1 AND user_id = $2 AND event = $3 AND type = 'ALLOCATE' AND created_at >= $4",
            )
            .await?;
        Ok(self.0.query_one(&stmt, &[&cmd.company.as_str(), &cmd.user.as_str(), &cmd.event.as_str(), &since_ms]).await?.get(0))
    }

    async fn campaign_triggers(&mut self, company: &CompanyId, campaign: CampaignId, user: &UserId) -> StoreResult<i64> {
        // Asked only of a campaign with a per-user limit: its allocations are all marked, and only
        // those are indexed by member.
        let stmt =
            self.0.prepare_cached("SELECT COUNT(*) FROM requests WHERE company_id = $1 AND campaign_id = $2 AND user_id = $3 AND campaign_limited").await?;
        Ok(self.0.query_one(&stmt, &[&company.as_str(), &campaign.to_string(), &user.as_str()]).await?.get(0))
    }

    async fn rewrite_record(&mut self, company: &CompanyId, request_id: &RequestId, coins: i64, r: &RecordFields) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE requests SET coins = $3, state = $4, zero_reason = $5, base_coins = $6, calculation = $7, activated_at = $8, \
                 expires_at = $9, activates_at = $10, campaign_id = $11, campaign_limited = $12 WHERE company_id = $1 AND request_id = $2",
            )
            .await?;
        self.0
            .execute(
                &stmt,
                &[
                    &company.as_str(),
                    &request_id.as_str(),
                    &coins,
                    &r.state.as_str(),
                    &r.zero_reason.map(ZeroReason::as_str),
                    &r.base_coins,
                    &r.calculation,
                    &r.activated_at,
                    &r.expires_at,
                    &r.activates_at,
                    &r.campaign_id.map(|c| c.to_string()),
                    &r.campaign_limited_mark(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn due_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<DueLot>> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT l.lot_id, l.remaining, l.expires_at, e.event, e.coin_config_id FROM lots l JOIN ledger_entries e ON e.entry_id = l.entry_id \
                 WHERE l.company_id = $1 AND l.user_id = $2 AND l.remaining > 0 AND l.expires_at <= $3 AND l.pending_until IS NULL",
            )
            .await?;
        Ok(self
            .0
            .query(&stmt, &[&company.as_str(), &user.as_str(), &now_ms])
            .await?
            .iter()
            .map(|r| DueLot { lot_id: r.get(0), remaining: r.get(1), expires_at: r.get(2), event: r.get(3), coin_config_id: r.get(4) })
            .collect())
    }

    async fn open_lots(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<OpenLot>> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT lot_id, remaining, expires_at FROM lots WHERE company_id = $1 AND user_id = $2 AND remaining > 0 \
                 AND (expires_at IS NULL OR expires_at > $3) AND pending_until IS NULL",
            )
            .await?;
        Ok(self
            .0
            .query(&stmt, &[&company.as_str(), &user.as_str(), &now_ms])
            .await?
            .iter()
            .map(|r| OpenLot { lot_id: r.get(0), remaining: r.get(1), expires_at: r.get(2) })
            .collect())
    }

    async fn coin_value(&mut self, company: &CompanyId) -> StoreResult<CoinValue> {
        coin_value_in(self.0, Some(company)).await
    }

    async fn original_entry(&mut self, company: &CompanyId, request_id: &RequestId, kind: RequestKind) -> StoreResult<Original> {
        let stmt = self
            .0
            .prepare_cached("SELECT entry_id, coins, event, coin_config_id FROM ledger_entries WHERE company_id = $1 AND request_id = $2 AND type = $3")
            .await?;
        let r = self.0.query_one(&stmt, &[&company.as_str(), &request_id.as_str(), &kind.as_str()]).await?;
        Ok(Original { entry_id: r.get(0), kind, coins: r.get(1), event: r.get(2), coin_config_id: r.get(3) })
    }

    async fn own_lots(&mut self, entry_id: i64) -> StoreResult<Vec<OwnLot>> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT l.lot_id, COALESCE((SELECT -SUM(m.coins) FROM lot_moves m JOIN ledger_entries e ON e.entry_id = m.entry_id \
                 WHERE m.lot_id = l.lot_id AND e.type = 'EXPIRE'), 0)::BIGINT FROM lots l WHERE l.entry_id = $1",
            )
            .await?;
        Ok(self.0.query(&stmt, &[&entry_id]).await?.iter().map(|r| OwnLot { lot_id: r.get(0), expired: r.get(1) }).collect())
    }

    async fn allocation(&mut self, company: &CompanyId, request_id: &RequestId) -> StoreResult<Option<RecordRow>> {
        record_row(self.0, company, request_id.as_str(), RecordKinds::Credits).await
    }

    async fn order_allocation(&mut self, company: &CompanyId, event: &EventName, order: &OrderId) -> StoreResult<Option<RequestId>> {
        order_holder(self.0, company, event, order).await
    }

    async fn returned_coins(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64> {
        let stmt = self
            .0
            .prepare_cached("SELECT COALESCE(SUM(coins), 0)::BIGINT FROM requests WHERE company_id = $1 AND original_request_id = $2 AND kind = 'REVERSE'")
            .await?;
        Ok(self.0.query_one(&stmt, &[&company.as_str(), &original.as_str()]).await?.get(0))
    }

    async fn record_return(&mut self, company: &CompanyId, original: &RequestId, r: &Returned) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE requests SET state = COALESCE($3, state), coins_canceled = $4, coins_reversed = $5, coins_waived = $6, \
                 amount_refunded_minor = $7 WHERE company_id = $1 AND request_id = $2",
            )
            .await?;
        let state = r.state.map(AllocationState::as_str);
        self.0
            .execute(&stmt, &[&company.as_str(), &original.as_str(), &state, &r.coins_canceled, &r.coins_reversed, &r.coins_waived, &r.amount_refunded_minor])
            .await?;
        Ok(())
    }

    async fn due_held(&mut self, company: &CompanyId, user: &UserId, now_ms: i64) -> StoreResult<Vec<HeldLot>> {
        let stmt =
            self.0.prepare_cached(&format!("{HELD_SQL} WHERE l.company_id = $1 AND l.user_id = $2 AND l.remaining > 0 AND l.pending_until <= $3")).await?;
        Ok(self.0.query(&stmt, &[&company.as_str(), &user.as_str(), &now_ms]).await?.iter().map(held_from_row).collect())
    }

    async fn held_lot(&mut self, entry_id: i64) -> StoreResult<Option<HeldLot>> {
        let stmt = self.0.prepare_cached(&format!("{HELD_SQL} WHERE l.entry_id = $1 AND l.pending_until IS NOT NULL")).await?;
        Ok(self.0.query_opt(&stmt, &[&entry_id]).await?.as_ref().map(held_from_row))
    }

    async fn activate_lot(&mut self, lot_id: i64, expires_at: Option<i64>) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("UPDATE lots SET pending_until = NULL, expires_at = $2 WHERE lot_id = $1").await?;
        self.0.execute(&stmt, &[&lot_id, &expires_at]).await?;
        Ok(())
    }

    async fn record_activation(&mut self, company: &CompanyId, request_id: &RequestId, activated_at: i64, expires_at: Option<i64>) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE requests SET state = CASE WHEN state = 'PENDING' THEN 'ACTIVE' ELSE state END, activated_at = $3, expires_at = $4 \
                 WHERE company_id = $1 AND request_id = $2",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &request_id.as_str(), &activated_at, &expires_at]).await?;
        Ok(())
    }

    async fn record_credit(&mut self, company: &CompanyId, request_id: &RequestId, credit: &CreditRecord, now_ms: i64) -> StoreResult<()> {
        let CreditRecord { state, activates_at, expires_at, qualifying_base } = *credit;
        let activated_at = activates_at.is_none().then_some(now_ms);
        let base = (qualifying_base > 0).then_some(qualifying_base);
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE requests SET state = $3, activates_at = $4, activated_at = $5, expires_at = $6, base_coins = $7 WHERE company_id = $1 AND request_id = $2",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &request_id.as_str(), &state.as_str(), &activates_at, &activated_at, &expires_at, &base]).await?;
        Ok(())
    }

    async fn set_pending(&mut self, company: &CompanyId, user: &UserId, pending: i64) -> StoreResult<()> {
        let stmt = self.0.prepare_cached("UPDATE users SET pending_balance = $3 WHERE company_id = $1 AND user_id = $2").await?;
        self.0.execute(&stmt, &[&company.as_str(), &user.as_str(), &pending]).await?;
        Ok(())
    }

    async fn restored_to_lots(&mut self, company: &CompanyId, original: &RequestId) -> StoreResult<i64> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT COALESCE(SUM(m.coins), 0)::BIGINT FROM requests r JOIN ledger_entries e ON e.company_id = r.company_id AND e.request_id = r.request_id \
                 JOIN lot_moves m ON m.entry_id = e.entry_id WHERE r.company_id = $1 AND r.original_request_id = $2 AND r.kind = 'REVERSE' AND m.coins > 0",
            )
            .await?;
        Ok(self.0.query_one(&stmt, &[&company.as_str(), &original.as_str()]).await?.get(0))
    }

    async fn taken_by(&mut self, entry_id: i64) -> StoreResult<Vec<Taken>> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT m.lot_id, -m.coins, l.expires_at FROM lot_moves m JOIN lots l ON l.lot_id = m.lot_id WHERE m.entry_id = $1 ORDER BY m.lot_id",
            )
            .await?;
        Ok(self.0.query(&stmt, &[&entry_id]).await?.iter().map(|r| Taken { lot_id: r.get(0), coins: r.get(1), expires_at: r.get(2) }).collect())
    }

    async fn insert_entry(&mut self, company: &CompanyId, user: &UserId, e: &NewEntry, now_ms: i64) -> StoreResult<i64> {
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO ledger_entries (company_id, user_id, type, coins, balance_after, event, request_id, coin_config_id, created_at, expires_at, \
                 order_id, amount_minor, original_request_id, pending_coins, pending_after, effective_at, reason, client_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING entry_id",
            )
            .await?;
        let request_id = e.request_id.as_ref().map(RequestId::as_str);
        let row = self
            .0
            .query_one(
                &stmt,
                &[
                    &company.as_str(),
                    &user.as_str(),
                    &e.kind.as_str(),
                    &e.coins,
                    &e.balance_after,
                    &e.event,
                    &request_id,
                    &e.coin_config_id,
                    &now_ms,
                    &e.expires_at,
                    &e.order_id,
                    &e.amount_minor,
                    &e.original_request_id.as_ref().map(RequestId::as_str),
                    &e.pending_coins,
                    &e.pending_after,
                    &e.effective_at,
                    &e.reason,
                    &e.client_id,
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn record_events(&mut self, company: &CompanyId, user: &UserId, entry_id: i64, event: EventType, now_ms: i64) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, event_type, state, next_attempt_at, created_at) \
                 SELECT webhook_id, $1, $2, $3, $4, 'pending', $5, $5 FROM webhooks WHERE company_id = $1 AND enabled AND (event_mask & $6) <> 0",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &user.as_str(), &entry_id, &event.as_str(), &now_ms, &event.bit()]).await?;
        Ok(())
    }

    async fn add_to_daily(&mut self, company: &CompanyId, e: &NewEntry, now_ms: i64) -> StoreResult<()> {
        let (credit, debit) = report::credit_debit(e.coins);
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) \
                 VALUES ($1, $2, $3, $4, pg_backend_pid() % $5, $6, $7, 1) \
                 ON CONFLICT (company_id, day, event, type, shard) DO UPDATE SET credit = ledger_daily.credit + EXCLUDED.credit, \
                 debit = ledger_daily.debit + EXCLUDED.debit, entries = ledger_daily.entries + 1",
            )
            .await?;
        let event = e.event.as_deref().unwrap_or("");
        // One shard per connection, not per entry (see DAILY_SHARDS).
        let shards = i32::from(DAILY_SHARDS);
        self.0.execute(&stmt, &[&company.as_str(), &report::day_of(now_ms), &event, &e.kind.as_str(), &shards, &credit, &debit]).await?;
        Ok(())
    }

    async fn insert_lot(&mut self, company: &CompanyId, user: &UserId, entry_id: i64, lot: &NewLot, now_ms: i64) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "INSERT INTO lots (company_id, user_id, entry_id, coins, remaining, expires_at, created_at, pending_until) VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &user.as_str(), &entry_id, &lot.coins, &lot.expires_at, &now_ms, &lot.pending_until]).await?;
        Ok(())
    }

    async fn apply_moves(&mut self, entry_id: i64, moves: &[LotMove]) -> StoreResult<()> {
        let update = self.0.prepare_cached("UPDATE lots SET remaining = remaining + $2 WHERE lot_id = $1").await?;
        let record = self.0.prepare_cached("INSERT INTO lot_moves (entry_id, lot_id, coins) VALUES ($1, $2, $3)").await?;
        for m in moves {
            self.0.execute(&update, &[&m.lot_id, &m.coins]).await?;
            self.0.execute(&record, &[&entry_id, &m.lot_id, &m.coins]).await?;
        }
        Ok(())
    }

    async fn set_balance(&mut self, company: &CompanyId, user: &UserId, balance: i64, lifetime: Lifetime, delta: i64) -> StoreResult<()> {
        let sql = match lifetime {
            Lifetime::Earned => "UPDATE users SET balance = $3, lifetime_earned = lifetime_earned + $4 WHERE company_id = $1 AND user_id = $2",
            Lifetime::Redeemed => "UPDATE users SET balance = $3, lifetime_redeemed = lifetime_redeemed + $4 WHERE company_id = $1 AND user_id = $2",
            Lifetime::Expired => "UPDATE users SET balance = $3, lifetime_expired = lifetime_expired + $4 WHERE company_id = $1 AND user_id = $2",
        };
        let stmt = self.0.prepare_cached(sql).await?;
        self.0.execute(&stmt, &[&company.as_str(), &user.as_str(), &balance, &delta]).await?;
        Ok(())
    }

    async fn set_balance_qualifying(&mut self, company: &CompanyId, user: &UserId, balance: i64, delta: i64, qualifying: i64) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE users SET balance = $3, lifetime_earned = lifetime_earned + $4, qualifying_total = qualifying_total + $5 \
                 WHERE company_id = $1 AND user_id = $2",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &user.as_str(), &balance, &delta, &qualifying]).await?;
        Ok(())
    }

    async fn tier_scheme(&mut self, company: &CompanyId) -> StoreResult<Option<TierScheme>> {
        super::tiers::scheme(self.0, company).await
    }

    async fn current_scheme(&mut self, company: &CompanyId, _cached: Option<&Arc<TierScheme>>) -> StoreResult<Option<Arc<TierScheme>>> {
        // Another process may have set a scheme up or removed it a moment ago.
        Ok(super::tiers::scheme(self.0, company).await?.map(Arc::new))
    }

    async fn tier(&mut self, user: &UserId) -> StoreResult<TierState> {
        super::tiers::state(self.0, user).await
    }

    async fn member(&mut self, user: &UserId, locked: bool) -> StoreResult<Member> {
        let lock = if locked { " FOR UPDATE" } else { "" };
        let stmt = self
            .0
            .prepare_cached(&format!("SELECT company_id, balance, pending_balance, qualifying_total, {TIER_COLUMNS} FROM users WHERE user_id = $1{lock}"))
            .await?;
        Ok(self
            .0
            .query_opt(&stmt, &[&user.as_str()])
            .await?
            .map(|r| Member {
                account: Some(Account { company: CompanyId::from_trusted(r.get(0)), balance: r.get(1), pending: r.get(2) }),
                qualifying_total: r.get(3),
                tier: tier_state(&r, 4),
            })
            .unwrap_or_default())
    }

    async fn qualifying(&mut self, user: &UserId, since_ms: Option<i64>) -> StoreResult<i64> {
        super::tiers::qualifying(self.0, user, since_ms).await
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
        let total = match (counted, before) {
            (true, Some(before)) => before.checked_add(q.coins).ok_or_else(|| StoreError::Corrupt(format!("the qualifying coins of {user} overflow")))?,
            (true, None) => super::tiers::qualifying(self.0, user, None).await?,
            // The update returns the total: no read saved by the one taken under the lock.
            (false, _) => {
                let stmt =
                    self.0.prepare_cached("UPDATE users SET qualifying_total = qualifying_total + $2 WHERE user_id = $1 RETURNING qualifying_total").await?;
                self.0.query_one(&stmt, &[&user.as_str(), &q.coins]).await?.get(0)
            }
        };
        if dated {
            let stmt = self.0.prepare_cached(&ADD_DAY_SQL.replace('?', "$")).await?;
            self.0.execute(&stmt, &[&user.as_str(), &qualifying_day(q.earned_at), &company.as_str(), &q.coins]).await?;
        }
        Ok(total)
    }

    async fn set_tier(&mut self, company: &CompanyId, user: &UserId, t: &TierState, change: Option<&TierChange>, now_ms: i64) -> StoreResult<()> {
        let stmt = self
            .0
            .prepare_cached(
                "UPDATE users SET tier_code = $3, tier_entered_at = $4, tier_expires_at = $5, tier_cause = $6, tier_floor = $7, tier_floor_reason = $8 \
                 WHERE company_id = $1 AND user_id = $2",
            )
            .await?;
        self.0.execute(&stmt, &[&company.as_str(), &user.as_str(), &t.code, &t.entered_at, &t.expires_at, &t.cause, &t.floor, &t.floor_reason]).await?;
        let Some(change) = change else { return Ok(()) };
        let (kind, from, to, qualifying, expires_at, cause, request_id) = change_columns(change);
        let event = EventType::of_tier_change(change.kind);
        // The change and its webhook messages in one statement.
        let stmt = self
            .0
            .prepare_cached(
                "WITH c AS (INSERT INTO tier_changes (company_id, user_id, kind, from_tier, to_tier, qualifying_coins, tier_expires_at, cause, request_id, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING change_id) \
                 INSERT INTO webhook_messages (webhook_id, company_id, user_id, tier_change_id, event_type, state, next_attempt_at, created_at) \
                 SELECT w.webhook_id, $1, $2, c.change_id, $11, 'pending', $10, $10 FROM c CROSS JOIN webhooks w \
                 WHERE w.company_id = $1 AND w.enabled AND (w.event_mask & $12) <> 0",
            )
            .await?;
        self.0
            .execute(
                &stmt,
                &[&company.as_str(), &user.as_str(), &kind, &from, &to, &qualifying, &expires_at, &cause, &request_id, &now_ms, &event.as_str(), &event.bit()],
            )
            .await?;
        Ok(())
    }
}

impl Core {
    /// Applies these allocations in one transaction now. If the batch fails as a whole for a
    /// reason other than a refusal (which the function answers per item), each item is retried
    /// alone, so one broken item never fails or loses its neighbours.
    pub(super) async fn allocate_now(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>> {
        let n = cmds.len();
        let batch = cmds.clone();
        let caches = self.caches.clone();
        let outcome = self
            .transact(move |tx| {
                let (batch, caches) = (batch.clone(), caches.clone());
                Box::pin(async move { allocate_batch(tx, &batch, &caches).await })
            })
            .await;
        match outcome {
            Ok(results) => {
                // An allocation that earned nothing may still have opened the user's account.
                let changed = cmds.iter().zip(&results).filter(|(_, r)| matches!(r, Ok(AllocateOk::Allocated { .. } | AllocateOk::Zero)));
                self.balances_changed(changed.map(|(c, _)| c.user.as_str()));
                results
            }
            Err(e) => {
                // A COMMIT can succeed and still be reported as failed (connection lost): the
                // users may have changed, so their cached balances go, here and elsewhere.
                self.balances_changed(cmds.iter().map(|c| c.user.as_str()));
                if n == 1 {
                    return vec![Err(e)];
                }
                if e.is_transient() {
                    // The database is away: trying each item alone would only wait n times.
                    let shared = std::sync::Arc::new(e);
                    return (0..n).map(|_| Err(StoreError::Unavailable(Box::new(Shared(shared.clone()))))).collect();
                }
                tracing::warn!(error = %crate::store::error::chain(&e), items = n, "allocation batch failed; applying its items one by one");
                let mut results = Vec::with_capacity(n);
                for cmd in cmds {
                    results.push(Box::pin(self.allocate_now(vec![cmd])).await.pop().unwrap_or_else(|| Err(StoreError::Corrupt("no result".into()))));
                }
                results
            }
        }
    }
}

/// Takes the lock on `requests` that every ledger write takes with its first row there, before
/// this transaction locks any member's row. A batch and the sweeper lock members first; a tier
/// scheme's setup holds `requests` (`postgres/tiers.rs`) and then locks members: taken in
/// opposite orders the two would deadlock (and the setup, which waits longest, be the one
/// aborted). `ROW EXCLUSIVE` is what every insert takes anyway, so writers never wait for each
/// other here, only for a setup.
async fn lock_ledger_order(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.batch_execute("LOCK TABLE requests IN ROW EXCLUSIVE MODE").await?;
    Ok(())
}

/// How an item of a batch is decided.
enum Path {
    /// Set-based, with what it earns (`None`: no configuration applies, so it is a replay, a
    /// request-id conflict or `CONFIG_NOT_FOUND`, answered as `allocate::answer_repeat` does).
    Set(Option<EarnPlan>),
    /// Set-based, with what it earns decided in its round from the member's tier (their company
    /// has a tier scheme).
    Tiered,
    /// Step by step, by the Rust plan of `store/ledger.rs`.
    Steps,
}

/// Set-based unless the earning depends on what only the step-by-step plan reads under the
/// member's lock (a campaign with a per-user limit, a tier whose retention is up) or is refused:
/// see [`ledger::earning_at_tier`].
fn path(cmd: &AllocateCmd, resolved: &Resolved) -> Path {
    match &resolved.config {
        None => Path::Set(None),
        Some(_) if resolved.tiers.is_some() => Path::Tiered,
        Some(config) => ledger::earning_before_claim(cmd, config, resolved.offers()).map_or(Path::Steps, |earn| Path::Set(Some(earn))),
    }
}

/// Applies a batch: set-based items with `coins_allocate_set` (a lone plain one of a company
/// without tiers with `coins_allocate_one`, cheaper when there is nothing to share), the others one by one through
/// the Rust plans, in the same transaction. A request id or an order id that occurs twice among
/// the set-based items starts a later call, where it finds the first occurrence's effects,
/// exactly as two requests one after the other would (and so does a tiered member's item after
/// one that may upgrade them: see `decide_round`).
async fn allocate_batch(tx: &Transaction<'_>, cmds: &[AllocateCmd], caches: &Caches) -> StoreResult<Vec<StoreResult<AllocateOk>>> {
    lock_ledger_order(tx).await?;
    let mut configs = resolve_batch(tx, cmds, caches).await?;
    let mut results: Vec<Option<StoreResult<AllocateOk>>> = cmds.iter().map(|_| None).collect();
    let mut paths: Vec<Path> = cmds.iter().zip(&configs).map(|(cmd, resolved)| path(cmd, resolved)).collect();
    // The step-by-step plan reads the scheme itself; set-based items are decided on fresh ones.
    if paths.iter().any(|p| !matches!(p, Path::Steps)) {
        fresh_schemes(tx, cmds, &mut configs, caches).await?;
        paths = cmds.iter().zip(&configs).map(|(cmd, resolved)| path(cmd, resolved)).collect();
    }
    if paths.iter().any(|p| !matches!(p, Path::Set(_))) || !one_round(cmds) {
        // The Rust plans lock each item's user as they reach it, in item order; a tiered round
        // reads its members' tiers before coins_allocate_set locks them; and each call of
        // coins_allocate_set locks only its own round's users. Two batches with the same users in
        // other orders would deadlock (and be retried whole, again and again: measured at 34
        // allocations/s). Every user of the batch is locked first, in user_id order, as
        // coins_allocate_set does for its own; the locks taken later are held already.
        let mut users: Vec<&str> = cmds.iter().map(|c| c.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let lock = tx.prepare_cached("SELECT 1 FROM users u JOIN unnest($1::TEXT[]) AS x(uid) ON u.user_id = x.uid ORDER BY u.user_id FOR UPDATE OF u").await?;
        tx.query(&lock, &[&users]).await?;
    }
    // Items are decided in array order, as if applied one by one: a run of set-based items goes
    // to the set-based function at once, any other item to the Rust plans on its own.
    let mut next = 0;
    let mut rolled_up = Vec::new();
    while next < cmds.len() {
        if matches!(paths[next], Path::Steps) {
            match ledger::allocate(&mut PgTx(tx), &cmds[next], configs[next].config.as_ref(), configs[next].offers()).await {
                // Anything but a refusal may have aborted the transaction: the batch fails whole
                // (and `allocate_now` applies its items one by one).
                Err(e) if !matches!(e, StoreError::Refused(_)) => return Err(e),
                outcome => results[next] = Some(outcome),
            }
            next += 1;
            continue;
        }
        // The longest run of set-based items without a repeated request id or order id (later
        // items must see the effects of earlier ones, so a round is always a consecutive run),
        // which `decide_round` may end earlier.
        let (mut requests, mut orders) = (HashSet::new(), HashSet::new());
        let end = (next..cmds.len())
            .find(|&i| {
                let c = &cmds[i];
                let order = c.purchase.order_id.as_ref().map(|o| (c.company.as_str(), c.event.as_str(), o.as_str()));
                matches!(paths[i], Path::Steps) || !requests.insert((c.company.as_str(), c.request_id.as_str())) || order.is_some_and(|o| !orders.insert(o))
            })
            .unwrap_or(cmds.len());
        let round = decide_round(tx, cmds, &configs, &paths, next..end).await?;
        if let Some(i) = round.steps {
            // Its member's tier or a campaign's limit needs the step-by-step plan: it is applied
            // alone after the round.
            paths[i] = Path::Steps;
        }
        let Some(&(last, _)) = round.items.last() else {
            if round.steps == Some(next) {
                continue;
            }
            return Err(StoreError::Corrupt("an empty round of set-based items".into()));
        };
        next = last + 1;
        let refs: Vec<(usize, Option<&EarnPlan>)> = round.items.iter().map(|(i, e)| (*i, e.as_ref())).collect();
        let (rows, whole) = allocate_round(tx, cmds, &configs, &refs, &round.tiers).await?;
        if rows.len() != round.items.len() {
            return Err(StoreError::Corrupt(format!("coins_allocate_set answered {} of {} items", rows.len(), round.items.len())));
        }
        let mut entries = Vec::new();
        let mut held_orders = Vec::new();
        let mut qualified = Vec::new();
        let mut answered = vec![false; round.items.len()];
        for row in &rows {
            // out_idx is 1-based within this call; rows come in no particular order.
            let k = usize::try_from(row.get::<_, i32>(0)).ok().and_then(|k| k.checked_sub(1)).filter(|&k| k < answered.len());
            let Some(k) = k.filter(|&k| !std::mem::replace(&mut answered[k], true)) else {
                return Err(StoreError::Corrupt("coins_allocate_set answered an unknown or repeated item".into()));
            };
            let (i, ref earn) = round.items[k];
            match allocation_outcome(row, &cmds[i])? {
                Some(outcome) => {
                    if let (Ok(AllocateOk::Allocated { entry_id, .. }), Some(earn)) = (&outcome, earn) {
                        if !whole {
                            entries.push((*entry_id, if earn.held_until().is_some() { EventType::Pending } else { EventType::Allocated }));
                        }
                        if let Some((scheme, state, total)) = round.tiers.get(&i) {
                            qualified.push(Qualified { item: i, scheme, state, coins: ledger::qualifying_now(earn), before: *total });
                        }
                    }
                    results[i] = Some(outcome);
                }
                None => held_orders.push(i),
            }
        }
        placed_meanwhile(tx, cmds, &round.new_members, &qualified).await?;
        record_events(tx, &mut entries).await?;
        rolled_up.extend(entries.iter().map(|&(id, _)| id));
        qualify_round(tx, cmds, &qualified).await?;
        // Claims lost to a live allocation of the same order id: a replay under an alias, or a
        // conflict naming the holder.
        for i in held_orders {
            match ledger::answer_held_order(&mut PgTx(tx), &cmds[i]).await {
                Err(e) if !matches!(e, StoreError::Refused(_)) => return Err(e),
                outcome => results[i] = Some(outcome),
            }
        }
    }
    add_to_daily(tx, &mut rolled_up).await?;
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(StoreError::Corrupt("an allocation was not answered".into())))).collect())
}

/// The tier schemes of the batch's companies as they stand: a scheme set up or removed since
/// the resolutions were cached (another process's notice may not have arrived yet) replaces the
/// cached one, and clears the cache. No scheme changes until this transaction ends: a scheme's
/// setup takes `requests` in a mode that waits for the lock `lock_ledger_order` took.
async fn fresh_schemes(tx: &Transaction<'_>, cmds: &[AllocateCmd], configs: &mut [Resolved], caches: &Caches) -> StoreResult<()> {
    let mut companies: Vec<&str> = cmds.iter().zip(configs.iter()).filter(|(_, r)| r.config.is_some()).map(|(c, _)| c.company.as_str()).collect();
    companies.sort_unstable();
    companies.dedup();
    if companies.is_empty() {
        return Ok(());
    }
    let schemes = super::tiers::schemes(tx, &companies, &caches.schemes).await?;
    let mut stale = false;
    for (cmd, resolved) in cmds.iter().zip(configs.iter_mut()) {
        let fresh = schemes.iter().find(|(c, _)| c == cmd.company.as_str()).map(|(_, s)| s);
        let same = match (&resolved.tiers, fresh) {
            (Some(cached), Some(fresh)) => Arc::ptr_eq(cached, fresh) || cached == fresh,
            (cached, fresh) => cached.is_none() && fresh.is_none(),
        };
        if resolved.config.is_some() && !same {
            resolved.tiers = fresh.cloned();
            stale = true;
        }
    }
    if stale {
        caches.configs.clear();
    }
    Ok(())
}

/// A round of set-based items with what each earns.
struct Round {
    items: Vec<(usize, Option<EarnPlan>)>,
    /// The scheme, tier and running total (as read under the member's lock, before the round) of
    /// each tiered item.
    tiers: HashMap<usize, (Arc<TierScheme>, Arc<TierState>, i64)>,
    /// Tiered members not yet in the ledger when their tier was read (the first tier).
    new_members: Vec<String>,
    /// The item the round ends before because it must be applied step by step.
    steps: Option<usize>,
}

/// Decides what each item of a run of set-based items earns, reading (and locking) the tiers of
/// its tiered members in one statement. The round ends early before an item that needs the
/// step-by-step plan, and before a member's next item once an earlier one of the round may
/// upgrade them (their qualifying coins so far, counting every earlier item of the round as
/// credited, reach a higher tier): that item earns at the new multiplier, so it waits for the
/// upgrade to be written. A ROLLING scheme counts at most the member's lifetime total, so that is
/// the bound on both bases.
async fn decide_round(tx: &Transaction<'_>, cmds: &[AllocateCmd], configs: &[Resolved], paths: &[Path], run: Range<usize>) -> StoreResult<Round> {
    let members: Vec<&str> = run.clone().filter(|&i| matches!(paths[i], Path::Tiered)).map(|i| cmds[i].user.as_str()).collect();
    let mut states: HashMap<String, (String, Arc<TierState>, i64)> = HashMap::new();
    if !members.is_empty() {
        // Locked: a member whose row appeared after the batch's upfront lock is locked here, so
        // no other transaction changes their tier before this run is written.
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT u.user_id, u.company_id, u.qualifying_total, {} FROM users u JOIN unnest($1::TEXT[]) AS x(uid) ON u.user_id = x.uid \
                 ORDER BY u.user_id FOR UPDATE OF u",
                TIER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
            ))
            .await?;
        for r in tx.query(&stmt, &[&members]).await? {
            // Shared by the member's items of the round: a tier has six fields, four of them text.
            states.insert(r.get(0), (r.get(1), Arc::new(tier_state(&r, 3)), r.get(2)));
        }
    }
    let mut round = Round { items: Vec::with_capacity(run.len()), tiers: HashMap::new(), new_members: Vec::new(), steps: None };
    // Per tiered member: the most qualifying coins they can have after the round's items so far,
    // and whether one of those may have upgraded them.
    let mut reach: HashMap<&str, (i64, bool)> = HashMap::new();
    for i in run {
        let (cmd, resolved) = (&cmds[i], &configs[i]);
        let earn = match (&paths[i], &resolved.config, &resolved.tiers) {
            (Path::Set(earn), ..) => earn.clone(),
            (Path::Tiered, Some(config), Some(scheme)) => {
                // A new member, or one of another company (refused anyway), has the first tier.
                let (state, total) = match states.get(cmd.user.as_str()) {
                    Some((company, state, total)) if company == cmd.company.as_str() => (state.clone(), *total),
                    Some(_) => (Arc::default(), 0),
                    None => {
                        round.new_members.push(cmd.user.to_string());
                        (Arc::default(), 0)
                    }
                };
                // From the member's own running total even when this item is of another company
                // (refused, but counted): a later item of their company must not start from 0.
                let stored = states.get(cmd.user.as_str()).map_or(0, |(_, _, total)| *total);
                let (most, may_upgrade) = reach.entry(cmd.user.as_str()).or_insert((stored, false));
                if *may_upgrade {
                    return Ok(round);
                }
                let Some(earn) = ledger::earning_at_tier(cmd, config, resolved.offers(), Some((scheme, &state))) else {
                    round.steps = Some(i);
                    return Ok(round);
                };
                *most = most.saturating_add(ledger::qualifying_now(&earn));
                *may_upgrade = scheme.may_upgrade(&state, *most);
                round.tiers.insert(i, (scheme.clone(), state, total));
                Some(earn)
            }
            _ => {
                round.steps = Some(i);
                return Ok(round);
            }
        };
        round.items.push((i, earn));
    }
    Ok(round)
}

/// A new member's tier was read before they had a row: another transaction that created them
/// meanwhile (the set-based function waited for it) may have placed them in a higher tier, or
/// given them qualifying coins, which this round's earning (and its bound on upgrades) did not
/// see. Then the batch runs again, with their row locked. A row this round created has no tier
/// yet, and no qualifying coins but those of this round's items, which the function added.
async fn placed_meanwhile(tx: &Transaction<'_>, cmds: &[AllocateCmd], new_members: &[String], qualified: &[Qualified<'_>]) -> StoreResult<()> {
    if new_members.is_empty() {
        return Ok(());
    }
    let mut added: HashMap<&str, i64> = new_members.iter().map(|m| (m.as_str(), 0)).collect();
    for q in qualified.iter().filter(|q| q.coins > 0) {
        if let Some(total) = added.get_mut(cmds[q.item].user.as_str()) {
            *total = total.saturating_add(q.coins);
        }
    }
    let (users, coins): (Vec<&str>, Vec<i64>) = added.into_iter().unzip();
    let stmt = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM users u JOIN unnest($1::TEXT[], $2::BIGINT[]) AS x(user_id, added) ON u.user_id = x.user_id \
             WHERE u.tier_code IS NOT NULL OR u.tier_floor IS NOT NULL OR u.tier_expires_at IS NOT NULL OR u.qualifying_total <> x.added)",
        )
        .await?;
    match tx.query_one(&stmt, &[&users, &coins]).await?.get::<_, bool>(0) {
        true => Err(StoreError::Stale("a new member was placed in a tier or qualified in another transaction during the batch")),
        false => Ok(()),
    }
}

/// A tiered item the set-based function allocated: its member's scheme and tier, the qualifying
/// coins it added, and the member's running total before the round (read under their lock).
struct Qualified<'a> {
    item: usize,
    scheme: &'a TierScheme,
    state: &'a TierState,
    coins: i64,
    before: i64,
}

/// What the step-by-step plan's `qualify` does after each spendable credit of a tiered member,
/// for a round's credits at once. The set-based function already added their qualifying coins
/// to the members' running totals (and to their day rows, on a ROLLING scheme); here, in item
/// order, each member whose coins after an item reach a higher tier is upgraded (the allocation
/// that does it earned at the old multiplier; a round holds no later item of a member an earlier
/// one may upgrade).
async fn qualify_round(tx: &Transaction<'_>, cmds: &[AllocateCmd], qualified: &[Qualified<'_>]) -> StoreResult<()> {
    // In item order, so tier changes (and their webhook messages) follow the allocations' order.
    let mut qualified: Vec<&Qualified<'_>> = qualified.iter().filter(|q| q.coins > 0).collect();
    qualified.sort_unstable_by_key(|q| q.item);
    if qualified.is_empty() {
        return Ok(());
    }
    let user_of = |k: usize| cmds[qualified[k].item].user.as_str();
    // What each item's member counts right after it (as `qualifying` would read it then): the
    // total read before the round plus the member's items of the round up to this one.
    let mut running: HashMap<&str, i64> = HashMap::new();
    let mut after: Vec<i64> = Vec::with_capacity(qualified.len());
    for (k, q) in qualified.iter().enumerate() {
        let total = running.entry(user_of(k)).or_insert(q.before);
        *total = total.saturating_add(q.coins);
        after.push(*total);
    }
    // The coins of the member's items after item k made at or after `since`.
    let later = |k: usize, since: i64| -> i64 {
        qualified[k + 1..].iter().filter(|q| cmds[q.item].user.as_str() == user_of(k) && cmds[q.item].now_ms >= since).map(|q| q.coins).sum()
    };
    // A window is counted only where the running total may upgrade (see `may_upgrade`): the
    // window's sum after the round, less the member's later items of the round inside it (all
    // of them, unless the clock went back a whole window within the batch).
    let windowed: Vec<usize> =
        (0..qualified.len()).filter(|&k| qualified[k].scheme.dated() && qualified[k].scheme.may_upgrade(qualified[k].state, after[k])).collect();
    if !windowed.is_empty() {
        let users: Vec<&str> = windowed.iter().map(|&k| user_of(k)).collect();
        let since: Vec<i64> =
            windowed.iter().map(|&k| qualified[k].scheme.window_start(cmds[qualified[k].item].now_ms).map_or(i64::MIN, qualifying_day)).collect();
        let stmt = tx
            .prepare_cached(
                "SELECT (SELECT COALESCE(SUM(q.coins), 0)::BIGINT FROM qualifying_days q WHERE q.user_id = x.user_id AND q.day >= x.since) \
                 FROM unnest($1::TEXT[], $2::BIGINT[]) WITH ORDINALITY AS x(user_id, since, n) ORDER BY x.n",
            )
            .await?;
        for (&k, r) in windowed.iter().zip(tx.query(&stmt, &[&users, &since]).await?) {
            let since = qualified[k].scheme.window_start(cmds[qualified[k].item].now_ms).unwrap_or(i64::MIN);
            after[k] = r.get::<_, i64>(0) - later(k, since);
        }
    }
    // The tiers of the members this round moved, as moved (the others are as read).
    let mut moved: HashMap<&str, TierState> = HashMap::new();
    for (q, qualifying) in qualified.iter().zip(after) {
        let cmd = &cmds[q.item];
        let state = moved.get(cmd.user.as_str()).unwrap_or(q.state);
        if let Some(change) = q.scheme.after_earning(state, qualifying, cmd.now_ms, cmd.request_id.as_str()) {
            PgTx(tx).set_tier(&cmd.company, &cmd.user, &change.state, Some(&change), cmd.now_ms).await?;
            moved.insert(cmd.user.as_str(), change.state);
        }
    }
    Ok(())
}

/// One call of the set-based functions for a round of items (index into `cmds`, and what each
/// earns): `coins_allocate_one` for a lone plain item of a company without tiers (it adds no
/// qualifying coins), `coins_allocate_set` otherwise. With
/// whether the call also wrote the outbox and the daily roll-up of its entries (a batch of one
/// plain item: `coins_allocate_one` writes it whole, in one statement after the claim).
async fn allocate_round(
    tx: &Transaction<'_>,
    cmds: &[AllocateCmd],
    configs: &[Resolved],
    round: &[(usize, Option<&EarnPlan>)],
    tiers: &HashMap<usize, (Arc<TierScheme>, Arc<TierState>, i64)>,
) -> StoreResult<(Vec<Row>, bool)> {
    let config = |i: usize| configs[i].config.as_ref();
    // Only coins_allocate_set adds a tiered member's qualifying coins.
    if let ([c], [(i, earn)]) = (cmds, round)
        && earn.is_none_or(|e| e.record.is_none())
        && !tiers.contains_key(i)
    {
        let config = configs[0].config.as_ref();
        let whole = tx
            .prepare_cached(
                "SELECT out_idx, out_status, out_coins, out_balance, out_entry \
                 FROM coins_allocate_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .await?;
        let (config_id, coins) = (config.map(|c| c.id.to_string()), earn.map(|e| e.coins));
        let expires = earn.zip(config).and_then(|(e, config)| e.lot_expiry(c.now_ms, config));
        let caps = (config.and_then(|c| c.values.max_per_user_per_day), config.and_then(|c| c.values.max_per_user));
        let event = EventType::Allocated;
        let rows = tx
            .query(
                &whole,
                &[
                    &c.company.as_str(),
                    &c.user.as_str(),
                    &c.event.as_str(),
                    &c.request_id.as_str(),
                    &c.now_ms,
                    &config_id,
                    &coins,
                    &expires,
                    &caps.0,
                    &caps.1,
                    &event.as_str(),
                    &event.bit(),
                    &i32::from(DAILY_SHARDS),
                ],
            )
            .await?;
        return Ok((rows, true));
    }
    if let [(i, earn)] = round
        && earn.is_none_or(|e| e.record.is_none())
        && !tiers.contains_key(i)
    {
        // A lone plain round inside a larger batch: the 10-argument overload (0012), which
        // leaves the outbox and the roll-up to the batch (its roll-up rows are written at the
        // end, in key order). Still called: migration 0017's header says otherwise, wrongly.
        let (c, config) = (&cmds[*i], config(*i));
        let one = tx
            .prepare_cached("SELECT out_idx, out_status, out_coins, out_balance, out_entry FROM coins_allocate_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .await?;
        let params: (Option<i64>, Option<i64>, Option<i64>) = (config.map(|c| c.id.seq()), earn.map(|e| e.coins), config.and_then(|c| c.values.validity_days));
        let caps = (config.and_then(|c| c.values.max_per_user_per_day), config.and_then(|c| c.values.max_per_user));
        let rows = tx
            .query(
                &one,
                &[
                    &c.company.as_str(),
                    &c.user.as_str(),
                    &c.event.as_str(),
                    &c.request_id.as_str(),
                    &c.now_ms,
                    &params.0,
                    &params.1,
                    &params.2,
                    &caps.0,
                    &caps.1,
                ],
            )
            .await?;
        return Ok((rows, false));
    }
    // The function writes no `campaign_limited` mark: a per-user limit's count would miss these.
    if round.iter().any(|(_, e)| e.and_then(|e| e.record.as_ref()).is_some_and(|r| r.campaign_limited_mark().is_some())) {
        return Err(StoreError::Corrupt("an allocation under a campaign with a per-user limit reached the set-based function".into()));
    }
    let set = tx
        .prepare_cached(
            "SELECT out_idx, out_status, out_coins, out_balance, out_entry FROM coins_allocate_set($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
        )
        .await?;
    let cmd = |f: &dyn Fn(&AllocateCmd) -> &str| -> Vec<&str> { round.iter().map(|&(i, _)| f(&cmds[i])).collect() };
    let record =
        |f: &dyn Fn(&RecordFields) -> Option<i64>| -> Vec<Option<i64>> { round.iter().map(|(_, e)| e.and_then(|e| e.record.as_ref()).and_then(f)).collect() };
    let text = |f: &dyn Fn(&RecordFields) -> Option<String>| -> Vec<Option<String>> {
        round.iter().map(|(_, e)| e.and_then(|e| e.record.as_ref()).and_then(f)).collect()
    };
    let (companies, users, events, requests) =
        (cmd(&|c| c.company.as_str()), cmd(&|c| c.user.as_str()), cmd(&|c| c.event.as_str()), cmd(&|c| c.request_id.as_str()));
    let nows: Vec<i64> = round.iter().map(|&(i, _)| cmds[i].now_ms).collect();
    let config_ids: Vec<Option<String>> = round.iter().map(|&(i, _)| config(i).map(|c| c.id.to_string())).collect();
    let coins: Vec<Option<i64>> = round.iter().map(|(_, e)| e.map(|e| e.coins)).collect();
    let expires: Vec<Option<i64>> = round.iter().map(|&(i, e)| e.zip(config(i)).and_then(|(e, c)| e.lot_expiry(cmds[i].now_ms, c))).collect();
    let cap = |f: &dyn Fn(&CoinConfig) -> Option<i64>| -> Vec<Option<i64>> { round.iter().map(|&(i, _)| config(i).and_then(f)).collect() };
    let (cap_day, cap_ever) = (cap(&|c| c.values.max_per_user_per_day), cap(&|c| c.values.max_per_user));
    let orders: Vec<Option<&str>> = round.iter().map(|&(i, _)| cmds[i].purchase.order_id.as_ref().map(OrderId::as_str)).collect();
    let amounts: Vec<Option<i64>> = round.iter().map(|&(i, _)| cmds[i].purchase.amount_minor).collect();
    // A tiered item's qualifying coins, and on a ROLLING scheme the day they count on.
    let tier = |i: usize| tiers.get(&i).map(|(scheme, ..)| scheme);
    let qualify: Vec<Option<i64>> = round.iter().map(|&(i, e)| tier(i).and(e).map(ledger::qualifying_now)).collect();
    let qualify_day: Vec<Option<i64>> = round.iter().map(|&(i, _)| tier(i).filter(|s| s.dated()).map(|_| qualifying_day(cmds[i].now_ms))).collect();
    let rows = tx
        .query(
            &set,
            &[
                &companies,
                &users,
                &events,
                &requests,
                &nows,
                &config_ids,
                &coins,
                &expires,
                &cap_day,
                &cap_ever,
                &record(&|r| r.activates_at),
                &text(&|r| Some(r.state.as_str().to_owned())),
                &text(&|r| r.zero_reason.map(|z| z.as_str().to_owned())),
                &record(&|r| Some(r.base_coins)),
                &orders,
                &amounts,
                &text(&|r| r.currency.clone()),
                &text(&|r| Some(r.calculation.clone())),
                &text(&|r| r.campaign_id.map(|c| c.to_string())),
                &record(&|r| r.activated_at),
                &record(&|r| r.expires_at),
                &qualify,
                &qualify_day,
            ],
        )
        .await?;
    Ok((rows, false))
}

/// Whether the batch's set-based items make one call of the set-based function as far as request
/// ids and order ids go: none repeats. (A tiered run may still end early, before a member's item
/// after one that may upgrade them; tiered batches take the upfront lock anyway.)
fn one_round(cmds: &[AllocateCmd]) -> bool {
    let (mut requests, mut orders) = (HashSet::new(), HashSet::new());
    cmds.iter().all(|c| {
        let order = c.purchase.order_id.as_ref().map(|o| (c.company.as_str(), c.event.as_str(), o.as_str()));
        requests.insert((c.company.as_str(), c.request_id.as_str())) && order.is_none_or(|o| orders.insert(o))
    })
}

/// Rows of the daily roll-up that concurrent transactions spread their additions over, so they
/// do not queue for one row lock each (readers sum over the shards). A transaction adds to one
/// shard of each key, its connection's: two transactions that both write several keys then never
/// lock two shards of one key in opposite orders (a shard drawn per statement did: 34 PERCENT
/// allocations/s), and one process's pooled connections rarely share one. (A shard drawn per
/// transaction instead, `txid_current()`, measured: campaigns with a per-user limit, whose
/// step-by-step items hold their roll-up rows from the first item to the commit, fell from 1,817
/// to 1,282 allocations/s.)
const DAILY_SHARDS: u8 = 16;

/// The webhook messages of a round's new entries (the flows' `record_events`, set-based), in
/// ledger order, so each member's events keep the order of their entries.
async fn record_events(tx: &Transaction<'_>, entries: &mut [(i64, EventType)]) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort_unstable_by_key(|&(id, _)| id);
    let ids: Vec<i64> = entries.iter().map(|&(id, _)| id).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO webhook_messages (webhook_id, company_id, user_id, entry_id, event_type, state, next_attempt_at, created_at) \
             SELECT w.webhook_id, e.company_id, e.user_id, e.entry_id, x.event, 'pending', e.created_at, e.created_at \
             FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[]) AS x(entry_id, event, bit) \
             JOIN ledger_entries e ON e.entry_id = x.entry_id \
             JOIN webhooks w ON w.company_id = e.company_id AND w.enabled AND (w.event_mask & x.bit) <> 0 \
             ORDER BY e.entry_id, w.webhook_id",
        )
        .await?;
    let events: Vec<&str> = entries.iter().map(|(_, e)| e.as_str()).collect();
    let bits: Vec<i64> = entries.iter().map(|(_, e)| e.bit()).collect();
    tx.execute(&stmt, &[&ids, &events, &bits]).await?;
    Ok(())
}

/// The set-based entries' share of the daily roll-up (the flows' `add_to_daily`), for the whole
/// batch at once at its end: one row lock per key, taken in key order just before the commit.
async fn add_to_daily(tx: &Transaction<'_>, entries: &mut [i64]) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort_unstable();
    let daily = tx
        .prepare_cached(
            "INSERT INTO ledger_daily (company_id, day, event, type, shard, credit, debit, entries) \
             SELECT company_id, created_at / 86400000, COALESCE(event, ''), type, pg_backend_pid() % $2, SUM(GREATEST(coins, 0)), \
             SUM(GREATEST(-coins, 0)), COUNT(*) \
             FROM ledger_entries WHERE entry_id = ANY($1) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 \
             ON CONFLICT (company_id, day, event, type, shard) DO UPDATE SET credit = ledger_daily.credit + EXCLUDED.credit, \
             debit = ledger_daily.debit + EXCLUDED.debit, entries = ledger_daily.entries + EXCLUDED.entries",
        )
        .await?;
    tx.execute(&daily, &[&&*entries, &i32::from(DAILY_SHARDS)]).await?;
    Ok(())
}

/// One row of `coins_allocate_set`, as the item's answer; `None` for a claim lost to a live
/// allocation of the same order id (the caller answers it). `ALONE` fails the whole transaction:
/// the caller then applies the items one by one.
fn allocation_outcome(row: &Row, cmd: &AllocateCmd) -> StoreResult<Option<StoreResult<AllocateOk>>> {
    let coins: Option<i64> = row.get(2);
    let status: &str = row.get(1);
    let limit = |cap| Refusal::LimitReached { cap, limit: coins.unwrap_or(0), user: cmd.user.clone(), event: cmd.event.clone(), company: cmd.company.clone() };
    let refused = |r: Refusal| Ok(Some(Err(r.into())));
    match status {
        "ALLOCATED" => Ok(Some(Ok(AllocateOk::Allocated {
            coins: Coins::from_stored(coins.unwrap_or(0)),
            balance: row.get::<_, Option<i64>>(3).unwrap_or(0),
            entry_id: row.get::<_, Option<i64>>(4).unwrap_or(0),
        }))),
        "ZERO" => Ok(Some(Ok(AllocateOk::Zero))),
        "REPLAYED" => Ok(Some(Ok(AllocateOk::Replayed { coins: Coins::from_stored(coins.unwrap_or(0)) }))),
        "ORDER_HELD" => Ok(None),
        "REQUEST_ID_CONFLICT" => refused(Refusal::RequestIdConflict(cmd.request_id.clone())),
        "CONFIG_NOT_FOUND" => refused(Refusal::ConfigNotFound { company: cmd.company.clone(), event: cmd.event.clone() }),
        "USER_COMPANY_MISMATCH" => refused(Refusal::UserCompanyMismatch { user: cmd.user.clone(), company: cmd.company.clone() }),
        "LIMIT_PER_DAY" => refused(limit(Cap::PerDay)),
        "LIMIT_EVER" => refused(limit(Cap::Ever)),
        "BALANCE_OVERFLOW" => refused(Refusal::BalanceOverflow(cmd.user.clone())),
        "ALONE" => Err(StoreError::Corrupt("this batch needs its items applied one by one".into())),
        other => Err(StoreError::Corrupt(format!("coins_allocate_set returned unknown status {other}"))),
    }
}

impl PgStore {
    /// Expires one user's due lots in its own transaction (under the user's row lock).
    async fn settle_user(&self, user: &UserId, now_ms: i64) -> StoreResult<Expired> {
        let who = user.clone();
        let outcome = self
            .core
            .transact(move |tx| {
                let who = who.clone();
                Box::pin(async move {
                    lock_ledger_order(tx).await?;
                    ledger::settle(&mut PgTx(tx), &who, now_ms).await
                })
            })
            .await;
        self.core.balances_changed([user.as_str()]);
        outcome
    }
}

#[async_trait]
impl LedgerStore for PgStore {
    async fn allocate(&self, cmds: Vec<AllocateCmd>) -> Vec<StoreResult<AllocateOk>> {
        match (&self.batcher, cmds.len()) {
            (Some(batcher), 1) => match cmds.into_iter().next() {
                Some(cmd) => vec![batcher.submit(cmd).await],
                None => Vec::new(),
            },
            _ => self.core.allocate_now(cmds).await,
        }
    }

    async fn redeem(&self, cmd: RedeemCmd) -> StoreResult<Applied<RedeemReceipt>> {
        let user = cmd.user.clone();
        let outcome = self
            .core
            .transact(move |tx| {
                let cmd = cmd.clone();
                Box::pin(async move { ledger::redeem(&mut PgTx(tx), &cmd).await })
            })
            .await;
        self.core.balances_changed([user.as_str()]);
        outcome
    }

    async fn reverse(&self, cmd: ReverseCmd) -> StoreResult<Applied<ReverseReceipt>> {
        let outcome = self
            .core
            .transact(move |tx| {
                let cmd = cmd.clone();
                Box::pin(async move { ledger::reverse(&mut PgTx(tx), &cmd).await })
            })
            .await;
        // The reversed request names no user here; reversals are rare enough to drop everything.
        self.core.all_balances_changed();
        outcome
    }

    async fn simulate(&self, cmd: SimulateCmd) -> StoreResult<Simulation> {
        // A READ ONLY transaction (any write would fail it) on one snapshot, rolled back.
        let mut client = self.core.client().await?;
        let tx = client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let resolved = match &cmd {
            SimulateCmd::Allocate(c) => resolve_batch(&tx, std::slice::from_ref(c), &self.core.caches).await?.pop().unwrap_or_default(),
            SimulateCmd::Reverse(_) => Resolved::default(),
        };
        let outcome = dry_run::simulate(PgTx(&tx), &cmd, &resolved).await;
        tx.rollback().await?;
        outcome
    }

    async fn adjust(&self, cmd: AdjustCmd) -> StoreResult<Applied<AdjustReceipt>> {
        let user = cmd.user.clone();
        let outcome = self
            .core
            .transact(move |tx| {
                let cmd = cmd.clone();
                Box::pin(async move { ledger::adjust(&mut PgTx(tx), &cmd).await })
            })
            .await;
        self.core.balances_changed([user.as_str()]);
        outcome
    }

    async fn activate(&self, cmd: ActivateCmd) -> StoreResult<Applied<ActivateReceipt>> {
        let outcome = self
            .core
            .transact(move |tx| {
                let cmd = cmd.clone();
                Box::pin(async move { ledger::activate(&mut PgTx(tx), &cmd).await })
            })
            .await;
        // Like reversals, activations name the allocation, not its user: drop every cached balance.
        self.core.all_balances_changed();
        outcome
    }

    async fn settle_expired(&self, user: &UserId, now_ms: i64) -> StoreResult<Expired> {
        // Most reads find nothing due: look first, so they do not open a writing transaction.
        let due = self
            .core
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM users u JOIN lots l ON l.company_id = u.company_id AND l.user_id = u.user_id \
                 WHERE u.user_id = $1 AND l.remaining > 0 AND (l.expires_at <= $2 OR l.pending_until <= $2) LIMIT 1",
                &[&user.as_str(), &now_ms],
            )
            .await?;
        match due {
            Some(_) => self.settle_user(user, now_ms).await,
            None => Ok(Expired::default()),
        }
    }

    async fn sweep_expired(&self, now_ms: i64) -> StoreResult<SweepReport> {
        let rows = self
            .core
            .client()
            .await?
            .query(
                &format!(
                    "SELECT user_id FROM lots WHERE remaining > 0 AND expires_at <= $1 \
                     UNION SELECT user_id FROM lots WHERE remaining > 0 AND pending_until <= $1 \
                     UNION SELECT user_id FROM users WHERE tier_expires_at <= $1 LIMIT {SWEEP_USERS_MAX}"
                ),
                &[&now_ms],
            )
            .await?;
        let mut report = SweepReport::default();
        for row in rows {
            let user = UserId::from_trusted(row.get(0));
            let outcome = self.settle_user(&user, now_ms).await;
            report.add(&user, outcome);
        }
        Ok(report)
    }
}
