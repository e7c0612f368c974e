//! Exports: a company's ledger (entries created in a window) and its balances, streamed as CSV or
//! JSON lines page by page — memory stays bounded whatever the size — and resumable by
//! `afterEntryId`. The dashboard's Download buttons stream through the same functions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use http_body_util::channel::Channel;

use super::AppState;
use super::auth::Auth;
use super::error::ApiError;
use super::extract::Query;
use super::wire::exports::{BalancesExportQuery, LedgerExportQuery};
#[allow(unused_imports)]
use super::wire::{ErrorEnvelope, FromQuery};
use crate::domain::CompanyId;
use crate::domain::export::{self, BALANCE_COLUMNS, Cell, Format, LEDGER_COLUMNS, PAGE_ROWS};
use crate::domain::ledger::debt;
use crate::store::{ExportBalance, ExportEntry, Store};

/// Pages written ahead of a slow reader before the export waits for it.
const PAGES_AHEAD: usize = 2;

/// A company's ledger: every entry created in `[from, to)`, in entry order.
#[utoipa::path(get, path = "/api/v0/coins/exports/ledger", tag = "coins", params(LedgerExportQuery),
    responses(
        (status = 200, description = "The entries, streamed: CSV (RFC 4180, a header row, CRLF; text cells starting with = + - @, tab or CR get a leading ') \
                                      or JSON lines ending with `{\"end\":true,\"rows\":N,\"lastEntryId\":…}` (a file without it was cut short: resume with \
                                      `afterEntryId`). `X-Export-To` is the effective end (at most now − 5 s); `Content-Disposition` names the file.",
         content((String = "text/csv; charset=utf-8; header=present"), (String = "application/jsonl; charset=utf-8")),
         headers(("X-Export-To" = String, description = "The effective end of the window, RFC 3339"),
                 ("Content-Disposition" = String, description = "`attachment; filename=...`"))),
        (status = 400, description = "VALIDATION_FAILED: a missing or malformed parameter, `from` not before `to`, or more than 366 days", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn ledger(State(state): State<AppState>, auth: Auth, Query(q): Query<LedgerExportQuery>) -> Result<Response, ApiError> {
    auth.require_company(&q.company_id)?;
    ledger_file(state.store.clone(), q, state.clock.now_ms()).map_err(ApiError::validation)
}

/// A company's balances: one row per user, as a read shows them now, or (`asOf` in the past) as
/// they stood then, read back from the ledger.
#[utoipa::path(get, path = "/api/v0/coins/exports/balances", tag = "coins", params(BalancesExportQuery),
    responses(
        (status = 200, description = "The balances, streamed as CSV or JSON lines (ending with `{\"end\":true,\"rows\":N,\"lastUserId\":…}`), \
                                      in user id order",
         content((String = "text/csv; charset=utf-8; header=present"), (String = "application/jsonl; charset=utf-8")),
         headers(("Content-Disposition" = String, description = "`attachment; filename=...`"))),
        (status = 400, description = "VALIDATION_FAILED: a missing or malformed parameter", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: another company", body = ErrorEnvelope),
    ))]
pub async fn balances(State(state): State<AppState>, auth: Auth, Query(q): Query<BalancesExportQuery>) -> Result<Response, ApiError> {
    auth.require_company(&q.company_id)?;
    balances_file(state.store.clone(), q, state.clock.now_ms()).map_err(ApiError::validation)
}

/// The ledger export's response: headers now, rows as they are read.
pub fn ledger_file(store: Arc<dyn Store>, q: LedgerExportQuery, now_ms: i64) -> Result<Response, String> {
    let (from, to) = export::window(q.from_ms, q.to_ms, now_ms)?;
    let name = format!("coins-ledger-{}-{}-{}.{}", q.company_id, day(from), day(to), q.format.extension());
    let (mut sender, body) = Channel::<Bytes, std::io::Error>::new(PAGES_AHEAD);
    let format = q.format;
    tokio::spawn(async move {
        if format == Format::Csv && sender.send_data(Bytes::from(export::csv_header(&LEDGER_COLUMNS))).await.is_err() {
            return;
        }
        let (mut after, mut rows) = (q.after_entry_id, 0u64);
        loop {
            let page = match store.export_entries(&q.company_id, from, to, after, PAGE_ROWS).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %crate::store::error::chain(&e), "a ledger export stopped: the file ends short");
                    sender.abort(std::io::Error::other("the export stopped"));
                    return;
                }
            };
            let mut chunk = String::new();
            for e in &page {
                let cells = ledger_cells(&q.company_id, e);
                chunk.push_str(&match format {
                    Format::Csv => export::csv_row(&cells),
                    Format::Jsonl => export::json_row(&LEDGER_COLUMNS, &cells),
                });
            }
            rows += page.len() as u64;
            let full = page.len() as i64 == PAGE_ROWS;
            if let Some(last) = page.last() {
                after = last.entry.entry_id;
            }
            if !chunk.is_empty() && sender.send_data(Bytes::from(chunk)).await.is_err() {
                return; // the client went away
            }
            if !full {
                break;
            }
        }
        if format == Format::Jsonl {
            let last = if rows == 0 && q.after_entry_id == 0 { serde_json::Value::Null } else { serde_json::Value::from(after) };
            let _ = sender.send_data(Bytes::from(export::json_end(rows, last, "lastEntryId"))).await;
        }
    });
    let mut res = file_response(body, format, &name);
    if let Ok(v) = HeaderValue::from_str(&crate::clock::rfc3339(to)) {
        res.headers_mut().insert("x-export-to", v);
    }
    Ok(res)
}

/// The balances export's response: headers now, rows as they are read.
pub fn balances_file(store: Arc<dyn Store>, q: BalancesExportQuery, now_ms: i64) -> Result<Response, String> {
    // A past instant is read back from the ledger; one within the last seconds (when entries
    // may still commit) or later is now.
    let (as_of, past) = match q.as_of_ms {
        Some(at) if at < now_ms - export::SETTLE_MS => (at, true),
        _ => (now_ms, false),
    };
    let name = format!("coins-balances-{}-{}.{}", q.company_id, day(as_of), q.format.extension());
    let (mut sender, body) = Channel::<Bytes, std::io::Error>::new(PAGES_AHEAD);
    let format = q.format;
    tokio::spawn(async move {
        if format == Format::Csv && sender.send_data(Bytes::from(export::csv_header(&BALANCE_COLUMNS))).await.is_err() {
            return;
        }
        let (mut after, mut rows) = (String::new(), 0u64);
        loop {
            let page = if past {
                store.export_balances_at(&q.company_id, &after, PAGE_ROWS, as_of).await
            } else {
                store.export_balances(&q.company_id, &after, PAGE_ROWS, as_of).await
            };
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %crate::store::error::chain(&e), "a balances export stopped: the file ends short");
                    sender.abort(std::io::Error::other("the export stopped"));
                    return;
                }
            };
            let tiers = match (page.first(), page.last()) {
                (Some(first), Some(last)) => store.tiers_between(&q.company_id, (&first.user, &last.user), past.then_some(as_of)).await,
                _ => Ok(HashMap::new()),
            };
            let tiers = match tiers {
                Ok(tiers) => tiers,
                Err(e) => {
                    tracing::error!(error = %crate::store::error::chain(&e), "a balances export stopped: the file ends short");
                    sender.abort(std::io::Error::other("the export stopped"));
                    return;
                }
            };
            let mut chunk = String::new();
            for b in &page {
                let cells = balance_cells(&q.company_id, b, tiers.get(&b.user).cloned(), as_of);
                chunk.push_str(&match format {
                    Format::Csv => export::csv_row(&cells),
                    Format::Jsonl => export::json_row(&BALANCE_COLUMNS, &cells),
                });
            }
            rows += page.len() as u64;
            let full = page.len() as i64 == PAGE_ROWS;
            if let Some(last) = page.last() {
                after = last.user.clone();
            }
            if !chunk.is_empty() && sender.send_data(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if !full {
                break;
            }
        }
        if format == Format::Jsonl {
            let last = if after.is_empty() { serde_json::Value::Null } else { serde_json::Value::String(after) };
            let _ = sender.send_data(Bytes::from(export::json_end(rows, last, "lastUserId"))).await;
        }
    });
    Ok(file_response(body, format, &name))
}

fn file_response(body: Channel<Bytes, std::io::Error>, format: Format, name: &str) -> Response {
    let mut res = Response::new(Body::new(body));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    // Company ids are letters, digits, `_` and `-`: the name needs no quoting beyond the quotes.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `YYYY-MM-DD` of an instant, for file names.
fn day(ms: i64) -> String {
    crate::clock::rfc3339(ms).get(..10).unwrap_or_default().to_owned()
}

fn text(s: &Option<String>) -> Cell {
    Cell::Text(s.clone())
}

fn ledger_cells(company: &CompanyId, e: &ExportEntry) -> Vec<Cell> {
    let x = &e.entry.extra;
    vec![
        Cell::Int(Some(e.entry.entry_id)),
        Cell::Time(Some(e.entry.created_at_ms)),
        Cell::Time(x.effective_at_ms),
        Cell::Text(Some(company.to_string())),
        Cell::Text(Some(e.user.clone())),
        Cell::Text(Some(e.entry.kind.as_str().to_owned())),
        Cell::Int(Some(e.entry.coins)),
        Cell::Int(Some(x.pending_coins)),
        Cell::Int(Some(e.entry.balance_after)),
        text(&e.entry.event),
        text(&e.entry.request_id),
        text(&x.original_request_id),
        text(&x.order_id),
        text(&e.entry.coin_config_id),
        Cell::Int(x.amount_minor),
        Cell::Text(e.currency.clone().filter(|_| x.amount_minor.is_some())),
        Cell::Time(e.activates_at_ms.filter(|_| x.pending_coins > 0)),
        Cell::Time(e.entry.expires_at_ms),
        text(&x.reason),
        text(&x.client_id),
    ]
}

fn balance_cells(company: &CompanyId, b: &ExportBalance, tier: Option<String>, as_of: i64) -> Vec<Cell> {
    vec![
        Cell::Text(Some(company.to_string())),
        Cell::Text(Some(b.user.clone())),
        Cell::Int(Some(b.balance)),
        Cell::Int(Some(b.pending_balance)),
        Cell::Int(Some(debt(b.balance))),
        Cell::Int(Some(b.lifetime_earned)),
        Cell::Int(Some(b.lifetime_redeemed)),
        Cell::Int(Some(b.lifetime_expired)),
        // Empty when the company has no tier scheme.
        Cell::Text(tier),
        Cell::Time(b.next_expiry_at_ms),
        Cell::Int(b.next_expiry_coins),
        Cell::Time(Some(as_of)),
    ]
}

/// The query of a dashboard download, read by the API's own rules.
pub fn read_query<T: FromQuery>(q: &HashMap<String, String>) -> Result<T, String> {
    T::from_query(q)
}
