//! The online journal: every answer is persisted here the moment it arrives, before
//! anything else happens with it. CIDs are looked up by (IID, ePID, simulated) so a later
//! bundle carrying the same IID is served without asking the backend again, and a
//! simulator drill can never leak simulated CIDs into a real run. Per-record refusals
//! are kept per (bundle, handle) so a resumed run does not re-ask them either.
//!
//! Layout for speed at fleet scale: answers are appended in arrival order (integer row
//! IDs), and found through a small index on a 64-bit digest of the lookup key; the full
//! key is compared on every hit, so a digest collision costs a row read, never a wrong
//! answer. Which run obtained an answer (and for which bundle, through which backend) is
//! kept once per run.

use makproxy_core::keys::Home;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// Bumped whenever the schema changes; a journal of another version is refused.
pub const SCHEMA_VERSION: u32 = 2;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    bundle_id TEXT NOT NULL,
    backend TEXT NOT NULL,
    started TEXT NOT NULL
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
CREATE TABLE IF NOT EXISTS failures(
    bundle_id TEXT NOT NULL,
    handle INTEGER NOT NULL,
    code TEXT NOT NULL,
    service_code TEXT,
    message TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY(bundle_id, handle)
);
CREATE TABLE IF NOT EXISTS requests(
    bundle_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    UNIQUE(site, sequence)
);
CREATE TABLE IF NOT EXISTS returns(
    bundle_id TEXT PRIMARY KEY,
    answers TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    file TEXT NOT NULL,
    at TEXT NOT NULL
);
"#;

pub fn open(home: &Home) -> Result<Connection, makproxy_cli::store::StoreError> {
    makproxy_cli::store::open(&home.dir.join("journal.sqlite3"), SCHEMA, SCHEMA_VERSION)
}

pub use makproxy_cli::store::{meta_get, meta_set};

/// The lookup digest of (IID, ePID, simulated): the first 8 bytes of a SHA-256.
fn key(iid: &str, epid: &str, simulated: bool) -> i64 {
    let mut h = Sha256::new();
    h.update(iid.as_bytes());
    h.update(b"|");
    h.update(epid.as_bytes());
    h.update(if simulated { b"|1" } else { b"|0" });
    let d = h.finalize();
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Registers a run of `activate`; answers it obtains point at the returned row.
pub fn start_run(
    conn: &Connection,
    run_id: &str,
    bundle_id: &str,
    backend: &str,
    at: &str,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO runs(run_id, bundle_id, backend, started) VALUES(?1, ?2, ?3, ?4)",
        params![run_id, bundle_id, backend, at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// A CID already in the journal: (cid, run that obtained it).
pub fn answer(
    conn: &Connection,
    iid: &str,
    epid: &str,
    simulated: bool,
) -> rusqlite::Result<Option<(String, i64)>> {
    conn.prepare_cached(
        "SELECT cid, run FROM answers WHERE key = ?1 AND iid = ?2 AND epid = ?3 AND simulated = ?4",
    )?
    .query_row(
        params![key(iid, epid, simulated), iid, epid, simulated],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Records a CID. Callers ask the backend only for keys that `answer` found absent,
/// once per key, under the store's exclusive lock, so each key has one row (checked in
/// debug builds; a check in release costs a lookup per insert).
pub fn save_answer(
    conn: &Connection,
    iid: &str,
    epid: &str,
    simulated: bool,
    cid: &str,
    run: i64,
    at: &str,
) -> rusqlite::Result<()> {
    debug_assert!(
        matches!(answer(conn, iid, epid, simulated), Ok(None)),
        "a second answer for one key"
    );
    conn.prepare_cached(
        "INSERT INTO answers(key, iid, epid, simulated, cid, run, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![key(iid, epid, simulated), iid, epid, simulated, cid, run, at])?;
    Ok(())
}

/// Whether any refusal is recorded for this bundle (when none is, per-record lookups
/// can be skipped).
pub fn any_failure(conn: &Connection, bundle_id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM failures WHERE bundle_id = ?1)",
        params![bundle_id],
        |r| r.get(0),
    )
}

/// A refusal recorded earlier for this record of this bundle.
pub fn failure(
    conn: &Connection,
    bundle_id: &str,
    handle: u64,
) -> rusqlite::Result<Option<(String, Option<String>, String)>> {
    conn.prepare_cached(
        "SELECT code, service_code, message FROM failures WHERE bundle_id = ?1 AND handle = ?2",
    )?
    .query_row(params![bundle_id, handle as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .optional()
}

/// Records (or replaces) the refusal of one record of a bundle.
pub fn save_failure(
    conn: &Connection,
    bundle_id: &str,
    handle: u64,
    code: &str,
    service_code: Option<&str>,
    message: &str,
    at: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO failures(bundle_id, handle, code, service_code, message, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(bundle_id, handle) DO UPDATE SET code = excluded.code, service_code = excluded.service_code, message = excluded.message, at = excluded.at",
    )?
    .execute(params![bundle_id, handle as i64, code, service_code, message, at])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = makproxy_cli::store::open(&dir.path().join("j.sqlite3"), SCHEMA, SCHEMA_VERSION)
            .unwrap();
        (dir, c)
    }

    #[test]
    fn answers_are_found_by_full_key() {
        let (_d, c) = journal();
        let run = start_run(&c, "r1", "b1", "simulator", "t").unwrap();
        save_answer(&c, "111", "E1", true, "CID-A", run, "t").unwrap();
        assert_eq!(
            answer(&c, "111", "E1", true).unwrap(),
            Some(("CID-A".into(), run))
        );
        assert_eq!(answer(&c, "111", "E1", false).unwrap(), None);
        assert_eq!(answer(&c, "111", "E2", true).unwrap(), None);
        assert_eq!(answer(&c, "112", "E1", true).unwrap(), None);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a second answer for one key")]
    fn a_second_answer_for_one_key_is_a_bug() {
        let (_d, c) = journal();
        let run = start_run(&c, "r1", "b1", "simulator", "t").unwrap();
        save_answer(&c, "111", "E1", true, "CID-A", run, "t").unwrap();
        save_answer(&c, "111", "E1", true, "CID-B", run, "t").unwrap();
    }

    #[test]
    fn a_digest_collision_never_serves_another_records_cid() {
        let (_d, c) = journal();
        let run = start_run(&c, "r1", "b1", "microsoft", "t").unwrap();
        // Forge a row that shares the digest of ("222", "E", real) but not its key.
        c.execute(
            "INSERT INTO answers(key, iid, epid, simulated, cid, run, at) VALUES(?1, '999', 'E', 0, 'OTHER', ?2, 't')",
            params![key("222", "E", false), run],
        )
        .unwrap();
        assert_eq!(answer(&c, "222", "E", false).unwrap(), None);
        save_answer(&c, "222", "E", false, "MINE", run, "t").unwrap();
        assert_eq!(
            answer(&c, "222", "E", false).unwrap(),
            Some(("MINE".into(), run))
        );
        assert_eq!(
            answer(&c, "999", "E", false).unwrap(),
            None,
            "looked up under its own digest, the forged row is not found either"
        );
    }

    #[test]
    fn failures_are_per_bundle_and_replaced() {
        let (_d, c) = journal();
        assert!(!any_failure(&c, "b1").unwrap());
        save_failure(&c, "b1", 3, "MP-X", Some("0x7F"), "first", "t").unwrap();
        save_failure(&c, "b1", 3, "MP-X", Some("0x67"), "second", "t").unwrap();
        assert!(any_failure(&c, "b1").unwrap());
        assert!(!any_failure(&c, "b2").unwrap());
        assert_eq!(
            failure(&c, "b1", 3).unwrap(),
            Some(("MP-X".into(), Some("0x67".into()), "second".into()))
        );
        assert_eq!(failure(&c, "b1", 4).unwrap(), None);
    }
}
