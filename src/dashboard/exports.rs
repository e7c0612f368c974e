//! Downloads: the ledger of a period and the balances of now, for one company, streamed by the
//! API's own export functions with the session's caller (so a company-scoped client downloads
//! only its companies). Dates are UTC days, both ends included.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::Session;
use super::html::{Input, Markup, html, select_in};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::exports::{balances_file, ledger_file, read_query};
use crate::http::wire::exports::{BalancesExportQuery, LedgerExportQuery};

const DAY_MS: i64 = 86_400_000;

/// The two download forms (GET: nothing changes), for `company` when one is chosen. Their fields
/// have ids of their own: the overview's filter form already uses the plain ones.
pub fn forms(company: &str, today: &str) -> Markup {
    let format = |form: &str| select_in(form, "Format", "format", &[("csv", "CSV"), ("jsonl", "JSON lines")], "csv");
    let month_start = format!("{}-01", today.get(..7).unwrap_or(today));
    html! {
        h2 { "Downloads" }
        form method="get" action="/dashboard/exports/ledger" class="filters" id="export-ledger" {
            (Input::new("Company", "companyId").in_form("xl").value(company).required().off())
            (Input::new("From (UTC day)", "fromDay").in_form("xl").value(&month_start).kind("date").required())
            (Input::new("To (UTC day, included)", "toDay").in_form("xl").value(today).kind("date").required())
            (format("xl"))
            button type="submit" { "Download the ledger" }
        }
        form method="get" action="/dashboard/exports/balances" class="filters" id="export-balances" {
            (Input::new("Company", "companyId").in_form("xb").value(company).required().off())
            (Input::new("As of the end of (UTC day; empty: now)", "asOfDay").in_form("xb").kind("date"))
            (format("xb"))
            button type="submit" { "Download balances" }
        }
    }
}

/// A `YYYY-MM-DD` day as its first instant.
fn day_start(day: &str) -> Option<i64> {
    crate::clock::parse_rfc3339(&format!("{day}T00:00:00Z"))
}

pub async fn ledger(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map_or("", |v| v.trim());
    let (Some(from), Some(to)) = (day_start(get("fromDay")), day_start(get("toDay"))) else {
        return ApiError::validation("fromDay and toDay must be days such as 2026-11-30").into_response();
    };
    let mut params = q.clone();
    params.insert("from".into(), crate::clock::rfc3339(from));
    params.insert("to".into(), crate::clock::rfc3339(to + DAY_MS));
    let query: LedgerExportQuery = match read_query(&params) {
        Ok(query) => query,
        Err(e) => return ApiError::validation(e).into_response(),
    };
    if let Err(e) = session.auth.require_company(&query.company_id) {
        return e.into_response();
    }
    ledger_file(state.store.clone(), query, state.clock.now_ms()).unwrap_or_else(|e| ApiError::validation(e).into_response())
}

pub async fn balances(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut params = q.clone();
    match q.get("asOfDay").map(|d| d.trim()).filter(|d| !d.is_empty()) {
        Some(day) => match day_start(day) {
            Some(start) => {
                params.insert("asOf".into(), crate::clock::rfc3339(start + DAY_MS));
            }
            None => return ApiError::validation("asOfDay must be a day such as 2026-11-30").into_response(),
        },
        None => {
            params.remove("asOf");
        }
    }
    let query: BalancesExportQuery = match read_query(&params) {
        Ok(query) => query,
        Err(e) => return ApiError::validation(e).into_response(),
    };
    if let Err(e) = session.auth.require_company(&query.company_id) {
        return e.into_response();
    }
    balances_file(state.store.clone(), query, state.clock.now_ms()).unwrap_or_else(|e| ApiError::validation(e).into_response())
}
