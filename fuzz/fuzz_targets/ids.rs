//! Identifier parsers on arbitrary text; whatever parses must display and parse back
//! to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| makproxy_testkit::fuzz::ids(data));
