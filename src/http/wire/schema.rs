//! How the field types of requests and responses are described in the API document: each
//! identifier with its pattern, each number with its range, as the validation in `mod.rs` reads
//! them (a test holds the two together by feeding the document's examples back).

use super::{CapLimit, ValidityDays};
use crate::domain::coins::AMOUNT_MAX;
use crate::domain::{Coins, CompanyId, ConfigKind, EventName, OrderId, RequestId, UserId};

/// Implements the schema traits for a field type from a schema expression.
macro_rules! schema_of {
    ($ty:ty, $name:literal, $body:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $body
            }
        }
        impl utoipa::ToSchema for $ty {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed($name)
            }
        }
    };
}

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

pub(crate) fn string_schema(pattern: &str, example: &str, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(crate::domain::ids::ID_CHARS_MAX))
        .pattern(Some(pattern))
        .examples([example])
        .description(Some(description))
        .into()
}

/// A whole number in `min..=max`, `null` allowed when `nullable`.
pub(crate) fn int_schema(min: i64, max: i64, nullable: bool, description: &str) -> RefOr<Schema> {
    let ty: SchemaType = if nullable { [Type::Integer, Type::Null].into_iter().collect() } else { Type::Integer.into() };
    ObjectBuilder::new().schema_type(ty).minimum(Some(min)).maximum(Some(max)).description(Some(description)).into()
}

const ID_PATTERN: &str = "^[A-Za-z0-9_.:@-]{1,64}$";
schema_of!(CompanyId, "CompanyId", string_schema(ID_PATTERN, "CEK0TCW2W8", "A business; 1 to 64 characters from A-Z a-z 0-9 _ - . : @"));
schema_of!(
    UserId,
    "UserId",
    string_schema(ID_PATTERN, "EKQZVMQK", "A person earning coins, unique across the installation; 1 to 64 characters from A-Z a-z 0-9 _ - . : @")
);
schema_of!(
    RequestId,
    "RequestId",
    string_schema(
        ID_PATTERN,
        "COIN_REQ1234567",
        "The caller's idempotency key, unique per company across allocations, redemptions and reversals; 1 to 64 characters from A-Z a-z 0-9 _ - . : @"
    )
);
schema_of!(
    OrderId,
    "OrderId",
    string_schema(
        ID_PATTERN,
        "ORDER-2291",
        "The business's own key for a purchase: at most one live allocation per company, event and order id; 1 to 64 characters from A-Z a-z 0-9 _ - . : @"
    )
);
schema_of!(
    EventName,
    "EventName",
    string_schema("^[A-Za-z0-9_.-]{1,64}$", "REFERRAL_EVENT", "A qualifying action, case-sensitive; 1 to 64 characters from A-Z a-z 0-9 _ - .")
);
schema_of!(
    ConfigKind,
    "ConfigurationKind",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["DEFAULT", "CUSTOM"]))
        .description(Some("DEFAULT applies to an event for every company; CUSTOM overrides it for one company"))
        .into()
);
schema_of!(Coins, "Coins", int_schema(1, AMOUNT_MAX, false, "A whole number of coins"));
schema_of!(
    ValidityDays,
    "ValidityDays",
    int_schema(1, crate::domain::config::VALIDITY_DAYS_MAX, true, "Days until coins credited by this configuration expire; null: never")
);
schema_of!(CapLimit, "CapLimit", int_schema(1, crate::domain::config::CAP_MAX, true, "A cap on allocations of the event per user; null: no cap"));

/// A string schema of a small fixed set of values.
pub(crate) fn enum_schema(values: &[&'static str], description: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).description(Some(description)).into()
}

schema_of!(
    crate::domain::earn::AmountType,
    "AmountType",
    enum_schema(&["FIXED", "PERCENT"], "FIXED: `amount` coins per allocation; PERCENT: `rateBps` of the allocation's `amountMinor`")
);
schema_of!(
    crate::domain::earn::Rounding,
    "Rounding",
    enum_schema(&["FLOOR", "HALF_UP"], "How a fractional number of coins becomes whole: down, or to the nearest with halves up")
);
schema_of!(
    super::configs::RateBps,
    "RateBps",
    int_schema(1, crate::domain::earn::RATE_BPS_MAX, true, "PERCENT: basis points of the purchase value (100 = 1 %)")
);
schema_of!(
    super::configs::MinAmountMinor,
    "MinAmountMinor",
    int_schema(1, crate::domain::earn::AMOUNT_MINOR_MAX, true, "The smallest purchase value (minor units) that earns anything; null: no minimum")
);
schema_of!(
    super::configs::PendingDays,
    "PendingDays",
    int_schema(1, crate::domain::allocation::PENDING_DAYS_MAX, true, "Days earned coins are held before they can be spent; null: spendable at once")
);
schema_of!(
    super::configs::MaxCoinsPerAllocation,
    "MaxCoinsPerAllocation",
    int_schema(1, AMOUNT_MAX, true, "The most coins one allocation earns; null: no cap")
);
