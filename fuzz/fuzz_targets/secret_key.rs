//! Secret key files of either side on arbitrary bytes, no passphrase at hand: the KDF parameters are checked before any work.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| makproxy_testkit::fuzz::secret_key(data));
