//! A generated corpus of hostile machine-record files through the real `collect`:
//! truncated, re-encoded, huge, deeply nested, wrongly typed, bad check digits,
//! duplicated products, control characters and bidi overrides. Nothing panics, every
//! bad file is reported, every good record is kept, and terminal output is escaped.

use makproxy_e2e::Gap;
use std::collections::{BTreeMap, BTreeSet};

/// A valid agent file for `host` with one product.
fn good(host: &str, n: u32) -> String {
    let payload: Vec<u8> = format!("{n:054}").bytes().map(|b| b - b'0').collect();
    let iid = makproxy_core::ids::with_check_digits(&payload, 7);
    serde_json::json!({"schema": "makproxy-agent/1", "host": host, "collected": "2026-11-20T08:00:00Z", "agent": "corpus",
        "products": [{"activation_id": "2de67392-b7a7-462a-b1ca-108dd189f588", "partial_product_key": "3V66T", "description": "VOLUME_MAK",
            "extended_product_id": "03612-03305-317-008912-02-1033-9200.0000-0662023", "installation_id": iid, "license_status": 5}]})
    .to_string()
}

#[test]
fn a_thousand_hostile_files_are_reported_and_good_records_kept() {
    let g = Gap::default();
    let dir = g.path("corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bad: BTreeSet<String> = BTreeSet::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut good_products = 0;
    let mut put = |name: String, bytes: Vec<u8>, is_bad: bool, kind: &'static str, kept: usize| {
        std::fs::write(dir.join(&name), bytes).unwrap();
        if is_bad {
            bad.insert(name);
        }
        *kinds.entry(kind).or_default() += 1;
        kept
    };
    for i in 0..60u32 {
        good_products += put(
            format!("GOOD-{i:03}.json"),
            good(&format!("GOOD-{i:03}"), i).into_bytes(),
            false,
            "good",
            1,
        );
    }
    for i in 0..1000u32 {
        let host = format!("BAD-{i:04}");
        let base = good(&host, 10_000 + i);
        let name = format!("{host}.json");
        let k = i % 10;
        good_products += match k {
            // Truncated anywhere before the closing brace.
            0 => put(
                name,
                base.as_bytes()[..(i as usize * 7) % (base.len() - 1)].to_vec(),
                true,
                "truncated",
                0,
            ),
            // UTF-16 with an odd byte, or bytes that are no text at all.
            1 => {
                let mut b = vec![0xFF, 0xFE];
                b.extend(base.encode_utf16().flat_map(u16::to_le_bytes));
                b.push(0x41);
                put(name, b, true, "bad-encoding", 0)
            }
            2 => put(
                name,
                (0..200u32)
                    .map(|x| ((x * 131 + i) % 256) as u8)
                    .map(|b| if b == b'{' || b == b'[' { 0xC3 } else { b })
                    .collect(),
                true,
                "binary",
                0,
            ),
            // Deeply nested.
            3 => put(
                name,
                format!(
                    "{}{}",
                    "[".repeat(200 + i as usize % 50),
                    "]".repeat(200 + i as usize % 50)
                )
                .into_bytes(),
                true,
                "nested",
                0,
            ),
            // Wrong types.
            4 => put(
                name,
                base.replace("\"license_status\":5", "\"license_status\":\"5\"")
                    .into_bytes(),
                true,
                "wrong-type",
                0,
            ),
            // A mistyped IID digit (+1 in one group, never the check digit itself).
            5 => {
                let v: serde_json::Value = serde_json::from_str(&base).unwrap();
                let iid = v["products"][0]["installation_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let pos = (i as usize % 9) * 7 + (i as usize % 6);
                let mut b = iid.clone().into_bytes();
                b[pos] = if b[pos] == b'9' { b'2' } else { b[pos] + 1 };
                put(
                    name,
                    base.replace(&iid, std::str::from_utf8(&b).unwrap())
                        .into_bytes(),
                    true,
                    "check-digit",
                    0,
                )
            }
            // The same product twice in one file: the first is kept.
            6 => {
                let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
                let p = v["products"][0].clone();
                v["products"].as_array_mut().unwrap().push(p);
                put(
                    name,
                    v.to_string().into_bytes(),
                    true,
                    "duplicate-product",
                    1,
                )
            }
            // Control characters and bidi overrides in the host name.
            7 => put(
                name,
                base.replace(&host, &format!("{host}\u{1b}[2J\u{202e}"))
                    .into_bytes(),
                true,
                "control-chars",
                0,
            ),
            // A duplicated JSON key.
            8 => put(
                name,
                base.replacen("{\"agent\"", "{\"host\":\"EVIL\",\"agent\"", 1)
                    .into_bytes(),
                true,
                "duplicate-key",
                0,
            ),
            // Huge (over the 16 MiB cap) — a few of them.
            _ if i < 40 => put(
                name,
                format!("{{\"pad\":\"{}\"}}", "x".repeat(17 << 20)).into_bytes(),
                true,
                "huge",
                0,
            ),
            _ => put(
                name,
                base.replace("makproxy-agent/1", "makproxy-agent/7")
                    .into_bytes(),
                true,
                "schema",
                0,
            ),
        };
    }
    let r = g.secure(&["--json", "collect", dir.to_str().unwrap()]);
    assert_eq!(
        r.code,
        4,
        "partial: some input rejected; stderr tail: {}",
        &r.stderr[r.stderr.len().saturating_sub(500)..]
    );
    assert!(!r.stderr.contains("panicked"));
    let j = r.json();
    let reported: BTreeSet<String> = j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["file"]
                .as_str()
                .unwrap()
                .rsplit(['/', '\\'])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let missed: Vec<_> = bad.difference(&reported).collect();
    assert!(missed.is_empty(), "bad files not reported: {missed:?}");
    assert!(
        reported.iter().all(|f| bad.contains(f)),
        "a good file was reported"
    );
    assert_eq!(
        g.status()["products"].as_array().unwrap().len(),
        good_products,
        "every good record kept ({kinds:?})"
    );
    // Nothing dangerous reaches the terminal: no ESC, no bidi override, no other control but newline.
    for c in r.stderr.chars().chain(r.stdout.chars()) {
        assert!(
            c == '\n' || (!c.is_control() && !('\u{202a}'..='\u{202e}').contains(&c)),
            "unescaped {c:?} in output"
        );
    }
    assert!(bad.len() >= 1000);
}
