//! The signed statement (`manifest.json`) and the signature file (`manifest.sig`).

use super::Kind;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A bundle's ID: 32 lower-case hex digits, random ([`BundleId::random`]). Parsed once
/// where it enters (the manifest, a store's row); everything after holds this type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BundleId(String);

impl BundleId {
    /// Exactly 32 lower-case hex digits, nothing around them.
    pub fn parse(text: &str) -> Option<BundleId> {
        super::is_hex(text, 32).then(|| BundleId(text.to_string()))
    }
    /// A fresh random ID.
    pub fn random() -> BundleId {
        BundleId(super::random_hex_id())
    }
    /// The 32 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BundleId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("bundle_id must be 32 lower-case hex digits"))
    }
}

/// One archive entry as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The entry's name in the archive.
    pub name: String,
    /// Its uncompressed size in bytes.
    pub size: u64,
    /// SHA-256 of its uncompressed bytes, lower-case hex.
    pub sha256: String,
}

/// What a return bundle answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// The CIL bundle answered.
    pub bundle_id: BundleId,
    /// SHA-256 of that bundle's manifest, as it was issued.
    pub manifest_sha256: String,
    /// The site that issued it.
    pub site: String,
    /// Its sequence number at that site.
    pub sequence: u64,
}

/// Which backend produced a return bundle's CIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendInfo {
    /// The backend's name as the operator chose it (`microsoft`, `simulator`, …).
    pub name: String,
    /// True when the CIDs activate nothing (the simulator).
    pub simulated: bool,
    /// The service URL or gateway program the answers came from (format version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Which kind of backend produced a return record's answer (format version 2). A CID
/// served from the online journal names the backend that first obtained it, so a
/// manual or simulated answer can never pass for the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Microsoft's BatchActivation service.
    Microsoft,
    /// A person, from a phone call or the web (worksheet or prompt).
    Manual,
    /// A site's own gateway program.
    Command,
    /// The offline simulator: its CIDs activate nothing.
    Simulator,
}

impl BackendKind {
    /// Every kind, as stored in the journal.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Microsoft,
        BackendKind::Manual,
        BackendKind::Command,
        BackendKind::Simulator,
    ];
    /// The name stored in returns and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Microsoft => "microsoft",
            BackendKind::Manual => "manual",
            BackendKind::Command => "command",
            BackendKind::Simulator => "simulator",
        }
    }
    /// The kind named `s` exactly, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// Only the simulator's answers activate nothing.
    pub fn simulated(self) -> bool {
        self == BackendKind::Simulator
    }
}

/// The activations left on the key behind an extended product ID, as the backend said
/// when `activate --check-remaining` asked (format version 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemainingCount {
    /// The ePID asked about (the secure side finds the key by its products).
    pub extended_product_id: crate::ids::ExtendedProductId,
    /// Activations left before this return's requests; -1: no limit reported.
    pub activations_remaining: i64,
    /// Activations this return obtained from the backend for records with this ePID.
    pub spent: u64,
    /// When the backend was asked (RFC 3339 UTC).
    pub checked: String,
}

/// What the gateway requires of the bundles of the site a return answers, as its trust
/// stood when it wrote the return (format version 4): how many distinct signers
/// (`trust require`), and the key it pins now for each of that site's signers. The
/// secure side keeps the newest rule it applied, so `pack` and `verify` say who must
/// still cosign before the trip, and which cosignature the gateway would refuse. Advice
/// only: the gateway enforces its rule whatever the secure side believes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRule {
    /// Distinct signers (identities) the gateway requires; 1 without a rule.
    pub signatures_required: u32,
    /// The keys the gateway pins for the site, one per signer, sorted by name.
    pub signers: Vec<RuleSigner>,
}

impl SiteRule {
    /// The rule a writer may carry: `required` clamped to 1..=[`MAX_RULE_SIGNERS`], at
    /// most that many signers, none whose name (case-insensitively) or key came before
    /// and none without a trust name, so a return never carries a rule its reader
    /// refuses, whatever the pins on disk hold.
    pub fn new(required: usize, signers: impl IntoIterator<Item = RuleSigner>) -> Self {
        let (mut names, mut keys) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        let signers = signers
            .into_iter()
            .filter(|s| crate::keys::valid_name(&s.name) && s.verifying_key().is_some())
            .filter(|s| names.insert(s.name.to_ascii_lowercase()) && keys.insert(s.key.clone()))
            .take(MAX_RULE_SIGNERS)
            .collect();
        SiteRule {
            signatures_required: required.clamp(1, MAX_RULE_SIGNERS) as u32,
            signers,
        }
    }
}

/// One signer the gateway pins for a site ([`SiteRule`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSigner {
    /// The name the gateway pinned the key under (`trust add FILE --name NAME`).
    pub name: String,
    /// The ed25519 public key, 32 bytes in standard base64.
    pub key: String,
}

impl RuleSigner {
    /// The signer pinned as `name` with `key`.
    pub fn new(name: &str, key: &ed25519_dalek::VerifyingKey) -> Self {
        use base64::Engine;
        RuleSigner {
            name: name.to_string(),
            key: base64::engine::general_purpose::STANDARD.encode(key.as_bytes()),
        }
    }
    /// The key, when `key` is 32 bytes of base64 that make an ed25519 point.
    pub fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        use base64::Engine;
        let raw: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(self.key.as_bytes())
            .ok()?
            .try_into()
            .ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw).ok()
    }
}

/// Most signers a [`SiteRule`] lists.
pub const MAX_RULE_SIGNERS: usize = 64;

/// The signed statement. Everything in it is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`](super::FORMAT).
    pub format: String,
    /// The format version the bundle was written in.
    pub version: u32,
    /// Which way the bundle travels.
    pub kind: Kind,
    /// 32 lower-case hex digits, random.
    pub bundle_id: BundleId,
    /// The sender's site name.
    pub site: String,
    /// Per-sender sequence number, starting at 1.
    pub sequence: u64,
    /// When it was written (RFC 3339 UTC).
    pub created: String,
    /// When it stops being accepted (RFC 3339 UTC).
    pub expires: String,
    /// The program and version that wrote it.
    pub tool: String,
    /// Key ID of the signer (a hint; the signature decides).
    pub signer_key_id: String,
    /// Number of records in the data entry.
    pub records: u64,
    /// Names of the record fields that cross the gap in this bundle.
    pub fields: Vec<String>,
    /// The archive's entries other than manifest and signature.
    pub entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A return's request (absent in a CIL bundle).
    pub answers: Option<Answers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A return's backend (absent in a CIL bundle).
    pub backend: Option<BackendInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A return's remaining-activation counts, when the run asked (version 3).
    pub remaining: Option<Vec<RemainingCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A return's word on what the gateway requires of the site's bundles (version 4).
    pub site_rule: Option<SiteRule>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SigFile {
    pub(crate) format: String,
    pub(crate) key_id: String,
    pub(crate) signature: String,
}

impl SigFile {
    /// The signature file of `signature` by the key with ID `key_id`.
    pub(crate) fn new(key_id: String, signature: &ed25519_dalek::Signature) -> Self {
        use base64::Engine;
        SigFile {
            format: "makproxy-signature-v1".into(),
            key_id,
            signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        }
    }
    /// Its one serialisation (pretty JSON and a line end): what the writer writes and
    /// the only bytes the reader accepts.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("serialisable");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kinds_read_back_and_only_the_simulator_is_simulated() {
        for k in BackendKind::ALL {
            assert_eq!(BackendKind::parse(k.as_str()), Some(k));
            assert_eq!(k.simulated(), k == BackendKind::Simulator);
        }
        assert_eq!(BackendKind::parse("Microsoft"), None);
        assert_eq!(BackendKind::parse(""), None);
    }
}
