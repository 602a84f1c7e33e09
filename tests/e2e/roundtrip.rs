//! Full round trips across the gap with the simulator, and the ways a return can go
//! wrong at the secure side: partial, replayed, untrusted, for another site.

use makproxy_core::bundle::{self, BundleWriter, Header, Kind, ReturnRecord, Source};
use makproxy_core::home::Home;
use makproxy_core::ids::ConfirmationId;
use makproxy_core::keys::Role;
use makproxy_e2e::{fixtures, Gap};
use std::io::Read;

fn entry(bundle: &str, name: &str) -> String {
    let mut z = zip::ZipArchive::new(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut s = String::new();
    z.by_name(name).unwrap().read_to_string(&mut s).unwrap();
    s
}

/// collect the shipped drop folder, pack, activate with the simulator: returns (cil, ret).
fn to_return(g: &Gap, extra_activate: &[&str]) -> (String, String) {
    let (cil, ret, _) = to_return_run(g, extra_activate);
    (cil, ret)
}

/// [`to_return`], also giving activate's run.
fn to_return_run(g: &Gap, extra_activate: &[&str]) -> (String, String, makproxy_e2e::Run) {
    g.collect_fixture();
    let (cil, ret) = (g.p("cil.zip"), g.p("ret.zip"));
    g.secure(&["pack", "--out", &cil]).ok();
    let mut args = vec![
        "activate",
        cil.as_str(),
        "--out",
        ret.as_str(),
        "--backend",
        "simulator",
    ];
    args.extend_from_slice(extra_activate);
    let run = g.online(&args);
    (cil, ret, run)
}

#[test]
fn full_round_trip_with_the_simulator() {
    let g = Gap::default();
    let (cil, ret) = to_return(&g, &[]);
    // What crosses the gap: no host names, no keys.
    let records = entry(&cil, "records.jsonl");
    assert_eq!(records.lines().count(), 13);
    for host in ["PC-000001", "LAB-07", "KIOSK-01", "WIN7-OFFICE"] {
        assert!(!records.contains(host), "host name {host} crossed the gap");
    }
    assert!(
        !records.contains("3V66T"),
        "partial product key crossed the gap"
    );
    let inspect = g.online(&["--json", "inspect", &cil]).ok().json();
    assert_eq!(inspect["kind"], "cil");
    assert_eq!(inspect["records"], 13);
    assert_eq!(inspect["signer"]["name"], "plant-a");

    let v = g.secure(&["--json", "verify", &ret]).ok().json();
    assert_eq!(v["kind"], "return");
    assert_eq!(v["backend"]["simulated"], true);
    assert_eq!(v["confirmation_ids"], 13);

    let dep = g.p("deposit");
    let a = g
        .secure(&["--json", "apply", &ret, "--deposit-dir", &dep])
        .ok()
        .json();
    assert_eq!(a["summary"]["cids"], 13);
    assert_eq!(a["still_pending"], 0);
    assert_eq!(a["deposit_files"], 9);
    assert_eq!(g.count("cid_received"), 13);
    assert_eq!(g.count("skipped"), 2);
    // One name, one shape (docs/json.md): `answers` and `backend` read the same in
    // verify, apply and activate.
    assert_eq!(a["answers"]["bundle_id"], inspect["bundle_id"]);
    assert_eq!(a["answers"], v["answers"]);
    assert_eq!(a["backend"], v["backend"]);
    let act = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("again.zip"),
            "--backend",
            "simulator",
        ])
        .ok()
        .json();
    assert_eq!(act["answers"], v["answers"]);
    assert_eq!(act["backend"]["name"], "simulator");
    assert_eq!(act["backend"]["simulated"], true);
    assert_eq!(act["summary"]["from_journal"], 13, "nothing asked twice");

    // Deposit files: versioned JSON with valid CIDs marked simulated, and a CRLF cmd twin.
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.path("deposit/PC-000001.json")).unwrap())
            .unwrap();
    assert_eq!(d["schema"], "makproxy-deposit/1");
    assert_eq!(d["simulated"], true);
    assert_eq!(d["products"].as_array().unwrap().len(), 2);
    for p in d["products"].as_array().unwrap() {
        let cid = ConfirmationId::parse(p["confirmation_id"].as_str().unwrap()).unwrap();
        assert!(
            cid.digits().starts_with("000000"),
            "simulated CIDs carry the simulator prefix"
        );
    }
    let cmd = std::fs::read_to_string(g.path("deposit/PC-000001.cmd")).unwrap();
    assert!(
        cmd.contains("\r\n") && !cmd.replace("\r\n", "").contains('\n'),
        "cmd files use CRLF"
    );
    assert!(cmd.contains("SIMULATED"));
    assert_eq!(cmd.matches("slmgr.vbs /atp ").count(), 2);
    let office = std::fs::read_to_string(g.path("deposit/WIN7-OFFICE.cmd")).unwrap();
    assert!(
        office.contains("ospp.vbs") && office.contains("/actcid:"),
        "Office 2010 on Windows 7 deposits through ospp.vbs"
    );
    // Found for Office 2010 to 2016+, 64- and 32-bit; a machine without it stops with
    // an error before any cscript line runs.
    for folder in ["Office%%v", "(16 15 14)", "%ProgramFiles(x86)%"] {
        assert!(office.contains(folder), "{folder}: {office}");
    }
    let missing = office
        .find("if not defined OSPP (")
        .expect("ospp.vbs is checked");
    assert!(missing < office.find("/actcid:").unwrap());
    assert!(office[missing..].contains("exit /b 3"));

    // Applying the same return again changes nothing and says so.
    let before = g.status();
    let again = g
        .secure(&["--json", "apply", &ret, "--deposit-dir", &dep])
        .ok()
        .json();
    assert_eq!(again["already_applied"], true);
    assert_eq!(g.status(), before);
    // Nothing left to pack.
    let p = g
        .secure(&["--json", "pack", "--out", &g.p("cil2.zip")])
        .ok()
        .json();
    assert_eq!(p["packed"], 0);
    assert!(!g.path("cil2.zip").exists());
}

#[test]
fn include_hostnames_is_opt_in_and_recorded_in_the_manifest() {
    let g = Gap::default();
    g.collect_fixture();
    let cil = g.p("cil.zip");
    g.secure(&[
        "pack",
        "--out",
        &cil,
        "--include-hostnames",
        "--host",
        "PC-*",
        "--limit",
        "3",
    ])
    .ok();
    let records = entry(&cil, "records.jsonl");
    assert_eq!(records.lines().count(), 3);
    assert!(records.contains("\"host\":\"PC-000001\""));
    let m = g.online(&["--json", "inspect", &cil]).ok().json();
    assert!(m["fields"].as_array().unwrap().iter().any(|f| f == "host"));
    assert_eq!(g.count("queued"), 10);
}

#[test]
fn failed_records_are_reported_and_can_be_repacked() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // The simulator has 9 activations on its MAK: four records get 0x7F.
    let ret = g.p("ret.zip");
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &ret,
            "--backend",
            "simulator",
            "--sim-activations",
            "9",
        ])
        .code(4)
        .json();
    assert_eq!(r["summary"]["failed"], 4);
    assert_eq!(r["summary"]["failed_by_reason"]["0x7F"], 4);
    let a = g
        .secure(&["--json", "apply", &ret, "--deposit-dir", &g.p("dep")])
        .code(4)
        .json();
    assert_eq!(a["summary"]["failed"], 4);
    // `verify --records` lists every answer and every failure with its code.
    let v = g
        .secure(&["--json", "verify", &ret, "--records"])
        .ok()
        .json();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 13);
    let refused: Vec<_> = entries
        .iter()
        .filter(|e| e["failure"]["service_code"] == "0x7F")
        .collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|e| e["confirmation_id"].is_null()));
    let human = g.secure(&["verify", &ret, "--records"]).ok().stdout;
    assert_eq!(human.matches("FAILED [MP-BKD-001] 0x7F").count(), 4);
    assert_eq!(human.matches(" CID ").count(), 9);
    assert!(
        g.secure(&["--json", "verify", &ret]).ok().json()["entries"].is_null(),
        "records are listed only when asked"
    );
    let failed = g
        .secure(&["--json", "status", "--state", "failed"])
        .ok()
        .json();
    let list = failed["products"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert!(list[0]["reason"]
        .as_str()
        .unwrap()
        .contains("0x7F: MAK has exceeded its activation limit"));
    // Human status names the reason too.
    assert!(g
        .secure(&["status", "--state", "failed"])
        .ok()
        .stdout
        .contains("MP-BKD-001: 0x7F"));

    // Re-pack the failures only; a later run answers them, and nothing else is re-sent.
    let cil2 = g.p("cil2.zip");
    let p = g
        .secure(&["--json", "pack", "--out", &cil2, "--retry-failed"])
        .ok()
        .json();
    assert_eq!(p["records"], 4);
    let ret2 = g.p("ret2.zip");
    let r2 = g
        .online(&[
            "--json",
            "activate",
            &cil2,
            "--out",
            &ret2,
            "--backend",
            "simulator",
        ])
        .ok()
        .json();
    assert_eq!(r2["summary"]["obtained"], 4);
    g.secure(&["apply", &ret2, "--deposit-dir", &g.p("dep")])
        .ok();
    assert_eq!(g.count("cid_received"), 13);
    assert_eq!(g.count("failed"), 0);
}

#[test]
fn a_partial_return_leaves_the_rest_pending() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // Forge a return answering only handles 2 and 5, signed by the trusted online key.
    let part = forge_return(&g, &cil, "partial.zip", |r| {
        (r.handle == 2 || r.handle == 5).then(|| sim_answer(r))
    });
    let a = g
        .secure(&["--json", "apply", &part, "--deposit-dir", &g.p("dep")])
        .ok()
        .json();
    assert_eq!(a["summary"]["cids"], 2);
    assert_eq!(a["still_pending"], 11);
    assert_eq!(g.count("cid_received"), 2);
    assert_eq!(g.count("packed"), 11);
    // The full answer later fills in the rest; the two already answered are not touched again.
    let ret = g.p("ret.zip");
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    let a2 = g
        .secure(&["--json", "apply", &ret, "--deposit-dir", &g.p("dep")])
        .ok()
        .json();
    assert_eq!(a2["summary"]["cids"], 11);
    assert_eq!(a2["summary"]["already_answered"], 2);
    assert_eq!(g.count("cid_received"), 13);
}

/// Issue 29 §3: records a return leaves pending are reported as one line per code with
/// a count and the machines they are, not one line per record number; --json names the
/// machine and product of each.
#[test]
fn pending_records_are_reported_grouped_and_by_machine() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let pending = forge_return(&g, &cil, "outage.zip", |r| {
        let mut rec = sim_answer(r);
        rec.answer = bundle::ReturnAnswer::Failed(bundle::RecordFailure {
            code: makproxy_core::Code::BkdNoResponse.into(),
            service_code: None,
            message: bundle::FailureMessage::cut("no response"),
        });
        Some(rec)
    });
    let r = g
        .secure(&["--json", "apply", &pending, "--deposit-dir", &g.p("dep")])
        .code(5);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("MP-BKD-002"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(lines[0].starts_with("[MP-BKD-002] 13 x "), "{}", lines[0]);
    assert!(lines[0].contains("and 8 more"), "{}", lines[0]);
    let notes = r.json()["notes"].as_array().unwrap().clone();
    assert_eq!(notes.len(), 13);
    assert!(notes
        .iter()
        .all(|n| n["host"].is_string() && n["product"].is_string()));
    let status = g.secure(&["status", "--state", "packed"]).ok().stdout;
    assert_eq!(
        status.matches("MP-BKD-002: not settled online yet").count(),
        13,
        "{status}"
    );
}

#[test]
fn return_from_an_untrusted_online_key_is_rejected() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // A second online side that trusts the secure site, but is not trusted back.
    let rogue = g.p("rogue-home");
    makproxy_e2e::run(
        "makproxy-online",
        &["--home", &rogue, "init", "--site", "rogue"],
    )
    .ok();
    makproxy_e2e::run(
        "makproxy-online",
        &[
            "--home",
            &rogue,
            "trust",
            "add",
            &g.p("secure.pub"),
            "--name",
            "plant-a",
        ],
    )
    .ok();
    let ret = g.p("rogue-ret.zip");
    makproxy_e2e::run(
        "makproxy-online",
        &[
            "--home",
            &rogue,
            "activate",
            &cil,
            "--out",
            &ret,
            "--backend",
            "simulator",
        ],
    )
    .ok();
    let r = g
        .secure(&["apply", &ret, "--deposit-dir", &g.p("dep")])
        .code(3);
    assert!(r.stderr.contains("error[MP-BND-022]"), "{}", r.stderr);
    assert!(
        r.stderr.contains("trust add"),
        "the hint says how to trust a key: {}",
        r.stderr
    );
    assert_eq!(g.count("packed"), 13, "nothing applied");
    assert!(!g.path("dep").exists());
}

#[test]
fn return_for_another_sites_bundle_is_rejected() {
    let a = Gap::new("plant-a");
    let (_, ret) = to_return(&a, &[]);
    // plant-b trusts the same online key but never issued that bundle.
    let b = a.p("plant-b-home");
    makproxy_e2e::run(
        "makproxy-secure",
        &["--home", &b, "init", "--site", "plant-b"],
    )
    .ok();
    makproxy_e2e::run(
        "makproxy-secure",
        &[
            "--home",
            &b,
            "trust",
            "add",
            &a.p("online.pub"),
            "--name",
            "gateway",
        ],
    )
    .ok();
    let r = makproxy_e2e::run(
        "makproxy-secure",
        &[
            "--home",
            &b,
            "--json",
            "apply",
            &ret,
            "--deposit-dir",
            &a.p("dep"),
        ],
    )
    .code(3);
    assert_eq!(r.json()["error"]["code"], "MP-APL-001");
}

#[test]
fn the_journal_answers_a_known_iid_without_a_new_activation() {
    let a = Gap::new("plant-a");
    to_return(&a, &[]);
    // A second site sends the same machines: every answer comes from the journal.
    let b = a.p("plant-b-home");
    makproxy_e2e::run(
        "makproxy-secure",
        &["--home", &b, "init", "--site", "plant-b"],
    )
    .ok();
    let bpub = a.p("plant-b.pub");
    makproxy_e2e::run(
        "makproxy-secure",
        &["--home", &b, "key", "export", "--out", &bpub],
    )
    .ok();
    a.online(&["trust", "add", &bpub, "--name", "plant-b"]).ok();
    makproxy_e2e::run(
        "makproxy-secure",
        &[
            "--home",
            &b,
            "collect",
            fixtures().join("drop").to_str().unwrap(),
        ],
    )
    .ok();
    let cil = a.p("b-cil.zip");
    makproxy_e2e::run("makproxy-secure", &["--home", &b, "pack", "--out", &cil]).ok();
    let r = a
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &a.p("b-ret.zip"),
            "--backend",
            "simulator",
            "--sim-activations",
            "0",
        ])
        .ok()
        .json();
    assert_eq!(r["summary"]["from_journal"], 13);
    assert_eq!(r["summary"]["obtained"], 0);
}

#[test]
fn reimaged_machine_gets_its_stored_cid_without_a_trip() {
    let g = Gap::default();
    let (_, ret) = to_return(&g, &[]);
    let dep = g.p("dep");
    g.secure(&["apply", &ret, "--deposit-dir", &dep]).ok();
    let deposit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.path("dep/PC-000001.json")).unwrap())
            .unwrap();
    let product = &deposit["products"][0];

    // The agent reports the deposit worked: the loop closes.
    let results = g.path("results");
    std::fs::create_dir_all(&results).unwrap();
    let result = serde_json::json!({"schema": "makproxy-deposit-result/1", "host": "PC-000001", "time": "2026-11-22T10:00:00Z", "results": [{
        "activation_id": product["activation_id"], "installation_id": product["installation_id"], "confirmation_id": product["confirmation_id"],
        "status": "activated", "license_status": 1}]});
    std::fs::write(results.join("PC-000001.result.json"), result.to_string()).unwrap();
    let c = g
        .secure(&["--json", "collect", results.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(c["summary"]["deposits_activated"], 1);
    assert_eq!(g.count("activated"), 1);

    // Reimaged: same host, key and hardware, so the same IID, now unlicensed again.
    let reimaged = g.path("reimaged");
    std::fs::create_dir_all(&reimaged).unwrap();
    let mut rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("drop/PC-000001.json")).unwrap(),
    )
    .unwrap();
    rec["products"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["activation_id"] == product["activation_id"]);
    rec["products"][0]["license_status"] = serde_json::json!(5);
    rec["collected"] = serde_json::json!("2026-11-23T08:00:00Z");
    std::fs::write(reimaged.join("PC-000001.json"), rec.to_string()).unwrap();
    // First it shows as licensed (agent ran after deposit), then reimaged.
    let c = g
        .secure(&["--json", "collect", reimaged.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(c["summary"]["cid_on_hand"], 1);
    assert_eq!(g.count("cid_on_hand"), 1);
    let p = g
        .secure(&["--json", "pack", "--out", &g.p("nothing.zip")])
        .ok()
        .json();
    assert_eq!(p["packed"], 0, "a CID on hand never crosses the gap again");
    std::fs::remove_dir_all(&dep).unwrap();
    let r = g
        .secure(&["--json", "apply", "--reissue", "--deposit-dir", &dep])
        .ok()
        .json();
    assert_eq!(r["reissued"], 1);
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.path("dep/PC-000001.json")).unwrap())
            .unwrap();
    assert_eq!(
        again["products"][0]["confirmation_id"],
        product["confirmation_id"]
    );
}

#[test]
fn windows_deposit_errors_are_shown_with_their_meaning() {
    let g = Gap::default();
    let (_, ret) = to_return(&g, &[]);
    g.secure(&["apply", &ret, "--deposit-dir", &g.p("dep")])
        .ok();
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.path("dep/LAB-07.json")).unwrap()).unwrap();
    let p = &d["products"][0];
    let results = g.path("results");
    std::fs::create_dir_all(&results).unwrap();
    let result = serde_json::json!({"schema": "makproxy-deposit-result/1", "host": "LAB-07", "results": [{
        "activation_id": p["activation_id"], "installation_id": p["installation_id"], "confirmation_id": p["confirmation_id"],
        "status": "failed", "error_code": "0xC004F031", "message": "The product key does not match"}]});
    // PowerShell 5.1 writes UTF-16LE with BOM.
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(result.to_string().encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(results.join("LAB-07.result.json"), bytes).unwrap();
    g.secure(&["collect", results.to_str().unwrap()]).code(5);
    let out = g
        .secure(&["status", "--state", "deposit_failed"])
        .ok()
        .stdout;
    assert!(
        out.contains("0xC004F031: installation ID and confirmation ID do not match"),
        "{out}"
    );
}

#[test]
fn html_report_and_csv_have_the_expected_counts() {
    let g = Gap::default();
    g.secure(&["collect", fixtures().join("drop-broken").to_str().unwrap()])
        .code(4);
    let (_, ret) = to_return(&g, &["--sim-activations", "12"]);
    g.secure(&["apply", &ret, "--deposit-dir", &g.p("dep")])
        .code(4);
    let html = g.p("report.html");
    g.secure(&["report", "--out", &html]).ok();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains(
            "<div class=\"card simulated\"><b>12</b>SIMULATED answer: not activated</div>"
        ),
        "{page}"
    );
    assert!(page.contains("<div class=\"card\"><b>2</b>refused by the activation service</div>"));
    assert!(page.contains("0x7F: MAK has exceeded its activation limit"));
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("<script"),
        "self-contained, no external assets"
    );
    assert!(
        page.contains("PC\\u{202e}1gpj.exe"),
        "untrusted host text is escaped in the report"
    );
    assert!(!page.contains('\u{202e}'));
    let csv = g.secure(&["status", "--csv"]).ok().stdout;
    assert_eq!(csv.lines().count(), 1 + 16);
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .starts_with("host,activation_id,product,state"));
}

fn sim_answer(r: bundle::CilRecord) -> ReturnRecord {
    let cid = makproxy_backend::simulator::Simulator::cid_for(&makproxy_backend::Request {
        iid: r.installation_id.clone(),
        epid: r.extended_product_id.clone(),
    });
    ReturnRecord {
        handle: r.handle,
        installation_id: r.installation_id,
        extended_product_id: r.extended_product_id,
        answer: bundle::ReturnAnswer::Confirmed(cid),
        source: Source::Backend,
        backend: bundle::BackendKind::Simulator,
        simulated: true,
    }
}

/// Writes a return for `cil` signed by the trusted online key, with the records `answer` makes.
fn forge_return(
    g: &Gap,
    cil: &str,
    name: &str,
    answer: impl FnMut(bundle::CilRecord) -> Option<ReturnRecord>,
) -> String {
    forge_return_claiming(g, cil, name, 0, answer)
}

/// As `forge_return`, with `answers.sequence` off by `sequence_off` from the request's.
fn forge_return_claiming(
    g: &Gap,
    cil: &str,
    name: &str,
    sequence_off: u64,
    mut answer: impl FnMut(bundle::CilRecord) -> Option<ReturnRecord>,
) -> String {
    let online = Home::open(&g.path("online-home"), Role::Online).unwrap();
    let secure = Home::open(&g.path("secure-home"), Role::Secure).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut v = bundle::open(
        std::path::Path::new(cil),
        Kind::Cil,
        &online.trusted().unwrap(),
        now,
        &Default::default(),
    )
    .unwrap();
    let (manifest, sha) = (v.manifest.clone(), v.manifest_sha256.clone());
    let out = g.path(name);
    let mut w = BundleWriter::<ReturnRecord>::new(&out).unwrap();
    v.records(|r: bundle::CilRecord| {
        if let Some(rec) = answer(r) {
            w.push(rec).unwrap();
        }
        Ok::<(), bundle::BundleError>(())
    })
    .unwrap();
    let header = Header {
        bundle_id: bundle::BundleId::random(),
        site: "gateway".into(),
        sequence: 1,
        created: now,
        expires: now + time::Duration::days(1),
        tool: "test".into(),
        fields: vec![],
        answers: Some(bundle::Answers {
            bundle_id: manifest.bundle_id.clone(),
            manifest_sha256: sha,
            site: secure.site.clone(),
            sequence: manifest.sequence + sequence_off,
        }),
        backend: Some(bundle::BackendInfo {
            name: "simulator".into(),
            simulated: true,
            endpoint: None,
        }),
        remaining: None,
        site_rule: None,
    };
    w.finish(header, &online.signing_key().unwrap(), &out)
        .unwrap();
    out.to_string_lossy().into_owned()
}

#[test]
fn a_return_that_breaks_request_binding_is_not_applied() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // Handle 1 answers with another machine's IID; the last result names handle 99, which the request lacks.
    let other = makproxy_core::ids::InstallationId::parse(&makproxy_core::ids::with_check_digits(
        &[8; 54], 7,
    ))
    .unwrap();
    let forged = forge_return(&g, &cil, "forged.zip", |r| match r.handle {
        1 => Some(ReturnRecord {
            installation_id: other.clone(),
            ..sim_answer(r)
        }),
        2 => Some(sim_answer(r)),
        13 => Some(ReturnRecord {
            handle: 99,
            ..sim_answer(r)
        }),
        _ => None,
    });
    let a = g
        .secure(&["--json", "apply", &forged, "--deposit-dir", &g.p("dep")])
        .code(4)
        .json();
    let codes: Vec<&str> = a["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["MP-APL-005", "MP-APL-004"]);
    assert_eq!(a["summary"]["cids"], 1);
    assert_eq!(a["summary"]["rejected"], 2);
    assert_eq!(g.count("cid_received"), 1);
}

#[test]
fn bundles_are_never_overwritten_and_dry_runs_change_nothing() {
    let g = Gap::default();
    g.collect_fixture();
    let cil = g.p("cil.zip");
    let dry = g
        .secure(&["--json", "pack", "--out", &cil, "--dry-run"])
        .ok()
        .json();
    assert_eq!(dry["would_pack"], 13);
    // It shows what would leave, machine by machine, in the order it would be packed.
    let rows = dry["records"].as_array().unwrap();
    assert_eq!(rows.len(), 13);
    assert!(rows
        .iter()
        .any(|r| r["host"] == "WIN7-OFFICE"
            && r["product"] == "Office 14, OfficeProPlus-MAK edition"));
    let limited = g
        .secure(&[
            "pack",
            "--out",
            &cil,
            "--dry-run",
            "--host",
            "PC-*",
            "--limit",
            "2",
        ])
        .ok()
        .stdout;
    assert_eq!(limited.matches("\n  PC-00000").count(), 2, "{limited}");
    assert!(!g.path("cil.zip").exists());
    assert_eq!(g.count("queued"), 13);
    std::fs::write(&cil, b"precious").unwrap();
    let r = g.secure(&["--json", "pack", "--out", &cil]).code(1).json();
    assert_eq!(r["error"]["code"], "MP-BND-041");
    assert_eq!(std::fs::read(&cil).unwrap(), b"precious");
    assert_eq!(
        g.count("queued"),
        13,
        "a failed pack leaves the records queued"
    );
    std::fs::remove_file(&cil).unwrap();
    g.secure(&["pack", "--out", &cil]).ok();
    let ret = g.p("ret.zip");
    std::fs::write(&ret, b"precious").unwrap();
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &ret,
            "--backend",
            "simulator",
        ])
        .code(1)
        .json();
    assert_eq!(r["error"]["code"], "MP-BND-041");
    std::fs::remove_file(&ret).unwrap();
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    let before = g.status();
    let d = g
        .secure(&[
            "--json",
            "apply",
            &ret,
            "--deposit-dir",
            &g.p("dep"),
            "--dry-run",
        ])
        .ok()
        .json();
    assert_eq!(d["summary"]["cids"], 13);
    assert_eq!(g.status(), before);
    assert!(!g.path("dep").exists());
}

#[test]
fn a_trusted_peer_cannot_answer_with_another_sequence_or_product_id() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // The return names the request's ID and manifest hash but another sequence number.
    let off = forge_return_claiming(&g, &cil, "off.zip", 1, |r| Some(sim_answer(r)));
    let r = g
        .secure(&["--json", "apply", &off, "--deposit-dir", &g.p("dep")])
        .code(3)
        .json();
    assert_eq!(r["error"]["code"], "MP-APL-001");
    // A record answered for another extended product ID than was packed.
    let other = makproxy_core::ids::ExtendedProductId::parse(
        "55041-00206-434-012345-03-1033-9600.0000-1512019",
    )
    .unwrap();
    let forged = forge_return(&g, &cil, "epid.zip", |r| match r.handle {
        1 => Some(ReturnRecord {
            extended_product_id: other.clone(),
            ..sim_answer(r)
        }),
        _ => Some(sim_answer(r)),
    });
    let a = g
        .secure(&["--json", "apply", &forged, "--deposit-dir", &g.p("dep")])
        .code(4)
        .json();
    assert_eq!(a["summary"]["rejected"], 1);
    assert_eq!(a["summary"]["cids"], 12);
    assert_eq!(a["notes"][0]["code"], "MP-APL-010");
    assert_eq!(g.count("packed"), 1, "the record stays pending");
}

#[test]
fn a_batch_where_every_record_fails_exits_5_not_partial() {
    let g = Gap::default();
    // A MAK with no activations left: every request is refused (0x7F).
    let (_, ret, run) = to_return_run(&g, &["--json", "--sim-activations", "0"]);
    let r = run.code(5).json();
    assert_eq!(r["summary"]["failed_by_reason"]["0x7F"], 13);
    assert!(
        g.path("ret.zip").exists(),
        "the return still carries each failure"
    );
    let a = g
        .secure(&["--json", "apply", &ret, "--deposit-dir", &g.p("dep")])
        .code(5)
        .json();
    assert_eq!(a["summary"]["failed"], 13);
    assert_eq!(g.count("failed"), 13, "the ledger records why");
}

/// Issue 29 §3: the guide's "rehearse failures with --sim-activations", as it now says
/// to: on drill homes whose journal has not answered the IIDs, three of 13 get 0x7F;
/// after a plain drill the journal answers them (the simulator keeps the journal's
/// rule, as Microsoft's service does).
#[test]
fn a_rehearsal_of_failures_works_on_fresh_drill_homes() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("rehearsal.zip"),
            "--backend",
            "simulator",
            "--sim-activations",
            "10",
        ])
        .code(4)
        .json();
    assert_eq!(r["summary"]["obtained"], 10, "{r}");
    assert_eq!(r["summary"]["failed_by_reason"]["0x7F"], 3, "{r}");
    let again = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("again.zip"),
            "--backend",
            "simulator",
            "--sim-activations",
            "0",
            "--retry-failed",
        ])
        .code(4)
        .json();
    assert_eq!(again["summary"]["from_journal"], 10, "{again}");
}
