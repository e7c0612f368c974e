//! The member page (issue 11): a read-only page of one user's coins — balance, its value in the
//! company's currency, coins expiring soon, recent history — opened from a link that
//! `POST /api/v0/coins/users/{userId}/page-link` makes. The link carries a token naming the user,
//! the company and an expiry, signed with a key derived from `COINS_SECRET_KEY`; it grants
//! nothing else, and an altered or expired one is refused. No login; the page may be embedded.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::html::{esc, num, table};
use crate::clock::rfc3339;
use crate::domain::ledger::EntryKind;
use crate::domain::report::{grouped, money};
use crate::domain::{CompanyId, UserId};
use crate::http::AppState;
use crate::keys::{self, LinkRefused};

/// Entries of history the page shows.
const HISTORY_ROWS: i64 = 20;

/// No script, nothing from elsewhere, no forms; framing allowed (businesses embed it).
const MEMBER_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'";

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
    let (user, company) = match keys::verify_link(key, &token, now) {
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
    let label = |kind: EntryKind| match kind {
        EntryKind::Allocate | EntryKind::Activate => "Earned",
        EntryKind::Redeem => "Spent",
        EntryKind::Reverse | EntryKind::Cancel => "Corrected",
        EntryKind::Expire => "Expired",
        EntryKind::Adjust => "Changed",
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![esc(&rfc3339(e.created_at_ms)[..10]), esc(label(e.kind)), esc(e.event.as_deref().unwrap_or("")), num(&grouped(i128::from(e.coins)))])
        .collect();
    out.push_str(&table("history", &["Date", "", "For", "Coins"], &rows));
    Ok(out)
}
