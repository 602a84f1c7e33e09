//! The key types: a public key with its role and site, its key ID and fingerprint,
//! the public key file (self-signed, so its labels cannot change), a trusted peer key
//! and what trust changes report, and the errors of keys and homes. The home folder
//! that holds them is [`crate::home`]'s; the secret key file's format is
//! [`crate::secret`]'s, key statements [`crate::statement`]'s.

use crate::codes::Code;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::Signer;
/// A secret key as [`crate::home::Home::signing_key`] loads it (what a bundle writer signs with).
pub use ed25519_dalek::SigningKey;
pub use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::role::Role;

/// Key and home-folder errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
// Each variant is documented by its #[error] message.
#[allow(missing_docs)]
pub enum KeyError {
    #[error("{0} is not an initialised makproxy home (run `init` first)")]
    NoHome(PathBuf),
    #[error("{0} is already initialised; refusing to replace its key")]
    HomeExists(PathBuf),
    #[error("{0} is not empty; init makes a home only in a new or empty folder")]
    NotEmpty(PathBuf),
    #[error("{dir} is the {found} side's home; makproxy-{expected} needs a home of its own (--home or MAKPROXY_HOME)")]
    OtherSide {
        dir: PathBuf,
        found: &'static str,
        expected: &'static str,
    },
    #[error("private key {} can be read by {}; make it owner-only: {}", path.display(), readers.join(", "), crate::fsutil::fix_secret_command(path))]
    Permissions {
        /// The secret key file.
        path: PathBuf,
        /// Who besides its owner can read it.
        readers: Vec<String>,
    },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path} holds {found} key; this side trusts only {expected} keys")]
    Role {
        path: PathBuf,
        found: &'static str,
        expected: &'static str,
    },
    #[error(
        "trust name {0:?} is invalid or already in use (letters, digits, '-', '_', '.'; up to 64)"
    )]
    TrustName(String),
    #[error("this key is already trusted as {0:?}")]
    AlreadyTrusted(String),
    #[error("no trusted key named {0:?}")]
    UnknownName(String),
    #[error("{0:?} has no retired keys; to distrust its current key too, run `trust remove {0}` without --retired")]
    NothingRetired(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Secret(crate::secret::SecretError),
    #[error("{path}: key statement refused: {reason}")]
    Statement { path: PathBuf, reason: String },
    #[error("{path}: this statement was applied already: the key it retires (fingerprint {fingerprint}) is retired here")]
    StatementApplied { path: PathBuf, fingerprint: String },
    #[error("{path}: another statement already retired the key it names (fingerprint {fingerprint}) here; this one, with another successor or reason, is not applied. If the other side did not make it, its old key may be in someone else's hands")]
    StatementConflicts { path: PathBuf, fingerprint: String },
    #[error("{path}: the statement retires a key that is not pinned here (fingerprint {fingerprint}); apply the earlier statement that names it as successor first")]
    StatementOutOfOrder { path: PathBuf, fingerprint: String },
    #[error(
        "this home's key was retired by `key revoke`; it can no longer sign (init a new home)"
    )]
    Revoked,
    #[error("site {site:?} has {pinned} key(s) pinned here; a rule of {signatures} signature(s) could never be met (1 to {pinned})")]
    Quorum {
        site: String,
        signatures: usize,
        pinned: usize,
    },
    #[error("{}: missing; this home keeps its signature rules there, and a deleted file must not lift them", .0.display())]
    QuorumMissing(PathBuf),
}

impl KeyError {
    /// The stable code of this error, if it has one of its own.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            KeyError::NoHome(_) => Code::KeyNoHome,
            KeyError::HomeExists(_) | KeyError::NotEmpty(_) => Code::KeyHomeExists,
            KeyError::Permissions { .. } => Code::KeyPermissions,
            KeyError::Malformed { .. } => Code::KeyMalformed,
            KeyError::Role { .. } | KeyError::OtherSide { .. } => Code::KeyRole,
            KeyError::TrustName(_) => Code::KeyTrustName,
            KeyError::AlreadyTrusted(_) => Code::KeyAlreadyTrusted,
            KeyError::UnknownName(_) | KeyError::NothingRetired(_) => Code::KeyUnknownName,
            KeyError::Secret(e) => match e {
                crate::secret::SecretError::NeedsPassphrase => Code::KeyNeedsPassphrase,
                crate::secret::SecretError::WrongPassphrase => Code::KeyWrongPassphrase,
                crate::secret::SecretError::WeakPassphrase(_) => Code::KeyWeakPassphrase,
                crate::secret::SecretError::Malformed(_) => Code::KeyMalformed,
            },
            KeyError::Statement { .. } => Code::KeyStatement,
            KeyError::StatementApplied { .. } => Code::KeyStatementApplied,
            KeyError::StatementConflicts { .. } => Code::KeyStatementConflicts,
            KeyError::StatementOutOfOrder { .. } => Code::KeyStatementOrder,
            KeyError::Revoked => Code::KeyRevoked,
            KeyError::Quorum { .. } => Code::Usage,
            KeyError::QuorumMissing(_) => Code::KeyQuorumMissing,
            KeyError::Io { .. } => return None,
        })
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A public key with its role and the site name its owner chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Which side the key belongs to.
    pub role: Role,
    /// The site name its owner chose.
    pub site: String,
    /// The ed25519 public key.
    pub key: VerifyingKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublicKeyFile {
    format: String,
    version: u32,
    role: Role,
    site: String,
    key: String,
    /// Version 2: the key's signature over (role, site, key), so the labels cannot be
    /// changed without the secret key (a secure key relabelled "online" no longer
    /// verifies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    self_signature: Option<String>,
}

/// DSSE v1 pre-authentication encoding: what every makproxy signature covers (public
/// key files, bundles, key statements), so no signature of one can pass as another's.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + payload_type.len() + 32);
    v.extend_from_slice(
        format!(
            "DSSEv1 {} {} {} ",
            payload_type.len(),
            payload_type,
            body.len()
        )
        .as_bytes(),
    );
    v.extend_from_slice(body);
    v
}

/// What a public key file's self-signature covers (DSSE-style pre-authentication).
pub(crate) const PUBLIC_KEY_STATEMENT: &str = "application/vnd.makproxy.public-key; version=2";

pub(crate) fn key_statement(role: Role, site: &str, key_b64: &str) -> Vec<u8> {
    pae(
        PUBLIC_KEY_STATEMENT,
        format!("{}\n{site}\n{key_b64}", role.as_str()).as_bytes(),
    )
}

/// Largest public key file read.
pub(crate) const MAX_PUBLIC_KEY_FILE: u64 = 4096;

/// Computes the 16-hex-digit key ID (first 8 bytes of SHA-256 of the key).
pub fn key_id(key: &VerifyingKey) -> String {
    let h = Sha256::digest(key.as_bytes());
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A short fingerprint to read aloud: the key ID in four groups, upper case.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let id = key_id(key).to_ascii_uppercase();
    id.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("-")
}

impl PublicKey {
    /// Key ID carried in bundles as a lookup hint.
    pub fn key_id(&self) -> String {
        key_id(&self.key)
    }
    /// A short fingerprint to read aloud: the key ID in four groups, upper case.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }
    /// The public key file (version 2), self-signed by `signing`, which must be this
    /// key's secret half.
    pub fn to_file_bytes(&self, signing: &SigningKey) -> Vec<u8> {
        assert_eq!(signing.verifying_key(), self.key, "signed by its own key");
        let key = B64.encode(self.key.as_bytes());
        let sig = signing.sign(&key_statement(self.role, &self.site, &key));
        let f = PublicKeyFile {
            format: "makproxy-public-key".into(),
            version: 2,
            role: self.role,
            site: self.site.clone(),
            key,
            self_signature: Some(B64.encode(sig.to_bytes())),
        };
        let mut v = serde_json::to_vec_pretty(&f).expect("serialisable");
        v.push(b'\n');
        v
    }

    /// Reads a public key file. A version-2 file's self-signature must verify; a
    /// version-1 file (unsigned, from an earlier release) is read only where
    /// `require_signed` is false: keys pinned before, never a new `trust add`.
    pub fn from_file_bytes(
        path: &Path,
        bytes: &[u8],
        require_signed: bool,
    ) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() as u64 > MAX_PUBLIC_KEY_FILE {
            return Err(bad("larger than a public key file can be".into()));
        }
        let f: PublicKeyFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let known = f.format == "makproxy-public-key"
            && (f.version == 2 || (f.version == 1 && !require_signed));
        if !known {
            return Err(bad(format!(
                "unsupported format {:?} version {}{}",
                f.format,
                f.version,
                if f.version == 1 {
                    " (an unsigned key file of an earlier release: export it again with this release)"
                } else {
                    ""
                }
            )));
        }
        valid_site(&f.site).map_err(|_| bad("invalid site name".into()))?;
        let raw = B64
            .decode(f.key.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        let arr: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("key is not 32 bytes".into()))?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|e| bad(e.to_string()))?;
        if key.is_weak() {
            return Err(bad("weak (small-order) key".into()));
        }
        if f.version == 2 {
            let sig = f
                .self_signature
                .as_deref()
                .and_then(|s| B64.decode(s).ok())
                .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                .ok_or_else(|| bad("missing or malformed self-signature".into()))?;
            key.verify_strict(&key_statement(f.role, &f.site, &f.key), &sig)
                .map_err(|_| {
                    bad("self-signature does not verify: the role, site or key was changed".into())
                })?;
        } else if f.self_signature.is_some() {
            return Err(bad("a version 1 key file carries no self-signature".into()));
        }
        Ok(Self {
            role: f.role,
            site: f.site,
            key,
        })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key of site {:?}, fingerprint {}",
            self.role.as_str(),
            self.site,
            self.fingerprint()
        )
    }
}

/// A trust name: 1-64 letters, digits, `-`, `_`, `.`, not starting with `.`.
pub(crate) fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with('.')
}

/// Site names and trust names: letters, digits, `-`, `_`, `.`; up to 64; no leading dot.
pub fn valid_site(s: &str) -> Result<(), KeyError> {
    if valid_name(s) {
        Ok(())
    } else {
        Err(KeyError::TrustName(s.to_string()))
    }
}

/// A trusted peer key and the name it was pinned under.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// The name it was pinned under.
    pub name: String,
    /// The key.
    pub key: PublicKey,
    /// When a key statement retired it: it then verifies only bundles created before.
    pub retired_at: Option<time::OffsetDateTime>,
}

/// What `trust accept` did.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The name the key is pinned under.
    pub name: String,
    /// The key retired.
    pub old: PublicKey,
    /// Its successor (a rotation), now pinned under the same name.
    pub new: Option<PublicKey>,
    /// When the old key stopped signing.
    pub at: time::OffsetDateTime,
    /// Why, as the statement says.
    pub reason: String,
}

/// What `trust remove` took away.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The name the signer was pinned under (now free, unless only retired keys went).
    pub name: String,
    /// Every key removed: the current one and the retired ones.
    pub keys: Vec<Trusted>,
    /// Set when the site's rule (`trust require`) can no longer be met: (site,
    /// signatures required, signers left). Bundles of the site are then refused
    /// (MP-BND-027) until another signer is pinned or the rule is lowered.
    pub quorum: Option<(String, usize, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key files: the 4 KiB cap is exact, a version-1 file (earlier release, unsigned)
    /// loads only where pinned keys are read, and no other version ever does.
    #[test]
    fn key_file_size_cap_and_versions_are_exact() {
        let signing = SigningKey::from_bytes(&[9; 32]);
        let pk = PublicKey {
            role: Role::Online,
            site: "gateway".into(),
            key: signing.verifying_key(),
        };
        let p = Path::new("k.pub");
        let mut at_cap = pk.to_file_bytes(&signing);
        at_cap.resize(MAX_PUBLIC_KEY_FILE as usize, b' ');
        assert_eq!(PublicKey::from_file_bytes(p, &at_cap, true).unwrap(), pk);
        at_cap.push(b' ');
        let e = PublicKey::from_file_bytes(p, &at_cap, true).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let file = |version: u32| {
            serde_json::to_vec(&PublicKeyFile {
                format: "makproxy-public-key".into(),
                version,
                role: Role::Online,
                site: "gateway".into(),
                key: B64.encode(pk.key.as_bytes()),
                self_signature: None,
            })
            .unwrap()
        };
        assert_eq!(PublicKey::from_file_bytes(p, &file(1), false).unwrap(), pk);
        assert!(
            PublicKey::from_file_bytes(p, &file(1), true).is_err(),
            "trust add"
        );
        for v in [0, 3] {
            assert!(
                PublicKey::from_file_bytes(p, &file(v), false).is_err(),
                "v{v}"
            );
        }
    }

    #[test]
    fn names_and_keys_read_as_documented() {
        for ok in ["plant-a", "a", "gw_2.example", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let pk = PublicKey {
            role: Role::Secure,
            site: "plant-a".into(),
            key: SigningKey::from_bytes(&[3; 32]).verifying_key(),
        };
        assert_eq!(
            pk.to_string(),
            format!(
                "secure key of site \"plant-a\", fingerprint {}",
                pk.fingerprint()
            )
        );
    }
}
