//! The online journal: every answer is persisted here the moment it arrives, before
//! anything else happens with it. CIDs are keyed by (IID, ePID, simulated) so a later
//! bundle carrying the same IID is served without asking the backend again, and a
//! simulator drill can never leak simulated CIDs into a real run. Per-record refusals
//! are kept per (bundle, handle) so a resumed run does not re-ask them either.

use makproxy_core::keys::Home;
use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS answers(
    iid TEXT NOT NULL,
    epid TEXT NOT NULL,
    simulated INTEGER NOT NULL,
    cid TEXT NOT NULL,
    backend TEXT NOT NULL,
    run_id TEXT NOT NULL,
    bundle_id TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY(iid, epid, simulated)
);
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

pub fn open(home: &Home) -> rusqlite::Result<Connection> {
    makproxy_cli::store::open(&home.dir.join("journal.sqlite3"), SCHEMA)
}

pub use makproxy_cli::store::{meta_get, meta_set};

/// A CID already in the journal: (cid, run that obtained it).
pub fn answer(
    conn: &Connection,
    iid: &str,
    epid: &str,
    simulated: bool,
) -> rusqlite::Result<Option<(String, String)>> {
    conn.prepare_cached(
        "SELECT cid, run_id FROM answers WHERE iid = ?1 AND epid = ?2 AND simulated = ?3",
    )?
    .query_row(params![iid, epid, simulated], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
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
