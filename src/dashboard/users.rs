//! Users: look one up — balance, debt, lifetime figures, lots expiring soon, paginated history —
//! and, for support, adjust its coins (a credit or a debit, with a reason) or reverse one of its
//! allocations, redemptions or adjustments, each after a confirmation step. The confirmation page
//! carries a fresh request id, so submitting it twice applies it once.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::response::Response;
use serde_json::Value;

use super::html::{Input, Markup, csrf_field, hidden, html, num, select, table, text, url_part};
use super::{Body, Form, Session, number_or_text, read_form};
use crate::domain::report::{grouped, money};
use crate::domain::{CompanyId, UserId};
use crate::http::AppState;
use crate::http::auth::Auth;
use crate::http::error::ApiError;
use crate::http::extract::{PathParam, Query as ApiQuery};
use crate::http::wire::coins::{AdjustRequest, CoinValueQuery, ReverseRequest};
use crate::http::wire::tiers::MemberTierView;
use crate::http::wire::users::{TransactionsQuery, UserView};
use crate::http::wire::{FromJsonObject, FromQuery};
use crate::http::{ledger, users as api};

/// Allocations the user page lists, newest first.
const ALLOCATIONS_SHOWN: i64 = 20;

fn caller(session: &Session) -> Auth {
    Auth(session.auth.0.clone())
}

/// A user's page, after what `body` already says (an action's outcome).
async fn render(state: &AppState, session: &Session, q: &HashMap<String, String>, said: Body) -> Response {
    let user = q.get("userId").map(|u| u.trim().to_owned()).unwrap_or_default();
    let mut body = Body::default();
    body.push(html! {
        h1 { "Users" }
        form method="get" action="/dashboard/users" class="filters" role="search" {
            (Input::new("User id", "userId").value(&user).required().off())
            button type="submit" { "Look up" }
        }
    });
    body.append(said);
    if !user.is_empty() {
        // The user's figures first; a later part that fails (a stale history cursor, say) shows
        // its refusal below them.
        match user_card(state, session, &user).await {
            Ok((card, summary)) => {
                body.push(card);
                body.show(user_lists(state, session, q, &user, &summary).await);
            }
            Err(e) => body.fail(e),
        }
    }
    super::page(Some(session), "Users", "users", body)
}

/// The user's figures (balance, lifetime, held, debt) and the adjustment form.
async fn user_card(state: &AppState, session: &Session, user: &str) -> Result<(Markup, UserView), ApiError> {
    let summary = api::user(State(state.clone()), caller(session), PathParam(user.to_owned())).await?.0.payload;
    let value_query = CoinValueQuery { company_id: Some(summary.company_id.clone()) };
    let value = api::get_coin_value(State(state.clone()), caller(session), ApiQuery(value_query)).await?.0.payload;
    let worth = |coins: i64| money(&value.currency, i128::from(coins) * i128::from(value.minor_units_per_coin));
    let coins = |n: i64| grouped(i128::from(n));
    let (u, c) = (summary.user_id.as_str(), summary.company_id.as_str());
    let card = html! {
        section class="cards" aria-label={ "User " (u) } {
            div class="card" id="user-balance" {
                span class="label" { "Balance of " (u) " (" (c) ")" }
                span class="value" data-value=(summary.balance) { (coins(summary.balance)) }
                span class="note" { "worth " (worth(summary.balance)) }
            }
            div class="card" { span class="label" { "Earned" } span class="value" { (coins(summary.lifetime_earned)) } }
            div class="card" { span class="label" { "Redeemed" } span class="value" { (coins(summary.lifetime_redeemed)) } }
            div class="card" { span class="label" { "Expired" } span class="value" { (coins(summary.lifetime_expired)) } }
            div class="card" id="user-pending" {
                span class="label" { "Held (not spendable yet)" }
                span class="value" data-value=(summary.pending_balance) { (coins(summary.pending_balance)) }
            }
            div class="card" id="user-debt" {
                span class="label" { "Owes (debt)" }
                span class="value" data-value=(summary.debt) { (coins(summary.debt)) }
                span class="note" { "paid first by the next credits" }
            }
        }
        // An adjustment is asked for here and confirmed on the next page (GET: nothing is written yet).
        details class="adjust" {
            summary { "Adjust coins…" }
            form method="get" action="/dashboard/users/adjust" id="adjust" {
                (hidden("userId", u))
                (hidden("companyId", c))
                (Input::new("Coins (negative to take)", "coins").required().numeric(Some("-?[0-9]+")).off())
                (Input::new("Reason (shown in the ledger)", "reason").required().maxlength(200).off())
                (Input::new("Expires after (days; credits, optional)", "validityDays").numeric(Some("[0-9]*")).off())
                (select(
                    "If the user has fewer coins (debits)",
                    "onShortfall",
                    &[("REJECT", "Refuse"), ("CAP", "Take what there is"), ("NEGATIVE", "Take it all: the rest becomes debt")],
                    "REJECT"
                ))
                button type="submit" { "Review…" }
            }
        }
    };
    Ok((card, summary))
}

/// The user's tier, held coins, coins expiring soon, latest allocations and a page of history.
async fn user_lists(state: &AppState, session: &Session, q: &HashMap<String, String>, user: &str, summary: &UserView) -> Result<Markup, ApiError> {
    let coins = |n: i64| grouped(i128::from(n));
    let tier = match &summary.tier {
        Some(tier) => Some(tier_section(state, &summary.company_id, &summary.user_id, tier).await?),
        None => None,
    };
    let allocations = state.store.allocations_of(&summary.company_id, &summary.user_id, ALLOCATIONS_SHOWN).await.map_err(ApiError::from)?;
    let mut params: HashMap<String, String> = HashMap::from([("userId".to_owned(), user.to_owned()), ("limit".to_owned(), "20".to_owned())]);
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        params.insert("cursor".into(), c.clone());
    }
    let query = TransactionsQuery::from_query(&params).map_err(ApiError::validation)?;
    let history = api::transactions(State(state.clone()), caller(session), ApiQuery(query)).await?.0.payload;
    let c = summary.company_id.as_str();
    let held: Vec<Vec<Markup>> = summary.pending.iter().map(|h| vec![text(h.request_id.as_str()), num(coins(h.coins)), text(&h.activates_at)]).collect();
    let expiring: Vec<Vec<Markup>> = summary.expiring_soon.iter().map(|l| vec![num(coins(l.coins)), text(&l.expires_at)]).collect();
    let allocation_rows: Vec<Vec<Markup>> = allocations
        .iter()
        .map(|a| {
            let remaining = a.coins - a.coins_canceled - a.coins_reversed - a.coins_waived;
            vec![
                text(a.request_id.as_str()),
                text(&a.event),
                text(a.state.as_str()),
                num(coins(a.coins)),
                num(coins(remaining)),
                text(a.order_id.as_deref().unwrap_or("")),
                text(a.activates_at_ms.map(crate::clock::rfc3339).unwrap_or_default()),
            ]
        })
        .collect();
    let history_rows: Vec<Vec<Markup>> = history
        .entries
        .iter()
        .map(|e| {
            let action = match (e.kind.as_str(), &e.request_id) {
                // An entry that moved nothing (a capped debit of a user with no coins) has nothing to return.
                ("ALLOCATE" | "REDEEM" | "ADJUST", Some(rid)) if e.coins + e.pending_coins != 0 => {
                    let href = format!("/dashboard/users/reverse?userId={}&companyId={}&requestId={}", url_part(user), url_part(c), url_part(rid));
                    html! { a href=(href) { "Reverse…" } }
                }
                _ => html! {},
            };
            vec![
                text(&e.created_at),
                text(&e.kind),
                num(coins(e.coins)),
                num(coins(e.balance_after)),
                if e.pending_coins == 0 {
                    html! {}
                } else {
                    num(coins(e.pending_coins))
                },
                text(e.event.as_deref().unwrap_or("")),
                text(e.request_id.as_deref().unwrap_or("")),
                text(e.reason.as_deref().unwrap_or("")),
                action,
            ]
        })
        .collect();
    let paged = q.get("cursor").is_some_and(|c| !c.is_empty());
    Ok(html! {
        @if let Some(tier) = tier { (tier) }
        @if !held.is_empty() {
            h2 { "Held until they activate" }
            (table("pending", &["Allocation", "Coins", "Spendable from (UTC)"], &held))
        }
        @if !expiring.is_empty() {
            h2 { "Expiring within 30 days" }
            (table("expiring", &["Coins", "Expires (UTC)"], &expiring))
        }
        @if !allocation_rows.is_empty() {
            h2 { "Latest allocations" }
            (table("allocations", &["Request id", "Event", "State", "Coins", "Remaining", "Order", "Held until (UTC)"], &allocation_rows))
        }
        h2 { "History" }
        (table("history", &["When (UTC)", "Type", "Coins", "Balance after", "Held", "Event", "Request id", "Reason", ""], &history_rows))
        nav class="pager" aria-label="History pages" {
            @if paged { a href={ "/dashboard/users?userId=" (url_part(user)) } { "Newest" } }
            @if let Some(next) = &history.next_cursor {
                a href={ "/dashboard/users?userId=" (url_part(user)) "&cursor=" (url_part(next)) } rel="next" { "Older entries →" }
            }
        }
    })
}

/// Tier changes the user page lists, newest first.
const TIER_CHANGES_SHOWN: i64 = 10;

/// The member's status tier: where they are, how far to the next, until when, any floor, and
/// their latest tier changes.
async fn tier_section(state: &AppState, company: &CompanyId, user: &UserId, tier: &MemberTierView) -> Result<Markup, ApiError> {
    let scheme = state.store.tiers(company).await?;
    // The next tier by its name, as members see it.
    let name_of = |code: &str| scheme.as_ref().and_then(|s| s.scheme.tiers.iter().find(|t| t.code == code)).map_or_else(|| code.to_owned(), |t| t.name.clone());
    let coins = |n: i64| grouped(i128::from(n));
    let progress = match (&tier.next_tier, tier.coins_to_next_tier) {
        (Some(next), Some(left)) => {
            let goal = tier.qualifying_coins + left;
            let next = name_of(next);
            html! {
                progress id="tier-progress" value=(tier.qualifying_coins) max=(goal) aria-label={ "Qualifying coins towards " (next) } {}
                span class="note" { (coins(tier.qualifying_coins)) " of " (coins(goal)) " qualifying coins: " (coins(left)) " more for " (next) }
            }
        }
        _ => html! { span class="note" { (coins(tier.qualifying_coins)) " qualifying coins: the top tier" } },
    };
    let kept = tier.expires_at.as_deref().map_or("kept for good".to_owned(), |at| format!("evaluated again at {at} (UTC)"));
    let changes = state.store.tier_history(company, user, TIER_CHANGES_SHOWN).await?;
    let rows: Vec<Vec<Markup>> = changes
        .iter()
        .map(|c| {
            vec![
                text(crate::clock::rfc3339(c.at)),
                text(&c.kind),
                text(c.from.as_deref().unwrap_or("")),
                text(&c.to),
                num(coins(c.qualifying)),
                text(&c.cause),
                text(c.request_id.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    Ok(html! {
        h2 { "Status tier" }
        section class="cards" aria-label="Status tier" {
            div class="card tier" id="user-tier" {
                span class="label" { "Tier" }
                span class="value" data-code=(tier.code) { (tier.name) }
                span class="note" { "earns ×" (times(tier.earn_multiplier_bps)) " · " (kept) }
                @if let Some(floor) = &tier.floor {
                    span class="note" { "never below " (floor) " (staff floor: " (tier.floor_reason.as_deref().unwrap_or("")) ")" }
                }
                (progress)
            }
        }
        @if !rows.is_empty() {
            (table("tier-changes", &["When (UTC)", "Change", "From", "To", "Qualifying coins", "Why", "Request"], &rows))
        }
    })
}

/// A multiplier in basis points as people read it: `1.5`, `2`, `1.25`.
fn times(bps: i64) -> String {
    let text = format!("{}.{:04}", bps / 10_000, bps % 10_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

pub async fn page(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    render(&state, &session, &q, Body::default()).await
}

/// The confirmation step: what will be reversed, and a form that does it.
pub async fn confirm_reverse(session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map_or("", String::as_str);
    let fresh = format!("DASH-REV-{}", hex::encode(crate::crypto::random_bytes::<8>()));
    let (user, request, company) = (get("userId"), get("requestId"), get("companyId"));
    let back = format!("/dashboard/users?userId={}", url_part(user));
    let mut body = Body::default();
    body.push(html! {
        p { a href=(back) { "← " (user) } }
        h1 { "Reverse " (request) "?" }
        p {
            "This takes back the coins of " strong { (request) } " (an allocation or a credit) or gives back the coins it took (a redemption or a debit), \
             for user " strong { (user) } " of company " strong { (company) } ". It is written to the ledger as a reversal and cannot be undone."
        }
        form method="post" action="/dashboard/users/reverse" id="confirm-reverse" {
            (csrf_field(&session.csrf))
            (hidden("userId", user))
            (hidden("companyId", company))
            (hidden("originalRequestId", request))
            (hidden("requestId", &fresh))
            fieldset {
                legend { "Part of it (optional; leave both empty to return all that remains)" }
                (Input::new("Coins to return", "coins").numeric(Some("[0-9]*")).off())
                (Input::new("Or the refunded amount, in minor units (allocations that recorded a purchase value)", "amountMinor").numeric(Some("[0-9]*")).off())
            }
            button type="submit" class="danger" { "Reverse it" }
            " "
            a href=(back) { "Cancel" }
        }
    });
    super::page(Some(&session), "Confirm reversal", "users", body)
}

/// The fields `names` of the form as numbers typed (empty means not given).
fn typed_numbers(form: &Form, names: &[&str], body: &mut serde_json::Map<String, Value>) {
    for k in names.iter().filter(|k| !form.get(k).trim().is_empty()) {
        body.insert((*k).to_owned(), number_or_text(form.get(k)));
    }
}

pub async fn reverse(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let q = HashMap::from([("userId".to_owned(), form.get("userId").to_owned())]);
    let mut body: serde_json::Map<String, Value> =
        ["companyId", "requestId", "originalRequestId"].iter().map(|k| ((*k).to_owned(), Value::from(form.get(k)))).collect();
    // A part, when asked for (anything but a number is refused by the API's own rule).
    typed_numbers(&form, &["coins", "amountMinor"], &mut body);
    let done = match ReverseRequest::from_object(&body).map_err(ApiError::validation) {
        Ok(request) => ledger::reversed(&state, &caller(&session), request).await,
        Err(e) => Err(e),
    };
    let said = done.map(|(r, _)| {
        format!(
            "Reversed {}: {} coins; {} of its coins remain to return; the balance is now {}.",
            form.get("originalRequestId"),
            r.coins,
            r.coins_remaining,
            r.balance
        )
    });
    render(&state, &session, &q, Body::after(said)).await
}

/// The confirmation step of an adjustment: what will be written, and a form that writes it.
pub async fn confirm_adjust(session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map_or("", |v| v.trim());
    let fresh = format!("DASH-ADJ-{}", hex::encode(crate::crypto::random_bytes::<8>()));
    let coins = get("coins");
    let what = match coins.parse::<i64>() {
        Ok(n) if n < 0 => html! { "Take " strong { (grouped(i128::from(n).abs())) } " coins from" },
        Ok(n) => html! { "Add " strong { (grouped(i128::from(n))) } " coins to" },
        Err(_) => html! { "Adjust by " strong { (coins) } " coins" },
    };
    let short = match get("onShortfall") {
        "CAP" => ", taking no more than the user has",
        "NEGATIVE" => ", what the user does not have becoming debt",
        _ => "",
    };
    let user = get("userId");
    let back = format!("/dashboard/users?userId={}", url_part(user));
    let mut body = Body::default();
    body.push(html! {
        p { a href=(back) { "← " (user) } }
        h1 { "Adjust " (user) "?" }
        p {
            (what) " user " strong { (user) } " of company " strong { (get("companyId")) } ", for " q { (get("reason")) }
            @if !get("validityDays").is_empty() { ", expiring " (get("validityDays")) " days after" }
            (short) ". It is written to the ledger as an adjustment, with your client id; a reversal can return it later."
        }
        form method="post" action="/dashboard/users/adjust" id="confirm-adjust" {
            (csrf_field(&session.csrf))
            @for name in ["userId", "companyId", "coins", "reason", "validityDays", "onShortfall"] { (hidden(name, get(name))) }
            (hidden("requestId", &fresh))
            button type="submit" class="danger" { "Adjust" }
            " "
            a href=(back) { "Cancel" }
        }
    });
    super::page(Some(&session), "Confirm adjustment", "users", body)
}

/// Writes a confirmed adjustment through the API's own handler (its rules, its answers).
pub async fn adjust(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let q = HashMap::from([("userId".to_owned(), form.get("userId").to_owned())]);
    let mut body: serde_json::Map<String, Value> =
        ["companyId", "userId", "requestId", "reason"].iter().map(|k| ((*k).to_owned(), Value::from(form.get(k)))).collect();
    typed_numbers(&form, &["coins", "validityDays"], &mut body);
    // The shortfall rule applies to debits only; REJECT is the default either way.
    let short = form.get("onShortfall").trim();
    let debit = form.get("coins").trim().starts_with('-');
    if debit && !short.is_empty() && short != "REJECT" {
        body.insert("onShortfall".to_owned(), Value::from(short));
    }
    let done = match AdjustRequest::from_object(&body).map_err(ApiError::validation) {
        Ok(request) => ledger::adjusted(&state, &caller(&session), request).await,
        Err(e) => Err(e),
    };
    let said = done.map(|(a, _)| {
        let short = if a.coins_short > 0 { format!(" ({} short: the user did not have them)", a.coins_short) } else { String::new() };
        format!("Adjusted {}: {} coins{short}; the balance is now {}.", form.get("userId"), a.coins, a.balance)
    });
    render(&state, &session, &q, Body::after(said)).await
}
