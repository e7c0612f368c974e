//! The API document (OpenAPI 3.1), generated from the code: every operation is registered with
//! the router and the document at once (`utoipa_axum::routes!`), so neither can have a route the
//! other lacks (a test holds them together). This module adds what every operation shares: the
//! security schemes, the `x-request-id` header, and the errors of the edge — authentication, rate
//! limits, body and query reading, timeouts, the database going away.

use serde_json::json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorCode;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "coins",
        description = "A loyalty-coins engine, wire-compatible with the EnKash Point Management API.\n\n\
Every response except `/oauth/token` is the envelope `{\"payload\", \"response_code\", \"response_message\"}`; \
a failure sets `response_code` to 1, repeats a sentence naming the offending field in `payload` and `response_message`, \
and adds a stable `error_code`. Every response carries `x-request-id`. Unknown routes answer 404 `NOT_FOUND`, \
known routes with another method 405 `METHOD_NOT_ALLOWED` (with `Allow`).\n\n\
Writes are exactly-once on (`companyId`, `requestId`): a 5xx on a write means the outcome is unknown — retry with \
the same `requestId`, which either replays the first answer or applies it once.",
        license(name = "MIT"),
    ),
    security(("bearer" = [])),
    components(schemas(
        crate::http::wire::events::WebhookEvent,
        crate::domain::earn::AmountType,
        crate::domain::earn::Rounding,
        super::wire::configs::RateBps,
        super::wire::configs::MinAmountMinor,
        super::wire::configs::MaxCoinsPerAllocation,
        super::wire::configs::PendingDays,
        super::wire::coins::ShortfallPolicy,
        super::wire::CapLimit,
        super::wire::ValidityDays,
    )),
    tags(
        (name = "auth", description = "OAuth 2.0 tokens (RFC 6749): client credentials, password and refresh grants"),
        (name = "configurations", description = "How many coins an event earns, for every company (DEFAULT) or one (CUSTOM)"),
        (name = "coins", description = "Allocating, redeeming, reversing; balances and coin value"),
        (name = "users", description = "A user's summary and history"),
        (name = "campaigns", description = "Bonus campaigns: a multiplier or a fixed bonus on allocations inside a window"),
        (name = "tiers", description = "Status tiers: a company's levels, reached by qualifying coins, that multiply what members earn"),
        (name = "webhooks", description = "Coin events pushed to the business's endpoints, signed (Standard Webhooks); the body each receives is the `WebhookEvent` schema"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes and the responses every operation shares; applied once every
/// route is registered (see `http::router_and_document`).
pub struct EdgeResponses;

fn error_response(description: &str, code: &str, message: &str, retry_after: bool) -> RefOr<Response> {
    let example = json!({"payload": message, "response_code": 1, "response_message": message, "error_code": code});
    let mut builder = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).example(Some(example)).build());
    if retry_after {
        builder = builder.header("Retry-After", utoipa::openapi::header::HeaderBuilder::new().description(Some("Seconds to wait before retrying")).build());
    }
    builder.build().into()
}

/// `error_code`: every code there is, each with its status and meaning (each operation's
/// responses say which of them it can return).
fn error_code_schema() -> RefOr<Schema> {
    let list: Vec<String> = ErrorCode::ALL.iter().map(|c| format!("- `{}` ({}): {}", c.as_str(), c.status().as_u16(), c.meaning())).collect();
    let description = format!("A stable, machine-readable code:\n{}", list.join("\n"));
    let codes = ErrorCode::ALL.iter().map(|c| c.as_str());
    RefOr::T(Schema::Object(
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(codes)).description(Some(description)).examples([json!("VALIDATION_FAILED")]).build(),
    ))
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head, &mut item.options, &mut item.trace]
        .into_iter()
        .filter_map(|o| o.as_mut())
}

impl Modify for EdgeResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("opaque").description(Some("An access token from POST /oauth/token")).build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Basic).description(Some("client_id:client_secret, for /oauth/token")).build()),
        );
        if let Some(RefOr::T(Schema::Object(envelope))) = components.schemas.get_mut("ErrorEnvelope") {
            envelope.properties.insert("error_code".into(), error_code_schema());
        }
        for (path, item) in api.paths.paths.iter_mut() {
            let oauth = path == "/oauth/token";
            for op in operations(item) {
                let public = op.security.as_ref().is_some_and(|s| s.iter().all(|r| *r == Default::default()));
                let json_body = op.request_body.is_some() && !oauth;
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, response: RefOr<Response>| {
                    responses.entry(status.to_owned()).or_insert(response);
                };
                if !public && !oauth {
                    add(
                        "401",
                        error_response(
                            "UNAUTHENTICATED: no, malformed, unknown, expired or revoked bearer token (with `WWW-Authenticate: Bearer`)",
                            "UNAUTHENTICATED",
                            "the access token is invalid, expired or revoked",
                            false,
                        ),
                    );
                    add(
                        "429",
                        error_response(
                            "RATE_LIMITED: this client is over its rate",
                            "RATE_LIMITED",
                            "too many requests from this client; retry after 1 s",
                            true,
                        ),
                    );
                }
                if json_body {
                    add(
                        "400",
                        error_response(
                            "MALFORMED_JSON (not JSON, or broken framing) or VALIDATION_FAILED (a field missing, of the wrong type or out of range; the sentence names it)",
                            "VALIDATION_FAILED",
                            "amount must be a whole number of coins between 1 and 1000000000",
                            false,
                        ),
                    );
                    add(
                        "408",
                        error_response(
                            "REQUEST_TIMEOUT: the body did not arrive in time",
                            "REQUEST_TIMEOUT",
                            "the request was not received within 30 s",
                            false,
                        ),
                    );
                    add(
                        "413",
                        error_response(
                            "PAYLOAD_TOO_LARGE: over 64 KiB (1 MiB for bulk allocation)",
                            "PAYLOAD_TOO_LARGE",
                            "request body is larger than 65536 bytes",
                            false,
                        ),
                    );
                    add(
                        "415",
                        error_response(
                            "UNSUPPORTED_MEDIA_TYPE: the body is not application/json",
                            "UNSUPPORTED_MEDIA_TYPE",
                            "request body must be application/json",
                            false,
                        ),
                    );
                } else if has_params {
                    add(
                        "400",
                        error_response(
                            "VALIDATION_FAILED: a parameter is missing or not valid; the sentence names it",
                            "VALIDATION_FAILED",
                            "userId is required",
                            false,
                        ),
                    );
                }
                if !oauth {
                    add(
                        "500",
                        error_response(
                            "INTERNAL: the log has the cause under the x-request-id",
                            "INTERNAL",
                            "internal error; the x-request-id response header identifies it in the server log",
                            false,
                        ),
                    );
                    add(
                        "503",
                        error_response(
                            "UNAVAILABLE: busy, or the database is away or too slow; retry (a write with the same requestId)",
                            "UNAVAILABLE",
                            "the service is busy; retry shortly",
                            true,
                        ),
                    );
                }
                for response in responses.values_mut() {
                    if let RefOr::T(r) = response {
                        r.headers.entry("x-request-id".into()).or_insert_with(|| {
                            RefOr::T(
                                utoipa::openapi::header::HeaderBuilder::new()
                                    .description(Some("The request's id: the client's own (1-128 visible ASCII characters) or a new one"))
                                    .build(),
                            )
                        });
                    }
                }
            }
        }
    }
}
