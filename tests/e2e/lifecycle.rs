//! Stories across several rounds on one pair of homes: drills, manual sessions and real
//! runs in any order, outages, and returns applied in the "wrong" order. Each answer
//! must say truthfully where it came from, and the secure side must end with the best
//! answer ever obtained.

use makproxy_core::bundle::{self, BackendKind, Kind, ReturnRecord};
use makproxy_core::home::Home;
use makproxy_core::keys::Role;
use makproxy_e2e::{result_file, result_file_at, Gap};
use makproxy_testkit::mock::{Behavior, MockServer};

/// The records of a return bundle, read as the secure side reads them.
fn return_records(g: &Gap, file: &str) -> Vec<ReturnRecord> {
    let secure = Home::open(&g.path("secure-home"), Role::Secure).unwrap();
    let mut v = bundle::open(
        std::path::Path::new(file),
        Kind::Return,
        &secure.trusted().unwrap(),
        time::OffsetDateTime::now_utc(),
        &Default::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    v.records(|r: ReturnRecord| {
        out.push(r);
        Ok::<(), bundle::BundleError>(())
    })
    .unwrap();
    out
}

fn activate(g: &Gap, cil: &str, out: &str, backend: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json", "activate", cil, "--out", out, "--backend"];
    a.extend_from_slice(backend);
    g.online(&a).json()
}

#[test]
fn a_drill_a_manual_session_and_a_real_run_each_say_where_answers_came_from() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // 1. A drill whose simulated MAK is exhausted: 13 simulated refusals.
    let drill = activate(
        &g,
        &cil,
        &g.p("drill.zip"),
        &["simulator", "--sim-activations", "0"],
    );
    assert_eq!(drill["summary"]["failed_by_reason"]["0x7F"], 13);
    // 2. Five records answered by phone through a worksheet.
    let sheet = g.p("sheet.csv");
    g.online(&["worksheet", &cil, "--out", &sheet]).ok();
    let mut rdr = csv::Reader::from_path(&sheet).unwrap();
    let mut w = csv::Writer::from_path(g.path("filled.csv")).unwrap();
    w.write_record(rdr.headers().unwrap()).unwrap();
    let mut by_phone = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        let iid = rec[1].replace('-', "");
        let cid = if i < 5 {
            by_phone.push(iid.clone());
            makproxy_testkit::mock::mock_cid(&iid)
        } else {
            String::new()
        };
        w.write_record([&rec[0], &rec[1], &rec[2], &rec[3], cid.as_str()])
            .unwrap();
    }
    w.flush().unwrap();
    let manual = activate(
        &g,
        &cil,
        &g.p("manual.zip"),
        &["manual", "--worksheet", &g.p("filled.csv")],
    );
    assert_eq!(manual["summary"]["obtained"], 5);
    // 3. The real run: the drill's refusals are not the service's, so the eight records
    //    without a CID are asked; the five phone CIDs are served from the journal and
    //    say "manual", not "microsoft".
    let mock = MockServer::start();
    let real = activate(
        &g,
        &cil,
        &g.p("real.zip"),
        &["microsoft", "--endpoint", &mock.url],
    );
    assert_eq!(real["summary"]["obtained"], 8, "{real}");
    assert_eq!(real["summary"]["from_journal"], 5);
    assert_eq!(mock.total_requests(), 8, "the drill's 0x7F was not reused");
    for r in return_records(&g, &g.p("real.zip")) {
        let iid = r.installation_id.digits().to_string();
        let want = if by_phone.contains(&iid) {
            BackendKind::Manual
        } else {
            BackendKind::Microsoft
        };
        assert_eq!(r.backend, want, "record {}", r.handle);
        assert!(!r.simulated);
    }
    for r in return_records(&g, &g.p("drill.zip")) {
        assert_eq!((r.backend, r.simulated), (BackendKind::Simulator, true));
    }
    // 4. A drill after the real run never serves real CIDs as simulated ones. (Its own
    //    earlier refusals are reused, as any backend's are; --retry-failed asks again.)
    let drill2 = activate(&g, &cil, &g.p("drill2.zip"), &["simulator"]);
    assert_eq!(drill2["summary"]["failed_by_reason"]["0x7F"], 13);
    let drill3 = activate(
        &g,
        &cil,
        &g.p("drill3.zip"),
        &["simulator", "--retry-failed"],
    );
    assert_eq!(drill3["summary"]["obtained"], 13, "{drill3}");
    assert_eq!(drill3["summary"]["from_journal"], 0);
    assert_eq!(drill2["simulated"], true);
}

#[test]
fn an_outage_writes_no_return_of_pure_failures_and_a_later_run_completes() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    // Nothing listens: every request is "not sent"; the run stops after 3 in a row.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", dead.local_addr().unwrap());
    drop(dead);
    let t = std::time::Instant::now();
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("ret.zip"),
            "--backend",
            "microsoft",
            "--endpoint",
            &url,
            "--attempts",
            "2",
            "--retry-delay-ms",
            "1",
            "--max-transport-failures",
            "3",
        ])
        .code(1);
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(r.json()["error"]["code"], "MP-BKD-002", "{}", r.stderr);
    assert!(r.stderr.contains("service unreachable"), "{}", r.stderr);
    assert!(!g.path("ret.zip").exists(), "no return of pure failures");
    // A service that drops every connection after the request: uncertain, and after
    // the limit nothing more is sent.
    let mock = MockServer::start();
    mock.set_default(Behavior::Drop(u32::MAX));
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("ret.zip"),
            "--backend",
            "microsoft",
            "--endpoint",
            &mock.url,
            "--concurrency",
            "1",
            "--max-transport-failures",
            "3",
        ])
        .code(1);
    assert_eq!(mock.total_requests(), 3, "stopped after 3: {}", r.stderr);
    assert!(r.stderr.contains("3 uncertain"), "{}", r.stderr);
    // The service is back: the three uncertain ones are not re-sent, the rest are.
    let ok = MockServer::start();
    let r = activate(
        &g,
        &cil,
        &g.p("ret.zip"),
        &["microsoft", "--endpoint", &ok.url],
    );
    assert_eq!(r["summary"]["obtained"], 10);
    assert_eq!(r["summary"]["uncertain"], 3);
    assert_eq!(ok.total_requests(), 10);
}

#[test]
fn a_simulated_return_applied_by_mistake_gives_way_to_the_real_one_never_the_reverse() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    activate(&g, &cil, &g.p("sim.zip"), &["simulator"]);
    activate(
        &g,
        &cil,
        &g.p("real.zip"),
        &["microsoft", "--endpoint", &mock.url],
    );
    let dep = g.p("dep");
    g.secure(&["apply", &g.p("sim.zip"), "--deposit-dir", &dep])
        .ok();
    let deposit = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(g.path("dep/PC-000001.json")).unwrap())
            .unwrap()
    };
    assert_eq!(deposit()["simulated"], true);
    let a = g
        .secure(&["--json", "apply", &g.p("real.zip"), "--deposit-dir", &dep])
        .ok()
        .json();
    assert_eq!(a["summary"]["cids"], 13);
    assert_eq!(a["summary"]["superseded"], 13);
    let d = deposit();
    assert_eq!(
        d["simulated"], false,
        "deposit files regenerated with real CIDs"
    );
    let p = &d["products"][0];
    assert_eq!(
        p["confirmation_id"].as_str().unwrap(),
        makproxy_testkit::mock::mock_cid(p["installation_id"].as_str().unwrap())
    );
    // The reverse order on a second site: the simulated return changes nothing.
    let g2 = Gap::default();
    let cil2 = g2.packed_fixture();
    let mock2 = MockServer::start();
    activate(
        &g2,
        &cil2,
        &g2.p("real.zip"),
        &["microsoft", "--endpoint", &mock2.url],
    );
    activate(&g2, &cil2, &g2.p("sim.zip"), &["simulator"]);
    g2.secure(&["apply", &g2.p("real.zip"), "--deposit-dir", &g2.p("dep")])
        .ok();
    let a = g2
        .secure(&[
            "--json",
            "apply",
            &g2.p("sim.zip"),
            "--deposit-dir",
            &g2.p("dep"),
        ])
        .ok()
        .json();
    assert_eq!(a["summary"]["cids"], 0);
    assert_eq!(a["summary"]["already_answered"], 13);
    let s = g2.secure(&["--json", "status"]).ok().json();
    for p in s["products"].as_array().unwrap() {
        if p["state"] == "cid_received" {
            assert_eq!(p["simulated"], false, "{p}");
        }
    }
    // apply --reissue later deposits the real CID, not the simulated one.
    let c = rusqlite::Connection::open(g2.path("secure-home/ledger.sqlite3")).unwrap();
    let sims: i64 = c
        .query_row("SELECT COUNT(*) FROM cids WHERE simulated = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        sims, 0,
        "a simulated CID never replaced a real one in the store"
    );
}

#[test]
fn replay_is_judged_per_signing_key_so_a_rebuilt_secure_side_starts_afresh() {
    let g = Gap::default();
    g.collect_fixture();
    // Two different bundles with sequence 1 from one key: pack from two copies of the home.
    let copy = g.path("secure-home-copy");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(g.path("secure-home")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    for sub in ["trust"] {
        let from = g.path("secure-home").join(sub);
        if from.is_dir() {
            std::fs::create_dir(copy.join(sub)).unwrap();
            for e in std::fs::read_dir(&from).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), copy.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    let first = g.p("first.zip");
    g.secure(&["pack", "--out", &first]).ok();
    let twin = g.p("twin.zip");
    makproxy_e2e::run(
        "makproxy-secure",
        &["--home", copy.to_str().unwrap(), "pack", "--out", &twin],
    )
    .ok();
    activate(&g, &first, &g.p("r1.zip"), &["simulator"]);
    let r = g
        .online(&[
            "--json",
            "activate",
            &twin,
            "--out",
            &g.p("r2.zip"),
            "--backend",
            "simulator",
        ])
        .code(3);
    assert_eq!(r.json()["error"]["code"], "MP-APL-006");

    // The secure side is rebuilt (new key, same site name, sequence 1 again). Once the
    // online side trusts the new key, its bundles are accepted.
    let rebuilt = g.p("secure-home-2");
    let sec = |args: &[&str]| {
        let mut a = vec!["--home", rebuilt.as_str()];
        a.extend_from_slice(args);
        makproxy_e2e::run("makproxy-secure", &a)
    };
    sec(&["init", "--site", "plant-a"]).ok();
    sec(&["key", "export", "--out", &g.p("new.pub")]).ok();
    sec(&["trust", "add", &g.p("online.pub"), "--name", "gateway"]).ok();
    g.online(&["trust", "add", &g.p("new.pub"), "--name", "plant-a-rebuilt"])
        .ok();
    sec(&[
        "collect",
        makproxy_e2e::fixtures().join("drop").to_str().unwrap(),
    ])
    .ok();
    let fresh = g.p("fresh.zip");
    sec(&["pack", "--out", &fresh]).ok();
    let r = activate(&g, &fresh, &g.p("r3.zip"), &["simulator"]);
    assert_eq!(r["summary"]["records"], 13, "{r}");
    assert_eq!(
        r["summary"]["from_journal"], 13,
        "same machines, same IIDs: answered from the journal"
    );
}

// ---- the secure side across rounds ----

/// Collect, pack, simulate, apply the shipped fixture; returns the deposit folder.
fn applied(g: &Gap) -> String {
    let cil = g.packed_fixture();
    activate(g, &cil, &g.p("ret.zip"), &["simulator"]);
    let dep = g.p("dep");
    g.secure(&["apply", &g.p("ret.zip"), "--deposit-dir", &dep])
        .ok();
    dep
}

/// A deposit result for `host` from its deposit file, as the deposit script writes it.
#[test]
fn a_deposit_failure_can_be_packed_again_alone() {
    let g = Gap::default();
    applied(&g);
    let results = g.path("results");
    result_file(&g, &results, "LAB-07", "LAB-07.result.json", false);
    // Nothing but a failed deposit went in: exit 5, so a script sees it.
    g.secure(&["collect", results.to_str().unwrap()]).code(5);
    assert_eq!(g.count("deposit_failed"), 1);
    // Twelve other products could be queued meanwhile; --only-failed packs just the one.
    let again = g.p("again.zip");
    let p = g
        .secure(&["--json", "pack", "--out", &again, "--only-failed"])
        .ok()
        .json();
    assert_eq!(p["records"], 1);
    assert_eq!(g.count("deposit_failed"), 0);
    assert_eq!(g.count("packed"), 1);
}

#[test]
fn collect_is_idempotent_and_a_reimaged_machine_is_seen_whatever_result_files_lie_around() {
    let g = Gap::default();
    applied(&g);
    let drop = fixtures_copy(&g);
    result_file(&g, &drop, "PC-000001", "PC-000001.result.json", true);
    let first = g
        .secure(&["--json", "collect", drop.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(first["summary"]["deposits_activated"], 2);
    assert_eq!(g.count("activated"), 2);
    // The same folder again: nothing changes, and it says so.
    let before = g.secure(&["--json", "status"]).ok().json();
    let again = g
        .secure(&["--json", "collect", drop.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(again["summary"]["files_unchanged"], 9);
    assert_eq!(again["summary"]["deposits_activated"], 0);
    let after = g.secure(&["--json", "status"]).ok().json();
    assert_eq!(before["counts"], after["counts"]);
    // The same folder under another spelling of its path (a moved share, a UNC path
    // for a drive letter): files are known by their content, so the agent reports from
    // before the deposits demote nothing (issue 29: 608 products went back to
    // cid_on_hand).
    let respelled = drop.join("..").join(drop.file_name().unwrap());
    let again = g
        .secure(&["--json", "collect", respelled.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(again["summary"]["files_unchanged"], 9);
    assert_eq!(again["summary"]["updated"], 0);
    let after = g.secure(&["--json", "status"]).ok().json();
    assert_eq!(before["counts"], after["counts"]);
    assert_eq!(g.count("activated"), 2);
    // PC-000001 is reimaged: its agent reports new IIDs; the old result file stays in
    // the folder. The new IIDs are queued; the stale result is not read again.
    let mut agent: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(drop.join("PC-000001.json")).unwrap())
            .unwrap();
    for (i, p) in agent["products"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        p["installation_id"] = serde_json::json!(makproxy_core::ids::with_check_digits(
            &[(i as u8) + 3; 54],
            7
        ));
        p["license_status"] = serde_json::json!(5);
    }
    // Reimaged after its deposit, so its agent writes a later time than the result's.
    agent["collected"] = serde_json::json!("2026-11-21T08:00:00Z");
    std::fs::write(drop.join("PC-000001.json"), agent.to_string()).unwrap();
    let r = g
        .secure(&["--json", "collect", drop.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(r["summary"]["updated"], 2, "{r}");
    assert_eq!(r["summary"]["queued"], 2);
    assert_eq!(
        r["problems"],
        serde_json::json!([]),
        "no stale-result noise"
    );
    let q = g
        .secure(&["--json", "status", "--host", "PC-000001"])
        .ok()
        .json();
    for p in q["products"].as_array().unwrap() {
        assert_eq!(p["state"], "queued", "{p}");
    }
}

/// A copy of the shipped drop folder that a test may change.
fn fixtures_copy(g: &Gap) -> std::path::PathBuf {
    let to = g.path("drop");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(makproxy_e2e::fixtures().join("drop")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

#[test]
fn a_result_file_can_only_speak_for_the_host_it_is_named_after() {
    let g = Gap::default();
    applied(&g);
    let dir = g.path("spoof");
    // A writer on the share turns LAB-07's public deposit file into a result file
    // under another name, or under its own name.
    result_file(&g, &dir, "LAB-07", "anything.json", true);
    result_file(&g, &dir, "LAB-07", "PC-000002.result.json", true);
    let r = g
        .secure(&["--json", "collect", dir.to_str().unwrap()])
        .code(5)
        .json();
    let codes: Vec<&str> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["MP-REC-012", "MP-REC-012"]);
    assert_eq!(g.count("activated"), 0, "nobody was marked activated");
}

#[test]
fn a_lost_ledger_is_refused_and_recover_keeps_the_sequence_moving_forward() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    activate(&g, &cil, &g.p("ret.zip"), &["simulator"]);
    // Two machines deposited before the ledger was lost; their result files stay on
    // the share.
    g.secure(&["apply", &g.p("ret.zip"), "--deposit-dir", &g.p("dep")])
        .ok();
    let share = g.path("share");
    result_file(&g, &share, "PC-000001", "PC-000001.result.json", true);
    result_file(&g, &share, "LAB-07", "LAB-07.result.json", true);
    std::fs::remove_file(g.path("secure-home/ledger.sqlite3")).unwrap();
    for wal in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(g.path(&format!("secure-home/ledger.sqlite3{wal}")));
    }
    let r = g.secure(&["--json", "status"]).code(1);
    assert_eq!(r.json()["error"]["code"], "MP-APL-009");
    assert!(
        !g.path("secure-home/ledger.sqlite3").exists()
            || std::fs::metadata(g.path("secure-home/ledger.sqlite3"))
                .unwrap()
                .len()
                == 0,
        "nothing was recreated"
    );
    // recover refuses sequence 0 and starts a ledger from the sequence given.
    g.secure(&["recover", "--next-sequence", "0"]).code(2);
    let r = g
        .secure(&["--json", "recover", "--next-sequence", "2"])
        .ok()
        .json();
    let lost = r["not_rebuilt"].to_string();
    for what in [
        "key inventory",
        "channel policy",
        "MP-REC-015",
        "what each gateway requires",
    ] {
        assert!(
            lost.contains(what),
            "recover says what it cannot rebuild: {r}"
        );
    }
    g.secure(&["recover", "--next-sequence", "3"]).code(1);
    g.collect_fixture();
    // The results name CIDs the new ledger does not know yet: kept, not refused.
    let c = g
        .secure(&["--json", "collect", share.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(c["summary"]["deposits_kept"], 3, "{c}");
    assert_eq!(c["problems"], serde_json::json!([]));
    assert_eq!(c["notes"][0]["code"], "MP-REC-015");
    let next = g.p("next.zip");
    let p = g.secure(&["--json", "pack", "--out", &next]).ok().json();
    assert_eq!(p["sequence"], 2);
    // The online side takes it (a new sequence for this key), and answers from the
    // journal: no activation is spent twice for the same machines.
    let a = activate(&g, &next, &g.p("ret2.zip"), &["simulator"]);
    assert_eq!(a["summary"]["from_journal"], 13, "{a}");
    // Applying it brings the CIDs back, and the kept results with them.
    let ap = g
        .secure(&[
            "--json",
            "apply",
            &g.p("ret2.zip"),
            "--deposit-dir",
            &g.p("dep"),
        ])
        .ok()
        .json();
    assert_eq!(ap["kept_results_matched"], 3, "{ap}");
    assert_eq!(g.count("activated"), 3);
    assert_eq!(g.count("cid_received"), 10);
}

#[test]
fn a_planted_deposit_folder_stops_one_host_not_the_others_and_a_rerun_completes() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    activate(&g, &cil, &g.p("ret.zip"), &["simulator"]);
    let dep = g.path("dep");
    std::fs::create_dir_all(dep.join("LAB-07.json")).unwrap();
    let r = g
        .secure(&[
            "--json",
            "apply",
            &g.p("ret.zip"),
            "--deposit-dir",
            dep.to_str().unwrap(),
        ])
        .code(4);
    let j = r.json();
    assert_eq!(j["deposit_problems"][0]["host"], "LAB-07");
    assert!(r.stderr.contains("MP-APL-008"), "{}", r.stderr);
    assert!(
        dep.join("PC-000001.json").is_file(),
        "other hosts got their files"
    );
    assert!(dep.join("WIN7-OFFICE.cmd").is_file());
    // The operator removes the folder; the same apply writes the missing files.
    std::fs::remove_dir(dep.join("LAB-07.json")).unwrap();
    g.secure(&[
        "apply",
        &g.p("ret.zip"),
        "--deposit-dir",
        dep.to_str().unwrap(),
    ])
    .ok();
    assert!(dep.join("LAB-07.json").is_file());
}

#[cfg(unix)]
#[test]
fn a_fifo_or_link_in_the_drop_folder_is_refused_without_hanging() {
    let g = Gap::default();
    let drop = fixtures_copy(&g);
    let st = std::process::Command::new("mkfifo")
        .arg(drop.join("PIPE-01.json"))
        .status()
        .unwrap();
    assert!(st.success());
    std::os::unix::fs::symlink("/etc/passwd", drop.join("LINK-01.json")).unwrap();
    let r = makproxy_e2e::run_within(
        30,
        "makproxy-secure",
        &[
            "--home",
            &g.secure_home(),
            "--json",
            "collect",
            drop.to_str().unwrap(),
        ],
    );
    let j = r.json();
    assert_eq!(j["summary"]["new"], 15, "the good files still went through");
    let files: Vec<&str> = j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("PIPE-01.json")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("LINK-01.json")),
        "{files:?}"
    );
    assert_eq!(j["summary"]["files_rejected"], 2);
}

#[test]
fn a_machine_reimaged_on_the_same_hardware_is_reissued_and_its_new_deposit_counts() {
    let g = Gap::default();
    applied(&g);
    let drop = fixtures_copy(&g);
    // PC-000001 (two products) deposits and reports activated.
    result_file(&g, &drop, "PC-000001", "PC-000001.result.json", true);
    g.secure(&["collect", drop.to_str().unwrap()]).ok();
    assert_eq!(g.count("activated"), 2);
    // Reimaged with the same IID: a new agent file says unlicensed; the stored CID is
    // offered again, and reissued without a trip across the gap.
    let mut agent: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(drop.join("PC-000001.json")).unwrap())
            .unwrap();
    agent["collected"] = serde_json::json!("2026-11-23T08:00:00Z");
    std::fs::write(drop.join("PC-000001.json"), agent.to_string()).unwrap();
    g.secure(&["collect", drop.to_str().unwrap()]).ok();
    assert_eq!(
        g.count("cid_on_hand"),
        2,
        "{}",
        g.secure(&["status"]).stdout
    );
    g.secure(&["apply", "--reissue", "--deposit-dir", &g.p("dep")])
        .ok();
    assert_eq!(g.count("cid_on_hand"), 0);
    // The machine deposits the same CID again: same fields, a new time. It counts.
    result_file_at(
        &g,
        &drop,
        "PC-000001",
        "PC-000001.result.json",
        true,
        "2026-11-23T09:00:00Z",
    );
    g.secure(&["collect", drop.to_str().unwrap()]).ok();
    assert_eq!(g.count("activated"), 2, "{}", g.secure(&["status"]).stdout);
}

/// Issue 29 §2: a secure side recovered with too low a sequence number is told, at the
/// gateway, the highest number it has taken from that key and the exact command that
/// fixes it; `journal sequences` lists them per site and key.
#[test]
fn a_too_low_recover_sequence_is_refused_with_the_number_that_fixes_it() {
    let g = Gap::default();
    g.collect_fixture();
    for (i, limit) in [(1, "5"), (2, "5")] {
        let cil = g.p(&format!("cil{i}.zip"));
        g.secure(&["pack", "--out", &cil, "--limit", limit]).ok();
        activate(&g, &cil, &g.p(&format!("ret{i}.zip")), &["simulator"]);
    }
    let seen = g.online(&["--json", "journal", "sequences"]).ok().json();
    assert_eq!(seen["sequences"][0]["site"], "plant-a", "{seen}");
    assert_eq!(seen["sequences"][0]["highest"], 2);
    assert_eq!(seen["sequences"][0]["bundles"], 2);
    // Each answer says whose bundle it was (a gateway serving two sites).
    let list = g.online(&["--json", "journal", "list"]).ok().json();
    let answers = list["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 10);
    assert!(answers.iter().all(|a| a["site"] == "plant-a"), "{list}");
    assert!(g
        .online(&["journal", "list"])
        .ok()
        .stdout
        .contains("  plant-a  "));
    for f in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(g.path(&format!("secure-home/ledger.sqlite3{f}")));
    }
    g.secure(&["recover", "--next-sequence", "2"]).ok();
    g.collect_fixture();
    let again = g.p("again.zip");
    g.secure(&["pack", "--out", &again]).ok();
    let r = g
        .online(&[
            "--json",
            "activate",
            &again,
            "--out",
            &g.p("r.zip"),
            "--backend",
            "simulator",
        ])
        .code(3);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "MP-APL-006");
    let hint = e["hint"].as_str().unwrap();
    assert!(
        hint.contains("is 2") && hint.contains("recover --next-sequence 3"),
        "{hint}"
    );
    assert!(!hint.contains("trust its new key"), "{hint}");
}
