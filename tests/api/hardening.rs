//! Issue "Under fire": slow and greedy clients and hostile bytes. Each test here failed before
//! its fix: connections held open by slow headers, stalled bodies and idle keep-alive; NUL bytes
//! answered 500 on PostgreSQL; a malformed chunked body answered 413; a refused refresh token
//! burnt; Basic credentials not form-decoded; token bodies over 64 KiB accepted; rate limits.

use std::time::{Duration, Instant};

use coins::config::ServeSettings;
use coins::http::limits::Rate;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::helpers::*;

/// Short limits, so each test takes about a second.
fn tight() -> ServeSettings {
    let mut s = ServeSettings::for_tests();
    s.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    s.connections.header_read = Duration::from_secs(1);
    s.connections.idle = Duration::from_secs(1);
    s.request_timeout = Duration::from_secs(1);
    s
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.expect("connect")
}

/// Reads until the server closes the connection; what it sent, and when it closed (None: it
/// was still open after `wait`).
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(wait.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), Some(started.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

both_backends! {
    settings = tight;

    async fn a_client_sending_headers_one_byte_at_a_time_is_cut_off(app: &TestApp) {
        let mut stream = connect(app).await;
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let started = Instant::now();
        for b in request.iter() {
            if stream.write_all(&[*b]).await.is_err() {
                break; // closed by the server: what we want
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let closed_after = started.elapsed();
        assert!(closed.is_some() && closed_after < Duration::from_secs(5), "still open after {closed_after:?}");
    }

    async fn a_stalled_body_gets_408_and_the_connection_closes(app: &TestApp) {
        let mut stream = connect(app).await;
        let head = format!(
            "POST /api/v0/enkash-coins/allocate-coin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"companyId\":",
            app.admin_token
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""error_code":"REQUEST_TIMEOUT""#), "{answer}");
        assert!(closed.is_some_and(|t| t < Duration::from_secs(3)), "closed after {closed:?}");
    }

    async fn an_idle_keep_alive_connection_is_closed(app: &TestApp) {
        let mut stream = connect(app).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let closed = closed.expect("the idle connection was still open after 4 s");
        assert!(closed >= Duration::from_millis(900), "closed too early, after {closed:?}");
    }

    async fn a_malformed_chunked_body_is_400_not_413(app: &TestApp) {
        let mut stream = connect(app).await;
        let request = format!(
            "POST /api/v0/enkash-coins/allocate-coin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZZ\r\n{{}}\r\n0\r\n\r\n",
            app.admin_token
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains(r#""error_code":"MALFORMED_JSON""#), "{answer}");
    }
}

both_backends! {
    async fn nul_bytes_in_token_requests_are_400_or_401_never_500(app: &TestApp) {
        type Case<'a> = (Option<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);
        let cases: [Case; 5] = [
            (None, vec![("grant_type", "client_credentials"), ("client_id", "cl\0x"), ("client_secret", "s")]),
            (None, vec![("grant_type", "client_credentials"), ("client_id", app.admin_id.as_str()), ("client_secret", "s\0")]),
            (Some((app.admin_id.as_str(), app.admin_secret.as_str())), vec![("grant_type", "password"), ("username", "u\0"), ("password", "p"), ("clientId", "x")]),
            (Some((app.admin_id.as_str(), app.admin_secret.as_str())), vec![("grant_type", "password"), ("username", "u"), ("password", "p\0")]),
            (Some(("cl\0id", "secret")), vec![("grant_type", "client_credentials")]),
        ];
        for (basic, form) in cases {
            let res = app.token_request(basic, &form).await;
            assert!(matches!(res.status.as_u16(), 400 | 401), "{form:?}: {} {}", res.status, res.text);
        }
        // And in the API: ids refuse the byte before any query sees it.
        let res = app.get("/api/v0/coins/balance?userId=U%00", &app.admin_token).await;
        res.assert_error(400, "VALIDATION_FAILED");
        let res = app.get("/api/v0/coins/users/U%00", &app.admin_token).await;
        res.assert_error(400, "VALIDATION_FAILED");
    }

    async fn a_refresh_token_refused_to_another_client_stays_usable_by_its_own(app: &TestApp) {
        let basic = Some((app.admin_id.as_str(), app.admin_secret.as_str()));
        let first = app.token_request(basic, &[("grant_type", "client_credentials")]).await;
        let refresh = first.body["refresh_token"].as_str().unwrap().to_owned();
        let (id, secret) = app.create_client(&["C"]).await;
        let stolen = app.token_request(Some((&id, &secret)), &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
        assert_eq!((stolen.status.as_u16(), stolen.body["error"].clone()), (400, json!("invalid_grant")), "{}", stolen.text);
        let own = app.token_request(basic, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
        assert_eq!(own.status.as_u16(), 200, "the refused attempt burnt the token: {}", own.text);
    }

    async fn basic_credentials_work_form_encoded_and_raw(app: &TestApp) {
        // A secret with the characters RFC 6749 §2.3.1 makes strict clients encode.
        let secret = "s3cr+t/with=plus%slash";
        let client = coins::admin::new_client("cl_special+id".into(), "special", secret, true, vec![]);
        app.store().insert_client(client).await.unwrap();
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let encoded_id: String = form_urlencoded::byte_serialize(b"cl_special+id").collect();
        for (id, s) in [("cl_special+id", secret), (encoded_id.as_str(), encoded.as_str())] {
            let res = app.token_request(Some((id, s)), &[("grant_type", "client_credentials")]).await;
            assert_eq!(res.status.as_u16(), 200, "{id} / {s}: {}", res.text);
        }
        let wrong = app.token_request(Some(("cl_special+id", "s3cr t/with=plus%slash")), &[("grant_type", "client_credentials")]).await;
        assert_eq!(wrong.status.as_u16(), 401);
    }

    async fn token_bodies_over_64_kib_are_413(app: &TestApp) {
        let pad = "x".repeat(70 * 1024);
        let res = app.token_request(Some((&app.admin_id, &app.admin_secret)), &[("grant_type", "client_credentials"), ("pad", &pad)]).await;
        assert_eq!(res.status.as_u16(), 413, "{}", res.text);
        assert_eq!(res.body["error"], json!("invalid_request"));
    }
}

fn limited() -> ServeSettings {
    let mut s = ServeSettings::for_tests();
    s.token_ttl_secs = TEST_TOKEN_TTL_SECS;
    s.rates.per_client = Rate { per_second: 1, burst: 5 };
    s.rates.token_per_client = Rate { per_second: 1, burst: 3 };
    s.rates.token_per_address = Rate { per_second: 1, burst: 6 };
    s
}

both_backends! {
    settings = limited;

    async fn a_greedy_client_gets_429_with_retry_after_and_others_go_on(app: &TestApp) {
        // The harness used one token request of the admin's three; the others' buckets are full.
        let other = app.company_token(&["C"]).await;
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(app.get("/api/v0/coins/balance?userId=U", &app.admin_token).await);
        }
        let limited = statuses.iter().filter(|r| r.status.as_u16() == 429).collect::<Vec<_>>();
        assert!(!limited.is_empty() && statuses[..5].iter().all(|r| r.status.as_u16() == 200), "{:?}", statuses.iter().map(|r| r.status).collect::<Vec<_>>());
        limited[0].assert_error(429, "RATE_LIMITED");
        let secs: u64 = limited[0].header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((1..=2).contains(&secs), "{secs}");
        assert_eq!(app.get("/api/v0/coins/balance?userId=U", &other).await.status.as_u16(), 200, "another client is not limited");
    }

    async fn the_token_endpoint_is_limited_per_client_id_and_per_address(app: &TestApp) {
        let (id, secret) = app.create_client(&["C"]).await;
        let mut codes = Vec::new();
        for _ in 0..5 {
            codes.push(app.token_request(Some((&id, &secret)), &[("grant_type", "client_credentials")]).await);
        }
        assert_eq!(codes.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(), [200, 200, 200, 429, 429]);
        assert_eq!(codes[3].body["error"], json!("slow_down"));
        assert!(codes[3].header("retry-after").is_some());
        // The address has now spent 1 (harness) + 5 of its 6: unknown ids are limited too.
        let mut last = 0;
        for i in 0..3 {
            last = app.token_request(Some((&format!("nobody{i}"), "x")), &[("grant_type", "client_credentials")]).await.status.as_u16();
        }
        assert_eq!(last, 429);
    }
}
