//! The member page (issue 11): a read-only page of one user's coins — balance, its value in the
//! company's currency, coins expiring soon, recent history — opened from a link that
//! `POST /api/v0/coins/users/{userId}/page-link` makes. The link carries a token naming the user,
//! the company and an expiry, signed with a key derived from `COINS_SECRET_KEY`; it grants
//! nothing else, and an altered or expired one is refused. No login; the page may be embedded.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::html::{DOCTYPE, Markup, html, num, table, text};
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

fn member_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · coins" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body class="member" { main id="main" { (body) } }
        }
    };
    super::html_response(status, doc, MEMBER_CSP)
}

pub async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let now = state.clock.now_ms();
    let invalid = || member_page(StatusCode::NOT_FOUND, "Link not valid", html! { h1 { "This link is not valid" } });
    let Some(key) = state.settings.webhooks.key.as_deref() else { return invalid() };
    let (user, company) = match keys::verify_link(key, &token, now) {
        Ok(pair) => pair,
        Err(LinkRefused::Expired) => {
            return member_page(StatusCode::GONE, "Link expired", html! { h1 { "This link has expired" } p { "Ask for a new one where you found it." } });
        }
        Err(LinkRefused::Invalid) => return invalid(),
    };
    match render(&state, &user, &company, now).await {
        Ok(body) => member_page(StatusCode::OK, "Your coins", body),
        Err(e) => {
            let mut res = member_page(e.status, "Unavailable", html! { h1 { "Your coins are not available right now" } p { (e.message) } });
            e.mark(&mut res);
            res
        }
    }
}

async fn render(state: &AppState, user: &UserId, company: &CompanyId, now: i64) -> Result<Markup, crate::http::error::ApiError> {
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
        return Ok(html! { h1 { "Your coins" } p class="balance" id="member-balance" data-value="0" { "0 coins" } p { "Nothing earned yet." } });
    };
    let expiring: Vec<Vec<Markup>> =
        summary.expiring_soon.iter().map(|(coins, at)| vec![num(grouped(i128::from(*coins))), text(&rfc3339(*at)[..10])]).collect();
    let entries = state.store.transactions(user, None, HISTORY_ROWS).await?;
    let label = |kind: EntryKind| match kind {
        EntryKind::Allocate | EntryKind::Activate => "Earned",
        EntryKind::Redeem => "Spent",
        EntryKind::Reverse | EntryKind::Cancel => "Corrected",
        EntryKind::Expire => "Expired",
        EntryKind::Adjust => "Changed",
    };
    let rows: Vec<Vec<Markup>> = entries
        .iter()
        .map(|e| vec![text(&rfc3339(e.created_at_ms)[..10]), text(label(e.kind)), text(e.event.as_deref().unwrap_or("")), num(grouped(i128::from(e.coins)))])
        .collect();
    Ok(html! {
        h1 { "Your coins" }
        p class="balance" id="member-balance" data-value=(summary.balance) { (grouped(i128::from(summary.balance))) " coins" }
        p class="worth" { "worth " (worth(summary.balance)) }
        @if !expiring.is_empty() {
            h2 { "Expiring soon" }
            (table("expiring", &["Coins", "On (UTC)"], &expiring))
        }
        h2 { "Recent activity" }
        (table("history", &["Date", "", "For", "Coins"], &rows))
    })
}
