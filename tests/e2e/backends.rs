//! The manual and command backends through the real online binary.

use makproxy_e2e::Gap;

#[test]
fn manual_worksheet_round_trip_validates_every_cid() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let sheet = g.p("sheet.csv");
    let w = g
        .online(&["--json", "worksheet", &cil, "--out", &sheet])
        .ok()
        .json();
    assert_eq!(w["records"], 13);
    let printable = std::fs::read_to_string(g.path("sheet.txt")).unwrap();
    assert_eq!(printable.matches("Confirmation ID:  A:______").count(), 13);
    // The operator fills in CIDs read out over the phone; one is misheard, one left empty.
    let csv = std::fs::read_to_string(&sheet).unwrap();
    let mut filled = String::new();
    for (i, line) in csv.lines().enumerate() {
        if i == 0 {
            filled.push_str(line);
        } else {
            let iid = line.split(',').nth(1).unwrap().replace('-', "");
            let cid = makproxy_testkit::mock::mock_cid(&iid);
            let cid = match i {
                1 => {
                    let mut b = cid.into_bytes();
                    b[20] = if b[20] == b'9' { b'8' } else { b[20] + 1 };
                    String::from_utf8(b).unwrap()
                }
                2 => String::new(),
                _ => cid,
            };
            filled.push_str(&format!("{line}{cid}"));
        }
        filled.push_str("\r\n");
    }
    std::fs::write(&sheet, filled).unwrap();
    let ret = g.p("ret.zip");
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &ret,
            "--backend",
            "manual",
            "--worksheet",
            &sheet,
        ])
        .code(4)
        .json();
    assert_eq!(r["summary"]["obtained"], 11);
    assert_eq!(
        r["summary"]["failed_by_reason"]["MP-BKD-005"], 1,
        "the misheard CID is refused by its check digit"
    );
    assert_eq!(
        r["summary"]["failed_by_reason"]["MP-BKD-009"], 1,
        "the empty row is reported, not invented"
    );
    // On screen, the misheard group is named while the operator still has the sheet.
    let again = g
        .online(&[
            "activate",
            &cil,
            "--out",
            &g.p("ret-screen.zip"),
            "--backend",
            "manual",
            "--worksheet",
            &sheet,
            "--retry-failed",
        ])
        .code(4);
    assert!(
        again.stdout.contains("[MP-BKD-005]") && again.stdout.contains("group 4 of 8"),
        "{}",
        again.stdout
    );
    g.secure(&["apply", &ret, "--deposit-dir", &g.p("dep")])
        .code(4);
    assert_eq!(g.count("cid_received"), 11);
    let failed = g.secure(&["status", "--state", "failed"]).ok().stdout;
    assert!(
        failed.contains("group 4 of 8"),
        "the bad group is named: {failed}"
    );
}

#[test]
fn manual_without_a_worksheet_off_a_terminal_is_a_usage_error() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let r = g
        .online(&[
            "activate",
            &cil,
            "--out",
            &g.p("ret.zip"),
            "--backend",
            "manual",
        ])
        .code(2);
    assert!(r.stderr.contains("--worksheet"));
}

#[test]
fn command_backend_speaks_the_json_lines_protocol() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let gateway = makproxy_e2e::example("echo_gateway");
    let ret = g.p("ret.zip");
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &ret,
            "--backend",
            "command",
            "--command",
            &gateway,
        ])
        .json();
    let refused = r["summary"]["failed_by_reason"]["0x90"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(r["summary"]["obtained"].as_u64().unwrap() + refused, 13);
    assert!(refused > 0, "the example gateway refuses IIDs ending in 6");
    let v = g.secure(&["--json", "verify", &ret]).ok().json();
    assert_eq!(v["backend"]["name"], "command");
}

#[test]
fn a_gateway_that_breaks_protocol_fails_records_not_the_run() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // `cat` echoes each request back: valid JSON, but not an answer.
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("ret.zip"),
            "--backend",
            "command",
            "--command",
            "cat",
        ])
        // Every record failed: 5, not "partial"; the return still carries each failure.
        .code(5)
        .json();
    // The first record broke the protocol; the program was then stopped, so the others
    // never reached it: pending (MP-BKD-002), not refusals reused by every rerun, and
    // the run stops after --max-transport-failures of them (issue 29 §3).
    let by = &r["summary"]["failed_by_reason"];
    assert_eq!(by["MP-BKD-008"], 1, "{r}");
    assert_eq!(by["MP-BKD-002"], 12, "{r}");
    assert!(g.path("ret.zip").exists());
    let a = g
        .secure(&[
            "--json",
            "apply",
            &g.p("ret.zip"),
            "--deposit-dir",
            &g.p("dep"),
        ])
        .code(5)
        .json();
    assert_eq!(a["summary"]["pending"], 12, "{a}");
    assert_eq!(g.count("packed"), 12);
    assert_eq!(g.count("failed"), 1);
}

#[test]
fn a_worksheet_filled_in_for_another_bundle_is_refused_before_anything_is_recorded() {
    let g = Gap::default();
    g.collect_fixture();
    let (a, b) = (g.p("a.zip"), g.p("b.zip"));
    g.secure(&["pack", "--out", &a, "--limit", "5"]).ok();
    g.secure(&["pack", "--out", &b]).ok();
    let sheet = g.p("sheet.csv");
    g.online(&["worksheet", &a, "--out", &sheet]).ok();
    let mut rdr = csv::Reader::from_path(&sheet).unwrap();
    let mut w = csv::Writer::from_path(g.path("filled.csv")).unwrap();
    w.write_record(rdr.headers().unwrap()).unwrap();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let cid = makproxy_testkit::mock::mock_cid(&rec[1].replace('-', ""));
        w.write_record([&rec[0], &rec[1], &rec[2], &rec[3], cid.as_str()])
            .unwrap();
    }
    w.flush().unwrap();
    // Bundle b's machines are not on bundle a's sheet.
    let r = g
        .online(&[
            "--json",
            "activate",
            &b,
            "--out",
            &g.p("ret-b.zip"),
            "--backend",
            "manual",
            "--worksheet",
            &g.p("filled.csv"),
        ])
        .code(1);
    assert_eq!(r.json()["error"]["code"], "MP-BKD-013");
    assert!(!g.path("ret-b.zip").exists());
    let j = g.online(&["--json", "journal", "list"]).ok().json();
    assert_eq!(j["answers"], serde_json::json!([]), "nothing was recorded");
    // The right bundle takes it.
    g.online(&[
        "activate",
        &a,
        "--out",
        &g.p("ret-a.zip"),
        "--backend",
        "manual",
        "--worksheet",
        &g.p("filled.csv"),
    ])
    .ok();
}
