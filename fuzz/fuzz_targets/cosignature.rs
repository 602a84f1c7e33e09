//! A cosignature entry of arbitrary bytes in an otherwise valid CIL bundle: refused or verified as the colleague's, never counted twice.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| makproxy_testkit::fuzz::cosignature(data));
