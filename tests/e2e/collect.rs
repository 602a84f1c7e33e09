//! collect on the shipped drop folders: every accepted format, broken files reported
//! without stopping good records, idempotence and IID supersession.

use makproxy_e2e::{fixtures, Gap};

#[test]
fn every_shipped_format_is_collected() {
    let g = Gap::default();
    let c = g
        .secure(&[
            "--json",
            "collect",
            fixtures().join("drop").to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(c["summary"]["files"], 8);
    assert_eq!(c["summary"]["new"], 15);
    assert_eq!(c["summary"]["queued"], 13);
    assert_eq!(c["summary"]["skipped"], 2);
    let s = g.status();
    let hosts: Vec<&str> = s["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["host"].as_str().unwrap())
        .collect();
    for h in [
        "LAB-07",
        "LAB-08",
        "KIOSK-01",
        "KIOSK-02",
        "WIN7-OFFICE",
        "PC-000004",
    ] {
        assert!(
            hosts.contains(&h),
            "{h} missing (UTF-16 WMI, UTF-8 BOM WMI, CSV, agent)"
        );
    }
    let skipped = g
        .secure(&["--json", "status", "--state", "skipped"])
        .ok()
        .json();
    let reasons: Vec<&str> = skipped["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reason_code"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["no-key", "kms-client"]);
    // The table names products, and its footer counts what it listed.
    let t = g.secure(&["status", "--state", "skipped"]).ok().stdout;
    assert!(t.contains("Windows(R), ServerStandard edition"), "{t}");
    assert!(
        t.contains("skipped: 2  (2 listed of 15 in the ledger)"),
        "{t}"
    );
}

#[test]
fn broken_files_are_reported_and_good_records_kept() {
    let g = Gap::default();
    let r = g
        .secure(&[
            "--json",
            "collect",
            fixtures().join("drop-broken").to_str().unwrap(),
        ])
        .code(4);
    let j = r.json();
    let problems = j["problems"].as_array().unwrap();
    let codes: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| {
            // The case: the file's name, or its folder's where the file must be named
            // after its host.
            let file = p["file"].as_str().unwrap();
            let rel = &file[file.find("drop-broken").unwrap() + "drop-broken".len() + 1..];
            (
                rel.split(['/', '\\']).next().unwrap(),
                p["code"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("bad-check-digit-in-one-product", "MP-ID-004"),
        ("claims-another-host", "MP-REC-012"),
        ("bidi-override-host.json", "MP-ID-008"),
        ("deeply-nested.json", "MP-REC-011"),
        ("duplicate-key.json", "MP-REC-004"),
        ("not-machine-records.json", "MP-REC-003"),
        ("truncated.json", "MP-REC-002"),
        ("unknown-schema.json", "MP-REC-008"),
        ("utf16-odd-length.json", "MP-REC-001"),
    ] {
        assert!(codes.contains(&expected), "{expected:?} not in {codes:?}");
    }
    // The good product next to the bad one went through.
    assert_eq!(j["summary"]["new"], 1);
    let bad = problems.iter().find(|p| p["code"] == "MP-ID-004").unwrap();
    assert_eq!(bad["record"], 2);
    assert!(bad["detail"].as_str().unwrap().contains("group 3 of 9"));
    // Terminal output is escaped: the bidi override is shown, never emitted.
    assert!(!r.stderr.contains('\u{202e}'));
    assert!(r.stderr.contains("PC\\u{202e}1gpj.exe"));
}

#[test]
fn recollecting_is_idempotent_and_a_new_iid_supersedes_the_old() {
    let g = Gap::default();
    let drop = fixtures().join("drop");
    g.secure(&["collect", drop.to_str().unwrap()]).ok();
    let again = g
        .secure(&["--json", "collect", drop.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(again["summary"]["new"], 0);
    assert_eq!(again["summary"]["updated"], 0);
    assert_eq!(
        again["summary"]["files_unchanged"], 8,
        "unchanged files are not read again"
    );
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil, "--host", "LAB-07"]).ok();
    assert_eq!(g.count("packed"), 1);
    // LAB-07 changes hardware: a new IID for the same activation ID goes back to the queue.
    let newdir = g.path("new");
    std::fs::create_dir_all(&newdir).unwrap();
    let iid = makproxy_core::ids::with_check_digits(&[4; 54], 7);
    let rec = serde_json::json!({"schema": "makproxy-agent/1", "host": "lab-07", "products": [{
        "activation_id": "{2DE67392-B7A7-462A-B1CA-108DD189F588}", "partial_product_key": "3V66T", "description": "VOLUME_MAK",
        "extended_product_id": "03612-03305-317-008912-02-1033-9200.0000-0662023", "installation_id": iid, "license_status": 5}]});
    std::fs::write(newdir.join("lab-07.json"), rec.to_string()).unwrap();
    let c = g
        .secure(&["--json", "collect", newdir.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(c["summary"]["updated"], 1);
    assert_eq!(c["summary"]["queued"], 1);
    assert_eq!(g.count("packed"), 0);
    // The answer to the old IID arrives: reported as stale, not deposited.
    let ret = g.p("ret.zip");
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    let a = g
        .secure(&["--json", "apply", &ret, "--deposit-dir", &g.p("dep")])
        .code(5)
        .json();
    assert_eq!(a["summary"]["iid_changed"], 1);
    assert_eq!(a["notes"][0]["code"], "MP-APL-003");
    assert!(!g.path("dep/LAB-07.json").exists());
    assert_eq!(g.count("queued"), 13);
}

#[test]
fn a_fixed_file_no_longer_shows_its_old_rejections() {
    let g = Gap::default();
    let dir = g.path("drop");
    std::fs::create_dir_all(&dir).unwrap();
    let broken = fixtures().join("drop-broken/bad-check-digit-in-one-product/GOOD-AND-BAD.json");
    std::fs::copy(&broken, dir.join("GOOD-AND-BAD.json")).unwrap();
    g.secure(&["collect", dir.to_str().unwrap()]).code(4);
    let report = |g: &Gap| {
        g.secure(&["report", "--out", &g.p("report.html"), "--force"])
            .ok();
        std::fs::read_to_string(g.path("report.html")).unwrap()
    };
    assert!(
        report(&g).contains("MP-ID-004"),
        "the rejection is reported"
    );
    // The operator re-runs the agent: the file now holds only the good product.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&broken).unwrap()).unwrap();
    v["products"].as_array_mut().unwrap().truncate(1);
    std::fs::write(dir.join("GOOD-AND-BAD.json"), v.to_string()).unwrap();
    g.secure(&["collect", dir.to_str().unwrap()]).ok();
    assert!(
        !report(&g).contains("MP-ID-004"),
        "a fixed file's old rejection is gone"
    );
}
