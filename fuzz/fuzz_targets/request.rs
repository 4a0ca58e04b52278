//! The JSON request a page hands to `generate`: any JSON value gives a request or a
//! BAD_OPTION naming the option, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    match amulet::request::parse_request(&v) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.code(), "BAD_OPTION", "{e}"),
    }
});
