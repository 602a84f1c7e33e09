//! The online journal: the one place that holds the online side's state and every SQL
//! statement about it. Every answer is persisted here the moment it arrives, before
//! anything else happens with it; every request to a backend that can spend an
//! activation is preceded by a durable *intent*, so a request in flight when the
//! process died is known afterwards and is never re-sent without the operator.
//!
//! Rules kept here (docs/backends.md, docs/reliability.md):
//! - CIDs are found by (IID, ePID, simulated): a drill's simulated CIDs never serve a
//!   real run and the other way round. Each answer knows the run, backend and endpoint
//!   that obtained it (provenance, carried into every return record).
//! - Refusals are kept per (bundle, handle, backend) and reused only by the same
//!   backend; transport failures are never stored, so never reused.
//! - An intent without an answer belongs to a run that died mid-request: the record is
//!   *uncertain* until the operator sends it again (`--retry-uncertain`) or forgets it.
//! - `forget` removes an answer, refusals and intents for one IID and keeps an audit row.
//! - A key's life only goes forward: absent → in flight (intent) → answered, refused, or
//!   absent again (the request never left, or the service issued nothing). An answered
//!   key is never put in flight again ([`Batch::intend`] refuses it, whoever calls) and
//!   never gets a second CID (a trigger); only `forget`, audited, takes it back.
//!
//! Layout for speed at fleet scale: answers are appended in arrival order (integer row
//! IDs) and found through an index on a 64-bit digest of the lookup key; the full key is
//! compared on every hit, so a digest collision costs a row read, never a wrong answer.

use makproxy_core::bundle::{
    BackendKind, BundleId, FailureCode, FailureMessage, RecordFailure, ServiceCode,
};
use makproxy_core::home::Home;
use makproxy_core::ids::{ConfirmationId, ExtendedProductId, InstallationId};
use makproxy_store::{self as store, Migration, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};

/// Bumped whenever the schema changes; older journals are migrated forward.
pub const SCHEMA_VERSION: u32 = 3;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    bundle_id TEXT NOT NULL,
    backend TEXT NOT NULL,
    started TEXT NOT NULL,
    endpoint TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS answers(
    id INTEGER PRIMARY KEY,
    key INTEGER NOT NULL,
    iid TEXT NOT NULL,
    epid TEXT NOT NULL,
    simulated INTEGER NOT NULL,
    cid TEXT NOT NULL,
    run INTEGER NOT NULL REFERENCES runs(id),
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_by_key ON answers(key);
-- One answer per (IID, ePID, simulated), whatever code writes: a second row would mean
-- a second activation spent. (Kept as a trigger, created on every open so journals of
-- earlier schemas get it too, because schema 2 replaced the key column's uniqueness by
-- a digest that two keys may share.)
CREATE TRIGGER IF NOT EXISTS one_answer_per_key BEFORE INSERT ON answers
WHEN EXISTS (SELECT 1 FROM answers WHERE key = NEW.key AND iid = NEW.iid AND epid = NEW.epid AND simulated = NEW.simulated)
BEGIN SELECT RAISE(ABORT, 'the journal already holds an answer for this IID, ePID and mode'); END;
CREATE TABLE IF NOT EXISTS failures(
    bundle_id TEXT NOT NULL,
    handle INTEGER NOT NULL,
    backend TEXT NOT NULL,
    iid TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL,
    service_code TEXT,
    message TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY(bundle_id, handle, backend)
);
CREATE TABLE IF NOT EXISTS intents(
    iid TEXT NOT NULL,
    epid TEXT NOT NULL,
    backend TEXT NOT NULL,
    run INTEGER NOT NULL REFERENCES runs(id),
    at TEXT NOT NULL,
    PRIMARY KEY(iid, epid)
);
CREATE TABLE IF NOT EXISTS forgotten(
    id INTEGER PRIMARY KEY,
    iid TEXT NOT NULL,
    what TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests(
    bundle_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    signer TEXT NOT NULL,
    UNIQUE(signer, sequence)
);
CREATE TABLE IF NOT EXISTS returns(
    bundle_id TEXT PRIMARY KEY,
    answers TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    file TEXT NOT NULL,
    at TEXT NOT NULL
);
"#;

/// Schema 2 (before provenance and intents) to 3: runs learn their endpoint; refusals
/// learn which backend gave them (old ones are marked `unknown` and so never reused —
/// asking again costs no activation, since a refusal spent none); the replay guard is
/// keyed by the signing key (old rows keep their site as `site:NAME`, so they still
/// block nothing a key-keyed row would).
const MIGRATIONS: &[Migration] = &[Migration {
    from: 2,
    sql: r#"
ALTER TABLE runs ADD COLUMN endpoint TEXT NOT NULL DEFAULT '';
ALTER TABLE failures RENAME TO failures_v2;
CREATE TABLE failures(
    bundle_id TEXT NOT NULL,
    handle INTEGER NOT NULL,
    backend TEXT NOT NULL,
    iid TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL,
    service_code TEXT,
    message TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY(bundle_id, handle, backend)
);
INSERT INTO failures(bundle_id, handle, backend, code, service_code, message, at)
    SELECT bundle_id, handle, 'unknown', code, service_code, message, at FROM failures_v2;
DROP TABLE failures_v2;
ALTER TABLE requests RENAME TO requests_v2;
CREATE TABLE requests(
    bundle_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    signer TEXT NOT NULL,
    UNIQUE(signer, sequence)
);
INSERT INTO requests(bundle_id, site, sequence, manifest_sha256, first_seen, signer)
    SELECT bundle_id, site, sequence, manifest_sha256, first_seen, 'site:' || site FROM requests_v2;
DROP TABLE requests_v2;
"#,
}];

/// A CID in the journal, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The confirmation ID, read back through its type (a journal row that is not one
    /// is a damaged journal, [`JournalError::Invalid`]).
    pub cid: ConfirmationId,
    /// The run (row ID) that obtained it.
    pub run: i64,
    /// The backend that obtained it.
    pub backend: BackendKind,
}

/// Which record of which bundle a refusal is about, and who refused
/// ([`Batch::save_failure`]).
#[derive(Debug, Clone, Copy)]
pub struct RecordOf<'a> {
    /// The CIL bundle.
    pub bundle_id: &'a BundleId,
    /// The record's handle in it.
    pub handle: u64,
    /// The backend that refused.
    pub backend: BackendKind,
    /// The record's installation ID.
    pub iid: &'a InstallationId,
    /// Its extended product ID.
    pub epid: &'a ExtendedProductId,
}

/// A request that was (or was about to be) sent and has no answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Intent {
    /// The installation ID asked for.
    pub iid: InstallationId,
    /// Its extended product ID.
    pub epid: ExtendedProductId,
    /// The backend it was sent to.
    pub backend: Recorded,
    /// The run that sent it.
    pub run_id: String,
    /// When the intent was recorded (RFC 3339).
    pub at: String,
}

/// One IID's whole story in the journal (`journal show`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// The installation ID.
    pub iid: InstallationId,
    /// Its extended product ID.
    pub epid: ExtendedProductId,
    /// The confirmation ID.
    pub cid: Option<ConfirmationId>,
    /// Whether the simulator made it.
    pub simulated: bool,
    /// The backend that obtained it.
    pub backend: BackendKind,
    /// The service URL or program it came from.
    pub endpoint: String,
    /// The CIL bundle it was obtained for.
    pub bundle_id: BundleId,
    /// The run that obtained it.
    pub run_id: String,
    /// When (RFC 3339).
    pub at: String,
    /// The site whose bundle it was (a gateway serving several sites), when known.
    pub site: Option<String>,
}

/// A refusal as stored, for `journal show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredFailure {
    /// The CIL bundle of the refused record.
    pub bundle_id: BundleId,
    /// The record's handle in it.
    pub handle: u64,
    /// The backend that refused.
    pub backend: Recorded,
    /// Why.
    pub failure: RecordFailure,
    /// When (RFC 3339).
    pub at: String,
}

/// The lookup digest of (IID, ePID, simulated): the first 8 bytes of a SHA-256 of
/// their stored texts.
fn key(iid: &InstallationId, epid: &ExtendedProductId, simulated: bool) -> i64 {
    let mut h = Sha256::new();
    h.update(iid.digits().as_bytes());
    h.update(b"|");
    h.update(epid.as_str().as_bytes());
    h.update(if simulated { b"|1" } else { b"|0" });
    let d = h.finalize();
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The backend a refusal or an intent names, as the journal knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// This backend.
    Backend(BackendKind),
    /// Not known: a refusal kept from a schema-2 journal (never reused), or a request of
    /// a journal lost before `recover`.
    Unknown,
}

impl Recorded {
    /// The stored and shown text: the backend's name, or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Recorded::Backend(b) => b.as_str(),
            Recorded::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Recorded {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for Recorded {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match v.as_str()? {
            "unknown" => Ok(Recorded::Unknown),
            _ => BackendKind::column_result(v).map(Recorded::Backend),
        }
    }
}

/// Why a journal read or write failed: the journal's own error, mapped to an exit code
/// and a message by the binary (`From<JournalError> for CliError`).
#[derive(Debug)]
pub enum JournalError {
    /// SQLite refused (a damaged file, a full disk, an I/O error).
    Sqlite(rusqlite::Error),
    /// A row holds what its column's type does not accept (a damaged or foreign
    /// journal).
    Invalid(rusqlite::Error),
    /// A second, different CID for an answer the journal already holds: refused, the
    /// first one stays (exactly-once).
    Contradiction(String),
    /// A step back in a key's life: a request for a key that already holds a real
    /// answer. Refused; only `forget` takes a key back.
    Backwards(String),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Sqlite(e) | JournalError::Invalid(e) => e.fmt(f),
            JournalError::Contradiction(m) | JournalError::Backwards(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Sqlite(e) | JournalError::Invalid(e) => Some(e),
            JournalError::Contradiction(_) | JournalError::Backwards(_) => None,
        }
    }
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            e @ rusqlite::Error::FromSqlConversionFailure(..) => JournalError::Invalid(e),
            e => JournalError::Sqlite(e),
        }
    }
}

impl From<JournalError> for makproxy_cli::CliError {
    fn from(e: JournalError) -> Self {
        makproxy_cli::CliError::io("journal", e)
    }
}

/// What the journal's reads and writes return.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// The online side's store.
pub struct Journal {
    pub(crate) conn: Connection,
}

/// The highest bundle sequence seen from one signing key of a site (`journal
/// sequences`; what a rebuilt secure side's `recover --next-sequence` must exceed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SequenceSeen {
    /// The site the bundles named.
    pub site: String,
    /// The signing key's ID (`site:NAME` for rows from before schema 3).
    pub signer_key_id: String,
    /// The highest sequence seen.
    pub highest: u64,
    /// Bundles seen.
    pub bundles: u64,
    /// When the newest was first seen (RFC 3339).
    pub last_seen: String,
}

/// Why the journal could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The store could not be opened.
    Store(StoreError),
    /// The home is initialised but its journal is missing or empty: never recreated
    /// silently (every IID already answered would be sent to the service again).
    Missing(std::path::PathBuf),
    /// The journal was written by a home with another key.
    Foreign(std::path::PathBuf),
    /// `recover` found a journal already there.
    Exists(std::path::PathBuf),
    /// The home's own keys could not be read (which keys a journal may belong to).
    Key(makproxy_core::keys::KeyError),
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> Self {
        OpenError::Store(e)
    }
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Store(e.into())
    }
}

/// The journal file of an online home.
pub fn path(home: &Home) -> std::path::PathBuf {
    home.dir.join("journal.sqlite3")
}

/// Whether a journal with content is there (its main file, or a WAL not yet folded in).
fn exists(p: &std::path::Path) -> bool {
    let len = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = p.as_os_str().to_owned();
    wal.push("-wal");
    len(p) > 0 || len(std::path::Path::new(&wal)) > 0
}

/// Which home a journal belongs to: the ID of the key it was created with, and every
/// key that rotation statements made its successors (docs/keys.md).
fn home_keys(home: &Home) -> Result<Vec<String>, OpenError> {
    let keys = home.own_keys().map_err(OpenError::Key)?;
    Ok(keys.iter().map(|t| t.key.key_id()).collect())
}

/// One return bundle as `recover` read it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoveredReturn {
    /// The return's file.
    pub file: String,
    /// Its bundle ID and sequence.
    pub bundle_id: BundleId,
    /// Its sequence.
    pub sequence: u64,
    /// The request it answered.
    pub answers: BundleId,
    /// CIDs it carried, now in the journal again.
    pub answers_restored: u64,
}

impl Journal {
    /// Opens (migrating) the journal of an initialised online home. A missing or empty
    /// journal, or one of another home, is refused: never recreated silently.
    pub fn open(home: &Home) -> Result<Journal, OpenError> {
        let p = path(home);
        if !exists(&p) {
            return Err(OpenError::Missing(p));
        }
        let j = Self::open_path(&p)?;
        let ours = home_keys(home)?;
        match store::meta_get(&j.conn, "home_key")? {
            Some(k) if ours.contains(&k) => {}
            Some(_) => return Err(OpenError::Foreign(p)),
            // A journal of an earlier release, which recorded no home: adopted by the
            // home it lies in (the first open after the upgrade).
            None => store::meta_set(&j.conn, "home_key", &ours[0])?,
        }
        Ok(j)
    }

    /// Creates the journal of a new online home (`init`).
    pub fn create(home: &Home) -> Result<Journal, OpenError> {
        let p = path(home);
        if exists(&p) {
            return Err(OpenError::Exists(p));
        }
        let j = Self::open_path(&p)?;
        store::meta_set(&j.conn, "home_key", &home_keys(home)?[0])?;
        Ok(j)
    }

    /// `recover`: builds a journal for a home whose journal was lost, from the return
    /// bundles this home wrote (`returns`: verified against its own keys, whatever
    /// their age): every CID they carry, the runs and backends that obtained them, the
    /// requests they answered (the replay guard, by site and sequence) and the return
    /// numbering. What no return can tell, which IIDs were sent and never written into
    /// a return, is marked: from now on every record without an answer of a request
    /// created up to `now` is uncertain (sent again only with --retry-uncertain).
    /// Built under a temporary name and renamed into place: a kill leaves no journal.
    pub fn recover(
        home: &Home,
        returns: &[std::path::PathBuf],
        now: time::OffsetDateTime,
    ) -> Result<Vec<RecoveredReturn>, makproxy_cli::CliError> {
        use makproxy_core::bundle::{self, Kind, Limits};
        let p = path(home);
        // The real journal's lock, held until this process ends: a second recover, or
        // an activate, on this home fails at once (MP-KEY-009) instead of racing.
        store::lock(&p).map_err(|e| makproxy_cli::CliError::store("journal", e))?;
        if exists(&p) {
            return Err(open_error(OpenError::Exists(p)));
        }
        let own = home.own_keys()?;
        // This home's own returns, however old: their signatures are what is checked.
        let limits = Limits {
            skew_secs: 20 * 365 * 86_400,
            ..Limits::default()
        };
        // Every return verified before anything is written; records are then read from
        // each one's verified copy as they are stored (none held in memory).
        let mut verified = Vec::new();
        for f in returns {
            verified.push((f, bundle::open_own(f, Kind::Return, &own, now, &limits)?));
        }
        verified.sort_by_key(|(_, v)| v.manifest.sequence);
        let tmp = home.dir.join("journal.sqlite3.recovering");
        for suffix in ["", "-wal", "-shm"] {
            let mut t = tmp.as_os_str().to_owned();
            t.push(suffix);
            let _ = std::fs::remove_file(std::path::Path::new(&t));
        }
        let mut j =
            Self::open_path(&tmp).map_err(|e| makproxy_cli::CliError::store("journal", e))?;
        store::meta_set(
            &j.conn,
            "home_key",
            &home_keys(home).map_err(open_error)?[0],
        )
        .map_err(JournalError::from)?;
        let mut out = Vec::new();
        let at = makproxy_core::bundle::rfc3339(now);
        for (f, v) in verified {
            out.push(j.restore_return(f, v)?);
        }
        store::meta_set(&j.conn, "recovered_at", &at).map_err(JournalError::from)?;
        j.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(JournalError::from)?;
        drop(j);
        std::fs::rename(&tmp, &p).map_err(|e| makproxy_cli::CliError::io(p.display(), e))?;
        makproxy_core::fsutil::sync_dir(&home.dir)
            .map_err(|e| makproxy_cli::CliError::io(home.dir.display(), e))?;
        Ok(out)
    }

    /// One return of `recover`: its CIDs (one run per backend its records name, each
    /// answer keeping its provenance), the request it answered and its number.
    fn restore_return(
        &mut self,
        f: &std::path::Path,
        mut v: makproxy_core::bundle::Verified,
    ) -> Result<RecoveredReturn, makproxy_cli::CliError> {
        use makproxy_core::bundle::ReturnRecord;
        let m = v.manifest.clone();
        let name = f
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let a = m
            .answers
            .as_ref()
            .expect("a return's reader checked its answers block");
        // One run per backend the records name (each answer keeps its provenance).
        let mut runs: Vec<(BackendKind, i64)> = Vec::new();
        let mut restored = 0u64;
        let batch = self.batch()?;
        v.records(|r: ReturnRecord| {
            let Some(cid) = r.confirmation_id() else {
                return Ok(());
            };
            let run = match runs.iter().find(|(b, _)| *b == r.backend) {
                Some((_, id)) => *id,
                None => {
                    let id = batch.start_run(
                        &format!("recovered-{}-{}", m.bundle_id, r.backend.as_str()),
                        &a.bundle_id,
                        r.backend,
                        &format!("recovered from {name}"),
                        &m.created,
                    )?;
                    runs.push((r.backend, id));
                    id
                }
            };
            batch.save_answer(
                &r.installation_id,
                &r.extended_product_id,
                r.simulated,
                cid,
                run,
                &m.created,
            )?;
            restored += 1;
            Ok::<(), makproxy_cli::CliError>(())
        })?;
        batch.commit()?;
        self.record_request(
            &a.bundle_id,
            &a.site,
            a.sequence,
            &a.manifest_sha256,
            &format!("site:{}", a.site),
            &m.created,
        )?;
        self.record_return(&m.bundle_id, &a.bundle_id, m.sequence, &name, &m.created)?;
        Ok(RecoveredReturn {
            file: f.display().to_string(),
            bundle_id: m.bundle_id.clone(),
            sequence: m.sequence,
            answers: a.bundle_id.clone(),
            answers_restored: restored,
        })
    }

    /// When `recover` rebuilt this journal, if it did and `bundle_id` has not been
    /// cleared since ([`Journal::clear_lost`]): records of requests created up to then
    /// that have no answer may have been sent by the lost journal's runs.
    pub fn recovered_at(&self, bundle_id: &BundleId) -> Result<Option<String>> {
        if store::meta_get(&self.conn, &format!("lost_cleared:{bundle_id}"))?.is_some() {
            return Ok(None);
        }
        store::meta_get(&self.conn, "recovered_at").map_err(JournalError::from)
    }

    /// A run with --retry-uncertain went through every record of `bundle_id` after the
    /// recovery: from now on its records are uncertain only by their own intents.
    pub fn clear_lost(&self, bundle_id: &BundleId, at: &str) -> Result<()> {
        store::meta_set(&self.conn, &format!("lost_cleared:{bundle_id}"), at)
            .map_err(JournalError::from)
    }

    /// The open intent for this key, or, for a request made before the journal was
    /// recovered (`lost`: when), the lost journal's possible one.
    pub fn open_intent(
        &self,
        iid: &InstallationId,
        epid: &ExtendedProductId,
        lost: Option<&str>,
    ) -> Result<Option<Intent>> {
        Ok(self.intent(iid, epid)?.or_else(|| {
            lost.map(|at| Intent {
                iid: iid.clone(),
                epid: epid.clone(),
                backend: Recorded::Unknown,
                run_id: "a run of the journal lost before `recover`".into(),
                at: at.to_string(),
            })
        }))
    }

    /// Opens (creating or migrating) the journal at `path` (tests, benchmarks).
    pub fn open_path(path: &std::path::Path) -> Result<Journal, StoreError> {
        Ok(Journal {
            conn: store::open_migrating(path, SCHEMA, SCHEMA_VERSION, MIGRATIONS)?,
        })
    }

    /// Registers a run of `activate`; answers it obtains point at the returned row.
    pub fn start_run(
        &self,
        run_id: &str,
        bundle_id: &BundleId,
        backend: BackendKind,
        endpoint: &str,
        at: &str,
    ) -> Result<i64> {
        insert_run(&self.conn, run_id, bundle_id, backend, endpoint, at).map_err(JournalError::from)
    }

    /// A CID already in the journal for this key, and who obtained it.
    pub fn answer(
        &self,
        iid: &InstallationId,
        epid: &ExtendedProductId,
        simulated: bool,
    ) -> Result<Option<Stored>> {
        self.conn
            .prepare_cached(
                "SELECT a.cid, a.run, r.backend FROM answers a JOIN runs r ON r.id = a.run
                 WHERE a.key = ?1 AND a.iid = ?2 AND a.epid = ?3 AND a.simulated = ?4",
            )?
            .query_row(
                params![key(iid, epid, simulated), iid, epid, simulated],
                |r| {
                    Ok(Stored {
                        cid: r.get(0)?,
                        run: r.get(1)?,
                        backend: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(JournalError::from)
    }

    /// Whether any refusal by `backend` is recorded for this bundle (when none is,
    /// per-record lookups can be skipped).
    pub fn any_failure(&self, bundle_id: &BundleId, backend: BackendKind) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM failures WHERE bundle_id = ?1 AND backend = ?2)",
                params![bundle_id, backend],
                |r| r.get(0),
            )
            .map_err(JournalError::from)
    }

    /// A refusal the same backend gave earlier for this record of this bundle.
    pub fn failure(
        &self,
        bundle_id: &BundleId,
        handle: u64,
        backend: BackendKind,
    ) -> Result<Option<RecordFailure>> {
        self.conn
            .prepare_cached(
                "SELECT code, service_code, message FROM failures WHERE bundle_id = ?1 AND handle = ?2 AND backend = ?3",
            )?
            .query_row(params![bundle_id, handle as i64, backend], |r| {
                failure_row(r, 0)
            })
            .optional().map_err(JournalError::from)
    }

    /// Whether any intent is open (when none is, per-record lookups can be skipped).
    pub fn any_intent(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT EXISTS(SELECT 1 FROM intents)", [], |r| r.get(0))
            .map_err(JournalError::from)
    }

    /// The open intent for this key: a request that may have reached the service.
    pub fn intent(&self, iid: &InstallationId, epid: &ExtendedProductId) -> Result<Option<Intent>> {
        self.conn
            .prepare_cached(
                "SELECT i.iid, i.epid, i.backend, r.run_id, i.at FROM intents i JOIN runs r ON r.id = i.run
                 WHERE i.iid = ?1 AND i.epid = ?2",
            )?
            .query_row(params![iid, epid], intent_row)
            .optional().map_err(JournalError::from)
    }

    /// Every open intent (`journal list --uncertain`).
    pub fn intents(&self) -> Result<Vec<Intent>> {
        self.conn
            .prepare(
                "SELECT i.iid, i.epid, i.backend, r.run_id, i.at FROM intents i JOIN runs r ON r.id = i.run ORDER BY i.at, i.iid",
            )?
            .query_map([], intent_row)?
            .collect::<rusqlite::Result<_>>().map_err(JournalError::from)
    }

    /// Answers in the journal, newest first, at most `limit` (`journal list`).
    pub fn entries(&self, limit: u32) -> Result<Vec<Entry>> {
        self.entries_where("1 = 1 ORDER BY a.id DESC LIMIT ?1", params![limit])
    }

    /// Everything the journal holds about one IID (`journal show`).
    pub fn show(&self, iid: &InstallationId) -> Result<(Vec<Entry>, Vec<StoredFailure>)> {
        let answers = self.entries_where("a.iid = ?1 ORDER BY a.id", params![iid])?;
        let failures = self
            .conn
            .prepare("SELECT bundle_id, handle, backend, code, service_code, message, at FROM failures WHERE iid = ?1 ORDER BY at")?
            .query_map(params![iid], |r| {
                Ok(StoredFailure {
                    bundle_id: r.get(0)?,
                    handle: r.get::<_, i64>(1)? as u64,
                    backend: r.get(2)?,
                    failure: failure_row(r, 3)?,
                    at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok((answers, failures))
    }

    fn entries_where(&self, clause: &str, p: impl rusqlite::Params) -> Result<Vec<Entry>> {
        self.conn
            .prepare(&format!(
                "SELECT a.iid, a.epid, a.cid, a.simulated, r.backend, r.endpoint, r.bundle_id, r.run_id, a.at, q.site
                 FROM answers a JOIN runs r ON r.id = a.run LEFT JOIN requests q ON q.bundle_id = r.bundle_id WHERE {clause}"
            ))?
            .query_map(p, |r| {
                Ok(Entry {
                    iid: r.get(0)?,
                    epid: r.get(1)?,
                    cid: Some(r.get(2)?),
                    simulated: r.get(3)?,
                    backend: r.get(4)?,
                    endpoint: r.get(5)?,
                    bundle_id: r.get(6)?,
                    run_id: r.get(7)?,
                    at: r.get(8)?,
                    site: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<_>>().map_err(JournalError::from)
    }

    /// Removes every answer, refusal and intent for one IID and records why. Returns
    /// how many rows went; the audit row stays for good.
    pub fn forget(&mut self, iid: &InstallationId, reason: &str, at: &str) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut what = Vec::new();
        {
            let mut q = tx.prepare(
                "SELECT a.cid, a.simulated, r.backend FROM answers a JOIN runs r ON r.id = a.run WHERE a.iid = ?1",
            )?;
            let rows = q.query_map(params![iid], |r| {
                Ok(format!(
                    "answer {} ({}{})",
                    r.get::<_, ConfirmationId>(0)?.digits(),
                    r.get::<_, BackendKind>(2)?.as_str(),
                    if r.get::<_, bool>(1)? {
                        ", simulated"
                    } else {
                        ""
                    }
                ))
            })?;
            for w in rows {
                what.push(w?);
            }
        }
        let mut n = tx.execute("DELETE FROM answers WHERE iid = ?1", params![iid])?;
        let f = tx.execute("DELETE FROM failures WHERE iid = ?1", params![iid])?;
        let i = tx.execute("DELETE FROM intents WHERE iid = ?1", params![iid])?;
        if f > 0 {
            what.push(format!("{f} refusal(s)"));
        }
        if i > 0 {
            what.push(format!("{i} open intent(s)"));
        }
        n += f + i;
        if n > 0 {
            tx.execute(
                "INSERT INTO forgotten(iid, what, reason, at) VALUES(?1, ?2, ?3, ?4)",
                params![iid, what.join("; "), reason, at],
            )?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// The bundle this signing key's `sequence` was first seen with, if any (replay
    /// guard; keyed by the key, so a rebuilt secure side with a new key starts afresh
    /// and one trusted site cannot squat another's numbers).
    pub fn request_with_sequence(
        &self,
        signer_key_id: &str,
        sequence: u64,
    ) -> Result<Option<BundleId>> {
        self.conn
            .query_row(
                "SELECT bundle_id FROM requests WHERE signer = ?1 AND sequence = ?2",
                params![signer_key_id, sequence as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(JournalError::from)
    }

    /// Every (site, signing key) this gateway took bundles from: the highest sequence
    /// seen, how many bundles, and when the last was first seen; by site, then key.
    pub fn sequences(&self) -> Result<Vec<SequenceSeen>> {
        self.conn
            .prepare(
                "SELECT site, signer, MAX(sequence), COUNT(*), MAX(first_seen) FROM requests GROUP BY site, signer ORDER BY site, signer",
            )?
            .query_map([], |r| {
                Ok(SequenceSeen {
                    site: r.get(0)?,
                    signer_key_id: r.get(1)?,
                    highest: r.get::<_, i64>(2)? as u64,
                    bundles: r.get::<_, i64>(3)? as u64,
                    last_seen: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>().map_err(JournalError::from)
    }

    /// Remembers a request bundle (the first time it is seen).
    pub fn record_request(
        &self,
        bundle_id: &BundleId,
        site: &str,
        sequence: u64,
        manifest_sha256: &str,
        signer_key_id: &str,
        at: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO requests(bundle_id, site, sequence, manifest_sha256, first_seen, signer) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            params![bundle_id, site, sequence as i64, manifest_sha256, at, signer_key_id],
        )?;
        Ok(())
    }

    /// The sequence number the next return bundle gets.
    pub fn next_return_sequence(&self) -> Result<u64> {
        Ok(store::meta_get(&self.conn, "next_sequence")?
            .and_then(|x| x.parse().ok())
            .unwrap_or(1))
    }

    /// Records a written return and moves the sequence on, in one transaction.
    pub fn record_return(
        &mut self,
        bundle_id: &BundleId,
        answers: &BundleId,
        sequence: u64,
        file: &str,
        at: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO returns(bundle_id, answers, sequence, file, at) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![bundle_id, answers, sequence as i64, file, at],
        )?;
        store::meta_set(&tx, "next_sequence", &(sequence + 1).to_string())?;
        tx.commit().map_err(JournalError::from)
    }

    /// Starts a group of writes committed together (one fsync).
    pub fn batch(&mut self) -> Result<Batch<'_>> {
        Ok(Batch {
            tx: self.conn.transaction()?,
        })
    }
}

/// A stored failure (code, service code, message from column `at`), held to the same
/// bounds as a return record: a row that breaks them is a corrupt journal, not an answer.
fn failure_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<RecordFailure> {
    let bad = |i: usize, why: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, why.into())
    };
    let (code, service, message) = (at, at + 1, at + 2);
    Ok(RecordFailure {
        code: FailureCode::parse(r.get::<_, String>(code)?).map_err(|e| bad(code, e))?,
        service_code: r
            .get::<_, Option<String>>(service)?
            .map(ServiceCode::parse)
            .transpose()
            .map_err(|e| bad(service, e))?,
        message: FailureMessage::parse(r.get::<_, String>(message)?)
            .map_err(|e| bad(message, e))?,
    })
}

fn intent_row(r: &rusqlite::Row) -> rusqlite::Result<Intent> {
    Ok(Intent {
        iid: r.get(0)?,
        epid: r.get(1)?,
        backend: r.get(2)?,
        run_id: r.get(3)?,
        at: r.get(4)?,
    })
}

/// The error a command reports for a journal that cannot be opened.
pub fn open_error(e: OpenError) -> makproxy_cli::CliError {
    use makproxy_cli::{CliError, Exit};
    use makproxy_core::Code;
    let shown = |p: &std::path::Path| {
        makproxy_core::sanitize::escape(&p.display().to_string()).into_owned()
    };
    match e {
        OpenError::Store(e) => makproxy_cli::CliError::store("journal", e),
        OpenError::Key(e) => e.into(),
        OpenError::Missing(p) => CliError::new(
            Exit::Error,
            Some(Code::JnlMissing),
            format!("{} is missing or empty; it is never recreated silently (every installation ID already answered would be sent to the service again)", shown(&p)),
        )
        .hint("restore it from backup, or: makproxy-online recover RETURN… (every return bundle this home wrote)"),
        OpenError::Foreign(p) => CliError::new(
            Exit::Error,
            Some(Code::JnlForeign),
            format!("{} was written by a home with another key", shown(&p)),
        )
        .hint("put back this home's own journal, or move this one aside and run makproxy-online recover RETURN…"),
        OpenError::Exists(p) => CliError::new(
            Exit::Error,
            Some(Code::JnlExists),
            format!("{} exists; recover builds a journal only where none is", shown(&p)),
        )
        .hint("move journal.sqlite3 (and its -wal and -shm files) aside first if it is damaged"),
    }
}

/// The one statement that records a run (from [`Journal`] or inside a [`Batch`]).
fn insert_run(
    conn: &Connection,
    run_id: &str,
    bundle_id: &BundleId,
    backend: BackendKind,
    endpoint: &str,
    at: &str,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO runs(run_id, bundle_id, backend, started, endpoint) VALUES(?1, ?2, ?3, ?4, ?5)",
        params![run_id, bundle_id, backend, at, endpoint],
    )?;
    Ok(conn.last_insert_rowid())
}

/// One answer of a group ([`Batch::save_answers`]).
#[derive(Clone, Copy)]
pub struct NewAnswer<'a> {
    /// The installation ID asked for.
    pub iid: &'a InstallationId,
    /// Its extended product ID.
    pub epid: &'a ExtendedProductId,
    /// The CID obtained.
    pub cid: &'a ConfirmationId,
}

/// Writes that become durable together on [`Batch::commit`].
pub struct Batch<'a> {
    tx: Transaction<'a>,
}

impl Batch<'_> {
    /// As [`Journal::start_run`], inside the batch (`recover`).
    fn start_run(
        &self,
        run_id: &str,
        bundle_id: &BundleId,
        backend: BackendKind,
        endpoint: &str,
        at: &str,
    ) -> Result<i64> {
        insert_run(&self.tx, run_id, bundle_id, backend, endpoint, at).map_err(JournalError::from)
    }

    /// Records that requests for `keys` are about to leave for a backend that can
    /// spend. All or none: when any key already holds a real answer, nothing is
    /// written and the step is refused, since a key's life only goes forward (module
    /// docs) and that request would spend a second activation. What the batch already
    /// holds (answers received meanwhile) is untouched, so the caller can still
    /// commit it.
    pub fn intend(
        &self,
        keys: &[(&InstallationId, &ExtendedProductId)],
        backend: BackendKind,
        run: i64,
        at: &str,
    ) -> Result<()> {
        let mut answered = self.tx.prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM answers WHERE key = ?1 AND iid = ?2 AND epid = ?3 AND simulated = 0)",
        )?;
        for (iid, epid) in keys {
            if answered.query_row(params![key(iid, epid, false), iid, epid], |r| r.get(0))? {
                return Err(JournalError::Backwards(format!(
                    "IID {} already has a confirmation ID in the journal: sending it again would spend a second activation; refused",
                    iid.digits()
                )));
            }
        }
        let mut insert = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO intents(iid, epid, backend, run, at) VALUES(?1, ?2, ?3, ?4, ?5)",
        )?;
        for (iid, epid) in keys {
            insert.execute(params![iid, epid, backend, run, at])?;
        }
        Ok(())
    }

    /// Closes the intent for a key: its answer is in, or the request never left.
    pub fn settle(&self, iid: &InstallationId, epid: &ExtendedProductId) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM intents WHERE iid = ?1 AND epid = ?2")?
            .execute(params![iid, epid])?;
        Ok(())
    }

    /// Records a CID and closes its intent. The caller asked only for keys `answer`
    /// found absent, once per key, holding the home, so each key has one row; a second
    /// one is refused here in every build (it would mean a second activation).
    pub fn save_answer(
        &self,
        iid: &InstallationId,
        epid: &ExtendedProductId,
        simulated: bool,
        cid: &ConfirmationId,
        run: i64,
        at: &str,
    ) -> Result<()> {
        let a = NewAnswer { iid, epid, cid };
        self.insert_answer(key(iid, epid, simulated), &a, simulated, run, at)
    }

    /// Records a group of CIDs of one run, each exactly as [`Batch::save_answer`] does
    /// (the trigger and the contradiction check see every one), in the order of their
    /// lookup digests: the index is then walked once from low to high per group
    /// instead of at random, so each of its pages is read and dirtied once.
    pub fn save_answers(
        &self,
        answers: &[NewAnswer],
        simulated: bool,
        run: i64,
        at: &str,
    ) -> Result<()> {
        let mut keyed: Vec<(i64, &NewAnswer)> = answers
            .iter()
            .map(|a| (key(a.iid, a.epid, simulated), a))
            .collect();
        keyed.sort_unstable_by_key(|(k, _)| *k);
        for (k, a) in keyed {
            self.insert_answer(k, a, simulated, run, at)?;
        }
        Ok(())
    }

    fn insert_answer(
        &self,
        k: i64,
        a: &NewAnswer,
        simulated: bool,
        run: i64,
        at: &str,
    ) -> Result<()> {
        let NewAnswer { iid, epid, cid } = *a;
        // The insert is tried first (one lookup, by the trigger); only a key that
        // already holds an answer is read back, to tell a repeat from a contradiction.
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO answers(key, iid, epid, simulated, cid, run, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![k, iid, epid, simulated, cid, run, at]);
        match inserted {
            Ok(_) => {}
            Err(
                e @ rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error {
                        code: rusqlite::ErrorCode::ConstraintViolation,
                        ..
                    },
                    _,
                ),
            ) => {
                let existing: Option<ConfirmationId> = self
                    .tx
                    .prepare_cached(
                        "SELECT cid FROM answers WHERE key = ?1 AND iid = ?2 AND epid = ?3 AND simulated = ?4",
                    )?
                    .query_row(params![k, iid, epid, simulated], |r| r.get(0))
                    .optional()?;
                match existing {
                    Some(c) if c == *cid => {}
                    Some(_) => {
                        return Err(JournalError::Contradiction(format!(
                            "a second, different answer for IID {}: refused",
                            iid.digits()
                        )))
                    }
                    // Another constraint (no such run, …): that error, as it is.
                    None => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        if !simulated {
            self.settle(iid, epid)?;
        }
        Ok(())
    }

    /// Records (or replaces) a refusal of one record of a bundle by one backend, and
    /// closes the intent.
    pub fn save_failure(&self, of: &RecordOf, f: &RecordFailure, at: &str) -> Result<()> {
        let RecordOf {
            bundle_id,
            handle,
            backend,
            iid,
            epid,
        } = *of;
        self.tx
            .prepare_cached(
                "INSERT INTO failures(bundle_id, handle, backend, iid, code, service_code, message, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(bundle_id, handle, backend) DO UPDATE SET iid = excluded.iid, code = excluded.code, service_code = excluded.service_code, message = excluded.message, at = excluded.at",
            )?
            .execute(params![
                bundle_id,
                handle as i64,
                backend,
                iid,
                f.code.as_str(),
                f.service_code.as_ref().map(|c| c.as_str()),
                f.message.as_str(),
                at
            ])?;
        if !backend.simulated() {
            self.settle(iid, epid)?;
        }
        Ok(())
    }

    /// Makes everything in the batch durable at once.
    pub fn commit(self) -> Result<()> {
        self.tx.commit().map_err(JournalError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle ID numbered `n`.
    fn bid(n: u8) -> BundleId {
        BundleId::parse(&format!("{n:032x}")).unwrap()
    }

    /// A well-formed CID, different for each `n`.
    fn c(n: u8) -> ConfirmationId {
        let payload: Vec<u8> = (0..40).map(|i| (n + i) % 10).collect();
        ConfirmationId::parse(&makproxy_core::ids::with_check_digits(&payload, 6)).unwrap()
    }

    /// A valid installation ID named by `label` (distinct labels, distinct IDs).
    fn i(label: &str) -> InstallationId {
        let seed = makproxy_core::ids::digits_from_seed(label.as_bytes(), 54);
        InstallationId::parse(&makproxy_core::ids::with_check_digits(&seed, 7)).unwrap()
    }

    /// A valid extended product ID named by `label`.
    fn e(label: &str) -> ExtendedProductId {
        let n: String = label.bytes().map(|b| format!("{b:03}")).collect();
        ExtendedProductId::parse(&format!("03612-03305-317-{n}-02-1033-9200.0000-0662023")).unwrap()
    }

    /// A read refused as a damaged journal (never served or shown), saying `words`.
    fn assert_invalid<T: std::fmt::Debug>(r: Result<T>, words: &str) {
        match r {
            Err(e @ JournalError::Invalid(_)) => assert!(e.to_string().contains(words), "{e}"),
            other => panic!("served, shown or misclassified: {other:?}"),
        }
    }

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open_path(&dir.path().join("j.sqlite3")).unwrap();
        (dir, j)
    }

    fn refusal(code: &str) -> RecordFailure {
        RecordFailure {
            code: makproxy_core::Code::BkdRefused.into(),
            service_code: Some(ServiceCode::parse(code).unwrap()),
            message: FailureMessage::cut("m"),
        }
    }

    /// A journal holding one answer, `c(1)` for ("111", "E1", real), obtained by
    /// `backend` in run "r1"; returns the run's row ID.
    fn with_answer(j: &mut Journal, backend: BackendKind) -> i64 {
        let run = j.start_run("r1", &bid(1), backend, "u", "t").unwrap();
        let b = j.batch().unwrap();
        b.save_answer(&i("111"), &e("E1"), false, &c(1), run, "t")
            .unwrap();
        b.commit().unwrap();
        run
    }

    #[test]
    fn answers_are_found_by_full_key_with_their_backend() {
        let (_d, mut j) = journal();
        with_answer(&mut j, BackendKind::Manual);
        let got = j.answer(&i("111"), &e("E1"), false).unwrap().unwrap();
        assert_eq!(got.cid, c(1));
        assert_eq!(got.backend, BackendKind::Manual);
        assert_eq!(j.answer(&i("111"), &e("E1"), true).unwrap(), None);
        assert_eq!(j.answer(&i("111"), &e("E2"), false).unwrap(), None);
        assert_eq!(j.answer(&i("112"), &e("E1"), false).unwrap(), None);
    }

    #[test]
    fn a_second_different_answer_for_one_key_is_refused_in_every_build() {
        let (_d, mut j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Microsoft, "u", "t")
            .unwrap();
        let b = j.batch().unwrap();
        b.save_answer(&i("111"), &e("E1"), false, &c(1), run, "t")
            .unwrap();
        b.save_answer(&i("111"), &e("E1"), false, &c(1), run, "t")
            .expect("the same answer again is harmless");
        assert!(b
            .save_answer(&i("111"), &e("E1"), false, &c(2), run, "t")
            .is_err());
    }

    /// A group saved in digest order holds exactly what saving each one would: every
    /// answer found under its own key, a repeat harmless, a contradiction refused.
    #[test]
    fn a_group_of_answers_is_saved_as_each_one_would_be() {
        let (_d, mut j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Simulator, "u", "t")
            .unwrap();
        let ids: Vec<(InstallationId, ExtendedProductId, ConfirmationId)> = (0..100u8)
            .map(|n| (i(&format!("{n}")), e("E"), c(n % 10)))
            .collect();
        let group: Vec<NewAnswer> = ids
            .iter()
            .map(|(iid, epid, cid)| NewAnswer { iid, epid, cid })
            .collect();
        let b = j.batch().unwrap();
        b.save_answers(&group, true, run, "t").unwrap();
        b.save_answers(&group[..3], true, run, "t")
            .expect("the same answers again are harmless");
        let other = c(9);
        let contradiction = NewAnswer {
            cid: if *group[5].cid == other {
                &ids[6].2
            } else {
                &other
            },
            ..group[5]
        };
        assert!(matches!(
            b.save_answers(&[group[7], contradiction], true, run, "t"),
            Err(JournalError::Contradiction(_))
        ));
        b.commit().unwrap();
        for (iid, epid, cid) in &ids {
            assert_eq!(&j.answer(iid, epid, true).unwrap().unwrap().cid, cid);
            assert_eq!(j.answer(iid, epid, false).unwrap(), None, "simulated only");
        }
    }

    #[test]
    fn the_database_itself_refuses_a_second_answer_for_a_key() {
        let (_d, mut j) = journal();
        let run = with_answer(&mut j, BackendKind::Microsoft);
        // Past save_answer's own check: a raw insert for the same key is refused...
        let raw = |iid: &str, sim: bool| {
            let (iid, epid) = (i(iid), e("E1"));
            j.conn.execute(
                "INSERT INTO answers(key, iid, epid, simulated, cid, run, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 't')",
                params![key(&iid, &epid, sim), iid, epid, sim, c(9), run],
            )
        };
        let e = raw("111", false).unwrap_err().to_string();
        assert!(e.contains("already holds an answer"), "{e}");
        // ... while another IID, or a drill's answer for the same IID, is a new key.
        raw("112", false).unwrap();
        raw("111", true).unwrap();
    }

    #[test]
    fn a_journal_row_that_is_not_a_cid_is_refused_not_served() {
        let (_d, j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Microsoft, "u", "t")
            .unwrap();
        // A tampered (or damaged) journal: the row's CID is not 48 valid digits.
        j.conn
            .execute(
                "INSERT INTO answers(key, iid, epid, simulated, cid, run, at) VALUES(?1, ?2, ?3, 0, '123456', ?4, 't')",
                params![key(&i("222"), &e("E"), false), i("222"), e("E"), run],
            )
            .unwrap();
        assert_invalid(
            j.answer(&i("222"), &e("E"), false),
            "not a valid confirmation ID",
        );
    }

    /// A tampered journal row read back for `journal list`/`show` (printed to a
    /// terminal): each column is checked through its type, so an IID with control
    /// characters, or an unknown backend, is refused, never shown.
    #[test]
    fn rows_read_for_people_are_checked_through_their_types() {
        let (_d, mut j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Microsoft, "u", "t")
            .unwrap();
        j.conn
            .execute(
                "INSERT INTO answers(key, iid, epid, simulated, cid, run, at) VALUES(1, '12\u{1b}[2J', ?1, 0, ?2, ?3, 't')",
                params![e("E"), c(1), run],
            )
            .unwrap();
        assert_invalid(j.entries(10), "not a valid installation ID");
        j.conn.execute("DELETE FROM answers", []).unwrap();
        let b = j.batch().unwrap();
        b.intend(&[(&i("1"), &e("E"))], BackendKind::Microsoft, run, "t")
            .unwrap();
        b.commit().unwrap();
        j.conn
            .execute("UPDATE intents SET backend = 'telnet'", [])
            .unwrap();
        assert_invalid(j.intents(), "not a valid backend");
        // `unknown` is what a schema-2 refusal and a lost journal's request say.
        j.conn
            .execute("UPDATE intents SET backend = 'unknown'", [])
            .unwrap();
        assert_eq!(j.intents().unwrap()[0].backend, Recorded::Unknown);
    }

    #[test]
    fn a_digest_collision_never_serves_another_records_cid() {
        let (_d, mut j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Microsoft, "u", "t")
            .unwrap();
        // Forge a row that shares the digest of ("222", "E", real) but not its key.
        j.conn
            .execute(
                "INSERT INTO answers(key, iid, epid, simulated, cid, run, at) VALUES(?1, ?2, ?3, 0, ?4, ?5, 't')",
                params![key(&i("222"), &e("E"), false), i("999"), e("E"), c(8), run],
            )
            .unwrap();
        assert_eq!(j.answer(&i("222"), &e("E"), false).unwrap(), None);
        let b = j.batch().unwrap();
        b.save_answer(&i("222"), &e("E"), false, &c(3), run, "t")
            .unwrap();
        b.commit().unwrap();
        assert_eq!(
            j.answer(&i("222"), &e("E"), false).unwrap().unwrap().cid,
            c(3)
        );
        assert_eq!(
            j.answer(&i("999"), &e("E"), false).unwrap(),
            None,
            "looked up under its own digest, the forged row is not found either"
        );
    }

    #[test]
    fn refusals_are_per_bundle_and_backend_and_replaced() {
        let (_d, mut j) = journal();
        let sim = BackendKind::Simulator;
        let ms = BackendKind::Microsoft;
        assert!(!j.any_failure(&bid(1), sim).unwrap());
        let b = j.batch().unwrap();
        let rec = RecordOf {
            bundle_id: &bid(1),
            handle: 3,
            backend: sim,
            iid: &i("1"),
            epid: &e("E"),
        };
        b.save_failure(&rec, &refusal("0x7F"), "t").unwrap();
        b.save_failure(&rec, &refusal("0x67"), "t").unwrap();
        b.commit().unwrap();
        assert!(j.any_failure(&bid(1), sim).unwrap());
        assert!(
            !j.any_failure(&bid(1), ms).unwrap(),
            "a drill's refusal is not the service's"
        );
        assert!(!j.any_failure(&bid(2), sim).unwrap());
        assert_eq!(
            j.failure(&bid(1), 3, sim)
                .unwrap()
                .unwrap()
                .service_code
                .as_deref(),
            Some("0x67")
        );
        assert_eq!(j.failure(&bid(1), 3, ms).unwrap(), None);
        assert_eq!(j.failure(&bid(1), 4, sim).unwrap(), None);
    }

    #[test]
    fn an_intent_stays_open_until_its_answer_and_forget_is_audited() {
        let (_d, mut j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Microsoft, "u", "t")
            .unwrap();
        let b = j.batch().unwrap();
        b.intend(&[(&i("1"), &e("E"))], BackendKind::Microsoft, run, "t")
            .unwrap();
        b.intend(&[(&i("2"), &e("E"))], BackendKind::Microsoft, run, "t")
            .unwrap();
        b.commit().unwrap();
        assert!(j.any_intent().unwrap());
        let b = j.batch().unwrap();
        b.save_answer(&i("1"), &e("E"), false, &c(4), run, "t")
            .unwrap();
        b.commit().unwrap();
        assert_eq!(j.intent(&i("1"), &e("E")).unwrap(), None);
        let open = j.intent(&i("2"), &e("E")).unwrap().unwrap();
        assert_eq!(
            (open.run_id.as_str(), open.backend.as_str()),
            ("r1", "microsoft")
        );
        assert_eq!(j.intents().unwrap().len(), 1);
        assert_eq!(
            j.forget(&i("2"), "asked by phone instead", "t2").unwrap(),
            1
        );
        assert!(!j.any_intent().unwrap());
        assert_eq!(j.forget(&i("1"), "typo", "t3").unwrap(), 1);
        assert_eq!(j.answer(&i("1"), &e("E"), false).unwrap(), None);
        let audit: i64 = j
            .conn
            .query_row("SELECT COUNT(*) FROM forgotten", [], |r| r.get(0))
            .unwrap();
        assert_eq!(audit, 2);
        assert_eq!(j.forget(&i("3"), "nothing there", "t4").unwrap(), 0);
    }

    /// Every step of a key's life from every place it can be: the life only goes
    /// forward, and a refused step leaves the key where it was.
    #[test]
    fn every_step_of_a_keys_life_goes_forward_or_is_refused() {
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Place {
            Absent,
            InFlight,
            Answered,
            Refused,
        }
        #[derive(Debug, Clone, Copy)]
        enum Step {
            Intend,
            NeverLeft,
            Answer(u8),
            Refuse,
        }
        use Place::*;
        use Step::*;
        let (iid, epid, ms) = (i("life"), e("E1"), BackendKind::Microsoft);
        let of = RecordOf {
            bundle_id: &bid(1),
            handle: 1,
            backend: ms,
            iid: &iid,
            epid: &epid,
        };
        let take = |j: &mut Journal, run: i64, step: Step| -> Result<()> {
            let b = j.batch()?;
            match step {
                Intend => b.intend(&[(&iid, &epid)], ms, run, "t")?,
                NeverLeft => b.settle(&iid, &epid)?,
                Answer(n) => b.save_answer(&iid, &epid, false, &c(n), run, "t")?,
                Refuse => b.save_failure(&of, &refusal("0x67"), "t")?,
            }
            b.commit()
        };
        let place = |j: &Journal| {
            if j.answer(&iid, &epid, false).unwrap().is_some() {
                Answered
            } else if j.intent(&iid, &epid).unwrap().is_some() {
                InFlight
            } else if j.failure(&bid(1), 1, ms).unwrap().is_some() {
                Refused
            } else {
                Absent
            }
        };
        let to = |from: Place| match from {
            Absent => vec![],
            InFlight => vec![Intend],
            Answered => vec![Answer(1)],
            Refused => vec![Refuse],
        };
        // (from, step, accepted, where the key is after it)
        let table = [
            (Absent, Intend, true, InFlight),
            (Absent, NeverLeft, true, Absent),
            (Absent, Answer(1), true, Answered),
            (Absent, Refuse, true, Refused),
            (InFlight, Intend, true, InFlight),
            (InFlight, NeverLeft, true, Absent),
            (InFlight, Answer(1), true, Answered),
            (InFlight, Refuse, true, Refused),
            (Answered, Intend, false, Answered),
            (Answered, NeverLeft, true, Answered),
            (Answered, Answer(1), true, Answered),
            (Answered, Answer(2), false, Answered),
            (Answered, Refuse, true, Answered),
            (Refused, Intend, true, InFlight),
            (Refused, NeverLeft, true, Refused),
            (Refused, Answer(1), true, Answered),
            (Refused, Refuse, true, Refused),
        ];
        for (from, step, accepted, after) in table {
            let (_d, mut j) = journal();
            let run = j.start_run("r1", &bid(1), ms, "u", "t").unwrap();
            for s in to(from) {
                take(&mut j, run, s).unwrap();
            }
            assert_eq!(place(&j), from, "setting up {from:?}");
            let got = take(&mut j, run, step);
            assert_eq!(got.is_ok(), accepted, "{from:?} + {step:?}: {got:?}");
            assert_eq!(place(&j), after, "{from:?} + {step:?}");
            if from == Answered {
                let kept = j.answer(&iid, &epid, false).unwrap().unwrap().cid;
                assert_eq!(kept, c(1), "{from:?} + {step:?} changed the CID");
            }
        }
    }

    #[test]
    fn an_answered_key_is_never_put_in_flight_again_until_it_is_forgotten() {
        let (_d, mut j) = journal();
        let run = with_answer(&mut j, BackendKind::Microsoft);
        let b = j.batch().unwrap();
        match b.intend(&[(&i("111"), &e("E1"))], BackendKind::Command, run, "t2") {
            Err(JournalError::Backwards(m)) => {
                assert!(m.contains("second activation"), "{m}")
            }
            other => panic!("an answered key was put in flight: {other:?}"),
        }
        // Only that key: the same IID with another ePID, and a simulated answer of a
        // drill, do not stand in the way of a real request.
        b.intend(&[(&i("111"), &e("E2"))], BackendKind::Microsoft, run, "t2")
            .unwrap();
        b.save_answer(&i("222"), &e("E1"), true, &c(2), run, "t2")
            .unwrap();
        b.intend(&[(&i("222"), &e("E1"))], BackendKind::Microsoft, run, "t2")
            .unwrap();
        b.commit().unwrap();
        assert_eq!(j.intent(&i("111"), &e("E1")).unwrap(), None);
        // forget (audited) takes the key back; then it may be asked again.
        assert_eq!(j.forget(&i("111"), "reimaged", "t3").unwrap(), 2);
        let b = j.batch().unwrap();
        b.intend(&[(&i("111"), &e("E1"))], BackendKind::Microsoft, run, "t4")
            .unwrap();
        b.commit().unwrap();
        assert!(j.intent(&i("111"), &e("E1")).unwrap().is_some());
    }

    #[test]
    fn intents_are_all_or_none_and_a_refusal_leaves_the_batchs_answers_to_commit() {
        let (_d, mut j) = journal();
        let run = with_answer(&mut j, BackendKind::Microsoft);
        let b = j.batch().unwrap();
        // An answer received in the same batch, then a parcel whose last key is
        // already answered: no intent of the parcel is written.
        b.save_answer(&i("333"), &e("E1"), false, &c(3), run, "t2")
            .unwrap();
        let parcel = [(&i("444"), &e("E1")), (&i("111"), &e("E1"))];
        let keys: Vec<_> = parcel.iter().map(|(i, e)| (*i, *e)).collect();
        assert!(matches!(
            b.intend(&keys, BackendKind::Microsoft, run, "t2"),
            Err(JournalError::Backwards(_))
        ));
        // The answer received in the same batch is still there to commit.
        b.commit().unwrap();
        assert_eq!(
            j.answer(&i("333"), &e("E1"), false).unwrap().unwrap().cid,
            c(3)
        );
        assert_eq!(j.intent(&i("444"), &e("E1")).unwrap(), None, "all or none");
        assert!(!j.any_intent().unwrap());
        // An answer saved in the batch stands in the way of an intent in the same one.
        let b = j.batch().unwrap();
        b.save_answer(&i("555"), &e("E1"), false, &c(5), run, "t3")
            .unwrap();
        assert!(b
            .intend(&[(&i("555"), &e("E1"))], BackendKind::Microsoft, run, "t3")
            .is_err());
    }

    #[test]
    fn a_schema_2_journal_is_migrated_and_keeps_its_answers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.sqlite3");
        // The schema-2 layout as release 0.1 wrote it, with one answer and one refusal.
        let conn = Connection::open(&p).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES('schema_version', '2');
             CREATE TABLE runs(id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, bundle_id TEXT NOT NULL, backend TEXT NOT NULL, started TEXT NOT NULL);
             CREATE TABLE answers(id INTEGER PRIMARY KEY, key INTEGER NOT NULL, iid TEXT NOT NULL, epid TEXT NOT NULL, simulated INTEGER NOT NULL, cid TEXT NOT NULL, run INTEGER NOT NULL REFERENCES runs(id), at TEXT NOT NULL);
             CREATE TABLE failures(bundle_id TEXT NOT NULL, handle INTEGER NOT NULL, code TEXT NOT NULL, service_code TEXT, message TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY(bundle_id, handle));
             CREATE TABLE requests(bundle_id TEXT PRIMARY KEY, site TEXT NOT NULL, sequence INTEGER NOT NULL, manifest_sha256 TEXT NOT NULL, first_seen TEXT NOT NULL, UNIQUE(site, sequence));
             CREATE TABLE returns(bundle_id TEXT PRIMARY KEY, answers TEXT NOT NULL, sequence INTEGER NOT NULL, file TEXT NOT NULL, at TEXT NOT NULL);
             INSERT INTO runs VALUES(1, 'r1', '00000000000000000000000000000001', 'microsoft', 't');
             INSERT INTO answers VALUES(1, {}, '{}', '{}', 0, '{}', 1, 't');
             INSERT INTO failures VALUES('00000000000000000000000000000001', 2, 'MP-BKD-001', '0x7F', 'm', 't');",
            key(&i("111"), &e("E"), false),
            i("111").digits(),
            e("E"),
            c(5).digits()
        ))
        .unwrap();
        drop(conn);
        let j = Journal::open_path(&p).unwrap();
        let a = j.answer(&i("111"), &e("E"), false).unwrap().unwrap();
        assert_eq!((a.cid, a.backend), (c(5), BackendKind::Microsoft));
        assert_eq!(
            j.failure(&bid(1), 2, BackendKind::Microsoft).unwrap(),
            None,
            "a refusal of unknown provenance is not reused"
        );
        assert!(!j.any_intent().unwrap());
    }

    /// What `journal list`, `journal show` and `journal forget` read and remove,
    /// field by field (found by mutation testing: only the e2e suite looked).
    #[test]
    fn list_show_and_forget_see_exactly_what_was_saved() {
        let (_d, mut j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Microsoft, "https://x", "t0")
            .unwrap();
        let b = j.batch().unwrap();
        b.save_answer(&i("111"), &e("E1"), false, &c(1), run, "t1")
            .unwrap();
        b.save_answer(&i("222"), &e("E2"), false, &c(2), run, "t2")
            .unwrap();
        b.save_failure(
            &RecordOf {
                bundle_id: &bid(1),
                handle: 7,
                backend: BackendKind::Microsoft,
                iid: &i("111"),
                epid: &e("E9"),
            },
            &RecordFailure {
                code: makproxy_core::Code::BkdRefused.into(),
                service_code: Some(ServiceCode::parse("0x7F").unwrap()),
                message: FailureMessage::cut("limit reached"),
            },
            "t3",
        )
        .unwrap();
        b.intend(&[(&i("111"), &e("E8"))], BackendKind::Microsoft, run, "t4")
            .unwrap();
        b.commit().unwrap();

        let newest = j.entries(1).unwrap();
        assert_eq!(newest.len(), 1, "--limit");
        assert_eq!(newest[0].iid, i("222"), "newest first");
        let all = j.entries(10).unwrap();
        assert_eq!(all.len(), 2);
        let a = &all[1];
        assert_eq!(
            (a.iid.clone(), a.epid.clone(), a.cid.clone(), a.simulated),
            (i("111"), e("E1"), Some(c(1)), false)
        );
        assert_eq!(
            (
                a.backend,
                a.endpoint.as_str(),
                a.bundle_id.as_str(),
                a.run_id.as_str(),
                a.at.as_str()
            ),
            (
                BackendKind::Microsoft,
                "https://x",
                bid(1).as_str(),
                "r1",
                "t1"
            )
        );

        let (answers, failures) = j.show(&i("111")).unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].cid, Some(c(1)));
        assert_eq!(failures.len(), 1);
        let f = &failures[0];
        assert_eq!(
            (f.bundle_id.as_str(), f.handle, f.backend, f.at.as_str()),
            (
                bid(1).as_str(),
                7,
                Recorded::Backend(BackendKind::Microsoft),
                "t3"
            )
        );
        assert_eq!(f.failure.code, makproxy_core::Code::BkdRefused);
        assert_eq!(f.failure.service_code.as_deref(), Some("0x7F"));
        assert_eq!(f.failure.message.as_str(), "limit reached");
        assert_eq!(j.show(&i("333")).unwrap(), (vec![], vec![]));

        // forget counts every kind of row it removes, and only for that IID.
        assert_eq!(j.forget(&i("111"), "reimaged", "t5").unwrap(), 3);
        assert_eq!(j.show(&i("111")).unwrap(), (vec![], vec![]));
        assert!(!j.any_intent().unwrap());
        assert_eq!(j.entries(10).unwrap().len(), 1, "222 is kept");
        assert_eq!(j.forget(&i("111"), "again", "t6").unwrap(), 0);
        let audit: Vec<(String, String)> = j
            .conn
            .prepare("SELECT what, reason FROM forgotten ORDER BY at")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(audit.len(), 1, "nothing forgotten, nothing audited");
        assert_eq!(
            audit[0],
            (
                format!(
                    "answer {} (microsoft); 1 refusal(s); 1 open intent(s)",
                    c(1).digits()
                ),
                "reimaged".to_string()
            )
        );
        // Each kind alone is counted and audited too.
        let b = j.batch().unwrap();
        b.intend(&[(&i("444"), &e("E4"))], BackendKind::Microsoft, run, "t7")
            .unwrap();
        b.commit().unwrap();
        assert_eq!(j.forget(&i("444"), "stuck", "t8").unwrap(), 1);
        let b = j.batch().unwrap();
        b.save_failure(
            &RecordOf {
                bundle_id: &bid(1),
                handle: 8,
                backend: BackendKind::Manual,
                iid: &i("555"),
                epid: &e("E5"),
            },
            &refusal("0x86"),
            "t9",
        )
        .unwrap();
        b.commit().unwrap();
        assert_eq!(j.forget(&i("555"), "typo", "t10").unwrap(), 1);
        let whats: Vec<String> = j
            .conn
            .prepare("SELECT what FROM forgotten ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            whats[1..],
            ["1 open intent(s)".to_string(), "1 refusal(s)".to_string()]
        );
    }

    /// The replay guard's memory and the return sequence (also only e2e-tested before).
    #[test]
    fn requests_are_remembered_by_signer_and_sequence_and_returns_are_numbered() {
        let (_d, mut j) = journal();
        assert_eq!(j.request_with_sequence("k1", 1).unwrap(), None);
        j.record_request(&bid(0xa), "plant-a", 1, "sha", "k1", "t")
            .unwrap();
        j.record_request(&bid(0xb), "plant-a", 1, "sha", "k1", "t")
            .unwrap();
        assert_eq!(
            j.request_with_sequence("k1", 1).unwrap(),
            Some(bid(0xa)),
            "the first bundle seen with a sequence keeps it"
        );
        assert_eq!(
            j.request_with_sequence("k2", 1).unwrap(),
            None,
            "keyed by signer"
        );
        assert_eq!(j.request_with_sequence("k1", 2).unwrap(), None);
        assert_eq!(j.next_return_sequence().unwrap(), 1);
        j.record_return(&bid(0xe1), &bid(0xa), 1, "r1.zip", "t")
            .unwrap();
        assert_eq!(j.next_return_sequence().unwrap(), 2);
        j.record_return(&bid(0xe2), &bid(0xa), 5, "r2.zip", "t")
            .unwrap();
        assert_eq!(j.next_return_sequence().unwrap(), 6);
    }

    /// A refusal from a backend that can spend closes the key's intent; a simulated one
    /// cannot have spent anything and leaves a real request's intent open.
    #[test]
    fn only_a_real_refusal_settles_an_intent() {
        let (_d, mut j) = journal();
        let run = j
            .start_run("r1", &bid(1), BackendKind::Microsoft, "u", "t")
            .unwrap();
        let b = j.batch().unwrap();
        b.intend(&[(&i("111"), &e("E1"))], BackendKind::Microsoft, run, "t")
            .unwrap();
        b.save_failure(
            &RecordOf {
                bundle_id: &bid(1),
                handle: 1,
                backend: BackendKind::Simulator,
                iid: &i("111"),
                epid: &e("E1"),
            },
            &refusal("0x7F"),
            "t",
        )
        .unwrap();
        b.commit().unwrap();
        assert!(j.intent(&i("111"), &e("E1")).unwrap().is_some());
        let b = j.batch().unwrap();
        b.save_failure(
            &RecordOf {
                bundle_id: &bid(1),
                handle: 1,
                backend: BackendKind::Microsoft,
                iid: &i("111"),
                epid: &e("E1"),
            },
            &refusal("0x7F"),
            "t",
        )
        .unwrap();
        b.commit().unwrap();
        assert!(j.intent(&i("111"), &e("E1")).unwrap().is_none());
    }
}
