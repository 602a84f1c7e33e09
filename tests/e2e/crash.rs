//! Kill -9 at arbitrary points: a re-run completes the work, the ledger and journal stay
//! consistent, no bundle is ever half-written under its final name, and no IID whose
//! answer was persisted is ever sent to the service again.

use makproxy_backend::mock::MockServer;
use makproxy_e2e::Gap;
use std::collections::HashMap;
use std::time::Duration;

/// Kill delays in `lo..hi` ms from a seed printed on failure output
/// (set MAKPROXY_KILL_SEED to replay a run).
fn kill_points(n: usize, lo: u64, hi: u64) -> Vec<u64> {
    let seed = std::env::var("MAKPROXY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kill points from MAKPROXY_KILL_SEED={seed}");
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + x % (hi - lo)
        })
        .collect()
}

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
    let mut mid_batch = 0;
    for (i, ms) in kill_points(4, 160, 320).into_iter().enumerate() {
        let out = g.p(&format!("killed-{i}.zip"));
        let a = args(&out);
        let child = g.spawn_online(&a.iter().map(String::as_str).collect::<Vec<_>>());
        if kill_after(child, ms) {
            // It finished first: then its return must be complete.
            g.secure(&["verify", &out]).ok();
        } else {
            mid_batch += 1;
            assert!(
                !g.path(&format!("killed-{i}.zip")).exists(),
                "no half-written bundle under its final name"
            );
        }
        persisted_at_kill.push((journal_iids(&g), mock.counts()));
    }
    assert!(
        mid_batch >= 2,
        "only {mid_batch} kills landed mid-batch; the test needs a slower mock"
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
    // Only requests whose answer never reached the journal were repeated. At a kill each of
    // the 2 workers can have one request in flight and one answer waiting for the main
    // thread's commit: at most 2 x concurrency per kill.
    let repeated: u32 = fin.values().map(|n| n - 1).sum();
    assert!(repeated <= 2 * 2 * 4, "{repeated} repeated requests");
    assert_eq!(fin.len(), 40);
    g.secure(&["apply", &out, "--deposit-dir", &g.p("dep")])
        .ok();
    assert_eq!(g.count("cid_received"), 40);
}

/// How long `f` takes on this machine, so that kill points can be placed inside the
/// work whatever the machine's speed (wall-clock kill points alone made this test flaky).
fn timed(f: impl FnOnce()) -> u64 {
    let t = std::time::Instant::now();
    f();
    t.elapsed().as_millis() as u64
}

#[test]
fn collect_and_pack_killed_midway_leave_a_ledger_a_rerun_completes() {
    // Calibrate on a scratch gap: one uninterrupted collect and one pack of 1000.
    let scratch = Gap::default();
    let sdrop = scratch.generate("drop", 3000, "BULK");
    let collect_ms = timed(|| {
        scratch.secure(&["collect", &sdrop]).ok();
    });
    let pack_ms = timed(|| {
        scratch
            .secure(&["pack", "--out", &scratch.p("b.zip"), "--limit", "1000"])
            .ok();
    });
    eprintln!("calibration: collect {collect_ms} ms, pack of 1000 {pack_ms} ms");

    let g = Gap::default();
    let drop = g.generate("drop", 3000, "BULK");
    let mut killed = 0;
    // Kills between 10 % and 70 % of an uninterrupted collect: each lands mid-work.
    for ms in kill_points(3, collect_ms / 10, collect_ms * 7 / 10 + 2) {
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
        "collect finished before any kill although kills were placed inside its measured run"
    );
    g.secure(&["collect", &drop]).ok();
    assert_eq!(g.count("queued"), 3000);

    let mut bundles = Vec::new();
    let mut packs_killed = 0;
    for (i, ms) in kill_points(4, pack_ms / 10, pack_ms * 8 / 10 + 2)
        .into_iter()
        .enumerate()
    {
        let out = g.p(&format!("b{i}.zip"));
        if !kill_after(
            g.spawn_secure(&["pack", "--out", &out, "--limit", "1000"]),
            ms,
        ) {
            packs_killed += 1;
        }
        if g.path(&format!("b{i}.zip")).exists() {
            // A bundle under its final name is always complete and verifiable.
            let v = g.secure(&["--json", "verify", &out]).ok().json();
            bundles.push((out, v["records"].as_u64().unwrap()));
        }
    }
    assert!(packs_killed > 0, "no pack was interrupted mid-write");
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
    for ms in kill_points(5, 20, 500) {
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
