//! The member page (issue 11): a read-only page of one user's coins — balance, its value in the
//! company's currency, coins expiring soon, recent history — opened from a link that
//! `POST /api/v0/coins/users/{userId}/page-link` makes. The link carries a token naming the user,
//! the company and an expiry, signed with a key derived from `COINS_SECRET_KEY`; it grants
//! nothing else, and an altered or expired one is refused. No login; the page may be embedded.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::html::{esc, num, table};
use crate::clock::rfc3339;
use crate::domain::report::{grouped, money};
use crate::domain::{CompanyId, UserId};
use crate::http::AppState;
use crate::webhooks::SealingKey;

/// Entries of history the page shows.
const HISTORY_ROWS: i64 = 20;
const PURPOSE: &str = "coins member page link v1";

/// No script, nothing from elsewhere, no forms; framing allowed (businesses embed it).
const MEMBER_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'";

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user.
    u: String,
    /// Its company.
    c: String,
    /// Expiry, Unix ms.
    e: i64,
}

fn mac(key: &SealingKey, payload: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.derive(PURPOSE)).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac
}

/// A link token for this user until `expires_ms`.
pub fn sign(key: &SealingKey, user: &UserId, company: &CompanyId, expires_ms: i64) -> String {
    let claims = Claims { u: user.to_string(), c: company.to_string(), e: expires_ms };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let tag = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// Why a link is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkRefused {
    /// Not one this server signed, or altered.
    Invalid,
    Expired,
}

/// The user and company a token names, if it is genuine and unexpired at `now_ms`.
pub fn verify(key: &SealingKey, token: &str, now_ms: i64) -> Result<(UserId, CompanyId), LinkRefused> {
    let (payload, tag) = token.split_once('.').ok_or(LinkRefused::Invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkRefused::Invalid)?;
    mac(key, payload).verify_slice(&tag).map_err(|_| LinkRefused::Invalid)?;
    let claims: Claims = URL_SAFE_NO_PAD.decode(payload).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(LinkRefused::Invalid)?;
    if now_ms >= claims.e {
        return Err(LinkRefused::Expired);
    }
    let user = UserId::parse(&claims.u).map_err(|_| LinkRefused::Invalid)?;
    let company = CompanyId::parse(&claims.c).map_err(|_| LinkRefused::Invalid)?;
    Ok((user, company))
}

fn member_page(status: StatusCode, title: &str, body: &str) -> Response {
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{} · coins</title><link rel=\"stylesheet\" href=\"/dashboard/style.css\"></head>\
         <body class=\"member\"><main id=\"main\">{body}</main></body></html>",
        esc(title)
    );
    super::html_response(status, doc, MEMBER_CSP)
}

pub async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let now = state.clock.now_ms();
    let Some(key) = state.settings.webhooks.key.as_deref() else {
        return member_page(StatusCode::NOT_FOUND, "Link not valid", "<h1>This link is not valid</h1>");
    };
    let (user, company) = match verify(key, &token, now) {
        Ok(pair) => pair,
        Err(LinkRefused::Expired) => {
            return member_page(StatusCode::GONE, "Link expired", "<h1>This link has expired</h1><p>Ask for a new one where you found it.</p>");
        }
        Err(LinkRefused::Invalid) => return member_page(StatusCode::NOT_FOUND, "Link not valid", "<h1>This link is not valid</h1>"),
    };
    match render(&state, &user, &company, now).await {
        Ok(body) => member_page(StatusCode::OK, "Your coins", &body),
        Err(e) => member_page(e.status, "Unavailable", &format!("<h1>Your coins are not available right now</h1><p>{}</p>", esc(&e.message))),
    }
}

async fn render(state: &AppState, user: &UserId, company: &CompanyId, now: i64) -> Result<String, crate::http::error::ApiError> {
    let value = state.store.coin_value(Some(company)).await?;
    let worth = |coins: i64| money(&value.currency, i128::from(coins) * i128::from(value.minor_units_per_coin));
    // The same step as every user read: due expiries are written first, so the figures agree.
    let found = state.store.balance(user, now).await?.filter(|b| &b.company == company);
    let summary = match found {
        Some(_) => {
            let expired = state.store.settle_expired(user, now).await?;
            crate::metrics::moved(crate::metrics::Movement::Expired, expired.lots, expired.coins);
            state.store.user_summary(user, now).await?.filter(|s| &s.company == company)
        }
        None => None,
    };
    let Some(summary) = summary else {
        return Ok(format!("<h1>Your coins</h1><p class=\"balance\" id=\"member-balance\" data-value=\"0\">0 coins</p><p>{}</p>", esc("Nothing earned yet.")));
    };
    let mut out = format!(
        "<h1>Your coins</h1><p class=\"balance\" id=\"member-balance\" data-value=\"{b}\">{bt} coins</p><p class=\"worth\">worth {w}</p>",
        b = summary.balance,
        bt = grouped(i128::from(summary.balance)),
        w = esc(&worth(summary.balance))
    );
    if !summary.expiring_soon.is_empty() {
        out.push_str("<h2>Expiring soon</h2>");
        let rows: Vec<Vec<String>> =
            summary.expiring_soon.iter().map(|(coins, at)| vec![num(&grouped(i128::from(*coins))), esc(&rfc3339(*at)[..10])]).collect();
        out.push_str(&table("expiring", &["Coins", "On (UTC)"], &rows));
    }
    let entries = state.store.transactions(user, None, HISTORY_ROWS).await?;
    out.push_str("<h2>Recent activity</h2>");
    let label = |kind: &str| match kind {
        "ALLOCATE" => "Earned",
        "REDEEM" => "Spent",
        "REVERSE" => "Corrected",
        "EXPIRE" => "Expired",
        _ => "Changed",
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![esc(&rfc3339(e.created_at_ms)[..10]), esc(label(&e.kind)), esc(e.event.as_deref().unwrap_or("")), num(&grouped(i128::from(e.coins)))])
        .collect();
    out.push_str(&table("history", &["Date", "", "For", "Coins"], &rows));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_open_only_unaltered_and_in_time() {
        let key = SealingKey::random();
        let (user, company) = (UserId::parse("U1").unwrap(), CompanyId::parse("C1").unwrap());
        let token = sign(&key, &user, &company, 1_000);
        assert_eq!(verify(&key, &token, 999), Ok((user.clone(), company.clone())));
        assert_eq!(verify(&key, &token, 1_000), Err(LinkRefused::Expired));
        let (payload, tag) = token.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"u":"U2","c":"C1","e":1000}"#);
        assert_eq!(verify(&key, &format!("{other}.{tag}"), 0), Err(LinkRefused::Invalid), "another user under the same tag");
        assert_eq!(verify(&key, &format!("{payload}.{tag}x"), 0), Err(LinkRefused::Invalid));
        assert_eq!(verify(&SealingKey::random(), &token, 0), Err(LinkRefused::Invalid), "another server's key");
        assert_eq!(verify(&key, "nonsense", 0), Err(LinkRefused::Invalid));
    }
}
