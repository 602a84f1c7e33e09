//! The online side against a loopback mock of Microsoft's BatchActivation service:
//! CIDs, service errors, outages, the journal, and remaining-activation checks.

use makproxy_e2e::Gap;
use makproxy_testkit::mock::{mock_cid, Behavior, MockServer};
use std::io::Read;

fn iids(bundle: &str) -> Vec<String> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut s = String::new();
    z.by_name("records.jsonl")
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["installation_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn round_trip_against_the_mock_service_with_errors_and_an_outage() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let ids = iids(&cil);
    let mock = MockServer::start();
    mock.set(&ids[0], Behavior::Error("0x7F".into()));
    mock.set(&ids[1], Behavior::Error("0x67".into()));
    // (An HTML 500 page is uncertain, not a refusal: mock_service tests it.)
    mock.set(&ids[2], Behavior::Garbage);
    mock.set(&ids[3], Behavior::Drop(1));
    mock.set(&ids[4], Behavior::Error("0xC0FFEE".into()));
    let ret = g.p("ret.zip");
    let r = g
        .activate_microsoft(
            &cil,
            &ret,
            &mock.url,
            &["--retry-delay-ms", "10", "--concurrency", "3"],
        )
        .code(4)
        .json();
    assert_eq!(r["simulated"], false);
    assert_eq!(r["summary"]["obtained"], 8);
    assert_eq!(r["summary"]["failed"], 5);
    assert_eq!(r["summary"]["uncertain"], 1);
    let by = &r["summary"]["failed_by_reason"];
    assert_eq!(
        (
            by["0x7F"].as_u64(),
            by["0x67"].as_u64(),
            by["MP-BKD-003"].as_u64(),
            by["0xC0FFEE"].as_u64(),
            by["MP-BKD-010"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1), Some(1))
    );
    assert_eq!(
        mock.bad_digests(),
        0,
        "every request carried a valid HMAC digest"
    );
    assert_eq!(
        mock.requests_for(&ids[3]),
        1,
        "a connection dropped after the request was sent is uncertain, never re-sent"
    );
    // The journal shows it; a second run does not send it; --retry-uncertain does.
    let open = g
        .online(&["--json", "journal", "list", "--uncertain"])
        .ok()
        .json();
    assert_eq!(open["uncertain"][0]["iid"], ids[3].as_str());
    let again = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "--json",
            "activate",
            &cil,
            "--out",
            out,
            "--backend",
            "microsoft",
            "--endpoint",
            &mock.url,
        ];
        a.extend_from_slice(extra);
        g.online(&a).json()
    };
    let r2 = again(&g.p("ret2.zip"), &[]);
    assert_eq!(r2["summary"]["uncertain"], 1);
    assert_eq!(
        r2["summary"]["obtained"], 0,
        "nothing answered is asked twice"
    );
    assert_eq!(mock.requests_for(&ids[3]), 1, "still sent once");
    let r3 = again(&g.p("ret3.zip"), &["--retry-uncertain"]);
    assert_eq!(r3["summary"]["uncertain"], 0);
    assert_eq!(
        r3["summary"]["obtained"], 1,
        "the operator's say-so sends it again"
    );
    assert_eq!(mock.requests_for(&ids[3]), 2);
    assert_eq!(
        g.online(&["--json", "journal", "list", "--uncertain"])
            .ok()
            .json()["uncertain"],
        serde_json::json!([])
    );
    // Its return's records name their backend, and the endpoint is signed.
    let v = g
        .secure(&["--json", "verify", &g.p("ret3.zip")])
        .ok()
        .json();
    assert_eq!(v["backend"]["endpoint"], mock.url.as_str());
    for id in ids.iter().filter(|i| **i != ids[3]) {
        assert_eq!(
            mock.requests_for(id),
            1,
            "one request per IID over three runs"
        );
    }
    let a = g
        .secure(&["--json", "apply", &ret, "--deposit-dir", &g.p("dep")])
        .code(4)
        .json();
    assert_eq!(a["summary"]["cids"], 8);
    assert_eq!(
        a["summary"]["pending"], 1,
        "the uncertain record stays pending"
    );
    assert_eq!(a["still_pending"], 1);
    // The later return (after --retry-uncertain) answers what the first left open.
    let a3 = g
        .secure(&[
            "--json",
            "apply",
            &g.p("ret3.zip"),
            "--deposit-dir",
            &g.p("dep"),
        ])
        .json();
    assert_eq!(a3["summary"]["cids"], 1, "{a3}");
    assert_eq!(a3["summary"]["already_answered"], 8);
    assert_eq!(a3["still_pending"], 0);
    assert_eq!(g.count("cid_received"), 9);
    let failed = g.secure(&["status", "--state", "failed"]).ok().stdout;
    assert!(
        failed.contains("0x7F: MAK has exceeded its activation limit"),
        "{failed}"
    );
    assert!(failed.contains("0x67: product key is blocked"));
    assert!(failed.contains("0xC0FFEE: unrecognised service error code (reported verbatim)"));
    assert!(failed.contains("MP-BKD-003"), "{failed}");
    // Real CIDs are what the service sent, not simulated.
    let v = g.secure(&["--json", "verify", &ret]).ok().json();
    assert_eq!(v["simulated"], 0);
    let any: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.path("dep/PC-000001.json")).unwrap())
            .unwrap();
    let first = &any["products"][0];
    assert_eq!(first["simulated"], false);
    assert_eq!(
        first["confirmation_id"].as_str().unwrap(),
        mock_cid(first["installation_id"].as_str().unwrap())
    );

    // Running the same bundle again asks nothing already answered: CIDs and refusals come from the journal.
    let before = mock.total_requests();
    let r2 = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("ret-again.zip"),
            "--backend",
            "microsoft",
            "--endpoint",
            &mock.url,
            "--retry-delay-ms",
            "10",
        ])
        .code(4)
        .json();
    assert_eq!(r2["summary"]["from_journal"], 9);
    assert_eq!(r2["summary"]["obtained"], 0);
    assert_eq!(
        mock.total_requests(),
        before,
        "no request reached the service"
    );
}

#[test]
fn simulator_cids_are_never_served_to_a_real_run() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    g.online(&[
        "activate",
        &cil,
        "--out",
        &g.p("drill.zip"),
        "--backend",
        "simulator",
    ])
    .ok();
    let mock = MockServer::start();
    let r = g
        .online(&[
            "--json",
            "activate",
            &cil,
            "--out",
            &g.p("real.zip"),
            "--backend",
            "microsoft",
            "--endpoint",
            &mock.url,
        ])
        .ok()
        .json();
    assert_eq!(
        r["summary"]["obtained"], 13,
        "the drill's simulated CIDs were not reused"
    );
    assert_eq!(mock.total_requests(), 13);
}

#[test]
fn remaining_and_check_remaining() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    mock.set_remaining(5);
    let r = g
        .online(&[
            "--json",
            "remaining",
            "--pid",
            "03612-03305-317-008912-02-1033-9200.0000-0662023",
            "--backend",
            "microsoft",
            "--endpoint",
            &mock.url,
        ])
        .ok()
        .json();
    assert_eq!(r["remaining"], 5);
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
            "--check-remaining",
        ])
        .code(3)
        .json();
    assert_eq!(r["error"]["code"], "MP-BKD-007");
    assert!(!g.path("ret.zip").exists());
    assert_eq!(
        mock.total_requests(),
        2,
        "the explicit query, then the first ePID short of activations stops the batch"
    );
}

#[test]
fn dry_run_contacts_nothing_and_writes_nothing() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
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
            "--dry-run",
        ])
        .ok()
        .json();
    assert_eq!(r["would_request"], 13);
    assert_eq!(mock.total_requests(), 0);
    assert!(!g.path("ret.zip").exists());
}

#[test]
fn a_mixed_bundle_is_answered_in_order_with_one_request_per_iid() {
    let g = Gap::default();
    let drop = g.generate("drop", 60, "MIX");
    // Five more machines carry the IID of an even-numbered one (a cloned image): two
    // are collected right after their original, three at the end of the batch.
    for (n, twin) in [
        (2, "MIX-000002-TWIN"),
        (4, "MIX-000004-TWIN"),
        (6, "ZZ-TWIN-000006"),
        (8, "ZZ-TWIN-000008"),
        (10, "ZZ-TWIN-000010"),
    ] {
        let from = format!("{drop}/MIX-{n:06}.json");
        let text = std::fs::read_to_string(&from)
            .unwrap()
            .replace(&format!("\"MIX-{n:06}\""), &format!("\"{twin}\""));
        std::fs::write(format!("{drop}/{twin}.json"), text).unwrap();
    }
    g.secure(&["collect", &drop]).ok();
    let mock = MockServer::start();
    mock.set_latency(std::time::Duration::from_millis(15));
    let activate = |cil: &str, ret: &str, code: i32| {
        g.activate_microsoft(cil, ret, &mock.url, &["--concurrency", "4"])
            .code(code)
            .json()
    };
    // Bundle 1: the odd-numbered machines; their CIDs go into the journal.
    let (cil1, cil2) = (g.p("cil1.zip"), g.p("cil2.zip"));
    g.secure(&["pack", "--out", &cil1, "--host", "MIX-*[13579]"])
        .ok();
    let odd = iids(&cil1);
    assert_eq!(odd.len(), 30);
    assert_eq!(
        activate(&cil1, &g.p("ret1.zip"), 0)["summary"]["obtained"],
        30
    );
    // Bundle 2: everything, in collection order, so journal answers, new requests and
    // twins interleave; three new IIDs are refused: one shared with the next record,
    // one with a record at the end of the bundle, one not shared.
    g.secure(&["pack", "--out", &cil2, "--repack"]).ok();
    let all = iids(&cil2);
    assert_eq!(all.len(), 65);
    let at = |i: usize| {
        let iid = all[i].clone();
        assert!(!odd.contains(&iid), "record {i} has a new IID");
        iid
    };
    // Collection order: MIX-000001, MIX-000002, MIX-000002-TWIN, MIX-000003, ...
    let refused = [at(1), at(7), at(13)];
    assert_eq!(all[2], refused[0], "a twin right after its original");
    assert_eq!(
        all[all.len() - 3],
        refused[1],
        "a twin at the end of the bundle"
    );
    assert_eq!(all.iter().filter(|i| **i == refused[2]).count(), 1);
    for iid in &refused {
        mock.set(iid, Behavior::Error("0x67".into()));
    }
    let r = activate(&cil2, &g.p("ret2.zip"), 4);
    assert_eq!(r["summary"]["records"], 65);
    assert_eq!(r["summary"]["from_journal"], 30);
    assert_eq!(r["summary"]["failed"], 5);
    assert_eq!(r["summary"]["obtained"], 30);
    // One request per distinct IID over both runs, twins included.
    for iid in &all {
        assert_eq!(mock.requests_for(iid), 1, "{iid}");
    }
    assert_eq!(mock.total_requests(), 60);
    // The return lists every record of the request, in order, with its own answer.
    let mut z = zip::ZipArchive::new(std::fs::File::open(g.p("ret2.zip")).unwrap()).unwrap();
    let mut text = String::new();
    z.by_name("results.jsonl")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 65);
    for (i, (rec, iid)) in lines.iter().zip(&all).enumerate() {
        assert_eq!(rec["handle"], i as u64 + 1);
        assert_eq!(rec["installation_id"], iid.as_str());
        if refused.contains(iid) {
            assert_eq!(rec["failure"]["service_code"], "0x67", "{rec}");
        } else {
            assert_eq!(rec["confirmation_id"], mock_cid(iid).as_str(), "{rec}");
            let want = if odd.contains(iid) {
                "journal"
            } else {
                "backend"
            };
            assert_eq!(rec["source"], want, "{rec}");
        }
    }
}

#[test]
fn a_second_process_on_a_busy_home_fails_at_once_naming_the_first() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    mock.set_latency(std::time::Duration::from_millis(300));
    let first = g.spawn_online(&[
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
    ]);
    while mock.total_requests() < 1 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let t = std::time::Instant::now();
    let second = g.online(&["--json", "journal", "list"]).code(1);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "the second process waited {:?} instead of failing at once",
        t.elapsed()
    );
    assert_eq!(second.json()["error"]["code"], "MP-KEY-009");
    assert!(
        second
            .stderr
            .contains(&format!("process ID {}", first.id())),
        "{}",
        second.stderr
    );
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "the first run is unharmed");
    // Once the first has ended, the home is free again.
    g.online(&["journal", "list"]).ok();
}

/// Issue 29 §3: a scheduled task's log (stderr not a terminal) gets a plain progress
/// line every MAKPROXY_PROGRESS_INTERVAL seconds while the work lasts, instead of
/// silence; stdout (the report, here --json) is untouched by it.
#[test]
fn progress_reaches_a_log_that_is_not_a_terminal() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    mock.set_latency(std::time::Duration::from_millis(250));
    let r = g
        .online_env(
            &[
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
            ],
            &[("MAKPROXY_PROGRESS_INTERVAL", "1")],
        )
        .ok();
    assert_eq!(r.json()["summary"]["obtained"], 13, "{}", r.stdout);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("activate: ") && l.contains(" of 13 done ("))
        .collect();
    assert!(lines.len() >= 2, "a line a second for 3 s: {}", r.stderr);
}

/// Issue 31: a batch-wide 0x80004003 (the September 2025 outage) is an outage, not 13
/// refusals: the run stops after --max-transport-failures such answers, writes no
/// return, stores nothing as a refusal, and the next run, once the service is back,
/// asks every IID and gets every CID.
#[test]
fn a_batch_wide_0x80004003_is_an_outage_and_every_iid_stays_askable() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    mock.set_default(Behavior::Error("0x80004003".into()));
    let args = |out: &str| {
        vec![
            "--json".to_string(),
            "activate".into(),
            cil.clone(),
            "--out".into(),
            out.to_string(),
            "--backend".into(),
            "microsoft".into(),
            "--endpoint".into(),
            mock.url.clone(),
            "--concurrency".into(),
            "1".into(),
        ]
    };
    let a = args(&g.p("ret1.zip"));
    let r = g
        .online(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .code(1);
    assert_eq!(r.json()["error"]["code"], "MP-BKD-015", "{}", r.stdout);
    assert!(!g.path("ret1.zip").exists(), "no return of refusals");
    assert!(
        mock.total_requests() <= 6,
        "it stopped: {}",
        mock.total_requests()
    );
    let j = g.online(&["--json", "journal", "list"]).ok().json();
    assert_eq!(j["answers"].as_array().unwrap().len(), 0);
    // The service is back: everything is asked and answered.
    mock.set_default(Behavior::Cid);
    let a = args(&g.p("ret2.zip"));
    let ok = g
        .online(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .ok()
        .json();
    assert_eq!(ok["summary"]["obtained"], 13, "{ok}");
}

/// Issue 29 §3: makproxy-mock, the mock as a process, takes a port, a remaining count,
/// and --forever (a background job whose stdin is closed keeps serving).
#[test]
fn makproxy_mock_serves_on_a_chosen_port_with_a_chosen_count() {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(makproxy_e2e::bin("makproxy-mock"))
        .args(["--port", &port.to_string(), "--remaining", "7", "--forever"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_string();
    assert!(url.contains(&format!("127.0.0.1:{port}/")), "{url}");
    let g = Gap::default();
    let r = g
        .online(&[
            "--json",
            "remaining",
            "--pid",
            "03612-03305-317-008912-02-1033-9200.0000-0662023",
            "--backend",
            "microsoft",
            "--endpoint",
            &url,
        ])
        .ok()
        .json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r["remaining"], 7, "{r}");
}

/// Issue 31: behind a TLS-inspecting proxy the endpoint's certificate is signed by the
/// proxy's own CA. makproxy never ignores a TLS error: without that CA trusted the
/// request is refused before anything is sent (no answer, nothing spent); `--ca-file`
/// with the proxy's CA lets it through; another CA's file does not; a file holding a
/// private key or nothing is refused as a usage error. The loopback front serves the
/// mock with fixtures/tls/loopback-server.pem, signed by inspecting-proxy-ca.pem.
#[test]
fn a_tls_inspecting_proxys_ca_is_trusted_only_when_given_and_never_bypassed() {
    let g = Gap::default();
    let tls = makproxy_e2e::fixtures().join("tls");
    let read = |n: &str| std::fs::read(tls.join(n)).unwrap();
    let mock =
        MockServer::start_tls(&read("loopback-server.pem"), &read("loopback-server.key")).unwrap();
    mock.set_remaining(7);
    let ask = |ca: Option<&str>| {
        let mut a = vec![
            "--json".to_string(),
            "remaining".into(),
            "--pid".into(),
            "03612-03305-317-008912-02-1033-9200.0000-0662023".into(),
            "--backend".into(),
            "microsoft".into(),
            "--endpoint".into(),
            mock.url.clone(),
        ];
        if let Some(f) = ca {
            a.push("--ca-file".into());
            a.push(tls.join(f).to_str().unwrap().to_string());
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        g.online(&a)
    };
    for refused in [None, Some("unrelated-ca.pem")] {
        let r = ask(refused);
        assert_eq!(r.code, 1, "{:?}: {}{}", refused, r.stdout, r.stderr);
        // Not sent (not "uncertain": a certificate is refused before a byte of the
        // request goes out), with the way out named.
        let e = &r.json()["error"];
        assert_eq!(e["code"], "MP-BKD-002", "{}", r.stdout);
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains("the endpoint's TLS certificate was refused (invalid peer certificate: UnknownIssuer); nothing was sent")
                && m.contains("--ca-file"),
            "{m}"
        );
    }
    assert_eq!(mock.total_requests(), 0, "nothing reached the service");
    let r = ask(Some("inspecting-proxy-ca.pem")).ok().json();
    assert_eq!(r["remaining"], 7, "{r}");
    assert_eq!(mock.total_requests(), 1);
    for bad in ["loopback-server.key", "../drop/LAB-07.json"] {
        let r = ask(Some(bad)).code(2);
        assert!(r.stdout.contains("--ca-file"), "{bad}: {}", r.stdout);
    }
    // A batch through the proxy: the return records which trust it went through (the
    // CA file's digest) beside the endpoint, as the journal does.
    mock.set_remaining(100);
    let cil = g.packed_fixture();
    let ret = g.p("ret.zip");
    let ca = tls.join("inspecting-proxy-ca.pem");
    g.activate_microsoft(&cil, &ret, &mock.url, &["--ca-file", ca.to_str().unwrap()])
        .ok();
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(&ca).unwrap())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let v = g.secure(&["--json", "verify", &ret]).ok().json();
    assert_eq!(
        v["backend"]["endpoint"],
        format!("{} (TLS trust: --ca-file, SHA-256 {digest}…)", mock.url),
        "{v}"
    );
    let j = g
        .online(&["--json", "journal", "list", "--limit", "1"])
        .ok()
        .json();
    assert_eq!(j["answers"][0]["endpoint"], v["backend"]["endpoint"], "{j}");
}
