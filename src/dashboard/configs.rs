//! Configurations: the list with filters, creating one, editing one, and its audit trail — each
//! through the API's own handler, so scoping and validation are the API's.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value};

use super::html::{csrf_field, esc, input, num, select, table, url_part};
use super::{Session, notice, page, read_form, refusal};
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

fn row(c: &CoinConfigView) -> Vec<String> {
    vec![
        format!("<a href=\"/dashboard/configs/{}\">{}</a>", url_part(&c.coin_config_id), esc(&c.coin_config_id)),
        esc(c.configuration.as_str()),
        esc(c.company_id.as_str()),
        esc(c.event.as_str()),
        num(&c.amount.map_or_else(|| "—".to_owned(), |a| a.get().to_string())),
        num(&limit(c.validity_days)),
        num(&limit(c.max_per_user_per_day)),
        num(&limit(c.max_per_user)),
        if c.active { "yes".into() } else { "no".into() },
    ]
}

/// The fields of a configuration form, filled with `c` when editing.
fn fields(c: Option<&CoinConfigView>) -> String {
    let text = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let kind = c.map_or("CUSTOM", |c| c.configuration.as_str());
    format!(
        "{}{}{}{}{}{}{}{}",
        select("Configuration", "configuration", &[("CUSTOM", "CUSTOM (one company)"), ("DEFAULT", "DEFAULT (every company; admin)")], kind),
        input("Company", "companyId", c.map_or("", |c| c.company_id.as_str()), "required autocomplete=\"off\""),
        input("Event", "event", c.map_or("", |c| c.event.as_str()), "required autocomplete=\"off\""),
        input("Coins per event", "amount", &c.and_then(|c| c.amount).map(|a| a.get().to_string()).unwrap_or_default(), "required inputmode=\"numeric\""),
        input("Valid for days (empty: never expire)", "validityDays", &text(c.and_then(|c| c.validity_days)), "inputmode=\"numeric\""),
        input("Per user per day (empty: no cap)", "maxPerUserPerDay", &text(c.and_then(|c| c.max_per_user_per_day)), "inputmode=\"numeric\""),
        input("Per user ever (empty: no cap)", "maxPerUser", &text(c.and_then(|c| c.max_per_user)), "inputmode=\"numeric\""),
        select("Active", "active", &[("true", "yes"), ("false", "no")], if c.is_none_or(|c| c.active) { "true" } else { "false" }),
    )
}

pub async fn list(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    render_list(&state, &session, &q, None).await
}

async fn render_list(state: &AppState, session: &Session, q: &HashMap<String, String>, message: Option<String>) -> Response {
    let q: HashMap<String, String> = q.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut out = String::from("<h1>Configurations</h1>");
    out.push_str(&message.unwrap_or_default());
    let filter = format!(
        "<form method=\"get\" action=\"/dashboard/configs\" class=\"filters\">{}{}{}<button type=\"submit\">Filter</button></form>",
        input("Company", "companyId", q.get("companyId").map_or("", String::as_str), "autocomplete=\"off\""),
        input("Event", "event", q.get("event").map_or("", String::as_str), "autocomplete=\"off\""),
        select("Kind", "configuration", &[("", "any"), ("DEFAULT", "DEFAULT"), ("CUSTOM", "CUSTOM")], q.get("configuration").map_or("", String::as_str)),
    );
    out.push_str(&filter);
    let listed = match ConfigListQuery::from_query(&q).map_err(ApiError::validation) {
        Ok(query) => api::list(State(state.clone()), caller(session), ApiQuery(query)).await.map(|j| j.0.payload),
        Err(e) => Err(e),
    };
    match listed {
        Ok(configs) if configs.is_empty() => out.push_str("<p class=\"hint\">No configurations match.</p>"),
        Ok(configs) => out.push_str(&table(
            "configs",
            &["Id", "Kind", "Company", "Event", "Coins", "Valid days", "Per day", "Per user", "Active"],
            &configs.iter().map(row).collect::<Vec<_>>(),
        )),
        Err(e) => out.push_str(&refusal(&e)),
    }
    let _ = write!(
        out,
        "<h2>New configuration</h2><form method=\"post\" action=\"/dashboard/configs\" class=\"grid-form\" id=\"create-config\">{}{}<button type=\"submit\">Create</button></form>",
        csrf_field(&session.csrf),
        fields(None)
    );
    page(Some(session), "Configurations", "configs", &out)
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
        Err(e) => render_list(&state, &session, &HashMap::new(), Some(refusal(&e))).await,
    }
}

pub async fn edit_page(State(state): State<AppState>, session: Session, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let message = match (q.contains_key("created"), q.contains_key("saved")) {
        (true, _) => Some(notice(true, "Configuration created.")),
        (_, true) => Some(notice(true, "Changes saved; past allocations keep the values they were made with.")),
        _ => None,
    };
    render_edit(&state, &session, &id, message).await
}

async fn render_edit(state: &AppState, session: &Session, id: &str, message: Option<String>) -> Response {
    let mut out = format!("<p><a href=\"/dashboard/configs\">← Configurations</a></p><h1>Configuration {}</h1>", esc(id));
    out.push_str(&message.unwrap_or_default());
    let config = match api::get(State(state.clone()), caller(session), PathParam(id.to_owned())).await {
        Ok(j) => j.0.payload,
        Err(e) => {
            out.push_str(&refusal(&e));
            return page(Some(session), "Configuration", "configs", &out);
        }
    };
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/dashboard/configs/{}\" class=\"grid-form\" id=\"edit-config\">{}{}<button type=\"submit\">Save changes</button></form>",
        url_part(id),
        csrf_field(&session.csrf),
        fields(Some(&config))
    );
    out.push_str("<h2>Audit trail</h2>");
    match api::history(State(state.clone()), caller(session), PathParam(id.to_owned())).await {
        Ok(j) => {
            let rows: Vec<Vec<String>> =
                j.0.payload
                    .iter()
                    .rev()
                    .map(|a| {
                        let changed = changes(a.before.as_ref(), &a.after);
                        vec![esc(&a.at), esc(&a.action), esc(&a.client_id), changed]
                    })
                    .collect();
            out.push_str(&table("audit", &["When (UTC)", "Action", "By client", "Values"], &rows));
        }
        Err(e) => out.push_str(&refusal(&e)),
    }
    page(Some(session), "Configuration", "configs", &out)
}

/// What a change changed, field by field (everything, for a create).
fn changes(before: Option<&Value>, after: &Value) -> String {
    let Some(after) = after.as_object() else { return String::new() };
    let mut out = Vec::new();
    for (k, v) in after {
        match before.and_then(|b| b.get(k)) {
            Some(old) if old == v => {}
            Some(old) => out.push(format!("{}: {} → {}", esc(k), esc(&old.to_string()), esc(&v.to_string()))),
            None => out.push(format!("{}: {}", esc(k), esc(&v.to_string()))),
        }
    }
    out.join("<br>")
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
        Err(e) => render_edit(&state, &session, &id, Some(refusal(&e))).await,
    }
}
