//! A home's quorum file on arbitrary bytes: a quorum of 0 is never accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| makproxy_testkit::fuzz::quorum(data));
