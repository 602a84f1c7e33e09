//! Command results as types: each is what a person reads (`Display`, untrusted text
//! escaped) and what a script reads (`Serialize`, docs/json.md) from one value, printed by
//! [`crate::Output::report`]. The reports of the commands both sides share live here;
//! each side's own live beside its commands.

use makproxy_core::bundle::{
    Answers, BackendInfo, CilRecord, Kind, ReturnAnswer, ReturnRecord, Source, Verified,
};
use makproxy_core::keys::PublicKey;
use makproxy_core::sanitize::escape;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{self, Display, Formatter};
use std::path::{Path, PathBuf};

/// A command's result, printed as text or as one JSON document.
pub trait Report: Serialize + Display {}
impl<T: Serialize + Display> Report for T {}

/// A path as printed: escaped.
pub fn shown(p: &Path) -> String {
    escape(&p.display().to_string()).into_owned()
}

/// A public key as reports show it.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    /// `secure` or `online`.
    pub role: &'static str,
    /// The site named at `init`.
    pub site: String,
    /// Short ID (hex), as in manifests.
    pub key_id: String,
    /// The fingerprint people read aloud.
    pub fingerprint: String,
}

impl From<&PublicKey> for KeyInfo {
    fn from(k: &PublicKey) -> Self {
        Self {
            role: k.role.as_str(),
            site: k.site.clone(),
            key_id: k.key_id(),
            fingerprint: k.fingerprint(),
        }
    }
}

/// `init`.
#[derive(Debug, Serialize)]
pub struct Init {
    /// The home folder made.
    pub home: PathBuf,
    /// Its new key.
    pub public_key: KeyInfo,
    /// Whether the secret key is encrypted with a passphrase (`init --encrypt`).
    pub secret_key_encrypted: bool,
}

/// How a home's secret key is kept, in words.
fn secret_state(encrypted: bool) -> &'static str {
    if encrypted {
        "encrypted with a passphrase (scrypt, XChaCha20-Poly1305)"
    } else {
        "NOT encrypted, protected by file permissions only (key passwd encrypts it)"
    }
}

impl Display for Init {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let k = &self.public_key;
        writeln!(f, "Initialised {} home {}", k.role, shown(&self.home))?;
        writeln!(f, "Site:        {}", escape(&k.site))?;
        writeln!(
            f,
            "Fingerprint: {}   (read this aloud to the other side)",
            k.fingerprint
        )?;
        writeln!(
            f,
            "Secret key:  {}",
            secret_state(self.secret_key_encrypted)
        )?;
        write!(
            f,
            "Next: key export --out {}.pub, carry it across, and trust it there.",
            escape(&k.site)
        )
    }
}

/// `key passwd`.
#[derive(Debug, Serialize)]
pub struct Passwd {
    /// Whether the secret key is now encrypted.
    pub secret_key_encrypted: bool,
    /// Whether it was before.
    pub was_encrypted: bool,
}

impl Display for Passwd {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.was_encrypted, self.secret_key_encrypted) {
            (true, true) => "Changed the secret key's passphrase. The key is the same: nothing needs trusting again.",
            (false, true) => "Encrypted the secret key with a passphrase. The key is the same: nothing needs trusting again.",
            (_, false) => "The secret key is now stored WITHOUT a passphrase (file permissions only).",
        })
    }
}

/// `key export` / `key show`.
#[derive(Debug, Serialize)]
pub struct Key {
    /// The file written (`key export`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<PathBuf>,
    /// This side's key.
    pub public_key: KeyInfo,
    /// Whether the secret key is encrypted (`key show`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_encrypted: Option<bool>,
}

impl Display for Key {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.written {
            writeln!(f, "Wrote public key to {}", shown(p))?;
        }
        if let Some(encrypted) = self.secret_key_encrypted {
            let k = &self.public_key;
            writeln!(
                f,
                "Home:        {} side of site {}",
                k.role,
                escape(&k.site)
            )?;
            writeln!(f, "Key ID:      {}", k.key_id)?;
            writeln!(f, "Secret key:  {}", secret_state(encrypted))?;
        }
        write!(f, "Fingerprint: {}", self.public_key.fingerprint)
    }
}

/// `trust add`.
#[derive(Debug, Serialize)]
pub struct TrustAdded {
    /// The name it is trusted under.
    pub trusted: String,
    /// The key.
    pub public_key: KeyInfo,
}

impl Display for TrustAdded {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let k = &self.public_key;
        writeln!(
            f,
            "Trusted {} key of site {:?} as {:?}",
            k.role,
            escape(&k.site),
            self.trusted
        )?;
        write!(
            f,
            "Fingerprint: {}   (must match what the other side reads out)",
            k.fingerprint
        )
    }
}

/// One entry of `trust list`.
#[derive(Debug, Serialize)]
pub struct NamedKey {
    /// The key.
    #[serde(flatten)]
    pub key: KeyInfo,
    /// The name it is trusted under.
    pub name: String,
    /// When a key statement retired it (it then verifies only earlier bundles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

/// `trust list`.
#[derive(Debug, Serialize)]
pub struct TrustList {
    /// Every pinned key.
    pub trusted: Vec<NamedKey>,
    /// Signatures required per site (`trust require`), where more than one.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub require: std::collections::BTreeMap<String, usize>,
}

impl Display for TrustList {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.trusted.is_empty() {
            return write!(f, "No keys trusted yet.");
        }
        let lines: Vec<String> = self
            .trusted
            .iter()
            .map(|t| {
                format!(
                    "{:<20} {:<7} site {:<20} {}{}",
                    t.name,
                    t.key.role,
                    escape(&t.key.site),
                    t.key.fingerprint,
                    t.retired_at
                        .as_deref()
                        .map(|at| format!("  RETIRED {at} (verifies earlier bundles only)"))
                        .unwrap_or_default()
                )
            })
            .collect();
        write!(f, "{}", lines.join("\n"))?;
        for (site, n) in &self.require {
            write!(
                f,
                "\nBundles of site {:?} need {n} signatures of its pinned keys (trust require).",
                escape(site)
            )?;
        }
        Ok(())
    }
}

/// `cosign`.
#[derive(Debug, Serialize)]
pub struct Cosigned {
    /// The bundle, rewritten with one more signature.
    pub bundle: PathBuf,
    /// Signatures it now carries.
    pub signatures: usize,
    /// The key that cosigned.
    pub public_key: KeyInfo,
}

impl Display for Cosigned {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Cosigned {} with key {}: {} signature(s) now.",
            shown(&self.bundle),
            self.public_key.fingerprint,
            self.signatures
        )
    }
}

/// `cosign FILE --remove KEY_ID`.
#[derive(Debug, Serialize)]
pub struct CosignatureRemoved {
    /// The bundle, rewritten without that cosignature.
    pub bundle: PathBuf,
    /// The key ID whose cosignature was taken out.
    pub removed: String,
    /// Signatures it still carries.
    pub signatures: usize,
}

impl Display for CosignatureRemoved {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Removed the cosignature by key {} from {}: {} signature(s) left.",
            escape(&self.removed),
            shown(&self.bundle),
            self.signatures
        )
    }
}

/// Where a CIL bundle stands against what a gateway requires of this site's bundles,
/// as the gateway's newest return applied here said (bundle format 4): advice before
/// the trip, never a check (the gateway enforces its own rule).
#[derive(Debug, Serialize)]
pub struct GatewayNeeds {
    /// The gateway's pinned name here.
    pub gateway: String,
    /// When the return that said so was written.
    pub as_of: String,
    /// Distinct signers it requires.
    pub signatures_required: u32,
    /// Signers it would count, by the names it pins them under.
    pub counted: Vec<String>,
    /// How many more cosignatures it needs.
    pub missing: u32,
    /// Signers it pins who have not signed (any of them can cosign).
    pub can_cosign: Vec<Signer>,
    /// Key IDs of cosignatures it would refuse (a key it does not pin for the site):
    /// each makes it refuse the whole bundle until removed (`cosign FILE --remove`).
    pub refused: Vec<String>,
    /// False when this home's own key is not one the gateway pins (a rotation it has
    /// not accepted yet): it refuses the bundle whatever the cosignatures.
    pub signer_pinned: bool,
}

impl GatewayNeeds {
    /// Counts `own` (the bundle's signer) and the cosignatures of `v` (none for a
    /// bundle about to be carried from `pack`) against `rule`.
    pub fn of(
        gateway: &str,
        as_of: &str,
        rule: &makproxy_core::bundle::SiteRule,
        own: &makproxy_core::keys::VerifyingKey,
        v: Option<&Verified>,
    ) -> Self {
        use makproxy_core::keys::{fingerprint, key_id};
        let pinned: Vec<(&str, makproxy_core::keys::VerifyingKey)> = rule
            .signers
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.verifying_key()?)))
            .collect();
        let mut counted = Vec::new();
        let signer_pinned = match pinned.iter().find(|(_, k)| k == own) {
            Some((name, _)) => {
                counted.push(name.to_string());
                true
            }
            None => false,
        };
        let mut refused = Vec::new();
        if let Some(v) = v {
            for id in v.cosignature_key_ids() {
                match pinned
                    .iter()
                    .find(|(_, k)| key_id(k) == id && v.cosigned_by(k))
                {
                    Some((name, _)) => counted.push(name.to_string()),
                    None => refused.push(id.to_string()),
                }
            }
        }
        let can_cosign = pinned
            .iter()
            .filter(|(name, _)| !counted.iter().any(|c| c == name))
            .map(|(name, k)| Signer {
                name: name.to_string(),
                fingerprint: fingerprint(k),
                key_id: key_id(k),
            })
            .collect();
        GatewayNeeds {
            gateway: gateway.to_string(),
            as_of: as_of.to_string(),
            signatures_required: rule.signatures_required,
            missing: rule
                .signatures_required
                .saturating_sub(counted.len() as u32),
            counted,
            can_cosign,
            refused,
            signer_pinned,
        }
    }
    /// Whether the gateway, as far as this side knows, would take the bundle as it is.
    pub fn met(&self) -> bool {
        self.signer_pinned && self.missing == 0 && self.refused.is_empty()
    }
}

impl Display for GatewayNeeds {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Gateway {:?} (its return of {}) requires {} signer(s) of this site; it would count {}",
            escape(&self.gateway),
            self.as_of,
            self.signatures_required,
            self.counted.len()
        )?;
        if !self.counted.is_empty() {
            write!(f, " ({})", escape(&self.counted.join(", ")))?;
        }
        write!(f, ".")?;
        if !self.signer_pinned {
            write!(f, "\n  It does not pin this home's key: it refuses the bundle until it accepts this home's key statement (`trust accept STATEMENT` there).")?;
        }
        for id in &self.refused {
            write!(f, "\n  The cosignature by key {} is not by a key it pins for this site: it refuses the whole bundle. Remove it: makproxy-secure cosign FILE --remove {}", escape(id), escape(id))?;
        }
        if self.missing > 0 {
            let who = self
                .can_cosign
                .iter()
                .map(|s| format!("{} ({})", escape(&s.name), s.fingerprint))
                .collect::<Vec<_>>()
                .join(", ");
            write!(
                f,
                "\n  It needs {} more cosignature(s) before the trip: each runs `makproxy-secure cosign FILE` in their own home; it pins {}.",
                self.missing,
                if who.is_empty() { "no other signer of this site: ask its operator to pin one (`trust add`)".to_string() } else { who }
            )?;
        }
        Ok(())
    }
}

/// `trust require`.
#[derive(Debug, Serialize)]
pub struct Required {
    /// The site.
    pub site: String,
    /// Distinct signatures required.
    pub signatures: usize,
    /// Its keys pinned here.
    pub pinned: usize,
}

impl Display for Required {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.signatures == 1 {
            write!(
                f,
                "Bundles of site {:?} need one signature (no rule).",
                escape(&self.site)
            )
        } else {
            write!(
                f,
                "Bundles of site {:?} now need {} of its {} pinned keys' signatures.",
                escape(&self.site),
                self.signatures,
                self.pinned
            )
        }
    }
}

/// `key rotate` / `key revoke`.
#[derive(Debug, Serialize)]
pub struct KeyRetired {
    /// `rotate` or `revoke`.
    pub kind: &'static str,
    /// The statement file to carry to the other side.
    pub statement: PathBuf,
    /// The key retired.
    pub retired: KeyInfo,
    /// Its successor (a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<KeyInfo>,
    /// When the old key stopped signing.
    pub at: String,
    /// The sites this home pins: each pins this key and must `trust accept` the
    /// statement.
    pub peers: Vec<String>,
}

impl Display for KeyRetired {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.public_key {
            Some(k) => writeln!(
                f,
                "Rotated the key: {} retired, new fingerprint {}   (read this aloud to the other side)",
                self.retired.fingerprint, k.fingerprint
            )?,
            None => writeln!(
                f,
                "Revoked the key {}: this home can no longer sign.",
                self.retired.fingerprint
            )?,
        }
        let to = match self.peers.len() {
            0 => "the other side".to_string(),
            1 => format!("site {}", escape(&self.peers[0])),
            n => format!(
                "each of the {n} sites this home pins ({})",
                self.peers
                    .iter()
                    .map(|p| escape(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        write!(
            f,
            "Carry {} to {to} and run there: trust accept FILE",
            shown(&self.statement)
        )
    }
}

/// `trust accept` of a statement applied before.
#[derive(Debug, Serialize)]
pub struct AlreadyAccepted {
    /// Always true.
    pub already_applied: bool,
    /// The fingerprint of the key it retires, retired here already.
    pub retired_fingerprint: String,
}

impl Display for AlreadyAccepted {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "This statement was applied already: the key {} is retired here; nothing changed.",
            self.retired_fingerprint
        )
    }
}

/// `trust accept`.
#[derive(Debug, Serialize)]
pub struct TrustAccepted {
    /// The name the key is pinned under.
    pub name: String,
    /// `rotate` or `revoke`.
    pub kind: &'static str,
    /// The key retired (it now verifies only bundles created before `at`).
    pub retired: KeyInfo,
    /// Its successor, now pinned under the same name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successor: Option<KeyInfo>,
    /// When the old key stopped signing.
    pub at: String,
    /// Why, as the statement says.
    pub reason: String,
}

impl Display for TrustAccepted {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: key {} retired at {} ({}).",
            self.name,
            self.retired.fingerprint,
            self.at,
            escape(&self.reason)
        )?;
        match &self.successor {
            Some(k) => write!(
                f,
                "\nNow trusted as {:?}: fingerprint {}   (must match what the other side reads out)",
                self.name, k.fingerprint
            ),
            None => write!(f, "\nNo successor: nothing new from {:?} is accepted.", self.name),
        }
    }
}

/// `trust remove`.
#[derive(Debug, Serialize)]
pub struct TrustRemoved {
    /// The name removed.
    pub removed: String,
    /// Every key no longer trusted: the current one and the retired ones (or, with
    /// --retired, the retired ones only).
    pub keys: Vec<KeyInfo>,
    /// Whether only the retired keys were removed (`--retired`).
    pub retired_only: bool,
    /// The site's rule (`trust require`) can no longer be met, when set.
    pub quorum_unmet: Option<QuorumUnmet>,
}

/// A site's two-person rule that the pinned signers can no longer meet.
#[derive(Debug, Serialize)]
pub struct QuorumUnmet {
    /// The site.
    pub site: String,
    /// Signatures its rule requires.
    pub signatures: usize,
    /// Signers of that site still pinned.
    pub signers: usize,
}

impl Display for TrustRemoved {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Removed {}{:?}: {} key(s) no longer trusted, whatever date a bundle claims",
            if self.retired_only {
                "the retired keys of "
            } else {
                ""
            },
            self.removed,
            self.keys.len()
        )?;
        for k in &self.keys {
            write!(f, "\n  {}", k.fingerprint)?;
        }
        if self.retired_only {
            write!(f, "\nIts current key stays trusted.")?;
        } else {
            write!(f, "\nThe name is free: pin the signer's new key with `trust add FILE --name {}` once its fingerprint is confirmed by phone.", self.removed)?;
        }
        if let Some(q) = &self.quorum_unmet {
            write!(f, "\nWarning: site {:?} requires {} signatures and has {} signer(s) pinned: its bundles are refused (MP-BND-027) until another signer is pinned or `trust require {} --signatures {}`.", escape(&q.site), q.signatures, q.signers, escape(&q.site), q.signers.max(1))?;
        }
        Ok(())
    }
}

/// `man --out DIR`.
#[derive(Debug, Serialize)]
pub struct Man {
    /// The folder written.
    pub man_pages: String,
}

impl Display for Man {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "Wrote man pages to {}", escape(&self.man_pages))
    }
}

/// The signer of a verified bundle.
#[derive(Debug, Serialize)]
pub struct Signer {
    /// The name its key is trusted under.
    pub name: String,
    /// Its key's fingerprint.
    pub fingerprint: String,
    /// Its key's short ID.
    pub key_id: String,
}

/// A record as `--records` lists it: exactly as the bundle holds it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Entry {
    /// A request.
    Cil(CilRecord),
    /// An answer.
    Return(ReturnRecord),
}

impl Display for Entry {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Cil(r) => write!(
                f,
                "  #{:<6} IID {}  ePID {}  {}  {}{}{}",
                r.handle,
                r.installation_id,
                r.extended_product_id,
                r.activation_id,
                escape(r.product.as_deref().unwrap_or("-")),
                r.channel.map(|c| format!("  ({c})")).unwrap_or_default(),
                r.host
                    .as_ref()
                    .map(|h| format!("  host {h}"))
                    .unwrap_or_default()
            ),
            Entry::Return(r) => {
                let answer = match &r.answer {
                    ReturnAnswer::Confirmed(cid) => format!("CID {cid}"),
                    ReturnAnswer::Failed(fl) => format!("FAILED {}", fl.line()),
                };
                write!(
                    f,
                    "  #{:<6} IID {}  {answer}  ({}, {}{})",
                    r.handle,
                    r.installation_id,
                    r.backend.as_str(),
                    match r.source {
                        Source::Backend => "obtained",
                        Source::Journal => "from the journal",
                    },
                    if r.simulated { ", SIMULATED" } else { "" }
                )
            }
        }
    }
}

/// `verify` / `inspect`: what a security officer at the gap needs to see of a bundle
/// whose every record was verified.
#[derive(Debug, Serialize)]
pub struct BundleSummary {
    /// The bundle file.
    pub file: PathBuf,
    /// Always true: an invalid bundle is an error, not a summary.
    pub valid: bool,
    /// `cil` or `return`.
    pub kind: Kind,
    /// The manifest's bundle ID.
    pub bundle_id: makproxy_core::bundle::BundleId,
    /// The signing site.
    pub site: String,
    /// The site's bundle sequence number.
    pub sequence: u64,
    /// Who signed it.
    pub signer: Signer,
    /// The other pinned identities that cosigned it (two-person rule), each once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cosigners: Vec<Signer>,
    /// Distinct signers this side requires of the site (`trust require`; 1 without a
    /// rule), when it reads the bundle as the other side's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures_required: Option<usize>,
    /// A CIL bundle of this side against each gateway's rule (`verify` on the secure
    /// side, once a gateway's return said its rule).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayNeeds>,
    /// The key IDs of every cosignature carried, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cosignature_key_ids: Vec<String>,
    /// Creation time.
    pub created: String,
    /// Expiry time.
    pub expires: String,
    /// The writing tool.
    pub tool: String,
    /// Record count.
    pub records: u64,
    /// The fields records carry.
    pub fields: Vec<String>,
    /// SHA-256 of the manifest's bytes.
    pub manifest_sha256: String,
    /// The request a return answers.
    pub answers: Option<Answers>,
    /// The backend of a return.
    pub backend: Option<BackendInfo>,
    /// Records answered with a CID.
    pub confirmation_ids: u64,
    /// Records answered with a failure.
    pub failures: u64,
    /// Simulated records.
    pub simulated: u64,
    /// Records per extended product ID (what `remaining` is checked against).
    pub per_epid: BTreeMap<String, u64>,
    /// Records without an extended product ID: only a phone (manual) activation
    /// answers them.
    pub phone_only: u64,
    /// With `--records`: every record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<Entry>>,
}

impl BundleSummary {
    /// Reads every record of `v` (verifying each) and sums them up.
    pub fn of(path: &Path, v: &mut Verified, list: bool) -> Result<Self, crate::CliError> {
        let (mut ok, mut failed, mut simulated) = (0u64, 0u64, 0u64);
        let mut entries = Vec::new();
        let mut per_epid: BTreeMap<String, u64> = BTreeMap::new();
        let mut phone_only = 0u64;
        match v.manifest.kind {
            Kind::Cil => v.records(|r: CilRecord| {
                if r.extended_product_id.is_absent() {
                    phone_only += 1;
                } else {
                    *per_epid
                        .entry(r.extended_product_id.as_str().to_string())
                        .or_default() += 1;
                }
                if list {
                    entries.push(Entry::Cil(r));
                }
                Ok::<(), crate::CliError>(())
            })?,
            Kind::Return => v.records(|r: ReturnRecord| {
                if r.confirmation_id().is_some() {
                    ok += 1;
                } else {
                    failed += 1;
                }
                simulated += u64::from(r.simulated);
                if list {
                    entries.push(Entry::Return(r));
                }
                Ok::<(), crate::CliError>(())
            })?,
        }
        let m = &v.manifest;
        Ok(Self {
            file: path.to_path_buf(),
            valid: true,
            kind: m.kind,
            bundle_id: m.bundle_id.clone(),
            site: m.site.clone(),
            sequence: m.sequence,
            signer: Signer {
                name: v.signer.name.clone(),
                fingerprint: v.signer.key.fingerprint(),
                key_id: v.signer.key.key_id(),
            },
            cosigners: v
                .cosigners
                .iter()
                .map(|c| Signer {
                    name: c.name.clone(),
                    fingerprint: c.key.fingerprint(),
                    key_id: c.key.key_id(),
                })
                .collect(),
            signatures_required: None,
            gateways: Vec::new(),
            cosignature_key_ids: v.cosignature_key_ids().map(str::to_string).collect(),
            created: m.created.clone(),
            expires: m.expires.clone(),
            tool: m.tool.clone(),
            records: m.records,
            fields: m.fields.clone(),
            manifest_sha256: v.manifest_sha256.clone(),
            answers: m.answers.clone(),
            backend: m.backend.clone(),
            confirmation_ids: ok,
            failures: failed,
            simulated,
            per_epid,
            phone_only,
            entries: list.then_some(entries),
        })
    }
}

impl Display for BundleSummary {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "OK: signature, manifest and every entry verified ({}).",
            shown(&self.file)
        )?;
        writeln!(
            f,
            "Kind:        {}",
            if self.kind == Kind::Cil {
                "CIL bundle (request, secure -> online)"
            } else {
                "return bundle (online -> secure)"
            }
        )?;
        writeln!(
            f,
            "Sender:      site {:?}, trusted as {:?}",
            escape(&self.site),
            self.signer.name
        )?;
        writeln!(f, "Fingerprint: {}", self.signer.fingerprint)?;
        for c in &self.cosigners {
            writeln!(
                f,
                "Cosigned by: {:?}, fingerprint {}",
                escape(&c.name),
                c.fingerprint
            )?;
        }
        if let Some(n) = self.signatures_required.filter(|n| *n > 1) {
            writeln!(
                f,
                "Rule here:   {n} distinct signers of site {:?} required; this bundle has {}",
                escape(&self.site),
                1 + self.cosigners.len()
            )?;
        }
        if self.cosigners.is_empty() && !self.cosignature_key_ids.is_empty() {
            writeln!(
                f,
                "Cosigned:    by key(s) {} (colleagues' keys are not pinned here{})",
                self.cosignature_key_ids.join(", "),
                if self.gateways.is_empty() {
                    ""
                } else {
                    "; the gateway's rule below checks them"
                }
            )?;
        }
        for g in &self.gateways {
            writeln!(f, "{g}")?;
        }
        writeln!(f, "Bundle:      #{} id {}", self.sequence, self.bundle_id)?;
        writeln!(
            f,
            "Created:     {}   Expires: {}",
            self.created, self.expires
        )?;
        writeln!(f, "Tool:        {}", escape(&self.tool))?;
        writeln!(f, "Records:     {}", self.records)?;
        write!(
            f,
            "Fields:      {}",
            self.fields
                .iter()
                .map(|x| escape(x))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        for (epid, n) in &self.per_epid {
            write!(f, "\nProduct ID:  {epid}  ({n} record(s))")?;
        }
        if self.phone_only > 0 {
            write!(
                f,
                "\nProduct ID:  none  ({} record(s): Active Directory forests or ospp.vbs output; only a phone activation answers them)",
                self.phone_only
            )?;
        }
        if let (Some(a), Some(b)) = (&self.answers, &self.backend) {
            write!(
                f,
                "\nAnswers:     bundle #{} {} of site {:?}",
                a.sequence,
                a.bundle_id,
                escape(&a.site)
            )?;
            write!(
                f,
                "\nBackend:     {}{}",
                escape(&b.name),
                if b.simulated {
                    "  (SIMULATED: these CIDs activate nothing)"
                } else {
                    ""
                }
            )?;
            if let Some(e) = &b.endpoint {
                write!(f, "\nEndpoint:    {}", escape(e))?;
            }
            write!(
                f,
                "\nResults:     {} CID(s), {} failure(s)",
                self.confirmation_ids, self.failures
            )?;
        }
        if let Some(entries) = &self.entries {
            write!(f, "\nRecords:")?;
            for e in entries {
                write!(f, "\n{e}")?;
            }
        }
        Ok(())
    }
}

/// `export-signature`.
#[derive(Debug, Serialize)]
pub struct SshSignature {
    /// The folder written (manifest.json, manifest.sshsig, allowed_signers).
    pub folder: PathBuf,
    /// The bundle whose manifest was signed.
    pub bundle: PathBuf,
    /// The principal in allowed_signers (this side's site).
    pub principal: String,
    /// The bundle's data entry.
    pub data_entry: String,
    /// Its SHA-256, as the signed manifest lists it.
    pub data_sha256: String,
}

impl Display for SshSignature {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let dir = shown(&self.folder);
        writeln!(
            f,
            "Wrote manifest.json, manifest.sshsig and allowed_signers to {dir}."
        )?;
        writeln!(f, "At the gate, without makproxy:")?;
        writeln!(
            f,
            "  ssh-keygen -Y verify -n makproxy -f {dir}/allowed_signers -I {} -s {dir}/manifest.sshsig < {dir}/manifest.json",
            escape(&self.principal)
        )?;
        write!(
            f,
            "  unzip -p {} {} | sha256sum      (must print {})",
            shown(&self.bundle),
            escape(&self.data_entry),
            self.data_sha256
        )
    }
}
