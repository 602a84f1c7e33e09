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

use crate::codes::Code;
use crate::ids::{ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId};
use crate::keys::{key_id, Trusted};
use crate::zipscan;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Format name and the only version this build reads and writes.
pub const FORMAT: &str = "makproxy-bundle";
/// Version 2 added `backend` to every return record and `endpoint` to the return's
/// backend block. CIL bundles are unchanged, so version 1 CIL bundles are still read.
pub const VERSION: u32 = 2;
/// Longest failure message in a return record, in bytes.
pub const MAX_FAILURE_MESSAGE: usize = 1024;
/// Longest makproxy code in a return record (`MP-BKD-001`).
pub const MAX_FAILURE_CODE: usize = 16;
/// Longest activation-service error code in a return record (`0x80131600`).
pub const MAX_SERVICE_CODE: usize = 32;
/// Longest backend endpoint (URL or program) recorded in a return.
pub const MAX_ENDPOINT: usize = 512;
/// Longest product name in a CIL record, in bytes.
pub const MAX_PRODUCT_NAME: usize = 256;

/// Whether a service error code can be carried in a return: 1-32 ASCII letters, digits,
/// `x`, `-` or `_` (codes are reported verbatim, so nothing else is expected).
pub fn valid_service_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SERVICE_CODE
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";

/// A bundle rejection: a stable code and what exactly was wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct BundleError {
    pub code: Code,
    pub detail: String,
}

impl BundleError {
    pub fn new(code: Code, detail: &str) -> Self {
        Self {
            code,
            detail: crate::sanitize::escape(detail).into_owned(),
        }
    }
    fn io(e: io::Error) -> Self {
        Self::new(Code::BndUnreadable, &e.to_string())
    }
}

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
    pub fn data_entry(self) -> &'static str {
        match self {
            Kind::Cil => "records.jsonl",
            Kind::Return => "results.jsonl",
        }
    }
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

/// DSSE v1 pre-authentication encoding.
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

/// One archive entry as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What a return bundle answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    pub bundle_id: String,
    pub manifest_sha256: String,
    pub site: String,
    pub sequence: u64,
}

/// Which backend produced a return bundle's CIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendInfo {
    pub name: String,
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
    Microsoft,
    Manual,
    Command,
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
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Microsoft => "microsoft",
            BackendKind::Manual => "manual",
            BackendKind::Command => "command",
            BackendKind::Simulator => "simulator",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// Only the simulator's answers activate nothing.
    pub fn simulated(self) -> bool {
        self == BackendKind::Simulator
    }
}

/// The signed statement. Everything in it is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub kind: Kind,
    /// 32 lower-case hex digits, random.
    pub bundle_id: String,
    /// The sender's site name.
    pub site: String,
    /// Per-sender sequence number, starting at 1.
    pub sequence: u64,
    pub created: String,
    pub expires: String,
    pub tool: String,
    pub signer_key_id: String,
    pub records: u64,
    /// Names of the record fields that cross the gap in this bundle.
    pub fields: Vec<String>,
    pub entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Answers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendInfo>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigFile {
    format: String,
    key_id: String,
    signature: String,
}

/// A record of a CIL bundle: what one product needs activated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CilRecord {
    /// 1-based position in the bundle; the secure ledger maps it back to the machine.
    pub handle: u64,
    pub installation_id: InstallationId,
    pub extended_product_id: ExtendedProductId,
    pub activation_id: Guid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Only with `pack --include-hostnames`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
}

/// Where a return record's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Obtained from the backend during this run.
    Backend,
    /// Served from the online journal: no activation was spent.
    Journal,
}

/// A per-record failure in a return bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFailure {
    /// makproxy code, e.g. `MP-BKD-001`.
    pub code: String,
    /// The activation service's own code, verbatim, e.g. `0x7F`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_code: Option<String>,
    pub message: String,
}

impl RecordFailure {
    /// `[CODE] SERVICE-CODE message` for a terminal, every part escaped.
    pub fn line(&self) -> String {
        use crate::sanitize::escape;
        format!(
            "[{}]{} {}",
            escape(&self.code),
            self.service_code
                .as_deref()
                .map(|c| format!(" {}", escape(c)))
                .unwrap_or_default(),
            escape(&self.message)
        )
    }
}

/// A record of a return bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnRecord {
    pub handle: u64,
    pub installation_id: InstallationId,
    pub extended_product_id: ExtendedProductId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_id: Option<ConfirmationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RecordFailure>,
    pub source: Source,
    /// The backend that produced this answer (or refusal).
    pub backend: BackendKind,
    pub simulated: bool,
}

/// Records of either kind.
pub trait Record: DeserializeOwned + Serialize {
    const KIND: Kind;
    fn handle(&self) -> u64;
    /// Cross-field checks serde cannot express.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Record for CilRecord {
    const KIND: Kind = Kind::Cil;
    fn handle(&self) -> u64 {
        self.handle
    }
    fn check(&self) -> Result<(), String> {
        match &self.product {
            Some(p) if p.len() > MAX_PRODUCT_NAME => {
                Err(format!("product name longer than {MAX_PRODUCT_NAME} bytes"))
            }
            _ => Ok(()),
        }
    }
}

impl Record for ReturnRecord {
    const KIND: Kind = Kind::Return;
    fn handle(&self) -> u64 {
        self.handle
    }
    fn check(&self) -> Result<(), String> {
        match (&self.confirmation_id, &self.failure) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("exactly one of confirmation_id and failure must be present".into()),
        }
        if self.simulated != self.backend.simulated() {
            return Err("simulated flag disagrees with the backend".into());
        }
        match &self.failure {
            Some(f)
                if f.message.len() > MAX_FAILURE_MESSAGE
                    || f.code.len() > MAX_FAILURE_CODE
                    || f.service_code
                        .as_ref()
                        .is_some_and(|s| !valid_service_code(s)) =>
            {
                Err("failure text too long or service code malformed".into())
            }
            _ => Ok(()),
        }
    }
}

/// Resource limits applied while reading. The defaults allow several million records.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_archive: u64,
    pub max_entries: usize,
    pub max_manifest: u64,
    pub max_signature: u64,
    pub max_data: u64,
    /// Largest allowed uncompressed/compressed ratio for entries over 1 MiB.
    pub max_ratio: u64,
    pub max_line: usize,
    pub max_records: u64,
    /// Allowed clock skew between the two sides, in seconds.
    pub skew_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_archive: 1 << 30,
            max_entries: 8,
            max_manifest: 1 << 20,
            max_signature: 4096,
            max_data: 3 << 30,
            max_ratio: 200,
            max_line: 16 * 1024,
            max_records: 10_000_000,
            skew_secs: 600,
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random bundle ID.
pub fn new_bundle_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("operating system RNG");
    hex(&b)
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn hashing_copy(mut from: impl Read, to: &mut impl Write, hasher: &mut Sha256) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = from.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        hasher.update(&buf[..k]);
        to.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// Streams records into the archive as they come. Records are handed in batches to a
/// second thread that serialises, hashes and deflates them into a temporary archive next
/// to the output, so the caller's work (reading the ledger or journal) overlaps with
/// the bundle's; `finish` adds the signed manifest and moves the archive into place.
/// Memory use does not grow with the record count.
pub struct BundleWriter<R: Record> {
    count: u64,
    /// Records not yet handed to the writer thread.
    batch: Vec<R>,
    to_writer: Option<mpsc::SyncSender<Vec<R>>>,
    writer: Option<std::thread::JoinHandle<io::Result<Streamed>>>,
}

/// What the writer thread produced: the archive with its data entry, and that entry's
/// SHA-256 and size.
struct Streamed {
    archive: zip::ZipWriter<io::BufWriter<tempfile::NamedTempFile>>,
    sha256: String,
    size: u64,
}

/// Records handed over at a time, batches waiting at most, and bytes deflated at a time.
const BATCH: usize = 1024;
const BATCHES_QUEUED: usize = 4;
const CHUNK: usize = 256 * 1024;

/// What `finish` fills in from the caller; the writer adds entries, counts and signer.
pub struct Header {
    pub bundle_id: String,
    pub site: String,
    pub sequence: u64,
    pub created: OffsetDateTime,
    pub expires: OffsetDateTime,
    pub tool: String,
    pub fields: Vec<String>,
    pub answers: Option<Answers>,
    pub backend: Option<BackendInfo>,
}

/// A written bundle.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub manifest_sha256: String,
}

impl<R: Record + Send + 'static> BundleWriter<R> {
    /// Starts a bundle that will be written to `out` (the temporary archive lives in the
    /// same directory).
    pub fn new(out: &Path) -> io::Result<Self> {
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = crate::fsutil::new_partial(dir)?;
        let mut archive = zip::ZipWriter::new(io::BufWriter::with_capacity(256 * 1024, tmp));
        archive
            .start_file(R::KIND.data_entry(), entry_options(true))
            .map_err(io::Error::other)?;
        let (tx, rx) = mpsc::sync_channel::<Vec<R>>(BATCHES_QUEUED);
        let writer = std::thread::Builder::new()
            .name("bundle-writer".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                let mut size = 0u64;
                let mut chunk = Vec::with_capacity(CHUNK + 16 * 1024);
                for batch in rx {
                    for rec in batch {
                        let start = chunk.len();
                        serde_json::to_writer(&mut chunk, &rec).map_err(io::Error::other)?;
                        chunk.push(b'\n');
                        hasher.update(&chunk[start..]);
                    }
                    if chunk.len() >= CHUNK {
                        archive.write_all(&chunk)?;
                        size += chunk.len() as u64;
                        chunk.clear();
                    }
                }
                archive.write_all(&chunk)?;
                size += chunk.len() as u64;
                Ok(Streamed {
                    archive,
                    sha256: hex(&hasher.finalize()),
                    size,
                })
            })?;
        Ok(Self {
            count: 0,
            batch: Vec::with_capacity(BATCH),
            to_writer: Some(tx),
            writer: Some(writer),
        })
    }

    /// Appends one record; its handle must be the next in order.
    /// Adds a record. It must pass the reader's own per-record check (`Record::check`),
    /// so nothing written can make the bundle unreadable on the other side; a record
    /// that does not is refused here (`InvalidInput`) and the bundle stays unwritten.
    pub fn push(&mut self, rec: R) -> io::Result<()> {
        rec.check().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "record {} would be refused by the reader: {e}",
                    rec.handle()
                ),
            )
        })?;
        self.batch.push(rec);
        self.count += 1;
        if self.batch.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Gives the batched records to the writer thread (an error there surfaces here).
    fn hand_over(&mut self) -> io::Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let sent = self.to_writer.as_ref().map(|tx| tx.send(batch));
        if matches!(sent, Some(Ok(()))) {
            return Ok(());
        }
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| io::Error::other("bundle writer stopped")))
    }

    /// Waits for the writer thread to drain and returns what it wrote.
    fn join(&mut self) -> io::Result<Streamed> {
        self.to_writer = None;
        self.writer
            .take()
            .ok_or_else(|| io::Error::other("bundle writer stopped"))?
            .join()
            .map_err(|_| io::Error::other("bundle writer panicked"))?
    }

    /// Signs the manifest and moves the archive to `out`, never replacing a file.
    pub fn finish(
        mut self,
        header: Header,
        key: &SigningKey,
        out: &Path,
    ) -> Result<Written, BundleError> {
        let kind = R::KIND;
        if out.exists() {
            return Err(exists(out));
        }
        if !self.batch.is_empty() {
            self.hand_over().map_err(BundleError::io)?;
        }
        let Streamed {
            archive: mut z,
            sha256,
            size,
        } = self.join().map_err(BundleError::io)?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            kind,
            bundle_id: header.bundle_id,
            site: header.site,
            sequence: header.sequence,
            created: rfc3339(header.created),
            expires: rfc3339(header.expires),
            tool: header.tool,
            signer_key_id: key_id(&key.verifying_key()),
            records: self.count,
            fields: header.fields,
            entries: vec![Entry {
                name: kind.data_entry().into(),
                size,
                sha256,
            }],
            answers: header.answers,
            backend: header.backend,
        };
        let mut mbytes = serde_json::to_vec_pretty(&manifest).expect("serialisable");
        mbytes.push(b'\n');
        let sig = key.sign(&pae(kind.payload_type(), &mbytes));
        let sigfile = SigFile {
            format: "makproxy-signature-v1".into(),
            key_id: manifest.signer_key_id.clone(),
            signature: B64.encode(sig.to_bytes()),
        };
        let mut sbytes = serde_json::to_vec_pretty(&sigfile).expect("serialisable");
        sbytes.push(b'\n');

        let placed = (|| -> io::Result<()> {
            z.start_file(MANIFEST, entry_options(false))
                .map_err(io::Error::other)?;
            z.write_all(&mbytes)?;
            z.start_file(SIGNATURE, entry_options(false))
                .map_err(io::Error::other)?;
            z.write_all(&sbytes)?;
            let tmp = z
                .finish()
                .map_err(io::Error::other)?
                .into_inner()
                .map_err(|e| e.into_error())?;
            crate::fsutil::sync_file(tmp.as_file())?;
            let dir = tmp.path().parent().map(Path::to_path_buf);
            tmp.persist_noclobber(out).map_err(|e| e.error)?;
            dir.map_or(Ok(()), |d| crate::fsutil::sync_dir(&d))
        })();
        match placed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists(out)),
            Err(e) => return Err(BundleError::io(e)),
        }
        Ok(Written {
            path: out.to_path_buf(),
            manifest_sha256: sha256_hex(&mbytes),
            manifest,
        })
    }
}

impl<R: Record> Drop for BundleWriter<R> {
    /// An unfinished bundle: stop the writer thread and remove its temporary archive.
    fn drop(&mut self) {
        self.to_writer = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn exists(out: &Path) -> BundleError {
    BundleError::new(
        Code::BndExists,
        &format!(
            "{} already exists; bundles are never overwritten",
            out.display()
        ),
    )
}

/// Zip options of the entries makproxy writes: the data entry deflated (level 3, fast
/// and within a few percent of the default's size), manifest and signature stored.
fn entry_options(deflated: bool) -> zip::write::SimpleFileOptions {
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o644);
    if deflated {
        stored
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(3))
    } else {
        stored
    }
}

/// A bundle whose signature, manifest and data hash have been verified.
pub struct Verified {
    pub manifest: Manifest,
    pub manifest_sha256: String,
    pub signer: Trusted,
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
        if allowed.contains(&s) {
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

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
    // 1. The raw central directory: names, duplicates, special files, sizes.
    let (mut file, raw) = scan_file(path, limits)?;
    let mut seen: Vec<&[u8]> = Vec::new();
    for e in &raw {
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
        if e.flags & 0x1 != 0 || !matches!(e.method, 0 | 8) {
            return Err(BundleError::new(
                Code::BndUnsupportedZip,
                "encrypted entry or unsupported compression method",
            ));
        }
        let cap = if e.name == MANIFEST.as_bytes() {
            limits.max_manifest
        } else if e.name == SIGNATURE.as_bytes() {
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
    file.seek(SeekFrom::Start(0)).map_err(BundleError::io)?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| BundleError::new(Code::BndUnreadable, &e.to_string()))?;
    // One reading: the zip crate must see exactly the entries the scan saw, where it saw
    // them (header offset, sizes, CRC), so the bytes read are the bytes checked.
    let differs = || {
        BundleError::new(
            Code::BndUnreadable,
            "archive reads differently from its central directory",
        )
    };
    if archive.len() != raw.len() {
        return Err(differs());
    }
    for e in &raw {
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

    // 2. Signature and manifest bytes, under caps; verify before parsing.
    let sbytes = read_entry(&mut archive, SIGNATURE, limits.max_signature)?;
    let mbytes = read_entry(&mut archive, MANIFEST, limits.max_manifest)?;
    let sig: SigFile = serde_json::from_slice(&sbytes)
        .map_err(|e| BundleError::new(Code::BndSigMalformed, &e.to_string()))?;
    if sig.format != "makproxy-signature-v1" || !is_hex(&sig.key_id, 16) {
        return Err(BundleError::new(
            Code::BndSigMalformed,
            "unknown signature format or key ID",
        ));
    }
    let sig_raw: [u8; 64] = B64
        .decode(sig.signature.as_bytes())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            BundleError::new(
                Code::BndSigMalformed,
                "signature is not 64 base64-encoded bytes",
            )
        })?;
    let signature = Signature::from_bytes(&sig_raw);
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
        .verify_strict(&pae(expected.payload_type(), &mbytes), &signature)
        .is_err()
    {
        if signer
            .key
            .key
            .verify_strict(&pae(expected.other().payload_type(), &mbytes), &signature)
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

    // 3. Parse the verified manifest strictly.
    let text = std::str::from_utf8(&mbytes)
        .map_err(|_| BundleError::new(Code::BndManifestSyntax, "manifest is not UTF-8"))?;
    #[derive(Deserialize)]
    struct Probe {
        format: String,
        version: u32,
    }
    let probe: Probe = serde_json::from_str(text)
        .map_err(|e| json_error(Code::BndManifestSyntax, "manifest", &e))?;
    // CIL bundles did not change in version 2; returns did.
    let readable = probe.version == VERSION || (probe.version == 1 && expected == Kind::Cil);
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
    // Identity comes from the pinned key, not from the payload: one trusted site
    // cannot speak (or squat sequence numbers) for another.
    if manifest.site != signer.key.site {
        return Err(BundleError::new(
            Code::BndSiteMismatch,
            &format!(
                "manifest names site {:?} but is signed by the key of site {:?} (trusted as {:?})",
                crate::sanitize::escape(&manifest.site),
                signer.key.site,
                signer.name
            ),
        ));
    }

    // 4. Closed world: the archive holds exactly the listed entries plus manifest and signature.
    let listed: Vec<&str> = manifest.entries.iter().map(|e| e.name.as_str()).collect();
    for e in &raw {
        let n = String::from_utf8_lossy(&e.name);
        if n != MANIFEST && n != SIGNATURE && !listed.contains(&n.as_ref()) {
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
    // The one data entry (check_manifest): hashed while copied out of the archive.
    let entry = &manifest.entries[0];
    let mut data = tempfile::tempfile().map_err(BundleError::io)?;
    let got = copy_entry(&mut archive, &entry.name, entry.size, &mut data)?;
    if got != entry.sha256 {
        return Err(BundleError::new(
            Code::BndEntryHash,
            &format!(
                "entry {:?} does not match its SHA-256 in the signed manifest",
                entry.name
            ),
        ));
    }
    Ok(Verified {
        manifest,
        manifest_sha256: sha256_hex(&mbytes),
        signer: signer.clone(),
        data,
        limits: limits.clone(),
    })
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
    if !is_hex(&m.bundle_id, 32) {
        return Err(bad("bundle_id must be 32 lower-case hex digits"));
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
            if !is_hex(&a.bundle_id, 32)
                || !is_hex(&a.manifest_sha256, 64)
                || BackendKind::parse(&b.name).is_none_or(|k| k.simulated() != b.simulated)
                || b.endpoint.as_ref().is_some_and(|e| e.len() > MAX_ENDPOINT)
            {
                return Err(bad("answers or backend block malformed"));
            }
        }
        _ => return Err(bad("answers/backend present exactly in return bundles")),
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

fn read_entry(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    name: &str,
    cap: u64,
) -> Result<Vec<u8>, BundleError> {
    let mut f = archive
        .by_name(name)
        .map_err(|e| BundleError::new(Code::BndUnreadable, &format!("{name}: {e}")))?;
    let declared = f.size();
    let mut v = Vec::with_capacity(declared.min(cap) as usize);
    (&mut f)
        .take(cap + 1)
        .read_to_end(&mut v)
        .map_err(|e| BundleError::new(Code::BndUnreadable, &format!("{name}: {e}")))?;
    if v.len() as u64 > cap {
        return Err(BundleError::new(
            Code::BndEntryTooLarge,
            &format!("{name} exceeds {cap} bytes"),
        ));
    }
    if v.len() as u64 != declared {
        return Err(BundleError::new(
            Code::BndEntrySize,
            &format!("{name}: {} bytes read, {declared} declared", v.len()),
        ));
    }
    Ok(v)
}

/// Streams an entry into `to` (from its start), checking its size; returns its SHA-256.
fn copy_entry(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    name: &str,
    size: u64,
    to: &mut File,
) -> Result<String, BundleError> {
    let f = archive
        .by_name(name)
        .map_err(|e| BundleError::new(Code::BndUnreadable, &format!("{name}: {e}")))?;
    let mut hasher = Sha256::new();
    let mut w = io::BufWriter::with_capacity(256 * 1024, &mut *to);
    let n = hashing_copy(f.take(size + 1), &mut w, &mut hasher)
        .and_then(|n| w.flush().map(|()| n))
        .map_err(|e| BundleError::new(Code::BndUnreadable, &format!("{name}: {e}")))?;
    drop(w);
    to.seek(SeekFrom::Start(0)).map_err(BundleError::io)?;
    if n != size {
        return Err(BundleError::new(
            Code::BndEntrySize,
            &format!("{name}: {n} bytes read, {size} declared"),
        ));
    }
    Ok(hex(&hasher.finalize()))
}

impl Verified {
    /// Parses every record in order, calling `f` for each; it can be called again for
    /// another pass. Records come from the private copy verified by `open`, so every line
    /// is signed data. Handles must run 1..=N in a CIL bundle and strictly increase in a
    /// return bundle; a malformed record ends the walk with an error after `f` has seen
    /// the records before it, so a caller that must act all-or-nothing commits only once
    /// this returns `Ok`.
    pub fn records<R: Record, E: From<BundleError>>(
        &mut self,
        mut f: impl FnMut(R) -> Result<(), E>,
    ) -> Result<(), E> {
        let entry = self.manifest.entries[0].clone();
        self.data
            .seek(SeekFrom::Start(0))
            .map_err(BundleError::io)?;
        let mut reader = BufReader::with_capacity(256 * 1024, (&self.data).take(entry.size));
        let mut line = Vec::with_capacity(512);
        let mut count = 0u64;
        let mut last = 0u64;
        loop {
            line.clear();
            let n = (&mut reader)
                .take(self.limits.max_line as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(BundleError::io)?;
            if n == 0 {
                break;
            }
            count += 1;
            let at = |d: String| {
                BundleError::new(
                    Code::BndRecord,
                    &format!("{} line {count}: {d}", entry.name),
                )
            };
            if line.last() != Some(&b'\n') {
                if n > self.limits.max_line {
                    return Err(BundleError::new(
                        Code::BndLineTooLong,
                        &format!(
                            "{} line {count} exceeds {} bytes",
                            entry.name, self.limits.max_line
                        ),
                    )
                    .into());
                }
                return Err(at("line is not terminated".into()).into());
            }
            if count > self.manifest.records {
                return Err(BundleError::new(
                    Code::BndRecordCount,
                    &format!(
                        "more than the {} records the manifest lists",
                        self.manifest.records
                    ),
                )
                .into());
            }
            let rec: R = serde_json::from_slice(&line[..line.len() - 1]).map_err(|e| {
                let mut be =
                    json_error(Code::BndRecord, &format!("{} line {count}", entry.name), &e);
                if be.code == Code::BndManifestSyntax {
                    be.code = Code::BndRecord;
                }
                be
            })?;
            rec.check().map_err(at)?;
            let h = rec.handle();
            let ordered = match R::KIND {
                Kind::Cil => h == count,
                Kind::Return => h > last,
            };
            if !ordered {
                return Err(BundleError::new(
                    Code::BndRecordOrder,
                    &format!(
                        "{} line {count}: handle {h} is duplicated or out of order",
                        entry.name
                    ),
                )
                .into());
            }
            last = h;
            f(rec)?;
        }
        if count != self.manifest.records {
            return Err(BundleError::new(
                Code::BndRecordCount,
                &format!(
                    "{count} records; the manifest lists {}",
                    self.manifest.records
                ),
            )
            .into());
        }
        Ok(())
    }
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
mod durability_tests {
    use super::*;
    use crate::ids::{
        digits_from_seed, with_check_digits, ExtendedProductId, Guid, InstallationId,
    };

    /// A finished bundle is forced to disk, then the folder that names it, before
    /// `finish` returns (what a power cut after `pack` reports success relies on).
    #[test]
    fn a_finished_bundle_and_its_folder_are_forced_to_disk() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("cil.zip");
        let mut w = BundleWriter::<CilRecord>::new(&out).unwrap();
        w.push(CilRecord {
            handle: 1,
            installation_id: InstallationId::parse(&with_check_digits(
                &digits_from_seed(b"durability", 54),
                7,
            ))
            .unwrap(),
            extended_product_id: ExtendedProductId::parse(
                "03612-03305-317-008912-02-1033-9200.0000-0662023",
            )
            .unwrap(),
            activation_id: Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").unwrap(),
            product: None,
            host: None,
        })
        .unwrap();
        let now = time::macros::datetime!(2026-11-22 00:00 UTC);
        let header = Header {
            bundle_id: "0123456789abcdef0123456789abcdef".into(),
            site: "site".into(),
            sequence: 1,
            created: now,
            expires: now + time::Duration::days(1),
            tool: "test".into(),
            fields: vec!["handle".into(), "installation_id".into()],
            answers: None,
            backend: None,
        };
        let key = SigningKey::from_bytes(&[7; 32]);
        let n = crate::fsutil::syncs_during(|| {
            w.finish(header, &key, &out).unwrap();
        });
        assert_eq!(n, if cfg!(unix) { 2 } else { 1 });
        assert!(out.exists());
    }
}
