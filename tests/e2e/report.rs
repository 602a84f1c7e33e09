//! Issue 29 §4: the HTML report as a manager gets it, read by an independent HTML
//! engine: headless Chromium (Debian's package; scripts/test.sh installs it) parses the
//! page, and the tests read the DOM it built and take a screenshot. What the page
//! claims (machines done, what is left, keys, who signed) is checked against numbers
//! the test works out itself from `status --json` and `keys list --json`.

use makproxy_e2e::{result_file, Gap};
use makproxy_testkit::mock::MockServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is needed to render the report (apt-get install chromium; scripts/test.sh does)")
}

/// Chromium's DOM of `page` (as it parsed it), and a screenshot of it in `png`.
fn browse(page: &Path, png: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let run = |what: &str| {
        // `timeout`: a browser that hangs fails the test instead of wedging the suite.
        let out = Command::new("timeout")
            .args(["120", chromium()])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--window-size=1280,3000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(what)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("a UTF-8 DOM")
    };
    run(&format!("--screenshot={}", png.display()));
    let shot = std::fs::read(png).expect("the screenshot was written");
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    run("--dump-dom")
}

/// The body rows of the table `id` in Chromium's DOM.
fn rows<'a>(dom: &'a str, id: &str) -> Vec<&'a str> {
    let start = dom
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr>").skip(1).collect()
}

/// Machines with a product to activate, and of those the ones with every such product
/// activated, worked out from `status --json`.
fn machines_from_status(status: &Value) -> (usize, usize, Vec<String>) {
    let mut hosts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in status["products"].as_array().unwrap() {
        let state = p["state"].as_str().unwrap();
        if state == "skipped" {
            continue;
        }
        let h = hosts.entry(p["host"].as_str().unwrap().into()).or_default();
        h.0 += 1;
        h.1 += usize::from(state == "activated");
    }
    let left = hosts
        .iter()
        .filter(|(_, (n, a))| a < n)
        .map(|(h, _)| h.clone())
        .collect();
    let done = hosts.values().filter(|(n, a)| a == n).count();
    (hosts.len(), done, left)
}

#[test]
fn a_manager_reads_a_real_estate_in_a_browser() {
    let g = Gap::new("PLANT-7");
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    mock.set_remaining(500);
    let ret = g.p("ret.zip");
    g.activate_microsoft(&cil, &ret, &mock.url, &["--check-remaining"])
        .ok();
    let dep = g.p("dep");
    g.secure(&["apply", &ret, "--deposit-dir", &dep]).ok();
    // Two machines deposit; the others have not yet.
    let share = g.path("results");
    result_file(&g, &share, "PC-000001", "PC-000001.result.json", true);
    result_file(&g, &share, "LAB-07", "LAB-07.result.json", true);
    g.secure(&["collect", share.to_str().unwrap()]).ok();

    let page = g.path("report.html");
    let w = g
        .secure(&["--json", "report", "--out", page.to_str().unwrap()])
        .ok()
        .json();
    let (total, done, left) = machines_from_status(&g.status());
    assert!(done >= 2 && done < total, "a part done: {done} of {total}");
    let m = &w["machines"];
    assert_eq!(
        (m["total"].as_u64(), m["activated"].as_u64()),
        (Some(total as u64), Some(done as u64)),
        "{w}"
    );
    assert_eq!(
        m["percent_activated"].as_u64(),
        Some((done * 100 / total) as u64)
    );
    assert_eq!(m["simulated_products"], 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "readable by others, to be put on a share");
    }

    let dom = browse(&page, &g.path("report.png"));
    assert!(dom.contains("Activation report: site PLANT-7"), "{dom}");
    assert!(
        dom.contains(&format!("of machines activated: {done} of {total}")),
        "{dom}"
    );
    assert!(!dom.contains("id=\"simulated\""), "no drill here");
    // The machines still to do are exactly those the status says, each once.
    let outstanding = rows(&dom, "outstanding");
    assert_eq!(outstanding.len(), left.len(), "{outstanding:?}");
    for host in &left {
        assert_eq!(
            outstanding
                .iter()
                .filter(|r| r.starts_with(&format!("<td>{host}</td>")))
                .count(),
            1,
            "{host} listed once"
        );
    }
    assert!(outstanding.iter().all(|r| r.contains("deposit to run")));
    // The bundle: who signed it here, who signed its return, and what answered.
    let fingerprint = g.secure(&["--json", "key", "show"]).ok().json()["public_key"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let bundle = rows(&dom, "bundles");
    assert_eq!(bundle.len(), 1);
    assert!(
        bundle[0].contains(&format!("this site's key {fingerprint}")),
        "{}",
        bundle[0]
    );
    assert!(
        bundle[0].contains("signed by gateway · answered by microsoft"),
        "{}",
        bundle[0]
    );
    assert!(bundle[0].contains("answered"));
    // Every key the inventory knows, with the count it holds.
    let keys = g.secure(&["--json", "keys", "list"]).ok().json();
    let keys = keys["keys"].as_array().unwrap();
    assert!(!keys.is_empty(), "the return reported counts");
    let key_rows = rows(&dom, "keys");
    assert_eq!(key_rows.len(), keys.len());
    for k in keys {
        let last5 = k["last5"].as_str().unwrap();
        let row = key_rows
            .iter()
            .find(|r| r.contains(&format!("…{last5}")))
            .unwrap_or_else(|| panic!("…{last5} in {key_rows:?}"));
        assert!(row.contains(&format!("{} left", k["remaining"])), "{row}");
        assert!(row.contains("<svg class=\"gauge\""), "a gauge: {row}");
        assert!(
            row.contains("<svg class=\"weekly\""),
            "use over time: {row}"
        );
    }
}

#[test]
fn a_drills_simulated_answers_cannot_be_missed() {
    let g = Gap::default();
    g.collect_fixture();
    let (cil, ret) = (g.p("cil.zip"), g.p("ret.zip"));
    g.secure(&["pack", "--out", &cil]).ok();
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    g.secure(&["apply", &ret, "--deposit-dir", &g.p("dep")])
        .ok();
    let page = g.path("drill.html");
    let w = g
        .secure(&["--json", "report", "--out", page.to_str().unwrap()])
        .ok()
        .json();
    let simulated = g.count("cid_received");
    assert!(simulated > 0);
    assert_eq!(
        w["machines"]["simulated_products"].as_i64(),
        Some(simulated)
    );
    assert_eq!(
        w["machines"]["activated"], 0,
        "a simulated answer is never done"
    );
    let text = g
        .secure(&["report", "--out", page.to_str().unwrap(), "--force"])
        .ok()
        .stdout;
    assert!(
        text.contains("SIMULATED"),
        "the command says it too: {text}"
    );

    let dom = browse(&page, &g.path("drill.png"));
    let banner = dom.find("id=\"simulated\"").expect("the banner");
    assert!(
        banner < dom.find("id=\"machines\"").unwrap(),
        "above everything else"
    );
    assert!(dom.contains(&format!(
        "SIMULATED ANSWERS (a drill): {simulated} product(s)"
    )));
    assert!(dom.contains("of machines activated: 0 of"));
    // The states in words, the simulated one marked.
    assert!(dom.contains(&format!(
        "<div class=\"card simulated\"><b>{simulated}</b>SIMULATED answer: not activated</div>"
    )));
    assert!(rows(&dom, "bundles")[0].contains("SIMULATED"));
}
