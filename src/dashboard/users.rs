//! Users: look one up — balance, debt, lifetime figures, lots expiring soon, paginated history —
//! and, for support, adjust its coins (a credit or a debit, with a reason) or reverse one of its
//! allocations, redemptions or adjustments, each after a confirmation step. The confirmation page
//! carries a fresh request id, so submitting it twice applies it once.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, Request, State};
use axum::response::Response;
use serde_json::Value;

use super::html::{csrf_field, esc, input, num, select, table, url_part};
use super::{Session, notice, read_form, refusal};
use crate::domain::report::{grouped, money};
use crate::domain::{CompanyId, UserId};
use crate::http::AppState;
use crate::http::auth::Auth;
use crate::http::error::ApiError;
use crate::http::extract::{Json, PathParam, Query as ApiQuery};
use crate::http::wire::coins::{AdjustRequest, CoinValueQuery, ReverseRequest};
use crate::http::wire::tiers::MemberTierView;
use crate::http::wire::users::TransactionsQuery;
use crate::http::wire::{FromJsonObject, FromQuery};
use crate::http::{ledger, users as api};

/// Allocations the user page lists, newest first.
const ALLOCATIONS_SHOWN: i64 = 20;

fn caller(session: &Session) -> Auth {
    Auth(session.auth.0.clone())
}

/// A user's page; `message` on top.
async fn render(state: &AppState, session: &Session, q: &HashMap<String, String>, message: Option<String>) -> Response {
    let user = q.get("userId").map(|u| u.trim().to_owned()).unwrap_or_default();
    let mut out = String::from("<h1>Users</h1>");
    let _ = write!(
        out,
        "<form method=\"get\" action=\"/dashboard/users\" class=\"filters\" role=\"search\">{}<button type=\"submit\">Look up</button></form>",
        input("User id", "userId", &user, "required autocomplete=\"off\"")
    );
    out.push_str(&message.unwrap_or_default());
    if !user.is_empty()
        && let Err(e) = user_details(state, session, q, &user, &mut out).await
    {
        out.push_str(&refusal(&e));
    }
    super::page(Some(session), "Users", "users", &out)
}

async fn user_details(state: &AppState, session: &Session, q: &HashMap<String, String>, user: &str, out: &mut String) -> Result<(), ApiError> {
    let summary = api::user(State(state.clone()), caller(session), PathParam(user.to_owned())).await?.0.payload;
    let value_query = CoinValueQuery { company_id: Some(summary.company_id.clone()) };
    let value = api::get_coin_value(State(state.clone()), caller(session), ApiQuery(value_query)).await?.0.payload;
    let worth = |coins: i64| money(&value.currency, i128::from(coins) * i128::from(value.minor_units_per_coin));
    let _ = write!(
        out,
        "<section class=\"cards\" aria-label=\"User {u}\"><div class=\"card\" id=\"user-balance\"><span class=\"label\">Balance of {u} ({c})</span>\
         <span class=\"value\" data-value=\"{b}\">{bt}</span><span class=\"note\">worth {w}</span></div>\
         <div class=\"card\"><span class=\"label\">Earned</span><span class=\"value\">{e}</span></div>\
         <div class=\"card\"><span class=\"label\">Redeemed</span><span class=\"value\">{r}</span></div>\
         <div class=\"card\"><span class=\"label\">Expired</span><span class=\"value\">{x}</span></div>\
         <div class=\"card\" id=\"user-pending\"><span class=\"label\">Held (not spendable yet)</span><span class=\"value\" data-value=\"{p}\">{pt}</span></div>\
         <div class=\"card\" id=\"user-debt\"><span class=\"label\">Owes (debt)</span><span class=\"value\" data-value=\"{d}\">{dt}</span>\
         <span class=\"note\">paid first by the next credits</span></div></section>",
        u = esc(summary.user_id.as_str()),
        c = esc(summary.company_id.as_str()),
        b = summary.balance,
        bt = grouped(i128::from(summary.balance)),
        w = esc(&worth(summary.balance)),
        e = grouped(i128::from(summary.lifetime_earned)),
        r = grouped(i128::from(summary.lifetime_redeemed)),
        x = grouped(i128::from(summary.lifetime_expired)),
        p = summary.pending_balance,
        pt = grouped(i128::from(summary.pending_balance)),
        d = summary.debt,
        dt = grouped(i128::from(summary.debt)),
    );
    // An adjustment is asked for here and confirmed on the next page (GET: nothing is written yet).
    let _ = write!(
        out,
        "<details class=\"adjust\"><summary>Adjust coins…</summary>\
         <form method=\"get\" action=\"/dashboard/users/adjust\" id=\"adjust\">\
         <input type=\"hidden\" name=\"userId\" value=\"{u}\"><input type=\"hidden\" name=\"companyId\" value=\"{c}\">{coins}{reason}{validity}{short}\
         <button type=\"submit\">Review…</button></form></details>",
        u = esc(summary.user_id.as_str()),
        c = esc(summary.company_id.as_str()),
        coins = input("Coins (negative to take)", "coins", "", "required inputmode=\"numeric\" pattern=\"-?[0-9]+\" autocomplete=\"off\""),
        reason = input("Reason (shown in the ledger)", "reason", "", "required maxlength=\"200\" autocomplete=\"off\""),
        validity = input("Expires after (days; credits, optional)", "validityDays", "", "inputmode=\"numeric\" pattern=\"[0-9]*\" autocomplete=\"off\""),
        short = select(
            "If the user has fewer coins (debits)",
            "onShortfall",
            &[("REJECT", "Refuse"), ("CAP", "Take what there is"), ("NEGATIVE", "Take it all: the rest becomes debt")],
            "REJECT"
        ),
    );
    if let Some(tier) = &summary.tier {
        out.push_str(&tier_section(state, &summary.company_id, &summary.user_id, tier).await?);
    }
    if !summary.pending.is_empty() {
        out.push_str("<h2>Held until they activate</h2>");
        let rows: Vec<Vec<String>> =
            summary.pending.iter().map(|h| vec![esc(h.request_id.as_str()), num(&grouped(i128::from(h.coins))), esc(&h.activates_at)]).collect();
        out.push_str(&table("pending", &["Allocation", "Coins", "Spendable from (UTC)"], &rows));
    }
    if !summary.expiring_soon.is_empty() {
        out.push_str("<h2>Expiring within 30 days</h2>");
        let rows: Vec<Vec<String>> = summary.expiring_soon.iter().map(|l| vec![num(&grouped(i128::from(l.coins))), esc(&l.expires_at)]).collect();
        out.push_str(&table("expiring", &["Coins", "Expires (UTC)"], &rows));
    }
    let allocations = state.store.allocations_of(&summary.company_id, &summary.user_id, ALLOCATIONS_SHOWN).await.map_err(ApiError::from)?;
    if !allocations.is_empty() {
        out.push_str("<h2>Latest allocations</h2>");
        let rows: Vec<Vec<String>> = allocations
            .iter()
            .map(|a| {
                let remaining = a.coins - a.coins_canceled - a.coins_reversed - a.coins_waived;
                vec![
                    esc(a.request_id.as_str()),
                    esc(&a.event),
                    esc(a.state.as_str()),
                    num(&grouped(i128::from(a.coins))),
                    num(&grouped(i128::from(remaining))),
                    esc(a.order_id.as_deref().unwrap_or("")),
                    esc(&a.activates_at_ms.map(crate::clock::rfc3339).unwrap_or_default()),
                ]
            })
            .collect();
        out.push_str(&table("allocations", &["Request id", "Event", "State", "Coins", "Remaining", "Order", "Held until (UTC)"], &rows));
    }
    let mut params: HashMap<String, String> = HashMap::from([("userId".to_owned(), user.to_owned()), ("limit".to_owned(), "20".to_owned())]);
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        params.insert("cursor".into(), c.clone());
    }
    let query = TransactionsQuery::from_query(&params).map_err(ApiError::validation)?;
    let history = api::transactions(State(state.clone()), caller(session), ApiQuery(query)).await?.0.payload;
    out.push_str("<h2>History</h2>");
    let rows: Vec<Vec<String>> = history
        .entries
        .iter()
        .map(|e| {
            let action = match (e.kind.as_str(), &e.request_id) {
                // An entry that moved nothing (a capped debit of a user with no coins) has nothing to return.
                ("ALLOCATE" | "REDEEM" | "ADJUST", Some(rid)) if e.coins + e.pending_coins != 0 => format!(
                    "<a href=\"/dashboard/users/reverse?userId={}&amp;companyId={}&amp;requestId={}\">Reverse…</a>",
                    url_part(user),
                    url_part(summary.company_id.as_str()),
                    url_part(rid)
                ),
                _ => String::new(),
            };
            vec![
                esc(&e.created_at),
                esc(&e.kind),
                num(&grouped(i128::from(e.coins))),
                num(&grouped(i128::from(e.balance_after))),
                if e.pending_coins == 0 { String::new() } else { num(&grouped(i128::from(e.pending_coins))) },
                esc(e.event.as_deref().unwrap_or("")),
                esc(e.request_id.as_deref().unwrap_or("")),
                esc(e.reason.as_deref().unwrap_or("")),
                action,
            ]
        })
        .collect();
    out.push_str(&table("history", &["When (UTC)", "Type", "Coins", "Balance after", "Held", "Event", "Request id", "Reason", ""], &rows));
    let mut pager = String::from("<nav class=\"pager\" aria-label=\"History pages\">");
    if q.get("cursor").is_some_and(|c| !c.is_empty()) {
        let _ = write!(pager, "<a href=\"/dashboard/users?userId={}\">Newest</a>", url_part(user));
    }
    if let Some(next) = &history.next_cursor {
        let _ = write!(pager, "<a href=\"/dashboard/users?userId={}&amp;cursor={}\" rel=\"next\">Older entries →</a>", url_part(user), url_part(next));
    }
    pager.push_str("</nav>");
    out.push_str(&pager);
    Ok(())
}

/// Tier changes the user page lists, newest first.
const TIER_CHANGES_SHOWN: i64 = 10;

/// The member's status tier: where they are, how far to the next, until when, any floor, and
/// their latest tier changes.
async fn tier_section(state: &AppState, company: &CompanyId, user: &UserId, tier: &MemberTierView) -> Result<String, ApiError> {
    let mut out = String::from("<h2>Status tier</h2>");
    let scheme = state.store.tiers(company).await?;
    // The next tier by its name, as members see it.
    let name_of = |code: &str| scheme.as_ref().and_then(|s| s.scheme.tiers.iter().find(|t| t.code == code)).map_or_else(|| code.to_owned(), |t| t.name.clone());
    let progress = match (&tier.next_tier, tier.coins_to_next_tier) {
        (Some(next), Some(left)) => {
            let goal = tier.qualifying_coins + left;
            let next = name_of(next);
            format!(
                "<progress id=\"tier-progress\" value=\"{q}\" max=\"{goal}\" aria-label=\"Qualifying coins towards {n}\"></progress>\
                 <span class=\"note\">{qt} of {gt} qualifying coins: {lt} more for {n}</span>",
                q = tier.qualifying_coins,
                qt = grouped(i128::from(tier.qualifying_coins)),
                gt = grouped(i128::from(goal)),
                lt = grouped(i128::from(left)),
                n = esc(&next),
            )
        }
        _ => format!("<span class=\"note\">{} qualifying coins: the top tier</span>", grouped(i128::from(tier.qualifying_coins))),
    };
    let kept = tier.expires_at.as_deref().map_or("kept for good".to_owned(), |at| format!("evaluated again at {at} (UTC)"));
    let floor = tier.floor.as_deref().map_or(String::new(), |f| {
        format!("<span class=\"note\">never below {} (staff floor: {})</span>", esc(f), esc(tier.floor_reason.as_deref().unwrap_or("")))
    });
    let _ = write!(
        out,
        "<section class=\"cards\" aria-label=\"Status tier\"><div class=\"card tier\" id=\"user-tier\"><span class=\"label\">Tier</span>\
         <span class=\"value\" data-code=\"{code}\">{name}</span><span class=\"note\">earns ×{times} · {kept}</span>{floor}{progress}</div></section>",
        code = esc(&tier.code),
        name = esc(&tier.name),
        times = esc(&times(tier.earn_multiplier_bps)),
        kept = esc(&kept),
    );
    let changes = state.store.tier_history(company, user, TIER_CHANGES_SHOWN).await?;
    if !changes.is_empty() {
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|c| {
                vec![
                    esc(&crate::clock::rfc3339(c.at)),
                    esc(&c.kind),
                    esc(c.from.as_deref().unwrap_or("")),
                    esc(&c.to),
                    num(&grouped(i128::from(c.qualifying))),
                    esc(&c.cause),
                    esc(c.request_id.as_deref().unwrap_or("")),
                ]
            })
            .collect();
        out.push_str(&table("tier-changes", &["When (UTC)", "Change", "From", "To", "Qualifying coins", "Why", "Request"], &rows));
    }
    Ok(out)
}

/// A multiplier in basis points as people read it: `1.5`, `2`, `1.25`.
fn times(bps: i64) -> String {
    let text = format!("{}.{:04}", bps / 10_000, bps % 10_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

pub async fn page(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    render(&state, &session, &q, None).await
}

/// The confirmation step: what will be reversed, and a form that does it.
pub async fn confirm_reverse(session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map_or("", String::as_str);
    let fresh = format!("DASH-REV-{}", hex::encode(crate::crypto::random_bytes::<8>()));
    let body = format!(
        "<p><a href=\"/dashboard/users?userId={u}\">← {ue}</a></p><h1>Reverse {r}?</h1>\
         <p>This takes back the coins of <strong>{r}</strong> (an allocation or a credit) or gives back the coins it took (a redemption or a debit), \
         for user <strong>{ue}</strong> of company <strong>{c}</strong>. It is written to the ledger as a reversal and cannot be undone.</p>\
         <form method=\"post\" action=\"/dashboard/users/reverse\" id=\"confirm-reverse\">{csrf}\
         <input type=\"hidden\" name=\"userId\" value=\"{ue}\"><input type=\"hidden\" name=\"companyId\" value=\"{c}\">\
         <input type=\"hidden\" name=\"originalRequestId\" value=\"{r}\"><input type=\"hidden\" name=\"requestId\" value=\"{fresh}\">\
         <fieldset><legend>Part of it (optional; leave both empty to return all that remains)</legend>{coins}{minor}</fieldset>\
         <button type=\"submit\" class=\"danger\">Reverse it</button> <a href=\"/dashboard/users?userId={u}\">Cancel</a></form>",
        u = url_part(get("userId")),
        ue = esc(get("userId")),
        r = esc(get("requestId")),
        c = esc(get("companyId")),
        csrf = csrf_field(&session.csrf),
        coins = input("Coins to return", "coins", "", "inputmode=\"numeric\" pattern=\"[0-9]*\" autocomplete=\"off\""),
        minor = input(
            "Or the refunded amount, in minor units (allocations that recorded a purchase value)",
            "amountMinor",
            "",
            "inputmode=\"numeric\" pattern=\"[0-9]*\" autocomplete=\"off\""
        ),
    );
    super::page(Some(&session), "Confirm reversal", "users", &body)
}

pub async fn reverse(State(state): State<AppState>, session: Session, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let q = HashMap::from([("userId".to_owned(), form.get("userId").to_owned())]);
    let mut body: serde_json::Map<String, Value> =
        ["companyId", "requestId", "originalRequestId"].iter().map(|k| ((*k).to_owned(), Value::from(form.get(k)))).collect();
    // A part, when asked for: a number as typed (anything else is refused by the API's own rule).
    for k in ["coins", "amountMinor"] {
        let typed = form.get(k).trim();
        if !typed.is_empty() {
            body.insert(k.to_owned(), typed.parse::<i64>().map_or_else(|_| Value::from(typed), Value::from));
        }
    }
    let done = match ReverseRequest::from_object(&body).map_err(ApiError::validation) {
        Ok(request) => ledger::reverse(State(state.clone()), caller(&session), Json(request)).await,
        Err(e) => Err(e),
    };
    let message = match done {
        Ok(res) => {
            let bytes = axum::body::to_bytes(res.into_body(), 64 * 1024).await.unwrap_or_default();
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let p = &answer["payload"];
            notice(
                true,
                &format!(
                    "Reversed {}: {} coins; {} of its coins remain to return; the balance is now {}.",
                    form.get("originalRequestId"),
                    p["coins"],
                    p["coinsRemaining"],
                    p["balance"]
                ),
            )
        }
        Err(e) => refusal(&e),
    };
    render(&state, &session, &q, Some(message)).await
}

/// The confirmation step of an adjustment: what will be written, and a form that writes it.
pub async fn confirm_adjust(session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map_or("", |v| v.trim());
    let fresh = format!("DASH-ADJ-{}", hex::encode(crate::crypto::random_bytes::<8>()));
    let coins = get("coins");
    let what = match coins.parse::<i64>() {
        Ok(n) if n < 0 => format!("Take <strong>{}</strong> coins from", grouped(i128::from(n).abs())),
        Ok(n) => format!("Add <strong>{}</strong> coins to", grouped(i128::from(n))),
        Err(_) => format!("Adjust by <strong>{}</strong> coins", esc(coins)),
    };
    let hidden = |name: &str| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", esc(get(name)));
    let body = format!(
        "<p><a href=\"/dashboard/users?userId={u}\">← {ue}</a></p><h1>Adjust {ue}?</h1>\
         <p>{what} user <strong>{ue}</strong> of company <strong>{c}</strong>, for <q>{reason}</q>{expiry}{short}. \
         It is written to the ledger as an adjustment, with your client id; a reversal can return it later.</p>\
         <form method=\"post\" action=\"/dashboard/users/adjust\" id=\"confirm-adjust\">{csrf}{h_user}{h_company}{h_coins}{h_reason}{h_validity}{h_short}\
         <input type=\"hidden\" name=\"requestId\" value=\"{fresh}\">\
         <button type=\"submit\" class=\"danger\">Adjust</button> <a href=\"/dashboard/users?userId={u}\">Cancel</a></form>",
        u = url_part(get("userId")),
        ue = esc(get("userId")),
        c = esc(get("companyId")),
        reason = esc(get("reason")),
        expiry = if get("validityDays").is_empty() { String::new() } else { format!(", expiring {} days after", esc(get("validityDays"))) },
        short = match get("onShortfall") {
            "CAP" => ", taking no more than the user has",
            "NEGATIVE" => ", what the user does not have becoming debt",
            _ => "",
        },
        csrf = csrf_field(&session.csrf),
        h_user = hidden("userId"),
        h_company = hidden("companyId"),
        h_coins = hidden("coins"),
        h_reason = hidden("reason"),
        h_validity = hidden("validityDays"),
        h_short = hidden("onShortfall"),
    );
    super::page(Some(&session), "Confirm adjustment", "users", &body)
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
    // Numbers as typed (anything else is refused by the API's own rule); empty means not given.
    for k in ["coins", "validityDays"] {
        let typed = form.get(k).trim();
        if !typed.is_empty() {
            body.insert(k.to_owned(), typed.parse::<i64>().map_or_else(|_| Value::from(typed), Value::from));
        }
    }
    // The shortfall rule applies to debits only; REJECT is the default either way.
    let short = form.get("onShortfall").trim();
    let debit = form.get("coins").trim().starts_with('-');
    if debit && !short.is_empty() && short != "REJECT" {
        body.insert("onShortfall".to_owned(), Value::from(short));
    }
    let done = match AdjustRequest::from_object(&body).map_err(ApiError::validation) {
        Ok(request) => ledger::adjust(State(state.clone()), caller(&session), Json(request)).await,
        Err(e) => Err(e),
    };
    let message = match done {
        Ok(res) => {
            let bytes = axum::body::to_bytes(res.into_body(), 64 * 1024).await.unwrap_or_default();
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let p = &answer["payload"];
            let short = p["coinsShort"].as_i64().filter(|n| *n > 0).map(|n| format!(" ({n} short: the user did not have them)")).unwrap_or_default();
            notice(true, &format!("Adjusted {}: {} coins{short}; the balance is now {}.", form.get("userId"), p["coins"], p["balance"]))
        }
        Err(e) => refusal(&e),
    };
    render(&state, &session, &q, Some(message)).await
}
