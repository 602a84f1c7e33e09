//! The client's wire format against known answers computed outside makproxy
//! (fixtures/service/known-answers.json, written by scripts/make-service-vectors.py with
//! Python's hmac and UTF-16 codec from the published protocol): the inner request bytes
//! and their digest must be exactly those, and the loopback mock's own digest must agree,
//! so a wrong digest, encoding or namespace in the client fails here and against the mock.

use base64::Engine;
use makproxy_backend::microsoft::{digest, envelope, request_xml_utf16};
use makproxy_testkit::mock::service_digest;

fn vectors() -> Vec<serde_json::Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/service/known-answers.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let v = doc["vectors"].as_array().unwrap().clone();
    assert_eq!(v.len(), 2, "a CID request and a remaining-count request");
    v
}

#[test]
fn requests_and_digests_are_the_independently_computed_ones() {
    let b64 = base64::engine::general_purpose::STANDARD;
    for v in vectors() {
        let rtype = v["request_type"].as_u64().unwrap() as u8;
        let (pid, iid) = (v["pid"].as_str().unwrap(), v["iid"].as_str());
        let raw = request_xml_utf16(rtype, pid, iid);
        let want = b64
            .decode(v["request_xml_utf16le_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw, want, "request type {rtype}: the inner request's bytes");
        let text: Vec<u16> = raw
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&text).unwrap(),
            v["request_xml"].as_str().unwrap()
        );
        let d = v["digest"].as_str().unwrap();
        assert_eq!(digest(&raw), d, "request type {rtype}: the client's digest");
        assert_eq!(
            service_digest(&raw),
            d,
            "request type {rtype}: the mock's digest"
        );
        let env = envelope(rtype, pid, iid);
        assert!(env.contains(&format!("<Digest>{d}</Digest>")), "{env}");
        assert!(
            env.contains(&format!("<RequestXml>{}</RequestXml>", b64.encode(&want))),
            "{env}"
        );
    }
}

#[test]
fn a_digest_off_by_one_byte_is_not_the_known_answer() {
    // The vectors would catch a client that hashed the UTF-8 text, a BOM, or a key
    // taken as 64 bytes of hex text.
    let v = &vectors()[0];
    let raw = request_xml_utf16(1, v["pid"].as_str().unwrap(), v["iid"].as_str());
    let d = v["digest"].as_str().unwrap();
    assert_ne!(
        service_digest(v["request_xml"].as_str().unwrap().as_bytes()),
        d
    );
    let mut bom = vec![0xFF, 0xFE];
    bom.extend(&raw);
    assert_ne!(service_digest(&bom), d);
}
