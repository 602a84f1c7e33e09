//! Writing a bundle: records streamed and deflated on a second thread, the manifest
//! signed, the archive moved into place whole and forced to disk.

use super::format::{FORMAT, MANIFEST, SIGNATURE, VERSION};
use super::manifest::{Answers, BackendInfo, Entry, Manifest, SigFile};
use super::records::Record;
use super::{hex, pae, rfc3339, sha256_hex, BundleError};
use crate::codes::Code;
use crate::keys::key_id;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use time::OffsetDateTime;

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
    /// A fresh random ID ([`BundleId::random`](super::BundleId::random)).
    pub bundle_id: super::BundleId,
    /// The writing side's site (must be its key's site).
    pub site: String,
    /// The bundle's sequence number at that site.
    pub sequence: u64,
    /// When it is written.
    pub created: OffsetDateTime,
    /// When it stops being accepted.
    pub expires: OffsetDateTime,
    /// The program and version writing it.
    pub tool: String,
    /// The record fields present (what crosses the gap).
    pub fields: Vec<String>,
    /// A return's request.
    pub answers: Option<Answers>,
    /// A return's backend.
    pub backend: Option<BackendInfo>,
    /// A return's remaining-activation counts.
    pub remaining: Option<Vec<super::manifest::RemainingCount>>,
    /// A return's word on the gateway's rule for the site.
    pub site_rule: Option<super::manifest::SiteRule>,
}

/// A written bundle.
#[derive(Debug, Clone)]
pub struct Written {
    /// Where the bundle now is.
    pub path: PathBuf,
    /// The manifest as signed.
    pub manifest: Manifest,
    /// SHA-256 of the manifest's bytes (a return's `answers` names it).
    pub manifest_sha256: String,
}

impl<R: Record + Send + 'static> BundleWriter<R> {
    /// Starts a bundle that will be written to `out` (the temporary archive lives in the
    /// same directory).
    pub fn new(out: &Path) -> io::Result<Self> {
        let dir = crate::fsutil::parent(out);
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
        // No early "exists?" check: the archive is moved into place without replacing
        // anything (persist_noclobber), and that one refusal is the rule, race or not.
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
            remaining: header.remaining,
            site_rule: header.site_rule,
        };
        let mut mbytes = serde_json::to_vec_pretty(&manifest).expect("serialisable");
        mbytes.push(b'\n');
        let sig = key.sign(&pae(kind.payload_type(), &mbytes));
        let sbytes = SigFile::new(manifest.signer_key_id.clone(), &sig).to_bytes();

        let placed = (|| -> io::Result<()> {
            z.start_file(MANIFEST, entry_options(false))
                .map_err(io::Error::other)?;
            z.write_all(&mbytes)?;
            z.start_file(SIGNATURE, entry_options(false))
                .map_err(io::Error::other)?;
            z.write_all(&sbytes)?;
            let tmp = finish_archive(z)?;
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

/// `cosign`: adds `key`'s signature over the bundle's exact manifest bytes as the next
/// `manifest.cosig-N` entry, without changing the manifest or the records. The bundle
/// must be a well-formed bundle of `kind` and `site` (every check but who signed it:
/// the reader at the gate checks each signature against its pinned keys). The archive
/// is written again whole in the canonical layout beside the file and renamed over it.
/// Returns the number of signatures it now carries.
pub fn cosign(
    path: &Path,
    kind: super::Kind,
    site: &str,
    key: &SigningKey,
    now: OffsetDateTime,
    limits: &super::Limits,
) -> Result<usize, BundleError> {
    let mut c = super::open_for_cosign(path, kind, site, now, limits)?;
    let id = key_id(&key.verifying_key());
    if c.signatures.iter().any(|(_, _, k)| *k == id) {
        return Err(BundleError::new(
            Code::BndDuplicateSigner,
            "this key signed the bundle already; each operator cosigns once",
        ));
    }
    let cosigs = c.signatures.len() - 1;
    if cosigs >= super::format::MAX_COSIGNATURES {
        return Err(BundleError::new(
            Code::BndTooManyEntries,
            &format!(
                "the bundle carries {} cosignatures already, the most it can",
                super::format::MAX_COSIGNATURES
            ),
        ));
    }
    let sig = key.sign(&pae(kind.payload_type(), &c.manifest_bytes));
    let mut signatures: Vec<Vec<u8>> = c.signatures.iter().map(|(_, b, _)| b.clone()).collect();
    signatures.push(SigFile::new(id, &sig).to_bytes());
    rewrite_signed(path, kind, &mut c, &signatures)?;
    Ok(signatures.len())
}

/// `cosign --remove KEY_ID`: takes the cosignature by the key with that ID out of the
/// bundle (one the gateway would refuse: a key it does not pin, or added by mistake),
/// leaving the manifest, the records and every other signature as they are; the
/// cosignatures after it move up one name, so the layout stays canonical. The signer's
/// own signature (`manifest.sig`) is never removed: that is a new bundle, `pack` again.
/// Returns the number of signatures left.
pub fn remove_cosignature(
    path: &Path,
    kind: super::Kind,
    site: &str,
    key_id: &str,
    now: OffsetDateTime,
    limits: &super::Limits,
) -> Result<usize, BundleError> {
    let mut c = super::open_for_cosign(path, kind, site, now, limits)?;
    let Some(i) = c.signatures.iter().position(|(_, _, k)| k == key_id) else {
        return Err(BundleError::new(
            Code::BndNoSuchCosignature,
            &format!(
                "no signature by key {} in this bundle",
                crate::sanitize::escape(key_id)
            ),
        ));
    };
    if i == 0 {
        return Err(BundleError::new(
            Code::BndNoSuchCosignature,
            &format!("key {key_id} made the bundle's own signature (manifest.sig), not a cosignature; a bundle without it is a new bundle: pack again"),
        ));
    }
    let signatures: Vec<Vec<u8>> = c
        .signatures
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, (_, b, _))| b.clone())
        .collect();
    rewrite_signed(path, kind, &mut c, &signatures)?;
    Ok(signatures.len())
}

/// Writes the bundle `c` was read from again, whole, in the canonical layout, with
/// `signatures` (the signer's first, then the cosignatures as `manifest.cosig-1`, …)
/// beside the file, and renames it over the file.
fn rewrite_signed(
    path: &Path,
    kind: super::Kind,
    c: &mut super::Cosignable,
    signatures: &[Vec<u8>],
) -> Result<(), BundleError> {
    let dir = crate::fsutil::parent(path);
    let written = (|| -> io::Result<()> {
        let tmp = crate::fsutil::new_partial(dir)?;
        let mut z = zip::ZipWriter::new(io::BufWriter::new(tmp));
        z.start_file(kind.data_entry(), entry_options(true))
            .map_err(io::Error::other)?;
        c.copy_data(&mut z)?;
        z.start_file(MANIFEST, entry_options(false))
            .map_err(io::Error::other)?;
        z.write_all(&c.manifest_bytes)?;
        for (n, bytes) in signatures.iter().enumerate() {
            let name = if n == 0 {
                SIGNATURE.to_string()
            } else {
                super::format::cosignature_name(n)
            };
            z.start_file(name.as_str(), entry_options(false))
                .map_err(io::Error::other)?;
            z.write_all(bytes)?;
        }
        let tmp = finish_archive(z)?;
        tmp.persist(path).map_err(|e| e.error)?;
        crate::fsutil::sync_dir(dir)
    })();
    written.map_err(BundleError::io)
}

/// Writes the archive's central directory and forces the temporary file to disk.
fn finish_archive(
    z: zip::ZipWriter<io::BufWriter<tempfile::NamedTempFile>>,
) -> io::Result<tempfile::NamedTempFile> {
    let tmp = z
        .finish()
        .map_err(io::Error::other)?
        .into_inner()
        .map_err(|e| e.into_error())?;
    crate::fsutil::sync_file(tmp.as_file())?;
    Ok(tmp)
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

#[cfg(test)]
mod durability_tests {
    use super::*;
    use crate::bundle::CilRecord;
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
            channel: None,
            key_group: None,
        })
        .unwrap();
        let now = time::macros::datetime!(2026-11-22 00:00 UTC);
        let header = Header {
            bundle_id: crate::bundle::BundleId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            site: "site".into(),
            sequence: 1,
            created: now,
            expires: now + time::Duration::days(1),
            tool: "test".into(),
            fields: vec!["handle".into(), "installation_id".into()],
            answers: None,
            backend: None,
            remaining: None,
            site_rule: None,
        };
        let key = SigningKey::from_bytes(&[7; 32]);
        let n = crate::fsutil::syncs_during(|| {
            w.finish(header, &key, &out).unwrap();
        });
        assert_eq!(n, if cfg!(unix) { 2 } else { 1 });
        assert!(out.exists());
    }
}
