//! The JSON request a page hands to `generate`: any JSON value gives a request or a
//! BAD_OPTION naming the option, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| amulet::fuzzing::request(data));
