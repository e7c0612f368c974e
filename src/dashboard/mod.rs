//! `GET /dashboard`: a cockpit for a business's staff, rendered
//! on the server as plain HTML forms and SVG charts — no script at all, every asset in the binary —
//! and the read-only member page (`member.rs`).
//!
//! - Sign-in: client credentials (and optionally a password-grant user), checked exactly as the
//!   token endpoint checks them; the session is an ordinary access token in an `HttpOnly`,
//!   `SameSite=Strict` cookie (`Secure` behind TLS), so expiry, revocation and scoping are the API's
//!   own. Sign-out ends the token.
//! - Every state change is a POST carrying a CSRF token that must equal the `coins_csrf` cookie
//!   (double submit; random, not derived from any secret), on top of `SameSite=Strict`.
//! - Every view calls the API's own handlers with the session's caller, so a company-scoped
//!   client sees and changes exactly what the API would let it.
//! - Pages: `overview.rs` (charts from the daily roll-up), `configs.rs`, `users.rs` (lookup,
//!   history, adjustments and reversals with a confirmation step), `campaigns.rs`, `webhooks.rs`, `exports.rs`
//!   (the overview's Download buttons).

mod campaigns;
mod charts;
mod configs;
mod exports;
pub mod html;
pub mod member;
mod overview;
mod users;
mod webhooks;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::http::AppState;
use crate::http::auth::{Auth, end_token, principal_of};
use crate::http::error::ApiError;
use crate::http::extract::{BODY_BYTES_MAX, read_body};
use html::{csrf_field, esc};

const SESSION_COOKIE: &str = "coins_session";
const CSRF_COOKIE: &str = "coins_csrf";

/// The dashboard's routes (not part of the API document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(overview::page))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/configs", get(configs::list).post(configs::create))
        .route("/dashboard/configs/{coinConfigId}", get(configs::edit_page).post(configs::edit))
        .route("/dashboard/users", get(users::page))
        .route("/dashboard/users/reverse", get(users::confirm_reverse).post(users::reverse))
        .route("/dashboard/users/adjust", get(users::confirm_adjust).post(users::adjust))
        .route("/dashboard/exports/ledger", get(exports::ledger))
        .route("/dashboard/exports/balances", get(exports::balances))
        .route("/dashboard/campaigns", get(campaigns::page))
        .route("/dashboard/campaigns/create", post(campaigns::create))
        .route("/dashboard/campaigns/edit", post(campaigns::edit))
        .route("/dashboard/campaigns/end", post(campaigns::end))
        .route("/dashboard/campaigns/delete", post(campaigns::delete))
        .route("/dashboard/webhooks", get(webhooks::page))
        .route("/dashboard/webhooks/retry", post(webhooks::retry))
        .route("/dashboard/webhooks/reminders", post(webhooks::set_reminders))
        .route("/dashboard/style.css", get(style))
        .route("/member/{token}", get(member::page))
}

/// The stylesheet of every page (the only asset: no script, no font, no image).
async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], include_str!("../../web/dashboard/dashboard.css"))
        .into_response()
}

/// No script may run, nothing may load from elsewhere, forms post only here, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An HTML response with the headers every page carries.
fn html_response(status: StatusCode, body: String, csp: &'static str) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// A whole page: the frame, the navigation (when signed in) and `body`.
fn page(session: Option<&Session>, title: &str, current: &str, body: &str) -> Response {
    html_response(StatusCode::OK, document(session, title, current, body), CSP)
}

fn document(session: Option<&Session>, title: &str, current: &str, body: &str) -> String {
    let nav = match session {
        Some(s) => {
            let link = |href: &str, label: &str, key: &str| {
                let here = if key == current { " aria-current=\"page\"" } else { "" };
                format!("<a href=\"{href}\"{here}>{label}</a>")
            };
            let who = if s.auth.0.admin { "admin".to_owned() } else { s.auth.0.companies.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") };
            format!(
                "<nav aria-label=\"Sections\">{}{}{}{}{}</nav><div class=\"who\"><span>{} · {}</span>\
                 <form method=\"post\" action=\"/dashboard/logout\">{}<button type=\"submit\" class=\"link\">Sign out</button></form></div>",
                link("/dashboard", "Overview", "overview"),
                link("/dashboard/configs", "Configurations", "configs"),
                link("/dashboard/users", "Users", "users"),
                link("/dashboard/campaigns", "Campaigns", "campaigns"),
                link("/dashboard/webhooks", "Webhooks", "webhooks"),
                esc(&s.auth.0.client_id),
                esc(&who),
                csrf_field(&s.csrf)
            )
        }
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · coins</title><link rel=\"stylesheet\" href=\"/dashboard/style.css\"></head><body>\
         <header class=\"top\"><a class=\"brand\" href=\"/dashboard\">coins</a>{nav}</header><main id=\"main\">{body}</main></body></html>",
        esc(title)
    )
}

/// A notice at the top of a page: `ok` for a change made, otherwise what was refused.
fn notice(ok: bool, message: &str) -> String {
    let (class, role) = if ok { ("notice ok", "status") } else { ("notice error", "alert") };
    format!("<p class=\"{class}\" role=\"{role}\">{}</p>", esc(message))
}

/// What a refused API call says, for a page.
fn refusal(e: &ApiError) -> String {
    notice(false, &format!("{} ({})", e.message, e.code.as_str()))
}

fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `Secure` when the page reached the client over TLS (a proxy in front says so).
fn secure(headers: &HeaderMap) -> &'static str {
    let tls = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if tls { "; Secure" } else { "" }
}

fn set_cookie(res: &mut Response, headers: &HeaderMap, name: &str, value: &str, max_age: Option<i64>) {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    let cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}{}", secure(headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A signed-in person: the API caller of the session, its token and its CSRF token.
pub struct Session {
    pub auth: Auth,
    token: String,
    pub csrf: String,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let jar = cookies(&parts.headers);
        let to_login = || Redirect::to("/dashboard/login").into_response();
        let (Some(token), Some(csrf)) = (jar.get(SESSION_COOKIE), jar.get(CSRF_COOKIE)) else { return Err(to_login()) };
        let principal = match principal_of(state, token).await {
            Ok(p) => p,
            Err(e) if e.status == StatusCode::UNAUTHORIZED => return Err(to_login()),
            Err(e) => return Err(error_page(&e)),
        };
        let auth = Auth::noted(parts, state, principal).map_err(|e| error_page(&e))?;
        Ok(Session { auth, token: token.clone(), csrf: csrf.clone() })
    }
}

/// A page for a failure outside any form (the database away, a rate limit).
fn error_page(e: &ApiError) -> Response {
    html_response(e.status, document(None, "Unavailable", "", &refusal(e)), CSP)
}

/// A posted form, after its CSRF token was checked against the cookie.
pub struct Form(pub HashMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

/// Reads an `application/x-www-form-urlencoded` body (at most 64 KiB) and checks its `csrf`
/// field against the cookie; a refusal is the page to answer.
async fn read_form(req: Request) -> Result<Form, Response> {
    let jar = cookies(req.headers());
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(error_page(&ApiError::unsupported_media_type()));
    }
    let bytes = read_body(req, BODY_BYTES_MAX).await.map_err(|e| error_page(&e))?;
    let fields: HashMap<String, String> = form_urlencoded::parse(&bytes).into_owned().collect();
    let expected = jar.get(CSRF_COOKIE).map(String::as_bytes).unwrap_or_default();
    let given = fields.get("csrf").map(String::as_bytes).unwrap_or_default();
    if expected.is_empty() || !crate::crypto::constant_time_eq(expected, given) {
        let e = ApiError::forbidden("the form's CSRF token is missing or does not match this browser's; reload the page and try again");
        return Err(html_response(StatusCode::FORBIDDEN, document(None, "Refused", "", &refusal(&e)), CSP));
    }
    Ok(Form(fields))
}

fn new_csrf() -> String {
    crate::crypto::random_token::<16>()
}

async fn login_page(headers: HeaderMap) -> Response {
    login_form(&headers, None)
}

fn login_form(headers: &HeaderMap, error: Option<&str>) -> Response {
    let csrf = cookies(headers).get(CSRF_COOKIE).cloned().unwrap_or_else(new_csrf);
    let body = format!(
        "<section class=\"login\"><h1>Sign in</h1>{}<form method=\"post\" action=\"/dashboard/login\" class=\"stack\">{}\
         {}{}<details><summary>As a person (password grant)</summary>{}{}</details><button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">With the client credentials <code>coins serve</code> printed on its first start, or any API client's.</p></section>",
        error.map(|e| notice(false, e)).unwrap_or_default(),
        csrf_field(&csrf),
        html::input("Client id", "client_id", "", "required autocomplete=\"username\" autofocus"),
        html::input("Client secret", "client_secret", "", "required type=\"password\" autocomplete=\"current-password\""),
        html::input("Username", "username", "", "autocomplete=\"off\""),
        html::input("Password", "password", "", "type=\"password\" autocomplete=\"off\""),
    );
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut res = html_response(status, document(None, "Sign in", "", &body), CSP);
    set_cookie(&mut res, headers, CSRF_COOKIE, &csrf, None);
    res
}

async fn login(State(state): State<AppState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let address = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let user = Some((form.get("username"), form.get("password"))).filter(|(u, _)| !u.is_empty());
    match crate::http::oauth::sign_in(&state, form.get("client_id"), form.get("client_secret"), user, address).await {
        Ok(token) => {
            let mut res = Redirect::to("/dashboard").into_response();
            set_cookie(&mut res, &headers, SESSION_COOKIE, &token, Some(state.settings.token_ttl_secs));
            // A new CSRF token with every session.
            set_cookie(&mut res, &headers, CSRF_COOKIE, &new_csrf(), None);
            res
        }
        Err(refused) => {
            if let Some(cause) = refused.cause {
                tracing::error!(cause, "dashboard sign-in failed");
            }
            login_form(&headers, Some(&refused.message))
        }
    }
}

async fn logout(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let headers = req.headers().clone();
    if let Err(res) = read_form(req).await {
        return res;
    }
    if let Err(e) = end_token(&state, &session.token).await {
        return error_page(&e);
    }
    let mut res = Redirect::to("/dashboard/login").into_response();
    set_cookie(&mut res, &headers, SESSION_COOKIE, "", Some(0));
    set_cookie(&mut res, &headers, CSRF_COOKIE, "", Some(0));
    res
}
