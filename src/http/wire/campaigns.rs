//! `/api/v0/coins/campaigns`: bonus campaigns, created, listed, read, changed and deleted.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

use super::coins::Timestamp;
use super::{FromField, FromJsonObject, FromQuery, Nullable, query_company, whole_number};
use crate::clock::rfc3339;
use crate::domain::campaigns::{Campaign, CampaignPatch, CampaignTerms, EVENTS_MAX, NAME_CHARS_MAX, Reward, TRIGGERS_MAX};
use crate::domain::{CompanyId, EventName};
use crate::request_body;

/// A campaign's name: 1 to 100 characters, not only spaces, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CampaignName(pub String);

schema_of!(
    CampaignName,
    "CampaignName",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(NAME_CHARS_MAX))
        .pattern(Some(super::TEXT_LINE_PATTERN))
        .examples([serde_json::json!("Launch week: double coins")])
        .description(Some("What the campaign is called on the dashboard (1 to 100 characters, not only spaces, no control characters)"))
        .into()
);

impl FromField for CampaignName {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        super::text_line(name, value, NAME_CHARS_MAX).map(Self)
    }
}

/// The events a campaign applies to; `null`: every event of the company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CampaignEvents(pub Option<Vec<EventName>>);

schema_of!(
    CampaignEvents,
    "CampaignEvents",
    ArrayBuilder::new()
        .schema_type([Type::Array, Type::Null].into_iter().collect::<utoipa::openapi::schema::SchemaType>())
        .items(<EventName as utoipa::PartialSchema>::schema())
        .min_items(Some(1))
        .max_items(Some(EVENTS_MAX))
        .unique_items(true)
        .examples([serde_json::json!(["PURCHASE"])])
        .description(Some("The events it applies to, at most 50 and each once; null: every event of the company"))
        .into()
);

impl FromField for CampaignEvents {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        let rule = || format!("{name} must be null (every event) or a list of 1 to {EVENTS_MAX} event names");
        match value {
            None | Some(Value::Null) => Ok(Self(None)),
            Some(Value::Array(items)) => items.iter().map(|v| EventName::from_field(name, Some(v))).collect::<Result<_, _>>().map(|e| Self(Some(e))),
            Some(_) => Err(rule()),
        }
    }
}

/// A whole number whose range the campaign's rules check (the sentence names the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WholeNumber(pub i64);

impl FromField for WholeNumber {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        value.and_then(whole_number).map(Self).ok_or_else(|| format!("{name} must be a whole number"))
    }
}

/// `maxTriggersPerUser`: how many of one user's allocations the campaign applies to; `null`: all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TriggerLimit(pub Option<i64>);

impl FromField for TriggerLimit {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        super::nullable_int(name, value, TRIGGERS_MAX, "allocations").map(Self)
    }
}

/// One of `multiplierBps` and `bonusCoins` (absent and `null` are the same).
fn reward(multiplier: Nullable<WholeNumber>, bonus: Nullable<WholeNumber>) -> Result<Option<Reward>, String> {
    match (multiplier.0, bonus.0) {
        (Some(_), Some(_)) => Err("give multiplierBps or bonusCoins, not both".into()),
        (Some(m), None) => Ok(Some(Reward::Multiplier(m.0))),
        (None, Some(b)) => Ok(Some(Reward::Bonus(b.0))),
        (None, None) => Ok(None),
    }
}

request_body! {
    /// `POST /api/v0/coins/campaigns`: a bonus campaign. Give `multiplierBps` or `bonusCoins`.
    pub struct CreateCampaignRequest {
        "companyId" => pub company_id: CompanyId,
        "name" => pub name: CampaignName,
        /// `null` or absent: every event of the company.
        #[schema(value_type = CampaignEvents, required = false)]
        "events" => pub events: Option<CampaignEvents>,
        /// When it starts (RFC 3339); may be in the past, when it applies from its creation.
        /// Until 5 seconds before it, the campaign can be changed and deleted.
        #[schema(value_type = String, format = DateTime)]
        "startsAt" => pub starts_at: Timestamp,
        /// When it ends (RFC 3339, in the future, after `startsAt`, at most 366 days later).
        /// Allocations at or after it do not get it.
        #[schema(value_type = String, format = DateTime)]
        "endsAt" => pub ends_at: Timestamp,
        /// The allocation's coins multiplied, in basis points (20000 = ×2).
        #[schema(value_type = Option<i64>, required = false, minimum = 10001, maximum = 1000000)]
        "multiplierBps" => pub multiplier_bps: Nullable<WholeNumber>,
        /// A fixed number of coins added to the allocation's.
        #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 1000000000)]
        "bonusCoins" => pub bonus_coins: Nullable<WholeNumber>,
        /// How many of one user's allocations it applies to; `null` or absent: all of them.
        #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 1000000)]
        "maxTriggersPerUser" => pub max_triggers_per_user: Option<TriggerLimit>,
    }
}

impl CreateCampaignRequest {
    /// The campaign asked for, checked as a whole at `now_ms`.
    pub fn terms(self, now_ms: i64) -> Result<(CompanyId, CampaignTerms), String> {
        let reward = reward(self.multiplier_bps, self.bonus_coins)?.ok_or("multiplierBps or bonusCoins is required")?;
        if self.ends_at.0 <= now_ms {
            return Err("endsAt must be in the future".into());
        }
        let terms = CampaignTerms {
            name: self.name.0,
            events: self.events.and_then(|e| e.0),
            starts_at: self.starts_at.0,
            ends_at: self.ends_at.0,
            reward,
            max_triggers_per_user: self.max_triggers_per_user.and_then(|t| t.0),
        };
        terms.check()?;
        Ok((self.company_id, terms))
    }
}

/// `PATCH /api/v0/coins/campaigns/{campaignId}`: the fields given replace the stored ones.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchCampaignRequest {
    #[schema(value_type = CampaignName, required = false)]
    pub name: Option<CampaignName>,
    /// `null`: every event.
    #[schema(value_type = CampaignEvents, required = false)]
    pub events: Option<CampaignEvents>,
    #[schema(value_type = String, format = DateTime, required = false)]
    pub starts_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime, required = false)]
    pub ends_at: Option<Timestamp>,
    /// Switches the reward to this multiplier (`null`: not given).
    #[schema(value_type = Option<i64>, required = false, minimum = 10001, maximum = 1000000)]
    pub multiplier_bps: Nullable<WholeNumber>,
    /// Switches the reward to this fixed bonus (`null`: not given).
    #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 1000000000)]
    pub bonus_coins: Nullable<WholeNumber>,
    /// `null` removes the limit.
    #[schema(value_type = Option<i64>, required = false, minimum = 1, maximum = 1000000)]
    pub max_triggers_per_user: Option<TriggerLimit>,
}

/// The fields PATCH understands.
pub const PATCHABLE: &[&str] = &["name", "events", "startsAt", "endsAt", "multiplierBps", "bonusCoins", "maxTriggersPerUser"];

impl FromJsonObject for PatchCampaignRequest {
    fn from_object(o: &Map<String, Value>) -> Result<Self, String> {
        if !PATCHABLE.iter().any(|k| o.contains_key(*k)) {
            return Err(format!("at least one of {} is required", PATCHABLE.join(", ")));
        }
        Ok(Self {
            name: FromField::from_field("name", o.get("name"))?,
            events: FromField::from_field("events", o.get("events"))?,
            starts_at: FromField::from_field("startsAt", o.get("startsAt"))?,
            ends_at: FromField::from_field("endsAt", o.get("endsAt"))?,
            multiplier_bps: FromField::from_field("multiplierBps", o.get("multiplierBps"))?,
            bonus_coins: FromField::from_field("bonusCoins", o.get("bonusCoins"))?,
            max_triggers_per_user: FromField::from_field("maxTriggersPerUser", o.get("maxTriggersPerUser"))?,
        })
    }
}

impl<'de> serde::Deserialize<'de> for PatchCampaignRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let object = Map::<String, Value>::deserialize(d)?;
        Self::from_object(&object).map_err(serde::de::Error::custom)
    }
}

impl PatchCampaignRequest {
    pub fn patch(self) -> Result<CampaignPatch, String> {
        Ok(CampaignPatch {
            name: self.name.map(|n| n.0),
            events: self.events.map(|e| e.0),
            starts_at: self.starts_at.map(|t| t.0),
            ends_at: self.ends_at.map(|t| t.0),
            reward: reward(self.multiplier_bps, self.bonus_coins)?,
            max_triggers_per_user: self.max_triggers_per_user.map(|t| t.0),
        })
    }
}

/// `GET /api/v0/coins/campaigns?companyId=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignQuery {
    #[param(rename = "companyId", value_type = CompanyId)]
    pub company_id: CompanyId,
}

impl FromQuery for CampaignQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_company(q)? })
    }
}

/// A bonus campaign.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"campaignId":"CMP100001","companyId":"SHOP","name":"Launch week: double coins","events":["PURCHASE"],"startsAt":"2026-12-07T00:00:00Z","endsAt":"2026-12-14T00:00:00Z","multiplierBps":20000,"bonusCoins":null,"maxTriggersPerUser":3,"status":"SCHEDULED","createdAt":"2026-12-04T10:00:00Z","updatedAt":"2026-12-04T10:00:00Z"}))]
pub struct CampaignView {
    #[schema(example = "CMP100001")]
    pub campaign_id: String,
    pub company_id: CompanyId,
    pub name: String,
    /// `null`: every event of the company.
    pub events: Option<Vec<EventName>>,
    pub starts_at: String,
    pub ends_at: String,
    /// Set for a multiplier campaign, else `null`.
    pub multiplier_bps: Option<i64>,
    /// Set for a fixed-bonus campaign, else `null`.
    pub bonus_coins: Option<i64>,
    pub max_triggers_per_user: Option<i64>,
    /// `SCHEDULED` (not started), `ACTIVE` or `ENDED`, at the time of the answer.
    #[schema(example = "ACTIVE")]
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
}

impl CampaignView {
    pub fn of(c: &Campaign, now_ms: i64) -> Self {
        let t = &c.terms;
        Self {
            campaign_id: c.id.to_string(),
            company_id: c.company.clone(),
            name: t.name.clone(),
            events: t.events.clone(),
            starts_at: rfc3339(t.starts_at),
            ends_at: rfc3339(t.ends_at),
            multiplier_bps: t.reward.multiplier_bps(),
            bonus_coins: t.reward.bonus_coins(),
            max_triggers_per_user: t.max_triggers_per_user,
            status: c.status(now_ms).as_str(),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_needs_exactly_one_reward_and_an_end_in_the_future() {
        let body = |extra: Value| {
            let mut o = serde_json::json!({"companyId":"C","name":"Launch","startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-08T00:00:00Z"});
            o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            CreateCampaignRequest::from_object(o.as_object().unwrap()).unwrap()
        };
        let now = crate::clock::parse_rfc3339("2025-12-01T00:00:00Z").unwrap();
        assert_eq!(body(serde_json::json!({})).terms(now).unwrap_err(), "multiplierBps or bonusCoins is required");
        assert_eq!(body(serde_json::json!({"multiplierBps":20000,"bonusCoins":5})).terms(now).unwrap_err(), "give multiplierBps or bonusCoins, not both");
        let (_, terms) = body(serde_json::json!({"bonusCoins":5,"events":null,"multiplierBps":null})).terms(now).unwrap();
        assert_eq!((terms.reward, terms.events), (Reward::Bonus(5), None));
        let later = crate::clock::parse_rfc3339("2026-01-08T00:00:00Z").unwrap();
        assert_eq!(body(serde_json::json!({"bonusCoins":5})).terms(later).unwrap_err(), "endsAt must be in the future");
        assert!(body(serde_json::json!({"multiplierBps":10000})).terms(now).unwrap_err().starts_with("multiplierBps must be"));
    }
}
