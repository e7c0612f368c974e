//! Downloads: the ledger of a period and the balances of now, for one company, streamed by the
//! API's own export functions with the session's caller (so a company-scoped client downloads
//! only its companies). Dates are UTC days, both ends included.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::Session;
use super::html::esc;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::exports::{balances_file, ledger_file, read_query};
use crate::http::wire::exports::{BalancesExportQuery, LedgerExportQuery};

const DAY_MS: i64 = 86_400_000;

/// The two download forms (GET: nothing changes), for `company` when one is chosen. Their fields
/// have ids of their own: the overview's filter form already uses the plain ones.
pub fn forms(company: &str, today: &str) -> String {
    let field = |form: &str, label: &str, name: &str, value: &str, attrs: &str| {
        format!("<label>{}<input name=\"{name}\" id=\"{form}-{name}\" value=\"{}\" {attrs}></label>", esc(label), esc(value))
    };
    let format = |form: &str| {
        format!(
            "<label>Format<select name=\"format\" id=\"{form}-format\"><option value=\"csv\" selected>CSV</option>\
             <option value=\"jsonl\">JSON lines</option></select></label>"
        )
    };
    let month_start = format!("{}-01", today.get(..7).unwrap_or(today));
    format!(
        "<h2>Downloads</h2><form method=\"get\" action=\"/dashboard/exports/ledger\" class=\"filters\" id=\"export-ledger\">{}{}{}{}\
         <button type=\"submit\">Download the ledger</button></form>\
         <form method=\"get\" action=\"/dashboard/exports/balances\" class=\"filters\" id=\"export-balances\">{}{}{}\
         <button type=\"submit\">Download balances</button></form>",
        field("xl", "Company", "companyId", company, "required autocomplete=\"off\""),
        field("xl", "From (UTC day)", "fromDay", &month_start, "type=\"date\" required"),
        field("xl", "To (UTC day, included)", "toDay", today, "type=\"date\" required"),
        format("xl"),
        field("xb", "Company", "companyId", company, "required autocomplete=\"off\""),
        field("xb", "As of the end of (UTC day; empty: now)", "asOfDay", "", "type=\"date\""),
        format("xb"),
    )
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
