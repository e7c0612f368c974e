//! Webhooks: the endpoints the caller may see, each one's recent deliveries, a retry of an
//! event, and each company's expiry reminders (the `coins.expiring` events) — through the API's
//! own handlers.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::response::Response;

use super::html::{Input, Markup, csrf_field, hidden, html, num, table, text, url_part};
use super::{Body, Session, number_or_text, read_form};
use crate::http::AppState;
use crate::http::auth::Auth;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathParam, Query as ApiQuery};
use crate::http::reminders;
use crate::http::webhooks as api;
use crate::http::wire::reminders::{ReminderQuery, ReminderSettingsRequest};
use crate::http::wire::webhooks::{DeliveriesQuery, WebhookListQuery, WebhookView};
use crate::http::wire::{FromJsonObject, FromQuery};

fn caller(session: &Session) -> Auth {
    Auth(session.auth.0.clone())
}

pub async fn page(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    render(&state, &session, &q, Body::default()).await
}

async fn render(state: &AppState, session: &Session, q: &HashMap<String, String>, said: Body) -> Response {
    let mut out = Body::default();
    out.push(html! { h1 { "Webhooks" } });
    out.append(said);
    match api::list(State(state.clone()), caller(session), ApiQuery(WebhookListQuery { company_id: None })).await {
        Ok(hooks) => body(state, session, q, &hooks.0.payload, &mut out).await,
        Err(e) => out.fail(e),
    }
    super::page(Some(session), "Webhooks", "webhooks", out)
}

/// The endpoints, the chosen one's deliveries and the reminders; each part shows its own refusal.
async fn body(state: &AppState, session: &Session, q: &HashMap<String, String>, hooks: &[WebhookView], out: &mut Body) {
    if hooks.is_empty() {
        out.push(html! {
            p class="hint" { "No endpoints yet. Register one with " code { "POST /api/v0/coins/webhooks" } " (see " a href="/docs" { "the API reference" } ")." }
        });
        return;
    }
    let rows: Vec<Vec<Markup>> = hooks
        .iter()
        .map(|h| {
            let status = match (h.enabled, h.disabled_reason.as_deref()) {
                (true, _) => "enabled".to_owned(),
                (false, Some(reason)) => format!("disabled ({reason})"),
                (false, None) => "disabled".to_owned(),
            };
            vec![
                html! { a href={ "/dashboard/webhooks?webhookId=" (url_part(&h.webhook_id)) } { (h.webhook_id) } },
                text(&h.company_id),
                text(&h.url),
                text(h.events.0.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")),
                text(status),
            ]
        })
        .collect();
    out.push(table("webhooks", &["Endpoint", "Company", "URL", "Events", "Status"], &rows));
    match q.get("webhookId").filter(|id| !id.is_empty()) {
        Some(id) => out.show(deliveries(state, session, id).await),
        None => out.push(html! { p class="hint" { "Choose an endpoint to see its deliveries." } }),
    }
    out.show(reminders_section(state, session, hooks.iter().map(|h| crate::domain::CompanyId::from_trusted(h.company_id.clone())).collect()).await);
}

/// The recent deliveries of one endpoint, each failed one with a retry button.
async fn deliveries(state: &AppState, session: &Session, id: &str) -> Result<Markup, ApiError> {
    let query = DeliveriesQuery::from_query(&HashMap::from([("limit".to_owned(), "25".to_owned())])).map_err(ApiError::validation)?;
    let page = api::deliveries(State(state.clone()), caller(session), PathParam(id.to_owned()), ApiQuery(query)).await?.0.payload;
    let rows: Vec<Vec<Markup>> = page
        .attempts
        .iter()
        .map(|a| {
            let retry = if a.event_status == "failed" || a.status == "failed" {
                html! {
                    form method="post" action="/dashboard/webhooks/retry" {
                        (csrf_field(&session.csrf))
                        (hidden("webhookId", id))
                        (hidden("messageId", &a.message_id))
                        button type="submit" class="small" { "Retry now" }
                    }
                }
            } else {
                html! {}
            };
            vec![
                text(&a.attempted_at),
                text(&a.message_id),
                text(&a.event_type),
                text(&a.status),
                num(a.http_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())),
                num(format!("{} ms", a.latency_ms)),
                text(a.next_attempt_at.as_deref().unwrap_or("")),
                text(&a.event_status),
                text(a.response_excerpt.as_deref().unwrap_or("")),
                retry,
            ]
        })
        .collect();
    Ok(html! {
        h2 { "Recent deliveries of " (id) }
        @if rows.is_empty() {
            p class="hint" { "No deliveries yet." }
        } @else {
            (table("deliveries", &["When (UTC)", "Event id", "Type", "Attempt", "HTTP", "Latency", "Next try", "Event", "Response", ""], &rows))
        }
    })
}

/// Each company's reminder lead times (of the companies with an endpoint), and the form that sets
/// them.
async fn reminders_section(state: &AppState, session: &Session, mut companies: Vec<crate::domain::CompanyId>) -> Result<Markup, ApiError> {
    companies.sort();
    companies.dedup();
    let mut rows = Vec::with_capacity(companies.len());
    for company in companies {
        let set = reminders::get(State(state.clone()), caller(session), ApiQuery(ReminderQuery { company_id: company.clone() })).await?.0.payload;
        let days = set.expiry_reminder_days.0.days().iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        rows.push(vec![text(company.as_str()), text(if days.is_empty() { "off".to_owned() } else { days })]);
    }
    Ok(html! {
        h2 { "Expiry reminders" }
        p class="hint" { "Members hear by " code { "coins.expiring" } ", once per lead time, before their coins expire." }
        (table("reminders", &["Company", "Days before expiry"], &rows))
        form method="post" action="/dashboard/webhooks/reminders" class="filters" id="reminders-form" {
            (csrf_field(&session.csrf))
            (Input::new("Company", "companyId").in_form("reminders").required().off())
            (Input::new("Days before expiry (up to three; empty: off)", "days").in_form("reminders").placeholder("30, 7, 1").off())
            button type="submit" { "Set reminders" }
        }
    })
}

/// Sets a company's lead times from the form: days separated by commas or spaces.
pub async fn set_reminders(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let days: Vec<serde_json::Value> = form.get("days").split(|c: char| c == ',' || c.is_whitespace()).filter(|d| !d.is_empty()).map(number_or_text).collect();
    let body = serde_json::json!({"companyId": form.get("companyId").trim(), "expiryReminderDays": days});
    let object = body.as_object().cloned().unwrap_or_default();
    let done = match ReminderSettingsRequest::from_object(&object).map_err(ApiError::validation) {
        Ok(request) => reminders::put(State(state.clone()), caller(&session), Json(request)).await,
        Err(e) => Err(e),
    };
    let said = done.map(|set| {
        let set = set.0.payload;
        let days = set.expiry_reminder_days.0.days().iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        if days.is_empty() {
            format!("Expiry reminders of {} are off.", set.company_id)
        } else {
            format!("{} reminds {days} days before coins expire.", set.company_id)
        }
    });
    render(&state, &session, &HashMap::new(), Body::after(said)).await
}

pub async fn retry(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let (id, message) = (form.get("webhookId").to_owned(), form.get("messageId").to_owned());
    let q = HashMap::from([("webhookId".to_owned(), id.clone())]);
    let done = api::retry(State(state.clone()), caller(&session), axum::extract::Path((id.clone(), message.clone()))).await;
    let said = done.map(|_| format!("Event {message} is queued to be sent again now."));
    render(&state, &session, &q, Body::after(said)).await
}
