//! The files the Windows agent scripts read and write, in PowerShell 5.1's layout,
//! through the whole loop: collect → pack → activate → apply → deposit → result → collect.

use makproxy_e2e::{fixtures, Gap};

/// Formats a deposit result as PowerShell 5.1's ConvertTo-Json does (CRLF, wide indents).
fn ps51_result(host: &str, rows: &[(&str, &str, &str, &str, Option<&str>)]) -> String {
    let mut s = format!("{{\r\n    \"schema\":  \"makproxy-deposit-result/1\",\r\n    \"host\":  \"{host}\",\r\n    \"time\":  \"2026-11-22T09:00:00Z\",\r\n    \"results\":  [\r\n");
    for (i, (aid, iid, cid, status, code)) in rows.iter().enumerate() {
        let code = code.map_or("null".to_string(), |c| format!("\"{c}\""));
        let ls = if *status == "activated" { "1" } else { "5" };
        s.push_str(&format!("                    {{\r\n                        \"activation_id\":  \"{aid}\",\r\n                        \"installation_id\":  \"{iid}\",\r\n                        \"confirmation_id\":  \"{cid}\",\r\n                        \"status\":  \"{status}\",\r\n                        \"error_code\":  {code},\r\n                        \"message\":  null,\r\n                        \"license_status\":  {ls}\r\n                    }}{}\r\n", if i + 1 < rows.len() { "," } else { "" }));
    }
    s.push_str("                ]\r\n}");
    s
}

#[test]
fn agent_files_close_the_loop() {
    let g = Gap::default();
    let c = g
        .secure(&[
            "--json",
            "collect",
            fixtures().join("agent").to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(c["summary"]["queued"], 2);
    assert_eq!(c["summary"]["skipped"], 1);
    let names: Vec<String> = g.status()["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("Lab's image")),
        "\\u0027 decoded: {names:?}"
    );

    let (cil, ret) = (g.p("cil.zip"), g.p("ret.zip"));
    g.secure(&["pack", "--out", &cil]).ok();
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    let dep = g.p("deposit");
    g.secure(&["apply", &ret, "--deposit-dir", &dep]).ok();

    // What Deposit-ConfirmationId.ps1 reads.
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.path("deposit/PC-0042.json")).unwrap())
            .unwrap();
    assert_eq!(d["schema"], "makproxy-deposit/1");
    assert_eq!(d["host"], "PC-0042");
    let p = d["products"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    for x in p {
        for f in [
            "activation_id",
            "installation_id",
            "confirmation_id",
            "wmi_class",
        ] {
            assert!(x[f].is_string(), "{f} missing");
        }
        assert!(
            x["confirmation_id"]
                .as_str()
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_digit()),
            "digits only, as the script's pattern check expects"
        );
    }
    // What it writes back: one activated, one refused by Windows.
    let row = |i: usize, status, code| {
        (
            p[i]["activation_id"].as_str().unwrap(),
            p[i]["installation_id"].as_str().unwrap(),
            p[i]["confirmation_id"].as_str().unwrap(),
            status,
            code,
        )
    };
    let text = ps51_result(
        "PC-0042",
        &[
            row(0, "activated", None),
            row(1, "failed", Some("0xC004F04D")),
        ],
    );
    let results = g.path("results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("PC-0042.result.json"), text).unwrap();
    // A failed deposit is a failure of the collect: exit 4, and listed with its code.
    let c = g
        .secure(&["--json", "collect", results.to_str().unwrap()])
        .code(4)
        .json();
    assert_eq!(
        (
            c["summary"]["deposits_activated"].as_u64(),
            c["summary"]["deposits_failed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(c["problems"][0]["code"], "MP-REC-018", "{c}");
    assert!(
        c["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("0xC004F04D"),
        "{c}"
    );
    assert_eq!(g.count("activated"), 1);
    let failed = g
        .secure(&["status", "--state", "deposit_failed"])
        .ok()
        .stdout;
    assert!(
        failed.contains("0xC004F04D: installation ID or confirmation ID is invalid"),
        "{failed}"
    );
}

/// Every machine the agents ran on ends in `status` or in collect's problems, with a
/// code: a machine whose licensing could not be read (MP-REC-013), a machine with no key
/// (skipped, no-key, until it reports products), a deposit the script refused
/// (MP-REC-014). The fixtures are in the scripts' own layout.
#[test]
fn machines_the_agents_could_not_handle_are_reported_not_lost() {
    let g = Gap::default();
    let dir = fixtures().join("agent-outcomes");
    let c = g
        .secure(&["--json", "collect", dir.to_str().unwrap()])
        .code(4)
        .json();
    assert_eq!(c["summary"]["skipped"], 1, "{c:#}");
    let problems = c["problems"].as_array().unwrap();
    let coded = |code: &str, file: &str| {
        problems.iter().any(|p| {
            p["code"] == code
                && p["record"].is_null()
                && p["file"].as_str().unwrap().ends_with(file)
        })
    };
    assert!(coded("MP-REC-013", "WMI-BROKEN.json"), "{problems:#?}");
    assert!(coded("MP-REC-014", "KIOSK-09.result.json"), "{problems:#?}");
    assert_eq!(problems.len(), 2, "{problems:#?}");
    // As people see it (a second ledger: a file collected before is not read again).
    let people = Gap::default();
    let text = people
        .secure(&["collect", dir.to_str().unwrap()])
        .code(4)
        .stderr;
    assert!(
        text.contains("Invalid namespace") && text.contains("0x8004100E"),
        "the agent's own error is shown: {text}"
    );
    assert!(
        text.contains("refused its deposit file (simulated)"),
        "{text}"
    );

    let no_key = |g: &Gap| {
        g.status()["products"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["host"] == "NO-KEY")
            .map(|p| {
                (
                    p["state"].as_str().unwrap().to_string(),
                    p["reason_code"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        no_key(&g),
        [("skipped".to_string(), serde_json::json!("no-key"))]
    );
    let shown = g.secure(&["status", "--host", "NO-KEY"]).ok().stdout;
    assert!(
        shown.contains("no-key: no product key installed"),
        "{shown}"
    );

    // A key is installed: the next agent file has a product, and the marker goes.
    let later = g.path("later");
    std::fs::create_dir_all(&later).unwrap();
    let agent = std::fs::read_to_string(fixtures().join("agent/PC-0042.json")).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(agent.trim_start_matches('\u{feff}')).unwrap();
    let mut doc = doc;
    doc["host"] = "NO-KEY".into();
    let first = doc["products"][0].clone();
    doc["products"] = serde_json::json!([first]);
    std::fs::write(later.join("NO-KEY.json"), doc.to_string()).unwrap();
    g.secure(&["collect", later.to_str().unwrap()]).ok();
    let after = no_key(&g);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].1, serde_json::json!("no-key"), "{after:?}");
}
