//! Attacks driven through the real binaries: the malicious-bundle kit against each
//! binary's reader, and a scan proving private keys never leave their home.

use makproxy_core::bundle::Kind;
use makproxy_core::keys::Role;
use makproxy_e2e::{fixtures, run, run_within, Gap};
use makproxy_testkit::{cases, Keys};

#[test]
fn every_kit_case_is_rejected_by_the_binaries_with_its_code() {
    let t = tempfile::tempdir().unwrap();
    let keys = Keys::default();
    let p = |n: &str| t.path().join(n).to_string_lossy().into_owned();
    // The online side pinned the secure side's previous key and then accepted its
    // rotation statement, as an operator would: the kit's retired-key cases need both.
    let now = time::OffsetDateTime::now_utc();
    std::fs::write(
        p("kit-secure-old.pub"),
        keys.old_public().to_file_bytes(&keys.secure_old),
    )
    .unwrap();
    std::fs::write(p("kit-rotation.json"), keys.rotation_statement(now)).unwrap();
    std::fs::write(
        p("kit-colleague.pub"),
        keys.colleague_public().to_file_bytes(&keys.colleague),
    )
    .unwrap();
    std::fs::write(
        p("kit-other-site.pub"),
        keys.other_site_public().to_file_bytes(&keys.other_site),
    )
    .unwrap();
    std::fs::write(
        p("kit-online.pub"),
        keys.public(Role::Online).to_file_bytes(&keys.online),
    )
    .unwrap();
    let (sh, oh) = (p("secure-home"), p("online-home"));
    run(
        "makproxy-secure",
        &["--home", &sh, "init", "--site", "kit-site"],
    )
    .ok();
    run(
        "makproxy-secure",
        &[
            "--home",
            &sh,
            "trust",
            "add",
            &p("kit-online.pub"),
            "--name",
            "kit-online",
        ],
    )
    .ok();
    run(
        "makproxy-online",
        &["--home", &oh, "init", "--site", "kit-gateway"],
    )
    .ok();
    // The previous key, its rotation, a colleague, and a second site on the same
    // gateway (its key trusted, its cosignature never counting for kit-site).
    let online = |args: &[&str]| {
        let mut a = vec!["--home", oh.as_str(), "trust"];
        a.extend_from_slice(args);
        run("makproxy-online", &a).ok();
    };
    online(&["add", &p("kit-secure-old.pub"), "--name", "kit-secure"]);
    online(&["accept", &p("kit-rotation.json")]);
    online(&["add", &p("kit-colleague.pub"), "--name", "kit-colleague"]);
    online(&["add", &p("kit-other-site.pub"), "--name", "kit-other-site"]);

    let mut checked = 0;
    for case in cases(now) {
        let file = p(&case.file);
        std::fs::write(&file, &case.bytes).unwrap();
        let ret = p(&format!("{}.return.zip", case.file));
        let runs = match case.reader {
            // activate must come back (never hang) with the same verdict, before any
            // request: the whole bundle is checked before anything is spent.
            Kind::Cil => vec![
                run(
                    "makproxy-online",
                    &["--home", &oh, "--json", "inspect", &file],
                ),
                run_within(
                    60,
                    "makproxy-online",
                    &[
                        "--home",
                        &oh,
                        "--json",
                        "activate",
                        &file,
                        "--out",
                        &ret,
                        "--backend",
                        "simulator",
                    ],
                ),
            ],
            Kind::Return => vec![
                run(
                    "makproxy-secure",
                    &["--home", &sh, "--json", "verify", &file],
                ),
                run(
                    "makproxy-secure",
                    &[
                        "--home",
                        &sh,
                        "--json",
                        "apply",
                        &file,
                        "--deposit-dir",
                        &p("dep"),
                        "--dry-run",
                    ],
                ),
            ],
        };
        for (i, r) in runs.into_iter().enumerate() {
            assert!(
                !r.stderr.contains("panicked"),
                "{}: {}",
                case.file,
                r.stderr
            );
            let expect = match (case.reader, i, case.expect) {
                // A valid return passes verify; apply then refuses it: this site never issued the kit's request.
                (Kind::Return, 1, None) => Some(makproxy_core::Code::AplNotIssued),
                // verify picks the kind from the entries, so a request bundle is checked as one,
                // against this site's own key, and refused as signed by someone else.
                (Kind::Return, 0, Some(makproxy_core::Code::BndWrongKind))
                    if case.file.contains("request-passed-off") =>
                {
                    Some(makproxy_core::Code::BndUntrustedKey)
                }
                // apply checks the return answers a bundle this site issued before it reads
                // records, so a record-level defect in the kit's foreign return stops there.
                (
                    Kind::Return,
                    1,
                    Some(makproxy_core::Code::BndRecord | makproxy_core::Code::BndRecordOrder),
                ) => Some(makproxy_core::Code::AplNotIssued),
                _ => case.expect,
            };
            match expect {
                None => assert_eq!(r.code, 0, "{}: {}", case.file, r.stderr),
                Some(code) => {
                    if case.reader == Kind::Cil {
                        assert!(
                            !std::path::Path::new(&ret).exists(),
                            "{}: a refused bundle produced a return",
                            case.file
                        );
                    }
                    assert_eq!(r.code, 3, "{}: {}", case.file, r.stderr);
                    assert_eq!(r.json()["error"]["code"], code.as_str(), "{}", case.file);
                    assert!(
                        r.stderr.contains(&format!("error[{code}]")),
                        "{}",
                        case.file
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 45, "{checked}");
}

#[test]
fn private_keys_never_appear_in_any_output() {
    let g = Gap::default();
    g.collect_fixture();
    let mut outputs = String::new();
    for r in [
        g.secure(&["--json", "pack", "--out", &g.p("cil.zip")]),
        g.online(&["--json", "inspect", &g.p("cil.zip")]),
        g.online(&[
            "--json",
            "activate",
            &g.p("cil.zip"),
            "--out",
            &g.p("ret.zip"),
            "--backend",
            "simulator",
        ]),
        g.secure(&[
            "--json",
            "apply",
            &g.p("ret.zip"),
            "--deposit-dir",
            &g.p("dep"),
        ]),
        g.secure(&["report", "--out", &g.p("report.html")]),
        g.secure(&["--json", "key", "show"]),
        g.online(&["--json", "trust", "list"]),
        g.secure(&["--json", "status"]),
    ] {
        outputs.push_str(&r.ok().stdout);
    }
    let mut secrets = Vec::new();
    for home in ["secure-home", "online-home"] {
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(g.path(home).join("secret.key")).unwrap())
                .unwrap();
        let b64 = s["key"].as_str().unwrap().to_string();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        secrets.push((b64, raw, hex));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(g.path(home).join("secret.key"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
        }
    }
    // Every produced file (bundles scanned entry by entry, inflated) and every stdout.
    let mut blobs: Vec<(String, Vec<u8>)> = vec![("stdout".into(), outputs.into_bytes())];
    for entry in walk(g.dir.path()) {
        let name = entry.to_string_lossy().into_owned();
        if name.contains("-home") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        if name.ends_with(".zip") {
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
            for i in 0..z.len() {
                let mut f = z.by_index(i).unwrap();
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut v).unwrap();
                blobs.push((format!("{name}:{}", f.name()), v));
            }
        }
        blobs.push((name, bytes));
    }
    assert!(blobs.len() > 20);
    for (name, blob) in &blobs {
        for (b64, raw, hex) in &secrets {
            let text = String::from_utf8_lossy(blob);
            assert!(
                !text.contains(b64.as_str()) && !text.contains(hex.as_str()),
                "secret key text in {name}"
            );
            assert!(
                !blob.windows(raw.len()).any(|w| w == raw.as_slice()),
                "secret key bytes in {name}"
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
#[cfg(unix)]
fn a_world_readable_private_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let g = Gap::default();
    g.secure(&["collect", fixtures().join("drop").to_str().unwrap()])
        .ok();
    std::fs::set_permissions(
        g.path("secure-home/secret.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let r = g
        .secure(&["--json", "pack", "--out", &g.p("cil.zip")])
        .code(3);
    assert_eq!(r.json()["error"]["code"], "MP-KEY-003");
    assert!(!g.path("cil.zip").exists());
}

#[cfg(unix)]
#[test]
fn trust_add_of_a_device_or_fifo_returns_at_once_with_a_code() {
    let g = Gap::default();
    let fifo = g.path("peer.pub");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    for file in ["/dev/zero", fifo.to_str().unwrap()] {
        let r = makproxy_e2e::run_within(
            20,
            "makproxy-secure",
            &[
                "--home",
                &g.secure_home(),
                "--json",
                "trust",
                "add",
                file,
                "--name",
                "odd",
            ],
        );
        assert_eq!(r.code, 1, "{file}: {}", r.stderr);
        assert!(r.json()["error"]["code"].is_string(), "{file}: coded");
    }
    g.secure(&["trust", "list"]).ok();
}

/// Every unsafe character (C0/C1 controls but newline and tab, bidi formatting) that
/// reached an output raw.
fn raw_unsafe(s: &str) -> Vec<char> {
    s.chars()
        .filter(|c| makproxy_core::sanitize::is_unsafe(*c) && !matches!(c, '\n' | '\t'))
        .collect()
}

#[test]
fn no_control_or_bidi_character_from_any_input_reaches_the_terminal() {
    use makproxy_testkit::mock::{Behavior, MockServer};
    let g = Gap::default();
    let nasty = "Office\u{1b}[2J\u{7}\r\u{9b}31m\u{202e}exe.txt\u{2066}";
    let drop = g.path("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let iid = |seed: u8| makproxy_core::ids::with_check_digits(&[seed; 54], 7);
    let agent = serde_json::json!({"schema": "makproxy-agent/1", "host": "NASTY-01", "products": [
        {"activation_id": "2de67392-b7a7-462a-b1ca-108dd189f588", "name": nasty, "description": format!("VOLUME_MAK {nasty}"),
         "partial_product_key": "3V66T", "extended_product_id": "03612-03305-317-008912-02-1033-9200.0000-0662023",
         "installation_id": iid(3), "license_status": 5},
        {"activation_id": "85dd8b5f-eaa4-4af3-a628-cce9e77c9a03", "name": nasty, "description": "VOLUME_MAK",
         "partial_product_key": "3V66T", "extended_product_id": "03612-03305-317-008912-02-1033-9200.0000-0662023",
         "installation_id": iid(4), "license_status": 5},
        {"activation_id": format!("not-a-guid{nasty}"), "installation_id": iid(5)}]});
    std::fs::write(drop.join("NASTY-01.json"), agent.to_string()).unwrap();
    std::fs::write(drop.join(format!("x{}.json", "\u{202e}")), b"{").unwrap();
    let cil = g.p("cil.zip");
    let mock = MockServer::start();
    // One service answer carries a bidi override in its error code.
    mock.set(&iid(4), Behavior::Error("0x7F\u{202e}".into()));
    let mut outputs = vec![
        g.secure(&["collect", drop.to_str().unwrap()]),
        g.secure(&["--json", "collect", drop.to_str().unwrap()]),
        g.secure(&["status"]),
        g.secure(&["status", "--csv"]),
        g.secure(&["--json", "status"]),
        g.secure(&["pack", "--out", &cil]),
        g.secure(&["verify", &cil]),
        g.online(&["inspect", &cil]),
        g.online(&["--json", "inspect", &cil]),
        g.online(&["worksheet", &cil, "--out", &g.p("sheet.csv")]),
    ];
    outputs.push(g.online(&[
        "activate",
        &cil,
        "--out",
        &g.p("ret.zip"),
        "--backend",
        "microsoft",
        "--endpoint",
        &mock.url,
    ]));
    outputs.push(g.secure(&["apply", &g.p("ret.zip"), "--deposit-dir", &g.p("dep")]));
    outputs.push(g.secure(&["status", "--state", "failed"]));
    outputs.push(g.secure(&["--json", "status", "--state", "failed"]));
    assert!(
        outputs.iter().any(|r| r.stdout.contains("Office")),
        "the nasty product name was printed somewhere (escaped)"
    );
    for (i, r) in outputs.iter().enumerate() {
        assert_eq!(
            raw_unsafe(&r.stdout),
            Vec::<char>::new(),
            "output {i} stdout:\n{}",
            r.stdout
        );
        assert_eq!(
            raw_unsafe(&r.stderr),
            Vec::<char>::new(),
            "output {i} stderr:\n{}",
            r.stderr
        );
    }
    // JSON stays JSON: the escaped forms decode back to the original text.
    let s = g.secure(&["--json", "status"]).ok().json();
    assert!(s["products"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["product"] == nasty));
}

#[test]
fn a_trusted_peers_manifest_text_is_escaped_too() {
    use makproxy_core::bundle::{BundleWriter, CilRecord};
    let t = tempfile::tempdir().unwrap();
    let keys = Keys::default();
    let p = |n: &str| t.path().join(n).to_string_lossy().into_owned();
    std::fs::write(
        p("kit-secure.pub"),
        keys.public(Role::Secure).to_file_bytes(&keys.secure),
    )
    .unwrap();
    let oh = p("online-home");
    run("makproxy-online", &["--home", &oh, "init", "--site", "gw"]).ok();
    run(
        "makproxy-online",
        &[
            "--home",
            &oh,
            "trust",
            "add",
            &p("kit-secure.pub"),
            "--name",
            "kit",
        ],
    )
    .ok();
    // Signed by the trusted key: tool and field names carry ESC, BEL and RLO.
    let cil = t.path().join("odd.zip");
    let mut w = BundleWriter::<CilRecord>::new(&cil).unwrap();
    w.push(makproxy_testkit::cil_record(1)).unwrap();
    let mut h = makproxy_testkit::cil_header(time::OffsetDateTime::now_utc());
    h.tool = "tool\u{1b}]0;owned\u{7}\u{202e}".into();
    h.fields = vec!["handle\u{1b}[2J".into(), "iid\u{202e}".into()];
    w.finish(h, &keys.secure, &cil).unwrap();
    let cil = cil.to_string_lossy().into_owned();
    for r in [
        run("makproxy-online", &["--home", &oh, "inspect", &cil]).ok(),
        run(
            "makproxy-online",
            &["--home", &oh, "--json", "inspect", &cil],
        )
        .ok(),
        run(
            "makproxy-online",
            &[
                "--home",
                &oh,
                "activate",
                &cil,
                "--out",
                &p("r.zip"),
                "--backend",
                "simulator",
            ],
        ),
    ] {
        assert_eq!(raw_unsafe(&r.stdout), Vec::<char>::new(), "{}", r.stdout);
        assert_eq!(raw_unsafe(&r.stderr), Vec::<char>::new(), "{}", r.stderr);
    }
    let shown = run("makproxy-online", &["--home", &oh, "inspect", &cil]).stdout;
    assert!(
        shown.contains("tool\\u{1b}]0;owned\\u{7}\\u{202e}"),
        "{shown}"
    );
}
