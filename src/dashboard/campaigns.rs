//! Campaigns: a company's bonus campaigns with how many allocations each applied to; a form that
//! starts one, edits a scheduled one, and buttons that delete a scheduled one or end a running
//! one now — through the API's own handlers.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::html::{Input, Markup, csrf_field, hidden, html, num, select, table, text, url_part};
use super::{Body, Form, Session, number_or_text, read_form};
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
    render(&state, &session, company, q.get("edit").cloned(), Body::default()).await
}

async fn render(state: &AppState, session: &Session, company: Option<String>, edit: Option<String>, said: Body) -> Response {
    let mut out = Body::default();
    out.push(html! { h1 { "Campaigns" } });
    out.append(said);
    out.push(html! {
        form method="get" action="/dashboard/campaigns" class="filters" {
            (Input::new("Company", "companyId").value(company.as_deref().unwrap_or("")).required().off())
            button type="submit" { "Show" }
        }
    });
    if let Some(company) = company {
        out.show(body(state, session, &company, edit.as_deref()).await);
    }
    super::page(Some(session), "Campaigns", "campaigns", out)
}

fn reward(c: &CampaignView) -> String {
    match (c.multiplier_bps, c.bonus_coins) {
        (Some(bps), _) => format!("×{} ({bps} bps)", bps as f64 / 10_000.0),
        (None, Some(coins)) => format!("+{coins} coins"),
        (None, None) => String::new(),
    }
}

async fn body(state: &AppState, session: &Session, company: &str, edit: Option<&str>) -> Result<Markup, ApiError> {
    let company_id = CompanyId::parse(company).map_err(|_| ApiError::validation(format!("companyId must be {}", CompanyId::RULE)))?;
    let campaigns = api::list(State(state.clone()), caller(session), ApiQuery(CampaignQuery { company_id: company_id.clone() })).await?.0.payload;
    let triggers: HashMap<String, i64> = state.store.campaign_triggers(&company_id).await?.into_iter().map(|(id, n)| (id.to_string(), n)).collect();
    let button = |action: &str, id: &str, label: &str| {
        html! {
            form method="post" action={ "/dashboard/campaigns/" (action) } {
                (csrf_field(&session.csrf))
                (hidden("campaignId", id))
                button type="submit" class="small" { (label) }
            }
        }
    };
    let rows: Vec<Vec<Markup>> = campaigns
        .iter()
        .map(|c| {
            let actions = match c.status {
                "SCHEDULED" => html! {
                    a href={ "/dashboard/campaigns?companyId=" (url_part(company)) "&edit=" (url_part(&c.campaign_id)) } { "Edit" }
                    (button("delete", &c.campaign_id, "Delete"))
                },
                "ACTIVE" => button("end", &c.campaign_id, "End now"),
                _ => html! {},
            };
            let events = c.events.as_ref().map_or_else(|| "every event".to_owned(), |e| e.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "));
            vec![
                text(&c.campaign_id),
                text(&c.name),
                text(events),
                text(format!("{} – {}", c.starts_at, c.ends_at)),
                text(reward(c)),
                num(c.max_triggers_per_user.map_or_else(|| "—".to_owned(), |n| n.to_string())),
                text(c.status.to_ascii_lowercase()),
                num(triggers.get(&c.campaign_id).copied().unwrap_or(0)),
                actions,
            ]
        })
        .collect();
    let editing = edit.and_then(|id| campaigns.iter().find(|c| c.campaign_id == id && c.status == "SCHEDULED"));
    Ok(html! {
        @if rows.is_empty() {
            p class="hint" { "No campaigns for " (company) " yet." }
        } @else {
            (table("campaigns", &["Campaign", "Name", "Events", "Window (UTC)", "Reward", "Per user", "Status", "Allocations", ""], &rows))
        }
        (form(session, company, editing))
    })
}

/// The form that starts a campaign, or edits a scheduled one.
fn form(session: &Session, company: &str, editing: Option<&CampaignView>) -> Markup {
    let (action, title, submit) = match editing {
        Some(c) => ("edit", format!("Edit {}", c.campaign_id), "Save changes"),
        None => ("create", "Start a campaign".to_owned(), "Create campaign"),
    };
    let field = |f: fn(&CampaignView) -> String| editing.map(f).unwrap_or_default();
    let kind = if editing.is_some_and(|c| c.bonus_coins.is_some()) { "bonus" } else { "multiplier" };
    let value = field(|c| c.multiplier_bps.or(c.bonus_coins).map(|n| n.to_string()).unwrap_or_default());
    let name = field(|c| c.name.clone());
    let events = field(|c| c.events.as_ref().map(|e| e.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default());
    let (starts, ends) = (field(|c| c.starts_at.clone()), field(|c| c.ends_at.clone()));
    let limit = field(|c| c.max_triggers_per_user.map(|n| n.to_string()).unwrap_or_default());
    html! {
        h2 { (title) }
        form method="post" action={ "/dashboard/campaigns/" (action) } class="filters" id="campaign-form" {
            (csrf_field(&session.csrf))
            (hidden("companyId", company))
            (hidden("campaignId", &field(|c| c.campaign_id.clone())))
            (Input::new("Name", "name").value(&name).required().maxlength(100).off())
            (Input::new("Events (comma-separated; empty: every event)", "events").value(&events).off())
            (Input::new("Starts (UTC, RFC 3339)", "startsAt").value(&starts).required().placeholder("2026-12-07T00:00:00Z").off())
            (Input::new("Ends (UTC, RFC 3339)", "endsAt").value(&ends).required().placeholder("2026-12-14T00:00:00Z").off())
            (select("Reward", "reward", &[("multiplier", "Multiplier (basis points, 20000 = ×2)"), ("bonus", "Fixed bonus (coins)")], kind))
            (Input::new("Value", "value").value(&value).required().numeric(None).off())
            (Input::new("Most allocations per user (empty: no limit)", "maxTriggersPerUser").value(&limit).numeric(None).off())
            button type="submit" { (submit) }
        }
    }
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
    render(state, session, Some(company), None, Body::after(done)).await
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
