//! Key statements: a side's signed word that its key is replaced (rotation, naming the
//! successor) or retired (revocation, no successor). A statement is a DSSE envelope
//! (`payloadType`, base64 `payload`, `signatures`) over a strict JSON payload; a
//! rotation is signed by the old key and by the new one, a revocation by the old key.
//! [`check`] verifies one on its own; whether it may be applied (the old key pinned, not
//! applied before, in order) is the trusting home's business (`Home::trust_accept`).
//! docs/keys.md has the format.

use crate::keys::{key_id, PublicKey, Role, SigningKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;
use time::OffsetDateTime;

/// The DSSE payload type of a key statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.makproxy.key-statement+json; version=1";
/// Largest statement file read.
pub const MAX_STATEMENT: u64 = 16 * 1024;
/// Longest reason, in bytes.
pub const MAX_REASON: usize = 256;

/// What a statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// The key is replaced by the successor named in the statement.
    Rotate,
    /// The key is retired without a successor.
    Revoke,
}

/// The signed payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    format: String,
    version: u32,
    kind: StatementKind,
    role: Role,
    site: String,
    /// The key the statement is about (base64 of 32 bytes).
    key: String,
    /// Rotation only: the successor's public key file, base64 of its exact bytes
    /// (self-signed, so the receiving side pins it as received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    successor: Option<String>,
    reason: String,
    /// When the key stopped signing (RFC 3339 UTC); bundles it signed later are refused.
    at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<EnvelopeSig>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSig {
    keyid: String,
    sig: String,
}

/// A statement that verified on its own.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Rotation or revocation.
    pub kind: StatementKind,
    /// Whose key.
    pub role: Role,
    /// The site it belongs to.
    pub site: String,
    /// The key it retires.
    pub key: VerifyingKey,
    /// Rotation: the successor, and its public key file's exact bytes.
    pub successor: Option<(PublicKey, Vec<u8>)>,
    /// Why.
    pub reason: String,
    /// When the key stopped signing.
    pub at: OffsetDateTime,
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StatementError(pub String);

fn bad(s: impl Into<String>) -> StatementError {
    StatementError(s.into())
}

/// Writes a statement retiring `old` at `at`: a rotation to `new` (whose public key file
/// is `new_file`), signed by both, or (no successor) a revocation signed by `old`.
pub fn make(
    role: Role,
    site: &str,
    old: &SigningKey,
    successor: Option<(&SigningKey, &[u8])>,
    reason: &str,
    at: OffsetDateTime,
) -> Vec<u8> {
    let payload = Payload {
        format: "makproxy-key-statement".into(),
        version: 1,
        kind: if successor.is_some() {
            StatementKind::Rotate
        } else {
            StatementKind::Revoke
        },
        role,
        site: site.into(),
        key: B64.encode(old.verifying_key().as_bytes()),
        successor: successor.map(|(_, file)| B64.encode(file)),
        reason: crate::bundle::truncate_utf8(reason, MAX_REASON).to_string(),
        at: crate::bundle::rfc3339(at),
    };
    let body = serde_json::to_vec(&payload).expect("serialisable");
    let pae = crate::bundle::pae(PAYLOAD_TYPE, &body);
    let mut signatures = vec![EnvelopeSig {
        keyid: key_id(&old.verifying_key()),
        sig: B64.encode(old.sign(&pae).to_bytes()),
    }];
    if let Some((new, _)) = successor {
        signatures.push(EnvelopeSig {
            keyid: key_id(&new.verifying_key()),
            sig: B64.encode(new.sign(&pae).to_bytes()),
        });
    }
    let mut out = serde_json::to_vec_pretty(&Envelope {
        payload_type: PAYLOAD_TYPE.into(),
        payload: B64.encode(&body),
        signatures,
    })
    .expect("serialisable");
    out.push(b'\n');
    out
}

fn verify(
    pae: &[u8],
    key: &VerifyingKey,
    sigs: &[EnvelopeSig],
    who: &str,
) -> Result<(), StatementError> {
    let id = key_id(key);
    let s = sigs
        .iter()
        .find(|s| s.keyid == id)
        .ok_or_else(|| bad(format!("not signed by the {who} key ({id})")))?;
    let raw: [u8; 64] = B64
        .decode(&s.sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("a signature is not 64 bytes of base64"))?;
    key.verify_strict(pae, &Signature::from_bytes(&raw))
        .map_err(|_| bad(format!("the {who} key's signature does not verify")))
}

/// Verifies a statement on its own: strict envelope and payload, the signatures its
/// kind needs and no others, a successor that is a self-signed key of the same role and
/// site and not the old key.
pub fn check(bytes: &[u8]) -> Result<Checked, StatementError> {
    if bytes.len() as u64 > MAX_STATEMENT {
        return Err(bad("larger than a key statement can be"));
    }
    let env: Envelope = crate::records::parse_json_strict(
        std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?,
    )
    .map_err(|e| bad(e.detail))
    .and_then(|v| serde_json::from_value(v).map_err(|e| bad(e.to_string())))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(bad(format!(
            "payload type {:?} is not a key statement",
            crate::sanitize::escape(&env.payload_type)
        )));
    }
    let body = B64
        .decode(&env.payload)
        .map_err(|_| bad("payload is not base64"))?;
    let p: Payload = crate::records::parse_json_strict(
        std::str::from_utf8(&body).map_err(|_| bad("payload is not UTF-8"))?,
    )
    .map_err(|e| bad(e.detail))
    .and_then(|v| serde_json::from_value(v).map_err(|e| bad(e.to_string())))?;
    if p.format != "makproxy-key-statement" || p.version != 1 {
        return Err(bad("unsupported statement format or version"));
    }
    crate::keys::valid_site(&p.site).map_err(|_| bad("invalid site name"))?;
    if p.reason.len() > MAX_REASON {
        return Err(bad("reason is longer than 256 bytes"));
    }
    let at = time::OffsetDateTime::parse(&p.at, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad("`at` is not an RFC 3339 time"))?;
    let raw: [u8; 32] = B64
        .decode(&p.key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("key is not 32 bytes of base64"))?;
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("key is not an ed25519 key"))?;
    let pae = crate::bundle::pae(PAYLOAD_TYPE, &body);
    let mut ids: Vec<&str> = env.signatures.iter().map(|s| s.keyid.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != env.signatures.len() {
        return Err(bad("two signatures name the same key"));
    }
    verify(&pae, &key, &env.signatures, "retired")?;
    let successor = match (p.kind, &p.successor) {
        (StatementKind::Revoke, None) => {
            if env.signatures.len() != 1 {
                return Err(bad(
                    "a revocation carries exactly the retired key's signature",
                ));
            }
            None
        }
        (StatementKind::Rotate, Some(file)) => {
            let file = B64
                .decode(file)
                .map_err(|_| bad("successor is not base64"))?;
            let next = PublicKey::from_file_bytes(Path::new("successor"), &file, true)
                .map_err(|e| bad(format!("successor: {e}")))?;
            if next.role != p.role || next.site != p.site {
                return Err(bad("the successor belongs to another role or site"));
            }
            if next.key == key {
                return Err(bad("the successor is the retired key itself"));
            }
            if env.signatures.len() != 2 {
                return Err(bad(
                    "a rotation carries exactly the old and the new key's signatures",
                ));
            }
            verify(&pae, &next.key, &env.signatures, "successor")?;
            Some((next, file))
        }
        _ => return Err(bad("a rotation names a successor; a revocation does not")),
    };
    Ok(Checked {
        kind: p.kind,
        role: p.role,
        site: p.site,
        key,
        successor,
        reason: p.reason,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }
    fn file(k: &SigningKey, role: Role, site: &str) -> Vec<u8> {
        PublicKey {
            role,
            site: site.into(),
            key: k.verifying_key(),
        }
        .to_file_bytes(k)
    }
    const AT: OffsetDateTime = time::macros::datetime!(2026-11-23 10:00 UTC);

    fn reenvelope(bytes: &[u8], f: impl Fn(&mut Envelope)) -> Vec<u8> {
        let mut e: Envelope = serde_json::from_slice(bytes).unwrap();
        f(&mut e);
        serde_json::to_vec(&e).unwrap()
    }

    /// Good rotations and revocations verify; forged ones (wrong signer, a missing or
    /// extra signature, an altered payload, a successor of another site or the old key
    /// itself) do not.
    #[test]
    fn only_statements_signed_as_their_kind_needs_verify() {
        let (a, b) = (key(1), key(2));
        let fb = file(&b, Role::Secure, "plant-a");
        let rot = make(Role::Secure, "plant-a", &a, Some((&b, &fb)), "yearly", AT);
        let c = check(&rot).unwrap();
        assert_eq!(
            (c.kind, c.key, c.at),
            (StatementKind::Rotate, a.verifying_key(), AT)
        );
        assert_eq!(c.successor.unwrap().0.key, b.verifying_key());
        let rev = make(Role::Secure, "plant-a", &a, None, "decommissioned", AT);
        assert_eq!(check(&rev).unwrap().kind, StatementKind::Revoke);

        // Forged: signed by a third key claiming to be the old one.
        let forged = make(Role::Secure, "plant-a", &key(3), Some((&b, &fb)), "x", AT);
        let forged = reenvelope(&forged, |e| {
            let mut p: Payload = serde_json::from_slice(&B64.decode(&e.payload).unwrap()).unwrap();
            p.key = B64.encode(a.verifying_key().as_bytes());
            e.payload = B64.encode(serde_json::to_vec(&p).unwrap());
        });
        assert!(check(&forged).is_err(), "a key cannot retire another");
        // The payload changed after signing (a later `at`, another reason).
        let altered = reenvelope(&rot, |e| {
            let body = String::from_utf8(B64.decode(&e.payload).unwrap()).unwrap();
            e.payload = B64.encode(body.replace("yearly", "yearlx"));
        });
        assert!(check(&altered).unwrap_err().0.contains("does not verify"));
        // Only the old key signed a rotation; the new key's signature added to a revocation.
        let one = reenvelope(&rot, |e| {
            e.signatures.pop();
        });
        assert!(check(&one).is_err());
        let two = reenvelope(&rev, |e| {
            let s = e.signatures[0].sig.clone();
            e.signatures.push(EnvelopeSig {
                keyid: key_id(&b.verifying_key()),
                sig: s,
            });
        });
        assert!(check(&two).is_err());
        let dup = reenvelope(&rev, |e| {
            let s = EnvelopeSig {
                keyid: e.signatures[0].keyid.clone(),
                sig: e.signatures[0].sig.clone(),
            };
            e.signatures.push(s);
        });
        assert!(check(&dup).unwrap_err().0.contains("same key"));
        // A successor of another site, or the old key itself.
        let other_site = make(
            Role::Secure,
            "plant-a",
            &a,
            Some((&b, &file(&b, Role::Secure, "plant-b"))),
            "x",
            AT,
        );
        assert!(check(&other_site).is_err());
        let itself = make(
            Role::Secure,
            "plant-a",
            &a,
            Some((&a, &file(&a, Role::Secure, "plant-a"))),
            "x",
            AT,
        );
        assert!(check(&itself).is_err(), "the successor is the old key");
        // Limits: size, reason length, format and version (checked before signatures).
        let mut big = rot.clone();
        big.resize(MAX_STATEMENT as usize + 1, b' ');
        assert!(check(&big).unwrap_err().0.contains("larger"));
        let mut fits = rot.clone();
        fits.resize(MAX_STATEMENT as usize, b' ');
        assert!(
            check(&fits).is_ok(),
            "trailing white space within the limit is JSON's"
        );
        let payload = |f: &dyn Fn(&mut Payload)| {
            reenvelope(&rot, |e| {
                let mut p: Payload =
                    serde_json::from_slice(&B64.decode(&e.payload).unwrap()).unwrap();
                f(&mut p);
                e.payload = B64.encode(serde_json::to_vec(&p).unwrap());
            })
        };
        let err = |b: Vec<u8>| check(&b).unwrap_err().0;
        assert!(err(payload(&|p| p.reason = "r".repeat(MAX_REASON + 1))).contains("reason"));
        assert!(err(payload(&|p| p.reason = "r".repeat(MAX_REASON))).contains("does not verify"));
        assert!(err(payload(&|p| p.version = 2)).contains("unsupported"));
        assert!(err(payload(&|p| p.format = "other".into())).contains("unsupported"));
        assert!(err(payload(&|p| p.at = "yesterday".into())).contains("RFC 3339"));
        // Not a statement at all; unknown fields.
        assert!(check(b"{}").is_err());
        let unknown = reenvelope(&rev, |e| {
            e.payload_type = "application/vnd.makproxy.cil-manifest+json; version=1".into()
        });
        assert!(check(&unknown).is_err());
    }
}
