//! The queries of the exports: `GET /api/v0/coins/exports/ledger` and `.../balances`.

use std::collections::HashMap;

use super::{FromQuery, query_company};
use crate::domain::CompanyId;
use crate::domain::export::Format;

/// `?companyId=&from=&to=&format=&afterEntryId=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerExportQuery {
    #[param(rename = "companyId", value_type = CompanyId)]
    pub company_id: CompanyId,
    /// Entries created at or after this instant (RFC 3339).
    #[param(rename = "from", value_type = String, format = DateTime)]
    pub from_ms: i64,
    /// Entries created before this instant (RFC 3339; at most 366 days after `from`, clamped to
    /// now − 5 s).
    #[param(rename = "to", value_type = String, format = DateTime)]
    pub to_ms: i64,
    /// `csv` (the default) or `jsonl`.
    #[param(value_type = Option<String>, pattern = "^(csv|jsonl)$")]
    pub format: Format,
    /// Resume a broken download: entries after this id only.
    #[param(rename = "afterEntryId", value_type = Option<i64>, minimum = 0)]
    pub after_entry_id: i64,
}

/// `?companyId=&asOf=&format=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalancesExportQuery {
    #[param(rename = "companyId", value_type = CompanyId)]
    pub company_id: CompanyId,
    /// Now when absent (or within the last five seconds, or later). A past instant is read back
    /// from the ledger: each user's row as an export at that instant would have given it.
    #[param(rename = "asOf", value_type = Option<String>, format = DateTime)]
    pub as_of_ms: Option<i64>,
    /// `csv` (the default) or `jsonl`.
    #[param(value_type = Option<String>, pattern = "^(csv|jsonl)$")]
    pub format: Format,
}

fn instant(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, String> {
    q.get(name).map(|v| crate::clock::parse_rfc3339(v).ok_or_else(|| format!("{name} must be an RFC 3339 time such as 2026-11-01T00:00:00Z"))).transpose()
}

fn format(q: &HashMap<String, String>) -> Result<Format, String> {
    q.get("format").map_or(Ok(Format::Csv), |f| Format::parse(f).ok_or_else(|| "format must be csv or jsonl".to_owned()))
}

impl FromQuery for LedgerExportQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        let after_entry_id = match q.get("afterEntryId") {
            None => 0,
            Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or("afterEntryId must be a whole number, 0 or more")?,
        };
        Ok(Self {
            company_id: query_company(q)?,
            from_ms: instant(q, "from")?.ok_or("from is required")?,
            to_ms: instant(q, "to")?.ok_or("to is required")?,
            format: format(q)?,
            after_entry_id,
        })
    }
}

impl FromQuery for BalancesExportQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_company(q)?, as_of_ms: instant(q, "asOf")?, format: format(q)? })
    }
}
