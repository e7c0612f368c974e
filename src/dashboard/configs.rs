//! Configurations: the list with filters, creating one, editing one, and its audit trail — each
//! through the API's own handler, so scoping and validation are the API's.

use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value};

use super::html::{Input, Markup, csrf_field, html, num, select, table, text, url_part};
use super::{Body, Session, page, read_form};
use crate::http::AppState;
use crate::http::auth::Auth;
use crate::http::configs as api;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathParam, Query as ApiQuery};
use crate::http::wire::configs::{CoinConfigView, ConfigListQuery, CreateConfigRequest, PatchConfigRequest};
use crate::http::wire::{FromJsonObject, FromQuery};

/// Numeric fields of the forms: digits become numbers, an empty field `null` (no limit).
const NUMBERS: [&str; 4] = ["amount", "validityDays", "maxPerUserPerDay", "maxPerUser"];

/// A posted form as the JSON body the API reads (so its sentences name the same fields).
fn as_json(form: &HashMap<String, String>, fields: &[&str]) -> Map<String, Value> {
    let mut body = Map::new();
    for field in fields {
        let Some(raw) = form.get(*field) else { continue };
        let raw = raw.trim();
        let value = if NUMBERS.contains(field) {
            match raw.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) if raw.is_empty() => Value::Null,
                Err(_) => Value::from(raw),
            }
        } else if *field == "active" {
            Value::from(raw == "true")
        } else {
            Value::from(raw)
        };
        body.insert((*field).to_owned(), value);
    }
    body
}

fn caller(session: &Session) -> Auth {
    Auth(session.auth.0.clone())
}

fn limit(v: Option<i64>) -> String {
    v.map_or_else(|| "—".to_owned(), |n| n.to_string())
}

fn row(c: &CoinConfigView) -> Vec<Markup> {
    vec![
        html! { a href={ "/dashboard/configs/" (url_part(&c.coin_config_id)) } { (c.coin_config_id) } },
        text(c.configuration.as_str()),
        text(c.company_id.as_str()),
        text(c.event.as_str()),
        num(c.amount.map_or_else(|| "—".to_owned(), |a| a.get().to_string())),
        num(limit(c.validity_days)),
        num(limit(c.max_per_user_per_day)),
        num(limit(c.max_per_user)),
        text(if c.active { "yes" } else { "no" }),
    ]
}

/// The fields of a configuration form, filled with `c` when editing.
fn fields(c: Option<&CoinConfigView>) -> Markup {
    let text = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let kind = c.map_or("CUSTOM", |c| c.configuration.as_str());
    let amount = c.and_then(|c| c.amount).map(|a| a.get().to_string()).unwrap_or_default();
    let (validity, per_day, ever) = (text(c.and_then(|c| c.validity_days)), text(c.and_then(|c| c.max_per_user_per_day)), text(c.and_then(|c| c.max_per_user)));
    html! {
        (select("Configuration", "configuration", &[("CUSTOM", "CUSTOM (one company)"), ("DEFAULT", "DEFAULT (every company; admin)")], kind))
        (Input::new("Company", "companyId").value(c.map_or("", |c| c.company_id.as_str())).required().off())
        (Input::new("Event", "event").value(c.map_or("", |c| c.event.as_str())).required().off())
        (Input::new("Coins per event", "amount").value(&amount).required().numeric(None))
        (Input::new("Valid for days (empty: never expire)", "validityDays").value(&validity).numeric(None))
        (Input::new("Per user per day (empty: no cap)", "maxPerUserPerDay").value(&per_day).numeric(None))
        (Input::new("Per user ever (empty: no cap)", "maxPerUser").value(&ever).numeric(None))
        (select("Active", "active", &[("true", "yes"), ("false", "no")], if c.is_none_or(|c| c.active) { "true" } else { "false" }))
    }
}

pub async fn list(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    render_list(&state, &session, &q, Body::default()).await
}

async fn render_list(state: &AppState, session: &Session, q: &HashMap<String, String>, said: Body) -> Response {
    let q: HashMap<String, String> = q.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut out = Body::default();
    out.push(html! { h1 { "Configurations" } });
    out.append(said);
    let asked = |k: &str| q.get(k).map_or("", String::as_str);
    out.push(html! {
        form method="get" action="/dashboard/configs" class="filters" {
            (Input::new("Company", "companyId").value(asked("companyId")).off())
            (Input::new("Event", "event").value(asked("event")).off())
            (select("Kind", "configuration", &[("", "any"), ("DEFAULT", "DEFAULT"), ("CUSTOM", "CUSTOM")], asked("configuration")))
            button type="submit" { "Filter" }
        }
    });
    let listed = match ConfigListQuery::from_query(&q).map_err(ApiError::validation) {
        Ok(query) => api::list(State(state.clone()), caller(session), ApiQuery(query)).await.map(|j| j.0.payload),
        Err(e) => Err(e),
    };
    out.show(listed.map(|configs| {
        html! {
            @if configs.is_empty() {
                p class="hint" { "No configurations match." }
            } @else {
                (table("configs", &["Id", "Kind", "Company", "Event", "Coins", "Valid days", "Per day", "Per user", "Active"], &configs.iter().map(row).collect::<Vec<_>>()))
            }
        }
    }));
    out.push(html! {
        h2 { "New configuration" }
        form method="post" action="/dashboard/configs" class="grid-form" id="create-config" {
            (csrf_field(&session.csrf))
            (fields(None))
            button type="submit" { "Create" }
        }
    });
    page(Some(session), "Configurations", "configs", out)
}

pub async fn create(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let mut body = as_json(&form.0, &["configuration", "companyId", "event", "amount", "validityDays", "maxPerUserPerDay", "maxPerUser", "active"]);
    // Empty optional fields on a new configuration: not given.
    body.retain(|_, v| !v.is_null());
    let created = match CreateConfigRequest::from_object(&body).map_err(ApiError::validation) {
        Ok(request) => api::create(State(state.clone()), caller(&session), Json(request)).await.map(|j| j.0.payload),
        Err(e) => Err(e),
    };
    match created {
        Ok(c) => Redirect::to(&format!("/dashboard/configs/{}?created=1", url_part(&c.coin_config_id))).into_response(),
        Err(e) => render_list(&state, &session, &HashMap::new(), Body::after(Err(e))).await,
    }
}

pub async fn edit_page(State(state): State<AppState>, session: Session, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let said = match (q.contains_key("created"), q.contains_key("saved")) {
        (true, _) => Body::after(Ok("Configuration created.".to_owned())),
        (_, true) => Body::after(Ok("Changes saved; past allocations keep the values they were made with.".to_owned())),
        _ => Body::default(),
    };
    render_edit(&state, &session, &id, said).await
}

async fn render_edit(state: &AppState, session: &Session, id: &str, said: Body) -> Response {
    let mut out = Body::default();
    out.push(html! { p { a href="/dashboard/configs" { "← Configurations" } } h1 { "Configuration " (id) } });
    out.append(said);
    let config = match api::get(State(state.clone()), caller(session), PathParam(id.to_owned())).await {
        Ok(j) => j.0.payload,
        Err(e) => {
            out.fail(e);
            return page(Some(session), "Configuration", "configs", out);
        }
    };
    out.push(html! {
        form method="post" action={ "/dashboard/configs/" (url_part(id)) } class="grid-form" id="edit-config" {
            (csrf_field(&session.csrf))
            (fields(Some(&config)))
            button type="submit" { "Save changes" }
        }
        h2 { "Audit trail" }
    });
    let audit = api::history(State(state.clone()), caller(session), PathParam(id.to_owned())).await.map(|j| {
        let rows: Vec<Vec<Markup>> =
            j.0.payload.iter().rev().map(|a| vec![text(&a.at), text(&a.action), text(&a.client_id), changes(a.before.as_ref(), &a.after)]).collect();
        table("audit", &["When (UTC)", "Action", "By client", "Values"], &rows)
    });
    out.show(audit);
    page(Some(session), "Configuration", "configs", out)
}

/// What a change changed, field by field (everything, for a create).
fn changes(before: Option<&Value>, after: &Value) -> Markup {
    let Some(after) = after.as_object() else { return html! {} };
    let changed: Vec<String> = after
        .iter()
        .filter_map(|(k, v)| match before.and_then(|b| b.get(k)) {
            Some(old) if old == v => None,
            Some(old) => Some(format!("{k}: {old} → {v}")),
            None => Some(format!("{k}: {v}")),
        })
        .collect();
    html! {
        @for (i, line) in changed.iter().enumerate() {
            @if i > 0 { br; }
            (line)
        }
    }
}

pub async fn edit(State(state): State<AppState>, session: Session, Path(id): Path<String>, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let body = as_json(&form.0, &["configuration", "companyId", "event", "amount", "validityDays", "maxPerUserPerDay", "maxPerUser", "active"]);
    let saved = match PatchConfigRequest::from_object(&body).map_err(ApiError::validation) {
        Ok(change) => api::patch(State(state.clone()), caller(&session), PathParam(id.clone()), Json(change)).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match saved {
        Ok(()) => Redirect::to(&format!("/dashboard/configs/{}?saved=1", url_part(&id))).into_response(),
        Err(e) => render_edit(&state, &session, &id, Body::after(Err(e))).await,
    }
}
