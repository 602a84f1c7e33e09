//! Key rotation and revocation statements carried across the gap: `key rotate` /
//! `key revoke` on one side, `trust accept` on the other; forged, replayed, chained and
//! out-of-order statements; the retired key verifies only what it signed before.

use makproxy_e2e::{run, Gap};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_rotated_key_is_accepted_across_the_gap_and_signs_nothing_new() {
    let g = Gap::default();
    g.collect_fixture();
    let before = g.p("cil-before.zip");
    g.secure(&["pack", "--out", &before, "--limit", "3"]).ok();
    // A copy of the home as it was: the old key, in the wrong hands after the rotation.
    copy_dir(&g.path("secure-home"), &g.path("stolen-home"));

    let stmt = g.p("rotation.json");
    let r = g
        .secure(&[
            "--json",
            "key",
            "rotate",
            "--reason",
            "yearly rotation",
            "--out",
            &stmt,
        ])
        .ok()
        .json();
    let (old_fp, new_fp) = (
        r["retired"]["fingerprint"].clone(),
        r["public_key"]["fingerprint"].clone(),
    );
    assert_ne!(old_fp, new_fp);
    assert_eq!(
        g.secure(&["--json", "key", "show"]).ok().json()["public_key"]["fingerprint"],
        new_fp
    );
    let key_of = |home: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(g.path(&format!("{home}/secret.key"))).unwrap(),
        )
        .unwrap()["key"]
            .clone()
    };
    assert_ne!(
        key_of("secure-home"),
        key_of("stolen-home"),
        "a new secret key"
    );
    assert!(
        !g.path("secure-home/rotation").exists(),
        "the staging folder is gone"
    );

    // It names who must accept it: the one site this home pins.
    assert_eq!(r["peers"], serde_json::json!(["gateway"]), "{r}");
    // Before the statement is accepted, a bundle signed by the new key is refused, and
    // the hint says to accept the statement, not to pin a second key (issue 29 §2).
    let early = g.p("cil-early.zip");
    g.secure(&["pack", "--out", &early, "--limit", "1"]).ok();
    let refused = g.online(&["inspect", &early]).code(3);
    assert!(
        refused.stderr.contains("MP-BND-022") && refused.stderr.contains("trust accept STATEMENT"),
        "{}",
        refused.stderr
    );

    // The online side accepts it: the successor pinned under the same name.
    let a = g.online(&["--json", "trust", "accept", &stmt]).ok().json();
    assert_eq!(
        (a["name"].as_str(), a["kind"].as_str()),
        (Some("plant-a"), Some("rotate"))
    );
    assert_eq!(a["successor"]["fingerprint"], new_fp);
    assert_eq!(a["reason"], "yearly rotation");
    let list = g.online(&["--json", "trust", "list"]).ok().json();
    let entries = list["trusted"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|t| t["fingerprint"] == old_fp && t["retired_at"].is_string()));
    assert!(entries
        .iter()
        .any(|t| t["fingerprint"] == new_fp && t.get("retired_at").is_none()));

    // A bundle from before still verifies on both sides; new bundles carry the new key.
    g.online(&["inspect", &before]).ok();
    g.secure(&["verify", &before]).ok();
    let after = g.p("cil-after.zip");
    g.secure(&["pack", "--out", &after, "--limit", "3"]).ok();
    let ins = g.online(&["--json", "inspect", &after]).ok().json();
    assert_eq!(ins["signer"]["fingerprint"], new_fp);

    // The old key signing later is refused, even though it is still in the list.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let stolen = g.p("stolen-home");
    let late = g.p("cil-late.zip");
    run(
        "makproxy-secure",
        &["--home", &stolen, "pack", "--out", &late, "--repack"],
    )
    .ok();
    let r = g.online(&["inspect", &late]).code(3);
    assert!(r.stderr.contains("MP-BND-025"), "{}", r.stderr);

    // Replayed: the same statement again changes nothing, and, like a return applied
    // twice, is not an error (exit 0; issue 29 §3).
    let before = g.online(&["--json", "trust", "list"]).ok().stdout;
    let r = g.online(&["--json", "trust", "accept", &stmt]).ok().json();
    assert_eq!(r["already_applied"], true, "{r}");
    assert_eq!(r["retired_fingerprint"], old_fp);
    assert_eq!(g.online(&["--json", "trust", "list"]).ok().stdout, before);
    // A different statement about the same old key (made with the stolen copy: a
    // successor of the thief's) is no replay: refused, exit 1, and trust unchanged.
    let forged = g.p("stolen-rotation.json");
    makproxy_e2e::run(
        "makproxy-secure",
        &[
            "--home",
            &g.p("stolen-home"),
            "key",
            "rotate",
            "--reason",
            "mine now",
            "--out",
            &forged,
        ],
    )
    .ok();
    let r = g.online(&["--json", "trust", "accept", &forged]).code(1);
    assert_eq!(r.json()["error"]["code"], "MP-KEY-018", "{}", r.stdout);
    assert_eq!(g.online(&["--json", "trust", "list"]).ok().stdout, before);
}

#[test]
fn statements_apply_in_order_and_forged_ones_never() {
    let g = Gap::default();
    let (s1, s2) = (g.p("s1.json"), g.p("s2.json"));
    g.secure(&["key", "rotate", "--reason", "first", "--out", &s1])
        .ok();
    g.secure(&["key", "rotate", "--reason", "second", "--out", &s2])
        .ok();

    // Forged: the payload altered after signing (a later time, another reason).
    let text = std::fs::read_to_string(&s1).unwrap();
    let env: serde_json::Value = serde_json::from_str(&text).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    let mut forged = env.clone();
    forged["payload"] = b64.encode(payload.replace("first", "fir5t")).into();
    let fp = g.p("forged.json");
    std::fs::write(&fp, forged.to_string()).unwrap();
    let r = g.online(&["trust", "accept", &fp]).code(1);
    assert!(r.stderr.contains("MP-KEY-013"), "{}", r.stderr);

    // Out of order: the second names a key not pinned here yet.
    let r = g.online(&["trust", "accept", &s2]).code(1);
    assert!(r.stderr.contains("MP-KEY-015"), "{}", r.stderr);
    // Chained, in order: both apply; the pinned key is the newest.
    g.online(&["trust", "accept", &s1]).ok();
    g.online(&["trust", "accept", &s2]).ok();
    let cur = g.secure(&["--json", "key", "show"]).ok().json()["public_key"]["fingerprint"].clone();
    let list = g.online(&["--json", "trust", "list"]).ok().json();
    let live: Vec<_> = list["trusted"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.get("retired_at").is_none())
        .map(|t| t["fingerprint"].clone())
        .collect();
    assert_eq!(live, [cur], "only the newest key is live");
    g.collect_fixture();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    g.online(&["inspect", &cil]).ok();
    // A statement about the other side's own role is refused.
    let r = g.secure(&["trust", "accept", &s1]).code(3);
    assert!(r.stderr.contains("MP-KEY-005"), "{}", r.stderr);
}

#[test]
fn a_revoked_key_retires_without_a_successor() {
    let g = Gap::default();
    g.collect_fixture();
    let before = g.p("before.zip");
    g.secure(&["pack", "--out", &before]).ok();
    let ret = g.p("ret.zip");
    g.online(&["activate", &before, "--out", &ret, "--backend", "simulator"])
        .ok();
    // The online side is decommissioned: its key is revoked.
    let stmt = g.p("revoke.json");
    let r = g
        .online(&[
            "--json",
            "key",
            "revoke",
            "--reason",
            "gateway decommissioned",
            "--out",
            &stmt,
        ])
        .ok()
        .json();
    assert_eq!(r["kind"], "revoke");
    assert!(r.get("public_key").is_none());
    let r = g
        .online(&[
            "activate",
            &before,
            "--out",
            &g.p("ret2.zip"),
            "--backend",
            "simulator",
        ])
        .code(1);
    assert!(r.stderr.contains("MP-KEY-016"), "{}", r.stderr);
    // The secure side accepts it: the name is no longer pinned, the return made
    // before still applies.
    let a = g.secure(&["--json", "trust", "accept", &stmt]).ok().json();
    assert!(a.get("successor").is_none());
    let list = g.secure(&["--json", "trust", "list"]).ok().json();
    assert!(list["trusted"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["retired_at"].is_string()));
    g.secure(&["apply", &ret, "--deposit-dir", &g.p("dep")])
        .ok();
}

/// docs/keys.md, "A key was stolen", followed to the letter against a thief who holds
/// the old key (a copy of the home from before the rotation) and a bundle it signed
/// with a `created` before the retirement (the one thing a thief can always make: it
/// chooses `created`). Rotation still accepts it; `trust remove --retired` (an old key
/// stolen) refuses it and keeps the current key; `trust remove` (the whole chain) then
/// refuses everything of that signer until its new key is pinned again.
#[test]
fn a_stolen_old_key_is_distrusted_completely_by_the_documented_procedure() {
    let g = Gap::default();
    g.collect_fixture();
    // Signed with the old key before the rotation: what a thief's backdated bundle is.
    let thief = g.p("thief.zip");
    g.secure(&["pack", "--out", &thief, "--limit", "2"]).ok();
    let stmt = g.p("rotation.json");
    g.secure(&["key", "rotate", "--reason", "yearly", "--out", &stmt])
        .ok();
    g.online(&["trust", "accept", &stmt]).ok();
    // Rotation is not compromise: a bundle in flight from before is accepted.
    g.online(&["inspect", &thief]).ok();

    // Step 1 (an old key of the chain was stolen): distrust the retired keys only.
    let r = g
        .online(&["--json", "trust", "remove", "plant-a", "--retired"])
        .ok()
        .json();
    assert_eq!(r["keys"].as_array().unwrap().len(), 1);
    let refused = g.online(&["inspect", &thief]).code(3);
    assert!(
        refused.stderr.contains("error[MP-BND-022]"),
        "{}",
        refused.stderr
    );
    // The current key still signs.
    let fresh = g.p("fresh.zip");
    g.secure(&["pack", "--out", &fresh, "--limit", "2"]).ok();
    g.online(&["inspect", &fresh]).ok();

    // Step 2 (the current key is suspect too): the whole identity goes, the name is free.
    g.online(&["trust", "remove", "plant-a"]).ok();
    for f in [&thief, &fresh] {
        let r = g.online(&["inspect", f]).code(3);
        assert!(r.stderr.contains("error[MP-BND-022]"), "{}", r.stderr);
    }
    assert!(
        g.online(&["--json", "trust", "list"]).ok().json()["trusted"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Step 3: the owner makes a new key and it is pinned again under the same name after
    // the fingerprint is read out by phone.
    let stmt2 = g.p("rotation-2.json");
    g.secure(&["key", "rotate", "--reason", "compromise", "--out", &stmt2])
        .ok();
    let r = g.online(&["trust", "accept", &stmt2]).code(1);
    assert!(
        r.stderr.contains("MP-KEY-015"),
        "a statement cannot bring a distrusted chain back: {}",
        r.stderr
    );
    let newpub = g.p("plant-a-new.pub");
    g.secure(&["key", "export", "--out", &newpub]).ok();
    g.online(&["trust", "add", &newpub, "--name", "plant-a"])
        .ok();
    let again = g.p("again.zip");
    g.secure(&["pack", "--out", &again, "--repack", "--limit", "2"])
        .ok();
    g.online(&["inspect", &again]).ok();
    let r = g.online(&["inspect", &thief]).code(3);
    assert!(r.stderr.contains("error[MP-BND-022]"), "{}", r.stderr);
}
