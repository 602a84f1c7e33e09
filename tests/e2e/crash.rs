//! Kill -9 at arbitrary points: a re-run completes the work, the ledger and journal stay
//! consistent, no bundle is ever half-written under its final name, and no IID whose
//! answer was persisted is ever sent to the service again.

use makproxy_backend::mock::MockServer;
use makproxy_e2e::Gap;
use std::collections::HashMap;
use std::time::Duration;

fn kill_after(mut child: std::process::Child, ms: u64) -> bool {
    std::thread::sleep(Duration::from_millis(ms));
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    finished
}

fn journal_iids(g: &Gap) -> Vec<String> {
    let c = rusqlite::Connection::open(g.path("online-home/journal.sqlite3")).unwrap();
    let mut s = c.prepare("SELECT iid FROM answers").unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn activate_killed_mid_batch_resumes_without_asking_twice() {
    let g = Gap::default();
    let drop = g.generate("drop", 40, "KILL");
    g.secure(&["collect", &drop]).ok();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    let mock = MockServer::start();
    mock.set_latency(Duration::from_millis(40));
    let args = |out: &str| -> Vec<String> {
        [
            "activate",
            &cil,
            "--out",
            out,
            "--backend",
            "microsoft",
            "--endpoint",
            &mock.url,
            "--retry-delay-ms",
            "10",
        ]
        .map(String::from)
        .to_vec()
    };

    let mut persisted_at_kill: Vec<(Vec<String>, HashMap<String, u32>)> = Vec::new();
    for (i, ms) in [250u64, 330, 410].into_iter().enumerate() {
        let out = g.p(&format!("killed-{i}.zip"));
        let a = args(&out);
        let child = g.spawn_online(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let finished = kill_after(child, ms);
        assert!(
            !finished,
            "run {i} finished before the kill; the test needs a slower mock"
        );
        assert!(
            !g.path(&format!("killed-{i}.zip")).exists(),
            "no half-written bundle under its final name"
        );
        persisted_at_kill.push((journal_iids(&g), mock.counts()));
    }
    let (persisted, _) = persisted_at_kill.last().unwrap();
    assert!(
        !persisted.is_empty() && persisted.len() < 40,
        "kills landed mid-batch ({} answers persisted)",
        persisted.len()
    );

    let out = g.p("ret.zip");
    let a = args(&out);
    let r = g
        .online(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    assert!(r.stdout.contains("40 record(s)"));
    let fin = mock.counts();
    for (ids, counts) in &persisted_at_kill {
        for id in ids {
            assert_eq!(
                fin[id], counts[id],
                "IID {id} was persisted, yet asked again"
            );
        }
    }
    // Only requests that never got an answer to disk were repeated: one per worker per kill at most.
    let repeated: u32 = fin.values().map(|n| n - 1).sum();
    assert!(repeated <= 2 * 3, "{repeated} repeated requests");
    assert_eq!(fin.len(), 40);
    g.secure(&["apply", &out, "--deposit-dir", &g.p("dep")])
        .ok();
    assert_eq!(g.count("cid_received"), 40);
}

#[test]
fn collect_and_pack_killed_midway_leave_a_ledger_a_rerun_completes() {
    let g = Gap::default();
    let drop = g.generate("drop", 3000, "BULK");
    let mut killed = 0;
    for ms in [150u64, 400] {
        if !kill_after(g.spawn_secure(&["collect", &drop]), ms) {
            killed += 1;
        }
        // Whatever was committed is whole: every product row is complete.
        let s = g.status();
        for p in s["products"].as_array().unwrap() {
            assert_eq!(p["state"], "queued");
        }
    }
    assert!(
        killed > 0,
        "collect finished before any kill; the test needs more files"
    );
    g.secure(&["collect", &drop]).ok();
    assert_eq!(g.count("queued"), 3000);

    let mut bundles = Vec::new();
    for (i, ms) in [30u64, 90, 200].into_iter().enumerate() {
        let out = g.p(&format!("b{i}.zip"));
        kill_after(
            g.spawn_secure(&["pack", "--out", &out, "--limit", "1000"]),
            ms,
        );
        if g.path(&format!("b{i}.zip")).exists() {
            // A bundle under its final name is always complete and verifiable.
            let v = g.secure(&["--json", "verify", &out]).ok().json();
            bundles.push((out, v["records"].as_u64().unwrap()));
        }
    }
    // The ledger agrees with the bundles that exist: packed rows belong to committed bundles.
    let packed = g.count("packed") as u64;
    assert!(packed <= bundles.iter().map(|(_, n)| n).sum::<u64>());
    g.secure(&["pack", "--out", &g.p("final.zip")]).ok();
    assert_eq!(g.count("packed"), 3000);
    assert_eq!(g.count("queued"), 0);
}

#[test]
fn apply_killed_midway_is_all_or_nothing_and_a_rerun_completes() {
    let g = Gap::default();
    let drop = g.generate("drop", 3000, "APPLY");
    g.secure(&["collect", &drop]).ok();
    let (cil, ret) = (g.p("cil.zip"), g.p("ret.zip"));
    g.secure(&["pack", "--out", &cil]).ok();
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    let dep = g.p("dep");
    let mut outcomes = Vec::new();
    for ms in [40u64, 120, 250, 400] {
        let finished = kill_after(g.spawn_secure(&["apply", &ret, "--deposit-dir", &dep]), ms);
        let (received, packed) = (g.count("cid_received"), g.count("packed"));
        assert!(
            (received, packed) == (0, 3000) || (received, packed) == (3000, 0),
            "half-applied ledger: {received} received, {packed} packed"
        );
        // No deposit file is ever half-written under its final name.
        if let Ok(rd) = std::fs::read_dir(&dep) {
            for e in rd {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if name.ends_with(".json") && !name.starts_with('.') {
                    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
                        .unwrap_or_else(|e| panic!("{name} is half-written: {e}"));
                    assert_eq!(v["schema"], "makproxy-deposit/1");
                }
            }
        }
        outcomes.push((finished, received));
    }
    assert!(
        outcomes.iter().any(|(f, _)| !f),
        "every apply finished before its kill; the test needs more records"
    );
    // The re-run completes: the return is applied (once) and every machine has its files.
    g.secure(&["apply", &ret, "--deposit-dir", &dep]).ok();
    assert_eq!(g.count("cid_received"), 3000);
    let files = std::fs::read_dir(&dep)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".cmd")
        })
        .count();
    assert_eq!(files, 3000);
}
