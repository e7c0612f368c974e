//! Exports: the ledger and the balances of a company as CSV (RFC 4180) or JSON lines, written
//! row by row. What a file looks like is decided here — the columns and their order, how a cell
//! is written, the CSV-injection guard, the window a ledger export may cover — and the edge only
//! streams pages of rows through it.

use std::fmt::Write as _;

/// Days one ledger export may cover.
pub const WINDOW_DAYS_MAX: i64 = 366;
/// How far behind now a ledger export ends, so that no entry can still commit inside it.
pub const SETTLE_MS: i64 = 5_000;
/// Rows fetched and written per page (what a streaming export holds in memory at once).
pub const PAGE_ROWS: i64 = 1_000;

const DAY_MS: i64 = 86_400_000;

pub const LEDGER_COLUMNS: [&str; 20] = [
    "entryId",
    "createdAt",
    "effectiveAt",
    "companyId",
    "userId",
    "type",
    "coins",
    "pendingCoins",
    "balanceAfter",
    "event",
    "requestId",
    "originalRequestId",
    "orderId",
    "coinConfigId",
    "amountMinor",
    "currency",
    "activatesAt",
    "expiresAt",
    "reason",
    "clientId",
];

pub const BALANCE_COLUMNS: [&str; 12] = [
    "companyId",
    "userId",
    "balance",
    "pendingBalance",
    "debt",
    "lifetimeEarned",
    "lifetimeRedeemed",
    "lifetimeExpired",
    "tier",
    "nextExpiryAt",
    "nextExpiryCoins",
    "asOf",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "jsonl" => Some(Self::Jsonl),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8; header=present",
            Self::Jsonl => "application/jsonl; charset=utf-8",
        }
    }
}

/// One cell: text, a whole number or an instant (Unix ms, written RFC 3339 UTC); `None` is empty
/// (CSV) or `null` (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Time(Option<i64>),
}

/// The window `[from, to)` of a ledger export: `to` is clamped to `now − 5 s` (what is returned
/// as the effective end), and at most 366 days are covered.
pub fn window(from_ms: i64, to_ms: i64, now_ms: i64) -> Result<(i64, i64), String> {
    if from_ms >= to_ms {
        return Err("from must be before to".into());
    }
    if to_ms - from_ms > WINDOW_DAYS_MAX * DAY_MS {
        return Err(format!("an export covers at most {WINDOW_DAYS_MAX} days"));
    }
    let to = to_ms.min(now_ms - SETTLE_MS);
    Ok((from_ms, to.max(from_ms)))
}

/// A text cell as CSV writes it: quoted when it holds a comma, a quote or a line break (quotes
/// doubled), and with a leading `'` when it starts with `=`, `+`, `-`, `@`, a tab or a carriage
/// return, so a spreadsheet never reads it as a formula (OWASP's CSV-injection guidance).
pub fn csv_text(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() };
    if guarded.contains([',', '"', '\r', '\n']) { format!("\"{}\"", guarded.replace('"', "\"\"")) } else { guarded }
}

/// The header line of a CSV file.
pub fn csv_header(columns: &[&str]) -> String {
    format!("{}\r\n", columns.join(","))
}

/// One CSV record, ending in CRLF.
pub fn csv_row(cells: &[Cell]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match cell {
            Cell::Text(Some(t)) => out.push_str(&csv_text(t)),
            Cell::Int(Some(n)) => {
                let _ = write!(out, "{n}");
            }
            Cell::Time(Some(ms)) => out.push_str(&crate::clock::rfc3339(*ms)),
            _ => {}
        }
    }
    out.push_str("\r\n");
    out
}

/// One JSON line: an object of the columns in their order, ending in LF.
pub fn json_row(columns: &[&str], cells: &[Cell]) -> String {
    let values = cells.iter().map(|cell| match cell {
        Cell::Text(t) => t.clone().map_or(serde_json::Value::Null, serde_json::Value::String),
        Cell::Int(n) => n.map_or(serde_json::Value::Null, serde_json::Value::from),
        Cell::Time(t) => t.map_or(serde_json::Value::Null, |ms| serde_json::Value::String(crate::clock::rfc3339(ms))),
    });
    json_object(columns.iter().copied().zip(values))
}

/// The last line of a complete JSON-lines export (a file without it was cut short).
pub fn json_end(rows: u64, last: serde_json::Value, last_name: &str) -> String {
    json_object([("end", serde_json::Value::Bool(true)), ("rows", serde_json::Value::from(rows)), (last_name, last)].into_iter())
}

/// `{"k":v,...}` with the keys in the order given, and a line feed.
fn json_object<'a>(fields: impl Iterator<Item = (&'a str, serde_json::Value)>) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{value}", serde_json::Value::String(name.to_owned()));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cells_are_quoted_when_needed_and_guarded_against_formulas() {
        assert_eq!(csv_text("plain"), "plain");
        assert_eq!(csv_text("a,b"), "\"a,b\"");
        assert_eq!(csv_text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_text("two\nlines"), "\"two\nlines\"");
        for formula in ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_text(formula).trim_matches('"').starts_with('\''), "{formula:?}");
        }
        assert_eq!(csv_text("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn rows_keep_numbers_bare_and_end_in_crlf() {
        let row = csv_row(&[Cell::Int(Some(-5)), Cell::Text(None), Cell::Time(Some(0)), Cell::Text(Some("-x".into()))]);
        assert_eq!(row, "-5,,1970-01-01T00:00:00Z,'-x\r\n");
        let line = json_row(&["b", "a", "c"], &[Cell::Int(Some(1)), Cell::Text(Some("q\"".into())), Cell::Time(Some(0))]);
        assert_eq!(line, "{\"b\":1,\"a\":\"q\\\"\",\"c\":\"1970-01-01T00:00:00Z\"}\n", "columns in order");
        assert_eq!(json_end(3, serde_json::Value::from(9), "lastEntryId"), "{\"end\":true,\"rows\":3,\"lastEntryId\":9}\n");
    }

    #[test]
    fn the_window_is_at_most_366_days_and_ends_before_now() {
        let day = DAY_MS;
        assert_eq!(window(0, 10 * day, 100 * day), Ok((0, 10 * day)));
        assert_eq!(window(0, 10 * day, 5 * day), Ok((0, 5 * day - SETTLE_MS)));
        assert!(window(0, 367 * day, 1_000 * day).is_err());
        assert!(window(5, 5, 1_000 * day).is_err());
    }
}
