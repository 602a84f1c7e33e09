//! Differential test of the container (docs/bundle-format.md, "Container"): whatever
//! makproxy accepts, independent zip readers from Debian (Python's zipfile, Info-ZIP
//! `unzip`, 7-Zip, bsdtar) read alike: the same entries, each with the same bytes, and
//! no warning. Adversary: a media handler who rewrites a bundle so that a reviewer's
//! tool and makproxy see different contents. The bundles: every valid case of the
//! malicious-bundle kit and a round trip made now (packed, cosigned, answered).
//!
//! The readers are required: `.ci/run` installs them (p7zip-full, libarchive-tools,
//! unzip); without them this test fails and says so, it never passes without looking.

use makproxy_core::bundle::{self, Kind, Limits};
use makproxy_e2e::{run, Gap};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// What one reader saw: entry names and their bytes, and whether it warned.
type Listing = BTreeMap<String, Vec<u8>>;

fn tool(program: &str, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is needed for the differential test (apt-get install p7zip-full libarchive-tools unzip; .ci/run does): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), out.stdout, text)
}

fn python(path: &Path) -> Listing {
    let script = r#"
import sys, zipfile, json, base64
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None, "bad CRC"
print(json.dumps({i.filename: base64.b64encode(z.read(i)).decode() for i in z.infolist()}))
"#;
    let (ok, out, text) = tool("python3", &["-c", script, path.to_str().unwrap()]);
    assert!(ok, "python zipfile: {text}");
    let v: BTreeMap<String, String> = serde_json::from_slice(&out).unwrap();
    use base64::Engine;
    v.into_iter()
        .map(|(k, b)| {
            (
                k,
                base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
            )
        })
        .collect()
}

/// Names from a reader's plain listing, then each entry's bytes through the same reader.
fn by_name(list: (&str, &[&str]), extract: impl Fn(&str) -> (bool, Vec<u8>, String)) -> Listing {
    let (ok, out, text) = tool(list.0, list.1);
    assert!(ok, "{} listing: {text}", list.0);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|name| {
            let (ok, bytes, text) = extract(name);
            assert!(ok, "{} extracting {name}: {text}", list.0);
            (name.to_string(), bytes)
        })
        .collect()
}

/// A reader's own integrity test passed with its all-clear line and no warning.
fn no_warning(what: &str, all_clear: &str, (ok, _, text): (bool, Vec<u8>, String)) {
    let lower = text.to_ascii_lowercase();
    assert!(
        ok && text.contains(all_clear)
            && !lower.contains("warning")
            && !lower.contains("data after"),
        "{what} warned:\n{text}"
    );
}

/// Every reader's listing of `path`, after each one's own integrity test.
fn listings(path: &Path) -> Vec<(&'static str, Listing)> {
    let p = path.to_str().unwrap();
    no_warning("unzip -t", "No errors detected", tool("unzip", &["-t", p]));
    no_warning("7z t", "Everything is Ok", tool("7z", &["t", "-bd", p]));
    let unzip = by_name(("unzip", &["-Z1", p]), |n| tool("unzip", &["-p", p, n]));
    let seven = {
        let (ok, out, text) = tool("7z", &["l", "-ba", "-slt", p]);
        assert!(ok, "7z l: {text}");
        let names: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("Path = ").map(str::to_string))
            .collect();
        names
            .into_iter()
            .map(|n| {
                let (ok, bytes, text) = tool("7z", &["x", "-so", "-bd", p, &n]);
                assert!(ok, "7z x {n}: {text}");
                (n, bytes)
            })
            .collect()
    };
    let bsdtar = by_name(("bsdtar", &["-tf", p]), |n| tool("bsdtar", &["-xOf", p, n]));
    vec![
        ("python zipfile", python(path)),
        ("unzip", unzip),
        ("7z", seven),
        ("bsdtar", bsdtar),
    ]
}

/// makproxy accepts `path`; every reader sees exactly what makproxy verified.
fn readers_agree(
    path: &Path,
    kind: Kind,
    trusted: &[makproxy_core::keys::Trusted],
    now: time::OffsetDateTime,
) {
    let v = bundle::open(path, kind, trusted, now, &Limits::default())
        .unwrap_or_else(|e| panic!("{}: makproxy refuses it: {e}", path.display()));
    let all = listings(path);
    let (_, first) = &all[0];
    for (reader, l) in &all {
        assert_eq!(
            l,
            first,
            "{}: {reader} differs from python zipfile",
            path.display()
        );
    }
    assert_eq!(
        first["manifest.json"],
        v.manifest_bytes,
        "{}",
        path.display()
    );
    for e in &v.manifest.entries {
        let got = sha2::Sha256::digest(&first[&e.name]);
        use sha2::Digest;
        assert_eq!(
            makproxy_core::bundle::hex(&got),
            e.sha256,
            "{}: {}",
            path.display(),
            e.name
        );
    }
    assert!(first.contains_key("manifest.sig"));
    assert_eq!(
        first.len(),
        2 + v.manifest.entries.len() + v.cosigners.len()
    );
}

#[test]
fn independent_zip_readers_see_what_makproxy_verified() {
    // The kit's valid cases, with the kit's keys and clock.
    let now = time::macros::datetime!(2026-11-22 00:00 UTC);
    let keys = makproxy_testkit::Keys::default();
    let dir = makproxy_e2e::fixtures().join("kit");
    let mut n = 0;
    for case in makproxy_testkit::cases(now)
        .iter()
        .filter(|c| c.expect.is_none())
    {
        readers_agree(
            &dir.join(&case.file),
            case.reader,
            &keys.trusted(case.reader, now),
            now,
        );
        n += 1;
    }
    assert!(n >= 4, "the kit has {n} valid cases");

    // A round trip made now: packed, cosigned by a colleague, answered.
    let g = Gap::default();
    let cil = g.packed_fixture();
    let anna = g.p("anna");
    run(
        "makproxy-secure",
        &["--home", &anna, "init", "--site", "plant-a"],
    )
    .ok();
    let anna_pub = g.p("anna.pub");
    run(
        "makproxy-secure",
        &["--home", &anna, "key", "export", "--out", &anna_pub],
    )
    .ok();
    g.online(&["trust", "add", &anna_pub, "--name", "plant-a-anna"])
        .ok();
    run("makproxy-secure", &["--home", &anna, "cosign", &cil]).ok();
    let ret = g.p("ret.zip");
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    // Read as the binaries read them (their own verification passed above); the
    // listings must agree with each other and with what was signed.
    for f in [&cil, &ret] {
        let all = listings(Path::new(f));
        for (reader, l) in &all[1..] {
            assert_eq!(*l, all[0].1, "{f}: {reader} differs from python zipfile");
        }
    }
    g.secure(&["verify", &ret]).ok();
}

/// The test has teeth: a bundle makproxy refuses for bytes after its deflate stream is
/// one that an independent reader reads differently or warns about, which is why it
/// is refused. (If every reader accepted it silently, the refusal would be the only
/// defence; it is, but the differential check above would not have caught it.)
#[test]
fn the_readers_do_notice_what_the_kit_refuses() {
    let dir = makproxy_e2e::fixtures().join("kit");
    let p = dir.join("MP-BND-017-data-after-deflate-stream.zip");
    let s = p.to_str().unwrap();
    let seven = tool("7z", &["t", "-bd", s]);
    let lower = seven.2.to_ascii_lowercase();
    assert!(
        !seven.0
            || lower.contains("warning")
            || lower.contains("error")
            || lower.contains("data after"),
        "7-Zip notices the hidden bytes:\n{}",
        seven.2
    );
}
