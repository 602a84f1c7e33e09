//! How each side opens its embedded SQLite store (the secure ledger, the online
//! journal): WAL with `synchronous=FULL` so every commit survives a crash, the file lock
//! taken once per process (one process per home; a second one waits), a 32 MiB page
//! cache, a checkpoint every 64 MiB of WAL, a `meta` key/value table, and a schema version checked before the schema is
//! applied, so a store written by another version is refused rather than half-read.

use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a store could not be opened.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite refused (a damaged file, a full disk, …).
    Sqlite(rusqlite::Error),
    /// Another process holds the store (its process ID, when it could be read).
    Busy {
        /// The store file.
        path: PathBuf,
        /// The holder's process ID, when it could be read.
        pid: Option<u32>,
    },
    /// The store was written with another schema (`None`: a pre-release store without a
    /// version).
    Version {
        /// The store file.
        path: PathBuf,
        /// The version it says it has.
        found: Option<String>,
        /// The version this build reads and writes.
        expected: u32,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(e) => e.fmt(f),
            Self::Busy { path, pid } => write!(
                f,
                "{} is in use by another makproxy process{}",
                path.display(),
                pid.map(|p| format!(" (process ID {p})")).unwrap_or_default()
            ),
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

/// A forward migration: the DDL/DML that turns a store of version `from` into `from + 1`.
pub struct Migration {
    /// The schema version this migration starts from.
    pub from: u32,
    /// The statements, run in one transaction with the others.
    pub sql: &'static str,
}

/// Opens (creating if needed) a store of schema `version` and applies `schema`
/// (idempotent DDL). A store with another version, or tables but no version, is refused.
pub fn open(path: &Path, schema: &str, version: u32) -> Result<Connection, StoreError> {
    open_migrating(path, schema, version, &[])
}

/// Takes the store's lock file (`<store>.lock`) for the rest of this process's life, so
/// a second process on the same home fails at once with the holder's process ID
/// (written to `<store>.pid`) instead of both waiting on SQLite and failing later. The
/// lock is the operating system's (flock / LockFileEx): it goes when the process does,
/// however it ends. Public for a command that builds a store under another name and
/// renames it into place (`makproxy-online recover`): it holds the real store's lock.
pub fn lock(path: &Path) -> Result<(), StoreError> {
    use std::sync::Mutex;
    static HELD: Mutex<Vec<(PathBuf, std::fs::File)>> = Mutex::new(Vec::new());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(p, _)| p == path) {
        return Ok(());
    }
    let with = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let io = |e: std::io::Error| {
        StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(with(".lock"))
        .map_err(io)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(with(".pid"))
                .ok()
                .and_then(|t| t.trim().parse().ok());
            return Err(StoreError::Busy {
                path: path.to_path_buf(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    std::fs::write(with(".pid"), std::process::id().to_string()).map_err(io)?;
    held.push((path.to_path_buf(), f));
    Ok(())
}

/// As [`open`], but an older store is first brought forward through `migrations`, one
/// version at a time, all in one transaction (a crash leaves the old version intact).
pub fn open_migrating(
    path: &Path,
    schema: &str,
    version: u32,
    migrations: &[Migration],
) -> Result<Connection, StoreError> {
    lock(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update(None, "cache_size", -32768)?;
    // Checkpoint when the WAL holds 64 MiB, not SQLite's 4 MiB: a large group commit
    // dirties index pages all over the file, and copying them back after every commit
    // wrote each page many times over (activate at 1M answers: 21 s -> 17 s with the
    // larger simulated groups). Durability is the WAL's, either way.
    conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    let found = meta_get(&conn, "schema_version")?;
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name <> 'meta'",
        [],
        |r| r.get(0),
    )?;
    let older = found
        .as_deref()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| *v < version && (*v..version).all(|f| migrations.iter().any(|m| m.from == f)));
    match found {
        Some(v) if v == version.to_string() => {}
        None if tables == 0 => meta_set(&conn, "schema_version", &version.to_string())?,
        Some(_) if older.is_some() => {
            let tx = conn.unchecked_transaction()?;
            for from in older.expect("checked")..version {
                let m = migrations.iter().find(|m| m.from == from).expect("checked");
                tx.execute_batch(m.sql)?;
            }
            meta_set(&tx, "schema_version", &version.to_string())?;
            tx.commit()?;
        }
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

/// A value of the store's `meta` table (schema version, next sequence, …).
pub fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
        r.get(0)
    })
    .optional()
}

/// Sets a value of the store's `meta` table.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute("INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", params![key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit survives a power cut only if SQLite forces the write-ahead log to disk
    /// at every commit: WAL mode with synchronous=FULL (2) on every store opened.
    #[test]
    fn every_store_commits_durably() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(
            &dir.path().join("s.sqlite3"),
            "CREATE TABLE IF NOT EXISTS t(x);",
            1,
        )
        .unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }

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
    fn an_older_store_is_migrated_forward_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sqlite3");
        let c = open(&p, "CREATE TABLE IF NOT EXISTS t(x INTEGER);", 1).unwrap();
        c.execute("INSERT INTO t(x) VALUES(7)", []).unwrap();
        drop(c);
        let m = [Migration {
            from: 1,
            sql: "ALTER TABLE t ADD COLUMN y INTEGER NOT NULL DEFAULT 3;",
        }];
        let c = open_migrating(
            &p,
            "CREATE TABLE IF NOT EXISTS t(x INTEGER, y INTEGER);",
            2,
            &m,
        )
        .unwrap();
        let row: (i64, i64) = c
            .query_row("SELECT x, y FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(row, (7, 3));
        assert_eq!(
            meta_get(&c, "schema_version").unwrap().as_deref(),
            Some("2")
        );
        drop(c);
        // Without a path from 2, version 3 still refuses it.
        assert!(matches!(
            open_migrating(&p, "", 3, &m),
            Err(StoreError::Version { .. })
        ));
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
