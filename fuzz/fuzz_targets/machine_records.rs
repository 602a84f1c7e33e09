//! Drop-folder input parsing (decoding, format detection, agent/WMI/CSV/deposit
//! parsers) on arbitrary bytes. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use makproxy_core::records::{decode_text, parse, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = decode_text(data) {
        if let Ok((_, parsed)) = parse(&text, "FUZZ-HOST") {
            if let Parsed::Products(list) = parsed {
                for p in list.into_iter().flatten() {
                    let _ = p.skip();
                }
            }
        }
    }
});
