//! Reading a bundle in the normative verification order (docs/bundle-format.md):
//! archive scan, signature over the exact manifest bytes, strict manifest, closed
//! world and hashes, then records from a private verified copy.

use super::format::{
    is_cosignature, Limits, FORMAT, MANIFEST, MAX_ENDPOINT, MAX_REMAINING, SIGNATURE, VERSION,
};
use super::manifest::{BackendKind, Manifest, SigFile, SiteRule, MAX_RULE_SIGNERS};
use super::records::Record;
use super::zipscan;
use super::{hex, is_hex, pae, rfc3339, sha256_hex, BundleError, Kind};
use crate::codes::Code;
use crate::keys::Trusted;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::Signature;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A bundle whose signature, manifest and data hash have been verified.
pub struct Verified {
    /// The verified manifest.
    pub manifest: Manifest,
    /// SHA-256 of the manifest's exact bytes.
    pub manifest_sha256: String,
    /// The manifest's exact bytes, as signed (what `export-signature` signs again in
    /// OpenSSH's format).
    pub manifest_bytes: Vec<u8>,
    /// The pinned key that signed it, and its name.
    pub signer: Trusted,
    /// The pinned keys that cosigned it (`cosign`), each distinct from the signer.
    pub cosigners: Vec<Trusted>,
    /// Every cosignature as carried (`manifest.cosig-N` order): checked against pinned
    /// keys in `cosigners` when the reader pins them, by form only in a bundle of this
    /// side's own ([`open_own`]); [`Verified::cosigned_by`] checks one against a key.
    cosignatures: Vec<(String, Signature)>,
    /// The data entry as verified: an unnamed temporary file only this process can
    /// reach, so what `records` parses is exactly what was hashed, whatever happens to
    /// the bundle file meanwhile.
    data: File,
    limits: Limits,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("manifest", &self.manifest)
            .field("signer", &self.signer.name)
            .finish()
    }
}

fn classify_name(name: &[u8], kind: Kind) -> Result<(), BundleError> {
    let text = String::from_utf8_lossy(name);
    let allowed = [MANIFEST, SIGNATURE, kind.data_entry()];
    if let Ok(s) = std::str::from_utf8(name) {
        if allowed.contains(&s) || is_cosignature(s) {
            return Ok(());
        }
    }
    let upper = text.to_ascii_uppercase();
    let stem = upper.split('.').next().unwrap_or("");
    let reserved = ["CON", "PRN", "AUX", "NUL"].contains(&stem)
        || (stem.len() == 4 && (stem.starts_with("COM") || stem.starts_with("LPT")));
    let path_like = text.contains('/')
        || text.contains('\\')
        || text.contains("..")
        || text.contains(':')
        || text.starts_with('/')
        || name.contains(&0)
        || reserved;
    if path_like {
        Err(BundleError::new(
            Code::BndPathTrick,
            &format!("entry {text:?} is a path or reserved name"),
        ))
    } else if text == kind.other().data_entry() {
        Err(BundleError::new(
            Code::BndWrongKind,
            &format!(
                "entry {text:?} belongs to a {} bundle, not a {} bundle",
                kind.other().as_str(),
                kind.as_str()
            ),
        ))
    } else {
        Err(BundleError::new(
            Code::BndUnexpectedEntry,
            &format!("entry {text:?} is not part of a {} bundle", kind.as_str()),
        ))
    }
}

fn json_error(code_syntax: Code, what: &str, e: &serde_json::Error) -> BundleError {
    let msg = e.to_string();
    let code = if msg.contains("unknown field") {
        Code::BndUnknownField
    } else if msg.contains("duplicate field") {
        Code::BndDuplicateKey
    } else {
        code_syntax
    };
    BundleError::new(code, &format!("{what}: {msg}"))
}

fn parse_time(what: &str, s: &str) -> Result<OffsetDateTime, BundleError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        BundleError::new(
            Code::BndManifestSyntax,
            &format!("{what} {s:?} is not an RFC 3339 time"),
        )
    })
}

/// Opens a bundle file under the size cap and reads its raw central directory.
fn scan_file(path: &Path, limits: &Limits) -> Result<(File, Vec<zipscan::RawEntry>), BundleError> {
    // A file that cannot be opened is an I/O problem (exit 1), not a rejection.
    let mut file = File::open(path)
        .map_err(|e| BundleError::new(Code::Io, &format!("{}: {e}", path.display())))?;
    let len = file.metadata().map_err(BundleError::io)?.len();
    if len > limits.max_archive {
        return Err(BundleError::new(
            Code::BndArchiveTooLarge,
            &format!("{len} bytes; at most {}", limits.max_archive),
        ));
    }
    let raw = zipscan::scan(&mut file, len, limits.max_entries, 1 << 20)?;
    Ok((file, raw))
}

/// Reads and verifies a bundle of the expected kind against the pinned keys, using one
/// clock reading `now` for every time check.
pub fn open(
    path: &Path,
    expected: Kind,
    trusted: &[Trusted],
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Verified, BundleError> {
    Ok(open_inner(path, expected, Check::Pinned(trusted), now, limits)?.verified(limits))
}

/// Reads a bundle this side signed, against its own keys (`trusted`: the current one
/// and those it retired): cosignatures by colleagues' keys, which this side does not
/// pin, are checked for their form only, and `cosigners` stays empty.
pub fn open_own(
    path: &Path,
    expected: Kind,
    own: &[Trusted],
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Verified, BundleError> {
    Ok(open_inner(path, expected, Check::Own(own), now, limits)?.verified(limits))
}

/// A bundle read for `cosign`: everything checked but who signed it (a cosigner need
/// not have pinned a colleague's key; the reader at the gate checks every signature):
/// the archive, the signature files' form, the manifest (of `site`), the closed world
/// and the data entry's hash.
pub struct Cosignable {
    /// The manifest.
    pub manifest: Manifest,
    /// Its exact bytes, what a cosignature signs.
    pub manifest_bytes: Vec<u8>,
    /// Every signature entry, by name, with its exact bytes and key ID.
    pub signatures: Vec<(String, Vec<u8>, String)>,
    data: File,
}

impl Cosignable {
    /// Copies the verified data entry into `w`.
    pub fn copy_data(&mut self, w: &mut impl Write) -> io::Result<u64> {
        self.data.seek(SeekFrom::Start(0))?;
        io::copy(&mut (&self.data).take(self.manifest.entries[0].size), w)
    }
}

/// Reads a bundle of `site` for `cosign` (see [`Cosignable`]).
pub fn open_for_cosign(
    path: &Path,
    expected: Kind,
    site: &str,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Cosignable, BundleError> {
    let o = open_inner(path, expected, Check::Site(site), now, limits)?;
    Ok(Cosignable {
        manifest: o.manifest,
        manifest_bytes: o.manifest_bytes,
        signatures: o.signature_files,
        data: o.data,
    })
}

/// Whose signatures `open_inner` checks.
enum Check<'a> {
    /// Every signature by a pinned key.
    Pinned(&'a [Trusted]),
    /// The signature by one of this side's own keys; cosignatures (colleagues' keys,
    /// not pinned here) by their form only.
    Own(&'a [Trusted]),
    /// Only their form, for a manifest of this site (`cosign`).
    Site(&'a str),
}

struct Opened {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signer: Option<Trusted>,
    cosigners: Vec<Trusted>,
    signature_files: Vec<(String, Vec<u8>, String)>,
    cosignatures: Vec<(String, Signature)>,
    data: File,
}

impl Opened {
    /// A bundle whose signer was checked against keys (`Check::Pinned` or `Own`).
    fn verified(self, limits: &Limits) -> Verified {
        Verified {
            manifest_sha256: sha256_hex(&self.manifest_bytes),
            manifest: self.manifest,
            manifest_bytes: self.manifest_bytes,
            signer: self.signer.expect("checked against keys"),
            cosigners: self.cosigners,
            cosignatures: self.cosignatures,
            data: self.data,
            limits: limits.clone(),
        }
    }
}

fn parse_sig(name: &str, bytes: &[u8]) -> Result<(SigFile, Signature), BundleError> {
    let sig: SigFile = serde_json::from_slice(bytes)
        .map_err(|e| BundleError::new(Code::BndSigMalformed, &format!("{name}: {e}")))?;
    // Signature files are not signed: they must be byte for byte what the writer
    // writes, so no padding, reordering or escaping can carry unsigned bytes.
    if sig.to_bytes() != bytes {
        return Err(BundleError::new(
            Code::BndSigMalformed,
            &format!(
                "{name}: not in the one serialisation makproxy writes (padding, order or escapes)"
            ),
        ));
    }
    if sig.format != "makproxy-signature-v1" || !is_hex(&sig.key_id, 16) {
        return Err(BundleError::new(
            Code::BndSigMalformed,
            &format!("{name}: unknown signature format or key ID"),
        ));
    }
    let raw: [u8; 64] = B64
        .decode(sig.signature.as_bytes())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            BundleError::new(
                Code::BndSigMalformed,
                &format!("{name}: signature is not 64 base64-encoded bytes"),
            )
        })?;
    Ok((sig, Signature::from_bytes(&raw)))
}

/// The archive file at `path` read as a bundle of kind `expected`, in phases whose
/// outputs feed the next: scan (the raw directory) → one reading (the zip library sees
/// what the scan saw) → signed parts (verified before parsing) → manifest (parsed,
/// bound to the signer's site) → cosigners → closed world → verified data.
fn open_inner(
    path: &Path,
    expected: Kind,
    check: Check<'_>,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Opened, BundleError> {
    let (file, raw) = scan_file(path, limits)?;
    check_directory(&raw, expected, limits)?;
    let mut archive = one_reading(file, &raw)?;
    // Signature and manifest bytes, under caps; verified before parsing.
    let sbytes = read_entry(&mut archive, SIGNATURE, limits.max_signature)?;
    let mbytes = read_entry(&mut archive, MANIFEST, limits.max_manifest)?;
    let (sig, signature) = parse_sig(SIGNATURE, &sbytes)?;
    let trusted: &[Trusted] = match check {
        Check::Pinned(t) | Check::Own(t) => t,
        Check::Site(_) => &[],
    };
    let signer = match check {
        Check::Site(_) => None,
        Check::Pinned(_) | Check::Own(_) => {
            Some(signer_of(trusted, &sig, &signature, &mbytes, expected)?)
        }
    };
    let manifest = parse_manifest(&mbytes, expected, now, limits)?;
    bind_site(&manifest, signer.as_ref(), &check)?;
    let first = (SIGNATURE.to_string(), sbytes, sig.key_id);
    let signed = Signed {
        check: &check,
        trusted,
        expected,
        mbytes: &mbytes,
        manifest: &manifest,
    };
    let co = signed.cosigners(&mut archive, &raw, signer.as_ref(), first, limits)?;
    closed_world(&raw, &manifest)?;
    let data = copy_data(&mut archive, &manifest)?;
    Ok(Opened {
        manifest,
        manifest_bytes: mbytes,
        signer,
        cosigners: co.cosigners,
        signature_files: co.signature_files,
        cosignatures: co.cosignatures,
        data,
    })
}

type Archive = zip::ZipArchive<BufReader<File>>;

/// The raw central directory, entry by entry: names (case-folded duplicates, special
/// files, the names a bundle may hold), the fields the format fixes, the one method
/// each entry has, sizes under their caps; then the entries every bundle has.
fn check_directory(
    raw: &[zipscan::RawEntry],
    expected: Kind,
    limits: &Limits,
) -> Result<(), BundleError> {
    let mut seen: Vec<&[u8]> = Vec::new();
    for e in raw {
        if seen.iter().any(|n| n.eq_ignore_ascii_case(&e.name)) {
            return Err(BundleError::new(
                Code::BndDuplicateEntry,
                &format!("entry {:?} appears twice", String::from_utf8_lossy(&e.name)),
            ));
        }
        seen.push(&e.name);
        if e.is_special() {
            return Err(BundleError::new(
                Code::BndSpecialEntry,
                &format!(
                    "entry {:?} is not a regular file",
                    String::from_utf8_lossy(&e.name)
                ),
            ));
        }
        classify_name(&e.name, expected)?;
        zipscan::fixed_fields(e)?;
        // The one method each entry has: the data deflated (even when empty, as the
        // writer does), the small JSON files stored.
        let want = if e.name == expected.data_entry().as_bytes() {
            8
        } else {
            0
        };
        if e.method != want {
            return Err(BundleError::new(
                Code::BndHeaderField,
                &format!(
                    "entry {:?} uses compression method {}; a bundle stores it with method {want}",
                    String::from_utf8_lossy(&e.name),
                    e.method
                ),
            ));
        }
        // Encryption, data descriptors and methods other than stored/deflate were refused
        // by the scan's canonical-layout check (zipscan::canonical).
        let cap = if e.name == MANIFEST.as_bytes() {
            limits.max_manifest
        } else if e.name == SIGNATURE.as_bytes()
            || std::str::from_utf8(&e.name).is_ok_and(is_cosignature)
        {
            limits.max_signature
        } else {
            limits.max_data
        };
        let ratio_bomb =
            e.uncompressed > (1 << 20) && e.uncompressed / e.compressed.max(1) > limits.max_ratio;
        if e.uncompressed > cap || ratio_bomb {
            return Err(BundleError::new(
                Code::BndEntryTooLarge,
                &format!(
                    "entry {:?} declares {} bytes from {} compressed",
                    String::from_utf8_lossy(&e.name),
                    e.uncompressed,
                    e.compressed
                ),
            ));
        }
    }
    for required in [SIGNATURE, MANIFEST] {
        if !raw.iter().any(|e| e.name == required.as_bytes()) {
            return Err(BundleError::new(
                Code::BndMissingEntry,
                &format!("no {required} entry"),
            ));
        }
    }
    Ok(())
}

/// The zip library's reading of the checked file: it must see exactly the entries the
/// scan saw, where it saw them (header offset, sizes, CRC), so the bytes read are the
/// bytes checked.
fn one_reading(mut file: File, raw: &[zipscan::RawEntry]) -> Result<Archive, BundleError> {
    file.seek(SeekFrom::Start(0)).map_err(BundleError::io)?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| BundleError::new(Code::BndUnreadable, &e.to_string()))?;
    let differs = || {
        BundleError::new(
            Code::BndUnreadable,
            "archive reads differently from its central directory",
        )
    };
    if archive.len() != raw.len() {
        return Err(differs());
    }
    for e in raw {
        let name = std::str::from_utf8(&e.name).map_err(|_| differs())?;
        let i = archive.index_for_name(name).ok_or_else(differs)?;
        let z = archive.by_index_raw(i).map_err(|_| differs())?;
        if z.header_start() != e.local_offset
            || z.compressed_size() != e.compressed
            || z.size() != e.uncompressed
            || z.crc32() != e.crc32
        {
            return Err(differs());
        }
    }

    Ok(archive)
}

/// The manifest names the site of the key that signed it (or, for `cosign`, this site),
/// and was created before that key was retired.
fn bind_site(
    manifest: &Manifest,
    signer: Option<&Trusted>,
    check: &Check<'_>,
) -> Result<(), BundleError> {
    let site = match (signer, check) {
        (Some(s), _) => s.key.site.as_str(),
        (None, Check::Site(site)) => site,
        (None, Check::Pinned(_) | Check::Own(_)) => {
            unreachable!("a pinned check found its signer")
        }
    };
    if manifest.site != site {
        return Err(BundleError::new(
            Code::BndSiteMismatch,
            &format!(
                "manifest names site {:?} but is signed by a key of site {:?}{}",
                crate::sanitize::escape(&manifest.site),
                site,
                signer
                    .map(|s| format!(" (trusted as {:?})", s.name))
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(s) = signer {
        retired_check(s, manifest)?;
    }
    Ok(())
}

/// What the cosignatures are checked against: the verified manifest and who may sign.
struct Signed<'a> {
    check: &'a Check<'a>,
    trusted: &'a [Trusted],
    expected: Kind,
    mbytes: &'a [u8],
    manifest: &'a Manifest,
}

/// Every signature file of a bundle, and the cosigners they count.
struct Cosigned {
    signature_files: Vec<(String, Vec<u8>, String)>,
    cosigners: Vec<Trusted>,
    cosignatures: Vec<(String, Signature)>,
}

impl Signed<'_> {
    /// Cosignatures (`cosign`): each by a pinned key of the same site, of a signer
    /// (trust name) not counted yet; `first` is the main signature file.
    fn cosigners(
        &self,
        archive: &mut Archive,
        raw: &[zipscan::RawEntry],
        signer: Option<&Trusted>,
        first: (String, Vec<u8>, String),
        limits: &Limits,
    ) -> Result<Cosigned, BundleError> {
        let Signed {
            check,
            trusted,
            expected,
            mbytes,
            manifest,
        } = *self;
        let mut signature_files = vec![first];
        let mut cos_names: Vec<String> = raw
            .iter()
            .filter_map(|e| std::str::from_utf8(&e.name).ok())
            .filter(|n| is_cosignature(n))
            .map(str::to_string)
            .collect();
        cos_names.sort();
        let mut cosigners: Vec<Trusted> = Vec::new();
        let mut cosignatures = Vec::new();
        for name in cos_names {
            let bytes = read_entry(archive, &name, limits.max_signature)?;
            let (cs, csig) = parse_sig(&name, &bytes)?;
            if signature_files.iter().any(|(_, _, id)| *id == cs.key_id) {
                return Err(BundleError::new(
                    Code::BndDuplicateSigner,
                    &format!(
                        "{name} is by key {}, which signed this bundle already",
                        cs.key_id
                    ),
                ));
            }
            if let Check::Pinned(_) = *check {
                let c = signer_of(trusted, &cs, &csig, mbytes, expected)?;
                // One identity (a trust name: a key and every key its rotation statements
                // link to it) counts once, however many of its keys sign.
                let mut counted = signer.into_iter().chain(cosigners.iter());
                if let Some(same) = counted.find(|s| s.name.eq_ignore_ascii_case(&c.name)) {
                    return Err(BundleError::new(
                        Code::BndSameSigner,
                        &format!(
                            "{name} is by key {} of {:?}, which signed this bundle already with key {}: one signer counts once",
                            cs.key_id,
                            c.name,
                            same.key.key_id()
                        ),
                    ));
                }
                if c.key.site != manifest.site {
                    return Err(BundleError::new(
                        Code::BndSiteMismatch,
                        &format!(
                            "{name} is by a key of site {:?}, not {:?}",
                            c.key.site,
                            crate::sanitize::escape(&manifest.site)
                        ),
                    ));
                }
                retired_check(&c, manifest)?;
                cosigners.push(c);
            }
            cosignatures.push((cs.key_id.clone(), csig));
            signature_files.push((name, bytes, cs.key_id));
        }
        Ok(Cosigned {
            signature_files,
            cosigners,
            cosignatures,
        })
    }
}

/// The closed world: the archive holds exactly the listed entries plus manifest and
/// signatures, each of the size the manifest gives.
fn closed_world(raw: &[zipscan::RawEntry], manifest: &Manifest) -> Result<(), BundleError> {
    let listed: Vec<&str> = manifest.entries.iter().map(|e| e.name.as_str()).collect();
    for e in raw {
        let n = String::from_utf8_lossy(&e.name);
        if n != MANIFEST && n != SIGNATURE && !is_cosignature(&n) && !listed.contains(&n.as_ref()) {
            return Err(BundleError::new(
                Code::BndUnexpectedEntry,
                &format!("entry {n:?} is not listed in the manifest"),
            ));
        }
    }
    for entry in &manifest.entries {
        let Some(rawe) = raw.iter().find(|r| r.name == entry.name.as_bytes()) else {
            return Err(BundleError::new(
                Code::BndMissingEntry,
                &format!("listed entry {:?} is missing", entry.name),
            ));
        };
        if rawe.uncompressed != entry.size {
            return Err(BundleError::new(
                Code::BndEntrySize,
                &format!(
                    "entry {:?} is {} bytes in the archive, {} in the manifest",
                    entry.name, rawe.uncompressed, entry.size
                ),
            ));
        }
    }
    Ok(())
}

/// The one data entry (check_manifest), hashed while copied out of the archive.
fn copy_data(archive: &mut Archive, manifest: &Manifest) -> Result<File, BundleError> {
    let entry = &manifest.entries[0];
    let mut data = tempfile::tempfile().map_err(BundleError::io)?;
    let got = copy_entry(archive, &entry.name, entry.size, &mut data)?;
    if got != entry.sha256 {
        return Err(BundleError::new(
            Code::BndEntryHash,
            &format!(
                "entry {:?} does not match its SHA-256 in the signed manifest",
                entry.name
            ),
        ));
    }
    Ok(data)
}

/// The pinned key a signature file names, once its signature verifies over the
/// manifest bytes (a signature of the other kind's type is reported as such).
fn signer_of(
    trusted: &[Trusted],
    sig: &SigFile,
    signature: &Signature,
    mbytes: &[u8],
    expected: Kind,
) -> Result<Trusted, BundleError> {
    let signer = trusted
        .iter()
        .find(|t| t.key.key_id() == sig.key_id)
        .ok_or_else(|| {
            let names: Vec<&str> = trusted.iter().map(|t| t.name.as_str()).collect();
            BundleError::new(
                Code::BndUntrustedKey,
                &format!(
                    "signed by the key with fingerprint {} (key ID {}), which is not trusted here (trusted: {})",
                    sig.key_id
                        .to_ascii_uppercase()
                        .as_bytes()
                        .chunks(4)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect::<Vec<_>>()
                        .join("-"),
                    sig.key_id,
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })?;
    if signer
        .key
        .key
        .verify_strict(&pae(expected.payload_type(), mbytes), signature)
        .is_err()
    {
        if signer
            .key
            .key
            .verify_strict(&pae(expected.other().payload_type(), mbytes), signature)
            .is_ok()
        {
            return Err(BundleError::new(
                Code::BndWrongKind,
                &format!(
                    "this is a {} bundle; a {} bundle was expected",
                    expected.other().as_str(),
                    expected.as_str()
                ),
            ));
        }
        return Err(BundleError::new(
            Code::BndSigInvalid,
            &format!(
                "signature by {:?} does not verify over manifest.json",
                signer.name
            ),
        ));
    }
    Ok(signer.clone())
}

/// The manifest, parsed strictly once its signature verified.
fn parse_manifest(
    mbytes: &[u8],
    expected: Kind,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Manifest, BundleError> {
    let text = std::str::from_utf8(mbytes)
        .map_err(|_| BundleError::new(Code::BndManifestSyntax, "manifest is not UTF-8"))?;
    #[derive(Deserialize)]
    struct Probe {
        format: String,
        version: u32,
    }
    let probe: Probe = serde_json::from_str(text)
        .map_err(|e| json_error(Code::BndManifestSyntax, "manifest", &e))?;
    // CIL bundles did not change in version 2; returns did. Versions 3 and 4 only
    // added optional fields.
    let readable =
        (2..=VERSION).contains(&probe.version) || (probe.version == 1 && expected == Kind::Cil);
    if probe.format != FORMAT || !readable {
        return Err(BundleError::new(
            Code::BndVersion,
            &format!(
                "format {:?} version {}; this build reads {FORMAT} version {VERSION}",
                probe.format, probe.version
            ),
        ));
    }
    let manifest: Manifest = serde_json::from_str(text)
        .map_err(|e| json_error(Code::BndManifestSyntax, "manifest", &e))?;
    check_manifest(&manifest, expected, now, limits)?;
    Ok(manifest)
}

/// A retired key verifies only what it signed before a statement retired it.
fn retired_check(signer: &Trusted, manifest: &Manifest) -> Result<(), BundleError> {
    if let Some(retired) = signer.retired_at {
        if parse_time("created", &manifest.created)? > retired {
            return Err(BundleError::new(
                Code::BndRetiredKey,
                &format!(
                    "signed by the key of {:?} that was retired at {}; this bundle was created {}",
                    signer.name,
                    rfc3339(retired),
                    manifest.created
                ),
            ));
        }
    }
    Ok(())
}

fn check_manifest(
    m: &Manifest,
    expected: Kind,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<(), BundleError> {
    let bad = |d: &str| BundleError::new(Code::BndInconsistent, d);
    if m.kind != expected {
        return Err(BundleError::new(
            Code::BndWrongKind,
            &format!(
                "manifest says {}; a {} bundle was expected",
                m.kind.as_str(),
                expected.as_str()
            ),
        ));
    }
    crate::keys::valid_site(&m.site).map_err(|_| bad("invalid site name"))?;
    if m.sequence == 0
        || m.records > limits.max_records
        || m.tool.len() > 128
        || m.fields.len() > 32
    {
        return Err(bad("sequence, record count, tool or fields out of range"));
    }
    if m.entries.len() != 1
        || m.entries[0].name != expected.data_entry()
        || !is_hex(&m.entries[0].sha256, 64)
    {
        return Err(bad(&format!(
            "a {} bundle lists exactly one entry, {}",
            expected.as_str(),
            expected.data_entry()
        )));
    }
    match (expected, &m.answers, &m.backend) {
        (Kind::Cil, None, None) => {}
        (Kind::Return, Some(a), Some(b)) => {
            if !is_hex(&a.manifest_sha256, 64)
                || BackendKind::parse(&b.name).is_none_or(|k| k.simulated() != b.simulated)
                || b.endpoint.as_ref().is_some_and(|e| e.len() > MAX_ENDPOINT)
            {
                return Err(bad("answers or backend block malformed"));
            }
        }
        _ => return Err(bad("answers/backend present exactly in return bundles")),
    }
    if let Some(r) = &m.remaining {
        if expected != Kind::Return
            || m.version < 3
            || r.len() > MAX_REMAINING
            || r.iter().any(|c| c.activations_remaining < -1)
        {
            return Err(bad(
                "remaining: return bundles of version 3 only, counts of -1 or more",
            ));
        }
        for c in r {
            parse_time("remaining.checked", &c.checked)?;
        }
        let mut seen = std::collections::HashSet::new();
        if !r
            .iter()
            .all(|c| seen.insert(c.extended_product_id.as_str()))
        {
            return Err(bad("remaining names an extended product ID twice"));
        }
    }
    if let Some(r) = &m.site_rule {
        check_site_rule(r, expected, m.version)?;
    }
    let created = parse_time("created", &m.created)?;
    let expires = parse_time("expires", &m.expires)?;
    let skew = time::Duration::seconds(limits.skew_secs);
    if expires <= created || expires - created > time::Duration::days(400) {
        return Err(bad("expires must follow created by at most 400 days"));
    }
    if created > now + skew {
        return Err(BundleError::new(
            Code::BndNotYetValid,
            &format!(
                "created {} is in the future (clock now {})",
                m.created,
                rfc3339(now)
            ),
        ));
    }
    if now > expires + skew {
        return Err(BundleError::new(
            Code::BndExpired,
            &format!("expired {} (clock now {})", m.expires, rfc3339(now)),
        ));
    }
    Ok(())
}

/// A return's `site_rule` (version 4): 1 to [`MAX_RULE_SIGNERS`] signatures required,
/// at most that many signers, each a trust name and a real ed25519 key, no name or key
/// twice.
fn check_site_rule(r: &SiteRule, expected: Kind, version: u32) -> Result<(), BundleError> {
    let bad = |d: &str| BundleError::new(Code::BndInconsistent, &format!("site_rule: {d}"));
    if expected != Kind::Return || version < 4 {
        return Err(bad("return bundles of version 4 only"));
    }
    if r.signatures_required == 0
        || r.signatures_required as usize > MAX_RULE_SIGNERS
        || r.signers.len() > MAX_RULE_SIGNERS
    {
        return Err(bad(&format!(
            "1 to {MAX_RULE_SIGNERS} signatures required and at most {MAX_RULE_SIGNERS} signers"
        )));
    }
    let (mut names, mut keys) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    for s in &r.signers {
        if !crate::keys::valid_name(&s.name) || s.verifying_key().is_none() {
            return Err(bad(
                "a signer needs a trust name and a 32-byte ed25519 key in base64",
            ));
        }
        if !names.insert(s.name.to_ascii_lowercase()) || !keys.insert(s.key.as_str()) {
            return Err(bad("a signer's name or key appears twice"));
        }
    }
    Ok(())
}

/// Inflates (or, stored, copies) one entry's raw bytes into `sink`, with the checks
/// that leave no unsigned byte in it: a deflate stream must end (its final block) exactly
/// at the entry's compressed size, nothing after it, and the output must match the CRC.
/// At most `cap` bytes are produced (one more is an error). Returns the bytes produced
/// and the size the entry declares.
fn inflate_entry(
    archive: &mut Archive,
    name: &str,
    cap: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(u64, u64), BundleError> {
    let unreadable =
        |e: &dyn std::fmt::Display| BundleError::new(Code::BndUnreadable, &format!("{name}: {e}"));
    let index = archive
        .index_for_name(name)
        .ok_or_else(|| unreadable(&"no such entry"))?;
    let mut raw = archive.by_index_raw(index).map_err(|e| unreadable(&e))?;
    let (method, crc_want, declared) = (raw.compression(), raw.crc32(), raw.size());
    let mut crc = flate2::Crc::new();
    let mut produced = 0u64;
    let mut emit = |b: &[u8]| -> Result<(), BundleError> {
        produced += b.len() as u64;
        if produced > cap {
            return Err(BundleError::new(
                Code::BndEntryTooLarge,
                &format!("{name} exceeds {cap} bytes"),
            ));
        }
        crc.update(b);
        sink(b).map_err(|e| unreadable(&e))
    };
    let mut input = vec![0u8; 64 * 1024];
    if method == zip::CompressionMethod::Stored {
        loop {
            let n = raw.read(&mut input).map_err(|e| unreadable(&e))?;
            if n == 0 {
                break;
            }
            emit(&input[..n])?;
        }
    } else {
        let mut d = flate2::Decompress::new(false);
        let mut out = vec![0u8; 64 * 1024];
        let mut ended = false;
        loop {
            let n = raw.read(&mut input).map_err(|e| unreadable(&e))?;
            if n == 0 {
                break;
            }
            let mut chunk = &input[..n];
            loop {
                if ended {
                    if !chunk.is_empty() {
                        return Err(BundleError::new(
                            Code::BndDeflateEnd,
                            &format!("{name}: bytes after the end of its deflate stream, inside its compressed size"),
                        ));
                    }
                    break;
                }
                let (i0, o0) = (d.total_in(), d.total_out());
                let status = d
                    .decompress(chunk, &mut out, flate2::FlushDecompress::None)
                    .map_err(|e| unreadable(&e))?;
                let used = (d.total_in() - i0) as usize;
                let made = (d.total_out() - o0) as usize;
                chunk = &chunk[used..];
                emit(&out[..made])?;
                ended = status == flate2::Status::StreamEnd;
                if !ended && chunk.is_empty() && made < out.len() {
                    break;
                }
                if !ended && used == 0 && made == 0 {
                    // No progress with input left: never drop bytes unread.
                    return Err(unreadable(&"the deflate stream makes no progress"));
                }
            }
        }
        if !ended {
            return Err(BundleError::new(
                Code::BndDeflateEnd,
                &format!("{name}: its deflate stream does not end within its compressed size"),
            ));
        }
    }
    if crc.sum() != crc_want {
        return Err(unreadable(&"CRC-32 does not match its data"));
    }
    Ok((produced, declared))
}

fn read_entry(archive: &mut Archive, name: &str, cap: u64) -> Result<Vec<u8>, BundleError> {
    let mut v = Vec::new();
    let (_, declared) = inflate_entry(archive, name, cap, |b| {
        v.extend_from_slice(b);
        Ok(())
    })?;
    if v.len() as u64 != declared {
        return Err(BundleError::new(
            Code::BndEntrySize,
            &format!("{name}: {} bytes read, {declared} declared", v.len()),
        ));
    }
    Ok(v)
}

/// Streams an entry into `to` (from its start), checking its size; returns its SHA-256.
/// Inflating (with the CRC) runs on the calling thread; hashing and writing the copy on
/// a second one, fed pieces of [`COPY_PIECE`] bytes in order through a bounded channel,
/// so the two overlap. The digest is of exactly the bytes written, in the same order.
fn copy_entry(
    archive: &mut Archive,
    name: &str,
    size: u64,
    to: &mut File,
) -> Result<String, BundleError> {
    let unreadable =
        |e: &dyn std::fmt::Display| BundleError::new(Code::BndUnreadable, &format!("{name}: {e}"));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let (inflated, copied) = std::thread::scope(|s| {
        let copier = s.spawn(|| -> io::Result<String> {
            let mut hasher = Sha256::new();
            for piece in rx {
                hasher.update(&piece);
                (&*to).write_all(&piece)?;
            }
            Ok(hex(&hasher.finalize()))
        });
        let mut piece = Vec::with_capacity(COPY_PIECE);
        let mut inflated = inflate_entry(archive, name, size, |b| {
            piece.extend_from_slice(b);
            if piece.len() >= COPY_PIECE {
                let full = std::mem::replace(&mut piece, Vec::with_capacity(COPY_PIECE));
                // A copier that stopped has its own error, reported below.
                tx.send(full)
                    .map_err(|_| io::Error::other("the private copy stopped"))?;
            }
            Ok(())
        });
        if inflated.is_ok() && !piece.is_empty() && tx.send(piece).is_err() {
            inflated = Err(unreadable(&"the private copy stopped"));
        }
        drop(tx);
        let copied = copier
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the private copy's thread panicked")));
        (inflated, copied)
    });
    // The copier's own failure (a full disk) is the cause when both failed.
    let digest = copied.map_err(|e| unreadable(&e))?;
    let (n, _) = inflated?;
    to.seek(SeekFrom::Start(0)).map_err(BundleError::io)?;
    if n != size {
        return Err(BundleError::new(
            Code::BndEntrySize,
            &format!("{name}: {n} bytes read, {size} declared"),
        ));
    }
    Ok(digest)
}

/// Bytes handed to the private copy's thread at a time (four wait at most).
const COPY_PIECE: usize = 1 << 20;

impl Verified {
    /// The key IDs of the cosignatures carried, in order (a hint each: only
    /// [`cosigned_by`](Self::cosigned_by) or a pinned reading proves who signed).
    pub fn cosignature_key_ids(&self) -> impl Iterator<Item = &str> {
        self.cosignatures.iter().map(|(id, _)| id.as_str())
    }
    /// Whether a cosignature carried here is `key`'s, over these exact manifest bytes.
    pub fn cosigned_by(&self, key: &ed25519_dalek::VerifyingKey) -> bool {
        let id = crate::keys::key_id(key);
        let message = pae(self.manifest.kind.payload_type(), &self.manifest_bytes);
        self.cosignatures
            .iter()
            .any(|(k, sig)| *k == id && key.verify_strict(&message, sig).is_ok())
    }
    /// Parses every record in order, calling `f` for each; it can be called again for
    /// another pass. Records come from the private copy verified by `open`, so every line
    /// is signed data. Handles must run 1..=N in a CIL bundle and strictly increase in a
    /// return bundle; a malformed record ends the walk with an error after `f` has seen
    /// the records before it, so a caller that must act all-or-nothing commits only once
    /// this returns `Ok`.
    pub fn records<R: Record + Send, E: From<BundleError>>(
        &mut self,
        mut f: impl FnMut(R) -> Result<(), E>,
    ) -> Result<(), E> {
        // Lines are cut into blocks on one thread, blocks parsed on two more, and `f`
        // runs on the caller's in the data's order (crate::ordered): the records, their
        // order and the first error are exactly those of one sequential pass.
        let entry = &self.manifest.entries[0];
        (&self.data)
            .seek(SeekFrom::Start(0))
            .map_err(BundleError::io)?;
        let blocks = Blocks {
            reader: BufReader::with_capacity(256 * 1024, (&self.data).take(entry.size)),
            name: &entry.name,
            max_line: self.limits.max_line,
            next_line: 1,
            done: false,
        };
        let (name, listed) = (entry.name.as_str(), self.manifest.records);
        let parse = |b: Block| {
            let weight = b.bytes.len() as u64;
            (parse_block::<R>(b, name, listed), weight)
        };
        crate::ordered::map_in_order(blocks, 2, 8 << 20, parse, |parsed| {
            let mut count = 0u64;
            let mut last = 0u64;
            for (records, end) in parsed {
                for rec in records {
                    count += 1;
                    let h = rec.handle();
                    let ordered = match R::KIND {
                        Kind::Cil => h == count,
                        Kind::Return => h > last,
                    };
                    if !ordered {
                        return Err(BundleError::new(
                            Code::BndRecordOrder,
                            &format!(
                                "{name} line {count}: handle {h} is duplicated or out of order"
                            ),
                        )
                        .into());
                    }
                    last = h;
                    f(rec)?;
                }
                if let Some(e) = end {
                    return Err(e.into());
                }
            }
            if count != listed {
                return Err(BundleError::new(
                    Code::BndRecordCount,
                    &format!("{count} records; the manifest lists {listed}"),
                )
                .into());
            }
            Ok(())
        })
    }
}

/// Lines of the data entry, cut into blocks in order (a line over the limit or without
/// its end ends the walk with a block carrying that error).
struct Blocks<'a, Rd> {
    reader: BufReader<Rd>,
    name: &'a str,
    max_line: usize,
    /// The number of the next line.
    next_line: u64,
    done: bool,
}

/// Consecutive lines of the data entry: their bytes (each line with its `\n`), where
/// each ends, the number of the first, and the error that ended the walk after them.
struct Block {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    first_line: u64,
    end: Option<BundleError>,
}

impl<Rd: Read> Iterator for Blocks<'_, Rd> {
    type Item = Block;
    fn next(&mut self) -> Option<Block> {
        // A block ends after 256 lines or once it holds 256 KiB, so what waits between
        // the threads stays small whatever the lines' length.
        const LINES: usize = 256;
        const BYTES: usize = 256 * 1024;
        if self.done {
            return None;
        }
        let mut b = Block {
            bytes: Vec::with_capacity(LINES * 320),
            ends: Vec::with_capacity(LINES),
            first_line: self.next_line,
            end: None,
        };
        while b.ends.len() < LINES && b.bytes.len() < BYTES {
            let start = b.bytes.len();
            let n = match (&mut self.reader)
                .take(self.max_line as u64 + 1)
                .read_until(b'\n', &mut b.bytes)
            {
                Ok(n) => n,
                Err(e) => {
                    b.bytes.truncate(start);
                    b.end = Some(BundleError::io(e));
                    break;
                }
            };
            if n == 0 {
                self.done = true;
                break;
            }
            let line = self.next_line;
            if b.bytes.last() != Some(&b'\n') {
                b.bytes.truncate(start);
                b.end = Some(if n > self.max_line {
                    BundleError::new(
                        Code::BndLineTooLong,
                        &format!("{} line {line} exceeds {} bytes", self.name, self.max_line),
                    )
                } else {
                    BundleError::new(
                        Code::BndRecord,
                        &format!("{} line {line}: line is not terminated", self.name),
                    )
                });
                break;
            }
            self.next_line += 1;
            b.ends.push(b.bytes.len());
        }
        if b.end.is_some() {
            self.done = true;
        }
        if b.ends.is_empty() && b.end.is_none() {
            return None;
        }
        Some(b)
    }
}

/// Parses and checks the lines of one block: the records up to the first line that
/// breaks a rule, and that rule's error (lines past the manifest's count included).
fn parse_block<R: Record>(b: Block, name: &str, listed: u64) -> (Vec<R>, Option<BundleError>) {
    let mut out = Vec::with_capacity(b.ends.len());
    let mut start = 0;
    for (i, &end) in b.ends.iter().enumerate() {
        let line = b.first_line + i as u64;
        if line > listed {
            let e = BundleError::new(
                Code::BndRecordCount,
                &format!("more than the {listed} records the manifest lists"),
            );
            return (out, Some(e));
        }
        let text = &b.bytes[start..end - 1];
        start = end;
        let rec: R = match serde_json::from_slice(text) {
            Ok(r) => r,
            Err(e) => {
                let mut be = json_error(Code::BndRecord, &format!("{name} line {line}"), &e);
                if be.code == Code::BndManifestSyntax {
                    be.code = Code::BndRecord;
                }
                return (out, Some(be));
            }
        };
        if let Err(d) = rec.check() {
            let e = BundleError::new(Code::BndRecord, &format!("{name} line {line}: {d}"));
            return (out, Some(e));
        }
        out.push(rec);
    }
    (out, b.end)
}

/// Guesses a bundle's kind from its entry names, for commands that accept either kind.
/// The guess only selects which verification to run; it is never trusted by itself.
pub fn peek_kind(path: &Path, limits: &Limits) -> Result<Kind, BundleError> {
    let (_, raw) = scan_file(path, limits)?;
    if raw
        .iter()
        .any(|e| e.name == Kind::Return.data_entry().as_bytes())
    {
        Ok(Kind::Return)
    } else {
        Ok(Kind::Cil)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks of `data` (a line limit of `max_line`): the number of lines in each,
    /// and the code of the error that ended the walk, if one did.
    fn blocks(data: &[u8], max_line: usize) -> (Vec<usize>, Option<Code>) {
        let mut code = None;
        let sizes = Blocks {
            reader: BufReader::new(data),
            name: "records.jsonl",
            max_line,
            next_line: 1,
            done: false,
        }
        .map(|b| {
            code = code.or(b.end.as_ref().map(|e| e.code));
            b.ends.len()
        })
        .collect();
        (sizes, code)
    }

    fn lines(n: usize, len: usize) -> Vec<u8> {
        let mut line = vec![b'x'; len - 1];
        line.push(b'\n');
        line.repeat(n)
    }

    /// A block ends after 256 lines, or as soon as it holds 256 KiB, whichever comes
    /// first: what waits between the threads stays small whatever the lines' length.
    #[test]
    fn a_block_ends_at_256_lines_or_256_kib() {
        assert_eq!(blocks(&lines(600, 10), 16384), (vec![256, 256, 88], None));
        // 128 lines of 2 KiB are exactly 256 KiB: the block ends there, not a line later.
        assert_eq!(blocks(&lines(300, 2048), 16384), (vec![128, 128, 44], None));
        assert_eq!(blocks(&lines(300, 2000), 16384).0[0], 132);
        assert_eq!(blocks(b"", 16384), (vec![], None));
    }

    /// A last line without its end is "not terminated" up to the line limit itself, and
    /// "too long" only beyond it.
    #[test]
    fn an_unterminated_last_line_is_too_long_only_beyond_the_limit() {
        let mut data = lines(3, 10);
        data.extend(vec![b'x'; 100]);
        assert_eq!(blocks(&data, 100), (vec![3], Some(Code::BndRecord)));
        data.push(b'x');
        assert_eq!(blocks(&data, 100), (vec![3], Some(Code::BndLineTooLong)));
    }

    /// A writer's `SiteRule::new` is always a rule the reader takes: whatever pins it is
    /// given (names twice in other case, a key twice, a bad name, more than the limit,
    /// a rule asking for none or for too many), what it keeps is within every bound.
    #[test]
    fn a_site_rule_a_writer_builds_is_one_the_reader_accepts() {
        use crate::bundle::{RuleSigner, SiteRule, MAX_RULE_SIGNERS};
        let key = |i: u8| ed25519_dalek::SigningKey::from_bytes(&[i; 32]).verifying_key();
        let mut pins: Vec<RuleSigner> = (0..70)
            .map(|i| RuleSigner::new(&format!("op{i}"), &key(i)))
            .collect();
        pins.insert(1, RuleSigner::new("OP0", &key(200)));
        pins.insert(2, RuleSigner::new("other", &key(0)));
        pins.insert(3, RuleSigner::new("../x", &key(201)));
        for required in [0, 2, 1000] {
            let r = SiteRule::new(required, pins.clone());
            assert!(check_site_rule(&r, Kind::Return, 4).is_ok(), "{required}");
            assert_eq!(r.signers.len(), MAX_RULE_SIGNERS);
            assert_eq!(r.signers[0].name, "op0");
            assert_eq!(
                r.signers[1].name, "op1",
                "the case twin, the key twin and the bad name are left out"
            );
        }
        assert_eq!(SiteRule::new(0, vec![]).signatures_required, 1);
        assert_eq!(SiteRule::new(1000, vec![]).signatures_required, 64);
    }

    /// Entry names: exactly the three of the kind pass; path tricks and DOS device
    /// names (with or without an extension, any case) are path tricks; the other
    /// kind's data entry and anything else have codes of their own.
    #[test]
    fn entry_names_are_classified_by_the_allowlist_first() {
        let code = |n: &[u8], k: Kind| classify_name(n, k).err().map(|e| e.code);
        for ok in [MANIFEST, SIGNATURE, "records.jsonl"] {
            assert_eq!(code(ok.as_bytes(), Kind::Cil), None, "{ok}");
        }
        for trick in [
            &b"a/b"[..],
            b"a\\b",
            b"..x",
            b"c:x",
            b"/x",
            b"x\0y",
            b"CON",
            b"nul.json",
            b"COM1",
            b"lpt9.txt",
            b"Aux.jsonl",
        ] {
            assert_eq!(
                code(trick, Kind::Cil),
                Some(Code::BndPathTrick),
                "{trick:?}"
            );
        }
        // Four letters starting like a device but not one of them are just unexpected.
        for plain in [&b"COMMA"[..], b"LPT", b"CONSOLE.json", b"notes.txt"] {
            assert_eq!(
                code(plain, Kind::Cil),
                Some(Code::BndUnexpectedEntry),
                "{plain:?}"
            );
        }
        assert_eq!(code(b"results.jsonl", Kind::Cil), Some(Code::BndWrongKind));
        assert_eq!(
            code(b"records.jsonl", Kind::Return),
            Some(Code::BndWrongKind)
        );
    }

    fn manifest(kind: Kind) -> Manifest {
        let ret = kind == Kind::Return;
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            kind,
            bundle_id: super::super::BundleId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            site: "plant-a".into(),
            sequence: 1,
            created: "2026-11-22T00:00:00Z".into(),
            expires: "2026-12-22T00:00:00Z".into(),
            tool: "t".into(),
            signer_key_id: "0123456789abcdef".into(),
            records: 1,
            fields: vec!["handle".into()],
            entries: vec![super::super::Entry {
                name: kind.data_entry().into(),
                size: 1,
                sha256: "0".repeat(64),
            }],
            answers: ret.then(|| super::super::Answers {
                bundle_id: super::super::BundleId::parse("0123456789abcdef0123456789abcdef")
                    .unwrap(),
                manifest_sha256: "0".repeat(64),
                site: "plant-a".into(),
                sequence: 1,
            }),
            backend: ret.then(|| super::super::BackendInfo {
                name: "microsoft".into(),
                simulated: false,
                endpoint: Some("x".repeat(MAX_ENDPOINT)),
            }),
            remaining: None,
            site_rule: None,
        }
    }

    /// The private copy is made on a second thread in pieces: over several pieces and a
    /// partial last one, its bytes and digest are exactly the entry's, in order; an
    /// entry longer than the size it is copied at is refused, the copy notwithstanding.
    #[test]
    fn the_private_copy_holds_exactly_the_hashed_bytes_over_many_pieces() {
        use std::io::Write as _;
        let data: Vec<u8> = (0..(3 * COPY_PIECE + 17) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut zipped = tempfile::tempfile().unwrap();
        {
            let mut z = zip::ZipWriter::new(&mut zipped);
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            z.start_file("records.jsonl", o).unwrap();
            z.write_all(&data).unwrap();
            z.finish().unwrap();
        }
        let open = || {
            let mut f = zipped.try_clone().unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            zip::ZipArchive::new(BufReader::new(f)).unwrap()
        };
        let mut copy = tempfile::tempfile().unwrap();
        let size = data.len() as u64;
        let digest = copy_entry(&mut open(), "records.jsonl", size, &mut copy).unwrap();
        assert_eq!(digest, sha256_hex(&data));
        let mut back = Vec::new();
        copy.read_to_end(&mut back).unwrap();
        assert!(back == data, "the copy is the entry, byte for byte");
        let mut short = tempfile::tempfile().unwrap();
        let e = copy_entry(&mut open(), "records.jsonl", size - 1, &mut short).unwrap_err();
        assert_eq!(e.code, Code::BndEntryTooLarge);
    }

    /// A bundle ID is 32 lower-case hex digits or the manifest does not parse: in the
    /// header and in a return's `answers` alike (no value of the type is anything else).
    #[test]
    fn a_manifest_whose_bundle_ids_are_not_32_lower_case_hex_digits_does_not_parse() {
        let now = time::macros::datetime!(2026-11-23 00:00 UTC);
        let limits = Limits::default();
        let parse = |kind: Kind, f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(manifest(kind)).unwrap();
            f(&mut v);
            parse_manifest(&serde_json::to_vec(&v).unwrap(), kind, now, &limits).map_err(|e| e.code)
        };
        let good = "0123456789abcdef0123456789abcdef";
        for kind in [Kind::Cil, Kind::Return] {
            assert!(parse(kind, &|_| {}).is_ok());
        }
        for bad in [
            "0123456789ABCDEF0123456789ABCDEF",
            &good[1..],
            &format!("{good}0"),
            &format!(" {}", &good[1..]),
            "0123456789abcdef0123456789abcdeg",
            "",
        ] {
            let syntax = Err(Code::BndManifestSyntax);
            assert_eq!(
                parse(Kind::Cil, &|v| v["bundle_id"] = bad.into()),
                syntax,
                "{bad:?}"
            );
            assert_eq!(
                parse(Kind::Return, &|v| v["answers"]["bundle_id"] = bad.into()),
                syntax,
                "answers {bad:?}"
            );
        }
        assert_eq!(
            super::super::BundleId::parse(good).map(|b| b.to_string()),
            Some(good.to_string())
        );
        let fresh = super::super::BundleId::random();
        assert_eq!(
            super::super::BundleId::parse(fresh.as_str()),
            Some(fresh.clone())
        );
        assert_ne!(super::super::BundleId::random(), fresh);
    }

    /// Every rule of the manifest's content at its exact boundary: the value at the
    /// limit passes, one step over fails (found by mutation testing).
    #[test]
    fn manifest_rules_hold_at_their_exact_limits() {
        let now = time::macros::datetime!(2026-11-23 00:00 UTC);
        let limits = Limits::default();
        let check = |m: &Manifest| check_manifest(m, m.kind, now, &limits).map_err(|e| e.code);
        let edit = |kind: Kind, f: &dyn Fn(&mut Manifest)| {
            let mut m = manifest(kind);
            f(&mut m);
            check(&m)
        };
        let bad = Err(Code::BndInconsistent);
        assert_eq!(check(&manifest(Kind::Cil)), Ok(()));
        assert_eq!(
            check(&manifest(Kind::Return)),
            Ok(()),
            "endpoint at its limit"
        );
        assert_eq!(edit(Kind::Cil, &|m| m.sequence = 0), bad);
        assert_eq!(edit(Kind::Cil, &|m| m.records = limits.max_records), Ok(()));
        assert_eq!(
            edit(Kind::Cil, &|m| m.records = limits.max_records + 1),
            bad
        );
        assert_eq!(edit(Kind::Cil, &|m| m.tool = "t".repeat(128)), Ok(()));
        assert_eq!(edit(Kind::Cil, &|m| m.tool = "t".repeat(129)), bad);
        assert_eq!(
            edit(Kind::Cil, &|m| m.fields = vec!["f".into(); 32]),
            Ok(())
        );
        assert_eq!(edit(Kind::Cil, &|m| m.fields = vec!["f".into(); 33]), bad);
        assert_eq!(
            edit(Kind::Cil, &|m| m.entries.push(m.entries[0].clone())),
            bad
        );
        assert_eq!(
            edit(Kind::Cil, &|m| m.entries[0].name = "results.jsonl".into()),
            bad
        );
        assert_eq!(
            edit(Kind::Cil, &|m| m.entries[0].sha256 = "g".repeat(64)),
            bad
        );
        // Remaining counts: returns of version 3 only, -1 or more, one per ePID, real times.
        let count = |epid: &str, n: i64| super::super::RemainingCount {
            extended_product_id: crate::ids::ExtendedProductId::parse(epid).unwrap(),
            activations_remaining: n,
            spent: 0,
            checked: "2026-11-22T00:00:00Z".into(),
        };
        let e1 = "03612-03305-317-008912-02-1033-9200.0000-0662023";
        let e2 = "03612-04012-000-000051-03-1033-17763.0000-3052026";
        let remaining = |v: Vec<super::super::RemainingCount>| {
            move |m: &mut Manifest| m.remaining = Some(v.clone())
        };
        assert_eq!(
            edit(Kind::Return, &remaining(vec![count(e1, -1), count(e2, 0)])),
            Ok(())
        );
        assert_eq!(edit(Kind::Return, &remaining(vec![count(e1, -2)])), bad);
        assert_eq!(
            edit(Kind::Return, &remaining(vec![count(e1, 5), count(e1, 4)])),
            bad
        );
        assert_eq!(edit(Kind::Cil, &remaining(vec![count(e1, 5)])), bad);
        assert_eq!(
            edit(Kind::Return, &|m| {
                m.version = 2;
                m.remaining = Some(vec![count(e1, 5)]);
            }),
            bad,
            "version 2 had no remaining counts"
        );
        assert_eq!(
            edit(Kind::Return, &|m| {
                m.version = 3;
                m.remaining = Some(vec![count(e1, 5)]);
            }),
            Ok(()),
            "version 3 brought them"
        );
        // At most MAX_REMAINING counts, each of its own ePID (so the bound, not the
        // one-per-ePID rule, is what refuses one more).
        let many = |n: usize| -> Vec<super::super::RemainingCount> {
            (0..n)
                .map(|i| {
                    count(
                        &format!("03612-03305-317-{i:06}-02-1033-9200.0000-0662023"),
                        1,
                    )
                })
                .collect()
        };
        assert_eq!(edit(Kind::Return, &remaining(many(MAX_REMAINING))), Ok(()));
        assert_eq!(edit(Kind::Return, &remaining(many(MAX_REMAINING + 1))), bad);
        assert!(edit(Kind::Return, &|m| {
            let mut c = count(e1, 1);
            c.checked = "yesterday".into();
            m.remaining = Some(vec![c]);
        })
        .is_err());
        let answers = |f: &dyn Fn(&mut super::super::Answers)| {
            edit(Kind::Return, &|m| f(m.answers.as_mut().unwrap()))
        };
        assert_eq!(answers(&|a| a.manifest_sha256 = "x".into()), bad);
        let backend = |f: &dyn Fn(&mut super::super::BackendInfo)| {
            edit(Kind::Return, &|m| f(m.backend.as_mut().unwrap()))
        };
        assert_eq!(backend(&|b| b.name = "phone".into()), bad);
        assert_eq!(
            backend(&|b| b.simulated = true),
            bad,
            "only the simulator is simulated"
        );
        assert_eq!(
            backend(&|b| b.endpoint = Some("x".repeat(MAX_ENDPOINT + 1))),
            bad
        );
        // Times: validity of at most 400 days, 10 minutes of skew either way.
        let at = |t: OffsetDateTime| rfc3339(t);
        let created = time::macros::datetime!(2026-11-22 00:00 UTC);
        let span = |d: time::Duration| edit(Kind::Cil, &|m| m.expires = at(created + d));
        assert_eq!(span(time::Duration::days(400)), Ok(()));
        assert_eq!(
            span(time::Duration::days(400) + time::Duration::seconds(1)),
            bad
        );
        assert_eq!(span(time::Duration::ZERO), bad);
        let skew = time::Duration::seconds(limits.skew_secs);
        let made = |t: OffsetDateTime| {
            edit(Kind::Cil, &|m| {
                m.created = at(t);
                m.expires = at(t + time::Duration::days(1));
            })
        };
        assert_eq!(made(now + skew), Ok(()));
        assert_eq!(
            made(now + skew + time::Duration::seconds(1)),
            Err(Code::BndNotYetValid)
        );
        let ends = |t: OffsetDateTime| {
            edit(Kind::Cil, &|m| {
                m.created = at(t - time::Duration::days(1));
                m.expires = at(t);
            })
        };
        assert_eq!(ends(now - skew), Ok(()));
        assert_eq!(
            ends(now - skew - time::Duration::seconds(1)),
            Err(Code::BndExpired)
        );
    }

    #[test]
    fn hex_fields_have_their_exact_length_and_lower_case_digits() {
        assert!(is_hex("0123456789abcdef", 16));
        assert!(!is_hex("0123456789abcde", 16));
        assert!(!is_hex("0123456789abcdef0", 16));
        assert!(!is_hex("0123456789abcdeg", 16));
    }
}
