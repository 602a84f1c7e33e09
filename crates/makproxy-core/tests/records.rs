//! parse ∘ render: a machine's products, rendered here in each format collect reads
//! (the agent's JSON, raw WMI JSON as PowerShell's ConvertTo-Json writes it, CSV with
//! RFC 4180 quoting), are parsed back to exactly what was rendered. The renderers are
//! written from docs/formats.md, independently of the parsers.

use makproxy_core::ids::{with_check_digits, LicenseStatus};
use makproxy_core::records::{decode_text, parse, Format, Parsed, ProductRecord};
use proptest::prelude::*;
use serde_json::{json, Value};

/// One product as a machine reports it (strings as they appear in any format).
#[derive(Debug, Clone)]
struct Given {
    activation_id: String,
    office: bool,
    name: Option<String>,
    description: Option<String>,
    partial_key: Option<String>,
    epid: Option<String>,
    iid: Option<String>,
    license_status: Option<i64>,
}

fn text() -> impl Strategy<Value = Option<String>> {
    // Printable text of any script, quotes and commas included, no surrounding space
    // (the parsers trim it), within the 512-byte limit.
    proptest::option::of(prop_oneof![
        // What product names look like, with the characters formats have to quote.
        "[A-Za-z0-9(),\"'®™é日本.-][A-Za-z0-9 (),\"'®™é日本.-]{0,40}[A-Za-z0-9)\"'.]",
        "[^\\s\\p{Cc}][^\\p{Cc}]{0,60}[^\\s\\p{Cc}]",
    ])
}

fn given() -> impl Strategy<Value = Given> {
    (
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        any::<bool>(),
        text(),
        text(),
        proptest::option::of("[0-9A-Z]{5}"),
        proptest::option::of(Just(
            "03612-03305-317-008912-02-1033-9200.0000-0662023".to_string(),
        )),
        proptest::option::of(proptest::collection::vec(0u8..10, 54)),
        proptest::option::of(0i64..7),
    )
        .prop_map(
            |(activation_id, office, name, description, partial_key, epid, iid, ls)| Given {
                activation_id,
                office,
                name,
                description,
                partial_key,
                epid,
                iid: iid.map(|d| with_check_digits(&d, 7)),
                license_status: ls,
            },
        )
}

const WINDOWS_APP: &str = "55c92734-d682-4d71-983e-d6ec3f16059f";
const OFFICE_APP: &str = "0ff1ce15-a989-479d-af46-f275c6370663";

fn class(g: &Given) -> &'static str {
    if g.office {
        "OfficeSoftwareProtectionProduct"
    } else {
        "SoftwareLicensingProduct"
    }
}

fn app(g: &Given) -> &'static str {
    if g.office {
        OFFICE_APP
    } else {
        WINDOWS_APP
    }
}

fn agent(host: &str, products: &[Given]) -> String {
    let list: Vec<Value> = products
        .iter()
        .map(|g| {
            let mut o = json!({"wmi_class": class(g), "activation_id": g.activation_id, "application_id": app(g)});
            for (k, v) in [
                ("name", &g.name),
                ("description", &g.description),
                ("partial_product_key", &g.partial_key),
                ("extended_product_id", &g.epid),
                ("installation_id", &g.iid),
            ] {
                if let Some(v) = v {
                    o[k] = json!(v);
                }
            }
            if let Some(ls) = g.license_status {
                o["license_status"] = json!(ls);
            }
            o
        })
        .collect();
    json!({"schema": "makproxy-agent/1", "host": host, "collected": "2026-11-20T08:00:00Z", "agent": "test", "products": list}).to_string()
}

fn wmi(host: &str, products: &[Given]) -> String {
    let list: Vec<Value> = products
        .iter()
        .map(|g| {
            json!({
                "PSComputerName": host,
                "CimClass": {"CimClassName": class(g)},
                "ID": g.activation_id,
                "ApplicationID": app(g),
                "Name": g.name,
                "Description": g.description,
                "PartialProductKey": g.partial_key,
                "ProductKeyID": g.epid,
                // WMI always has these properties; a product without an IID has "".
                "OfflineInstallationId": g.iid.clone().unwrap_or_default(),
                "LicenseStatus": g.license_status,
            })
        })
        .collect();
    serde_json::to_string_pretty(&Value::Array(list)).unwrap()
}

/// RFC 4180: a field with a comma or quote is quoted, quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(host: &str, products: &[Given]) -> String {
    let mut out = String::from("host,activation_id,extended_product_id,installation_id,application_id,product,description,partial_product_key,license_status\r\n");
    for g in products {
        let cells = [
            host.to_string(),
            g.activation_id.clone(),
            g.epid.clone().unwrap_or_default(),
            g.iid.clone().unwrap_or_default(),
            app(g).to_string(),
            g.name.clone().unwrap_or_default(),
            g.description.clone().unwrap_or_default(),
            g.partial_key.clone().unwrap_or_default(),
            g.license_status.map(|l| l.to_string()).unwrap_or_default(),
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn same(
    g: &Given,
    p: &ProductRecord,
    host: &str,
    wmi_class_known: bool,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.host.as_str(), host);
    prop_assert_eq!(p.activation_id.as_str(), g.activation_id.as_str());
    prop_assert_eq!(p.application.guid(), app(g));
    prop_assert_eq!(&p.name, &g.name);
    prop_assert_eq!(&p.description, &g.description);
    prop_assert_eq!(&p.partial_key, &g.partial_key);
    prop_assert_eq!(
        p.epid.as_ref().map(|e| e.as_str().to_string()),
        g.epid.clone()
    );
    prop_assert_eq!(
        p.iid.as_ref().map(|i| i.digits().to_string()),
        g.iid.clone()
    );
    prop_assert_eq!(
        p.license_status,
        g.license_status
            .map(|l| LicenseStatus::from_i64(l).unwrap())
    );
    if wmi_class_known {
        prop_assert_eq!(p.wmi_class.as_str(), class(g));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_format_parses_back_what_was_rendered(
        host in "[A-Z][A-Z0-9-]{0,14}",
        products in proptest::collection::vec(given(), 1..6),
        utf16 in any::<bool>(),
    ) {
        for (format, rendered, class_known) in [
            (Format::Agent, agent(&host, &products), true),
            (Format::Wmi, wmi(&host, &products), true),
            (Format::Csv, csv(&host, &products), false),
        ] {
            // PowerShell 5 writes UTF-16 with a byte order mark.
            let bytes: Vec<u8> = if utf16 {
                let mut b = vec![0xFF, 0xFE];
                b.extend(rendered.encode_utf16().flat_map(u16::to_le_bytes));
                b
            } else {
                rendered.clone().into_bytes()
            };
            let text = decode_text(&bytes).unwrap();
            let (f, Parsed::Products(back)) = parse(&text, "FALLBACK").unwrap() else {
                panic!("{format:?}: not products")
            };
            prop_assert_eq!(f, format);
            prop_assert_eq!(back.len(), products.len());
            for (g, p) in products.iter().zip(back) {
                let p = p.map_err(|e| TestCaseError::fail(format!("{format:?}: {e:?}\n{rendered}")))?;
                same(g, &p, &host, class_known)?;
            }
        }
    }
}
