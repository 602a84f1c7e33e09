//! Helpers for the end-to-end suite: locate the built binaries, set up a secure and an
//! online home that trust each other (the two sides of the gap), run commands and read
//! their output.
//!
//! The binaries are built by `cargo test` (each binary crate has integration tests);
//! run the suite with `cargo test --workspace`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("fixtures")
}

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} not built; run the suite with `cargo test --workspace`",
        p.display()
    );
    p
}

/// Path of a workspace example program (cargo test builds examples).
pub fn example(name: &str) -> String {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples");
    let p = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} not built; run the suite with `cargo test --workspace`",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// Operator-facing text with its variable parts replaced, for snapshots: the temporary
/// folder `tmp`, the fixtures folder, bundle IDs, key fingerprints and times.
pub fn normalise(text: &str, tmp: &Path) -> String {
    let tmp = tmp.to_string_lossy().into_owned();
    let fixtures = fixtures().to_string_lossy().into_owned();
    let mut out = String::new();
    for line in text
        .replace(&tmp, "<tmp>")
        .replace(&fixtures, "<fixtures>")
        .lines()
    {
        let mut words: Vec<String> = Vec::new();
        for w in line.split(' ') {
            let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let hex = |n: usize| core.len() == n && core.bytes().all(|b| b.is_ascii_hexdigit());
            let w = if hex(32) {
                w.replace(core, "<id>")
            } else if core.len() == 19
                && core.split('-').count() == 4
                && core
                    .split('-')
                    .all(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                w.replace(core, "<fingerprint>")
            } else if core.len() == 20 && core.contains('T') && core.starts_with("20") {
                w.replace(core, "<time>")
            } else {
                w.to_string()
            };
            words.push(w);
        }
        out.push_str(words.join(" ").trim_end());
        out.push('\n');
    }
    out
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub fn run(program: &str, args: &[&str]) -> Run {
    run_env(program, args, &[])
}

/// As [`run`], with environment variables set for this one command (passphrases).
pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(bin(program))
        .args(args)
        .env_remove("MAKPROXY_HOME")
        .env_remove("MAKPROXY_PASSPHRASE")
        .env_remove("MAKPROXY_NEW_PASSPHRASE")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// As [`run`], but the command must end within `secs` seconds: a hang is killed and
/// fails the test instead of wedging the suite.
#[track_caller]
pub fn run_within(secs: u64, program: &str, args: &[&str]) -> Run {
    use std::io::Read;
    let mut child = Command::new(bin(program))
        .args(args)
        .env_remove("MAKPROXY_HOME")
        .env_remove("MAKPROXY_PASSPHRASE")
        .env_remove("MAKPROXY_NEW_PASSPHRASE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run binary");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} hung for more than {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.join().expect("reader")).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().expect("reader")).into_owned(),
    }
}

/// Both sides of the gap in one temporary folder, keys exchanged and trusted.
pub struct Gap {
    pub dir: tempfile::TempDir,
}

impl Default for Gap {
    fn default() -> Self {
        Self::new("plant-a")
    }
}

impl Gap {
    pub fn new(site: &str) -> Gap {
        let g = Gap {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        g.secure(&["init", "--site", site]).ok();
        g.online(&["init", "--site", "gateway"]).ok();
        let (sp, op) = (g.path("secure.pub"), g.path("online.pub"));
        g.secure(&["key", "export", "--out", sp.to_str().unwrap()])
            .ok();
        g.online(&["key", "export", "--out", op.to_str().unwrap()])
            .ok();
        g.secure(&["trust", "add", op.to_str().unwrap(), "--name", "gateway"])
            .ok();
        g.online(&["trust", "add", sp.to_str().unwrap(), "--name", site])
            .ok();
        g
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn p(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }
    pub fn secure_home(&self) -> String {
        self.p("secure-home")
    }
    pub fn online_home(&self) -> String {
        self.p("online-home")
    }
    /// The program and home of one side.
    fn side(&self, secure: bool) -> (&'static str, String) {
        if secure {
            ("makproxy-secure", self.secure_home())
        } else {
            ("makproxy-online", self.online_home())
        }
    }
    fn with_home(&self, secure: bool, args: &[&str]) -> Run {
        let (program, home) = self.side(secure);
        let mut a = vec!["--home", home.as_str()];
        a.extend_from_slice(args);
        run(program, &a)
    }
    /// Starts a command without waiting (for kill tests); its output is discarded.
    fn spawn(&self, secure: bool, args: &[&str]) -> Child {
        let (program, home) = self.side(secure);
        Command::new(bin(program))
            .arg("--home")
            .arg(home)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    }
    pub fn secure(&self, args: &[&str]) -> Run {
        self.with_home(true, args)
    }
    /// A secure-side command with environment variables set (passphrases).
    pub fn secure_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let home = self.secure_home();
        let mut a = vec!["--home", home.as_str()];
        a.extend_from_slice(args);
        run_env("makproxy-secure", &a, env)
    }
    pub fn online(&self, args: &[&str]) -> Run {
        self.with_home(false, args)
    }
    /// An online-side command with environment variables set (passphrases).
    pub fn online_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let home = self.online_home();
        let mut a = vec!["--home", home.as_str()];
        a.extend_from_slice(args);
        run_env("makproxy-online", &a, env)
    }
    /// `activate CIL --out RET --backend microsoft --endpoint URL` and any further flags,
    /// `--json` first: the gateway's answer from a (mock) Microsoft service.
    pub fn activate_microsoft(&self, cil: &str, ret: &str, url: &str, extra: &[&str]) -> Run {
        let mut a = vec![
            "--json",
            "activate",
            cil,
            "--out",
            ret,
            "--backend",
            "microsoft",
            "--endpoint",
            url,
        ];
        a.extend_from_slice(extra);
        self.online(&a)
    }
    pub fn spawn_secure(&self, args: &[&str]) -> Child {
        self.spawn(true, args)
    }
    pub fn spawn_online(&self, args: &[&str]) -> Child {
        self.spawn(false, args)
    }
    /// Writes N synthetic agent files into `rel` and returns its path.
    pub fn generate(&self, rel: &str, count: u64, prefix: &str) -> String {
        let out = self.p(rel);
        let st = Command::new(bin("makproxy-gen"))
            .args([
                "--out",
                &out,
                "--count",
                &count.to_string(),
                "--prefix",
                prefix,
                "--seed",
                prefix,
            ])
            .status()
            .expect("gen");
        assert!(st.success());
        out
    }
    /// Collects the shipped drop folder (15 products, 13 of them queued).
    pub fn collect_fixture(&self) {
        self.secure(&["collect", fixtures().join("drop").to_str().unwrap()])
            .ok();
    }
    /// Collects the shipped drop folder and packs it into `cil.zip`; returns its path.
    pub fn packed_fixture(&self) -> String {
        self.collect_fixture();
        let cil = self.p("cil.zip");
        self.secure(&["pack", "--out", &cil]).ok();
        cil
    }
    /// Status as JSON.
    pub fn status(&self) -> Value {
        self.secure(&["--json", "status"]).ok().json()
    }
    pub fn count(&self, state: &str) -> i64 {
        self.status()["counts"][state].as_i64().unwrap_or(0)
    }
}

/// Writes the deposit result file the agent would write for `host` after depositing
/// every CID of its deposit file in `dep/` (all activated, or all refused with
/// 0xC004F04D).
pub fn result_file(g: &Gap, dir: &std::path::Path, host: &str, name: &str, ok: bool) {
    result_file_at(g, dir, host, name, ok, "2026-11-20T10:00:00Z");
}

/// As `result_file`, with the deposit time the script writes into every result file.
pub fn result_file_at(
    g: &Gap,
    dir: &std::path::Path,
    host: &str,
    name: &str,
    ok: bool,
    time: &str,
) {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(g.path(&format!("dep/{host}.json"))).unwrap(),
    )
    .unwrap();
    let results: Vec<serde_json::Value> = d["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            if ok {
                serde_json::json!({"activation_id": p["activation_id"], "installation_id": p["installation_id"], "confirmation_id": p["confirmation_id"], "status": "activated", "license_status": 1})
            } else {
                serde_json::json!({"activation_id": p["activation_id"], "installation_id": p["installation_id"], "confirmation_id": p["confirmation_id"], "status": "failed", "error_code": "0xC004F04D"})
            }
        })
        .collect();
    let doc = serde_json::json!({"schema": "makproxy-deposit-result/1", "host": host, "time": time, "results": results});
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), doc.to_string()).unwrap();
}
