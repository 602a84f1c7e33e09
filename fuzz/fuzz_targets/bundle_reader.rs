//! The bundle reader on arbitrary bytes, as both kinds, trusting the kit's keys so
//! that mutations of valid kit bundles reach past the signature check. Must never
//! panic, hang or allocate without bound; any verdict is fine.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| makproxy_testkit::fuzz::bundle_reader(data));
