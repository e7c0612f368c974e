//! Any bytes as a query string, read into every query type: never a panic.
#![no_main]

use std::collections::HashMap;

use coins::http::wire::FromQuery;
use coins::http::wire::coins::{BalanceQuery, CoinValueQuery};
use coins::http::wire::configs::ConfigListQuery;
use coins::http::wire::exports::{BalancesExportQuery, LedgerExportQuery};
use coins::http::wire::users::{PAGE_LIMIT_MAX, TransactionsQuery};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params: HashMap<String, String> = form_urlencoded::parse(data).into_owned().collect();
    let _ = BalanceQuery::from_query(&params);
    let _ = CoinValueQuery::from_query(&params);
    let _ = coins::http::wire::reminders::ReminderQuery::from_query(&params);
    let _ = ConfigListQuery::from_query(&params);
    if let Ok(q) = LedgerExportQuery::from_query(&params) {
        assert!(q.after_entry_id >= 0);
    }
    let _ = BalancesExportQuery::from_query(&params);
    if let Ok(q) = TransactionsQuery::from_query(&params) {
        assert!((1..=PAGE_LIMIT_MAX).contains(&q.limit));
        assert!(q.before_entry_id.is_none_or(|id| id > 0));
    }
});
