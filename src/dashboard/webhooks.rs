//! Webhooks: the endpoints the caller may see, each one's recent deliveries, and a retry of an
//! event — through the API's own handlers.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, Request, State};
use axum::response::Response;

use super::html::{csrf_field, esc, num, table, url_part};
use super::{Session, notice, read_form, refusal};
use crate::http::AppState;
use crate::http::auth::Auth;
use crate::http::error::ApiError;
use crate::http::extract::{PathParam, Query as ApiQuery};
use crate::http::webhooks as api;
use crate::http::wire::FromQuery;
use crate::http::wire::webhooks::{DeliveriesQuery, WebhookListQuery};

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
    let Some(id) = q.get("webhookId").filter(|id| !id.is_empty()) else {
        out.push_str("<p class=\"hint\">Choose an endpoint to see its deliveries.</p>");
        return Ok(());
    };
    let query = DeliveriesQuery::from_query(&HashMap::from([("limit".to_owned(), "25".to_owned())])).map_err(ApiError::validation)?;
    let page = api::deliveries(State(state.clone()), caller(session), PathParam(id.clone()), ApiQuery(query)).await?.0.payload;
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
