//! Any bytes as an Authorization header, read as Basic credentials and as a Bearer token: never a
//! panic; credentials that read hold no NUL; a bearer token is never empty.
#![no_main]

use coins::http::wire::oauth::{basic_credentials, bearer_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((id, secret)) = basic_credentials(data) {
        assert!(id.readings().chain(secret.readings()).all(|s| !s.contains('\0')));
    }
    if let Some(token) = bearer_token(data) {
        assert!(!token.is_empty());
    }
});
