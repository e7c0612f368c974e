//! Webhooks: the endpoints the caller may see, each one's recent deliveries, a retry of an
//! event, and each company's expiry reminders (the `coins.expiring` events) — through the API's
//! own handlers.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, Request, State};
use axum::response::Response;

use super::html::{csrf_field, esc, num, table, url_part};
use super::{Session, notice, read_form, refusal};
use crate::http::AppState;
use crate::http::auth::Auth;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathParam, Query as ApiQuery};
use crate::http::reminders;
use crate::http::webhooks as api;
use crate::http::wire::reminders::{ReminderQuery, ReminderSettingsRequest};
use crate::http::wire::webhooks::{DeliveriesQuery, WebhookListQuery};
use crate::http::wire::{FromJsonObject, FromQuery};

fn caller(session: &Session) -> Auth {
    Auth(session.auth.0.clone())
}

pub async fn page(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    render(&state, &session, &q, None).await
}

async fn render(state: &AppState, session: &Session, q: &HashMap<String, String>, message: Option<String>) -> Response {
    let mut out = String::from("<h1>Webhooks</h1>");
    out.push_str(&message.unwrap_or_default());
    if let Err(e) = body(state, session, q, &mut out).await {
        out.push_str(&refusal(&e));
    }
    super::page(Some(session), "Webhooks", "webhooks", &out)
}

async fn body(state: &AppState, session: &Session, q: &HashMap<String, String>, out: &mut String) -> Result<(), ApiError> {
    let hooks = api::list(State(state.clone()), caller(session), ApiQuery(WebhookListQuery { company_id: None })).await?.0.payload;
    if hooks.is_empty() {
        out.push_str(
            "<p class=\"hint\">No endpoints yet. Register one with <code>POST /api/v0/coins/webhooks</code> (see <a href=\"/docs\">the API reference</a>).</p>",
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = hooks
        .iter()
        .map(|h| {
            let status = match (h.enabled, h.disabled_reason.as_deref()) {
                (true, _) => "enabled".to_owned(),
                (false, Some(reason)) => format!("disabled ({reason})"),
                (false, None) => "disabled".to_owned(),
            };
            vec![
                format!("<a href=\"/dashboard/webhooks?webhookId={}\">{}</a>", url_part(&h.webhook_id), esc(&h.webhook_id)),
                esc(&h.company_id),
                esc(&h.url),
                esc(&h.events.0.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")),
                esc(&status),
            ]
        })
        .collect();
    out.push_str(&table("webhooks", &["Endpoint", "Company", "URL", "Events", "Status"], &rows));
    match q.get("webhookId").filter(|id| !id.is_empty()) {
        Some(id) => deliveries(state, session, id, out).await?,
        None => out.push_str("<p class=\"hint\">Choose an endpoint to see its deliveries.</p>"),
    }
    reminders_section(state, session, hooks.iter().map(|h| crate::domain::CompanyId::from_trusted(h.company_id.clone())).collect(), out).await
}

/// The recent deliveries of one endpoint, each failed one with a retry button.
async fn deliveries(state: &AppState, session: &Session, id: &str, out: &mut String) -> Result<(), ApiError> {
    let query = DeliveriesQuery::from_query(&HashMap::from([("limit".to_owned(), "25".to_owned())])).map_err(ApiError::validation)?;
    let page = api::deliveries(State(state.clone()), caller(session), PathParam(id.to_owned()), ApiQuery(query)).await?.0.payload;
    let _ = write!(out, "<h2>Recent deliveries of {}</h2>", esc(id));
    let rows: Vec<Vec<String>> = page
        .attempts
        .iter()
        .map(|a| {
            let retry = if a.event_status == "failed" || a.status == "failed" {
                format!(
                    "<form method=\"post\" action=\"/dashboard/webhooks/retry\">{}<input type=\"hidden\" name=\"webhookId\" value=\"{}\">\
                     <input type=\"hidden\" name=\"messageId\" value=\"{}\"><button type=\"submit\" class=\"small\">Retry now</button></form>",
                    csrf_field(&session.csrf),
                    esc(id),
                    esc(&a.message_id)
                )
            } else {
                String::new()
            };
            vec![
                esc(&a.attempted_at),
                esc(&a.message_id),
                esc(&a.event_type),
                esc(&a.status),
                num(&a.http_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())),
                num(&format!("{} ms", a.latency_ms)),
                esc(a.next_attempt_at.as_deref().unwrap_or("")),
                esc(&a.event_status),
                esc(a.response_excerpt.as_deref().unwrap_or("")),
                retry,
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("<p class=\"hint\">No deliveries yet.</p>");
    } else {
        out.push_str(&table("deliveries", &["When (UTC)", "Event id", "Type", "Attempt", "HTTP", "Latency", "Next try", "Event", "Response", ""], &rows));
    }
    Ok(())
}

/// Each company's reminder lead times (of the companies with an endpoint), and the form that sets
/// them.
async fn reminders_section(state: &AppState, session: &Session, mut companies: Vec<crate::domain::CompanyId>, out: &mut String) -> Result<(), ApiError> {
    companies.sort();
    companies.dedup();
    out.push_str("<h2>Expiry reminders</h2><p class=\"hint\">Members hear by <code>coins.expiring</code>, once per lead time, before their coins expire.</p>");
    let mut rows = Vec::with_capacity(companies.len());
    for company in companies {
        let set = reminders::get(State(state.clone()), caller(session), ApiQuery(ReminderQuery { company_id: company.clone() })).await?.0.payload;
        let days = set.expiry_reminder_days.0.days().iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        rows.push(vec![esc(company.as_str()), esc(if days.is_empty() { "off" } else { &days })]);
    }
    out.push_str(&table("reminders", &["Company", "Days before expiry"], &rows));
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/dashboard/webhooks/reminders\" class=\"filters\" id=\"reminders-form\">{}\
         <label>Company<input name=\"companyId\" id=\"reminders-companyId\" required autocomplete=\"off\"></label>\
         <label>Days before expiry (up to three; empty: off)<input name=\"days\" id=\"reminders-days\" placeholder=\"30, 7, 1\" autocomplete=\"off\"></label>\
         <button type=\"submit\">Set reminders</button></form>",
        csrf_field(&session.csrf)
    );
    Ok(())
}

/// Sets a company's lead times from the form: days separated by commas or spaces.
pub async fn set_reminders(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let days: Vec<serde_json::Value> = form
        .get("days")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<i64>().map_or_else(|_| serde_json::Value::from(d), serde_json::Value::from))
        .collect();
    let body = serde_json::json!({"companyId": form.get("companyId").trim(), "expiryReminderDays": days});
    let object = body.as_object().cloned().unwrap_or_default();
    let done = match ReminderSettingsRequest::from_object(&object).map_err(ApiError::validation) {
        Ok(request) => reminders::put(State(state.clone()), caller(&session), Json(request)).await,
        Err(e) => Err(e),
    };
    let note = match done {
        Ok(set) => {
            let set = set.0.payload;
            let days = set.expiry_reminder_days.0.days().iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
            notice(
                true,
                &if days.is_empty() {
                    format!("Expiry reminders of {} are off.", set.company_id)
                } else {
                    format!("{} reminds {days} days before coins expire.", set.company_id)
                },
            )
        }
        Err(e) => refusal(&e),
    };
    render(&state, &session, &HashMap::new(), Some(note)).await
}

pub async fn retry(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let (id, message) = (form.get("webhookId").to_owned(), form.get("messageId").to_owned());
    let q = HashMap::from([("webhookId".to_owned(), id.clone())]);
    let done = api::retry(State(state.clone()), caller(&session), axum::extract::Path((id.clone(), message.clone()))).await;
    let note = match done {
        Ok(_) => notice(true, &format!("Event {message} is queued to be sent again now.")),
        Err(e) => refusal(&e),
    };
    render(&state, &session, &q, Some(note)).await
}
