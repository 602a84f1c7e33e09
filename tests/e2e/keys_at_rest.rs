//! Secret keys at rest: `init --encrypt` and `key passwd` seal the secret key with a
//! passphrase (scrypt, XChaCha20-Poly1305); signing then needs it, from the terminal or
//! `MAKPROXY_PASSPHRASE`, and never hangs waiting for one in a batch run.

use makproxy_e2e::{run_env, Gap};

const PASS: &str = "correct horse battery";

fn files_under(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn an_encrypted_secret_key_signs_only_with_its_passphrase() {
    let g = Gap::default();
    g.collect_fixture();
    let secret = g.path("secure-home/secret.key");
    let plain = std::fs::read_to_string(&secret).unwrap();
    let fingerprint =
        g.secure(&["--json", "key", "show"]).ok().json()["public_key"]["fingerprint"].clone();

    // Encrypt it: same key (nothing to trust again), the seed no longer in the file.
    let r = g
        .secure_env(
            &["--json", "key", "passwd"],
            &[("MAKPROXY_NEW_PASSPHRASE", PASS)],
        )
        .ok()
        .json();
    assert_eq!(
        (
            r["secret_key_encrypted"].as_bool(),
            r["was_encrypted"].as_bool()
        ),
        (Some(true), Some(false))
    );
    let sealed = std::fs::read_to_string(&secret).unwrap();
    let old_key: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert!(
        !sealed.contains(old_key["key"].as_str().unwrap()),
        "the seed is gone from the file"
    );
    assert!(sealed.contains("\"scrypt\""));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "replaced owner-only");
    }
    // key show needs no passphrase and shows the same key, its site and that it is
    // encrypted now (issue 29 §3).
    let shown = g.secure(&["--json", "key", "show"]).ok().json();
    assert_eq!(shown["public_key"]["fingerprint"], fingerprint);
    assert_eq!(shown["secret_key_encrypted"], true, "{shown}");
    let text = g.secure(&["key", "show"]).ok().stdout;
    assert!(
        text.contains("Home:        secure side of site plant-a")
            && text.contains("Secret key:  encrypted with a passphrase"),
        "{text}"
    );

    // Without the passphrase (a batch run, no terminal) pack stops at once, before
    // anything is written; with a wrong one likewise; with the right one it signs.
    let cil = g.p("cil.zip");
    let r = makproxy_e2e::run_within(
        30,
        "makproxy-secure",
        &["--home", &g.secure_home(), "pack", "--out", &cil],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("MP-KEY-010"), "{}", r.stderr);
    let r = g
        .secure_env(
            &["pack", "--out", &cil],
            &[("MAKPROXY_PASSPHRASE", "wrong horse battery")],
        )
        .code(1);
    assert!(r.stderr.contains("MP-KEY-011"), "{}", r.stderr);
    assert!(!std::path::Path::new(&cil).exists(), "nothing written");
    assert_eq!(g.count("packed"), 0, "nothing changed in the ledger");
    g.secure_env(&["pack", "--out", &cil], &[("MAKPROXY_PASSPHRASE", PASS)])
        .ok();
    g.online(&["inspect", &cil]).ok();

    // Changing the passphrase: the old one no longer opens it, the new one does.
    g.secure_env(
        &["key", "passwd"],
        &[
            ("MAKPROXY_PASSPHRASE", PASS),
            ("MAKPROXY_NEW_PASSPHRASE", "another long phrase"),
        ],
    )
    .ok();
    let pubfile = g.p("again.pub");
    g.secure_env(
        &["key", "export", "--out", &pubfile],
        &[("MAKPROXY_PASSPHRASE", PASS)],
    )
    .code(1);
    g.secure_env(
        &["key", "export", "--out", &pubfile],
        &[("MAKPROXY_PASSPHRASE", "another long phrase")],
    )
    .ok();
    // A too-short new passphrase changes nothing.
    let r = g
        .secure_env(
            &["key", "passwd"],
            &[
                ("MAKPROXY_PASSPHRASE", "another long phrase"),
                ("MAKPROXY_NEW_PASSPHRASE", "short"),
            ],
        )
        .code(1);
    assert!(r.stderr.contains("MP-KEY-012"), "{}", r.stderr);

    // The passphrase is nowhere in the home.
    for f in files_under(&g.path("secure-home")) {
        let text = String::from_utf8_lossy(&f);
        assert!(!text.contains(PASS) && !text.contains("another long phrase"));
    }

    // Back to unencrypted (allowed, and said so).
    let r = g
        .secure_env(
            &["key", "passwd", "--unencrypted"],
            &[("MAKPROXY_PASSPHRASE", "another long phrase")],
        )
        .ok();
    assert!(r.stdout.contains("WITHOUT a passphrase"), "{}", r.stdout);
    g.secure(&["key", "export", "--out", &g.p("plain.pub")])
        .ok();
}

#[test]
fn init_says_whether_the_secret_key_is_encrypted() {
    let t = tempfile::tempdir().unwrap();
    let home = |n: &str| t.path().join(n).to_string_lossy().into_owned();
    let plain = run_env(
        "makproxy-online",
        &["--home", &home("a"), "init", "--site", "a"],
        &[],
    );
    assert_eq!(plain.code, 0);
    assert!(
        plain.stdout.contains("Secret key:  NOT encrypted"),
        "{}",
        plain.stdout
    );
    let short = run_env(
        "makproxy-online",
        &["--home", &home("b"), "init", "--site", "b", "--encrypt"],
        &[("MAKPROXY_PASSPHRASE", "short")],
    );
    assert_eq!(short.code, 1);
    assert!(short.stderr.contains("MP-KEY-012"), "{}", short.stderr);
    assert!(!t.path().join("b").exists(), "no home made");
    let none = run_env(
        "makproxy-online",
        &["--home", &home("c"), "init", "--encrypt"],
        &[],
    );
    assert_eq!(
        none.code, 1,
        "no terminal and no variable: refused, not hung"
    );
    let enc = run_env(
        "makproxy-online",
        &[
            "--home",
            &home("d"),
            "--json",
            "init",
            "--site",
            "d",
            "--encrypt",
        ],
        &[("MAKPROXY_PASSPHRASE", PASS)],
    );
    assert_eq!(enc.code, 0, "{}", enc.stderr);
    let doc: serde_json::Value = serde_json::from_str(&enc.stdout).unwrap();
    assert_eq!(doc["secret_key_encrypted"], true);
    let secret = std::fs::read_to_string(t.path().join("d/secret.key")).unwrap();
    assert!(secret.contains("\"version\":2"));
}

/// Adversary: a hostile gateway program (`--backend command`), a third party's code by
/// design. The online key's passphrase, given to the batch run in MAKPROXY_PASSPHRASE,
/// and any other variable of the operator's session, never reach it: the passphrase
/// variables leave the environment when the binary starts, and a child gets only the
/// allowlist of docs/backends.md plus MAKPROXY_GATEWAY_* settings.
#[test]
fn a_gateway_program_sees_no_passphrase_and_only_the_allowlisted_environment() {
    let g = Gap::default();
    g.online_env(&["key", "passwd"], &[("MAKPROXY_NEW_PASSPHRASE", PASS)])
        .ok();
    let cil = g.packed_fixture();
    let dump = g.p("gateway-env.txt");
    let gateway = makproxy_e2e::example("echo_gateway");
    g.online_env(
        &[
            "activate",
            &cil,
            "--out",
            &g.p("ret.zip"),
            "--backend",
            "command",
            "--command",
            &gateway,
            "--command-arg",
            "--dump-env",
            "--command-arg",
            &dump,
        ],
        &[
            ("MAKPROXY_PASSPHRASE", PASS),
            ("MAKPROXY_NEW_PASSPHRASE", "another secret phrase"),
            ("makproxy_passphrase", "lower-case spelling"),
            ("SESSION_TOKEN", "operator-session-credential"),
            ("MAKPROXY_GATEWAY_TENANT", "plant-a-tenant"),
        ],
    )
    .code(4); // the example gateway refuses some IIDs: partial
    let seen = std::fs::read_to_string(&dump).unwrap();
    for secret in [
        PASS,
        "another secret phrase",
        "lower-case spelling",
        "operator-session-credential",
    ] {
        assert!(
            !seen.contains(secret),
            "the gateway saw {secret:?}:\n{seen}"
        );
    }
    assert!(
        !seen.to_ascii_uppercase().contains("MAKPROXY_PASSPHRASE"),
        "{seen}"
    );
    assert!(
        seen.contains("env MAKPROXY_GATEWAY_TENANT=plant-a-tenant"),
        "{seen}"
    );
    assert!(seen.lines().any(|l| l.starts_with("env PATH=")), "{seen}");
    assert!(
        !seen.lines().any(|l| l.starts_with("env NO_COLOR=")),
        "not allowlisted: {seen}"
    );
    // The run signed its return with the encrypted key: the passphrase was read.
    g.secure(&["verify", &g.p("ret.zip")]).ok();
}
