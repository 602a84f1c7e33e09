//! The operator guide's bash lines, run as written (docs/operator-guide.md, blocks marked
//! `<!-- guide-test: … -->`): the drill of section 4, whose transcript is kept in
//! docs/drill-transcript.md, and the batch script of section 5. The guide's cmd and
//! PowerShell form of the drill must be the same lines with `\` for `/`. So the guide
//! cannot drift from the tool. After an intended change of output:
//! `MAKPROXY_BLESS=1 cargo test --test e2e guide` and review the transcript's diff.
#![cfg(unix)]

use makproxy_e2e::{bin, fixtures, normalise, root};
use std::path::Path;
use std::process::Command;

/// The fenced block after the line holding `<!-- guide-test: NAME`.
fn block(name: &str) -> String {
    let guide = std::fs::read_to_string(root().join("docs/operator-guide.md")).unwrap();
    let marker = format!("<!-- guide-test: {name}");
    let at = guide
        .find(&marker)
        .unwrap_or_else(|| panic!("operator-guide.md has no {marker}"));
    let mut lines = guide[at..].lines().skip(1);
    let fence = lines.next().expect("a block after the marker");
    assert!(
        fence.starts_with("```"),
        "{name}: a fenced block must follow"
    );
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `bash -c script` in `dir`, with the built binaries first on PATH: (exit, output).
fn bash(dir: &Path, script: &str) -> (i32, String) {
    let bins = bin("makproxy-secure").parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bins).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("MAKPROXY_HOME")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn the_drill_runs_as_the_guide_writes_it() {
    let bash_lines = block("drill-bash");
    assert_eq!(
        block("drill-windows"),
        bash_lines.replace('/', "\\"),
        "the cmd/PowerShell drill must be the bash drill with \\ for /"
    );
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("drop"), &t.path().join("fixtures/drop"));
    let mut transcript = String::new();
    for line in bash_lines.lines() {
        let (code, out) = bash(t.path(), line);
        assert_eq!(code, 0, "guide line failed: {line}\n{out}");
        transcript.push_str(&format!("$ {line}\n{out}"));
    }
    // What the guide's "Expected:" paragraph promises.
    for promise in [
        "15 new, 0 updated, 0 unchanged; 13 queued, 0 CID on hand, 2 skipped",
        "no-key: no product key installed",
        "Packed 13 record(s)",
        "13 CID(s) obtained now",
        "SIMULATOR backend",
        "Results:     13 CID(s), 0 failure(s)",
        "9 deposit file(s)",
        "This return was already applied",
        "cid_received: 13, skipped: 2",
    ] {
        assert!(
            transcript.contains(promise),
            "the drill no longer prints {promise:?}:\n{transcript}"
        );
    }
    assert_eq!(transcript.matches(" CID 000000-").count(), 13, "--records");
    assert_eq!(
        std::fs::read_dir(t.path().join("drill/deposit"))
            .unwrap()
            .count(),
        18,
        "a .json and a .cmd for each of 9 machines"
    );
    assert!(std::fs::read_to_string(t.path().join("drill/report.html"))
        .unwrap()
        .contains("<html"));

    let doc = root().join("docs/drill-transcript.md");
    let head = "# Transcript of the operator guide's drill\n\n\
        What the bash lines of docs/operator-guide.md section 4 print, run in a copy of the\n\
        repository by `tests/e2e/guide.rs` (which fails if the output changes in anything but\n\
        keys, IDs and times). Regenerate: `MAKPROXY_BLESS=1 cargo test --test e2e guide`.\n\n```text\n";
    if std::env::var_os("MAKPROXY_BLESS").is_some() {
        std::fs::write(&doc, format!("{head}{transcript}```\n")).unwrap();
    }
    let kept = std::fs::read_to_string(&doc).unwrap();
    let kept = kept
        .strip_prefix(head)
        .and_then(|k| k.strip_suffix("```\n"))
        .expect("docs/drill-transcript.md: header or closing fence changed");
    assert_eq!(
        normalise(kept, t.path()),
        normalise(&transcript, t.path()),
        "docs/drill-transcript.md is out of date (MAKPROXY_BLESS=1 to regenerate)"
    );
}

/// The guide's bash batch script with its three folders moved under `root`.
fn batch_script(root: &Path) -> String {
    named_batch_script(root, "batch-bash")
}

/// A guide batch block `name` with its folders moved under `root`.
fn named_batch_script(root: &Path, name: &str) -> String {
    let r = root.to_str().unwrap();
    let s = block(name);
    for dir in ["/srv/makproxy", "/mnt/makproxy", "/media/usb"] {
        assert!(s.contains(dir), "the batch script no longer uses {dir}");
    }
    s.replace("/srv/", &format!("{r}/srv/"))
        .replace("/mnt/", &format!("{r}/mnt/"))
        .replace("/media/", &format!("{r}/media/"))
}

#[test]
fn the_batch_script_packs_good_input_and_stops_when_everything_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (home, drop) = (
        t.path().join("srv/makproxy"),
        t.path().join("mnt/makproxy/drop"),
    );
    std::fs::create_dir_all(t.path().join("media/usb")).unwrap();
    let home_s = home.to_str().unwrap();
    makproxy_e2e::run(
        "makproxy-secure",
        &["--home", home_s, "init", "--site", "plant-a"],
    )
    .ok();
    copy_dir(&fixtures().join("drop"), &drop);
    let script = batch_script(t.path());

    let (code, out) = bash(t.path(), &script);
    assert_eq!(code, 0, "{out}");
    let pack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("pack.json")).unwrap())
            .unwrap();
    assert_eq!(pack["records"], 13);
    assert!(Path::new(pack["bundle"].as_str().unwrap()).exists());

    // Run again with nothing new: nothing to pack, the script says so and ends well,
    // and there is no bundle to carry (issue 29 §3). A second later, so the
    // time-stamped name differs.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let bundles = || {
        std::fs::read_dir(t.path().join("media/usb"))
            .unwrap()
            .count()
    };
    let (code, out) = bash(t.path(), &script);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to pack"), "{out}");
    assert_eq!(bundles(), 1, "no second bundle");

    // Every drop file refused: collect exits 5 and the script stops before pack.
    std::fs::remove_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::write(drop.join("PC-1.json"), b"{ not json").unwrap();
    std::fs::remove_file(t.path().join("pack.json")).unwrap();
    let (code, out) = bash(t.path(), &script);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("MP-REC-"), "the refusal is named: {out}");
    assert!(!t.path().join("pack.json").exists(), "pack did not run");
}

/// Issue 29 §3: a key too short for the batch makes pack exit 4 with the bundle
/// written; the guide's script says so and carries on, the bundle there to carry.
#[test]
fn the_batch_script_carries_on_and_says_so_when_a_key_is_short() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("srv/makproxy");
    std::fs::create_dir_all(t.path().join("media/usb")).unwrap();
    let home_s = home.to_str().unwrap();
    let secure = |args: &[&str]| {
        let mut a = vec!["--home", home_s];
        a.extend_from_slice(args);
        makproxy_e2e::run("makproxy-secure", &a)
    };
    secure(&["init", "--site", "plant-a"]).ok();
    secure(&[
        "keys",
        "add",
        "--last5",
        "3V66T",
        "--product",
        "Windows",
        "--remaining",
        "3",
    ])
    .ok();
    copy_dir(
        &fixtures().join("drop"),
        &t.path().join("mnt/makproxy/drop"),
    );
    let (code, out) = bash(t.path(), &batch_script(t.path()));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("a key is short of activations for this batch"),
        "{out}"
    );
    let pack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("pack.json")).unwrap())
            .unwrap();
    assert_eq!(pack["key_warnings"][0]["last5"], "3V66T", "{pack}");
    assert!(Path::new(pack["bundle"].as_str().unwrap()).exists());
}

/// Issue 29 §3: the guide's encrypted-key batch script signs with the passphrase read
/// from a file and given to the one command; with the wrong passphrase it stops.
#[test]
fn the_encrypted_key_batch_script_signs_with_the_passphrase_file() {
    let t = tempfile::tempdir().unwrap();
    let (home, drop) = (
        t.path().join("srv/makproxy"),
        t.path().join("mnt/makproxy/drop"),
    );
    std::fs::create_dir_all(t.path().join("media/usb")).unwrap();
    let r = Command::new(bin("makproxy-secure"))
        .args([
            "--home",
            home.to_str().unwrap(),
            "init",
            "--site",
            "plant-a",
            "--encrypt",
        ])
        .env("MAKPROXY_PASSPHRASE", "correct horse battery staple")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    copy_dir(&fixtures().join("drop"), &drop);
    let pass = t.path().join("srv/makproxy-pass");
    std::fs::write(&pass, "correct horse battery staple").unwrap();
    let script = named_batch_script(t.path(), "batch-bash-encrypted");
    assert!(script.contains("MAKPROXY_PASSPHRASE=\"$(cat "), "{script}");
    let (code, out) = bash(t.path(), &script);
    assert_eq!(code, 0, "{out}");
    let pack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("pack.json")).unwrap())
            .unwrap();
    assert_eq!(pack["records"], 13);
    // The wrong passphrase stops the script before anything is carried (a second
    // later: the bundle's name has the time to the second).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&pass, "wrong").unwrap();
    std::fs::remove_file(t.path().join("pack.json")).unwrap();
    copy_dir(
        &fixtures().join("drop"),
        &t.path().join("mnt/makproxy/drop2"),
    );
    let (code, out) = bash(t.path(), &script.replace("/drop;", "/drop2;"));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("MP-KEY-011"),
        "the wrong passphrase is named: {out}"
    );
}
