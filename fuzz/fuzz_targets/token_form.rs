//! Any bytes as the token endpoint's form: never a panic; a form that reads names a grant and
//! holds no NUL in any parameter.
#![no_main]

use coins::http::wire::oauth::TokenForm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    if let Ok(form) = TokenForm::from_pairs(pairs) {
        for v in [&form.client_id, &form.client_secret, &form.username, &form.password, &form.refresh_token].into_iter().flatten() {
            assert!(!v.contains('\0'));
        }
    }
});
