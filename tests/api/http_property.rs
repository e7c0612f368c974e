//! Property test of the HTTP edge: random methods, paths, headers, content types and bodies
//! (random bytes, random JSON, valid bodies with a field broken) against the real server on both
//! backends. Whatever comes in: never a 5xx, always the envelope (or the OAuth, text or HTML shape
//! of the few routes that answer otherwise), always within a time bound.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::helpers::*;

/// Paths with real ids in them, and a few that route nowhere.
const PATHS: &[&str] = &[
    "/oauth/token",
    "/api/v0/enkash-coins/create-coins-config",
    "/api/v0/enkash-coins/allocate-coin",
    "/api/v0/enkash-coins/allocate-coins",
    "/api/v0/enkash-coins",
    "/api/v0/enkash-coins/WCC100001",
    "/api/v0/enkash-coins/WCC100001/history",
    "/api/v0/coins/balance?userId=U1",
    "/api/v0/coins/redeem",
    "/api/v0/coins/reverse",
    "/api/v0/coins/coin-value",
    "/api/v0/coins/users/U1",
    "/api/v0/coins/transactions?userId=U1&limit=2",
    "/healthz",
    "/metrics",
    "/api/v0/enkash-coins/%FF%FE",
    "/api/v0/coins/users/%00",
    "/nowhere",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/merge-patch+json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    Some("application/json; charset=iso-8859-1"),
    Some("APPLICATION/JSON"),
    None,
];

#[derive(Debug, Clone)]
enum Auth {
    Admin,
    Company,
    Garbage(String),
    Basic,
    None,
}

#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    auth: Auth,
    request_id: Option<String>,
    body: Vec<u8>,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(|f| json!(f)),
        "[A-Za-z0-9_ .:@\u{0}-\u{7f}é]{0,70}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::hash_map("[a-zA-Z]{1,16}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body for some route with one field replaced by anything.
fn broken_valid_body() -> impl Strategy<Value = Value> {
    let bodies = vec![
        json!({"companyId":"C","event":"E","requestId":"R1","userId":"U1"}),
        json!({"configuration":"DEFAULT","companyId":"C","event":"E","amount":5}),
        json!({"companyId":"C","userId":"U1","requestId":"R2","coins":1}),
        json!({"companyId":"C","requestId":"R3","originalRequestId":"R1"}),
        json!({"companyId":"C","currency":"INR","minorUnitsPerCoin":100}),
        json!({"allocations":[{"companyId":"C","event":"E","requestId":"R4","userId":"U1"}]}),
    ];
    (proptest::sample::select(bodies), "[a-zA-Z]{1,18}", json_value()).prop_map(|(mut body, key, value)| {
        let keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        let target = keys.iter().find(|k| k.to_lowercase().starts_with(&key[..1].to_lowercase())).cloned().unwrap_or(key);
        body[target] = value;
        body
    })
}

fn request() -> impl Strategy<Value = Request> {
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        broken_valid_body().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        "[a-z_]{1,12}=[A-Za-z0-9%+]{0,20}(&[a-z_]{1,12}=[A-Za-z0-9%+]{0,20}){0,4}".prop_map(String::into_bytes),
    ];
    let auth = prop_oneof![
        3 => Just(Auth::Admin),
        1 => Just(Auth::Company),
        1 => "[ -~]{0,60}".prop_map(Auth::Garbage),
        1 => Just(Auth::Basic),
        1 => Just(Auth::None),
    ];
    (
        proptest::sample::select(METHODS),
        proptest::sample::select(PATHS),
        proptest::sample::select(CONTENT_TYPES),
        auth,
        proptest::option::of("[ -~]{0,200}"),
        body,
    )
        .prop_map(|(method, path, content_type, auth, request_id, body)| Request { method, path: path.to_owned(), content_type, auth, request_id, body })
}

/// What the answer to `req` must look like, whatever it says.
fn check_shape(req: &Request, status: u16, content_type: &str, body: &[u8]) -> Result<(), String> {
    if status >= 500 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(body)));
    }
    let path = req.path.split('?').next().unwrap_or_default();
    if status == 200 && (path == "/metrics" || path.starts_with("/docs")) {
        return Ok(());
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("{status} not JSON ({e}): {}", String::from_utf8_lossy(body)))?;
    if !content_type.starts_with("application/json") {
        return Err(format!("content type {content_type}"));
    }
    let object = json.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let ok = if path == "/oauth/token" && req.method == "POST" {
        keys == ["error", "error_description"] || keys == ["access_token", "expires_in", "refresh_token", "scope", "token_type"]
    } else if status == 200 {
        keys == ["payload", "response_code", "response_message"] && json["response_code"] == json!(0)
    } else {
        keys == ["error_code", "payload", "response_code", "response_message"]
            && json["response_code"] == json!(1)
            && json["payload"] == json["response_message"]
    };
    if ok { Ok(()) } else { Err(format!("{status}: not the expected shape: {json}")) }
}

struct Fixture {
    app: TestApp,
    company_token: String,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    let app = spawn_app(backend).await?;
    app.config("DEFAULT", "C", "E", 5).await;
    app.allocate(&app.admin_token, "C", "E", "R1", "U1").await.assert_ok();
    let company_token = app.company_token(&["C"]).await;
    Some(Fixture { app, company_token })
}

async fn send(f: &Fixture, req: &Request) -> Result<(), String> {
    let app = &f.app;
    let mut builder = app.http.request(req.method.parse().unwrap(), app.url(&req.path)).body(req.body.clone());
    if let Some(ct) = req.content_type {
        builder = builder.header("content-type", ct);
    }
    if let Some(id) = &req.request_id {
        builder = builder.header("x-request-id", id.as_str());
    }
    builder = match &req.auth {
        Auth::Admin => builder.bearer_auth(&app.admin_token),
        Auth::Company => builder.bearer_auth(&f.company_token),
        Auth::Garbage(g) => builder.header("authorization", g.as_str()),
        Auth::Basic => builder.basic_auth(&app.admin_id, Some(&app.admin_secret)),
        Auth::None => builder,
    };
    let started = Instant::now();
    let res = builder.send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = res.status().as_u16();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if res.headers().get("x-request-id").is_none() {
        return Err("no x-request-id".into());
    }
    let body = res.bytes().await.map_err(|e| format!("body: {e}"))?;
    if started.elapsed() > Duration::from_secs(3) {
        return Err(format!("took {:?}", started.elapsed()));
    }
    check_shape(req, status, &content_type, &body)
}

fn run_cases(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some(f) = rt.block_on(fixture(backend)) else { return };
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(req in request())| {
        let outcome = rt.block_on(send(&f, &req));
        prop_assert!(outcome.is_ok(), "{req:?}: {}", outcome.unwrap_err());
    });
    rt.block_on(async {
        f.app.assert_ledger_consistent().await;
    });
}

#[test]
fn random_requests_never_get_a_5xx_and_always_the_envelope_on_sqlite() {
    run_cases(Backend::Sqlite, 400);
}

#[test]
fn random_requests_never_get_a_5xx_and_always_the_envelope_on_postgres() {
    run_cases(Backend::Postgres, 400);
}
