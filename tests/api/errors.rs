//! Every error class, the request id header, headers and bodies at the byte level.

use std::io::{Read, Write};

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

/// Sends raw HTTP/1.1 bytes, to control header case and framing exactly.
fn raw_request(app: &TestApp, request: &str) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

both_backends! {
    async fn missing_or_bad_bearer_tokens_are_401_with_www_authenticate(app: &TestApp) {
        let res = app.send(reqwest::Method::GET, "/api/v0/coins/balance?userId=U", None, None).await;
        res.assert_error(401, "UNAUTHENTICATED");
        assert_eq!(res.header("www-authenticate"), Some("Bearer"));
        app.get("/api/v0/coins/balance?userId=U", "not-a-token").await.assert_error(401, "UNAUTHENTICATED");
        let res = app.http.get(app.url("/api/v0/coins/balance?userId=U")).header("authorization", "Basic abc").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }

    async fn unknown_routes_are_404_and_wrong_methods_405_in_the_envelope(app: &TestApp) {
        app.get("/api/v0/nothing-here", &app.admin_token).await.assert_error(404, "NOT_FOUND");
        let res = app.send(reqwest::Method::DELETE, "/api/v0/coins/balance?userId=U", Some(&app.admin_token), None).await;
        res.assert_error(405, "METHOD_NOT_ALLOWED");
        let res = app.get("/api/v0/enkash-coins/allocate-coin", &app.admin_token).await;
        res.assert_error(405, "METHOD_NOT_ALLOWED");
    }

    async fn bodies_must_be_json_and_small(app: &TestApp) {
        let path = app.url("/api/v0/enkash-coins/allocate-coin");
        let res = app.http.post(&path).bearer_auth(&app.admin_token).header("content-type", "text/plain").body("{}").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 415);
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["error_code"], json!("UNSUPPORTED_MEDIA_TYPE"));
        let res = app.http.post(&path).bearer_auth(&app.admin_token).body("{}").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 415, "no content type");
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
        let res = app.http.post(&path).bearer_auth(&app.admin_token).header("content-type", "application/json").body(big).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 413);
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["error_code"], json!("PAYLOAD_TOO_LARGE"));
        let res = app.http.post(&path).bearer_auth(&app.admin_token).header("content-type", "application/json; charset=utf-8").body("{oops").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 400);
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["error_code"], json!("MALFORMED_JSON"));
    }

    async fn every_response_carries_a_request_id_and_echoes_the_clients(app: &TestApp) {
        let res = app.http.get(app.url("/healthz")).header("x-request-id", "trace-abc-123").send().await.unwrap();
        assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
        let res = app.get("/nope", &app.admin_token).await;
        let id = res.header("x-request-id").expect("generated id");
        assert!(id.len() >= 16, "{id}");
        let other = app.get("/nope", &app.admin_token).await;
        assert_ne!(other.header("x-request-id"), Some(id));
    }

    async fn undecodable_path_segments_get_the_envelope(app: &TestApp) {
        app.get("/api/v0/coins/users/%FF", &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");
        app.get("/api/v0/enkash-coins/%FF%FE", &app.admin_token).await.assert_error(400, "VALIDATION_FAILED");
    }

    async fn health_and_readiness_need_no_auth(app: &TestApp) {
        let res = app.send(reqwest::Method::GET, "/healthz", None, None).await;
        res.assert_ok();
        let res = app.send(reqwest::Method::GET, "/readyz", None, None).await;
        res.assert_ok();
    }

    async fn header_names_are_case_insensitive_and_cookies_are_ignored(app: &TestApp) {
        app.config("DEFAULT", "C", "E", 4).await;
        let body = r#"{"companyId":"C","event":"E","requestId":"RAW1","userId":"U","extra":"ignored"}"#;
        let request = format!(
            "POST /api/v0/enkash-coins/allocate-coin HTTP/1.1\r\nHOST: x\r\nAUTHORIZATION: bearer {}\r\nCONTENT-TYPE: application/json\r\nCookie: JSESSIONID=abc\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            app.admin_token,
            body.len(),
            body
        );
        let answer = tokio::task::block_in_place(|| raw_request(app, &request));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(r#"{"payload":"Successfully allocated enkash Coins","response_code":0,"response_message":"Success"}"#), "{answer}");
        assert_eq!(app.balance("U").await, 4);
    }

    async fn internal_details_never_reach_the_client(app: &TestApp) {
        // A refused write names the offending field, not SQL.
        let res = app.allocate(&app.admin_token, "C", "E", "R", "U").await;
        let message = res.assert_error(404, "COIN_CONFIG_NOT_FOUND");
        for leak in ["SQL", "sqlite", "postgres", "constraint", "panicked"] {
            assert!(!message.to_lowercase().contains(&leak.to_lowercase()), "{message}");
        }
    }
}
