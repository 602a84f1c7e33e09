//! The bundle writer against the reader: many records through the compressor thread
//! verify and read back in order; an unfinished or refused bundle leaves no file behind;
//! and, for arbitrary records, whatever the writer accepts the reader reads back equal
//! (what it would refuse, the writer refuses first).

use makproxy_core::bundle::{self, BundleWriter, CilRecord, Kind, Limits};
use makproxy_core::Code;
use makproxy_testkit::{cil_header, cil_record, Keys};
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
        &keys.trusted(Kind::Cil, NOW),
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
    // Any other failure to place the archive is that failure, not "already exists".
    let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
    w.push(cil_record(1)).unwrap();
    let nowhere = t.path().join("no-such-folder").join("cil.zip");
    let e = w
        .finish(cil_header(NOW), &Keys::default().secure, &nowhere)
        .unwrap_err();
    assert_ne!(e.code, Code::BndExists, "{e}");
    assert_eq!(names_in(t.path()), ["cil.zip"]);
}

mod properties {
    use super::*;
    use makproxy_core::bundle::{
        BackendKind, FailureMessage, ProductName, RecordFailure, ReturnAnswer, ReturnRecord,
        ServiceCode, Source, MAX_FAILURE_MESSAGE, MAX_PRODUCT_NAME,
    };
    use makproxy_core::ids::{
        with_check_digits, ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId,
    };
    use makproxy_core::Code;
    use proptest::prelude::*;

    fn iid(digits: &[u8]) -> InstallationId {
        InstallationId::parse(&with_check_digits(digits, 7)).unwrap()
    }

    fn cil(
        handle: u64,
        digits: &[u8],
        product: Option<ProductName>,
        host: Option<String>,
    ) -> CilRecord {
        CilRecord {
            handle,
            installation_id: iid(digits),
            extended_product_id: ExtendedProductId::parse(
                "03612-03305-317-008912-02-1033-9200.0000-0662023",
            )
            .unwrap(),
            activation_id: Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").unwrap(),
            product,
            host: host.map(|h| HostName::parse(&h).unwrap()),
            channel: None,
            key_group: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Unicode product names of any length (control and bidi characters included):
        /// a name the reader would refuse cannot be built, every other one comes back.
        #[test]
        fn cil_records_written_are_read_back_equal(
            recs in proptest::collection::vec(
                (proptest::collection::vec(0u8..10, 54), proptest::option::of(any::<String>().prop_map(|s| s.chars().cycle().take(s.chars().count() * 40).collect::<String>())), proptest::option::of("[A-Z][A-Z0-9-]{0,14}")),
                1..20,
            )
        ) {
            let t = tempfile::tempdir().unwrap();
            let out = t.path().join("cil.zip");
            let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
            let mut kept = Vec::new();
            for (digits, product, host) in recs {
                let too_long = product.as_ref().is_some_and(|p| p.len() > MAX_PRODUCT_NAME);
                let product = match product.map(ProductName::parse).transpose() {
                    Ok(p) => { prop_assert!(!too_long); p }
                    Err(e) => { prop_assert!(too_long, "{e}"); continue; }
                };
                let r = cil(kept.len() as u64 + 1, &digits, product, host);
                w.push(r.clone()).unwrap();
                kept.push(r);
            }
            let keys = Keys::default();
            w.finish(cil_header(NOW), &keys.secure, &out).unwrap();
            let mut v = bundle::open(&out, Kind::Cil, &keys.trusted(Kind::Cil, NOW), NOW, &Limits::default()).unwrap();
            let mut back = Vec::new();
            v.records(|r: CilRecord| { back.push(r); Ok::<(), bundle::BundleError>(()) }).unwrap();
            prop_assert_eq!(back, kept);
        }

        /// Service codes and messages of any shape: what can be built is exactly what the
        /// reader takes, and it comes back equal.
        #[test]
        fn return_records_written_are_read_back_equal(
            recs in proptest::collection::vec(
                (proptest::collection::vec(0u8..10, 54), proptest::option::of(".{0,40}"), ".{0,1100}", any::<bool>()),
                1..12,
            )
        ) {
            let t = tempfile::tempdir().unwrap();
            let out = t.path().join("ret.zip");
            let mut w = BundleWriter::<ReturnRecord>::new(&out).unwrap();
            let mut kept = Vec::new();
            for (digits, service_code, message, with_cid) in recs {
                let handle = kept.len() as u64 + 1;
                // The rule from docs/bundle-format.md, not the implementation's.
                let refusable = !with_cid
                    && (message.len() > MAX_FAILURE_MESSAGE
                        || service_code.as_deref().is_some_and(|c| {
                            c.is_empty() || c.len() > 32 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        }));
                let answer = if with_cid {
                    ReturnAnswer::Confirmed(ConfirmationId::parse(&with_check_digits(&digits[..40], 6)).unwrap())
                } else {
                    let built = (|| Ok::<_, String>(RecordFailure {
                        code: Code::BkdRefused.into(),
                        service_code: service_code.clone().map(ServiceCode::parse).transpose()?,
                        message: FailureMessage::parse(message.clone())?,
                    }))();
                    match built {
                        Ok(f) => { prop_assert!(!refusable); ReturnAnswer::Failed(f) }
                        Err(e) => { prop_assert!(refusable, "{e}"); continue; }
                    }
                };
                let r = ReturnRecord {
                    handle,
                    installation_id: iid(&digits),
                    extended_product_id: ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap(),
                    answer,
                    source: Source::Backend,
                    backend: BackendKind::Microsoft,
                    simulated: false,
                };
                w.push(r.clone()).unwrap();
                kept.push(r);
            }
            let keys = Keys::default();
            let mut header = cil_header(NOW);
            header.site = "kit-gateway".into();
            header.answers = Some(bundle::Answers { bundle_id: bundle::BundleId::parse("0123456789abcdef0123456789abcdef").unwrap(), manifest_sha256: "0".repeat(64), site: "kit-site".into(), sequence: 1 });
            header.backend = Some(bundle::BackendInfo { name: "microsoft".into(), simulated: false, endpoint: None });
            w.finish(header, &keys.online, &out).unwrap();
            let mut v = bundle::open(&out, Kind::Return, &keys.trusted(Kind::Return, NOW), NOW, &Limits::default()).unwrap();
            let mut back = Vec::new();
            v.records(|r: ReturnRecord| { back.push(r); Ok::<(), bundle::BundleError>(()) }).unwrap();
            prop_assert_eq!(back, kept);
        }
    }
}

/// Writes a CIL bundle of `n` kit records into `dir` and returns its path.
fn bundle_of(dir: &Path, n: u64) -> std::path::PathBuf {
    let out = dir.join(format!("cil-{n}.zip"));
    let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
    for h in 1..=n {
        w.push(cil_record(h)).unwrap();
    }
    w.finish(cil_header(NOW), &Keys::default().secure, &out)
        .unwrap();
    out
}

/// The data entry's text, as stored.
fn records_text(path: &Path) -> String {
    use std::io::Read;
    let mut data = String::new();
    zip::ZipArchive::new(std::fs::File::open(path).unwrap())
        .unwrap()
        .by_name("records.jsonl")
        .unwrap()
        .read_to_string(&mut data)
        .unwrap();
    data
}

/// (uncompressed, compressed) size of an archive entry.
fn sizes(path: &Path, name: &str) -> (u64, u64) {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let e = z.by_name(name).unwrap();
    (e.size(), e.compressed_size())
}

/// Every limit is exact: a bundle at the limit opens, one byte (or one step of ratio)
/// over it does not; the ratio rule spares entries of 1 MiB or less.
#[test]
fn reader_limits_are_exact_and_the_ratio_rule_spares_small_entries() {
    let t = tempfile::tempdir().unwrap();
    let trusted = Keys::default().trusted(Kind::Cil, NOW);
    let open = |p: &Path, l: Limits| {
        bundle::open(p, Kind::Cil, &trusted, NOW, &l)
            .map(|v| format!("{v:?}"))
            .map_err(|e| e.code)
    };
    let small = bundle_of(t.path(), 20);
    let len = std::fs::metadata(&small).unwrap().len();
    let shown = open(
        &small,
        Limits {
            max_archive: len,
            ..Limits::default()
        },
    )
    .unwrap();
    assert!(
        shown.starts_with("Verified") && shown.contains("kit-site"),
        "{shown}"
    );
    assert_eq!(
        open(
            &small,
            Limits {
                max_archive: len - 1,
                ..Limits::default()
            }
        ),
        Err(Code::BndArchiveTooLarge)
    );
    let (manifest, _) = sizes(&small, "manifest.json");
    assert!(open(
        &small,
        Limits {
            max_manifest: manifest,
            ..Limits::default()
        }
    )
    .is_ok());
    assert_eq!(
        open(
            &small,
            Limits {
                max_manifest: manifest - 1,
                ..Limits::default()
            }
        ),
        Err(Code::BndEntryTooLarge)
    );
    assert!(
        open(
            &small,
            Limits {
                max_ratio: 1,
                ..Limits::default()
            }
        )
        .is_ok(),
        "entries of 1 MiB or less are not judged by their ratio"
    );
    // The longest record line (its newline not counted) is the smallest limit that reads.
    let data = records_text(&small);
    let longest = data.lines().map(str::len).max().unwrap();
    let read_all = |max_line: usize| {
        bundle::open(
            &small,
            Kind::Cil,
            &trusted,
            NOW,
            &Limits {
                max_line,
                ..Limits::default()
            },
        )
        .unwrap()
        .records(|_: CilRecord| Ok::<(), bundle::BundleError>(()))
        .map_err(|e| e.code)
    };
    assert_eq!(read_all(longest), Ok(()));
    assert_eq!(read_all(longest - 1), Err(Code::BndLineTooLong));
    let big = bundle_of(t.path(), 8_000);
    let (u, c) = sizes(&big, "records.jsonl");
    assert!(u > 1 << 20, "{u}");
    let ratio = u / c;
    assert!(open(
        &big,
        Limits {
            max_ratio: ratio,
            ..Limits::default()
        }
    )
    .is_ok());
    assert_eq!(
        open(
            &big,
            Limits {
                max_ratio: ratio - 1,
                ..Limits::default()
            }
        ),
        Err(Code::BndEntryTooLarge)
    );
}

/// `cosign --remove`: the cosignature by one key comes out, the others stay (renamed up
/// so the layout stays canonical) and still verify against the pinned keys, the manifest
/// is the same bytes; the signer's own signature and a key that made none are refused
/// (MP-BND-029) with the file unchanged. `cosigned_by` tells a cosignature by a key from
/// one that only claims its key ID.
#[test]
fn a_cosignature_is_removed_and_the_rest_still_verify() {
    use makproxy_core::keys::key_id;
    let t = tempfile::tempdir().unwrap();
    let k = Keys::default();
    let cil = bundle_of(t.path(), 3);
    let limits = Limits::default();
    // An unpinned colleague first, then the pinned one.
    assert_eq!(
        bundle::cosign(&cil, Kind::Cil, "kit-site", &k.stranger, NOW, &limits).unwrap(),
        2
    );
    assert_eq!(
        bundle::cosign(&cil, Kind::Cil, "kit-site", &k.colleague, NOW, &limits).unwrap(),
        3
    );
    let own = |p: &Path| {
        bundle::open_own(p, Kind::Cil, &k.trusted(Kind::Cil, NOW)[..1], NOW, &limits).unwrap()
    };
    let v = own(&cil);
    let ids: Vec<String> = v.cosignature_key_ids().map(str::to_string).collect();
    let (stranger, colleague) = (
        key_id(&k.stranger.verifying_key()),
        key_id(&k.colleague.verifying_key()),
    );
    assert_eq!(ids, [stranger.clone(), colleague.clone()]);
    assert!(v.cosigned_by(&k.colleague.verifying_key()));
    assert!(v.cosigned_by(&k.stranger.verifying_key()));
    assert!(!v.cosigned_by(&k.online.verifying_key()));
    let manifest = v.manifest_bytes.clone();
    // The gate refuses the stranger's cosignature (a key it does not pin).
    assert_eq!(
        bundle::open(&cil, Kind::Cil, &k.trusted(Kind::Cil, NOW), NOW, &limits)
            .unwrap_err()
            .code,
        Code::BndUntrustedKey
    );

    let before = std::fs::read(&cil).unwrap();
    let signer = key_id(&k.secure.verifying_key());
    for id in ["0123456789abcdef", signer.as_str()] {
        let e =
            bundle::remove_cosignature(&cil, Kind::Cil, "kit-site", id, NOW, &limits).unwrap_err();
        assert_eq!(e.code, Code::BndNoSuchCosignature, "{id}");
    }
    assert_eq!(std::fs::read(&cil).unwrap(), before, "nothing changed");

    assert_eq!(
        bundle::remove_cosignature(&cil, Kind::Cil, "kit-site", &stranger, NOW, &limits).unwrap(),
        2
    );
    let v = bundle::open(&cil, Kind::Cil, &k.trusted(Kind::Cil, NOW), NOW, &limits).unwrap();
    assert_eq!(v.manifest_bytes, manifest, "the manifest is the same bytes");
    assert_eq!(v.cosigners.len(), 1);
    assert_eq!(v.cosigners[0].name, "kit-colleague");
    assert_eq!(
        v.cosignature_key_ids().collect::<Vec<_>>(),
        [colleague.as_str()]
    );
    let mut z = zip::ZipArchive::new(std::fs::File::open(&cil).unwrap()).unwrap();
    let names: Vec<String> = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "records.jsonl",
            "manifest.json",
            "manifest.sig",
            "manifest.cosig-1"
        ],
        "renamed up, canonical order"
    );
    // The last one out: the signer's signature alone.
    assert_eq!(
        bundle::remove_cosignature(&cil, Kind::Cil, "kit-site", &colleague, NOW, &limits).unwrap(),
        1
    );
    assert_eq!(own(&cil).cosignature_key_ids().count(), 0);

    // A cosignature that claims the colleague's key ID but was made by another key (the
    // kit's case) is listed by the ID it claims and is not the colleague's.
    let forged = makproxy_testkit::cases(NOW)
        .into_iter()
        .find(|c| c.file == "MP-BND-021-cosignature-does-not-verify.zip")
        .unwrap();
    let p = t.path().join("forged.zip");
    std::fs::write(&p, &forged.bytes).unwrap();
    let v = own(&p);
    assert_eq!(
        v.cosignature_key_ids().collect::<Vec<_>>(),
        [colleague.as_str()]
    );
    assert!(!v.cosigned_by(&k.colleague.verifying_key()));
    assert!(
        !v.cosigned_by(&k.stranger.verifying_key()),
        "by its ID, not any key"
    );
}

/// Records are parsed block by block on several threads; what the caller sees is still
/// one sequential pass: every record in order, and a rule broken deep inside (line 700,
/// the third block) ends the walk there, after exactly the 699 records before it.
#[test]
fn records_parsed_in_parallel_arrive_in_order_and_stop_at_the_first_broken_line() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("cil-long-700.zip");
    let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
    for h in 1..=1000u64 {
        let mut r = cil_record(h);
        if h == 700 {
            // The one longer line.
            r.key_group = std::num::NonZeroU32::new(u32::MAX);
        }
        w.push(r).unwrap();
    }
    w.finish(cil_header(NOW), &Keys::default().secure, &out)
        .unwrap();
    let trusted = Keys::default().trusted(Kind::Cil, NOW);
    let walk = |max_line: usize| {
        let mut seen = Vec::new();
        let mut v = bundle::open(
            &out,
            Kind::Cil,
            &trusted,
            NOW,
            &Limits {
                max_line,
                ..Limits::default()
            },
        )
        .unwrap();
        let r = v
            .records(|r: CilRecord| {
                seen.push(r.handle);
                Ok::<(), bundle::BundleError>(())
            })
            .map_err(|e| (e.code, e.to_string()));
        // A second pass over the same verified copy sees the same.
        let mut again = Vec::new();
        let r2 = v
            .records(|r: CilRecord| {
                again.push(r.handle);
                Ok::<(), bundle::BundleError>(())
            })
            .map_err(|e| e.code);
        assert_eq!(seen, again);
        assert_eq!(r.as_ref().map(|_| ()).map_err(|e| e.0), r2);
        (seen, r)
    };
    let data = records_text(&out);
    let longest = data.lines().map(str::len).max().unwrap();
    assert_eq!(
        data.lines().position(|l| l.len() == longest),
        Some(699),
        "line 700 is the longest"
    );
    let (seen, r) = walk(longest);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(seen, (1..=1000).collect::<Vec<u64>>());
    let (seen, r) = walk(longest - 1);
    let (code, message) = r.unwrap_err();
    assert_eq!(code, Code::BndLineTooLong);
    assert!(message.contains("line 700 "), "{message}");
    assert_eq!(seen, (1..=699).collect::<Vec<u64>>());
}

/// `cosign` adds up to `MAX_COSIGNATURES` cosignatures (the signer's own signature not
/// counted) and refuses the next with MP-BND-005, leaving the file as it was.
#[test]
fn cosign_takes_exactly_the_most_cosignatures_a_bundle_holds() {
    use makproxy_core::bundle::MAX_COSIGNATURES;
    let t = tempfile::tempdir().unwrap();
    let cil = bundle_of(t.path(), 2);
    let limits = Limits::default();
    let operator = |n: u8| ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
    for n in 1..=MAX_COSIGNATURES {
        let signatures = bundle::cosign(
            &cil,
            Kind::Cil,
            "kit-site",
            &operator(n as u8),
            NOW,
            &limits,
        )
        .unwrap();
        assert_eq!(signatures, n + 1);
    }
    let before = std::fs::read(&cil).unwrap();
    let e = bundle::cosign(&cil, Kind::Cil, "kit-site", &operator(99), NOW, &limits).unwrap_err();
    assert_eq!(e.code, Code::BndTooManyEntries, "{e}");
    assert_eq!(std::fs::read(&cil).unwrap(), before);
}
