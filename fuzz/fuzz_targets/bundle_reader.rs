//! The bundle reader on arbitrary bytes, as both kinds, trusting the kit's keys so
//! that mutations of valid kit bundles reach past the signature check. Must never
//! panic, hang or allocate without bound; any verdict is fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use makproxy_core::bundle::{self, CilRecord, Kind, Limits, ReturnRecord};
use makproxy_core::testkit::Keys;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::default();
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(data).expect("write");
    let now = time::macros::datetime!(2026-11-22 00:00 UTC);
    let limits = Limits { max_archive: 1 << 20, max_data: 4 << 20, ..Limits::default() };
    for kind in [Kind::Cil, Kind::Return] {
        if let Ok(mut v) = bundle::open(f.path(), kind, &keys.trusted(kind), now, &limits) {
            let _ = match kind {
                Kind::Cil => v.records(|_: CilRecord| Ok::<(), bundle::BundleError>(())),
                Kind::Return => v.records(|_: ReturnRecord| Ok::<(), bundle::BundleError>(())),
            };
        }
    }
});
