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
    step(
        "secure verify (tampered)",
        g.secure(&[
            "verify",
            root()
                .join("fixtures/kit/MP-BND-011-tampered-results.zip")
                .to_str()
                .unwrap(),
        ]),
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
