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
use html::{DOCTYPE, Input, Markup, PreEscaped, csrf_field, html};

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
fn html_response(status: StatusCode, body: Markup, csp: &'static str) -> Response {
    let mut res = (status, body.into_string()).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// What a page shows, and the first failure on it: the page answers with that failure's status
/// (and `Retry-After`), and the request's one log line carries its cause under the request id.
#[derive(Default)]
pub struct Body {
    /// Only ever markup a template made.
    markup: String,
    failure: Option<ApiError>,
}

impl Body {
    /// A body that starts with what an action did, or why it was refused.
    fn after(done: Result<String, ApiError>) -> Self {
        let mut body = Self::default();
        match done {
            Ok(message) => body.push(notice(true, &message)),
            Err(e) => body.fail(e),
        }
        body
    }

    fn push(&mut self, markup: Markup) {
        self.markup.push_str(&markup.into_string());
    }

    /// Shows the refusal where it happened and keeps the first failure for the answer.
    fn fail(&mut self, e: ApiError) {
        self.push(refusal(&e));
        self.failure.get_or_insert(e);
    }

    /// What `other` shows, after this; the first failure of the two is kept.
    fn append(&mut self, other: Body) {
        self.markup.push_str(&other.markup);
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }

    /// The part `part` built, or its refusal.
    fn show(&mut self, part: Result<Markup, ApiError>) {
        match part {
            Ok(markup) => self.push(markup),
            Err(e) => self.fail(e),
        }
    }

    fn into_parts(self) -> (Markup, Option<ApiError>) {
        (PreEscaped(self.markup), self.failure)
    }
}

/// A whole page: the frame, the navigation (when signed in) and `body`.
fn page(session: Option<&Session>, title: &str, current: &str, body: Body) -> Response {
    let (markup, failure) = body.into_parts();
    framed(failure.as_ref(), document(session, title, current, markup), CSP)
}

/// A page answering with `failure`'s status (and what its log line needs), else 200.
fn framed(failure: Option<&ApiError>, document: Markup, csp: &'static str) -> Response {
    let mut res = html_response(failure.map_or(StatusCode::OK, |e| e.status), document, csp);
    if let Some(e) = failure {
        e.mark(&mut res);
    }
    res
}

/// The dashboard's sections, in the navigation's order: (path, label, key).
const SECTIONS: [(&str, &str, &str); 5] = [
    ("/dashboard", "Overview", "overview"),
    ("/dashboard/configs", "Configurations", "configs"),
    ("/dashboard/users", "Users", "users"),
    ("/dashboard/campaigns", "Campaigns", "campaigns"),
    ("/dashboard/webhooks", "Webhooks", "webhooks"),
];

fn document(session: Option<&Session>, title: &str, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · coins" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body {
                header class="top" {
                    a class="brand" href="/dashboard" { "coins" }
                    @if let Some(s) = session {
                        nav aria-label="Sections" {
                            @for (href, label, key) in SECTIONS { a href=(href) aria-current=[(key == current).then_some("page")] { (label) } }
                        }
                        div class="who" {
                            span { (s.auth.0.client_id) " · " (who(s)) }
                            form method="post" action="/dashboard/logout" { (csrf_field(&s.csrf)) button type="submit" class="link" { "Sign out" } }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// Whom a session acts for: every company (an admin), or its companies.
fn who(s: &Session) -> String {
    if s.auth.0.admin { "admin".to_owned() } else { s.auth.0.companies.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") }
}

/// A notice at the top of a page: `ok` for a change made, otherwise what was refused.
fn notice(ok: bool, message: &str) -> Markup {
    let (class, role) = if ok { ("notice ok", "status") } else { ("notice error", "alert") };
    html! { p class=(class) role=(role) { (message) } }
}

/// What a refused API call says, for a page.
fn refusal(e: &ApiError) -> Markup {
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
    framed(Some(e), document(None, "Unavailable", "", refusal(e)), CSP)
}

/// A number typed into a form stays a number on the wire, anything else the text, so the API's
/// own rule refuses it in its own words.
fn number_or_text(typed: &str) -> serde_json::Value {
    let typed = typed.trim();
    typed.parse::<i64>().map_or_else(|_| serde_json::Value::from(typed), serde_json::Value::from)
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
        return Err(framed(Some(&e), document(None, "Refused", "", refusal(&e)), CSP));
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
    let body = html! {
        section class="login" {
            h1 { "Sign in" }
            @if let Some(e) = error { (notice(false, e)) }
            form method="post" action="/dashboard/login" class="stack" {
                (csrf_field(&csrf))
                (Input::new("Client id", "client_id").required().autocomplete("username").autofocus())
                (Input::new("Client secret", "client_secret").required().kind("password").autocomplete("current-password"))
                details {
                    summary { "As a person (password grant)" }
                    (Input::new("Username", "username").off())
                    (Input::new("Password", "password").kind("password").off())
                }
                button type="submit" { "Sign in" }
            }
            p class="hint" { "With the client credentials " code { "coins serve" } " printed on its first start, or any API client's." }
        }
    };
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut res = html_response(status, document(None, "Sign in", "", body), CSP);
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
            let mut res = login_form(&headers, Some(&refused.message));
            *res.status_mut() = refused.status;
            if let Some(secs) = refused.retry_after_secs {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            // Logged once, on the request's own line, under its id.
            if let Some(cause) = refused.cause {
                res.extensions_mut().insert(crate::http::error::FailureCause(cause));
            }
            res
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
