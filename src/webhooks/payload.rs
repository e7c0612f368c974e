//! What an endpoint receives: `{"type","timestamp","data"}`, `data` the ledger entry as the
//! history shows it (for `webhook.test`, the webhook it tests). Described in the API document as
//! `WebhookEvent`.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::http::wire::users::EntryView;
use crate::store::{Delivery, EventData};

/// The body of every webhook request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    /// `coins.allocated`, `coins.redeemed`, `coins.reversed`, `coins.expired` or `webhook.test`.
    #[serde(rename = "type")]
    #[schema(example = "coins.allocated")]
    pub kind: &'static str,
    /// When the event happened (the entry was committed), RFC 3339 UTC.
    pub timestamp: String,
    pub data: EventBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EventBody {
    Entry(EntryData),
    Test(TestData),
}

/// The ledger entry an event reports; fields that do not apply are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryData {
    /// The entry's id in the ledger (`GET /api/v0/coins/transactions` shows the same entries).
    pub entry_id: i64,
    pub user_id: String,
    pub company_id: String,
    /// Signed: credits positive, debits negative.
    pub coins: i64,
    pub balance_after: i64,
    pub event: Option<String>,
    pub request_id: Option<String>,
    pub coin_config_id: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// The data of a `webhook.test` event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestData {
    pub webhook_id: String,
    pub company_id: String,
}

impl From<&EventData> for EntryData {
    fn from(e: &EventData) -> Self {
        let entry = EntryView::from(e.entry.clone());
        Self {
            entry_id: entry.entry_id,
            user_id: e.user_id.clone(),
            company_id: e.company_id.clone(),
            coins: entry.coins,
            balance_after: entry.balance_after,
            event: entry.event,
            request_id: entry.request_id,
            coin_config_id: entry.coin_config_id,
            created_at: entry.created_at,
            expires_at: entry.expires_at,
        }
    }
}

impl WebhookEvent {
    pub fn of(d: &Delivery) -> Self {
        let data = match &d.data {
            Some(entry) => EventBody::Entry(entry.into()),
            None => EventBody::Test(TestData { webhook_id: d.webhook_id.clone(), company_id: d.company_id.clone() }),
        };
        Self { kind: d.event_type.as_str(), timestamp: rfc3339(d.created_at), data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhooks::EventType;

    #[test]
    fn an_allocation_event_has_the_documented_shape() {
        let d = Delivery {
            message_seq: 7,
            webhook_id: "wh_1".into(),
            url: "https://example.com".into(),
            secret_sealed: String::new(),
            previous_sealed: None,
            event_type: EventType::Allocated,
            attempts: 0,
            company_id: "C1".into(),
            data: Some(EventData {
                user_id: "U1".into(),
                company_id: "C1".into(),
                entry: crate::store::LedgerEntry {
                    entry_id: 42,
                    kind: "ALLOCATE".into(),
                    coins: 50,
                    balance_after: 150,
                    event: Some("REFERRAL".into()),
                    request_id: Some("R1".into()),
                    coin_config_id: Some("WCC1".into()),
                    created_at_ms: 0,
                    expires_at_ms: None,
                    extra: Default::default(),
                },
            }),
            created_at: 0,
        };
        let body = serde_json::to_value(WebhookEvent::of(&d)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type":"coins.allocated","timestamp":"1970-01-01T00:00:00Z","data":{"entryId":42,"userId":"U1","companyId":"C1","coins":50,
                "balanceAfter":150,"event":"REFERRAL","requestId":"R1","coinConfigId":"WCC1","createdAt":"1970-01-01T00:00:00Z","expiresAt":null}})
        );
    }
}
