//! The secure side's ledger: one SQLite database in the home folder holding machines'
//! products, their state, bundles issued, returns applied, CIDs on hand, rejections and
//! history. Opened through `makproxy_cli::store` (WAL, `synchronous=FULL`); every
//! command's changes are one transaction (or batches of whole files for collect), so a
//! re-run after a kill completes the work.
//!
//! A product is two rows: `product_facts` (what collect saw: wide, rarely rewritten)
//! and `product_status` (where it is in the procedure: narrow, rewritten by pack and
//! apply for every product of a batch). Reads go through the `products` view that joins
//! them; writes name the table they change.

use makproxy_core::keys::Home;
use rusqlite::{params, Connection};

/// Product states, as stored and printed.
pub mod state {
    pub const QUEUED: &str = "queued";
    pub const SKIPPED: &str = "skipped";
    pub const PACKED: &str = "packed";
    pub const CID_ON_HAND: &str = "cid_on_hand";
    pub const CID_RECEIVED: &str = "cid_received";
    pub const ACTIVATED: &str = "activated";
    pub const FAILED: &str = "failed";
    pub const DEPOSIT_FAILED: &str = "deposit_failed";
    /// Every state, in the order reports list them.
    pub const ALL: &[&str] = &[
        QUEUED,
        PACKED,
        CID_ON_HAND,
        CID_RECEIVED,
        ACTIVATED,
        FAILED,
        DEPOSIT_FAILED,
        SKIPPED,
    ];
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS product_facts(
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    activation_id TEXT NOT NULL,
    application TEXT NOT NULL,
    wmi_class TEXT NOT NULL,
    product TEXT,
    description TEXT,
    partial_key TEXT,
    epid TEXT,
    iid TEXT,
    license_status INTEGER,
    source_file TEXT,
    UNIQUE(host, activation_id)
);
CREATE TABLE IF NOT EXISTS product_status(
    product_id INTEGER PRIMARY KEY REFERENCES product_facts(id),
    state TEXT NOT NULL,
    reason_code TEXT,
    reason TEXT,
    bundle_id TEXT,
    cid TEXT,
    cid_simulated INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS products AS
    SELECT f.id, f.host, f.activation_id, f.application, f.wmi_class, f.product, f.description,
           f.partial_key, f.epid, f.iid, f.license_status, f.source_file,
           s.state, s.reason_code, s.reason, s.bundle_id, s.cid, s.cid_simulated, s.updated_at
    FROM product_facts f JOIN product_status s ON s.product_id = f.id;
CREATE TABLE IF NOT EXISTS history(
    id INTEGER PRIMARY KEY,
    product_id INTEGER NOT NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_product ON history(product_id);
CREATE TABLE IF NOT EXISTS bundles(
    bundle_id TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL UNIQUE,
    manifest_sha256 TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    records INTEGER NOT NULL,
    file TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bundle_records(
    bundle_id TEXT NOT NULL,
    handle INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    iid TEXT NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(bundle_id, handle)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS returns(
    bundle_id TEXT PRIMARY KEY,
    answers TEXT NOT NULL,
    signer TEXT NOT NULL,
    backend TEXT NOT NULL,
    simulated INTEGER NOT NULL,
    applied_at TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cids(
    host TEXT NOT NULL,
    activation_id TEXT NOT NULL,
    iid TEXT NOT NULL,
    cid TEXT NOT NULL,
    simulated INTEGER NOT NULL,
    return_bundle TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY(host, activation_id, iid)
);
CREATE TABLE IF NOT EXISTS rejections(
    file TEXT NOT NULL,
    record INTEGER NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY(file, record)
);
"#;

/// Bumped whenever the schema changes; a ledger of another version is refused.
pub const SCHEMA_VERSION: u32 = 2;

/// Opens (creating if needed) the ledger of a secure home.
pub fn open(home: &Home) -> Result<Connection, makproxy_cli::store::StoreError> {
    makproxy_cli::store::open(&home.dir.join("ledger.sqlite3"), SCHEMA, SCHEMA_VERSION)
}

pub use makproxy_cli::store::{meta_get, meta_set};

pub fn history(
    conn: &Connection,
    product_id: i64,
    at: &str,
    event: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO history(product_id, at, event, detail) VALUES(?1, ?2, ?3, ?4)",
        params![product_id, at, event, detail],
    )?;
    Ok(())
}

/// Counts of products per state, in `state::ALL` order.
pub fn counts(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM products GROUP BY state")?;
    let got: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(state::ALL
        .iter()
        .map(|s| {
            (
                s.to_string(),
                got.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n),
            )
        })
        .collect())
}
