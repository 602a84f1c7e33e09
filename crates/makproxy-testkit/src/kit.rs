//! The malicious-bundle kit: deterministic test keys and a list of crafted bundles,
//! each named after its defect and the code it must be rejected with. Used by the
//! library test (with a pinned clock, against the committed fixtures/kit/ files) and by
//! the end-to-end suite (freshly generated, against both binaries).
//!
//! The keys here are public test keys derived from fixed strings. Never trust them
//! outside tests.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use makproxy_core::bundle::{pae, BundleId, CilRecord, Header, Kind};
use makproxy_core::codes::Code;
use makproxy_core::ids::{
    digits_from_seed, with_check_digits, ExtendedProductId, Guid, InstallationId,
};
use makproxy_core::keys::{key_id, PublicKey, Role, Trusted};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Cursor, Write};
use time::OffsetDateTime;

/// The test keys.
pub struct Keys {
    /// The secure side's test key.
    pub secure: SigningKey,
    /// A second operator of the secure site (`cosign`), pinned like `secure`.
    pub colleague: SigningKey,
    /// The secure side's previous key, retired by a rotation statement naming `secure`
    /// two hours before the kit's `now` ([`Keys::rotation_statement`]).
    pub secure_old: SigningKey,
    /// The online side's test key.
    pub online: SigningKey,
    /// A key nobody trusts.
    pub stranger: SigningKey,
    /// A secure key of another site, pinned too (a second site on the same gateway):
    /// its cosignature never counts for this site.
    pub other_site: SigningKey,
}

fn key(label: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(format!("makproxy-testkit-{label}").as_bytes()).into())
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            secure: key("secure"),
            secure_old: key("secure-old"),
            colleague: key("colleague"),
            online: key("online"),
            stranger: key("stranger"),
            other_site: key("other-site"),
        }
    }
}

impl Keys {
    /// The public key of `role`'s test key, as a pinned key file would give it.
    pub fn public(&self, role: Role) -> PublicKey {
        match role {
            Role::Secure => PublicKey {
                role,
                site: "kit-site".into(),
                key: self.secure.verifying_key(),
            },
            Role::Online => PublicKey {
                role,
                site: "kit-gateway".into(),
                key: self.online.verifying_key(),
            },
        }
    }
    /// What the reader of `kind` trusts at `now`: the secure key for CIL bundles (and
    /// its predecessor, retired at [`retired_at`]), the online key for returns.
    pub fn trusted(&self, reader: Kind, now: OffsetDateTime) -> Vec<Trusted> {
        let role = if reader == Kind::Cil {
            Role::Secure
        } else {
            Role::Online
        };
        let mut v = vec![Trusted {
            name: format!("kit-{}", role.as_str()),
            key: self.public(role),
            retired_at: None,
        }];
        if reader == Kind::Cil {
            v.push(Trusted {
                name: "kit-secure".into(),
                key: self.old_public(),
                retired_at: Some(retired_at(now)),
            });
            v.push(Trusted {
                name: "kit-colleague".into(),
                key: self.colleague_public(),
                retired_at: None,
            });
            v.push(Trusted {
                name: "kit-other-site".into(),
                key: self.other_site_public(),
                retired_at: None,
            });
        }
        v
    }

    /// Pins in `home` (an online home) what [`Keys::trusted`] trusts for CIL bundles,
    /// as an operator would: the previous secure key, then its rotation statement, the
    /// colleague and the other site's key. Key files are written into `dir`.
    pub fn pin_cil_signers(
        &self,
        home: &makproxy_core::home::Home,
        dir: &std::path::Path,
        now: OffsetDateTime,
    ) -> Result<(), makproxy_core::keys::KeyError> {
        let file = |name: &str, bytes: Vec<u8>| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).expect("write a kit key file");
            p
        };
        home.trust_add(
            &file(
                "kit-old.pub",
                self.old_public().to_file_bytes(&self.secure_old),
            ),
            "kit-secure",
        )?;
        home.trust_accept(
            &file("kit-rotation.json", self.rotation_statement(now)),
            now,
        )?;
        home.trust_add(
            &file(
                "kit-colleague.pub",
                self.colleague_public().to_file_bytes(&self.colleague),
            ),
            "kit-colleague",
        )?;
        home.trust_add(
            &file(
                "kit-other-site.pub",
                self.other_site_public().to_file_bytes(&self.other_site),
            ),
            "kit-other-site",
        )?;
        Ok(())
    }

    /// The second secure operator's public key.
    pub fn colleague_public(&self) -> PublicKey {
        PublicKey {
            role: Role::Secure,
            site: "kit-site".into(),
            key: self.colleague.verifying_key(),
        }
    }

    /// The public key of the secure side of another site (`kit-elsewhere`).
    pub fn other_site_public(&self) -> PublicKey {
        PublicKey {
            role: Role::Secure,
            site: "kit-elsewhere".into(),
            key: self.other_site.verifying_key(),
        }
    }

    /// The secure side's previous public key.
    pub fn old_public(&self) -> PublicKey {
        PublicKey {
            role: Role::Secure,
            site: "kit-site".into(),
            key: self.secure_old.verifying_key(),
        }
    }

    /// The statement retiring `secure_old` in favour of `secure` at [`retired_at`]`(now)`,
    /// as `key rotate` writes it (for the binaries' `trust accept`).
    pub fn rotation_statement(&self, now: OffsetDateTime) -> Vec<u8> {
        let file = self.public(Role::Secure).to_file_bytes(&self.secure);
        makproxy_core::statement::make(
            Role::Secure,
            "kit-site",
            &self.secure_old,
            Some((&self.secure, &file)),
            "kit rotation",
            retired_at(now),
        )
    }
}

/// The key-statement kit (fixtures/kit-statements): a chain of rotations of the secure
/// site's key (old -> secure -> next), a revocation of the last, and forged and altered
/// statements, by file name. What each must do, applied in which order, is in the
/// folder's README and `crates/makproxy-core/tests/statements.rs`.
pub fn statement_cases(now: OffsetDateTime) -> Vec<(&'static str, Vec<u8>)> {
    let k = Keys::default();
    let next = key("secure-next");
    let file = |key: &SigningKey| {
        PublicKey {
            role: Role::Secure,
            site: "kit-site".into(),
            key: key.verifying_key(),
        }
        .to_file_bytes(key)
    };
    let stmt = |old: &SigningKey, new: Option<&SigningKey>, reason: &str, at| {
        let f = new.map(file);
        makproxy_core::statement::make(
            Role::Secure,
            "kit-site",
            old,
            new.zip(f.as_deref()),
            reason,
            at,
        )
    };
    let first = k.rotation_statement(now);
    let second = stmt(
        &k.secure,
        Some(&next),
        "second rotation",
        now - time::Duration::hours(1),
    );
    let revoke = stmt(
        &next,
        None,
        "site closed",
        now - time::Duration::minutes(30),
    );
    // Forged: the stranger's key signs a statement retiring the site's current key.
    let forged = {
        let mut e: Value =
            serde_json::from_slice(&stmt(&k.stranger, Some(&next), "forged", now)).expect("json");
        let body = B64
            .decode(e["payload"].as_str().expect("payload"))
            .expect("b64");
        let mut p: Value = serde_json::from_slice(&body).expect("json");
        p["key"] = json!(B64.encode(k.secure.verifying_key().as_bytes()));
        e["payload"] = json!(B64.encode(serde_json::to_vec(&p).expect("json")));
        serde_json::to_vec_pretty(&e).expect("json")
    };
    // Altered: the first rotation with its reason changed after signing.
    let altered = {
        let mut e: Value = serde_json::from_slice(&first).expect("json");
        let body = String::from_utf8(
            B64.decode(e["payload"].as_str().expect("payload"))
                .expect("b64"),
        )
        .expect("utf-8");
        e["payload"] = json!(B64.encode(body.replace("kit rotation", "kit rotatioN")));
        serde_json::to_vec_pretty(&e).expect("json")
    };
    vec![
        ("1-rotate-old-to-current.json", first),
        ("2-rotate-current-to-next.json", second),
        ("3-revoke-next.json", revoke),
        ("forged-retire-current-signed-by-stranger.json", forged),
        ("altered-rotate-old-to-current.json", altered),
    ]
}

/// When the kit's previous secure key was retired: two hours before `now` (kit bundles
/// are created an hour before `now`).
pub fn retired_at(now: OffsetDateTime) -> OffsetDateTime {
    now - time::Duration::hours(2)
}

/// One kit entry.
pub struct Case {
    /// File name: `<expected code or ok>-<defect>.zip`.
    pub file: String,
    /// Which reader must reject (or accept) it.
    pub reader: Kind,
    /// None: must verify, records included.
    pub expect: Option<Code>,
    /// The bundle's bytes.
    pub bytes: Vec<u8>,
}

fn iid(n: u32) -> String {
    with_check_digits(&digits_from_seed(format!("kit-iid-{n}").as_bytes(), 54), 7)
}
fn cid(n: u32) -> String {
    with_check_digits(&digits_from_seed(format!("kit-cid-{n}").as_bytes(), 40), 6)
}
const EPID: &str = "03612-03305-317-008912-02-1033-9200.0000-0662023";
const AID: &str = "2de67392-b7a7-462a-b1ca-108dd189f588";

fn lines(v: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in v {
        out.extend(serde_json::to_vec(x).expect("json"));
        out.push(b'\n');
    }
    out
}

fn cil_records() -> Vec<Value> {
    (1..=3).map(|n| json!({"handle": n, "installation_id": iid(n), "extended_product_id": EPID, "activation_id": AID, "product": "Windows(R), Professional edition"})).collect()
}

fn return_records() -> Vec<Value> {
    let mut v: Vec<Value> = (1..=2).map(|n| json!({"handle": n, "installation_id": iid(n), "extended_product_id": EPID, "confirmation_id": cid(n), "source": "backend", "backend": "microsoft", "simulated": false})).collect();
    v.push(json!({"handle": 3, "installation_id": iid(3), "extended_product_id": EPID, "failure": {"code": "MP-BKD-001", "service_code": "0x7F", "message": "MAK has exceeded its activation limit"}, "source": "backend", "backend": "microsoft", "simulated": false}));
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ts(t: OffsetDateTime) -> String {
    makproxy_core::bundle::rfc3339(t)
}

/// A manifest for `data` as a JSON value, ready to be tweaked.
fn manifest(
    kind: Kind,
    data: &[u8],
    records: usize,
    signer: &SigningKey,
    now: OffsetDateTime,
) -> Value {
    let mut m = json!({
        "format": "makproxy-bundle", "version": makproxy_core::bundle::VERSION, "kind": kind.as_str(),
        "bundle_id": hex(&Sha256::digest(format!("kit-{}", kind.as_str()).as_bytes())[..16]),
        "site": if kind == Kind::Cil { "kit-site" } else { "kit-gateway" },
        "sequence": 1,
        "created": ts(now - time::Duration::hours(1)), "expires": ts(now + time::Duration::days(30)),
        "tool": "makproxy testkit", "signer_key_id": key_id(&signer.verifying_key()), "records": records,
        "fields": ["handle", "installation_id", "extended_product_id"],
        "entries": [{"name": kind.data_entry(), "size": data.len(), "sha256": hex(&Sha256::digest(data))}],
    });
    if kind == Kind::Return {
        m["answers"] = json!({"bundle_id": hex(&Sha256::digest(b"kit-cil")[..16]), "manifest_sha256": hex(&Sha256::digest(b"kit-cil-manifest")), "site": "kit-site", "sequence": 1});
        m["backend"] = json!({"name": "microsoft", "simulated": false});
    }
    m
}

fn mbytes(m: &Value) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(m).expect("json");
    v.push(b'\n');
    v
}

fn sig(signer: &SigningKey, claimed: &SigningKey, payload_type: &str, manifest: &[u8]) -> Vec<u8> {
    sig_file(claimed, &signer.sign(&pae(payload_type, manifest)))
}

/// The signature file of `s`, naming `claimed`'s key ID.
fn sig_file(claimed: &SigningKey, s: &ed25519_dalek::Signature) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(&json!({"format": "makproxy-signature-v1", "key_id": key_id(&claimed.verifying_key()), "signature": B64.encode(s.to_bytes())})).expect("json");
    v.push(b'\n');
    v
}

/// A signature by `signer` over `message` whose R is the identity point (a point of
/// small order) and s = k·a: plain Ed25519 verification ([s]B − [k]A = R, compared as
/// encodings) accepts it, strict verification refuses it (R of small order). The case
/// "Taming the many EdDSAs" (Chalkias et al., 2020) lists as the one where the two
/// differ for an honest key; a known-answer vector that fails if `verify_strict` is
/// ever weakened to `verify`.
pub fn small_order_r_signature(signer: &SigningKey, message: &[u8]) -> ed25519_dalek::Signature {
    use curve25519_dalek::scalar::Scalar;
    use sha2::Sha512;
    let mut r = [0u8; 32];
    r[0] = 1; // the identity's encoding
    let a = signer.verifying_key().to_bytes();
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = k * signer.to_scalar();
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(&r);
    b[32..].copy_from_slice(s.as_bytes());
    ed25519_dalek::Signature::from_bytes(&b)
}

/// How an entry is stored.
#[derive(Clone, Copy)]
enum How {
    File,
    Symlink,
}

fn zip_of(entries: &[(&str, &[u8], How)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o644);
    for (name, data, how) in entries {
        match how {
            How::File => {
                let opts = if name.ends_with(".jsonl") || name.len() > 20 {
                    stored.compression_method(zip::CompressionMethod::Deflated)
                } else {
                    stored
                };
                z.start_file(*name, opts).expect("zip");
                z.write_all(data).expect("zip");
            }
            How::Symlink => {
                z.add_symlink(*name, "/etc/passwd", stored).expect("zip");
            }
        }
    }
    z.finish().expect("zip").into_inner()
}

fn patch(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    bytes
}

/// Sets general-purpose flag bits on every central-directory record.
fn set_cd_flags(mut bytes: Vec<u8>, bits: u16) -> Vec<u8> {
    let mut i = 0;
    while i + 46 <= bytes.len() {
        if bytes[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] {
            let f = u16::from_le_bytes([bytes[i + 8], bytes[i + 9]]) | bits;
            bytes[i + 8..i + 10].copy_from_slice(&f.to_le_bytes());
        }
        i += 1;
    }
    bytes
}

/// A canonical zip (as `zip_of` writes it) taken apart, so the kit can rebuild it with
/// one non-canonical feature at a time, every offset and length kept consistent.
struct Layout {
    locals: Vec<LocalPart>,
    central: Vec<CentralPart>,
}

struct LocalPart {
    fixed: Vec<u8>,
    name: Vec<u8>,
    extra: Vec<u8>,
    data: Vec<u8>,
}

struct CentralPart {
    fixed: Vec<u8>,
    name: Vec<u8>,
    extra: Vec<u8>,
    comment: Vec<u8>,
}

/// What to change when rebuilding a [`Layout`].
#[derive(Default)]
struct Rebuild<'a> {
    prefix: &'a [u8],
    /// Bytes after the first entry.
    gap: &'a [u8],
    archive_comment: &'a [u8],
    /// Bytes after the end record.
    trailing: &'a [u8],
}

fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}
fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

impl Layout {
    fn parse(z: &[u8]) -> Layout {
        let eocd = z.len() - 22;
        let (cd_size, cd_off) = (le32(z, eocd + 12), le32(z, eocd + 16));
        let mut central = Vec::new();
        let mut at = cd_off;
        while at < cd_off + cd_size {
            let (n, x, c) = (le16(z, at + 28), le16(z, at + 30), le16(z, at + 32));
            central.push(CentralPart {
                fixed: z[at..at + 46].to_vec(),
                name: z[at + 46..at + 46 + n].to_vec(),
                extra: z[at + 46 + n..at + 46 + n + x].to_vec(),
                comment: z[at + 46 + n + x..at + 46 + n + x + c].to_vec(),
            });
            at += 46 + n + x + c;
        }
        let locals = central
            .iter()
            .map(|c| {
                let off = le32(&c.fixed, 42);
                let (n, x) = (le16(z, off + 26), le16(z, off + 28));
                let size = le32(&c.fixed, 20);
                LocalPart {
                    fixed: z[off..off + 30].to_vec(),
                    name: z[off + 30..off + 30 + n].to_vec(),
                    extra: z[off + 30 + n..off + 30 + n + x].to_vec(),
                    data: z[off + 30 + n + x..off + 30 + n + x + size].to_vec(),
                }
            })
            .collect();
        Layout { locals, central }
    }

    fn build(&self, r: &Rebuild) -> Vec<u8> {
        let mut out = r.prefix.to_vec();
        let mut offsets = Vec::new();
        for (i, l) in self.locals.iter().enumerate() {
            offsets.push(out.len() as u32);
            let mut fixed = l.fixed.clone();
            fixed[26..28].copy_from_slice(&(l.name.len() as u16).to_le_bytes());
            fixed[28..30].copy_from_slice(&(l.extra.len() as u16).to_le_bytes());
            out.extend_from_slice(&fixed);
            out.extend_from_slice(&l.name);
            out.extend_from_slice(&l.extra);
            out.extend_from_slice(&l.data);
            if i == 0 {
                out.extend_from_slice(r.gap);
            }
        }
        let cd_start = out.len();
        for (c, off) in self.central.iter().zip(offsets) {
            let mut fixed = c.fixed.clone();
            fixed[28..30].copy_from_slice(&(c.name.len() as u16).to_le_bytes());
            fixed[30..32].copy_from_slice(&(c.extra.len() as u16).to_le_bytes());
            fixed[32..34].copy_from_slice(&(c.comment.len() as u16).to_le_bytes());
            fixed[42..46].copy_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&fixed);
            out.extend_from_slice(&c.name);
            out.extend_from_slice(&c.extra);
            out.extend_from_slice(&c.comment);
        }
        let cd_size = out.len() - cd_start;
        let n = self.central.len() as u16;
        let mut eocd = vec![0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0];
        eocd.extend_from_slice(&n.to_le_bytes());
        eocd.extend_from_slice(&n.to_le_bytes());
        eocd.extend_from_slice(&(cd_size as u32).to_le_bytes());
        eocd.extend_from_slice(&(cd_start as u32).to_le_bytes());
        eocd.extend_from_slice(&(r.archive_comment.len() as u16).to_le_bytes());
        out.extend_from_slice(&eocd);
        out.extend_from_slice(r.archive_comment);
        out.extend_from_slice(r.trailing);
        out
    }
}

struct Parts {
    kind: Kind,
    data: Vec<u8>,
    manifest: Vec<u8>,
    sig: Vec<u8>,
    /// Cosignature entries, by name.
    cosigs: Vec<(String, Vec<u8>)>,
}

impl Parts {
    fn new(
        keys: &Keys,
        kind: Kind,
        now: OffsetDateTime,
        tweak: impl FnOnce(&mut Value),
        recs: Option<Vec<u8>>,
    ) -> Parts {
        let signer = if kind == Kind::Cil {
            &keys.secure
        } else {
            &keys.online
        };
        let data = recs.unwrap_or_else(|| {
            lines(&if kind == Kind::Cil {
                cil_records()
            } else {
                return_records()
            })
        });
        let count = data.iter().filter(|b| **b == b'\n').count();
        let mut m = manifest(kind, &data, count, signer, now);
        tweak(&mut m);
        let manifest = mbytes(&m);
        let sig = sig(signer, signer, kind.payload_type(), &manifest);
        Parts {
            kind,
            data,
            manifest,
            sig,
            cosigs: Vec::new(),
        }
    }
    fn zip(&self) -> Vec<u8> {
        let mut entries = vec![
            ("manifest.json", self.manifest.as_slice(), How::File),
            ("manifest.sig", self.sig.as_slice(), How::File),
            (self.kind.data_entry(), self.data.as_slice(), How::File),
        ];
        for (name, bytes) in &self.cosigs {
            entries.push((name.as_str(), bytes.as_slice(), How::File));
        }
        zip_of(&entries)
    }
    /// Adds a cosignature entry `name` by `signer`, claiming `claimed`'s key ID.
    fn cosign(&mut self, name: &str, signer: &SigningKey, claimed: &SigningKey) {
        let s = sig(signer, claimed, self.kind.payload_type(), &self.manifest);
        self.cosigs.push((name.into(), s));
    }
}

/// A valid CIL record with handle `handle` (its IID derived from it), for writer
/// tests and benchmarks.
pub fn cil_record(handle: u64) -> CilRecord {
    let payload = digits_from_seed(format!("kit-record-{handle}").as_bytes(), 54);
    CilRecord {
        handle,
        installation_id: InstallationId::parse(&with_check_digits(&payload, 7))
            .expect("generated with check digits"),
        extended_product_id: ExtendedProductId::parse(
            "03612-03305-317-008912-02-1033-9200.0000-0662023",
        )
        .expect("valid"),
        activation_id: Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").expect("valid"),
        product: Some(makproxy_core::bundle::ProductName::cut(
            "Windows(R), Professional edition",
        )),
        host: None,
        channel: None,
        key_group: None,
    }
}

/// A CIL header of the kit's secure site, created at `now` and valid for 30 days.
pub fn cil_header(now: OffsetDateTime) -> Header {
    Header {
        bundle_id: BundleId::parse("0123456789abcdef0123456789abcdef").expect("32 hex digits"),
        site: "kit-site".into(),
        sequence: 1,
        created: now,
        expires: now + time::Duration::days(30),
        tool: "makproxy-testkit".into(),
        fields: vec!["handle".into(), "installation_id".into()],
        answers: None,
        backend: None,
        remaining: None,
        site_rule: None,
    }
}

/// Every kit case, built against the clock reading `now`.
/// Every kit case, built against the clock reading `now`, family by family.
pub fn cases(now: OffsetDateTime) -> Vec<Case> {
    let k = Keys::default();
    let mut out = Vec::new();
    let mut add = |name: &str, reader: Kind, expect: Option<Code>, bytes: Vec<u8>| {
        let prefix = expect.map_or("ok".to_string(), |c| c.as_str().to_string());
        out.push(Case {
            file: format!("{prefix}-{name}.zip"),
            reader,
            expect,
            bytes,
        });
    };
    let families: [Family; 7] = [
        archive_damage,
        tampering,
        closed_world,
        canonical_container,
        signers,
        signed_context,
        records,
    ];
    for family in families {
        family(&k, now, &mut add);
    }
    out
}

/// One family of kit cases: builds its bundles with the kit keys at `now` and hands
/// each to `add` (name, reader, expected code, bytes).
type Family = fn(&Keys, OffsetDateTime, &mut Add<'_>);

/// Takes one case: its name, the reader that must refuse (or accept) it, the code, the bytes.
type Add<'a> = dyn FnMut(&str, Kind, Option<Code>, Vec<u8>) + 'a;

/// The two valid bundles, and archives damaged in transport: refused as unreadable.
fn archive_damage(k: &Keys, now: OffsetDateTime, add: &mut Add<'_>) {
    let id = |_: &mut Value| {};
    let cil = Parts::new(k, Kind::Cil, now, id, None);
    let ret = Parts::new(k, Kind::Return, now, id, None);
    let (c, r) = (Kind::Cil, Kind::Return);
    add("valid-cil", c, None, cil.zip());
    add("valid-return", r, None, ret.zip());

    // Archive damage.
    let valid = cil.zip();
    add(
        "truncated-zip",
        c,
        Some(Code::BndUnreadable),
        valid[..valid.len() / 2].to_vec(),
    );
    add(
        "not-a-zip",
        c,
        Some(Code::BndUnreadable),
        b"this is not a zip archive at all, just text".to_vec(),
    );
    let mut flipped = valid.clone();
    let at = flipped
        .windows(13)
        .position(|w| w == b"records.jsonl")
        .expect("local header name")
        + 13
        + 4;
    flipped[at] ^= 0x55;
    add(
        "flipped-byte-in-compressed-records",
        c,
        Some(Code::BndUnreadable),
        flipped,
    );
}

/// Each entry changed after signing (the archive rebuilt so its CRCs are right, so only the signature or the entry hashes catch it), and each field of a signature file.
fn tampering(k: &Keys, now: OffsetDateTime, add: &mut Add<'_>) {
    let id = |_: &mut Value| {};
    let (c, r) = (Kind::Cil, Kind::Return);
    // Tampering with each entry (archive rebuilt so CRCs are right: only crypto catches it).
    let mut t = Parts::new(k, c, now, id, None);
    t.manifest = patch(t.manifest.clone(), b"kit-site", b"kit-sitf");
    add("tampered-manifest", c, Some(Code::BndSigInvalid), t.zip());
    // Verify before parse: a manifest that is not even JSON, and not re-signed, must
    // fail on its signature; a reader that parsed first would report MP-BND-030.
    let mut t = Parts::new(k, c, now, id, None);
    t.manifest = b"{ this is not json".to_vec();
    add(
        "unsigned-malformed-manifest",
        c,
        Some(Code::BndSigInvalid),
        t.zip(),
    );
    for (name, kind) in [("tampered-records", c), ("tampered-results", r)] {
        let mut t = Parts::new(k, kind, now, id, None);
        let pos = t
            .data
            .iter()
            .position(|b| b.is_ascii_digit())
            .expect("digit");
        t.data[pos] = if t.data[pos] == b'9' {
            b'8'
        } else {
            t.data[pos] + 1
        };
        add(name, kind, Some(Code::BndEntryHash), t.zip());
    }
    let mut t = Parts::new(k, c, now, id, None);
    let s: Value = serde_json::from_slice(&t.sig).expect("json");
    let mut raw = B64
        .decode(s["signature"].as_str().expect("sig"))
        .expect("b64");
    raw[10] ^= 1;
    t.sig = mbytes(
        &json!({"format": "makproxy-signature-v1", "key_id": s["key_id"], "signature": B64.encode(raw)}),
    );
    add("tampered-signature", c, Some(Code::BndSigInvalid), t.zip());
    let mut t = Parts::new(k, c, now, id, None);
    t.sig = b"{\"format\": \"makproxy-signature-v1\", \"key_id\": \"zz\"}".to_vec();
    add(
        "malformed-signature",
        c,
        Some(Code::BndSigMalformed),
        t.zip(),
    );
    // Each field of a well-formed signature file checked on its own.
    for (name, field, value) in [
        (
            "signature-of-another-format",
            "format",
            json!("makproxy-signature-v0"),
        ),
        (
            "signature-key-id-not-hex",
            "key_id",
            json!("zzzzzzzzzzzzzzzz"),
        ),
    ] {
        let mut t = Parts::new(k, c, now, id, None);
        let mut s: Value = serde_json::from_slice(&t.sig).expect("json");
        s[field] = value;
        t.sig = mbytes(&s);
        add(name, c, Some(Code::BndSigMalformed), t.zip());
    }
}

/// The closed world: extra, missing and duplicate entries (names compared without regard to case), hostile names and entry types, bombs.
fn closed_world(k: &Keys, now: OffsetDateTime, add: &mut Add<'_>) {
    let id = |_: &mut Value| {};
    let cil = Parts::new(k, Kind::Cil, now, id, None);
    let c = Kind::Cil;
    // Closed world.
    add(
        "extra-entry",
        c,
        Some(Code::BndUnexpectedEntry),
        zip_of(&[
            ("manifest.json", &cil.manifest, How::File),
            ("manifest.sig", &cil.sig, How::File),
            ("records.jsonl", &cil.data, How::File),
            ("notes.txt", b"hi", How::File),
        ]),
    );
    add(
        "missing-records",
        c,
        Some(Code::BndMissingEntry),
        zip_of(&[
            ("manifest.json", &cil.manifest, How::File),
            ("manifest.sig", &cil.sig, How::File),
        ]),
    );
    add(
        "missing-signature",
        c,
        Some(Code::BndMissingEntry),
        zip_of(&[
            ("manifest.json", &cil.manifest, How::File),
            ("records.jsonl", &cil.data, How::File),
        ]),
    );
    let dup = zip_of(&[
        ("manifest.json", &cil.manifest, How::File),
        ("manifest.sig", &cil.sig, How::File),
        ("records.jsonl", &cil.data, How::File),
        ("recordsXjsonl", b"{}\n", How::File),
    ]);
    add(
        "duplicate-entry-name",
        c,
        Some(Code::BndDuplicateEntry),
        patch(dup, b"recordsXjsonl", b"records.jsonl"),
    );
    // Names are compared without regard to case (Windows and macOS extract both to one
    // file): a second entry differing only in case is a duplicate, of either entry.
    for (name, upper) in [
        ("manifest", "MANIFEST.JSON"),
        ("data-entry", "Records.jsonl"),
    ] {
        let dup = zip_of(&[
            ("manifest.json", &cil.manifest, How::File),
            ("manifest.sig", &cil.sig, How::File),
            ("records.jsonl", &cil.data, How::File),
            (upper, b"{}\n", How::File),
        ]);
        add(
            &format!("duplicate-{name}-name-differs-in-case"),
            c,
            Some(Code::BndDuplicateEntry),
            dup,
        );
    }
    let many: Vec<(String, Vec<u8>)> = (0..9).map(|i| (format!("f{i}.txt"), vec![b'x'])).collect();
    let many_refs: Vec<(&str, &[u8], How)> = many
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), How::File))
        .collect();
    add(
        "too-many-entries",
        c,
        Some(Code::BndTooManyEntries),
        zip_of(&many_refs),
    );

    // Hostile names and entry types.
    for (name, placeholder, evil) in [
        ("dotdot-entry-name", "QQQrecords.jsonl", "../records.jsonl"),
        (
            "absolute-entry-name",
            "Qetc-records.jsonl",
            "/etc-records.jsonl",
        ),
        (
            "drive-prefix-entry-name",
            "QQrecords.jsonl",
            "C:records.jsonl",
        ),
        (
            "backslash-entry-name",
            "xQrecords.jsonl",
            "x\\records.jsonl",
        ),
        ("reserved-device-entry-name", "QQQ.jsonl", "NUL.jsonl"),
    ] {
        let z = zip_of(&[
            ("manifest.json", &cil.manifest, How::File),
            ("manifest.sig", &cil.sig, How::File),
            ("records.jsonl", &cil.data, How::File),
            (placeholder, b"{}\n", How::File),
        ]);
        add(
            name,
            c,
            Some(Code::BndPathTrick),
            patch(z, placeholder.as_bytes(), evil.as_bytes()),
        );
    }
    add(
        "symlink-entry",
        c,
        Some(Code::BndSpecialEntry),
        zip_of(&[
            ("manifest.json", &cil.manifest, How::File),
            ("manifest.sig", &cil.sig, How::File),
            ("records.jsonl", b"", How::Symlink),
        ]),
    );
    let z = zip_of(&[
        ("manifest.json", &cil.manifest, How::File),
        ("manifest.sig", &cil.sig, How::File),
        ("records.jsonlQ", b"x", How::File),
    ]);
    add(
        "directory-entry",
        c,
        Some(Code::BndSpecialEntry),
        patch(z, b"records.jsonlQ", b"records.jsonl/"),
    );
    let bomb = vec![b' '; 24 << 20];
    add(
        "zip-bomb-records",
        c,
        Some(Code::BndEntryTooLarge),
        zip_of(&[
            ("manifest.json", &cil.manifest, How::File),
            ("manifest.sig", &cil.sig, How::File),
            ("records.jsonl", &bomb, How::File),
        ]),
    );
    add(
        "encrypted-flag",
        c,
        Some(Code::BndUnsupportedZip),
        set_cd_flags(cil.zip(), 1),
    );
    // The ratio rule starts above 1 MiB: data of exactly 1 MiB compressing far beyond
    // the ratio is no bomb: it is read, and refused for what it holds (one long line).
    let mut spaces = vec![b' '; (1 << 20) - 1];
    spaces.push(b'\n');
    add(
        "exactly-1-mib-of-compressible-data-is-read-not-called-a-bomb",
        c,
        Some(Code::BndLineTooLong),
        Parts::new(k, c, now, id, Some(spaces)).zip(),
    );
    // A cosignature file is capped like the signature, from the directory, before any
    // signature is checked: one byte over the cap in a forged bundle is refused by its
    // size, not by its forgery (a reader that capped it as data would find the forgery).
    let mut t = Parts::new(k, c, now, id, None);
    t.manifest = patch(t.manifest.clone(), b"kit-site", b"kit-sitf");
    let over = vec![b' '; makproxy_core::bundle::Limits::default().max_signature as usize + 1];
    t.cosigs.push(("manifest.cosig-1".into(), over));
    add(
        "cosignature-over-the-signature-cap-in-a-forged-bundle",
        c,
        Some(Code::BndEntryTooLarge),
        t.zip(),
    );
}

/// The canonical container: every header field fixed, the entries back to back, one method per entry, the deflate stream ending exactly at its size.
fn canonical_container(k: &Keys, now: OffsetDateTime, add: &mut Add<'_>) {
    let id = |_: &mut Value| {};
    let cil = Parts::new(k, Kind::Cil, now, id, None);
    let ret = Parts::new(k, Kind::Return, now, id, None);
    let (c, r) = (Kind::Cil, Kind::Return);
    // The canonical container: anything but the entries back to back, the central
    // directory and one end record is refused, so every zip reader sees the same.
    let canon = Layout::parse(&cil.zip());
    let same = |r: Rebuild| canon.build(&r);
    assert_eq!(
        same(Rebuild::default()),
        cil.zip(),
        "Layout rebuilds the writer's bytes"
    );
    add(
        "archive-comment",
        c,
        Some(Code::BndExtraData),
        same(Rebuild {
            archive_comment: &[b'A'; 60_000],
            ..Rebuild::default()
        }),
    );
    let mut program = b"#!/bin/sh\necho 'a shell script that is also a zip'\nexit 0\n".to_vec();
    program.resize(4096, b'#');
    add(
        "program-prepended",
        c,
        Some(Code::BndLayout),
        same(Rebuild {
            prefix: &program,
            ..Rebuild::default()
        }),
    );
    add(
        "program-prepended-to-return",
        r,
        Some(Code::BndLayout),
        Layout::parse(&ret.zip()).build(&Rebuild {
            prefix: &program,
            ..Rebuild::default()
        }),
    );
    add(
        "gap-between-entries",
        c,
        Some(Code::BndLayout),
        same(Rebuild {
            gap: &[0u8; 1024],
            ..Rebuild::default()
        }),
    );
    // A whole local entry in the gap that the central directory does not list.
    let hidden = {
        let l = &canon.locals[2];
        let mut v = l.fixed.clone();
        v.extend_from_slice(&l.name);
        v.extend_from_slice(&l.extra);
        v.extend_from_slice(&l.data);
        v
    };
    add(
        "hidden-local-entry",
        c,
        Some(Code::BndLayout),
        same(Rebuild {
            gap: &hidden,
            ..Rebuild::default()
        }),
    );
    add("second-end-record", c, Some(Code::BndLayout), {
        let z = cil.zip();
        let eocd = z[z.len() - 22..].to_vec();
        same(Rebuild {
            trailing: &eocd,
            ..Rebuild::default()
        })
    });
    let mut with = |name: &str, expect: Code, change: &dyn Fn(&mut Layout)| {
        let mut l = Layout::parse(&cil.zip());
        change(&mut l);
        add(name, c, Some(expect), l.build(&Rebuild::default()));
    };
    with("local-extra-field", Code::BndExtraData, &|l| {
        // An extended-timestamp field (0x5455), as many zip tools add.
        l.locals[0].extra = vec![0x55, 0x54, 5, 0, 1, 0, 0, 0, 0];
    });
    with("entry-comment", Code::BndExtraData, &|l| {
        l.central[0].comment = b"untrusted comment".to_vec();
    });
    with("zip64-extra-field", Code::BndExtraData, &|l| {
        let size = (l.locals[0].data.len() as u64).to_le_bytes();
        let mut x = vec![0x01, 0x00, 8, 0];
        x.extend_from_slice(&size);
        l.central[0].extra = x;
    });
    with("local-name-differs", Code::BndLocalHeader, &|l| {
        l.locals[0].name = b"manifest.jsom".to_vec();
    });
    // Every byte is signed or fixed (security.md): each header field the format fixes,
    // changed in both headers so they still agree, is refused as such.
    fn set16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    with("header-version-made-by-dos", Code::BndHeaderField, &|l| {
        set16(&mut l.central[0].fixed, 4, 0x0014)
    });
    with("header-version-needed", Code::BndHeaderField, &|l| {
        set16(&mut l.central[0].fixed, 6, 45);
        set16(&mut l.locals[0].fixed, 4, 45);
    });
    with("header-modification-time", Code::BndHeaderField, &|l| {
        for (f, t) in [(&mut l.central[1].fixed, 12), (&mut l.locals[1].fixed, 10)] {
            set16(f, t, 0x6000);
            set16(f, t + 2, 0x5b81);
        }
    });
    with("header-local-time-only", Code::BndLocalHeader, &|l| {
        set16(&mut l.locals[1].fixed, 10, 0x6000)
    });
    with("header-utf8-flag", Code::BndHeaderField, &|l| {
        set16(&mut l.central[0].fixed, 8, 0x0800);
        set16(&mut l.locals[0].fixed, 6, 0x0800);
    });
    with("header-disk-start", Code::BndHeaderField, &|l| {
        set16(&mut l.central[2].fixed, 34, 1)
    });
    with(
        "header-internal-attributes-text",
        Code::BndHeaderField,
        &|l| set16(&mut l.central[2].fixed, 36, 1),
    );
    with(
        "header-external-attributes-executable",
        Code::BndHeaderField,
        &|l| set32(&mut l.central[1].fixed, 38, 0o100755 << 16),
    );
    with(
        "header-external-attributes-dos-archive-bit",
        Code::BndHeaderField,
        &|l| set32(&mut l.central[1].fixed, 38, 0x20),
    );
    // Each compression method other than stored and deflate, on the manifest.
    for (m, label) in [
        (1, "shrunk"),
        (6, "imploded"),
        (9, "deflate64"),
        (12, "bzip2"),
        (14, "lzma"),
        (93, "zstd"),
        (95, "xz"),
        (98, "ppmd"),
        (99, "aes"),
    ] {
        with(
            &format!("method-{m}-{label}"),
            Code::BndUnsupportedZip,
            &|l| {
                set16(&mut l.central[0].fixed, 10, m);
                set16(&mut l.locals[0].fixed, 8, m);
            },
        );
    }
    // Stored and deflate, but not the entry's own one.
    let records = cil.data.clone();
    with("stored-data-entry", Code::BndHeaderField, &|l| {
        let n = records.len() as u32;
        l.locals[2].data = records.clone();
        for (f, base) in [(&mut l.central[2].fixed, 2), (&mut l.locals[2].fixed, 0)] {
            set16(f, base + 8, 0); // method
            set32(f, base + 18, n); // compressed size
        }
        set16(&mut l.central[2].fixed, 4, 0x030A);
        set16(&mut l.central[2].fixed, 6, 10);
        set16(&mut l.locals[2].fixed, 4, 10);
    });
    let manifest_bytes = cil.manifest.clone();
    with("deflated-manifest", Code::BndHeaderField, &|l| {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&manifest_bytes).expect("deflate");
        let z = e.finish().expect("deflate");
        let n = z.len() as u32;
        l.locals[0].data = z;
        for (f, base) in [(&mut l.central[0].fixed, 2), (&mut l.locals[0].fixed, 0)] {
            set16(f, base + 8, 8);
            set32(f, base + 18, n);
        }
        set16(&mut l.central[0].fixed, 4, 0x0314);
        set16(&mut l.central[0].fixed, 6, 20);
        set16(&mut l.locals[0].fixed, 4, 20);
    });
    // The deflate stream must end exactly at the compressed size: 64 KiB hidden after
    // its end (inside the declared size, CRC and uncompressed size unchanged), and a
    // stream cut before its final block.
    let resize = |l: &mut Layout, data: Vec<u8>| {
        let n = data.len() as u32;
        l.locals[2].data = data;
        set32(&mut l.central[2].fixed, 20, n);
        set32(&mut l.locals[2].fixed, 18, n);
    };
    with("data-after-deflate-stream", Code::BndDeflateEnd, &|l| {
        let mut d = l.locals[2].data.clone();
        d.extend(std::iter::repeat_n(0x55, 64 * 1024));
        resize(l, d);
    });
    with("deflate-stream-cut-short", Code::BndDeflateEnd, &|l| {
        let d = l.locals[2].data.clone();
        resize(l, d[..d.len() - 2].to_vec());
    });
    with("data-descriptor-flag", Code::BndUnsupportedZip, &|l| {
        for f in [&mut l.locals[0].fixed[6..8], &mut l.central[0].fixed[8..10]] {
            f.copy_from_slice(&0x0008u16.to_le_bytes());
        }
    });
}

/// Keys and kinds: who signed, retirement, cosignatures and the two-person rule, strict verification.
fn signers(k: &Keys, now: OffsetDateTime, add: &mut Add<'_>) {
    let id = |_: &mut Value| {};
    let cil = Parts::new(k, Kind::Cil, now, id, None);
    let ret = Parts::new(k, Kind::Return, now, id, None);
    let (c, r) = (Kind::Cil, Kind::Return);
    // Keys and kinds.
    let mut t = Parts::new(
        k,
        c,
        now,
        |m| m["signer_key_id"] = json!(key_id(&Keys::default().stranger.verifying_key())),
        None,
    );
    t.sig = sig(
        &k.stranger,
        &k.stranger,
        Kind::Cil.payload_type(),
        &t.manifest,
    );
    add("untrusted-key", c, Some(Code::BndUntrustedKey), t.zip());
    // Signed by the secure side's previous key: refused after its retirement, verified
    // before it.
    let old_id = key_id(&k.secure_old.verifying_key());
    let mut t = Parts::new(k, c, now, |m| m["signer_key_id"] = json!(old_id), None);
    t.sig = sig(
        &k.secure_old,
        &k.secure_old,
        Kind::Cil.payload_type(),
        &t.manifest,
    );
    add(
        "signed-by-retired-key-after-retirement",
        c,
        Some(Code::BndRetiredKey),
        t.zip(),
    );
    let mut t = Parts::new(
        k,
        c,
        now,
        |m| {
            m["signer_key_id"] = json!(old_id);
            m["created"] = json!(ts(now - time::Duration::hours(3)));
        },
        None,
    );
    t.sig = sig(
        &k.secure_old,
        &k.secure_old,
        Kind::Cil.payload_type(),
        &t.manifest,
    );
    add("signed-by-retired-key-before-retirement", c, None, t.zip());
    // Created at the very second of the retirement: still the old key's (a pack in the
    // same second as `key rotate`), so the rule is "after", not "at or after".
    let mut t = Parts::new(
        k,
        c,
        now,
        |m| {
            m["signer_key_id"] = json!(old_id);
            m["created"] = json!(ts(retired_at(now)));
        },
        None,
    );
    t.sig = sig(
        &k.secure_old,
        &k.secure_old,
        Kind::Cil.payload_type(),
        &t.manifest,
    );
    add("signed-by-retired-key-at-its-retirement", c, None, t.zip());
    // Cosigned (two-person rule): each signature by a distinct pinned key of the site.
    let mut t = Parts::new(k, c, now, id, None);
    t.cosign("manifest.cosig-1", &k.colleague, &k.colleague);
    add("cosigned-cil", c, None, t.zip());
    let mut t = Parts::new(k, c, now, id, None);
    t.cosign("manifest.cosig-1", &k.secure, &k.secure);
    add(
        "cosigned-twice-by-one-key",
        c,
        Some(Code::BndDuplicateSigner),
        t.zip(),
    );
    // One signer counts once (TUF: a rotated-out key leaves the role): the retired key
    // and its successor are one identity, in either order.
    // Made before the retirement, so the retired key's signature itself is good.
    let before_retirement =
        |m: &mut Value| m["created"] = json!(ts(now - time::Duration::hours(3)));
    let mut t = Parts::new(
        k,
        c,
        now,
        |m| {
            before_retirement(m);
            m["signer_key_id"] = json!(old_id);
        },
        None,
    );
    t.sig = sig(&k.secure_old, &k.secure_old, c.payload_type(), &t.manifest);
    t.cosign("manifest.cosig-1", &k.secure, &k.secure);
    add(
        "cosigned-by-successor-of-signer",
        c,
        Some(Code::BndSameSigner),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, before_retirement, None);
    t.cosign("manifest.cosig-1", &k.secure_old, &k.secure_old);
    add(
        "cosigned-by-retired-key-of-signer",
        c,
        Some(Code::BndSameSigner),
        t.zip(),
    );
    // A colleague and then the signer's retired key: the second cosignature repeats the
    // first signer, whichever entry comes first.
    let mut t = Parts::new(k, c, now, before_retirement, None);
    t.cosign("manifest.cosig-1", &k.colleague, &k.colleague);
    t.cosign("manifest.cosig-2", &k.secure_old, &k.secure_old);
    add(
        "cosigned-by-colleague-then-retired-key-of-signer",
        c,
        Some(Code::BndSameSigner),
        t.zip(),
    );
    // A pinned key of another site (a second site on the same gateway) never counts.
    let mut t = Parts::new(k, c, now, id, None);
    t.cosign("manifest.cosig-1", &k.other_site, &k.other_site);
    add(
        "cosigned-by-key-of-another-site",
        c,
        Some(Code::BndSiteMismatch),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, id, None);
    t.cosign("manifest.cosig-1", &k.stranger, &k.stranger);
    add(
        "cosigned-by-untrusted-key",
        c,
        Some(Code::BndUntrustedKey),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, id, None);
    t.cosign("manifest.cosig-1", &k.stranger, &k.colleague);
    add(
        "cosignature-does-not-verify",
        c,
        Some(Code::BndSigInvalid),
        t.zip(),
    );
    // Signature files are not signed, so they have one serialisation: padding and an
    // escaped character parse to the same values and are refused.
    let mut t = Parts::new(k, c, now, id, None);
    t.sig = patch(t.sig.clone(), b"\n}", b" }");
    add(
        "signature-file-padded",
        c,
        Some(Code::BndSigMalformed),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, id, None);
    t.sig = {
        let text = String::from_utf8(t.sig.clone()).expect("utf-8");
        text.replace("makproxy-signature-v1", "m\\u0061kproxy-signature-v1")
            .into_bytes()
    };
    add(
        "signature-file-escaped-character",
        c,
        Some(Code::BndSigMalformed),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, id, None);
    t.cosign("manifest.cosig-1", &k.colleague, &k.colleague);
    t.cosigs[0].1.splice(0..0, *b" ");
    add(
        "cosignature-file-padded",
        c,
        Some(Code::BndSigMalformed),
        t.zip(),
    );
    // Strict verification: R of small order, which plain verification accepts.
    let mut t = Parts::new(k, c, now, id, None);
    let weak = small_order_r_signature(&k.secure, &pae(c.payload_type(), &t.manifest));
    t.sig = sig_file(&k.secure, &weak);
    add(
        "signature-with-small-order-r",
        c,
        Some(Code::BndSigInvalid),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, id, None);
    let weak = small_order_r_signature(&k.colleague, &pae(c.payload_type(), &t.manifest));
    t.cosigs
        .push(("manifest.cosig-1".into(), sig_file(&k.colleague, &weak)));
    add(
        "cosignature-with-small-order-r",
        c,
        Some(Code::BndSigInvalid),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, id, None);
    t.cosign("manifest.cosig-6", &k.colleague, &k.colleague);
    add(
        "sixth-cosignature-name",
        c,
        Some(Code::BndUnexpectedEntry),
        t.zip(),
    );
    let mut t = Parts::new(k, c, now, id, None);
    t.sig = sig(
        &k.stranger,
        &k.secure,
        Kind::Cil.payload_type(),
        &t.manifest,
    );
    add(
        "wrong-key-claims-trusted-key-id",
        c,
        Some(Code::BndSigInvalid),
        t.zip(),
    );
    add(
        "request-passed-off-as-return",
        r,
        Some(Code::BndWrongKind),
        cil.zip(),
    );
    add(
        "return-passed-off-as-request",
        c,
        Some(Code::BndWrongKind),
        ret.zip(),
    );
    let mut t = Parts::new(k, r, now, id, None);
    t.sig = sig(&k.online, &k.online, Kind::Cil.payload_type(), &t.manifest);
    add(
        "return-signed-with-request-type",
        r,
        Some(Code::BndWrongKind),
        t.zip(),
    );
}

/// The signed context: expiry, format versions, the gateway's rule, manifest fields.
fn signed_context(k: &Keys, now: OffsetDateTime, add: &mut Add<'_>) {
    let id = |_: &mut Value| {};
    let (c, r) = (Kind::Cil, Kind::Return);
    // Signed context.
    add(
        "expired",
        c,
        Some(Code::BndExpired),
        Parts::new(
            k,
            c,
            now,
            |m| {
                m["created"] = json!(ts(now - time::Duration::days(60)));
                m["expires"] = json!(ts(now - time::Duration::days(30)));
            },
            None,
        )
        .zip(),
    );
    add(
        "created-in-future",
        c,
        Some(Code::BndNotYetValid),
        Parts::new(
            k,
            c,
            now,
            |m| {
                m["created"] = json!(ts(now + time::Duration::days(1)));
                m["expires"] = json!(ts(now + time::Duration::days(31)));
            },
            None,
        )
        .zip(),
    );
    add(
        "unknown-manifest-field",
        c,
        Some(Code::BndUnknownField),
        Parts::new(k, c, now, |m| m["comment"] = json!("trust me"), None).zip(),
    );
    add(
        "bad-version",
        c,
        Some(Code::BndVersion),
        Parts::new(
            k,
            c,
            now,
            |m| m["version"] = json!(makproxy_core::bundle::VERSION + 1),
            None,
        )
        .zip(),
    );
    // Format version 1 is still read for requests (unchanged), never for returns
    // (version 2 added each record's backend).
    add(
        "return-of-version-1",
        r,
        Some(Code::BndVersion),
        Parts::new(k, r, now, |m| m["version"] = json!(1), None).zip(),
    );
    add(
        "cil-of-version-1",
        c,
        None,
        Parts::new(k, c, now, |m| m["version"] = json!(1), None).zip(),
    );
    add(
        "declared-size-mismatch",
        c,
        Some(Code::BndEntrySize),
        Parts::new(
            k,
            c,
            now,
            |m| {
                let n = m["entries"][0]["size"].as_u64().unwrap_or(0);
                m["entries"][0]["size"] = json!(n + 1);
            },
            None,
        )
        .zip(),
    );
    add(
        "site-of-another-trusted-key",
        c,
        Some(Code::BndSiteMismatch),
        Parts::new(k, c, now, |m| m["site"] = json!("kit-other-site"), None).zip(),
    );
    // A gateway's rule (format version 4): returns only; a count of 1 or more, each
    // signer a trust name and a real key, none twice.
    let signer = serde_json::to_value(makproxy_core::bundle::RuleSigner::new(
        "kit-colleague",
        &k.secure.verifying_key(),
    ))
    .expect("serialisable");
    add(
        "site-rule-in-request",
        c,
        Some(Code::BndInconsistent),
        Parts::new(
            k,
            c,
            now,
            |m| m["site_rule"] = json!({"signatures_required": 2, "signers": []}),
            None,
        )
        .zip(),
    );
    add(
        "valid-return-with-site-rule",
        r,
        None,
        Parts::new(
            k,
            r,
            now,
            |m| m["site_rule"] = json!({"signatures_required": 2, "signers": [signer.clone()]}),
            None,
        )
        .zip(),
    );
    // The bounds exactly: 64 signers, 64 required is a rule; one more of either is not;
    // a rule in a return of version 3 is not either.
    let signers = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                serde_json::to_value(makproxy_core::bundle::RuleSigner::new(
                    &format!("kit-signer-{i}"),
                    &key(&format!("rule-signer-{i}")).verifying_key(),
                ))
                .expect("serialisable")
            })
            .collect()
    };
    let (s64, s65) = (signers(64), signers(65));
    add(
        "valid-return-with-64-signers-requiring-64",
        r,
        None,
        Parts::new(
            k,
            r,
            now,
            |m| m["site_rule"] = json!({"signatures_required": 64, "signers": s64}),
            None,
        )
        .zip(),
    );
    add(
        "site-rule-in-version-3-return",
        r,
        Some(Code::BndInconsistent),
        Parts::new(
            k,
            r,
            now,
            |m| {
                m["version"] = json!(3);
                m["site_rule"] = json!({"signatures_required": 2, "signers": []});
            },
            None,
        )
        .zip(),
    );
    for (name, rule) in [
        (
            "site-rule-65-signers",
            json!({"signatures_required": 2, "signers": s65}),
        ),
        (
            "site-rule-requiring-65",
            json!({"signatures_required": 65, "signers": [signer.clone()]}),
        ),
        (
            "site-rule-requiring-none",
            json!({"signatures_required": 0, "signers": [signer.clone()]}),
        ),
        (
            "site-rule-signer-twice",
            json!({"signatures_required": 2, "signers": [signer.clone(), signer.clone()]}),
        ),
        (
            "site-rule-key-not-a-key",
            json!({"signatures_required": 2, "signers": [{"name": "x", "key": "AAAA"}]}),
        ),
        (
            "site-rule-name-a-path",
            json!({"signatures_required": 2, "signers": [{"name": "../x", "key": signer["key"]}]}),
        ),
    ] {
        add(
            name,
            r,
            Some(Code::BndInconsistent),
            Parts::new(k, r, now, move |m| m["site_rule"] = rule.clone(), None).zip(),
        );
    }
    // A bundle ID is the ledger's and the journal's key: upper case (a second spelling
    // of the same ID) or short does not even parse, signed or not.
    for (name, kind, at) in [
        ("bundle-id-upper-case", c, "/bundle_id"),
        ("bundle-id-short", c, "/bundle_id"),
        ("answered-bundle-id-upper-case", r, "/answers/bundle_id"),
    ] {
        let bad = if name.contains("short") {
            "0123456789abcdef0123456789abcde"
        } else {
            "0123456789ABCDEF0123456789ABCDEF"
        };
        add(
            name,
            kind,
            Some(Code::BndManifestSyntax),
            Parts::new(
                k,
                kind,
                now,
                move |m| *m.pointer_mut(at).expect("present") = json!(bad),
                None,
            )
            .zip(),
        );
    }
    add("answers-block-in-request", c, Some(Code::BndInconsistent), Parts::new(k, c, now, |m| m["answers"] = json!({"bundle_id": "00000000000000000000000000000000", "manifest_sha256": "0000000000000000000000000000000000000000000000000000000000000000", "site": "x", "sequence": 1}), None).zip());
    let mut t = Parts::new(k, c, now, id, None);
    let text = String::from_utf8(t.manifest.clone())
        .expect("utf8")
        .replacen(
            "\"site\": \"kit-site\",",
            "\"site\": \"kit-site\",\n  \"site\": \"evil-site\",",
            1,
        );
    t.manifest = text.into_bytes();
    t.sig = sig(&k.secure, &k.secure, Kind::Cil.payload_type(), &t.manifest);
    add(
        "duplicate-manifest-key",
        c,
        Some(Code::BndDuplicateKey),
        t.zip(),
    );

    for (name, extra) in [
        ("manifest-trailing-data", &b"{}"[..]),
        ("manifest-not-utf8", &b"\xff\xfe"[..]),
    ] {
        let mut t = Parts::new(k, c, now, id, None);
        t.manifest.extend_from_slice(extra);
        t.sig = sig(&k.secure, &k.secure, Kind::Cil.payload_type(), &t.manifest);
        add(name, c, Some(Code::BndManifestSyntax), t.zip());
    }
}

/// Records, caught while the verified data is parsed.
fn records(k: &Keys, now: OffsetDateTime, add: &mut Add<'_>) {
    let id = |_: &mut Value| {};
    let (c, r) = (Kind::Cil, Kind::Return);
    // Records (caught while parsing the verified data).
    let mut recs = cil_records();
    recs[1]["host_name"] = json!("PC-1");
    add(
        "unknown-record-field",
        c,
        Some(Code::BndUnknownField),
        Parts::new(k, c, now, id, Some(lines(&recs))).zip(),
    );
    let mut data = lines(&cil_records());
    let first_end = data.iter().position(|b| *b == b'\n').expect("line");
    data.splice(first_end - 1..first_end - 1, b",\"handle\":1".to_vec());
    add(
        "duplicate-record-key",
        c,
        Some(Code::BndDuplicateKey),
        Parts::new(k, c, now, id, Some(data)).zip(),
    );
    let mut recs = cil_records();
    let bad = iid(2).replacen(
        &iid(2)[..7],
        &format!("{}{}", &iid(2)[..6], (iid(2).as_bytes()[6] - b'0' + 1) % 10),
        1,
    );
    recs[1]["installation_id"] = json!(bad);
    add(
        "bad-check-digit-record",
        c,
        Some(Code::BndRecord),
        Parts::new(k, c, now, id, Some(lines(&recs))).zip(),
    );
    // Key groups (format version 4): a positive number; 0 is no group.
    let mut recs = cil_records();
    recs[0]["key_group"] = json!(1);
    recs[1]["key_group"] = json!(1);
    recs[2]["key_group"] = json!(2);
    add(
        "valid-cil-with-key-groups",
        c,
        None,
        Parts::new(k, c, now, id, Some(lines(&recs))).zip(),
    );
    recs[2]["key_group"] = json!(0);
    add(
        "key-group-zero",
        c,
        Some(Code::BndRecord),
        Parts::new(k, c, now, id, Some(lines(&recs))).zip(),
    );
    let mut recs = cil_records();
    recs.swap(0, 1);
    add(
        "handles-out-of-order",
        c,
        Some(Code::BndRecordOrder),
        Parts::new(k, c, now, id, Some(lines(&recs))).zip(),
    );
    add(
        "record-count-mismatch",
        c,
        Some(Code::BndRecordCount),
        Parts::new(k, c, now, |m| m["records"] = json!(4), None).zip(),
    );
    let mut recs = cil_records();
    recs[2]["product"] = json!("x".repeat(20_000));
    add(
        "overlong-record-line",
        c,
        Some(Code::BndLineTooLong),
        Parts::new(k, c, now, id, Some(lines(&recs))).zip(),
    );
    // A return's handles only rise (records may be left out, never repeated).
    let mut recs = return_records();
    recs[1]["handle"] = recs[0]["handle"].clone();
    add(
        "return-handle-repeated",
        r,
        Some(Code::BndRecordOrder),
        Parts::new(k, r, now, id, Some(lines(&recs))).zip(),
    );
    // A simulated CID under a backend that spends activations: the record says
    // "simulated", its backend says "real": refused, neither is believed.
    let mut recs = return_records();
    recs[0]["simulated"] = json!(true);
    add(
        "return-record-simulated-under-a-real-backend",
        r,
        Some(Code::BndRecord),
        Parts::new(k, r, now, id, Some(lines(&recs))).zip(),
    );
    let mut recs = return_records();
    recs[0]["failure"] = json!({"code": "MP-BKD-001", "message": "both"});
    add(
        "result-with-cid-and-failure",
        r,
        Some(Code::BndRecord),
        Parts::new(k, r, now, id, Some(lines(&recs))).zip(),
    );
}

/// What each fuzz target does with one input (fuzz/fuzz_targets call these), so the
/// committed corpora can be replayed by an ordinary test (tests/corpus.rs) in CI.
pub mod fuzz {
    use makproxy_core::bundle::{self, CilRecord, Kind, Limits, ReturnRecord};
    use makproxy_core::ids::{
        ApplicationId, ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId,
    };
    use makproxy_core::records::{decode_text, parse, Parsed};
    use std::io::Write;

    /// Any bytes as a bundle of either kind: open, verify, read every record.
    pub fn bundle_reader(data: &[u8]) {
        let keys = super::Keys::default();
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(data).expect("write");
        let now = time::macros::datetime!(2026-11-22 00:00 UTC);
        let limits = Limits {
            max_archive: 1 << 20,
            max_data: 4 << 20,
            ..Limits::default()
        };
        for kind in [Kind::Cil, Kind::Return] {
            if let Ok(mut v) = bundle::open(f.path(), kind, &keys.trusted(kind, now), now, &limits)
            {
                let _ = match kind {
                    Kind::Cil => v.records(|_: CilRecord| Ok::<(), bundle::BundleError>(())),
                    Kind::Return => v.records(|_: ReturnRecord| Ok::<(), bundle::BundleError>(())),
                };
            }
        }
    }

    /// Any text as every identifier: whatever parses must print back to itself.
    pub fn ids(data: &[u8]) {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(i) = InstallationId::parse(s) {
            assert_eq!(InstallationId::parse(&i.to_string()).ok(), Some(i.clone()));
            assert_eq!(InstallationId::parse(i.digits()).ok(), Some(i));
        }
        if let Ok(c) = ConfirmationId::parse(s) {
            assert_eq!(ConfirmationId::parse(&c.to_string()).ok(), Some(c));
        }
        if let Ok(g) = Guid::parse(s) {
            assert_eq!(Guid::parse(g.as_str()).ok(), Some(g));
        }
        if let Ok(h) = HostName::parse(s) {
            assert_eq!(HostName::parse(h.as_str()).ok(), Some(h));
        }
        let _ = ExtendedProductId::parse(s);
        let _ = ApplicationId::parse(s);
    }

    /// Any bytes as a key statement (`trust accept`, `key rotate`'s output).
    pub fn statement(data: &[u8]) {
        if let Ok(c) = makproxy_core::statement::check(data) {
            // Whatever verifies must name what it retires and what replaces it.
            let _ = format!("{c:?}");
        }
    }

    /// Any bytes as a secret key file of either side, with no passphrase at hand (so
    /// an encrypted file stops before its KDF: the parameters are what is checked).
    pub fn secret_key(data: &[u8]) {
        for role in [
            makproxy_core::keys::Role::Secure,
            makproxy_core::keys::Role::Online,
        ] {
            let _ = makproxy_core::secret::open(data, role, || None);
        }
        let _ = makproxy_core::secret::is_encrypted(data);
    }

    /// Any bytes as a home's `trust/quorum.json`.
    pub fn quorum(data: &[u8]) {
        use makproxy_core::home::Home;
        use makproxy_core::keys::Role;
        static HOME: std::sync::OnceLock<(tempfile::TempDir, Home)> = std::sync::OnceLock::new();
        let (_, home) = HOME.get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let (home, _) = Home::init(dir.path(), Role::Online, "fuzz", None).expect("init");
            (dir, home)
        });
        let p = home.dir.join("trust").join("quorum.json");
        std::fs::create_dir_all(p.parent().expect("a folder")).expect("trust folder");
        std::fs::write(&p, data).expect("write");
        if let Ok(q) = home.quorum() {
            assert!(
                q.values().all(|k| *k >= 1),
                "a quorum of 0 was accepted: {q:?}"
            );
        }
    }

    /// Any bytes as a cosignature entry of an otherwise valid CIL bundle, read by a
    /// gateway that pins both operators of the site.
    pub fn cosignature(data: &[u8]) {
        let keys = super::Keys::default();
        let now = time::macros::datetime!(2026-11-22 00:00 UTC);
        let mut t = super::Parts::new(&keys, Kind::Cil, now, |_| {}, None);
        t.cosigs.push(("manifest.cosig-1".into(), data.to_vec()));
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(&t.zip()).expect("write");
        if let Ok(v) = bundle::open(
            f.path(),
            Kind::Cil,
            &keys.trusted(Kind::Cil, now),
            now,
            &Limits::default(),
        ) {
            // A cosignature that verifies is the colleague's (the only other pinned key
            // of the site) and never a second count of the signer.
            assert!(v.cosigners.len() <= 1, "{:?}", v.cosigners);
        }
    }

    /// Valid inputs to start `target`'s corpus from (the fuzzer mutates what passes).
    pub fn seeds(target: &str) -> Vec<Vec<u8>> {
        let keys = super::Keys::default();
        match target {
            "cosignature" => {
                let now = time::macros::datetime!(2026-11-22 00:00 UTC);
                let mut t = super::Parts::new(&keys, Kind::Cil, now, |_| {}, None);
                t.cosign("manifest.cosig-1", &keys.colleague, &keys.colleague);
                let good = t.cosigs.remove(0).1;
                let own = super::sig(
                    &keys.secure,
                    &keys.secure,
                    Kind::Cil.payload_type(),
                    &t.manifest,
                );
                vec![good, own]
            }
            "secret_key" => {
                let seed = [7u8; 32];
                let mut out = Vec::new();
                for role in [
                    makproxy_core::keys::Role::Secure,
                    makproxy_core::keys::Role::Online,
                ] {
                    out.push(makproxy_core::secret::seal(&seed, role, None));
                }
                out
            }
            "quorum" => vec![
                br#"{"format":"makproxy-quorum","version":1,"sites":{"plant-a":2}}"#.to_vec(),
                br#"{"format":"makproxy-quorum","version":1,"sites":{}}"#.to_vec(),
            ],
            _ => Vec::new(),
        }
    }

    /// Any bytes as a drop-folder file.
    pub fn machine_records(data: &[u8]) {
        if let Ok(text) = decode_text(data) {
            if let Ok((_, Parsed::Products(list))) = parse(&text, "FUZZ-HOST") {
                for p in list.into_iter().flatten() {
                    let _ = p.skip(makproxy_core::channel::Policy::default());
                }
            }
        }
    }
}
