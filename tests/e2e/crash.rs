//! Kill -9 at arbitrary points: a re-run completes the work, the ledger and journal stay
//! consistent, no bundle is ever half-written under its final name, and no IID ever
//! reaches the service twice unless the operator says so (`--retry-uncertain`).

use makproxy_e2e::Gap;
use makproxy_testkit::mock::MockServer;
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

/// Waits until the mock has received `n` requests in all (or `child` ended), then kills
/// it with SIGKILL: requests received and not yet answered are in flight at the kill,
/// whatever the machine's speed. Returns whether the child had finished first.
fn kill_when_received(mut child: std::process::Child, mock: &MockServer, n: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while mock.total_requests() < n && std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    finished
}

fn open_intents(g: &Gap) -> Vec<String> {
    let j = g
        .online(&["--json", "journal", "list", "--uncertain"])
        .ok()
        .json();
    j["uncertain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["iid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn activate_killed_with_requests_in_flight_never_sends_an_iid_twice() {
    let g = Gap::default();
    let drop = g.generate("drop", 40, "KILL");
    g.secure(&["collect", &drop]).ok();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    let mock = MockServer::start();
    mock.set_latency(Duration::from_millis(250));
    let args = |out: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "activate",
            &cil,
            "--out",
            out,
            "--backend",
            "microsoft",
            "--endpoint",
            &mock.url,
            "--concurrency",
            "4",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // Six kills, each after 1-5 more requests have reached the service.
    let mut killed = 0;
    for (i, step) in kill_points(6, 1, 6).into_iter().enumerate() {
        let out = g.p(&format!("killed-{i}.zip"));
        let a = args(&out, &[]);
        let child = g.spawn_online(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let target = mock.total_requests() + step as u32;
        if !kill_when_received(child, &mock, target) {
            killed += 1;
            assert!(
                !g.path(&format!("killed-{i}.zip")).exists(),
                "no half-written bundle under its final name"
            );
        }
        for (iid, n) in mock.counts() {
            assert_eq!(
                n, 1,
                "IID {iid} reached the service {n} times after kill {i}"
            );
        }
    }
    assert!(killed >= 4, "only {killed} kills landed mid-run");
    std::thread::sleep(Duration::from_millis(300)); // the mock counts what was in flight
    let uncertain = open_intents(&g);
    assert!(
        !uncertain.is_empty(),
        "kills with requests in flight leave uncertain records"
    );

    // Finish without the operator's say-so: nothing is sent twice; every record is
    // answered or uncertain.
    let out = g.p("ret.zip");
    let mut a = vec!["--json".to_string()];
    a.extend(args(&out, &[]));
    let r = g
        .online(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .code(4)
        .json();
    let s = &r["summary"];
    assert_eq!(s["failed"], s["uncertain"], "{r}");
    assert_eq!(
        s["uncertain"].as_u64().unwrap(),
        uncertain.len() as u64,
        "every open intent is reported uncertain"
    );
    assert_eq!(
        s["obtained"].as_u64().unwrap()
            + s["from_journal"].as_u64().unwrap()
            + s["uncertain"].as_u64().unwrap(),
        40
    );
    let counts = mock.counts();
    // An intent is committed only when a free worker takes the request, so a record is
    // uncertain without having left only if a kill fell between that commit and the
    // request reaching the service: at most one per worker per kill.
    let never_left = uncertain
        .iter()
        .filter(|i| !counts.contains_key(*i))
        .count();
    eprintln!(
        "uncertain: {}, of which never left: {never_left}",
        uncertain.len()
    );
    assert!(
        never_left <= 4 * killed,
        "{never_left} uncertain records never left"
    );
    assert_eq!(
        counts.len() + never_left,
        40,
        "every IID was asked or is uncertain"
    );
    for (iid, n) in &counts {
        assert_eq!(
            *n, 1,
            "IID {iid} reached the service twice without --retry-uncertain"
        );
    }

    // The secure side keeps uncertain records pending; the operator's retry settles them.
    g.secure(&["apply", &out, "--deposit-dir", &g.p("dep")])
        .code(4);
    assert_eq!(g.count("packed") as usize, uncertain.len());
    let out2 = g.p("ret2.zip");
    let a = args(&out2, &["--retry-uncertain"]);
    g.online(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let first = counts;
    for (iid, n) in mock.counts() {
        let want = match (uncertain.contains(&iid), first.contains_key(&iid)) {
            (true, true) => 2,
            _ => 1,
        };
        assert_eq!(
            n, want,
            "IID {iid}: only uncertain ones are sent again, once"
        );
    }
    assert!(open_intents(&g).is_empty());
    g.secure(&["apply", &out2, "--deposit-dir", &g.p("dep")])
        .ok();
    assert_eq!(g.count("cid_received"), 40);
}

#[cfg(unix)]
#[test]
fn ctrl_c_waits_for_requests_in_flight_and_saves_their_answers() {
    let g = Gap::default();
    let drop = g.generate("drop", 30, "INT");
    g.secure(&["collect", &drop]).ok();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    let mock = MockServer::start();
    mock.set_latency(Duration::from_millis(300));
    let out = g.p("ret.zip");
    let a = [
        "activate",
        &cil,
        "--out",
        &out,
        "--backend",
        "microsoft",
        "--endpoint",
        &mock.url,
        "--concurrency",
        "3",
    ];
    let child = std::process::Command::new(makproxy_e2e::bin("makproxy-online"))
        .arg("--home")
        .arg(g.online_home())
        .args(a)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while mock.total_requests() < 4 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let res = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(130), "{err}");
    assert!(err.contains("MP-BKD-011"), "{err}");
    assert!(!g.path("ret.zip").exists(), "no return from a stopped run");
    let asked = mock.counts().len();
    assert!(
        asked < 30,
        "it stopped handing out requests ({asked} asked)"
    );
    assert!(
        open_intents(&g).is_empty(),
        "every request in flight was answered and saved: nothing is uncertain"
    );
    // The re-run finishes, asking each IID exactly once overall.
    let mut again = vec!["--json"];
    again.extend_from_slice(&a);
    let r = g.online(&again).ok().json();
    assert_eq!(
        r["summary"]["from_journal"].as_u64().unwrap() as usize,
        asked
    );
    assert_eq!(mock.counts().len(), 30);
    assert!(mock.counts().values().all(|n| *n == 1));
}

/// A progress signal for a running secure command: how many bursts of writes the
/// ledger's write-ahead log has seen since the call. The ledger is opened in exclusive
/// mode, so no reader can look inside while it runs; a commit writes the log in one
/// burst (changes microseconds apart), and collect parses 500 files between commits.
/// The log's size alone is no signal: after a checkpoint SQLite rewrites it from the
/// start. A kill after k bursts comes after at most k commits.
fn ledger_log_bursts(g: &Gap) -> impl FnMut() -> u32 {
    let wal = g.path("secure-home").join("ledger.sqlite3-wal");
    let seen = move || {
        std::fs::metadata(&wal)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut last = seen();
    let mut last_change: Option<std::time::Instant> = None;
    let mut bursts = 0;
    move || {
        let now = seen();
        if now != last {
            if last_change.is_none_or(|t| t.elapsed() >= Duration::from_millis(3)) {
                bursts += 1;
            }
            last_change = Some(std::time::Instant::now());
        }
        last = now;
        bursts
    }
}

/// Kills `child` once `ready()` holds (polled every millisecond); returns whether the
/// child had already ended, which the callers treat as a failed kill point.
fn kill_when(mut child: std::process::Child, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        if ready() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// The `.makproxy-*.partial` files in `dir` and their sizes.
fn partials(dir: &std::path::Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(".makproxy-") && name.ends_with(".partial"))
                .then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect()
}

#[test]
fn collect_and_pack_killed_midway_leave_a_ledger_a_rerun_completes() {
    // Kill points are chosen by progress, not by the clock: collect commits every 500
    // files, and each kill comes after 1-3 bursts of writes to the ledger's log in that
    // run, while at least one more batch is still to come; pack is killed once its
    // bundle file exists and holds data. Every kill lands mid-work on any machine.
    let g = Gap::default();
    let drop = g.generate("drop", 3000, "BULK");
    let products = |g: &Gap| g.status()["products"].as_array().unwrap().len();
    let mut killed = 0;
    for (i, k) in kill_points(3, 2, 4).into_iter().enumerate() {
        let before = products(&g);
        // Keep at least one more batch of 500 after the k-th commit to come.
        let k = k.min(((3000 - before as u64) / 500).saturating_sub(1));
        if k < 1 {
            break;
        }
        let mut bursts = ledger_log_bursts(&g);
        let finished = kill_when(g.spawn_secure(&["collect", &drop]), || bursts() >= k as u32);
        assert!(
            !finished,
            "collect {i} ended before the ledger saw {k} commits"
        );
        killed += 1;
        // Whatever was committed is whole: every product row is complete.
        let s = g.status();
        let rows = s["products"].as_array().unwrap();
        assert!(rows.iter().all(|p| p["state"] == "queued"));
        assert!(
            rows.len() < 3000,
            "kill {i} came mid-work, with {} of 3000 products in ({before} before)",
            rows.len()
        );
        eprintln!("collect kill {i}: {before} -> {} products", rows.len());
    }
    assert!(killed >= 2, "only {killed} collects were killed");
    g.secure(&["collect", &drop]).ok();
    assert_eq!(g.count("queued"), 3000);

    let media = g.path("media");
    std::fs::create_dir_all(&media).unwrap();
    let mut bundles = Vec::new();
    for i in 0..3 {
        let out = media.join(format!("b{i}.zip"));
        let finished = kill_when(
            g.spawn_secure(&["pack", "--out", out.to_str().unwrap(), "--limit", "1000"]),
            || partials(&media).iter().any(|(_, len)| *len > 0),
        );
        assert!(!finished, "pack {i} ended before its bundle file held data");
        assert!(
            !out.exists(),
            "a killed pack leaves nothing under the final name"
        );
        assert_eq!(
            g.count("packed"),
            0,
            "a pack killed mid-write has marked nothing packed"
        );
        bundles.push(out);
    }
    assert!(
        !partials(&media).is_empty(),
        "the kills left unfinished files"
    );
    // The next pack removes what the killed ones left, says so, and packs the rest once.
    let last = media.join("final.zip");
    let r = g.secure(&["pack", "--out", last.to_str().unwrap()]).ok();
    assert!(
        r.stderr.contains("an unfinished file left in"),
        "{}",
        r.stderr
    );
    assert!(partials(&media).is_empty(), "{:?}", partials(&media));
    let v = g
        .secure(&["--json", "verify", last.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(v["records"], 3000);
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

#[test]
fn a_gateway_program_sees_each_iid_at_most_once_across_kills() {
    let g = Gap::default();
    let drop = g.generate("drop", 20, "GW");
    g.secure(&["collect", &drop]).ok();
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil]).ok();
    let gateway = makproxy_e2e::example("echo_gateway");
    let log = g.p("gateway.log");
    let seen = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let args = |out: &str| -> Vec<String> {
        [
            "activate",
            &cil,
            "--out",
            out,
            "--backend",
            "command",
            "--command",
            &gateway,
            "--command-arg",
            "--log",
            "--command-arg",
            &log,
            "--command-arg",
            "--delay-ms",
            "--command-arg",
            "150",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut killed = 0;
    for (i, step) in kill_points(4, 1, 4).into_iter().enumerate() {
        let out = g.p(&format!("k{i}.zip"));
        let a = args(&out);
        let mut child = g.spawn_online(&a.iter().map(String::as_str).collect::<Vec<_>>());
        // Kill once the gateway has taken `step` more requests (one is then in flight).
        let target = seen().len() + step as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen().len() < target && child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "gateway stalled");
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(killed >= 3, "only {killed} kills landed mid-run");
    let out = g.p("ret.zip");
    let a = args(&out);
    let r = g
        .online(
            &[&["--json".to_string()][..], &a[..]]
                .concat()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .json();
    let s = &r["summary"];
    assert!(s["uncertain"].as_u64().unwrap() >= 1, "{r}");
    let log = seen();
    let unique: std::collections::HashSet<_> = log.iter().collect();
    assert_eq!(
        unique.len(),
        log.len(),
        "the gateway saw an IID twice: {log:?}"
    );
    assert_eq!(unique.len(), 20, "every IID reached the gateway once");
}

#[cfg(unix)]
#[test]
fn a_second_ctrl_c_quits_at_once_and_leaves_what_was_in_flight_uncertain() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    mock.set_latency(Duration::from_millis(3000));
    let child = g.spawn_online(&[
        "activate",
        &cil,
        "--out",
        &g.p("ret.zip"),
        "--backend",
        "microsoft",
        "--endpoint",
        &mock.url,
        "--concurrency",
        "2",
    ]);
    while mock.total_requests() < 2 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let int = || {
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
    };
    let t = std::time::Instant::now();
    assert!(int().success());
    std::thread::sleep(Duration::from_millis(100));
    assert!(int().success());
    let res = child.wait_with_output().unwrap();
    assert_eq!(res.status.code(), Some(130));
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "the second Ctrl-C did not wait for the 3 s answers ({:?})",
        t.elapsed()
    );
    assert_eq!(
        open_intents(&g).len(),
        2,
        "the two requests in flight are uncertain, as after a kill"
    );
}
