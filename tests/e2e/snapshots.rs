//! What an operator reads during a round trip — summaries, verification reports, the
//! status table and the main error messages — pinned as a snapshot. Variable parts
//! (paths, bundle IDs, fingerprints, times) are normalised. After an intended change:
//! `MAKPROXY_BLESS=1 cargo test --test e2e snapshots` and review the diff.

use makproxy_e2e::{fixtures, root, Gap};

fn normalise(text: &str, g: &Gap) -> String {
    makproxy_e2e::normalise(text, g.dir.path())
}

#[test]
fn operator_messages_of_a_round_trip() {
    let g = Gap::default();
    let mut log = String::new();
    let mut step = |title: &str, r: makproxy_e2e::Run| {
        log.push_str(&format!(
            "$ {title}  (exit {})\n{}{}",
            r.code, r.stdout, r.stderr
        ));
    };
    let (cil, ret, dep) = (g.p("cil.zip"), g.p("ret.zip"), g.p("dep"));
    step(
        "secure collect drop-broken",
        g.secure(&["collect", fixtures().join("drop-broken").to_str().unwrap()]),
    );
    step(
        "secure collect drop",
        g.secure(&["collect", fixtures().join("drop").to_str().unwrap()]),
    );
    step("secure pack", g.secure(&["pack", "--out", &cil]));
    step(
        "secure pack (again)",
        g.secure(&["pack", "--out", &g.p("cil2.zip")]),
    );
    step("online inspect", g.online(&["inspect", &cil]));
    step(
        "online activate",
        g.online(&[
            "activate",
            &cil,
            "--out",
            &ret,
            "--backend",
            "simulator",
            "--sim-activations",
            "12",
        ]),
    );
    step("secure verify", g.secure(&["verify", &ret]));
    step(
        "secure apply",
        g.secure(&["apply", &ret, "--deposit-dir", &dep]),
    );
    step(
        "secure apply (again)",
        g.secure(&["apply", &ret, "--deposit-dir", &dep]),
    );
    step("secure status", g.secure(&["status"]));
    // The run's own return with one CID digit changed in results.jsonl; manifest and
    // signature kept: the signature verifies, the data entry's hash does not.
    let tampered = g.p("tampered.zip");
    tamper_results(&ret, &tampered);
    let t = g.secure(&["verify", &tampered]);
    assert!(t.stderr.contains("error[MP-BND-011]"), "{}", t.stderr);
    step("secure verify (tampered)", t);
    // Fingerprints are normalised in the snapshot, so check the real one here: inspect
    // shows the signer's fingerprint, the one `key show` reads out on the other side.
    let shown = g.online(&["inspect", &cil]).ok().stdout;
    let own = g.secure(&["--json", "key", "show"]).ok().json();
    let fp = own["public_key"]["fingerprint"].as_str().unwrap();
    assert!(
        shown.contains(&format!("Fingerprint: {fp}")),
        "{fp} not in:\n{shown}"
    );
    step(
        "online activate (exists)",
        g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"]),
    );
    let got = normalise(&log, &g);
    let path = root().join("tests/snapshots/round-trip.txt");
    if std::env::var_os("MAKPROXY_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("snapshot missing; run with MAKPROXY_BLESS=1");
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!("operator output changed at line {}:\n  got:  {:?}\n  want: {:?}\n(MAKPROXY_BLESS=1 to accept)", first + 1, got.lines().nth(first), want.lines().nth(first));
    }
}

/// Rewrites `from` into `to` with one digit of the first CID in results.jsonl changed,
/// every other entry byte for byte (stored, in the canonical layout the reader wants).
fn tamper_results(from: &str, to: &str) {
    use std::io::{Read, Write};
    let mut z = zip::ZipArchive::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut entries = Vec::new();
    for i in 0..z.len() {
        let mut e = z.by_index(i).unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if e.name() == "results.jsonl" {
            let text = String::from_utf8(data).unwrap();
            let at = text.find("\"confirmation_id\":\"").unwrap() + 19;
            let mut bytes = text.into_bytes();
            bytes[at] = if bytes[at] == b'9' {
                b'8'
            } else {
                bytes[at] + 1
            };
            data = bytes;
        }
        entries.push((e.name().to_string(), data));
    }
    let mut w = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o644);
    for (name, data) in entries {
        // As the writer stores them: the data deflated, so only the hash is wrong.
        let opts = if name == "results.jsonl" {
            opts.compression_method(zip::CompressionMethod::Deflated)
        } else {
            opts
        };
        w.start_file(name, opts).unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap();
}

/// Errors an operator can provoke by following the guide with a slip: each prints
/// `error[CODE]: cause`, a hint and a link to a heading that exists in docs/errors.md,
/// and under `--json` the same code (never null) and exit in the document.
#[test]
fn every_error_an_operator_can_provoke_prints_a_code_and_a_fix() {
    let g = Gap::default();
    g.collect_fixture();
    let errors_md = std::fs::read_to_string(root().join("docs/errors.md")).unwrap();
    let missing = g.p("media/nofile.zip");
    let taken = g.p("secure.pub");
    let cases: Vec<(bool, Vec<&str>, i32)> = vec![
        (
            true,
            vec!["trust", "add", "media/nofile.pub", "--name", "x"],
            1,
        ),
        (true, vec!["collect", "/nonexistent"], 2),
        (true, vec!["verify", &missing], 1),
        (true, vec!["key", "export", "--out", &taken], 1),
        (true, vec!["status", "--csv", "--state", "nosuchstate"], 2),
        (true, vec!["no-such-command"], 2),
        (true, vec!["apply"], 2),
        (
            false,
            vec![
                "activate",
                &missing,
                "--out",
                "r.zip",
                "--backend",
                "command",
            ],
            2,
        ),
        (
            false,
            vec!["remaining", "--pid", "1", "--backend", "simulator"],
            2,
        ),
        (false, vec!["inspect", &missing], 1),
    ];
    for (secure, args, exit) in cases {
        for json in [false, true] {
            let mut a = args.clone();
            if json {
                a.insert(0, "--json");
            }
            let r = if secure { g.secure(&a) } else { g.online(&a) };
            assert_eq!(r.code, exit, "{a:?}: {}", r.stderr);
            let first = r.stderr.lines().next().unwrap_or("");
            let code = first
                .strip_prefix("error[")
                .and_then(|s| s.split(']').next())
                .unwrap_or_else(|| panic!("{a:?}: no code on {first:?}"));
            assert!(code.starts_with("MP-"), "{a:?}: {first}");
            assert!(
                r.stderr.contains("\n  hint: "),
                "{a:?}: no hint\n{}",
                r.stderr
            );
            let anchor = format!("see docs/errors.md#{}", code.to_ascii_lowercase());
            assert!(r.stderr.contains(&anchor), "{a:?}: no link");
            assert!(
                errors_md.contains(&format!("\n### {code}\n")),
                "{code} has no heading in docs/errors.md"
            );
            if json {
                let d = r.json();
                assert_eq!(d["error"]["code"], code, "{a:?}");
                assert_eq!(d["error"]["exit"], exit, "{a:?}");
                assert!(d["error"]["hint"].as_str().is_some_and(|h| !h.is_empty()));
            }
        }
    }
    // The wrong side's home is named as such, with what to do.
    let home = g.secure_home();
    let r = makproxy_e2e::run("makproxy-online", &["--home", &home, "journal", "list"]).code(2);
    assert!(r.stderr.starts_with("error[MP-KEY-005]"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("hint: this is the secure side's home: use it with makproxy-secure"),
        "{}",
        r.stderr
    );
}
