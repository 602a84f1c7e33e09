//! The two-person rule: a site requires several of another site's pinned keys to have
//! signed a bundle (`trust require`); each operator adds a signature with `cosign`
//! from their own home, without changing the manifest.

use makproxy_e2e::{run, Gap};

fn operator(g: &Gap, name: &str, site: &str) -> String {
    let home = g.p(name);
    run(
        "makproxy-secure",
        &["--home", &home, "init", "--site", site],
    )
    .ok();
    let pubfile = g.p(&format!("{name}.pub"));
    run(
        "makproxy-secure",
        &["--home", &home, "key", "export", "--out", &pubfile],
    )
    .ok();
    g.online(&[
        "trust",
        "add",
        &pubfile,
        "--name",
        &format!("plant-a-{name}"),
    ])
    .ok();
    home
}

fn cosign(home: &str, file: &str) -> makproxy_e2e::Run {
    run(
        "makproxy-secure",
        &["--home", home, "--json", "cosign", file],
    )
}

#[test]
fn two_of_three_operators_must_sign_a_bundle_before_the_online_side_takes_it() {
    let g = Gap::default();
    let (op2, op3) = (
        operator(&g, "op2", "plant-a"),
        operator(&g, "op3", "plant-a"),
    );
    // A rule that could never be met is refused; two of three is fine.
    let r = g
        .online(&["trust", "require", "plant-a", "--signatures", "4"])
        .code(2);
    assert!(r.stderr.contains("3 key(s) pinned"), "{}", r.stderr);
    g.online(&["trust", "require", "plant-a", "--signatures", "2"])
        .ok();
    let list = g.online(&["--json", "trust", "list"]).ok().json();
    assert_eq!(list["require"]["plant-a"], 2);

    g.collect_fixture();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    let manifest_before = g.online(&["--json", "inspect", &cil]).code(3).stdout;
    let r = g.online(&["inspect", &cil]).code(3);
    assert!(
        r.stderr.contains("MP-BND-027") && r.stderr.contains("signed by 1 key(s)"),
        "{}",
        r.stderr
    );
    let r = g
        .online(&[
            "activate",
            &cil,
            "--out",
            &g.p("ret.zip"),
            "--backend",
            "simulator",
        ])
        .code(3);
    assert!(
        r.stderr.contains("MP-BND-027"),
        "nothing is answered: {}",
        r.stderr
    );
    assert!(!g.path("ret.zip").exists());
    let _ = manifest_before;

    // The second operator cosigns: the manifest is unchanged, the bundle now passes.
    let sha = g.secure(&["--json", "verify", &cil]).ok().json()["manifest_sha256"].clone();
    let c = cosign(&op2, &cil).ok().json();
    assert_eq!(c["signatures"], 2);
    let v = g.online(&["--json", "inspect", &cil]).ok().json();
    assert_eq!(v["manifest_sha256"], sha, "the manifest did not change");
    // inspect names every signer and the rule in force (issue 29 §2).
    assert_eq!(v["cosigners"][0]["name"], "plant-a-op2", "{v}");
    assert_eq!(v["signatures_required"], 2);
    let text = g.online(&["inspect", &cil]).ok().stdout;
    assert!(text.contains("Cosigned by: \"plant-a-op2\""), "{text}");
    assert!(
        text.contains(
            "Rule here:   2 distinct signers of site \"plant-a\" required; this bundle has 2"
        ),
        "{text}"
    );
    g.secure(&["verify", &cil]).ok();
    // Cosigning twice with one key is refused; a third operator may add theirs.
    let r = cosign(&op2, &cil).code(3);
    assert!(r.stderr.contains("MP-BND-026"), "{}", r.stderr);
    assert_eq!(cosign(&op3, &cil).ok().json()["signatures"], 3);
    g.online(&[
        "activate",
        &cil,
        "--out",
        &g.p("ret.zip"),
        "--backend",
        "simulator",
    ])
    .ok();
    g.secure(&["apply", &g.p("ret.zip"), "--deposit-dir", &g.p("dep")])
        .ok();

    // An operator of another site cannot cosign; a changed bundle cannot be cosigned.
    let other = g.p("other");
    run(
        "makproxy-secure",
        &["--home", &other, "init", "--site", "plant-b"],
    )
    .ok();
    let r = run("makproxy-secure", &["--home", &other, "cosign", &cil]).code(3);
    assert!(r.stderr.contains("MP-BND-024"), "{}", r.stderr);
    let ret = g.p("ret.zip");
    let r = cosign(&op2, &ret).code(3);
    assert!(
        r.stderr.contains("MP-BND-023") || r.stderr.contains("MP-BND-005"),
        "a return is not the secure side's to cosign: {}",
        r.stderr
    );
    let cil2 = g.p("cil2.zip");
    let mut bytes = std::fs::read(&cil).unwrap();
    let at = bytes.windows(7).position(|w| w == b"records").unwrap() + 40;
    bytes[at] ^= 0x20;
    std::fs::write(&cil2, &bytes).unwrap();
    let op4 = g.p("op4");
    run(
        "makproxy-secure",
        &["--home", &op4, "init", "--site", "plant-a"],
    )
    .ok();
    let r = cosign(&op4, &cil2).code(3);
    assert!(
        r.stderr.contains("MP-BND-011") || r.stderr.contains("MP-BND-001"),
        "a changed bundle is refused, not signed: {}",
        r.stderr
    );
    assert_eq!(
        cosign(&op4, &cil).ok().json()["signatures"],
        4,
        "the intact one takes it"
    );

    // The rule can be lifted again.
    g.online(&["trust", "require", "plant-a", "--signatures", "1"])
        .ok();
    let list = g.online(&["--json", "trust", "list"]).ok().json();
    assert!(list.get("require").is_none());
}

/// Issue 28: the rule is bound to the home. Deleting trust/quorum.json does not lift
/// it: every bundle is refused (MP-KEY-017, exit 3) until the file is restored or the
/// rule set again with `trust require`.
#[test]
fn a_deleted_quorum_file_refuses_every_bundle_instead_of_lifting_the_rule() {
    let g = Gap::default();
    operator(&g, "op2", "plant-a");
    g.online(&["trust", "require", "plant-a", "--signatures", "2"])
        .ok();
    g.collect_fixture();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    let quorum = g.path("online-home/trust/quorum.json");
    let kept = std::fs::read(&quorum).unwrap();
    std::fs::remove_file(&quorum).unwrap();
    for args in [
        vec!["--json", "inspect", cil.as_str()],
        vec![
            "--json",
            "activate",
            cil.as_str(),
            "--out",
            "ret.zip",
            "--backend",
            "simulator",
        ],
    ] {
        let r = g.online(&args).code(3);
        assert_eq!(r.json()["error"]["code"], "MP-KEY-017", "{}", r.stdout);
    }
    assert!(!g.path("ret.zip").exists(), "nothing was answered");
    // Restored from backup: the rule holds again (one signature is not enough).
    std::fs::write(&quorum, &kept).unwrap();
    let r = g.online(&["inspect", &cil]).code(3);
    assert!(r.stderr.contains("MP-BND-027"), "{}", r.stderr);
    // Or set again by the administrator, from nothing.
    std::fs::remove_file(&quorum).unwrap();
    g.online(&["trust", "require", "plant-a", "--signatures", "2"])
        .ok();
    let r = g.online(&["inspect", &cil]).code(3);
    assert!(r.stderr.contains("MP-BND-027"), "{}", r.stderr);
}

/// Issue 29 §2: the gateway's rule travels back in its returns (format version 4), so
/// the secure side's `pack` names who must still cosign before the trip, `verify` flags
/// a cosignature the gateway would refuse (a key it does not pin), and `cosign
/// --remove` takes that one out without packing again. Adversary: a careless operator
/// (a colleague of the site whose key the gateway never pinned cosigns) and time (the
/// trip wasted at the gate, MP-BND-022 or MP-BND-027).
#[test]
fn the_gateways_rule_comes_back_so_pack_and_verify_say_who_must_still_cosign() {
    let g = Gap::default();
    let op2 = operator(&g, "op2", "plant-a");
    // A colleague of the same site whose key the gateway has not pinned.
    let stranger = g.p("stranger");
    run(
        "makproxy-secure",
        &["--home", &stranger, "init", "--site", "plant-a"],
    )
    .ok();
    g.online(&["trust", "require", "plant-a", "--signatures", "2"])
        .ok();

    // First trip: nothing known yet of the gateway's rule.
    g.collect_fixture();
    let cil1 = g.p("cil1.zip");
    let p = g.secure(&["--json", "pack", "--out", &cil1]).ok().json();
    assert!(p.get("gateways").is_none(), "{p}");
    cosign(&op2, &cil1).ok();
    let ret1 = g.p("ret1.zip");
    g.online(&["activate", &cil1, "--out", &ret1, "--backend", "simulator"])
        .ok();
    let v = g.secure(&["--json", "verify", &ret1]).ok().json();
    assert_eq!(v["fields"].as_array().unwrap().len(), 8);
    g.secure(&["apply", &ret1, "--deposit-dir", &g.p("dep")])
        .ok();

    // Second trip: pack says the bundle needs one more signer and names the one pinned.
    let drop = g.generate("drop2", 3, "NEW");
    g.secure(&["collect", &drop]).ok();
    let cil2 = g.p("cil2.zip");
    let p = g.secure(&["--json", "pack", "--out", &cil2]).ok().json();
    let gw = &p["gateways"][0];
    assert_eq!(gw["gateway"], "gateway", "{p}");
    assert_eq!(gw["signatures_required"], 2);
    assert_eq!(gw["counted"], serde_json::json!(["plant-a"]));
    assert_eq!(gw["missing"], 1);
    let op2_key = run(
        "makproxy-secure",
        &["--home", &op2, "--json", "key", "show"],
    )
    .ok()
    .json();
    assert_eq!(gw["can_cosign"][0]["name"], "plant-a-op2");
    assert_eq!(
        gw["can_cosign"][0]["fingerprint"], op2_key["public_key"]["fingerprint"],
        "{op2_key}"
    );
    let text = g.secure(&["verify", &cil2]).ok().stdout;
    assert!(
        text.contains("Gateway \"gateway\"") && text.contains("needs 1 more cosignature(s)"),
        "{text}"
    );

    // The stranger cosigns: verify names that cosignature as one the gateway refuses,
    // and the gateway does refuse the whole bundle.
    cosign(&stranger, &cil2).ok();
    let stranger_id = run(
        "makproxy-secure",
        &["--home", &stranger, "--json", "key", "show"],
    )
    .ok()
    .json()["public_key"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = g.secure(&["--json", "verify", &cil2]).ok().json();
    assert_eq!(v["cosignature_key_ids"], serde_json::json!([stranger_id]));
    assert_eq!(
        v["gateways"][0]["refused"],
        serde_json::json!([stranger_id]),
        "{v}"
    );
    assert_eq!(v["gateways"][0]["missing"], 1);
    let text = g.secure(&["verify", &cil2]).ok().stdout;
    assert!(
        text.contains(&format!("cosign FILE --remove {stranger_id}")),
        "{text}"
    );
    g.online(&["inspect", &cil2]).code(3);

    // Removing: a key that made no cosignature, or the bundle's own signature, is
    // refused and changes nothing (exit 1, MP-BND-029).
    let before = std::fs::read(&cil2).unwrap();
    let own_id = g.secure(&["--json", "key", "show"]).ok().json()["public_key"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in ["0123456789abcdef", own_id.as_str()] {
        let r = g
            .secure(&["--json", "cosign", &cil2, "--remove", id])
            .code(1);
        assert_eq!(r.json()["error"]["code"], "MP-BND-029", "{}", r.stdout);
    }
    assert_eq!(std::fs::read(&cil2).unwrap(), before, "nothing changed");
    let r = g
        .secure(&["--json", "cosign", &cil2, "--remove", &stranger_id])
        .ok()
        .json();
    assert_eq!(r["signatures"], 1);
    let v = g.secure(&["--json", "verify", &cil2]).ok().json();
    assert!(v.get("cosignature_key_ids").is_none(), "{v}");
    assert_eq!(v["gateways"][0]["refused"], serde_json::json!([]));

    // The pinned colleague cosigns: the rule is met and the gateway answers.
    cosign(&op2, &cil2).ok();
    let v = g.secure(&["--json", "verify", &cil2]).ok().json();
    assert_eq!(v["gateways"][0]["missing"], 0, "{v}");
    assert_eq!(
        v["gateways"][0]["counted"],
        serde_json::json!(["plant-a", "plant-a-op2"])
    );
    let text = g.secure(&["verify", &cil2]).ok().stdout;
    assert!(!text.contains("needs"), "{text}");
    g.online(&[
        "activate",
        &cil2,
        "--out",
        &g.p("ret2.zip"),
        "--backend",
        "simulator",
    ])
    .ok();
    // A gateway distrusted here gives no advice any more.
    g.secure(&["trust", "remove", "gateway"]).ok();
    let v = g.secure(&["--json", "verify", &cil2]).ok().json();
    assert!(v.get("gateways").is_none(), "{v}");
}
