//! Campaigns: a company's bonus campaigns with how many allocations each applied to; a form that
//! starts one, edits a scheduled one, and buttons that delete a scheduled one or end a running
//! one now — through the API's own handlers.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, Request, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::html::{csrf_field, esc, input, num, select, table, url_part};
use super::{Form, Session, notice, read_form, refusal};
use crate::clock::rfc3339;
use crate::domain::CompanyId;
use crate::http::AppState;
use crate::http::auth::Auth;
use crate::http::campaigns as api;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathParam, Query as ApiQuery};
use crate::http::wire::FromJsonObject;
use crate::http::wire::campaigns::{CampaignQuery, CampaignView, CreateCampaignRequest, PatchCampaignRequest};

fn caller(session: &Session) -> Auth {
    Auth(session.auth.0.clone())
}

/// The company shown: the one asked for, else a company client's first.
fn company_of(session: &Session, asked: Option<&str>) -> Option<String> {
    asked.filter(|c| !c.is_empty()).map(str::to_owned).or_else(|| session.auth.0.companies.first().map(ToString::to_string))
}

pub async fn page(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let company = company_of(&session, q.get("companyId").map(String::as_str));
    render(&state, &session, company, q.get("edit").cloned(), None).await
}

async fn render(state: &AppState, session: &Session, company: Option<String>, edit: Option<String>, message: Option<String>) -> Response {
    let mut out = String::from("<h1>Campaigns</h1>");
    out.push_str(&message.unwrap_or_default());
    let _ = write!(
        out,
        "<form method=\"get\" action=\"/dashboard/campaigns\" class=\"filters\">{}<button type=\"submit\">Show</button></form>",
        input("Company", "companyId", company.as_deref().unwrap_or(""), "required autocomplete=\"off\"")
    );
    if let Some(company) = company
        && let Err(e) = body(state, session, &company, edit.as_deref(), &mut out).await
    {
        out.push_str(&refusal(&e));
    }
    super::page(Some(session), "Campaigns", "campaigns", &out)
}

fn reward(c: &CampaignView) -> String {
    match (c.multiplier_bps, c.bonus_coins) {
        (Some(bps), _) => format!("×{} ({bps} bps)", bps as f64 / 10_000.0),
        (None, Some(coins)) => format!("+{coins} coins"),
        (None, None) => String::new(),
    }
}

async fn body(state: &AppState, session: &Session, company: &str, edit: Option<&str>, out: &mut String) -> Result<(), ApiError> {
    let company_id = CompanyId::parse(company).map_err(|_| ApiError::validation(format!("companyId must be {}", CompanyId::RULE)))?;
    let campaigns = api::list(State(state.clone()), caller(session), ApiQuery(CampaignQuery { company_id: company_id.clone() })).await?.0.payload;
    let triggers: HashMap<String, i64> = state.store.campaign_triggers(&company_id).await?.into_iter().map(|(id, n)| (id.to_string(), n)).collect();
    let button = |action: &str, id: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/dashboard/campaigns/{action}\">{}<input type=\"hidden\" name=\"campaignId\" value=\"{}\">\
             <button type=\"submit\" class=\"small\">{label}</button></form>",
            csrf_field(&session.csrf),
            esc(id)
        )
    };
    let rows: Vec<Vec<String>> = campaigns
        .iter()
        .map(|c| {
            let actions = match c.status {
                "SCHEDULED" => format!(
                    "<a href=\"/dashboard/campaigns?companyId={}&amp;edit={}\">Edit</a>{}",
                    url_part(company),
                    url_part(&c.campaign_id),
                    button("delete", &c.campaign_id, "Delete")
                ),
                "ACTIVE" => button("end", &c.campaign_id, "End now"),
                _ => String::new(),
            };
            let events = c.events.as_ref().map_or_else(|| "every event".to_owned(), |e| e.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "));
            vec![
                esc(&c.campaign_id),
                esc(&c.name),
                esc(&events),
                esc(&format!("{} – {}", c.starts_at, c.ends_at)),
                esc(&reward(c)),
                num(&c.max_triggers_per_user.map_or_else(|| "—".to_owned(), |n| n.to_string())),
                esc(&c.status.to_ascii_lowercase()),
                num(&triggers.get(&c.campaign_id).copied().unwrap_or(0).to_string()),
                actions,
            ]
        })
        .collect();
    if rows.is_empty() {
        let _ = write!(out, "<p class=\"hint\">No campaigns for {} yet.</p>", esc(company));
    } else {
        out.push_str(&table("campaigns", &["Campaign", "Name", "Events", "Window (UTC)", "Reward", "Per user", "Status", "Allocations", ""], &rows));
    }
    let editing = edit.and_then(|id| campaigns.iter().find(|c| c.campaign_id == id && c.status == "SCHEDULED"));
    form(session, company, editing, out);
    Ok(())
}

/// The form that starts a campaign, or edits a scheduled one.
fn form(session: &Session, company: &str, editing: Option<&CampaignView>, out: &mut String) {
    let (action, title, submit) = match editing {
        Some(c) => ("edit", format!("Edit {}", c.campaign_id), "Save changes"),
        None => ("create", "Start a campaign".to_owned(), "Create campaign"),
    };
    let field = |f: fn(&CampaignView) -> String| editing.map(f).unwrap_or_default();
    let kind = if editing.is_some_and(|c| c.bonus_coins.is_some()) { "bonus" } else { "multiplier" };
    let value = field(|c| c.multiplier_bps.or(c.bonus_coins).map(|n| n.to_string()).unwrap_or_default());
    let _ = write!(
        out,
        "<h2>{}</h2><form method=\"post\" action=\"/dashboard/campaigns/{action}\" class=\"filters\" id=\"campaign-form\">{}\
         <input type=\"hidden\" name=\"companyId\" value=\"{}\"><input type=\"hidden\" name=\"campaignId\" value=\"{}\">{}{}{}{}{}{}{}\
         <button type=\"submit\">{submit}</button></form>",
        esc(&title),
        csrf_field(&session.csrf),
        esc(company),
        esc(&field(|c| c.campaign_id.clone())),
        input("Name", "name", &field(|c| c.name.clone()), "required maxlength=\"100\" autocomplete=\"off\""),
        input(
            "Events (comma-separated; empty: every event)",
            "events",
            &field(|c| c.events.as_ref().map(|e| e.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default()),
            "autocomplete=\"off\""
        ),
        input("Starts (UTC, RFC 3339)", "startsAt", &field(|c| c.starts_at.clone()), "required placeholder=\"2026-12-07T00:00:00Z\" autocomplete=\"off\""),
        input("Ends (UTC, RFC 3339)", "endsAt", &field(|c| c.ends_at.clone()), "required placeholder=\"2026-12-14T00:00:00Z\" autocomplete=\"off\""),
        select("Reward", "reward", &[("multiplier", "Multiplier (basis points, 20000 = ×2)"), ("bonus", "Fixed bonus (coins)")], kind),
        input("Value", "value", &value, "required inputmode=\"numeric\" autocomplete=\"off\""),
        input(
            "Most allocations per user (empty: no limit)",
            "maxTriggersPerUser",
            &field(|c| c.max_triggers_per_user.map(|n| n.to_string()).unwrap_or_default()),
            "inputmode=\"numeric\" autocomplete=\"off\""
        ),
    );
}

/// A number typed into a form stays a number on the wire, anything else the text (so the API
/// names it in its refusal).
fn number_or_text(text: &str) -> Value {
    text.trim().parse::<i64>().map_or_else(|_| Value::from(text.trim()), Value::from)
}

/// The campaign fields of a form, as the API's JSON body.
fn fields(form: &Form) -> Map<String, Value> {
    let events: Vec<&str> = form.get("events").split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()).collect();
    let reward = if form.get("reward") == "bonus" { "bonusCoins" } else { "multiplierBps" };
    let limit = form.get("maxTriggersPerUser").trim();
    let mut body = json!({
        "name": form.get("name"),
        "events": if events.is_empty() { Value::Null } else { json!(events) },
        "startsAt": form.get("startsAt").trim(),
        "endsAt": form.get("endsAt").trim(),
        "maxTriggersPerUser": if limit.is_empty() { Value::Null } else { number_or_text(limit) },
    });
    body[reward] = number_or_text(form.get("value"));
    body.as_object().cloned().unwrap_or_default()
}

async fn finish(state: &AppState, session: &Session, company: String, done: Result<String, ApiError>) -> Response {
    let note = match done {
        Ok(message) => notice(true, &message),
        Err(e) => refusal(&e),
    };
    render(state, session, Some(company), None, Some(note)).await
}

pub async fn create(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let company = form.get("companyId").trim().to_owned();
    let mut body = fields(&form);
    body.insert("companyId".into(), Value::from(company.clone()));
    let done = match CreateCampaignRequest::from_object(&body).map_err(ApiError::validation) {
        Ok(request) => {
            api::create(State(state.clone()), caller(&session), Json(request)).await.map(|c| format!("Campaign {} is created.", c.0.payload.campaign_id))
        }
        Err(e) => Err(e),
    };
    finish(&state, &session, company, done).await
}

/// Applies a change to the form's campaign; answers it as changed.
async fn change(state: &AppState, session: &Session, form: &Form, body: Map<String, Value>) -> Result<CampaignView, ApiError> {
    let request = PatchCampaignRequest::from_object(&body).map_err(ApiError::validation)?;
    Ok(api::patch(State(state.clone()), caller(session), PathParam(form.get("campaignId").to_owned()), Json(request)).await?.0.payload)
}

pub async fn edit(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let done = change(&state, &session, &form, fields(&form)).await.map(|c| format!("Campaign {} is saved.", c.campaign_id));
    finish(&state, &session, form.get("companyId").trim().to_owned(), done).await
}

/// Ends a running campaign as soon as it can (every server process needs a few seconds' notice).
pub async fn end(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let body = json!({"endsAt": rfc3339(state.clock.now_ms())}).as_object().cloned().unwrap_or_default();
    let company = campaign_company(&state, &session, &form).await;
    let done = change(&state, &session, &form, body).await.map(|c| format!("Campaign {} ends at {}.", c.campaign_id, c.ends_at));
    finish(&state, &session, company, done).await
}

pub async fn delete(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let company = campaign_company(&state, &session, &form).await;
    let id = form.get("campaignId").to_owned();
    let done = api::delete(State(state.clone()), caller(&session), PathParam(id.clone())).await.map(|_| format!("Campaign {id} is deleted."));
    finish(&state, &session, company, done).await
}

/// The company of the form's campaign, to show its list again (empty if the caller cannot see it).
async fn campaign_company(state: &AppState, session: &Session, form: &Form) -> String {
    match api::get(State(state.clone()), caller(session), PathParam(form.get("campaignId").to_owned())).await {
        Ok(c) => c.0.payload.company_id.to_string(),
        Err(_) => String::new(),
    }
}
