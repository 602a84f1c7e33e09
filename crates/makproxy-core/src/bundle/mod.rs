//! The signed bundle format that crosses the air gap (spec: docs/bundle-format.md).
//!
//! A bundle is a zip archive holding exactly three entries: `manifest.json` (the
//! signed statement), `manifest.sig` (an ed25519 signature over the DSSE
//! pre-authentication encoding of the manifest bytes as stored) and one JSON Lines data
//! entry (`records.jsonl` in a CIL bundle, `results.jsonl` in a return bundle) whose size
//! and SHA-256 the manifest lists.
//!
//! Reading order is the security argument: scan the raw central directory (names,
//! duplicates, special files, sizes), read the signature and the manifest bytes under
//! size caps, verify the signature against pinned keys, only then parse the manifest
//! strictly, hash the data entry and compare, and only then parse records (hashing
//! again, so a file changed underneath is caught).

//!
//! Where each part lives: [`format`] (name, version, limits), [`error`], the manifest and
//! signature file ([`manifest`]), the record types ([`records`]), [`zipscan`] (the
//! archive's own reading of the central directory and canonical layout), [`reader`]
//! (the verification order) and [`writer`]. Every item is re-exported here, so paths
//! are `makproxy_core::bundle::Item` whatever file it lives in.

mod error;
mod format;
mod manifest;
mod reader;
mod records;
mod writer;
pub mod zipscan;

pub use error::BundleError;
pub use format::*;
pub use manifest::*;
pub use reader::{open, open_for_cosign, open_own, peek_kind, Cosignable, Verified};
pub use records::*;
pub use writer::{cosign, remove_cosignature, BundleWriter, Header, Written};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Which way a bundle travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// secure → online: records to activate.
    Cil,
    /// online → secure: a CID or an error per record.
    Return,
}

impl Kind {
    /// DSSE payload type; distinct per kind so one can never pass as the other.
    pub fn payload_type(self) -> &'static str {
        match self {
            Kind::Cil => "application/vnd.makproxy.cil-manifest+json; version=1",
            Kind::Return => "application/vnd.makproxy.return-manifest+json; version=1",
        }
    }
    /// Name of the kind's data entry.
    pub fn data_entry(self) -> &'static str {
        match self {
            Kind::Cil => "records.jsonl",
            Kind::Return => "results.jsonl",
        }
    }
    /// The kind's name in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cil => "cil",
            Kind::Return => "return",
        }
    }
    fn other(self) -> Kind {
        match self {
            Kind::Cil => Kind::Return,
            Kind::Return => Kind::Cil,
        }
    }
}

/// DSSE v1 pre-authentication encoding (what every signature covers).
pub use crate::keys::pae;

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 random bytes as 32 lower-case hex digits: a bundle's ID, a run's.
pub fn random_hex_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("operating system RNG");
    hex(&b)
}

/// Whether `s` is exactly `len` lower-case hex digits.
pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `t` as RFC 3339 UTC with whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}
