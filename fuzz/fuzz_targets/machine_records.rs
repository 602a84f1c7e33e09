//! Drop-folder input parsing (decoding, format detection, agent/WMI/CSV/deposit
//! parsers) on arbitrary bytes. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| makproxy_testkit::fuzz::machine_records(data));
