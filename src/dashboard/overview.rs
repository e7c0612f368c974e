//! The overview: coins issued, redeemed, reversed and expired per day over 30 or 90 days, by event
//! and by company, with totals; the outstanding liability and its value at the coin value in
//! force; coins expiring in the next 30 days. Read from the daily roll-up and the open lots, never
//! by scanning the ledger.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::response::Response;

use super::charts::{self, Series};
use super::html::{Input, Markup, Render, html, num, select, table, text};
use super::{Body, Session};
use crate::domain::CompanyId;
use crate::domain::report::{self, Movements, day_of, grouped, money};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::CompanyScope;

const SERIES: [(&str, &str); 5] = [("issued", "Issued"), ("redeemed", "Redeemed"), ("reversed", "Reversed"), ("expired", "Expired"), ("adjusted", "Adjusted")];

fn values(m: &Movements) -> [i64; 5] {
    [m.issued, m.redeemed, m.reversed, m.expired, m.adjusted]
}

fn series_of(rows: &[Movements]) -> Vec<Series<'static>> {
    SERIES.iter().enumerate().map(|(i, (name, label))| Series { name, label, values: rows.iter().map(|m| values(m)[i]).collect() }).collect()
}

/// `YYYY-MM-DD` of a day number.
pub fn date_of_day(day: i64) -> String {
    crate::clock::rfc3339(day * report::DAY_MS).get(..10).unwrap_or_default().to_owned()
}

pub async fn page(State(state): State<AppState>, session: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut body = Body::default();
    body.show(render(&state, &session, &q).await);
    super::page(Some(&session), "Overview", "overview", body)
}

async fn render(state: &AppState, session: &Session, q: &HashMap<String, String>) -> Result<Markup, ApiError> {
    let principal = &session.auth.0;
    let days: i64 = if q.get("days").map(String::as_str) == Some("90") { 90 } else { 30 };
    let company = match q.get("companyId").map(String::as_str).filter(|c| !c.is_empty()) {
        Some(raw) => {
            let c = CompanyId::parse(raw).map_err(|_| ApiError::validation(format!("companyId must be {}", CompanyId::RULE)))?;
            session.auth.require_company(&c)?;
            Some(c)
        }
        None => None,
    };
    let scope: CompanyScope = match (&company, principal.admin) {
        (Some(c), _) => Some(vec![c.clone()]),
        (None, true) => None,
        (None, false) => Some(principal.companies.clone()),
    };
    let now = state.clock.now_ms();
    let today = day_of(now);
    let first = today - days + 1;
    let totals = state.store.daily_totals(&scope, first, today).await?;
    let outstanding = state.store.outstanding(&scope, now).await?;

    let mut per_day: Vec<Movements> = vec![Movements::default(); usize::try_from(days).unwrap_or(30)];
    let mut period = Movements::default();
    for (day, kind, moved) in &totals.by_day {
        if let Some(slot) = usize::try_from(day - first).ok().and_then(|i| per_day.get_mut(i)) {
            slot.add(*kind, *moved);
        }
        period.add(*kind, *moved);
    }
    let keys: Vec<String> = (first..=today).map(date_of_day).collect();
    let grouped_by = |rows: &[(String, crate::domain::ledger::EntryKind, report::Moved)]| {
        let mut by: BTreeMap<String, Movements> = BTreeMap::new();
        for (key, kind, moved) in rows {
            by.entry(key.clone()).or_default().add(*kind, *moved);
        }
        let mut list: Vec<(String, Movements)> = by.into_iter().collect();
        list.sort_by(|a, b| b.1.issued.cmp(&a.1.issued).then_with(|| a.0.cmp(&b.0)));
        list.truncate(12);
        list
    };
    let by_event = grouped_by(&totals.by_event);
    let by_company = grouped_by(&totals.by_company);

    // The liability, valued per company at its coin value, summed per currency.
    let mut liability_rows = Vec::new();
    let mut value_by_currency: BTreeMap<String, i128> = BTreeMap::new();
    let (mut held, mut soon, mut owed, mut debtors) = (0i64, 0i64, 0i64, 0i64);
    for o in &outstanding {
        let value = state.store.coin_value(Some(&o.company)).await?;
        let minor = i128::from(o.balance) * i128::from(value.minor_units_per_coin);
        *value_by_currency.entry(value.currency.clone()).or_default() += minor;
        held = held.saturating_add(o.balance);
        soon = soon.saturating_add(o.expiring_soon);
        owed = owed.saturating_add(o.debt);
        debtors = debtors.saturating_add(o.users_in_debt);
        liability_rows.push(vec![
            text(o.company.as_str()),
            num(grouped(i128::from(o.balance))),
            num(money(&value.currency, minor)),
            num(grouped(i128::from(o.expiring_soon))),
            num(money(&value.currency, i128::from(o.expiring_soon) * i128::from(value.minor_units_per_coin))),
            num(grouped(i128::from(o.debt))),
        ]);
    }
    let value_text =
        if value_by_currency.is_empty() { "—".to_owned() } else { value_by_currency.iter().map(|(c, m)| money(c, *m)).collect::<Vec<_>>().join(" + ") };

    let scope_name =
        company.as_ref().map_or_else(|| if principal.admin { "all companies".to_owned() } else { "your companies".to_owned() }, |c| format!("company {c}"));
    let card = |id: &str, label: &str, value: &str, note: &str| {
        html! { div class="card" id=(id) { span class="label" { (label) } span class="value" { (value) } span class="note" { (note) } } }
    };
    let chosen = company.as_ref().map(|c| c.to_string()).or_else(|| (principal.companies.len() == 1).then(|| principal.companies[0].to_string()));
    let tiers = match chosen.as_deref().and_then(|c| CompanyId::parse(c).ok()) {
        Some(c) => tier_distribution(state, &c).await?,
        None => None,
    };
    let (event_keys, event_rows): (Vec<String>, Vec<Movements>) = by_event.into_iter().unzip();
    let (company_keys, company_rows): (Vec<String>, Vec<Movements>) = by_company.into_iter().unzip();
    Ok(html! {
        h1 { "Overview " small { (scope_name) " · last " (days) " days" } }
        (filters(principal, company.as_ref(), days))
        section class="cards" aria-label="Totals" {
            @for (i, (name, label)) in SERIES.iter().enumerate() {
                (card(&format!("total-{name}"), label, &grouped(i128::from(values(&period)[i])), &format!("coins, last {days} days")))
            }
            (card("liability", "Outstanding", &grouped(i128::from(held)), &value_text))
            (card("expiring", "Expiring in 30 days", &grouped(i128::from(soon)), "coins"))
            (card("debt", "Owed (debt)", &grouped(i128::from(owed)), &format!("coins, by {debtors} users")))
        }
        (charts::lines("chart-daily", &format!("Coins per day, last {days} days (UTC)"), &keys, &series_of(&per_day)))
        (charts::bars("chart-events", "By event", &event_keys, &series_of(&event_rows)))
        (charts::bars("chart-companies", "By company", &company_keys, &series_of(&company_rows)))
        h2 { "Liability" }
        @if liability_rows.is_empty() {
            p class="hint" { "No coins outstanding." }
        } @else {
            (table("liability", &["Company", "Coins held", "Value", "Expiring in 30 days", "Value", "Owed (debt)"], &liability_rows))
        }
        @if let Some(tiers) = tiers { (tiers) }
        (super::exports::forms(chosen.as_deref().unwrap_or(""), &date_of_day(today)))
    })
}

/// How many of the company's members are in each tier (nothing when it has no scheme).
async fn tier_distribution(state: &AppState, company: &CompanyId) -> Result<Option<Markup>, ApiError> {
    let Some(stored) = state.store.tiers(company).await? else { return Ok(None) };
    let scheme = &stored.scheme;
    let mut members = vec![0i64; scheme.tiers.len()];
    for count in state.store.tier_counts(company).await? {
        let placed = crate::domain::tiers::TierState { code: count.code, floor: count.floor, ..Default::default() };
        members[scheme.current(&placed)] += count.members;
    }
    let all: i64 = members.iter().sum();
    let rows: Vec<Vec<Markup>> = scheme
        .tiers
        .iter()
        .zip(&members)
        .map(|(t, n)| {
            let share = if all == 0 { 0 } else { n * 1000 / all };
            vec![
                text(&t.name),
                text(&t.code),
                num(grouped(i128::from(t.threshold))),
                num(grouped(i128::from(*n))),
                num(format!("{}.{} %", share / 10, share % 10)),
            ]
        })
        .collect();
    let keys: Vec<String> = scheme.tiers.iter().map(|t| t.name.clone()).collect();
    let series = [Series { name: "members", label: "Members", values: members.clone() }];
    Ok(Some(html! {
        h2 { "Members by tier " small { (company.as_str()) } }
        (charts::bars("chart-tiers", "Members by tier", &keys, &series))
        (table("tiers", &["Tier", "Code", "From (qualifying coins)", "Members", "Share"], &rows))
    }))
}

/// The period and company pickers (a GET form: no state changes).
fn filters(principal: &crate::domain::Principal, company: Option<&CompanyId>, days: i64) -> Markup {
    let current = company.map_or("", |c| c.as_str());
    let picker = if principal.admin {
        Input::new("Company (empty: all)", "companyId").value(current).off().render()
    } else {
        let mut options = vec![("", "All yours")];
        options.extend(principal.companies.iter().map(|c| (c.as_str(), c.as_str())));
        select("Company", "companyId", &options, current)
    };
    let period = select("Period", "days", &[("30", "Last 30 days"), ("90", "Last 90 days")], &days.to_string());
    html! { form method="get" action="/dashboard" class="filters" { (picker) (period) button type="submit" { "Show" } } }
}
