//! The bundle writer against the reader: many records through the compressor thread
//! verify and read back in order; an unfinished or refused bundle leaves no file behind.

use makproxy_core::bundle::{self, BundleWriter, CilRecord, Kind, Limits};
use makproxy_core::testkit::{cil_header, cil_record, Keys};
use makproxy_core::Code;
use std::path::Path;
use time::macros::datetime;

const NOW: time::OffsetDateTime = datetime!(2026-11-22 00:00 UTC);

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn many_records_through_the_compressor_read_back_in_order() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("cil.zip");
    let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
    // About 2 MB: several hand-overs to the compressor thread, enough to fill its queue.
    let n = 8_000;
    for h in 1..=n {
        w.push(cil_record(h)).unwrap();
    }
    let keys = Keys::default();
    let written = w.finish(cil_header(NOW), &keys.secure, &out).unwrap();
    assert_eq!(written.manifest.records, n);
    assert_eq!(names_in(t.path()), ["cil.zip"], "no temporary file is left");
    let mut v = bundle::open(
        &out,
        Kind::Cil,
        &keys.trusted(Kind::Cil),
        NOW,
        &Limits::default(),
    )
    .unwrap();
    let mut next = 1;
    v.records(|r: CilRecord| {
        assert_eq!(r, cil_record(next));
        next += 1;
        Ok::<(), bundle::BundleError>(())
    })
    .unwrap();
    assert_eq!(next, n + 1);
}

#[test]
fn an_unfinished_or_refused_bundle_leaves_no_file() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("cil.zip");
    {
        let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
        for h in 1..=5000 {
            w.push(cil_record(h)).unwrap();
        }
        // Dropped without finish (an error in the caller).
    }
    assert!(names_in(t.path()).is_empty(), "{:?}", names_in(t.path()));
    std::fs::write(&out, b"an earlier bundle").unwrap();
    let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
    w.push(cil_record(1)).unwrap();
    let e = w
        .finish(cil_header(NOW), &Keys::default().secure, &out)
        .unwrap_err();
    assert_eq!(e.code, Code::BndExists);
    assert_eq!(std::fs::read(&out).unwrap(), b"an earlier bundle");
    assert_eq!(names_in(t.path()), ["cil.zip"]);
}
