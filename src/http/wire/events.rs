//! What an endpoint receives: `{"type","timestamp","data"}`, `data` the ledger entry as the
//! history shows it (for `coins.expiring`, the coins that expire soon; for `webhook.test`, the
//! webhook it tests). Described in the API document as `WebhookEvent`.

use serde::Serialize;

use super::users::EntryView;
use crate::clock::rfc3339;
use crate::store::{Delivery, EventData, MessageData};

/// The body of every webhook request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    /// `coins.allocated`, `coins.pending`, `coins.activated`, `coins.canceled`, `coins.redeemed`,
    /// `coins.reversed`, `coins.expired`, `coins.adjusted`, `coins.expiring`, `tier.upgraded`,
    /// `tier.downgraded`, `tier.renewed` or `webhook.test`.
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
    Entry(Box<EntryData>),
    Expiring(ExpiringData),
    Tier(TierData),
    Test(TestData),
}

/// The data of a `tier.upgraded`, `tier.downgraded` or `tier.renewed` event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierData {
    pub user_id: String,
    /// The tier code before (the first tier's for a member never placed).
    pub from_tier: Option<String>,
    pub to_tier: String,
    /// The member's qualifying coins when the change was made.
    pub qualifying_coins: i64,
    /// When the new tier is evaluated next; `null`: kept for good.
    pub tier_expires_at: Option<String>,
    /// `QUALIFYING_COINS` (an allocation, activation or qualifying adjustment raised them),
    /// `RETURN` (the upgrading allocation was returned), `EVALUATION` (the retention was up),
    /// `MANUAL_FLOOR` or `SCHEME_CHANGE`.
    pub cause: String,
    /// The request that caused it (`QUALIFYING_COINS`, `RETURN`), else `null`.
    pub request_id: Option<String>,
}

/// The data of a `coins.expiring` reminder: a user's coins that expire at one instant, counted
/// when the reminder was sent.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringData {
    pub user_id: String,
    /// Unspent, spendable coins expiring at `expiresAt`.
    pub coins: i64,
    pub expires_at: String,
    /// Whole days left until `expiresAt`, rounded up.
    pub days_left: i64,
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
    /// Held coins this entry moved (signed), and the user's held coins after it.
    pub pending_coins: i64,
    pub pending_after: i64,
    /// When it took effect, if not when it was written.
    pub effective_at: Option<String>,
    pub order_id: Option<String>,
    pub amount_minor: Option<i64>,
    /// Returns: the allocation or redemption returned.
    pub original_request_id: Option<String>,
    pub reason: Option<String>,
    pub client_id: Option<String>,
    /// Returns: whether coins of the original remain after this one (`coinsRemaining` > 0);
    /// `null` for other entries.
    pub partial: Option<bool>,
    pub coins_remaining: Option<i64>,
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
            pending_coins: entry.pending_coins,
            pending_after: entry.pending_after,
            effective_at: entry.effective_at,
            order_id: entry.order_id,
            amount_minor: entry.amount_minor,
            original_request_id: entry.original_request_id,
            reason: entry.reason,
            client_id: entry.client_id,
            partial: e.coins_remaining.map(|n| n > 0),
            coins_remaining: e.coins_remaining,
        }
    }
}

/// The body a delivery sends: what the webhook worker is given to encode each message with (the
/// worker knows how to deliver, not what an event looks like).
pub fn body(d: &Delivery) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&WebhookEvent::of(d))
}

impl WebhookEvent {
    pub fn of(d: &Delivery) -> Self {
        let data = match &d.data {
            MessageData::Entry(entry) => EventBody::Entry(Box::new(entry.as_ref().into())),
            MessageData::Expiring(r) => {
                EventBody::Expiring(ExpiringData { user_id: r.user_id.clone(), coins: r.coins, expires_at: rfc3339(r.expires_at), days_left: r.days_left })
            }
            MessageData::Tier(t) => EventBody::Tier(TierData {
                user_id: t.user_id.clone(),
                from_tier: t.from_tier.clone(),
                to_tier: t.to_tier.clone(),
                qualifying_coins: t.qualifying_coins,
                tier_expires_at: t.tier_expires_at.map(rfc3339),
                cause: t.cause.clone(),
                request_id: t.request_id.clone(),
            }),
            MessageData::Test => EventBody::Test(TestData { webhook_id: d.webhook_id.clone(), company_id: d.company_id.clone() }),
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
            data: MessageData::Entry(Box::new(EventData {
                user_id: "U1".into(),
                company_id: "C1".into(),
                entry: crate::store::LedgerEntry {
                    entry_id: 42,
                    kind: crate::domain::ledger::EntryKind::Allocate,
                    coins: 50,
                    balance_after: 150,
                    event: Some("REFERRAL".into()),
                    request_id: Some("R1".into()),
                    coin_config_id: Some("WCC1".into()),
                    created_at_ms: 0,
                    expires_at_ms: None,
                    extra: Default::default(),
                },
                coins_remaining: None,
            })),
            created_at: 0,
        };
        // Every key, in order: the keys of the first version, then those of commerce-grade earning.
        assert_eq!(
            serde_json::to_string(&WebhookEvent::of(&d)).unwrap(),
            r#"{"type":"coins.allocated","timestamp":"1970-01-01T00:00:00Z","data":{"entryId":42,"userId":"U1","companyId":"C1","coins":50,"#.to_owned()
                + r#""balanceAfter":150,"event":"REFERRAL","requestId":"R1","coinConfigId":"WCC1","createdAt":"1970-01-01T00:00:00Z","expiresAt":null,"#
                + r#""pendingCoins":0,"pendingAfter":0,"effectiveAt":null,"orderId":null,"amountMinor":null,"originalRequestId":null,"reason":null,"#
                + r#""clientId":null,"partial":null,"coinsRemaining":null}}"#
        );
    }

    #[test]
    fn a_reminder_event_has_the_documented_shape_and_its_key_as_id() {
        let d = Delivery {
            message_seq: 9,
            webhook_id: "wh_1".into(),
            url: "https://example.com".into(),
            secret_sealed: String::new(),
            previous_sealed: None,
            event_type: EventType::Expiring,
            attempts: 0,
            company_id: "C1".into(),
            data: MessageData::Expiring(crate::store::reminders::ReminderData {
                user_id: "U1".into(),
                coins: 120,
                expires_at: 86_400_000 * 7,
                days_left: 7,
                message_key: "msg_exp_0123456789abcdef0123456789abcdef".into(),
            }),
            created_at: 0,
        };
        assert_eq!(
            serde_json::to_string(&WebhookEvent::of(&d)).unwrap(),
            r#"{"type":"coins.expiring","timestamp":"1970-01-01T00:00:00Z","data":{"userId":"U1","coins":120,"expiresAt":"1970-01-08T00:00:00Z","daysLeft":7}}"#
        );
        assert_eq!(d.message_id(), "msg_exp_0123456789abcdef0123456789abcdef");
    }
}
