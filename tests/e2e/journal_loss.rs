//! The double-spend guard is never reset silently (issue 28, item 5). Adversaries:
//! time and a careless operator (a disk replaced, a backup restored without the
//! journal, a journal copied from another gateway). A missing, empty or foreign journal
//! is refused before anything is sent; `recover` rebuilds it from the returns this home
//! wrote, and what it cannot know (IIDs the lost journal sent but never wrote into a
//! return) stays uncertain. The gateway program's log is what "the service" saw.

use makproxy_e2e::{run, Gap};

fn sent(log: &str) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

fn activate(g: &Gap, cil: &str, out: &str, log: &str, extra: &[&str]) -> makproxy_e2e::Run {
    let gateway = makproxy_e2e::example("echo_gateway");
    let mut args = vec![
        "--json",
        "activate",
        cil,
        "--out",
        out,
        "--backend",
        "command",
        "--command",
        &gateway,
        "--command-arg",
        "--log",
        "--command-arg",
        log,
    ];
    args.extend_from_slice(extra);
    g.online(&args)
}

fn remove_journal(g: &Gap) {
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(g.path(&format!("online-home/journal.sqlite3{s}")));
    }
}

#[test]
fn a_lost_journal_is_refused_and_recover_never_sends_an_answered_iid_again() {
    let g = Gap::default();
    let log = g.p("service.log");
    let cil1 = g.packed_fixture();
    let r1 = activate(&g, &cil1, &g.p("ret-1.zip"), &log, &[]).json();
    let first = sent(&log);
    assert!(first > 0 && r1["summary"]["obtained"].as_u64().unwrap() > 0);
    // A second request, packed and carried, but never answered before the loss.
    let more = g.generate("more", 3, "LATE");
    g.secure(&["collect", &more]).ok();
    let cil2 = g.p("cil-2.zip");
    g.secure(&["pack", "--out", &cil2]).ok();

    // The journal is lost (init created it; nothing recreates it): refused, nothing sent.
    remove_journal(&g);
    let r = activate(&g, &cil1, &g.p("ret-x.zip"), &log, &[]).code(1);
    assert!(r.stderr.contains("error[MP-JNL-001]"), "{}", r.stderr);
    std::fs::write(g.path("online-home/journal.sqlite3"), b"").unwrap();
    let r = g.online(&["journal", "list"]).code(1);
    assert!(
        r.stderr.contains("error[MP-JNL-001]"),
        "an empty one too: {}",
        r.stderr
    );
    assert_eq!(sent(&log), first, "nothing was sent");
    assert!(!g.path("ret-x.zip").exists());

    // Another gateway's journal in its place is not this home's.
    let other = g.p("other-gateway");
    run(
        "makproxy-online",
        &["--home", &other, "init", "--site", "gw2"],
    )
    .ok();
    std::fs::copy(
        format!("{other}/journal.sqlite3"),
        g.path("online-home/journal.sqlite3"),
    )
    .unwrap();
    let r = activate(&g, &cil1, &g.p("ret-x.zip"), &log, &[]).code(1);
    assert!(r.stderr.contains("error[MP-JNL-002]"), "{}", r.stderr);
    let r = g.online(&["recover", &g.p("ret-1.zip")]).code(1);
    assert!(
        r.stderr.contains("error[MP-JNL-003]"),
        "never merges into a journal: {}",
        r.stderr
    );
    remove_journal(&g);

    // recover from the return this home wrote: its CIDs are never asked for again.
    let rec = g
        .online(&["--json", "recover", &g.p("ret-1.zip")])
        .ok()
        .json();
    assert_eq!(rec["answers_restored"], r1["summary"]["obtained"]);
    let again = activate(&g, &cil1, &g.p("ret-2.zip"), &log, &[]).json();
    assert_eq!(sent(&log), first, "no answered IID was sent again");
    assert_eq!(again["summary"]["obtained"], 0);
    assert_eq!(again["summary"]["from_journal"], r1["summary"]["obtained"]);
    // Its refusals were not restored (asking again spends nothing), so those records
    // are uncertain until a whole --retry-uncertain run has gone through the bundle;
    // after that they are ordinary refusals, asked again by --retry-failed.
    let refused = r1["summary"]["failed"].as_u64().unwrap();
    assert!(refused > 0, "the example gateway refuses IIDs ending in 6");
    assert_eq!(again["summary"]["uncertain"].as_u64(), Some(refused));
    activate(&g, &cil1, &g.p("ret-2b.zip"), &log, &["--retry-uncertain"]);
    assert_eq!(sent(&log), first + refused as usize);
    let r = activate(&g, &cil1, &g.p("ret-2c.zip"), &log, &["--retry-failed"]).json();
    assert_eq!(r["summary"]["uncertain"], 0, "not uncertain a second time");
    assert_eq!(sent(&log), first + 2 * refused as usize);
    let first = sent(&log);

    // cil-2 was made before the recovery: the lost journal may have sent it. Uncertain,
    // not sent, until the operator decides.
    let r = activate(&g, &cil2, &g.p("ret-3.zip"), &log, &[]);
    let j = r.json();
    assert!(
        j["summary"]["uncertain"].as_u64().unwrap() > 0,
        "{}",
        r.stdout
    );
    assert_eq!(sent(&log), first, "uncertain records are not sent");
    activate(&g, &cil2, &g.p("ret-4.zip"), &log, &["--retry-uncertain"]);
    assert!(sent(&log) > first, "sent once the operator says so");

    // The secure side applies the new returns: their sequence continues after ret-1's.
    for ret in ["ret-1.zip", "ret-2.zip"] {
        // Partial (4): the example gateway refuses IIDs ending in 6.
        let r = g.secure(&["apply", &g.p(ret), "--deposit-dir", &g.p("dep")]);
        assert!(matches!(r.code, 0 | 4), "{ret}: {}", r.stderr);
        assert!(
            !r.stderr.contains("MP-APL-006"),
            "not taken for a replay: {}",
            r.stderr
        );
    }
    let seq = |f: &str| g.secure(&["--json", "verify", &g.p(f)]).ok().json()["sequence"].as_u64();
    assert!(seq("ret-2.zip") > seq("ret-1.zip"), "numbering continues");
}
