//! Any text as a history cursor: never a panic, and every cursor that decodes re-encodes to one
//! that decodes to the same entry.
#![no_main]

use coins::http::wire::users::{decode_cursor, encode_cursor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(id) = decode_cursor(text) {
        assert!(id > 0);
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
    }
});
