//! Runs the malicious-bundle kit through the reader: every case is rejected with its
//! documented code (or verifies, for the valid ones) and nothing panics. The committed
//! files in fixtures/kit/ must be exactly what the generator makes for the pinned
//! clock, so the kit on disk is the kit that is tested.

use makproxy_core::bundle::{self, CilRecord, Kind, Limits, ReturnRecord};
use makproxy_core::Code;
use makproxy_testkit::{cases, Keys};
use std::path::PathBuf;
use time::macros::datetime;

const PINNED: time::OffsetDateTime = datetime!(2026-11-22 00:00 UTC);

fn kit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kit")
}

fn verdict(path: &std::path::Path, reader: Kind) -> Result<(), Code> {
    let keys = Keys::default();
    let mut v = bundle::open(
        path,
        reader,
        &keys.trusted(reader, PINNED),
        PINNED,
        &Limits::default(),
    )
    .map_err(|e| e.code)?;
    match reader {
        Kind::Cil => v.records(|_: CilRecord| Ok::<(), bundle::BundleError>(())),
        Kind::Return => v.records(|_: ReturnRecord| Ok::<(), bundle::BundleError>(())),
    }
    .map_err(|e| e.code)
}

#[test]
fn committed_kit_matches_generator_and_every_case_gets_its_verdict() {
    let dir = kit_dir();
    let regen = std::env::var_os("MAKPROXY_REGEN_KIT").is_some();
    if regen {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let all = cases(PINNED);
    assert!(all.len() >= 40, "kit shrank to {}", all.len());
    let mut names = std::collections::HashSet::new();
    for case in &all {
        assert!(
            names.insert(case.file.clone()),
            "duplicate kit name {}",
            case.file
        );
        let path = dir.join(&case.file);
        if regen {
            std::fs::write(&path, &case.bytes).unwrap();
        }
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|_| panic!("{} missing; run with MAKPROXY_REGEN_KIT=1", case.file));
        assert!(
            on_disk == case.bytes,
            "{} differs from the generator; run with MAKPROXY_REGEN_KIT=1",
            case.file
        );
        let got = std::panic::catch_unwind(|| verdict(&path, case.reader))
            .unwrap_or_else(|_| panic!("{} panicked the reader", case.file));
        assert_eq!(got.err(), case.expect, "{}", case.file);
    }
    // Nothing stale lies in the folder.
    for e in std::fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(n == "README.md" || names.contains(&n), "stale kit file {n}");
    }
}

#[test]
fn every_bundle_rejection_code_is_exercised_by_the_kit() {
    let covered: std::collections::HashSet<Code> =
        cases(PINNED).iter().filter_map(|c| c.expect).collect();
    for code in Code::ALL
        .iter()
        .filter(|c| c.as_str().starts_with("MP-BND-"))
    {
        // BndExists is a writer-side refusal, tested in the round-trip tests; BndQuorum is
        // a site's policy (`trust require`), not the format's, tested end to end
        // (tests/e2e/cosign.rs), as is BndNoSuchCosignature (a `cosign --remove` refusal).
        if matches!(
            code,
            Code::BndArchiveTooLarge
                | Code::BndExists
                | Code::BndQuorum
                | Code::BndNoSuchCosignature
        ) {
            continue;
        }
        assert!(covered.contains(code), "no kit case for {code}");
    }
}

#[test]
fn archive_size_limit() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("big.zip");
    std::fs::write(&p, &cases(PINNED)[0].bytes).unwrap();
    let limits = Limits {
        max_archive: 100,
        ..Limits::default()
    };
    let e = bundle::open(
        &p,
        Kind::Cil,
        &Keys::default().trusted(Kind::Cil, PINNED),
        PINNED,
        &limits,
    )
    .unwrap_err();
    assert_eq!(e.code, Code::BndArchiveTooLarge);
}

#[test]
fn records_come_from_the_verified_copy_even_if_the_file_changes_underneath() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("cil.zip");
    let valid = cases(PINNED)
        .into_iter()
        .find(|c| c.expect.is_none() && c.reader == Kind::Cil)
        .expect("the kit has a valid CIL bundle");
    std::fs::write(&p, &valid.bytes).unwrap();
    let keys = Keys::default();
    let mut v = bundle::open(
        &p,
        Kind::Cil,
        &keys.trusted(Kind::Cil, PINNED),
        PINNED,
        &Limits::default(),
    )
    .unwrap();
    let mut first = Vec::new();
    v.records(|r: CilRecord| {
        first.push(r.installation_id.digits().to_string());
        Ok::<(), bundle::BundleError>(())
    })
    .unwrap();
    assert!(!first.is_empty());
    // Rewrite the same file (same inode) between passes, as a local attacker could.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all(&vec![b'X'; valid.bytes.len()]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut second = Vec::new();
    v.records(|r: CilRecord| {
        second.push(r.installation_id.digits().to_string());
        Ok::<(), bundle::BundleError>(())
    })
    .unwrap();
    assert_eq!(
        first, second,
        "the second pass saw exactly the verified records"
    );
}

#[test]
fn the_kind_of_a_bundle_is_guessed_from_its_data_entry() {
    let limits = makproxy_core::bundle::Limits::default();
    let kind = |f: &str| makproxy_core::bundle::peek_kind(&kit_dir().join(f), &limits).unwrap();
    assert_eq!(kind("ok-valid-cil.zip"), Kind::Cil);
    assert_eq!(kind("ok-valid-return.zip"), Kind::Return);
}
