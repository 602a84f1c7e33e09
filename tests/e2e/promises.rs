//! Promises of the docs that had no end-to-end test (issue 22's audit): codes an
//! operator meets (MP-REC-005, MP-KEY-004, MP-APL-007, MP-BKD-006), the skip reasons,
//! `trust remove`, `pack --product` and `--expires-days`, and `activate --timeout` and
//! `--proxy` against the loopback service. docs/reliability.md maps each to its test.

use makproxy_core::ids::{digits_from_seed, with_check_digits};
use makproxy_e2e::Gap;
use makproxy_testkit::mock::MockServer;
use serde_json::{json, Value};

const WIN_AID: &str = "2de67392-b7a7-462a-b1ca-108dd189f588";
const EPID: &str = "03612-03305-317-008912-02-1033-9200.0000-0662023";

fn iid(seed: &str) -> String {
    with_check_digits(&digits_from_seed(seed.as_bytes(), 54), 7)
}

/// A product as the agent reports it; `f` changes it.
fn product(aid: &str, seed: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut p = json!({
        "wmi_class": "SoftwareLicensingProduct",
        "activation_id": aid,
        "application_id": "55c92734-d682-4d71-983e-d6ec3f16059f",
        "name": "Windows(R), Professional edition",
        "description": "Windows(R) Operating System, VOLUME_MAK channel",
        "partial_product_key": "3V66T",
        "extended_product_id": EPID,
        "installation_id": iid(seed),
        "license_status": 5,
    });
    f(&mut p);
    p
}

fn agent_file(dir: &std::path::Path, host: &str, products: Vec<Value>) {
    std::fs::create_dir_all(dir).unwrap();
    let doc = json!({"schema": "makproxy-agent/1", "host": host, "collected": "2026-11-20T08:00:00Z", "agent": "test", "products": products});
    std::fs::write(dir.join(format!("{host}.json")), doc.to_string()).unwrap();
}

#[test]
fn collect_names_a_missing_field_and_records_each_skip_reason() {
    let g = Gap::default();
    let drop = g.path("drop");
    let aid = |n: u8| format!("2de67392-b7a7-462a-b1ca-108dd189f5{n:02}");
    agent_file(
        &drop,
        "PC-1",
        vec![
            product(&aid(1), "a", |p| {
                p.as_object_mut().unwrap().remove("activation_id");
            }),
            product(&aid(2), "b", |p| p["license_status"] = json!(1)),
            product(&aid(3), "c", |p| {
                p["description"] = json!("Windows(R) Operating System, RETAIL channel")
            }),
            product(&aid(4), "d", |p| {
                p.as_object_mut().unwrap().remove("installation_id");
            }),
            product(&aid(5), "e", |_| {}),
        ],
    );
    let r = g
        .secure(&["--json", "collect", drop.to_str().unwrap()])
        .code(4)
        .json();
    let problems = r["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["code"], "MP-REC-005");
    assert_eq!(problems[0]["record"], 1);
    assert!(problems[0]["file"].as_str().unwrap().ends_with("PC-1.json"));
    let s = g
        .secure(&["--json", "status", "--state", "skipped"])
        .ok()
        .json();
    let mut reasons: Vec<&str> = s["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reason_code"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["channel-off", "licensed", "no-iid"]);
    assert_eq!(
        g.count("queued"),
        1,
        "the good product in the same file went in"
    );
}

/// The site's channel policy: MAK and KMS host keys by default, retail when enabled
/// (kept in the home, and applied to products already collected), OEM and KMS clients
/// never; the channel is shown by status and crosses in the bundle.
#[test]
fn channels_are_a_site_policy_kept_in_the_home() {
    let g = Gap::default();
    let drop = g.path("drop");
    let aid = |n: u8| format!("2de67392-b7a7-462a-b1ca-108dd189f5{n:02}");
    let chan = |n: u8, pkc: &'static str, desc: &'static str| {
        product(&aid(n), &format!("p{n}"), move |p| {
            p["product_key_channel"] = json!(pkc);
            p["description"] = json!(desc);
        })
    };
    agent_file(
        &drop,
        "PC-1",
        vec![
            chan(
                1,
                "Volume:MAK",
                "Windows(R) Operating System, VOLUME_MAK channel",
            ),
            chan(
                2,
                "Volume:CSVLK",
                "Windows(R) Operating System, VOLUME_KMS_WS19 channel",
            ),
            chan(3, "Retail", "Windows(R) Operating System, RETAIL channel"),
            chan(4, "OEM:DM", "Windows(R) Operating System, OEM_DM channel"),
            chan(
                5,
                "Volume:GVLK",
                "Windows(R) Operating System, VOLUME_KMSCLIENT channel",
            ),
        ],
    );
    let state = |g: &Gap| -> Vec<(String, String, String)> {
        let s = g.secure(&["--json", "status"]).ok().json();
        s["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["channel"].as_str().unwrap().to_string(),
                    p["state"].as_str().unwrap().to_string(),
                    p["reason_code"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let r = g
        .secure(&["--json", "collect", drop.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(r["channels"], "mak,csvlk");
    let t = |c: &str, s: &str, r: &str| (c.to_string(), s.to_string(), r.to_string());
    assert_eq!(
        state(&g),
        [
            t("mak", "queued", ""),
            t("csvlk", "queued", ""),
            t("retail", "skipped", "channel-off"),
            t("oem", "skipped", "oem"),
            t("kms-client", "skipped", "kms-client"),
        ]
    );
    // Enabling retail moves the product already collected (its file is unchanged and not
    // read again); OEM cannot be enabled at all.
    let refused = g
        .secure(&["collect", "--channels", "mak,oem", drop.to_str().unwrap()])
        .code(2);
    assert!(
        refused
            .stderr
            .contains("oem products cannot be proxy-activated"),
        "{}",
        refused.stderr
    );
    let r = g
        .secure(&[
            "--json",
            "collect",
            "--channels",
            "mak,csvlk,retail",
            drop.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(r["channels_changed"]["moved"], 1, "{r}");
    assert_eq!(r["summary"]["files_unchanged"], 1);
    assert_eq!(state(&g)[2], t("retail", "queued", ""));
    // Kept in the home: a later collect without --channels keeps retail on.
    let r = g
        .secure(&["--json", "collect", drop.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(r["channels"], "mak,csvlk,retail");
    assert!(r.get("channels_changed").is_none());
    // The bundle carries each record's channel.
    let cil = g.path("cil.zip");
    g.secure(&["pack", "--out", cil.to_str().unwrap()]).ok();
    let ins = g
        .online(&["--json", "inspect", cil.to_str().unwrap(), "--records"])
        .ok()
        .json();
    let mut chans: Vec<String> = ins["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["channel"].as_str().unwrap().to_string())
        .collect();
    chans.sort();
    assert_eq!(chans, ["csvlk", "mak", "retail"]);
    // Turning KMS host keys off skips queued ones, never ones already in a bundle.
    let r = g
        .secure(&[
            "--json",
            "collect",
            "--channels",
            "mak",
            drop.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(
        r["channels_changed"]["moved"], 0,
        "packed products stay in flight"
    );
}

#[test]
fn a_damaged_key_file_a_removed_trust_and_pack_options_behave_as_documented() {
    let g = Gap::default();
    // trust add of a damaged public key file: MP-KEY-004.
    let bad = g.path("bad.pub");
    std::fs::write(&bad, b"{\"not\": \"a key\"}").unwrap();
    let r = g
        .secure(&[
            "--json",
            "trust",
            "add",
            bad.to_str().unwrap(),
            "--name",
            "x",
        ])
        .json();
    assert_eq!(r["error"]["code"], "MP-KEY-004", "{r}");

    g.collect_fixture();
    // --product takes a name part or an activation ID (braces and case do not matter).
    let only_office = g
        .secure(&[
            "--json",
            "pack",
            "--out",
            &g.p("x.zip"),
            "--dry-run",
            "--product",
            "office 16",
        ])
        .ok()
        .json();
    assert_eq!(only_office["would_pack"], 4);
    let braced = g
        .secure(&[
            "--json",
            "pack",
            "--out",
            &g.p("x.zip"),
            "--dry-run",
            "--product",
            &format!("{{{}}}", WIN_AID.to_uppercase()),
        ])
        .ok()
        .json();
    assert_eq!(braced["would_pack"], 8);
    // --expires-days: inside the signed manifest; out of range is a usage error.
    g.secure(&["pack", "--out", &g.p("y.zip"), "--expires-days", "0"])
        .code(2);
    let cil = g.p("cil.zip");
    g.secure(&["pack", "--out", &cil, "--expires-days", "3"])
        .ok();
    let v = g.online(&["--json", "inspect", &cil]).ok().json();
    let day = |t: &Value| {
        time::OffsetDateTime::parse(
            t.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        day(&v["expires"]) - day(&v["created"]),
        time::Duration::days(3)
    );

    // trust remove: the online key is no longer pinned; its next return is refused.
    let ret = g.p("ret.zip");
    g.online(&["activate", &cil, "--out", &ret, "--backend", "simulator"])
        .ok();
    let r = g
        .secure(&["--json", "trust", "remove", "gateway"])
        .ok()
        .json();
    assert_eq!(r["removed"], "gateway");
    let r = g.secure(&["--json", "verify", &ret]).code(3).json();
    assert_eq!(r["error"]["code"], "MP-BND-022");
}

#[test]
fn an_answer_for_a_product_already_answered_is_kept_and_noted_mp_apl_007() {
    let g = Gap::default();
    g.collect_fixture();
    let (cil1, cil2, ret1, ret2) = (g.p("c1.zip"), g.p("c2.zip"), g.p("r1.zip"), g.p("r2.zip"));
    g.secure(&["pack", "--out", &cil1]).ok();
    // The first bundle is thought lost: the same records go out again.
    g.secure(&["pack", "--out", &cil2, "--repack"]).ok();
    for (c, r) in [(&cil1, &ret1), (&cil2, &ret2)] {
        g.online(&[
            "activate",
            c,
            "--out",
            r,
            "--backend",
            "simulator",
            "--sim-fail-suffix",
            "1",
        ])
        .code(4);
    }
    g.secure(&["apply", &ret2, "--deposit-dir", &g.p("dep")])
        .code(4);
    // The first bundle's return turns up after all: already answered products are noted.
    let a = g
        .secure(&["--json", "apply", &ret1, "--deposit-dir", &g.p("dep")])
        .code(4)
        .json();
    let notes = a["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n["code"] == "MP-APL-007"), "{notes:?}");
    // The simulator's deliberate failures carry MP-BKD-006 with the service's 0x90.
    let v = g
        .secure(&["--json", "verify", &ret1, "--records"])
        .ok()
        .json();
    let failed: Vec<&Value> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["failure"].is_object())
        .collect();
    assert!(!failed.is_empty());
    for f in failed {
        assert_eq!(f["failure"]["code"], "MP-BKD-006");
        assert_eq!(f["failure"]["service_code"], "0x90");
        assert!(f["installation_id"].as_str().unwrap().ends_with('1'));
    }
}

#[test]
fn activate_honours_timeout_and_proxy_against_the_loopback_service() {
    let g = Gap::default();
    let cil = g.packed_fixture();
    let mock = MockServer::start();
    let (home, url) = (g.online_home(), mock.url.clone());
    let activate = |out: &str, extra: &[&str]| {
        let out = g.p(out);
        let mut a = vec![
            "--home",
            &home,
            "--json",
            "activate",
            &cil,
            "--out",
            &out,
            "--backend",
            "microsoft",
            "--endpoint",
            &url,
        ];
        a.extend_from_slice(extra);
        makproxy_e2e::run_within(60, "makproxy-online", &a)
    };
    // --timeout 1 against a service that answers after 3 s.
    mock.set_latency(std::time::Duration::from_secs(3));
    let r = activate(
        "slow.zip",
        &["--timeout", "1", "--max-transport-failures", "2"],
    );
    // Without the timeout each answer would have come after 3 s; with it, the first two
    // requests are cut off after sending, the outage breaker stops the run, and no
    // return is written.
    // (How many were already handed out when the breaker tripped depends on timing:
    // at least the two, at most two more with concurrency 2.)
    let j = r.json();
    assert_eq!(j["error"]["code"], "MP-BKD-002", "{j}");
    let open = g
        .online(&["--json", "journal", "list", "--uncertain"])
        .ok()
        .json();
    let n = open["uncertain"].as_array().unwrap().len();
    assert!((2..=4).contains(&n), "{n} uncertain");
    let said = format!("({n} uncertain)");
    assert!(
        j["error"]["message"].as_str().unwrap().contains(&said),
        "{j}"
    );
    assert!(!g.path("slow.zip").exists());
    // An unreachable proxy: nothing can be sent, so nothing is spent or uncertain.
    mock.set_latency(std::time::Duration::ZERO);
    let before = mock.total_requests();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let r = activate(
        "proxied.zip",
        &[
            "--proxy",
            &proxy,
            "--attempts",
            "1",
            "--retry-delay-ms",
            "1",
        ],
    );
    assert_eq!(r.code, 1, "service unreachable: {}", r.stderr);
    assert!(r.stderr.contains("MP-BKD-002"), "{}", r.stderr);
    assert_eq!(
        mock.total_requests(),
        before,
        "the request went to the proxy, never straight to the service"
    );
}

/// The key inventory holds a key's last five characters only; status, keys list and
/// pack (with --dry-run too) warn when the queue or batch needs more activations than
/// the key had left.
#[test]
fn the_key_inventory_warns_before_a_batch_outruns_a_key() {
    let g = Gap::default();
    g.collect_fixture();
    let queued_3v66t = g
        .secure(&[
            "--json",
            "keys",
            "add",
            "--last5",
            "3v66t",
            "--product",
            "Windows Pro",
            "--remaining",
            "2",
        ])
        .ok()
        .json();
    assert_eq!(
        queued_3v66t["added"]["last5"], "3V66T",
        "stored upper case, as products report it"
    );
    // A whole key, a sixth character or a second entry for the same key are refused.
    for bad in ["ABCDE-FGHIJ-KLMNO-PQRST-3V66T", "3V66TX", "3V6!T"] {
        let r = g
            .secure(&["keys", "add", "--last5", bad, "--product", "x"])
            .code(2);
        assert!(
            r.stderr.contains("never give the whole key"),
            "{bad}: {}",
            r.stderr
        );
    }
    g.secure(&["keys", "add", "--last5", "3V66T", "--product", "again"])
        .code(1);
    g.secure(&[
        "keys",
        "add",
        "--last5",
        "WFG99",
        "--product",
        "x",
        "--channel",
        "oem",
    ])
    .code(2);

    let s = g.secure(&["--json", "status"]).ok().json();
    let w = &s["key_warnings"][0];
    assert_eq!(
        (w["last5"].as_str(), w["remaining"].as_i64()),
        (Some("3V66T"), Some(2))
    );
    let needed = w["needed"].as_i64().unwrap();
    assert!(needed > 2, "{s}");
    let text = g.secure(&["status"]).ok().stdout;
    assert!(
        text.contains("WARNING: key …3V66T (Windows Pro) had 2 activation(s) left"),
        "{text}"
    );
    let list = g.secure(&["--json", "keys", "list"]).ok().json();
    assert_eq!(list["keys"][0]["queued"].as_i64(), Some(needed));

    // A batch of two fits; a batch of three does not, and pack says so before it leaves.
    let fits = g
        .secure(&[
            "--json",
            "pack",
            "--out",
            &g.p("x.zip"),
            "--dry-run",
            "--host",
            "PC-00000[12]",
            "--product",
            "Windows",
        ])
        .ok()
        .json();
    assert_eq!(fits["would_pack"], 2);
    assert_eq!(fits["key_warnings"].as_array().unwrap().len(), 0, "{fits}");
    let over = g
        .secure(&[
            "--json",
            "pack",
            "--out",
            &g.p("x.zip"),
            "--dry-run",
            "--limit",
            "3",
            "--product",
            "Windows",
        ])
        .ok()
        .json();
    assert_eq!(over["key_warnings"][0]["needed"], 3, "{over}");
    // The bundle is written, and the exit code says a key is short (issue 29 §3: a
    // script sees it): 4, carry on and review.
    let packed = g
        .secure(&["pack", "--out", &g.p("cil.zip"), "--product", "Windows"])
        .code(4)
        .stdout;
    assert!(packed.contains("WARNING: key …3V66T"), "{packed}");
    assert!(g.path("cil.zip").exists());
    assert!(packed.ends_with("--check-remaining\n"), "{packed}");

    g.secure(&["keys", "remove", "3v66t"]).ok();
    g.secure(&["keys", "remove", "3v66t"]).code(1);
    let list = g.secure(&["--json", "keys", "list"]).ok().json();
    assert_eq!(list["keys"].as_array().unwrap().len(), 0);
}
