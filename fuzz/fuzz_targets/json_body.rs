//! Any bytes as a JSON body, read into every request type: never a panic; a body that reads
//! holds only valid values (ids that parse again, amounts in range).
#![no_main]

use coins::http::wire::FromJsonObject;
use coins::http::wire::coins::{
    ActivateRequest, AdjustRequest, AllocateRequest, BulkAllocateRequest, CoinValueRequest, RedeemRequest, ReverseRequest, SimulateRequest,
};
use coins::http::wire::configs::{CreateConfigRequest, PatchConfigRequest};
use coins::http::wire::reminders::ReminderSettingsRequest;
use coins::http::wire::webhooks::{CreateWebhookRequest, PatchWebhookRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(data) else { return };
    if let Ok(r) = AllocateRequest::from_object(&object) {
        assert!(coins::domain::UserId::parse(r.user_id.as_str()).is_ok());
        assert!(r.amount_minor.is_none_or(|m| (1..=10_000_000_000_000).contains(&m.0)));
    }
    // A configuration that reads and fits together earns by exactly one rule, in range.
    if let Some(values) = CreateConfigRequest::from_object(&object).ok().and_then(|r| r.into_values().ok()) {
        assert!(values.terms().is_ok());
        assert!(values.amount.is_none_or(|a| (1..=1_000_000_000).contains(&a.get())));
    }
    let _ = PatchConfigRequest::from_object(&object);
    if let Ok(r) = RedeemRequest::from_object(&object) {
        assert!(r.coins.is_some() != r.amount_minor.is_some(), "exactly one amount");
    }
    // A return or an activation that reads names its original one way, and asks one way.
    if let Some(cmd) = ReverseRequest::from_object(&object).ok().and_then(|r| r.command(0).ok()) {
        assert!(!matches!(cmd.ask, coins::domain::allocation::ReturnAsk::Coins(k) if k < 1));
    }
    let _ = ActivateRequest::from_object(&object).ok().map(|r| r.command(0));
    // An adjustment that reads and fits together moves a non-zero amount in range, with a reason.
    if let Some(cmd) = AdjustRequest::from_object(&object).ok().and_then(|r| r.command("fuzz", 0).ok()) {
        assert!(cmd.coins != 0 && cmd.coins.abs() <= 1_000_000_000);
        assert!(!cmd.reason.trim().is_empty() && cmd.reason.chars().count() <= 200 && !cmd.reason.chars().any(char::is_control));
        assert!(cmd.coins > 0 || cmd.pending_days.is_none());
    }
    if let Ok(r) = SimulateRequest::from_object(&object) {
        let _ = r.command(0);
    }
    let _ = CoinValueRequest::from_object(&object);
    // Lead times that read are at most three distinct days in 1..=365, longest first.
    if let Ok(r) = ReminderSettingsRequest::from_object(&object) {
        let days = r.expiry_reminder_days.0.days().to_vec();
        assert!(days.len() <= 3 && days.iter().all(|d| (1..=365).contains(d)) && days.windows(2).all(|w| w[0] > w[1]), "{days:?}");
    }
    let _ = CreateWebhookRequest::from_object(&object);
    let _ = PatchWebhookRequest::from_object(&object);
    if let Ok(r) = BulkAllocateRequest::from_object(&object) {
        assert!((1..=1000).contains(&r.allocations.len()));
    }
    // The serde path reads exactly what the edge reads.
    assert_eq!(serde_json::from_slice::<AllocateRequest>(data).ok(), AllocateRequest::from_object(&object).ok());
});
