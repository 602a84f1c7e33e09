//! Upgrading: homes written by the previous release (fixtures/stores/release-0.1,
//! schema-2 ledger and journal, unsigned key files) are migrated forward on first use
//! and the lifecycle carries on: nothing recorded is lost, sequence numbers continue,
//! and pinned keys still verify.

use makproxy_e2e::{fixtures, run};
use std::path::Path;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = to.join("secret.key");
        if key.exists() {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

fn schema(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn a_previous_release_round_carries_on_after_the_upgrade() {
    let t = tempfile::tempdir().unwrap();
    let (sh, oh) = (t.path().join("secure-home"), t.path().join("online-home"));
    let old = fixtures().join("stores/release-0.1");
    copy_tree(&old.join("secure-home"), &sh);
    copy_tree(&old.join("online-home"), &oh);
    assert_eq!(schema(&sh.join("ledger.sqlite3")), "2");
    assert_eq!(schema(&oh.join("journal.sqlite3")), "2");
    let (sh, oh) = (sh.to_str().unwrap(), oh.to_str().unwrap());
    let p = |n: &str| t.path().join(n).to_string_lossy().into_owned();

    // Everything the old ledger recorded is there.
    let s = run("makproxy-secure", &["--home", sh, "--json", "status"])
        .ok()
        .json();
    let c = &s["counts"];
    assert_eq!(
        (
            c["cid_received"].as_i64(),
            c["failed"].as_i64(),
            c["skipped"].as_i64()
        ),
        (Some(10), Some(3), Some(2))
    );
    assert_eq!(schema(&t.path().join("secure-home/ledger.sqlite3")), "7");
    // Schema 6 records each bundle's signer; the old release's bundles have none, and
    // the report says so rather than naming a key.
    let page = p("report.html");
    run("makproxy-secure", &["--home", sh, "report", "--out", &page]).ok();
    let page = std::fs::read_to_string(&page).unwrap();
    assert!(
        page.contains("not recorded (packed by an older version)"),
        "old bundles' signer"
    );
    assert!(!page.contains("this site&#39;s key") && !page.contains("this site's key "));
    // Schema 4 records each product's key channel: filled from the old descriptions.
    let channels: Vec<(&str, Option<&str>)> = s["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["state"].as_str().unwrap(), p["channel"].as_str()))
        .collect();
    let of = |c: Option<&str>| channels.iter().filter(|(_, x)| *x == c).count();
    assert_eq!(
        (
            of(Some("mak")),
            of(None),
            of(Some("retail")),
            of(Some("kms-client"))
        ),
        (11, 2, 1, 1),
        "from the descriptions; CSV rows without one stay unknown: {channels:?}"
    );
    assert_eq!(s["channels"], "mak,csvlk", "the default policy");

    // The failed three are packed again: the sequence continues at 2, and the online
    // side (pinned keys from unsigned v1 files) verifies and answers them.
    let pk = run(
        "makproxy-secure",
        &[
            "--home",
            sh,
            "--json",
            "pack",
            "--out",
            &p("cil-2.zip"),
            "--only-failed",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        (pk["records"].as_u64(), pk["sequence"].as_u64()),
        (Some(3), Some(2))
    );
    let a = run(
        "makproxy-online",
        &[
            "--home",
            oh,
            "--json",
            "activate",
            &p("cil-2.zip"),
            "--out",
            &p("ret-2.zip"),
            "--backend",
            "simulator",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        a["summary"]["obtained"], 3,
        "old refusals of unknown provenance are not reused: {a}"
    );
    assert_eq!(schema(&t.path().join("online-home/journal.sqlite3")), "3");
    let ap = run(
        "makproxy-secure",
        &[
            "--home",
            sh,
            "--json",
            "apply",
            &p("ret-2.zip"),
            "--deposit-dir",
            &p("dep"),
        ],
    )
    .ok()
    .json();
    assert_eq!(ap["summary"]["cids"], 3);
    let s = run("makproxy-secure", &["--home", sh, "--json", "status"])
        .ok()
        .json();
    assert_eq!(s["counts"]["cid_received"], 13);
    // The old journal's answers keep their provenance.
    let j = run(
        "makproxy-online",
        &["--home", oh, "--json", "journal", "list"],
    )
    .ok()
    .json();
    let answers = j["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 13);
    assert!(answers
        .iter()
        .all(|e| e["backend"] == "simulator" && e["simulated"] == true));
}
