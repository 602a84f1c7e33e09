//! The key-statement kit (fixtures/kit-statements): the committed files are exactly
//! what the generator makes for the pinned clock, and `trust accept` gives each its
//! verdict: forged and altered statements refused, a chain applied only in order, a
//! replay refused, a revocation leaving nothing pinned.

use ed25519_dalek::{Signer, Verifier};
use makproxy_core::home::Home;
use makproxy_core::keys::{KeyError, Role};
use makproxy_testkit::{statement_cases, Keys};
use std::path::PathBuf;
use time::macros::datetime;

const PINNED: time::OffsetDateTime = datetime!(2026-11-22 00:00 UTC);

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/kit-statements")
}

#[test]
fn committed_statements_match_the_generator() {
    let regen = std::env::var_os("MAKPROXY_REGEN_KIT").is_some();
    let cases = statement_cases(PINNED);
    for (name, bytes) in &cases {
        let p = dir().join(name);
        if regen {
            std::fs::write(&p, bytes).unwrap();
        }
        let on_disk = std::fs::read(&p)
            .unwrap_or_else(|_| panic!("{name} missing; run with MAKPROXY_REGEN_KIT=1"));
        assert!(on_disk == *bytes, "{name} differs from the generator");
    }
    for e in std::fs::read_dir(dir()).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(
            n == "README.md" || cases.iter().any(|(c, _)| *c == n),
            "stale file {n}"
        );
    }
}

#[test]
fn each_statement_gets_its_verdict_in_each_order() {
    let t = tempfile::tempdir().unwrap();
    let keys = Keys::default();
    let (home, _) = Home::init(&t.path().join("online"), Role::Online, "gateway", None).unwrap();
    let old = t.path().join("old.pub");
    std::fs::write(&old, keys.old_public().to_file_bytes(&keys.secure_old)).unwrap();
    home.trust_add(&old, "kit-secure").unwrap();
    let f = |n: &str| dir().join(n);
    let live = |h: &Home| -> Vec<String> {
        h.trusted()
            .unwrap()
            .iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.key.fingerprint())
            .collect()
    };

    // Forged and altered: refused, nothing changed.
    for bad in [
        "forged-retire-current-signed-by-stranger.json",
        "altered-rotate-old-to-current.json",
    ] {
        let e = home.trust_accept(&f(bad), PINNED).unwrap_err();
        assert!(matches!(e, KeyError::Statement { .. }), "{bad}: {e}");
    }
    assert_eq!(live(&home), [keys.old_public().fingerprint()]);
    // Out of order: the second rotation names a key not pinned yet.
    let e = home
        .trust_accept(&f("2-rotate-current-to-next.json"), PINNED)
        .unwrap_err();
    assert!(matches!(e, KeyError::StatementOutOfOrder { .. }), "{e}");
    // In order: the chain applies; the newest key is the one pinned.
    let a = home
        .trust_accept(&f("1-rotate-old-to-current.json"), PINNED)
        .unwrap();
    assert_eq!(a.new.unwrap().key, keys.secure.verifying_key());
    home.trust_accept(&f("2-rotate-current-to-next.json"), PINNED)
        .unwrap();
    assert_eq!(live(&home).len(), 1);
    assert_ne!(live(&home), [keys.public(Role::Secure).fingerprint()]);
    // Replayed: applied already.
    for again in [
        "1-rotate-old-to-current.json",
        "2-rotate-current-to-next.json",
    ] {
        let e = home.trust_accept(&f(again), PINNED).unwrap_err();
        assert!(
            matches!(e, KeyError::StatementApplied { .. }),
            "{again}: {e}"
        );
    }
    // The revocation leaves no key of the site pinned; all three stay for old bundles.
    home.trust_accept(&f("3-revoke-next.json"), PINNED).unwrap();
    assert!(live(&home).is_empty());
    assert_eq!(home.trusted().unwrap().len(), 3);
    // A statement dated later than the clock allows is refused.
    let (h2, _) = Home::init(&t.path().join("o2"), Role::Online, "gateway", None).unwrap();
    h2.trust_add(&old, "kit-secure").unwrap();
    let e = h2
        .trust_accept(
            &f("1-rotate-old-to-current.json"),
            PINNED - time::Duration::hours(3),
        )
        .unwrap_err();
    assert!(matches!(e, KeyError::Statement { .. }), "{e}");
}

/// Known-answer vectors where strict and plain Ed25519 verification differ (R of small
/// order, which plain verification accepts): a key statement and a public key file
/// signed that way are refused, so weakening either `verify_strict` to `verify` fails
/// here (the bundle reader's are the kit's `signature-with-small-order-r` cases).
#[test]
fn statements_and_key_files_are_verified_strictly() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use makproxy_core::bundle::pae;
    use makproxy_testkit::small_order_r_signature;
    let k = Keys::default();
    // The kit's rotation statement, its first signature (the retired key's) replaced.
    let good = k.rotation_statement(PINNED);
    assert!(makproxy_core::statement::check(&good).is_ok());
    let mut env: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let body = B64.decode(env["payload"].as_str().unwrap()).unwrap();
    let signed = pae(makproxy_core::statement::PAYLOAD_TYPE, &body);
    let weak = small_order_r_signature(&k.secure_old, &signed);
    assert!(
        k.secure_old.verifying_key().verify(&signed, &weak).is_ok()
            && k.secure_old
                .verifying_key()
                .verify_strict(&signed, &weak)
                .is_err(),
        "the vector is one where plain and strict verification differ"
    );
    env["signatures"][0]["sig"] = B64.encode(weak.to_bytes()).into();
    let mut bytes = serde_json::to_vec_pretty(&env).unwrap();
    bytes.push(b'\n');
    assert!(makproxy_core::statement::check(&bytes).is_err());

    // A public key file whose self-signature is the same kind of vector.
    let public = k.public(Role::Secure);
    let file = public.to_file_bytes(&k.secure);
    let path = std::path::Path::new("kit.pub");
    assert!(makproxy_core::keys::PublicKey::from_file_bytes(path, &file, true).is_ok());
    let mut f: serde_json::Value = serde_json::from_slice(&file).unwrap();
    let statement = format!("secure\n{}\n{}", public.site, f["key"].as_str().unwrap());
    let signed = pae(
        "application/vnd.makproxy.public-key; version=2",
        statement.as_bytes(),
    );
    assert!(
        k.secure
            .verifying_key()
            .verify_strict(&signed, &k.secure.sign(&signed))
            .is_ok(),
        "the signed text is the self-signature's"
    );
    f["self_signature"] = B64
        .encode(small_order_r_signature(&k.secure, &signed).to_bytes())
        .into();
    let bytes = serde_json::to_vec_pretty(&f).unwrap();
    assert!(makproxy_core::keys::PublicKey::from_file_bytes(path, &bytes, true).is_err());
}
