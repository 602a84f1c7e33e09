//! What an operator reads during a round trip — summaries, verification reports, the
//! status table and the main error messages — pinned as a snapshot. Variable parts
//! (paths, bundle IDs, fingerprints, times) are normalised. After an intended change:
//! `MAKPROXY_BLESS=1 cargo test --test e2e snapshots` and review the diff.

use makproxy_e2e::{fixtures, root, Gap};

fn normalise(text: &str, g: &Gap) -> String {
    let tmp = g.dir.path().to_string_lossy().into_owned();
    let fixtures = fixtures().to_string_lossy().into_owned();
    let mut out = String::new();
    for line in text
        .replace(&tmp, "<tmp>")
        .replace(&fixtures, "<fixtures>")
        .lines()
    {
        let mut words: Vec<String> = Vec::new();
        for w in line.split(' ') {
            let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let hex = |n: usize| core.len() == n && core.bytes().all(|b| b.is_ascii_hexdigit());
            let w = if hex(32) {
                w.replace(core, "<id>")
            } else if core.len() == 19
                && core.split('-').count() == 4
                && core
                    .split('-')
                    .all(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                w.replace(core, "<fingerprint>")
            } else if core.len() == 20 && core.contains('T') && core.starts_with("20") {
                w.replace(core, "<time>")
            } else {
                w.to_string()
            };
            words.push(w);
        }
        out.push_str(words.join(" ").trim_end());
        out.push('\n');
    }
    out
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
        w.start_file(name, opts).unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap();
}
