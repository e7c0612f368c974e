//! `PUT` and `GET /api/v0/coins/reminders`: a company's expiry-reminder lead times.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

use super::{FromField, FromQuery, query_company, whole_number};
use crate::domain::CompanyId;
use crate::domain::reminders::{LEAD_DAYS_MAX, LEAD_TIMES_MAX, LeadTimes};
use crate::request_body;

/// Up to three distinct lead times in days (1–365); `[]` turns reminders off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderDays(pub LeadTimes);

impl FromField for ReminderDays {
    fn from_field(name: &str, value: Option<&Value>) -> Result<Self, String> {
        let rule = || format!("{name} must be a list of at most {LEAD_TIMES_MAX} whole numbers of days from 1 to {LEAD_DAYS_MAX}, such as [30, 7, 1]");
        let items = value.and_then(Value::as_array).ok_or_else(rule)?;
        let days = items.iter().map(|v| whole_number(v).ok_or_else(rule)).collect::<Result<Vec<i64>, String>>()?;
        LeadTimes::parse(&days).map(Self).map_err(|e| e.replace("expiryReminderDays", name))
    }
}

impl Serialize for ReminderDays {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.days())
    }
}

schema_of!(
    ReminderDays,
    "ExpiryReminderDays",
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(LEAD_DAYS_MAX)))
        .max_items(Some(LEAD_TIMES_MAX))
        .unique_items(true)
        .examples([serde_json::json!([30, 7, 1])])
        .description(Some("Days before coins expire that a coins.expiring event is sent, longest first; [] turns reminders off"))
        .into()
);

request_body! {
    /// `PUT /api/v0/coins/reminders`: replaces the company's lead times.
    pub struct ReminderSettingsRequest {
        "companyId" => pub company_id: CompanyId,
        "expiryReminderDays" => pub expiry_reminder_days: ReminderDays,
    }
}

/// `GET /api/v0/coins/reminders?companyId=`
#[derive(Debug, Clone, PartialEq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReminderQuery {
    #[param(rename = "companyId", value_type = CompanyId)]
    pub company_id: CompanyId,
}

impl FromQuery for ReminderQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        Ok(Self { company_id: query_company(q)? })
    }
}

/// A company's reminder settings.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReminderSettingsView {
    pub company_id: CompanyId,
    /// Longest first; `[]`: reminders are off.
    #[schema(value_type = ReminderDays)]
    pub expiry_reminder_days: ReminderDays,
}
