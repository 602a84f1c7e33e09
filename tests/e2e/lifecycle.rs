//! Stories across several rounds on one pair of homes: drills, manual sessions and real
//! runs in any order, outages, and returns applied in the "wrong" order. Each answer
//! must say truthfully where it came from, and the secure side must end with the best
//! answer ever obtained.

use makproxy_backend::mock::{Behavior, MockServer};
use makproxy_core::bundle::{self, BackendKind, Kind, ReturnRecord};
use makproxy_core::keys::{Home, Role};
use makproxy_e2e::Gap;

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
            makproxy_backend::mock::mock_cid(&iid)
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
        makproxy_backend::mock::mock_cid(p["installation_id"].as_str().unwrap())
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
