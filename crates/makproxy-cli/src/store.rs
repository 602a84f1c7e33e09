//! How each side opens its embedded SQLite store (the secure ledger, the online
//! journal): WAL with `synchronous=FULL` so every commit survives a crash, the file lock
//! taken once per process (one process per home; a second one waits), a 32 MiB page
//! cache, a `meta` key/value table, and a schema version checked before the schema is
//! applied, so a store written by another version is refused rather than half-read.

use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a store could not be opened.
#[derive(Debug)]
pub enum StoreError {
    Sqlite(rusqlite::Error),
    /// The store was written with another schema (`None`: a pre-release store without a
    /// version).
    Version {
        path: PathBuf,
        found: Option<String>,
        expected: u32,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(e) => e.fmt(f),
            Self::Version {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} has schema version {}; this makproxy reads version {expected}. Use the makproxy release that wrote it, or move the file aside to start a new one",
                path.display(),
                found.as_deref().unwrap_or("none (pre-release)")
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// Opens (creating if needed) a store of schema `version` and applies `schema`
/// (idempotent DDL). A store with another version, or tables but no version, is refused.
pub fn open(path: &Path, schema: &str, version: u32) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update(None, "cache_size", -32768)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    let found = meta_get(&conn, "schema_version")?;
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name <> 'meta'",
        [],
        |r| r.get(0),
    )?;
    match found {
        Some(v) if v == version.to_string() => {}
        None if tables == 0 => meta_set(&conn, "schema_version", &version.to_string())?,
        found => {
            return Err(StoreError::Version {
                path: path.to_path_buf(),
                found,
                expected: version,
            })
        }
    }
    conn.execute_batch(schema)?;
    Ok(conn)
}

pub fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
        r.get(0)
    })
    .optional()
}

pub fn meta_set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute("INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", params![key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_of_another_version_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sqlite3");
        let ddl = "CREATE TABLE IF NOT EXISTS t(x INTEGER);";
        drop(open(&p, ddl, 1).unwrap());
        drop(open(&p, ddl, 1).unwrap());
        let e = open(&p, "CREATE TABLE IF NOT EXISTS u(y INTEGER);", 2).unwrap_err();
        assert!(
            matches!(&e, StoreError::Version { found: Some(v), expected: 2, .. } if v == "1"),
            "{e}"
        );
        let c = Connection::open(&p).unwrap();
        let u: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'u'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(u, 0, "the refused schema was not applied");
    }

    #[test]
    fn a_pre_release_store_without_a_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sqlite3");
        Connection::open(&p)
            .unwrap()
            .execute_batch("CREATE TABLE old(x INTEGER);")
            .unwrap();
        let e = open(&p, "", 1).unwrap_err();
        assert!(e.to_string().contains("none (pre-release)"), "{e}");
    }
}
