//! The secure side's ledger: the one place that holds the secure side's state and every
//! SQL statement about it (one SQLite database in the home folder: machines' products,
//! their state, bundles issued, returns applied, CIDs on hand, rejections, history).
//! Opened through `makproxy_store` (WAL, `synchronous=FULL`, one process per
//! home); every command's changes are one transaction (or batches of whole files for
//! collect), so a re-run after a kill completes the work.
//!
//! Where a product may go is decided by one pure, exhaustive transition table
//! ([`ProductState::after`]; collect's rules are its [`Event::Seen`] rows), unit-tested
//! row by row and by a property test. A product's state changes one way:
//! [`Tx::apply`] takes a typed [`Change`], runs it through the table, and writes the
//! state, what goes with it, the machine time it rests on and a typed [`History`] line
//! together; the bulk moves of pack and reissue take their target from the same table.
//! State names are bound from the enum, never spelled in SQL.
//!
//! A product is two rows: `product_facts` (what collect saw: wide, rarely rewritten)
//! and `product_status` (where it is in the procedure: narrow, rewritten by pack and
//! apply for every product of a batch). Reads go through the `products` view that joins
//! them; writes name the table they change.

use makproxy_core::bundle::BundleId;
use makproxy_core::channel::{Channel, Policy};
use makproxy_core::home::Home;
use makproxy_core::ids::{
    ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId, WmiClass,
};
use makproxy_core::records::deposit_file::DepositItem;
use makproxy_store::{self as store, Migration, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::PathBuf;

/// A CID a return brought, kept for its (host, product, IID) ([`Tx::keep_cid`]).
#[derive(Debug, Clone, Copy)]
pub struct KeptCid<'a> {
    /// The machine.
    pub host: &'a HostName,
    /// The product.
    pub activation_id: &'a Guid,
    /// The installation ID it answers.
    pub iid: &'a InstallationId,
    /// The CID, as its type holds it.
    pub cid: &'a ConfirmationId,
    /// From a drill: never replaces a real one.
    pub simulated: bool,
    /// The return bundle that brought it.
    pub return_bundle: &'a BundleId,
}

/// A return applied, as the ledger records it ([`Tx::return_recorded`]).
#[derive(Debug, Clone, Copy)]
pub struct AppliedReturn<'a> {
    /// The return bundle.
    pub bundle_id: &'a BundleId,
    /// The CIL bundle it answers.
    pub answers: &'a BundleId,
    /// Who signed it: the pinned names of its signer and cosigners (`gw + gw-2`).
    pub signer: &'a str,
    /// The backend that answered.
    pub backend: &'a str,
    /// From a drill.
    pub simulated: bool,
    /// What apply counted.
    pub summary: &'a Summary,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
/// What one apply did (`--json` prints it as `summary`); kept with the return, as JSON
/// in its row, and read back through this type (a damaged row is `LedgerError::Invalid`).
pub struct Summary {
    /// CIDs recorded now.
    pub cids: u64,
    /// Records the online side refused.
    pub failed: u64,
    /// Answers for an IID the machine no longer has (kept, not deposited).
    pub iid_changed: u64,
    /// Records already answered by an earlier return.
    pub already_answered: u64,
    /// Records that did not match the request (unknown handle, other IID, …).
    pub rejected: u64,
    /// Records the online side could not settle (not sent, or uncertain): they stay
    /// pending, and a later return for the same request may answer them.
    #[serde(default)]
    pub pending: u64,
    /// Simulated CIDs replaced by real ones.
    #[serde(default)]
    pub superseded: u64,
}

/// Why a ledger read or write failed: the ledger's own error, mapped to an exit code
/// and a message by the binary (`From<LedgerError> for CliError`).
#[derive(Debug)]
pub enum LedgerError {
    /// SQLite refused (a damaged file, a full disk, an I/O error).
    Sqlite(rusqlite::Error),
    /// A row holds what its column's type does not accept (a tampered or damaged
    /// ledger); the error names the value and why.
    Invalid(rusqlite::Error),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::Sqlite(e) | LedgerError::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Sqlite(e) | LedgerError::Invalid(e) => Some(e),
        }
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            e @ rusqlite::Error::FromSqlConversionFailure(..) => LedgerError::Invalid(e),
            e => LedgerError::Sqlite(e),
        }
    }
}

impl From<LedgerError> for crate::Error {
    fn from(e: LedgerError) -> Self {
        crate::Error::io("ledger", e)
    }
}

/// What the ledger's reads and writes return.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Where a product is in the procedure (stored and printed as `as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductState {
    /// Needs an activation; the next pack takes it.
    Queued,
    /// In a bundle awaiting its return.
    Packed,
    /// The ledger already holds a CID for its current IID (a reimaged machine).
    CidOnHand,
    /// A CID is waiting in a deposit file.
    CidReceived,
    /// The machine reported the CID deposited and Windows/Office activated.
    Activated,
    /// Refused online (service code or makproxy code in the reason).
    Failed,
    /// The machine could not deposit its CID.
    DepositFailed,
    /// Not for MAK proxy activation (no key, KMS client, retail …; reason says which).
    Skipped,
}

/// What happens to a product, for [`ProductState::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `pack`: default takes queued products; `retry_failed` adds failed and
    /// deposit-failed ones; `only_failed` takes just those; `repack` adds packed ones.
    Pack {
        /// Also take failed and deposit-failed products.
        retry_failed: bool,
        /// Take only failed and deposit-failed products.
        only_failed: bool,
        /// Also take products in bundles whose return never came.
        repack: bool,
    },
    /// A return brings a CID; `replaces_simulated`: the product holds a simulated CID
    /// and this one is real.
    Cid {
        /// The product holds a simulated CID and this one is real.
        replaces_simulated: bool,
    },
    /// A return brings a refusal.
    Refused,
    /// `apply --reissue`: a stored CID goes into a deposit file.
    Reissue,
    /// The machine's deposit result: activated.
    Deposited,
    /// The machine reports Windows refused the CID (also after an earlier activation:
    /// the machine itself says it is no longer activated with it).
    DepositFailed,
    /// collect: what a machine's record says of a known product; `same_iid`: it carries
    /// the IID the ledger holds.
    Seen {
        /// What the record says.
        seen: Seen,
        /// The record carries the IID the ledger holds.
        same_iid: bool,
    },
}

impl ProductState {
    /// Every state, in the order reports list them.
    pub const ALL: [ProductState; 8] = [
        ProductState::Queued,
        ProductState::Packed,
        ProductState::CidOnHand,
        ProductState::CidReceived,
        ProductState::Activated,
        ProductState::Failed,
        ProductState::DepositFailed,
        ProductState::Skipped,
    ];

    /// The name stored in the ledger and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductState::Queued => "queued",
            ProductState::Packed => "packed",
            ProductState::CidOnHand => "cid_on_hand",
            ProductState::CidReceived => "cid_received",
            ProductState::Activated => "activated",
            ProductState::Failed => "failed",
            ProductState::DepositFailed => "deposit_failed",
            ProductState::Skipped => "skipped",
        }
    }

    /// The state stored as `s`, if any.
    pub fn parse(s: &str) -> Option<ProductState> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Where collect puts a product seen for the first time.
    pub fn first(seen: Seen) -> ProductState {
        match seen {
            Seen::Skip | Seen::Licensed => ProductState::Skipped,
            Seen::CidOnHand => ProductState::CidOnHand,
            Seen::NeedsActivation => ProductState::Queued,
        }
    }

    /// The transition table: where `event` takes a product in this state, or `None`
    /// where it does not apply (the product keeps its state). Every (event, state) pair
    /// is spelled out: a new state or event does not compile until each of its
    /// transitions is decided.
    pub fn after(self, event: Event) -> Option<ProductState> {
        use Event as E;
        use ProductState as S;
        match event {
            E::Pack {
                retry_failed,
                only_failed,
                repack,
            } => match self {
                S::Queued => (!only_failed).then_some(S::Packed),
                S::Failed | S::DepositFailed => (retry_failed || only_failed).then_some(S::Packed),
                S::Packed => (repack && !only_failed).then_some(S::Packed),
                S::CidOnHand | S::CidReceived | S::Activated | S::Skipped => None,
            },
            E::Cid { replaces_simulated } => match self {
                S::Queued | S::Packed | S::Failed => Some(S::CidReceived),
                S::CidReceived => replaces_simulated.then_some(S::CidReceived),
                S::CidOnHand | S::Activated | S::DepositFailed | S::Skipped => None,
            },
            // A later refusal of a failed product records the latest reason.
            E::Refused => match self {
                S::Queued | S::Packed | S::Failed => Some(S::Failed),
                S::CidOnHand | S::CidReceived | S::Activated | S::DepositFailed | S::Skipped => {
                    None
                }
            },
            E::Reissue => match self {
                S::CidOnHand => Some(S::CidReceived),
                S::Queued
                | S::Packed
                | S::CidReceived
                | S::Activated
                | S::Failed
                | S::DepositFailed
                | S::Skipped => None,
            },
            E::Deposited | E::DepositFailed => match self {
                S::CidReceived | S::DepositFailed | S::Activated => {
                    Some(if event == E::Deposited {
                        S::Activated
                    } else {
                        S::DepositFailed
                    })
                }
                S::Queued | S::Packed | S::CidOnHand | S::Failed | S::Skipped => None,
            },
            E::Seen { seen, same_iid } => Some(match seen {
                Seen::Skip => S::Skipped,
                // Licensed after makproxy gave it a CID: that is our activation, done.
                Seen::Licensed => match self {
                    S::CidReceived | S::Activated | S::DepositFailed | S::CidOnHand => S::Activated,
                    S::Queued | S::Packed | S::Failed | S::Skipped => S::Skipped,
                },
                Seen::CidOnHand | Seen::NeedsActivation => match self {
                    // Same IID, still waiting on a bundle, a deposit or a retry: keep
                    // that state.
                    S::Packed | S::CidReceived | S::Failed | S::DepositFailed | S::CidOnHand
                        if same_iid =>
                    {
                        self
                    }
                    // (Same IID, activated, and a newer report says unlicensed: the
                    // machine lost its activation; the CID on hand lets `apply
                    // --reissue` deposit it again. A report older than what the ledger
                    // knows of the product never gets here: collect orders reports by
                    // the machine's own time.)
                    S::Queued
                    | S::Packed
                    | S::CidReceived
                    | S::Activated
                    | S::Failed
                    | S::DepositFailed
                    | S::CidOnHand
                    | S::Skipped => Self::first(seen),
                },
            }),
        }
    }

    /// The states `event` moves products out of (what a bulk statement selects).
    pub fn sources(event: Event) -> Vec<ProductState> {
        Self::ALL
            .into_iter()
            .filter(|s| s.after(event).is_some())
            .collect()
    }

    /// The one state every source of `event` goes to, for the bulk statements (pack,
    /// reissue); `None` when the sources go to different states.
    pub fn bulk_target(event: Event) -> Option<ProductState> {
        let mut targets = Self::sources(event)
            .into_iter()
            .filter_map(|s| s.after(event));
        let first = targets.next()?;
        targets.all(|t| t == first).then_some(first)
    }
}

impl std::fmt::Display for ProductState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::ToSql for ProductState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for ProductState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        ProductState::parse(s).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(
                format!("unknown product state {s:?} in the ledger").into(),
            )
        })
    }
}

/// What a collected record says about a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not for MAK proxy activation (the reason is stored with it).
    Skip,
    /// Windows/Office reports it licensed.
    Licensed,
    /// Needs activation and the ledger holds a CID for this IID.
    CidOnHand,
    /// Needs activation.
    NeedsActivation,
}

/// Where collect puts a product: `current` is its state and whether the record
/// carries the same IID as the ledger (`None`: a product never seen).
pub fn after_collect(current: Option<(ProductState, bool)>, seen: Seen) -> ProductState {
    match current {
        None => ProductState::first(seen),
        Some((s, same_iid)) => s
            .after(Event::Seen { seen, same_iid })
            .expect("collect always decides"),
    }
}

/// A line of a product's history (its `event` and `detail` columns), typed: the one
/// vocabulary of the audit trail.
#[derive(Debug, Clone)]
pub enum History<'a> {
    /// First seen by collect.
    Collected {
        /// The drop file.
        file: &'a str,
    },
    /// collect: the record carries a new IID.
    Superseded {
        /// The IID before.
        old: Option<&'a str>,
        /// The IID now.
        new: Option<&'a str>,
    },
    /// collect: the record changed.
    Updated,
    /// `collect --channels` moved it.
    Policy {
        /// The policy now.
        policy: Policy,
    },
    /// A return brought a CID.
    CidReceived {
        /// The return bundle.
        return_id: &'a BundleId,
        /// The CID is simulated.
        simulated: bool,
    },
    /// A return brought a refusal.
    FailedOnline {
        /// The code.
        code: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// A return answered an IID the product no longer has.
    AnswerStale,
    /// A return left the record pending (not sent, or uncertain online).
    LeftPending {
        /// The code the return gave.
        code: &'a str,
    },
    /// `apply --reissue` put a stored CID in a deposit file.
    Reissued,
    /// The machine reported the deposit activated.
    Deposited,
    /// The machine reported the deposit failed.
    DepositFailed {
        /// Windows' code.
        code: &'a str,
        /// What it means.
        meaning: &'a str,
    },
}

impl History<'_> {
    /// The `event` column.
    pub fn event(&self) -> &'static str {
        match self {
            History::Collected { .. } => "collected",
            History::Superseded { .. } => "superseded",
            History::Updated => "updated",
            History::Policy { .. } => "policy",
            History::CidReceived { .. } => "cid-received",
            History::FailedOnline { .. } => "failed-online",
            History::AnswerStale => "answer-stale",
            History::LeftPending { .. } => "left-pending",
            History::Reissued => "reissued",
            History::Deposited => "deposited",
            History::DepositFailed { .. } => "deposit-failed",
        }
    }

    /// The `detail` column, given where the product went.
    fn detail(&self, to: ProductState) -> String {
        match self {
            History::Collected { file } => format!("{to} from {file}"),
            History::Superseded { old, new } => format!(
                "IID changed ({} -> {}); {to}",
                old.unwrap_or("none"),
                new.unwrap_or("none")
            ),
            History::Updated => format!("record changed; {to}"),
            History::Policy { policy } => format!("channels {policy}: {to}"),
            History::CidReceived {
                return_id,
                simulated,
            } => format!(
                "return {return_id}{}",
                if *simulated { " (SIMULATED)" } else { "" }
            ),
            History::FailedOnline { code, reason } => format!("{code}: {reason}"),
            History::AnswerStale => "IID changed since packing".into(),
            History::LeftPending { code } => format!("{code}: not settled online; still {to}"),
            History::Reissued => "CID from the ledger; no activation spent".into(),
            History::Deposited => "agent reports activated".into(),
            History::DepositFailed { code, meaning } => format!("{code}: {meaning}"),
        }
    }
}

/// A product's state change, with what is written with it: the one way the ledger
/// changes a product's state ([`Tx::apply`]).
#[derive(Debug, Clone)]
pub enum Change<'a> {
    /// collect saw a record of a known product (its facts are written with it).
    Seen {
        /// What the record says.
        seen: Seen,
        /// The record carries the IID the ledger holds.
        same_iid: bool,
        /// Why it is skipped or on hand (code, words), replacing the old reason when
        /// the state changes.
        reason: (Option<&'a str>, Option<&'a str>),
        /// The history line.
        history: History<'a>,
    },
    /// A return brought a CID.
    Cid {
        /// The CID.
        cid: &'a ConfirmationId,
        /// It is simulated.
        simulated: bool,
        /// It is real and replaces a simulated one.
        replaces_simulated: bool,
        /// The return bundle.
        return_id: &'a BundleId,
    },
    /// A return brought a refusal.
    Refused {
        /// The code.
        code: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// The machine's deposit result (`failure`: Windows' code and its meaning).
    Deposit {
        /// Why Windows refused the CID, if it did.
        failure: Option<(&'a str, &'a str)>,
        /// What Windows said about its activation afterwards (WMI LicenseStatus).
        license_status: Option<i64>,
    },
}

impl Change<'_> {
    /// The table's event.
    pub fn event(&self) -> Event {
        match self {
            Change::Seen { seen, same_iid, .. } => Event::Seen {
                seen: *seen,
                same_iid: *same_iid,
            },
            Change::Cid {
                replaces_simulated, ..
            } => Event::Cid {
                replaces_simulated: *replaces_simulated,
            },
            Change::Refused { .. } => Event::Refused,
            Change::Deposit { failure: None, .. } => Event::Deposited,
            Change::Deposit {
                failure: Some(_), ..
            } => Event::DepositFailed,
        }
    }
}

/// A move [`Tx::apply`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: ProductState,
    /// The state now.
    pub to: ProductState,
}

/// Bumped whenever the schema changes; older ledgers are migrated forward.
pub const SCHEMA_VERSION: u32 = 7;

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
    channel TEXT,
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
    updated_at TEXT NOT NULL,
    -- The machine's own time of the newest report or result the state rests on
    -- (RFC 3339, UTC): an older one never overrides it.
    observed_at TEXT
);
CREATE VIEW IF NOT EXISTS products AS
    SELECT f.id, f.host, f.activation_id, f.application, f.wmi_class, f.product, f.description,
           f.partial_key, f.epid, f.iid, f.license_status, f.source_file, f.channel,
           s.state, s.reason_code, s.reason, s.bundle_id, s.cid, s.cid_simulated, s.updated_at, s.observed_at
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
    file TEXT NOT NULL,
    -- The fingerprint of the site key that signed it (null: packed before schema 6).
    signer TEXT
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
-- Deposit results naming a CID the ledger does not know yet (after recover): kept,
-- and matched when it does (collect, apply).
CREATE TABLE IF NOT EXISTS kept_results(
    file TEXT NOT NULL,
    record INTEGER NOT NULL,
    host TEXT NOT NULL,
    activation_id TEXT NOT NULL,
    iid TEXT NOT NULL,
    cid TEXT NOT NULL,
    error_code TEXT,
    license_status INTEGER,
    observed_at TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY(file, record)
);
CREATE INDEX IF NOT EXISTS kept_results_product ON kept_results(host, activation_id);
CREATE TABLE IF NOT EXISTS collected_files(
    file TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    at TEXT NOT NULL
);
-- Files are known by their content wherever they are mounted (collect).
CREATE INDEX IF NOT EXISTS collected_files_by_sha256 ON collected_files(sha256);
CREATE TABLE IF NOT EXISTS product_keys(
    last5 TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    channel TEXT NOT NULL,
    epid TEXT,
    remaining INTEGER,
    remaining_at TEXT,
    remaining_from TEXT,
    added_at TEXT NOT NULL
);
-- What each gateway requires of this site's bundles (two-person rule, the keys it
-- pins), from the newest return it signed that was applied here (bundle format 4): an
-- older return applied later never replaces it. Advice for pack, verify and cosign.
CREATE TABLE IF NOT EXISTS gateway_rules(
    gateway TEXT PRIMARY KEY,
    signatures_required INTEGER NOT NULL,
    signers TEXT NOT NULL,
    return_bundle TEXT NOT NULL,
    created TEXT NOT NULL
);
"#;

/// Schema 2 to 3 adds only a new table (what collect has read, by content digest),
/// which the schema's own `CREATE TABLE IF NOT EXISTS` makes. Schema 3 to 4 adds each
/// product's key channel (filled from the stored descriptions when the ledger is
/// opened: [`Ledger::open`]) and the key inventory table; the view is made again with
/// the new column. Schema 4 to 5 adds each product's machine time (`observed_at`, null
/// for what was collected before: never stale) and the kept deposit results. Schema 5
/// to 6 records which site key signed each bundle (null for bundles packed before).
/// Schema 6 to 7 adds only a new table (each gateway's rule for this site's bundles).
const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 2,
        sql: "SELECT 1;",
    },
    Migration {
        from: 3,
        sql: "ALTER TABLE product_facts ADD COLUMN channel TEXT; DROP VIEW IF EXISTS products;
              INSERT OR REPLACE INTO meta(key, value) VALUES('channels_backfill', 'pending');",
    },
    Migration {
        from: 4,
        sql:
            "ALTER TABLE product_status ADD COLUMN observed_at TEXT; DROP VIEW IF EXISTS products;",
    },
    Migration {
        from: 5,
        sql: "ALTER TABLE bundles ADD COLUMN signer TEXT;",
    },
    Migration {
        from: 6,
        sql: "SELECT 1;",
    },
];

/// The ledger file of a home.
pub fn path(home: &Home) -> PathBuf {
    home.dir.join("ledger.sqlite3")
}

/// Whether the home has a ledger with anything in it. In WAL mode a ledger can live
/// in `ledger.sqlite3-wal` alone (a process killed before its first checkpoint), so
/// an empty main file with a non-empty WAL is a ledger, not a missing one.
pub fn exists(home: &Home) -> bool {
    let len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let p = path(home);
    let mut wal = p.clone().into_os_string();
    wal.push("-wal");
    len(p) > 0 || len(PathBuf::from(wal)) > 0
}

/// Why the ledger could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The store could not be opened.
    Store(StoreError),
    /// The home is initialised but its ledger is missing or empty: never recreated
    /// silently (sequence numbers would restart and the online side refuse them).
    Missing(PathBuf),
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> Self {
        OpenError::Store(e)
    }
}

/// A product as the ledger holds it, for collect's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// The product's row ID.
    pub id: i64,
    /// The installation ID.
    pub iid: Option<InstallationId>,
    /// The extended product ID.
    pub epid: Option<ExtendedProductId>,
    /// What Windows last said about its activation (WMI LicenseStatus).
    pub license_status: Option<i64>,
    /// The last five characters of the installed key.
    pub partial_key: Option<String>,
    /// Its description, as WMI gives it.
    pub description: Option<String>,
    /// The product's name.
    pub product: Option<String>,
    /// The key's channel.
    pub channel: Option<Channel>,
    /// Where the product is in its lifecycle.
    pub state: ProductState,
    /// The machine time of the newest report or result the ledger holds of it (its
    /// state rests on, or a deposit result kept until its CID is known).
    pub observed_at: Option<String>,
}

/// What collect records of one product (all validated by the record parsers).
pub struct Facts<'a> {
    /// The machine.
    pub host: &'a HostName,
    /// The product's activation ID.
    pub activation_id: &'a Guid,
    /// The licensing application's GUID.
    pub application: &'a str,
    /// The WMI class that reported it.
    pub wmi_class: WmiClass,
    /// The product's name.
    pub product: Option<&'a str>,
    /// Its description, as WMI gives it.
    pub description: Option<&'a str>,
    /// The last five characters of the installed key.
    pub partial_key: Option<&'a str>,
    /// The extended product ID.
    pub epid: Option<&'a ExtendedProductId>,
    /// The installation ID.
    pub iid: Option<&'a InstallationId>,
    /// What Windows last said about its activation (WMI LicenseStatus).
    pub license_status: Option<i64>,
    /// The key's channel, when the input said.
    pub channel: Option<Channel>,
    /// The drop file it came from.
    pub file: &'a str,
}

/// A key of the site's inventory (`keys add`; counts carried back in returns). No key
/// crosses the gap or is stored whole: only its last five characters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyRow {
    /// The key's last five characters (upper case), as products report them.
    pub last5: String,
    /// The product it is for.
    pub product: String,
    /// Its channel (`mak`, `csvlk`, `retail`).
    pub channel: String,
    /// An extended product ID of a machine with the key (for `remaining --pid`).
    pub extended_product_id: Option<String>,
    /// Activations left when last seen online, less those the same return spent; -1: no
    /// limit reported; null: never seen.
    pub remaining: Option<i64>,
    /// When the count was seen (RFC 3339).
    pub remaining_at: Option<String>,
    /// Where it came from: `keys add` or a return bundle's ID.
    pub remaining_from: Option<String>,
    /// Products with this key waiting to be packed.
    pub queued: i64,
}

/// A key with fewer activations left than a batch needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shortfall {
    /// The key's last five characters.
    pub last5: String,
    /// The product it is for.
    pub product: String,
    /// Activations left when last seen.
    pub remaining: i64,
    /// When that was.
    pub remaining_at: Option<String>,
    /// Activations the batch (or the queue) needs.
    pub needed: i64,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WARNING: key …{} ({}) had {} activation(s) left{}; {} needed",
            makproxy_core::sanitize::escape(&self.last5),
            makproxy_core::sanitize::escape(&self.product),
            self.remaining,
            self.remaining_at
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default(),
            self.needed
        )
    }
}

/// Keys with fewer activations left than needed by the products of `bundle_id` (a
/// bundle being packed) or, with `None`, by the queued products.
fn shortfalls(conn: &Connection, bundle_id: Option<&BundleId>) -> Result<Vec<Shortfall>> {
    let source = if bundle_id.is_some() {
        "JOIN bundle_records br ON br.product_id = f.id AND br.bundle_id = ?1 AND ?2 IS NOT NULL"
    } else {
        "JOIN product_status s ON s.product_id = f.id AND s.state = ?2 AND ?1 IS NULL"
    };
    conn.prepare(&format!(
        "SELECT k.last5, k.product, k.remaining, k.remaining_at, COUNT(*) FROM product_keys k
         JOIN product_facts f ON upper(f.partial_key) = k.last5 {source}
         WHERE k.remaining >= 0 GROUP BY k.last5 HAVING COUNT(*) > k.remaining ORDER BY k.last5"
    ))?
    .query_map(params![bundle_id, ProductState::Queued], |r| {
        Ok(Shortfall {
            last5: r.get(0)?,
            product: r.get(1)?,
            remaining: r.get(2)?,
            remaining_at: r.get(3)?,
            needed: r.get(4)?,
        })
    })?
    .collect::<rusqlite::Result<_>>()
    .map_err(LedgerError::from)
}

/// A product the channel policy may move.
struct PolicyRow {
    id: i64,
    host: HostName,
    activation_id: Guid,
    channel: Option<Channel>,
    partial_key: Option<String>,
    licensed: bool,
    has_iid: bool,
    state: ProductState,
    iid: Option<InstallationId>,
}

/// A record of an issued bundle, as a return is checked against it.
pub struct PackedRecord {
    /// The product's row ID.
    pub product_id: i64,
    /// The IID packed.
    pub iid: InstallationId,
    /// Whether (and how) this record has an answer yet.
    pub answered: Answered,
}

/// A bundle `pack` wrote, as the ledger records it.
pub struct WrittenBundle<'a> {
    /// Its ID.
    pub bundle_id: &'a BundleId,
    /// The site's sequence number it carries.
    pub sequence: u64,
    /// Its manifest's SHA-256 (hex).
    pub manifest_sha256: &'a str,
    /// When it was created (RFC 3339).
    pub created: &'a str,
    /// When it expires (RFC 3339).
    pub expires: &'a str,
    /// Records it holds.
    pub records: u64,
    /// Where it was written.
    pub file: &'a str,
    /// The fingerprint of the site key that signed it.
    pub signer: &'a str,
}

/// A product as a return record is applied to it.
pub struct ProductNow {
    /// The machine.
    pub host: HostName,
    /// The product's activation ID.
    pub activation_id: Guid,
    /// The installation ID.
    pub iid: Option<InstallationId>,
    /// The extended product ID.
    pub epid: Option<ExtendedProductId>,
    /// Where the product is in its lifecycle.
    pub state: ProductState,
    /// The CID it holds is simulated.
    pub cid_simulated: bool,
    /// The product's name, for people.
    pub product: Option<String>,
}

/// The bundle record a return answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered(pub i64);

impl Answered {
    /// No answer yet.
    pub const NO: Answered = Answered(0);
    /// A real CID.
    pub const REAL: Answered = Answered(1);
    /// A simulated CID (a real one may still replace it).
    pub const SIMULATED: Answered = Answered(2);
}

/// What a gateway requires of this site's bundles, as its newest applied return said.
#[derive(Debug, Clone)]
pub struct GatewayRule {
    /// The gateway's pinned name here.
    pub gateway: String,
    /// Its rule and the keys it pins for this site.
    pub rule: makproxy_core::bundle::SiteRule,
    /// The return that said so.
    pub return_bundle: BundleId,
    /// When that return was written (RFC 3339).
    pub created: String,
}

/// One record of a CIL bundle to write, as the ledger holds it.
pub struct PackRow {
    /// The record's handle in its bundle.
    pub handle: i64,
    /// The product's row ID.
    pub product_id: i64,
    /// The machine.
    pub host: HostName,
    /// The product's activation ID.
    pub activation_id: Guid,
    /// The extended product ID (absent: an Active Directory forest, ospp.vbs output).
    pub epid: ExtendedProductId,
    /// The installation ID.
    pub iid: InstallationId,
    /// The product's name.
    pub product: Option<String>,
    /// The key's channel, when known.
    pub channel: Option<Channel>,
    /// The key's last five characters, as collected.
    pub partial_key: Option<String>,
}

/// The product a deposit result names, as the ledger holds it.
pub struct DepositTarget {
    /// The product's row ID.
    pub id: i64,
    /// The installation ID.
    pub iid: Option<InstallationId>,
    /// The confirmation ID.
    pub cid: Option<ConfirmationId>,
    /// Where the product is in its lifecycle.
    pub state: ProductState,
    /// The machine time of the newest report or result its state rests on.
    pub observed_at: Option<String>,
}

/// A machine's deposit result for one product, as collect reads it or as the ledger
/// keeps it until the CID it names is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    /// The result file.
    pub file: String,
    /// The record's number in it (1-based).
    pub record: i64,
    /// The machine.
    pub host: HostName,
    /// The product's activation ID.
    pub activation_id: Guid,
    /// The IID deposited for.
    pub iid: InstallationId,
    /// The CID deposited.
    pub cid: ConfirmationId,
    /// Windows' code when the deposit failed (`None`: activated).
    pub error_code: Option<String>,
    /// What Windows said afterwards (WMI LicenseStatus).
    pub license_status: Option<i64>,
    /// When the machine deposited, by its own clock.
    pub observed_at: Option<String>,
}

/// One line of `status`.
#[derive(Debug, serde::Serialize)]
pub struct StatusRow {
    /// The machine.
    pub host: HostName,
    /// The product's activation ID.
    pub activation_id: Guid,
    /// The product's name.
    pub product: Option<String>,
    /// The key's channel (`mak`, `csvlk`, `retail`, `oem`, `kms-client`, `other`;
    /// null when the input did not say).
    pub channel: Option<String>,
    /// Its state.
    pub state: ProductState,
    /// The bundle it was last packed in.
    pub bundle_id: Option<BundleId>,
    /// Why it is failed or skipped (a code).
    pub reason_code: Option<String>,
    /// Why, in words.
    pub reason: Option<String>,
    /// Whether the CID came from the simulator.
    pub simulated: bool,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// The Extended Security Updates add-on it is (`Windows 10 ESU Year 1`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub esu: Option<String>,
}

/// How far one ESU add-on year is across the estate (machines that report the add-on's
/// license, by where their add-on is).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EsuCoverage {
    /// The add-on (`Windows 10 ESU Year 1`).
    pub esu: String,
    /// Machines that report the add-on (eligible: its license is on the machine).
    pub machines: i64,
    /// Of those, machines with no ESU key installed for it: nothing to activate until an
    /// administrator installs the year's ESU MAK (`slmgr /ipk`) and collect runs again.
    pub no_key: i64,
    /// Of those, activated (a deposit or Windows says so, or licensed when collected).
    pub activated: i64,
    /// Waiting: queued, packed, CID on hand or awaiting deposit.
    pub pending: i64,
    /// Refused online or at deposit.
    pub refused: i64,
    /// Skipped for another reason (its key's channel is not proxy-activated here, no
    /// installation ID, …): waiting for nothing makproxy does, so not pending.
    pub skipped: i64,
}

impl std::fmt::Display for EsuCoverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} of {} machine(s) activated, {} pending, {} refused",
            self.esu, self.activated, self.machines, self.pending, self.refused
        )?;
        if self.no_key > 0 {
            write!(
                f,
                ", {} without an ESU key installed (install the year's ESU MAK on each: slmgr /ipk KEY, then collect again)",
                self.no_key
            )?;
        }
        if self.skipped > 0 {
            write!(
                f,
                ", {} skipped (not proxy-activated here: status --state skipped says why)",
                self.skipped
            )?;
        }
        Ok(())
    }
}

/// One line of a host's audit trail ([`Ledger::history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    /// The product.
    pub activation_id: Guid,
    /// When (RFC 3339).
    pub at: String,
    /// What happened (the event's stored name).
    pub event: String,
    /// Its detail ('' when none).
    pub detail: String,
}

/// A return applied before ([`Tx::return_applied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedBefore {
    /// When (RFC 3339).
    pub at: String,
    /// What that apply counted.
    pub summary: Summary,
}

/// A CIL bundle this site issued, as a return must match it ([`Tx::issued`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// SHA-256 of its manifest (hex).
    pub manifest_sha256: String,
    /// Its sequence number.
    pub sequence: u64,
}

/// The secure side's store.
pub struct Ledger {
    conn: Connection,
}

impl Ledger {
    /// Opens the ledger of an initialised home. A missing or empty ledger is refused.
    pub fn open(home: &Home) -> Result<Ledger, OpenError> {
        let p = path(home);
        if !exists(home) {
            return Err(OpenError::Missing(p));
        }
        let l = Ledger {
            conn: store::open_migrating(&p, SCHEMA, SCHEMA_VERSION, MIGRATIONS)?,
        };
        l.backfill_channels().map_err(StoreError::from)?;
        Ok(l)
    }

    /// Fills the channel of products collected before channels were recorded (schema
    /// 3), from their stored description by the rule collect uses. One transaction; a
    /// kill leaves the marker, so the next open does it again.
    fn backfill_channels(&self) -> rusqlite::Result<()> {
        if store::meta_get(&self.conn, "channels_backfill")?.is_none() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction()?;
        let rows: Vec<(i64, Option<String>)> = tx
            .prepare("SELECT id, description FROM product_facts WHERE channel IS NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut set = tx.prepare("UPDATE product_facts SET channel = ?2 WHERE id = ?1")?;
        for (id, description) in rows {
            if let Some(c) = Channel::detect(None, description.as_deref()) {
                set.execute(params![id, c.as_str()])?;
            }
        }
        drop(set);
        tx.execute("DELETE FROM meta WHERE key = 'channels_backfill'", [])?;
        tx.commit()
    }

    /// The key inventory, with the products waiting for each key.
    pub fn keys(&self) -> Result<Vec<KeyRow>> {
        self.conn
            .prepare(
                "SELECT k.last5, k.product, k.channel, k.epid, k.remaining, k.remaining_at, k.remaining_from, COALESCE(q.n, 0)
                 FROM product_keys k LEFT JOIN (
                     SELECT upper(f.partial_key) AS last5, COUNT(*) AS n
                     FROM product_status s JOIN product_facts f ON f.id = s.product_id
                     WHERE s.state = ?1 GROUP BY 1
                 ) q ON q.last5 = k.last5
                 ORDER BY k.product, k.last5",
            )?
            .query_map(params![ProductState::Queued], |r| {
                Ok(KeyRow {
                    last5: r.get(0)?,
                    product: r.get(1)?,
                    channel: r.get(2)?,
                    extended_product_id: r.get(3)?,
                    remaining: r.get(4)?,
                    remaining_at: r.get(5)?,
                    remaining_from: r.get(6)?,
                    queued: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>().map_err(LedgerError::from)
    }

    /// Keys with fewer activations left than the queued products need.
    pub fn shortfalls(&self) -> Result<Vec<Shortfall>> {
        shortfalls(&self.conn, None)
    }

    /// The channels this site proxy-activates (`collect --channels` sets them).
    pub fn policy(&self) -> Result<Policy> {
        Ok(store::meta_get(&self.conn, "channels")?
            .and_then(|s| Policy::parse(&s).ok())
            .unwrap_or_default())
    }

    /// Creates the ledger of a new home (`init`), or a fresh one for a home whose
    /// ledger was lost (`recover`), whose bundles continue from `next_sequence`.
    pub fn create(home: &Home, next_sequence: u64) -> Result<Ledger, OpenError> {
        let l = Ledger {
            conn: store::open_migrating(&path(home), SCHEMA, SCHEMA_VERSION, MIGRATIONS)?,
        };
        store::meta_set(&l.conn, "next_sequence", &next_sequence.to_string())
            .map_err(StoreError::from)?;
        Ok(l)
    }

    /// Starts a transaction that takes the write lock at once.
    pub fn begin(&mut self) -> Result<Tx<'_>> {
        Ok(Tx {
            tx: self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?,
        })
    }

    /// Counts of products per state, in `ProductState::ALL` order.
    pub fn counts(&self) -> Result<Vec<(ProductState, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM products GROUP BY state")?;
        let got: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(ProductState::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    got.iter()
                        .find(|(k, _)| k == s.as_str())
                        .map_or(0, |(_, n)| *n),
                )
            })
            .collect())
    }

    /// Products for `status`, optionally of one state and of hosts matching a pattern.
    pub fn status_rows<E: From<LedgerError>>(
        &self,
        state: Option<ProductState>,
        host: Option<&str>,
        mut f: impl FnMut(StatusRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt = self.conn.prepare(
            "SELECT host, activation_id, product, state, bundle_id, reason_code, reason, cid_simulated, updated_at, channel FROM products
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR host GLOB upper(?2)) ORDER BY host, activation_id",
        ).map_err(LedgerError::from)?;
        each(
            &mut stmt,
            params![state, host],
            |r| {
                Ok(StatusRow {
                    host: r.get(0)?,
                    activation_id: r.get(1)?,
                    product: r.get(2)?,
                    state: r.get(3)?,
                    bundle_id: r.get(4)?,
                    reason_code: r.get(5)?,
                    reason: r.get(6)?,
                    simulated: r.get(7)?,
                    updated_at: r.get(8)?,
                    channel: r.get(9)?,
                    esu: makproxy_core::esu::Esu::of(&r.get::<_, String>(1)?)
                        .map(|e| e.to_string()),
                })
            },
            &mut f,
        )
    }

    /// ESU coverage per add-on year, for the years any machine reports.
    pub fn esu_coverage(&self) -> Result<Vec<EsuCoverage>> {
        use makproxy_core::esu::Esu;
        let mut out = Vec::new();
        for (id, esu) in Esu::all() {
            let mut c = EsuCoverage {
                esu: esu.to_string(),
                machines: 0,
                no_key: 0,
                activated: 0,
                pending: 0,
                refused: 0,
                skipped: 0,
            };
            let rows: Vec<(ProductState, Option<String>, i64)> = self
                .conn
                .prepare_cached(
                    "SELECT state, reason_code, COUNT(DISTINCT host) FROM products WHERE activation_id = ?1 GROUP BY state, reason_code",
                )?
                .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            for (state, reason, n) in rows {
                c.machines += n;
                use ProductState as S;
                match state {
                    S::Activated => c.activated += n,
                    S::Skipped if reason.as_deref() == Some("licensed") => c.activated += n,
                    S::Skipped
                        if reason.as_deref() == Some(makproxy_core::records::Skip::NoKey.id()) =>
                    {
                        c.no_key += n
                    }
                    S::Skipped => c.skipped += n,
                    S::Queued | S::Packed | S::CidOnHand | S::CidReceived => c.pending += n,
                    S::Failed | S::DepositFailed => c.refused += n,
                }
            }
            if c.machines > 0 {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The audit trail of a host's products, oldest first.
    pub fn history(&self, host: &HostName) -> Result<Vec<HistoryLine>> {
        self.conn
            .prepare(
                "SELECT f.activation_id, h.at, h.event, COALESCE(h.detail, '') FROM history h
                 JOIN product_facts f ON f.id = h.product_id WHERE f.host = ?1 ORDER BY h.id",
            )?
            .query_map(params![host], |r| {
                Ok(HistoryLine {
                    activation_id: r.get(0)?,
                    at: r.get(1)?,
                    event: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()
            .map_err(LedgerError::from)
    }

    /// The CID kept for an installation ID (whatever the product's state now), and
    /// whether it is simulated: what `apply --reissue` would deposit again.
    pub fn kept_cid(&self, iid: &InstallationId) -> Result<Option<(ConfirmationId, bool)>> {
        self.conn
            .query_row(
                "SELECT cid, simulated FROM cids WHERE iid = ?1",
                params![iid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(LedgerError::from)
    }

    /// Per product, channel and state, how many products.
    pub fn per_product(&self) -> Result<Vec<ProductCount>> {
        self.conn
            .prepare(
                "SELECT COALESCE(product, activation_id), channel, state, cid_simulated != 0, COUNT(*)
                 FROM products GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            )?
            .query_map([], |r| {
                Ok(ProductCount {
                    product: r.get(0)?,
                    channel: r.get(1)?,
                    state: r.get(2)?,
                    simulated: r.get(3)?,
                    count: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()
            .map_err(LedgerError::from)
    }

    /// What each gateway said it requires of this site's bundles, in its newest return
    /// applied here, by gateway name.
    pub fn gateway_rules(&self) -> Result<Vec<GatewayRule>> {
        let mut stmt = self.conn.prepare(
            "SELECT gateway, signatures_required, signers, return_bundle, created
             FROM gateway_rules ORDER BY gateway",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let signers: String = r.get(2)?;
                Ok(GatewayRule {
                    gateway: r.get(0)?,
                    rule: makproxy_core::bundle::SiteRule {
                        signatures_required: r.get(1)?,
                        signers: serde_json::from_str(&signers).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                2,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?,
                    },
                    return_bundle: r.get(3)?,
                    created: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Every bundle packed, in sequence order, with what came back for it.
    pub fn bundle_history(&self) -> Result<Vec<BundleHistory>> {
        let mut returns = self.conn.prepare(
            "SELECT bundle_id, signer, backend, simulated, applied_at FROM returns
             WHERE answers = ?1 ORDER BY applied_at, bundle_id",
        )?;
        let mut bundles = self.conn.prepare(
            "SELECT b.sequence, b.bundle_id, b.created, b.expires, b.records, b.signer,
                    COALESCE(SUM(br.answered > 0), 0)
             FROM bundles b LEFT JOIN bundle_records br ON br.bundle_id = b.bundle_id
             GROUP BY b.bundle_id ORDER BY b.sequence",
        )?;
        let rows = bundles
            .query_map([], |r| {
                Ok(BundleHistory {
                    sequence: r.get(0)?,
                    bundle_id: r.get(1)?,
                    created: r.get(2)?,
                    expires: r.get(3)?,
                    records: r.get(4)?,
                    signer: r.get(5)?,
                    answered: r.get(6)?,
                    returns: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|mut b| {
                b.returns = returns
                    .query_map([&b.bundle_id], |r| {
                        Ok(ReturnHistory {
                            bundle_id: r.get(0)?,
                            signer: r.get(1)?,
                            backend: r.get(2)?,
                            simulated: r.get(3)?,
                            applied_at: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(b)
            })
            .collect()
    }

    /// Files and records collect refused, by file and record.
    pub fn rejections(&self) -> Result<Vec<Rejection>> {
        self.conn
            .prepare("SELECT file, record, code, detail FROM rejections ORDER BY file, record")?
            .query_map([], |r| {
                Ok(Rejection {
                    file: r.get(0)?,
                    record: match r.get::<_, i64>(1)? {
                        0 => None,
                        n => Some(n),
                    },
                    code: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()
            .map_err(LedgerError::from)
    }

    /// Real (not simulated) CIDs received per key and week, by when their return was
    /// applied here (the gateway spent them earlier), oldest week first; a product is
    /// counted under its key as last collected. A week is named by its Monday (UTC).
    pub fn activations_per_week(&self) -> Result<Vec<WeekOfUse>> {
        self.conn
            .prepare(
                "SELECT COALESCE(upper(f.partial_key), '?'), date(c.at, '-6 days', 'weekday 1'), COUNT(*)
                 FROM cids c JOIN product_facts f ON f.host = c.host AND f.activation_id = c.activation_id
                 WHERE NOT c.simulated GROUP BY 1, 2 ORDER BY 2, 1",
            )?
            .query_map([], |r| {
                Ok(WeekOfUse {
                    last5: r.get(0)?,
                    week: r.get(1)?,
                    activations: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()
            .map_err(LedgerError::from)
    }
}

/// How many products of one kind are in one state ([`Ledger::per_product`]).
#[derive(Debug, Clone)]
pub struct ProductCount {
    /// The product's name (its activation ID when the input gave none).
    pub product: String,
    /// Its key's channel, when known.
    pub channel: Option<String>,
    /// The state.
    pub state: ProductState,
    /// Whether their CID came from the simulator.
    pub simulated: bool,
    /// How many.
    pub count: i64,
}

/// A bundle packed and what came back for it ([`Ledger::bundle_history`]).
#[derive(Debug, Clone)]
pub struct BundleHistory {
    /// The site's sequence number.
    pub sequence: i64,
    /// Its ID.
    pub bundle_id: BundleId,
    /// When it was packed (RFC 3339).
    pub created: String,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// Records it holds.
    pub records: i64,
    /// Records answered (a CID or a refusal).
    pub answered: i64,
    /// The fingerprint of the site key that signed it (null: packed before schema 6).
    pub signer: Option<String>,
    /// The returns applied for it.
    pub returns: Vec<ReturnHistory>,
}

/// A return applied ([`BundleHistory::returns`]).
#[derive(Debug, Clone)]
pub struct ReturnHistory {
    /// The return's ID.
    pub bundle_id: BundleId,
    /// Who signed it: the pinned names of its signer and cosigners.
    pub signer: String,
    /// The backend that answered.
    pub backend: String,
    /// From a drill (the simulator).
    pub simulated: bool,
    /// When it was applied (RFC 3339).
    pub applied_at: String,
}

/// A file or record collect refused ([`Ledger::rejections`]).
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The file.
    pub file: String,
    /// The record (1-based), or none for the whole file.
    pub record: Option<i64>,
    /// The code.
    pub code: String,
    /// Why.
    pub detail: String,
}

/// Activations one key spent in one week ([`Ledger::activations_per_week`]).
#[derive(Debug, Clone)]
pub struct WeekOfUse {
    /// The key's last five characters (`?` when the product did not report them).
    pub last5: String,
    /// The week's Monday (`YYYY-MM-DD`).
    pub week: String,
    /// Real CIDs received that week for products with the key.
    pub activations: i64,
}

/// A ledger transaction: every write of the secure side, and the reads made while
/// writing. Dropped without `commit`, it changes nothing.
pub struct Tx<'a> {
    tx: Transaction<'a>,
}

/// Streams a query's rows through `map` into `f` (memory does not grow with the rows);
/// the caller's error type takes the ledger's.
fn each<T, E: From<LedgerError>>(
    stmt: &mut rusqlite::Statement,
    p: impl rusqlite::Params,
    map: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
    f: &mut impl FnMut(T) -> Result<(), E>,
) -> Result<(), E> {
    let ledger = |e: rusqlite::Error| E::from(LedgerError::from(e));
    let mut rows = stmt.query(p).map_err(ledger)?;
    while let Some(r) = rows.next().map_err(ledger)? {
        f(map(r).map_err(ledger)?)?;
    }
    Ok(())
}

/// Column `i` read back through its type's parser: the ledger is a file on disk, and
/// what goes into a deposit script is checked again, not trusted as stored.
fn typed<T, E: std::fmt::Display>(
    r: &rusqlite::Row,
    i: usize,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!(
                "{:?} in the ledger: {e}",
                makproxy_core::sanitize::escape(&s)
            )
            .into(),
        )
    })
}

impl Tx<'_> {
    /// Makes the transaction durable.
    pub fn commit(self) -> Result<()> {
        self.tx.commit().map_err(LedgerError::from)
    }

    fn history(&self, product_id: i64, at: &str, h: &History, to: ProductState) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO history(product_id, at, event, detail) VALUES(?1, ?2, ?3, ?4)",
            )?
            .execute(params![product_id, at, h.event(), h.detail(to)])?;
        Ok(())
    }

    /// Writes a product's state and reason, and the machine time a change rests on
    /// (the newest kept: a product's facts are ordered by the machine's own clock).
    fn set_state(
        &self,
        id: i64,
        state: ProductState,
        reason_code: Option<&str>,
        reason: Option<&str>,
        observed: Option<&str>,
        at: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE product_status SET state = ?2, reason_code = ?3, reason = ?4, updated_at = ?5,
                   observed_at = CASE WHEN ?6 IS NOT NULL AND (observed_at IS NULL OR observed_at < ?6) THEN ?6 ELSE observed_at END
                 WHERE product_id = ?1",
            )?
            .execute(params![id, state, reason_code, reason, at, observed])?;
        Ok(())
    }

    /// The one way a product's state changes: `change`'s event goes through the
    /// transition table from `from`; the new state, what goes with it, the machine time
    /// it rests on (`observed`) and a typed history line are written together. `None`
    /// (nothing written) where the table has no move.
    pub fn apply(
        &self,
        id: i64,
        from: ProductState,
        change: &Change,
        observed: Option<&str>,
        at: &str,
    ) -> Result<Option<Transition>> {
        let Some(to) = from.after(change.event()) else {
            return Ok(None);
        };
        let history = match change {
            Change::Seen {
                reason: (code, why),
                history,
                ..
            } => {
                // A state change replaces the reason and leaves the bundle it was in.
                let moved = to != from;
                self.tx
                    .prepare_cached(
                        "UPDATE product_status SET state = ?2, reason_code = CASE WHEN ?3 THEN ?4 ELSE reason_code END,
                           reason = CASE WHEN ?3 THEN ?5 ELSE reason END, bundle_id = CASE WHEN ?3 THEN NULL ELSE bundle_id END,
                           updated_at = ?6 WHERE product_id = ?1",
                    )?
                    .execute(params![id, to, moved, code, why, at])?;
                self.observed(id, observed)?;
                history.clone()
            }
            Change::Cid {
                cid,
                simulated,
                return_id,
                ..
            } => {
                self.tx
                    .prepare_cached(
                        "UPDATE product_status SET state = ?2, cid = ?3, cid_simulated = ?4, reason_code = NULL, reason = NULL, updated_at = ?5 WHERE product_id = ?1",
                    )?
                    .execute(params![id, to, cid.digits(), simulated, at])?;
                History::CidReceived {
                    return_id,
                    simulated: *simulated,
                }
            }
            Change::Refused { code, reason } => {
                self.set_state(id, to, Some(code), Some(reason), observed, at)?;
                History::FailedOnline { code, reason }
            }
            Change::Deposit {
                failure,
                license_status,
            } => {
                if let Some(s) = license_status {
                    self.tx
                        .prepare_cached(
                            "UPDATE product_facts SET license_status = ?2 WHERE id = ?1",
                        )?
                        .execute(params![id, s])?;
                }
                match failure {
                    None => {
                        self.set_state(id, to, None, None, observed, at)?;
                        History::Deposited
                    }
                    Some((code, meaning)) => {
                        self.set_state(id, to, Some(code), Some(meaning), observed, at)?;
                        History::DepositFailed { code, meaning }
                    }
                }
            }
        };
        self.history(id, at, &history, to)?;
        Ok(Some(Transition { from, to }))
    }

    /// Records that the machine spoke of the product at `observed` (its own clock),
    /// where that is newer than what the ledger knew.
    pub fn observed(&self, id: i64, observed: Option<&str>) -> Result<()> {
        if let Some(t) = observed {
            self.tx
                .prepare_cached(
                    "UPDATE product_status SET observed_at = ?2 WHERE product_id = ?1 AND (observed_at IS NULL OR observed_at < ?2)",
                )?
                .execute(params![id, t])?;
        }
        Ok(())
    }

    /// A return left a packed product pending with `code` (not sent, uncertain): its
    /// state stays, and the code is shown with it (`status`'s DETAIL) until an answer.
    pub fn left_pending(&self, id: i64, code: &str, at: &str) -> Result<()> {
        let reason = "not settled online; a later return answers it";
        let n = self
            .tx
            .prepare_cached(
                "UPDATE product_status SET reason_code = ?2, reason = ?3, updated_at = ?4 WHERE product_id = ?1 AND state = ?5",
            )?
            .execute(params![id, code, reason, at, ProductState::Packed])?;
        if n > 0 {
            self.history(id, at, &History::LeftPending { code }, ProductState::Packed)?;
        }
        Ok(())
    }

    /// Adds a line to a product's history that changes nothing (in state `now`).
    pub fn note(&self, id: i64, now: ProductState, h: History, at: &str) -> Result<()> {
        self.history(id, at, &h, now)
    }

    // ---- collect ----

    /// Whether `file` brings nothing new: its content digest is the one collected last
    /// time from this path (a machine restored to an old report, A→B→A, is news); or,
    /// for a path never collected, the digest of a file of the same name collected from
    /// another folder: the same drop folder under another spelling (a moved share, a UNC
    /// path for a drive letter) is the same files. The name counts: a file speaks for
    /// the host it is named after, so the same bytes under another name are another file.
    pub fn already_collected(&self, file: &str, sha256: &str) -> Result<bool> {
        let last: Option<String> = self
            .tx
            .prepare_cached("SELECT sha256 FROM collected_files WHERE file = ?1")?
            .query_row(params![file], |r| r.get(0))
            .optional()?;
        if let Some(last) = last {
            return Ok(last == sha256);
        }
        let name = |f: &str| f.rsplit(['/', '\\']).next().map(str::to_owned);
        let files: Vec<String> = self
            .tx
            .prepare_cached("SELECT file FROM collected_files WHERE sha256 = ?1")?
            .query_map(params![sha256], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(files.iter().any(|f| name(f) == name(file)))
    }

    /// Remembers that `file` was collected with this content; its earlier rejections go.
    pub fn collected(&self, file: &str, sha256: &str, at: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM rejections WHERE file = ?1")?
            .execute(params![file])?;
        self.tx
            .prepare_cached("DELETE FROM kept_results WHERE file = ?1")?
            .execute(params![file])?;
        self.tx
            .prepare_cached(
                "INSERT INTO collected_files(file, sha256, at) VALUES(?1, ?2, ?3)
                 ON CONFLICT(file) DO UPDATE SET sha256 = excluded.sha256, at = excluded.at",
            )?
            .execute(params![file, sha256, at])?;
        Ok(())
    }

    /// Records a rejected file (`record` 0) or record.
    pub fn reject(
        &self,
        file: &str,
        record: usize,
        code: &str,
        detail: &str,
        at: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO rejections(file, record, code, detail, at) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(file, record) DO UPDATE SET code = excluded.code, detail = excluded.detail, at = excluded.at",
            )?
            .execute(params![file, record as i64, code, detail, at])?;
        Ok(())
    }

    /// The product (host, activation ID), if the ledger has it.
    pub fn product(&self, host: &HostName, activation_id: &Guid) -> Result<Option<Existing>> {
        self.tx
            .prepare_cached(
                "SELECT id, iid, epid, license_status, partial_key, description, product, state, channel,
                   NULLIF(max(COALESCE(observed_at, ''), COALESCE((SELECT MAX(k.observed_at) FROM kept_results k WHERE k.host = ?1 AND k.activation_id = ?2), '')), '')
                 FROM products WHERE host = ?1 AND activation_id = ?2",
            )?
            .query_row(params![host, activation_id], |r| {
                Ok(Existing {
                    id: r.get(0)?,
                    iid: r.get(1)?,
                    epid: r.get(2)?,
                    license_status: r.get(3)?,
                    partial_key: r.get(4)?,
                    description: r.get(5)?,
                    product: r.get(6)?,
                    state: r.get(7)?,
                    channel: r.get(8)?,
                    observed_at: r.get(9)?,
                })
            })
            .optional().map_err(LedgerError::from)
    }

    /// Whether a CID for this IID of this product is on hand (a reimaged machine).
    pub fn has_cid(
        &self,
        host: &HostName,
        activation_id: &Guid,
        iid: &InstallationId,
    ) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT 1 FROM cids WHERE host = ?1 AND activation_id = ?2 AND iid = ?3",
            )?
            .query_row(params![host, activation_id, iid], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Removes the no-key marker of a machine that now reports products (see
    /// `ProductRecord::no_key`): the marker stood for "no key", which is no longer true.
    pub fn forget_no_key_marker(&self, host: &HostName, marker: &str) -> Result<()> {
        let id: Option<i64> = self
            .tx
            .prepare_cached("SELECT id FROM product_facts WHERE host = ?1 AND activation_id = ?2")?
            .query_row(params![host, marker], |r| r.get(0))
            .optional()?;
        let Some(id) = id else { return Ok(()) };
        for sql in [
            "DELETE FROM history WHERE product_id = ?1",
            "DELETE FROM product_status WHERE product_id = ?1",
            "DELETE FROM product_facts WHERE id = ?1",
        ] {
            self.tx.prepare_cached(sql)?.execute(params![id])?;
        }
        Ok(())
    }

    /// Adds a key to the inventory; `false` if one with these last five characters is
    /// there already.
    pub fn add_key(&self, k: &KeyRow, at: &str) -> Result<bool> {
        Ok(self.tx.execute(
            "INSERT INTO product_keys(last5, product, channel, epid, remaining, remaining_at, remaining_from, added_at)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(last5) DO NOTHING",
            params![k.last5, k.product, k.channel, k.extended_product_id, k.remaining, k.remaining_at, k.remaining_from, at],
        )? == 1)
    }

    /// Removes a key from the inventory; `false` if there was none.
    pub fn remove_key(&self, last5: &str) -> Result<bool> {
        Ok(self
            .tx
            .execute("DELETE FROM product_keys WHERE last5 = ?1", params![last5])?
            == 1)
    }

    /// Records a remaining-activation count a return carried for `epid`, against the
    /// key of the products of `cil_bundle` with that ePID (added to the inventory if
    /// new), unless the inventory holds a newer count. Returns the keys updated.
    pub fn key_count_seen(
        &self,
        cil_bundle: &BundleId,
        c: &makproxy_core::bundle::RemainingCount,
        return_bundle: &BundleId,
        at: &str,
    ) -> Result<u64> {
        let left = if c.activations_remaining < 0 {
            -1
        } else {
            c.activations_remaining
                .saturating_sub(i64::try_from(c.spent).unwrap_or(i64::MAX))
                .max(0)
        };
        let keys: Vec<(String, Option<String>, Option<String>)> = self
            .tx
            .prepare_cached(
                "SELECT DISTINCT upper(f.partial_key), COALESCE(f.product, f.activation_id), COALESCE(f.channel, 'mak')
                 FROM bundle_records br JOIN product_facts f ON f.id = br.product_id
                 WHERE br.bundle_id = ?1 AND f.epid = ?2 AND f.partial_key IS NOT NULL",
            )?
            .query_map(params![cil_bundle, c.extended_product_id.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut n = 0;
        for (last5, product, channel) in keys {
            n += self.tx.prepare_cached(
                "INSERT INTO product_keys(last5, product, channel, epid, remaining, remaining_at, remaining_from, added_at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(last5) DO UPDATE SET remaining = excluded.remaining, remaining_at = excluded.remaining_at,
                   remaining_from = excluded.remaining_from, epid = COALESCE(product_keys.epid, excluded.epid)
                 WHERE product_keys.remaining_at IS NULL OR product_keys.remaining_at <= excluded.remaining_at",
            )?
            .execute(params![last5, product, channel, c.extended_product_id.as_str(), left, c.checked, return_bundle, at])? as u64;
        }
        Ok(n)
    }

    /// Keys with fewer activations left than the products of `bundle_id` need.
    pub fn shortfalls(&self, bundle_id: &BundleId) -> Result<Vec<Shortfall>> {
        shortfalls(&self.tx, Some(bundle_id))
    }

    /// Sets the site's channel policy and moves the products it decides: queued
    /// products of a channel now off are skipped (`channel-off`); products skipped as
    /// `channel-off` whose channel is now on are queued again (or `cid_on_hand`).
    /// Products in a bundle, holding a CID or failed keep their state. Returns how many
    /// products moved.
    pub fn set_policy(&self, policy: Policy, at: &str) -> Result<u64> {
        store::meta_set(&self.tx, "channels", &policy.as_string())?;
        let rows: Vec<PolicyRow> = self
            .tx
            .prepare(
                "SELECT id, host, activation_id, channel, partial_key, license_status, iid IS NOT NULL, state, iid
                 FROM products WHERE state = ?1 OR (state = ?2 AND reason_code = ?3)",
            )?
            .query_map(params![ProductState::Queued, ProductState::Skipped, makproxy_core::records::Skip::ChannelOff.id()], |r| {
                Ok(PolicyRow {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    activation_id: r.get(2)?,
                    channel: r.get(3)?,
                    partial_key: r.get(4)?,
                    licensed: r.get::<_, Option<i64>>(5)? == Some(1),
                    has_iid: r.get(6)?,
                    state: r.get(7)?,
                    iid: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut moved = 0;
        for p in rows {
            let skip = makproxy_core::records::skip_reason(
                p.channel,
                p.partial_key.as_deref(),
                p.licensed,
                p.has_iid,
                policy,
            );
            let seen = match skip {
                Some(_) => Seen::Skip,
                None => match &p.iid {
                    Some(i) if self.has_cid(&p.host, &p.activation_id, i)? => Seen::CidOnHand,
                    _ => Seen::NeedsActivation,
                },
            };
            if after_collect(Some((p.state, true)), seen) == p.state {
                continue;
            }
            let change = Change::Seen {
                seen,
                same_iid: true,
                reason: (skip.map(|s| s.id()), skip.map(|s| s.reason())),
                history: History::Policy { policy },
            };
            self.apply(p.id, p.state, &change, None, at)?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Records a product seen for the first time, where `seen` puts it, with the
    /// reason (code, words) it is skipped or on hand; returns its row ID and state.
    pub fn insert_product(
        &self,
        f: &Facts,
        seen: Seen,
        reason: (Option<&str>, Option<&str>),
        observed: Option<&str>,
        at: &str,
    ) -> Result<(i64, ProductState)> {
        let state = ProductState::first(seen);
        self.tx
            .prepare_cached(
                "INSERT INTO product_facts(host, activation_id, application, wmi_class, product, description, partial_key, epid, iid, license_status, source_file, channel)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![f.host, f.activation_id, f.application, f.wmi_class.as_str(), f.product, f.description, f.partial_key, f.epid, f.iid, f.license_status, f.file, f.channel.map(Channel::as_str)])?;
        let id = self.tx.last_insert_rowid();
        self.tx
            .prepare_cached(
                "INSERT INTO product_status(product_id, state, reason_code, reason, updated_at, observed_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![id, state, reason.0, reason.1, at, observed])?;
        self.history(id, at, &History::Collected { file: f.file }, state)?;
        Ok((id, state))
    }

    /// Rewrites what collect saw of a known product (its state goes through
    /// [`Tx::apply`]).
    pub fn record_facts(&self, id: i64, f: &Facts) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE product_facts SET application = ?2, wmi_class = ?3, product = ?4, description = ?5, partial_key = ?6, epid = ?7, iid = ?8, license_status = ?9,
                   source_file = ?10, channel = ?11 WHERE id = ?1",
            )?
            .execute(params![id, f.application, f.wmi_class.as_str(), f.product, f.description, f.partial_key, f.epid, f.iid, f.license_status, f.file, f.channel.map(Channel::as_str)])?;
        Ok(())
    }

    /// The product a deposit result names.
    pub fn deposit_target(
        &self,
        host: &HostName,
        activation_id: &Guid,
    ) -> Result<Option<DepositTarget>> {
        self.tx
            .prepare_cached(
                "SELECT id, iid, cid, state, observed_at FROM products WHERE host = ?1 AND activation_id = ?2",
            )?
            .query_row(params![host, activation_id], |r| {
                Ok(DepositTarget {
                    id: r.get(0)?,
                    iid: r.get(1)?,
                    cid: r.get(2)?,
                    state: r.get(3)?,
                    observed_at: r.get(4)?,
                })
            })
            .optional().map_err(LedgerError::from)
    }

    /// The CID the ledger holds for this IID of this product (kept from any return).
    pub fn known_cid(
        &self,
        host: &HostName,
        activation_id: &Guid,
        iid: &InstallationId,
    ) -> Result<Option<ConfirmationId>> {
        self.tx
            .prepare_cached(
                "SELECT cid FROM cids WHERE host = ?1 AND activation_id = ?2 AND iid = ?3",
            )?
            .query_row(params![host, activation_id, iid], |r| r.get(0))
            .optional()
            .map_err(LedgerError::from)
    }

    /// Keeps a deposit result whose CID the ledger does not know yet.
    pub fn keep_result(&self, r: &ResultRow, at: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO kept_results(file, record, host, activation_id, iid, cid, error_code, license_status, observed_at, at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![r.file, r.record, r.host, r.activation_id, r.iid, r.cid, r.error_code, r.license_status, r.observed_at, at])?;
        Ok(())
    }

    /// Every kept deposit result, oldest machine time first.
    pub fn kept_results(&self) -> Result<Vec<ResultRow>> {
        self.tx
            .prepare_cached(
                "SELECT file, record, host, activation_id, iid, cid, error_code, license_status, observed_at FROM kept_results
                 ORDER BY observed_at IS NOT NULL, observed_at, at, file, record",
            )?
            .query_map([], |r| {
                Ok(ResultRow {
                    file: r.get(0)?,
                    record: r.get(1)?,
                    host: r.get(2)?,
                    activation_id: r.get(3)?,
                    iid: r.get(4)?,
                    cid: r.get(5)?,
                    error_code: r.get(6)?,
                    license_status: r.get(7)?,
                    observed_at: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>().map_err(LedgerError::from)
    }

    /// Drops a kept deposit result (matched, or overtaken).
    pub fn forget_result(&self, file: &str, record: i64) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM kept_results WHERE file = ?1 AND record = ?2")?
            .execute(params![file, record])?;
        Ok(())
    }

    // ---- pack ----

    /// The sequence number the next bundle gets.
    pub fn next_sequence(&self) -> Result<u64> {
        Ok(store::meta_get(&self.tx, "next_sequence")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(1))
    }

    /// Chooses the products `event` packs (products matching `product`/`host`, at most
    /// `limit`, in collection order) into `bundle_id`'s records, numbered from 1.
    pub fn choose_for_bundle(
        &self,
        bundle_id: &BundleId,
        event: Event,
        product: Option<&str>,
        host: Option<&str>,
        limit: Option<u64>,
    ) -> Result<u64> {
        let sources = ProductState::sources(event);
        // The sources' names are bound, never spelled in the SQL: ?5, ?6, …
        let states = (0..sources.len())
            .map(|i| format!("?{}", i + 5))
            .collect::<Vec<_>>()
            .join(",");
        // Records take the products' collection order (product IDs: a scan of the
        // narrow status table, no sort); handles are numbered in SQL. A braced GUID is
        // the same activation ID.
        let select = format!(
            "INSERT INTO bundle_records(bundle_id, handle, product_id, iid)
             SELECT ?4, row_number() OVER (ORDER BY s.product_id), f.id, f.iid
             FROM product_status s JOIN product_facts f ON f.id = s.product_id
             WHERE +s.state IN ({states})
               AND (?1 IS NULL OR f.product LIKE '%' || ?1 || '%' OR f.activation_id = lower(trim(?1, '{{}}')))
               AND (?2 IS NULL OR f.host GLOB upper(?2))
             ORDER BY s.product_id LIMIT ?3"
        );
        let limit = limit.map_or(-1, |l| l as i64);
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&product, &host, &limit, &bundle_id];
        p.extend(sources.iter().map(|s| s as &dyn rusqlite::ToSql));
        Ok(self.tx.execute(&select, p.as_slice())? as u64)
    }

    /// The chosen records of a bundle, in handle order.
    pub fn bundle_rows<E: From<LedgerError>>(
        &self,
        bundle_id: &BundleId,
        mut f: impl FnMut(PackRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt = self.tx.prepare(
            "SELECT br.handle, f.id, f.host, f.activation_id, f.epid, f.iid, f.product, f.channel, f.partial_key
             FROM bundle_records br JOIN product_facts f ON f.id = br.product_id
             WHERE br.bundle_id = ?1 ORDER BY br.handle",
        ).map_err(LedgerError::from)?;
        each(
            &mut stmt,
            params![bundle_id],
            |r| {
                // Every ID read through its type: a tampered ledger cannot put
                // garbage into a signed bundle (the row is LedgerError::Invalid).
                Ok(PackRow {
                    handle: r.get(0)?,
                    product_id: r.get(1)?,
                    host: r.get(2)?,
                    activation_id: r.get(3)?,
                    epid: r
                        .get::<_, Option<ExtendedProductId>>(4)?
                        .unwrap_or_default(),
                    iid: r.get(5)?,
                    product: r.get(6)?,
                    channel: r.get(7)?,
                    partial_key: r.get(8)?,
                })
            },
            &mut f,
        )
    }

    /// How many products are in `state`.
    pub fn count_in(&self, state: ProductState) -> Result<i64> {
        self.tx
            .query_row(
                "SELECT COUNT(*) FROM products WHERE state = ?1",
                params![state],
                |r| r.get(0),
            )
            .map_err(LedgerError::from)
    }

    /// Records a written bundle, moves its products where `event` (the pack that chose
    /// them) takes them, and the sequence on.
    pub fn bundle_written(&self, b: &WrittenBundle, event: Event, at: &str) -> Result<()> {
        let to = ProductState::bulk_target(event).expect("a pack has one target");
        self.tx.execute(
            "INSERT INTO bundles(bundle_id, sequence, manifest_sha256, created, expires, records, file, signer) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![b.bundle_id, b.sequence as i64, b.manifest_sha256, b.created, b.expires, b.records as i64, b.file, b.signer],
        )?;
        // No history rows here: bundle_records and bundles already say which product
        // went into which bundle, when, with which IID.
        self.tx.execute(
            "UPDATE product_status SET state = ?2, bundle_id = ?1, reason_code = NULL, reason = NULL, updated_at = ?3 WHERE product_id IN (SELECT product_id FROM bundle_records WHERE bundle_id = ?1)",
            params![b.bundle_id, to, at],
        )?;
        store::meta_set(&self.tx, "next_sequence", &(b.sequence + 1).to_string())
            .map_err(LedgerError::from)
    }

    // ---- apply ----

    /// When a return was applied, and what that apply counted, if it was.
    pub fn return_applied(&self, bundle_id: &BundleId) -> Result<Option<AppliedBefore>> {
        self.tx
            .query_row(
                "SELECT applied_at, summary FROM returns WHERE bundle_id = ?1",
                params![bundle_id],
                |r| {
                    Ok(AppliedBefore {
                        at: r.get(0)?,
                        summary: {
                            let text: String = r.get(1)?;
                            serde_json::from_str(&text).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    1,
                                    rusqlite::types::Type::Text,
                                    format!("not an apply summary: {e}").into(),
                                )
                            })?
                        },
                    })
                },
            )
            .optional()
            .map_err(LedgerError::from)
    }

    /// What this site issued as `bundle_id`, if it did.
    pub fn issued(&self, bundle_id: &BundleId) -> Result<Option<Issued>> {
        self.tx
            .query_row(
                "SELECT manifest_sha256, sequence FROM bundles WHERE bundle_id = ?1",
                params![bundle_id],
                |r| {
                    Ok(Issued {
                        manifest_sha256: r.get(0)?,
                        sequence: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map_err(LedgerError::from)
    }

    /// A record of an issued bundle.
    pub fn bundle_record(&self, bundle_id: &BundleId, handle: u64) -> Result<Option<PackedRecord>> {
        self.tx
            .prepare_cached(
                "SELECT product_id, iid, answered FROM bundle_records WHERE bundle_id = ?1 AND handle = ?2",
            )?
            .query_row(params![bundle_id, handle as i64], |x| {
                Ok(PackedRecord {
                    product_id: x.get(0)?,
                    iid: x.get(1)?,
                    answered: Answered(x.get(2)?),
                })
            })
            .optional().map_err(LedgerError::from)
    }

    /// Marks a bundle record answered.
    pub fn set_answered(&self, bundle_id: &BundleId, handle: u64, a: Answered) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE bundle_records SET answered = ?3 WHERE bundle_id = ?1 AND handle = ?2",
            )?
            .execute(params![bundle_id, handle as i64, a.0])?;
        Ok(())
    }

    /// (host, activation ID, current IID, state, holds a simulated CID).
    pub fn product_now(&self, id: i64) -> Result<ProductNow> {
        self.tx
            .prepare_cached(
                "SELECT host, activation_id, iid, epid, state, cid_simulated, product FROM products WHERE id = ?1",
            )?
            .query_row(params![id], |x| {
                Ok(ProductNow {
                    host: x.get(0)?,
                    activation_id: x.get(1)?,
                    iid: x.get(2)?,
                    epid: x.get(3)?,
                    state: x.get(4)?,
                    cid_simulated: x.get(5)?,
                    product: x.get(6)?,
                })
            }).map_err(LedgerError::from)
    }

    /// Keeps a CID obtained for (host, product, IID), even when not used now; a
    /// simulated CID never replaces a real one.
    pub fn keep_cid(&self, k: &KeptCid, at: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO cids(host, activation_id, iid, cid, simulated, return_bundle, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(host, activation_id, iid) DO UPDATE SET cid = excluded.cid, simulated = excluded.simulated, return_bundle = excluded.return_bundle, at = excluded.at
                 WHERE cids.simulated = 1 OR excluded.simulated = 0",
            )?
            .execute(params![
                k.host,
                k.activation_id,
                k.iid,
                k.cid,
                k.simulated,
                k.return_bundle,
                at
            ])?;
        Ok(())
    }

    /// Keeps what the gateway `gateway` (its pinned name) said it requires of this
    /// site's bundles in the return `return_bundle` created at `created`, unless a
    /// newer return of that gateway said it already.
    pub fn gateway_rule_seen(
        &self,
        gateway: &str,
        rule: &makproxy_core::bundle::SiteRule,
        return_bundle: &BundleId,
        created: &str,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO gateway_rules(gateway, signatures_required, signers, return_bundle, created)
             VALUES(?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(gateway) DO UPDATE SET signatures_required = excluded.signatures_required,
                 signers = excluded.signers, return_bundle = excluded.return_bundle, created = excluded.created
             WHERE excluded.created > gateway_rules.created",
            params![
                gateway,
                rule.signatures_required,
                serde_json::to_string(&rule.signers).expect("serialisable"),
                return_bundle,
                created
            ],
        )?;
        Ok(())
    }

    /// Records that a return was applied, with its summary.
    pub fn return_recorded(&self, r: &AppliedReturn, at: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO returns(bundle_id, answers, signer, backend, simulated, applied_at, summary) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                r.bundle_id,
                r.answers,
                r.signer,
                r.backend,
                r.simulated,
                at,
                serde_json::to_string(r.summary).expect("a summary is numbers")
            ],
        )?;
        Ok(())
    }

    /// Records of a request with neither a CID nor a refusal yet.
    pub fn still_pending(&self, bundle_id: &BundleId) -> Result<i64> {
        self.tx.query_row(
            "SELECT COUNT(*) FROM bundle_records b JOIN product_status p ON p.product_id = b.product_id
             WHERE b.bundle_id = ?1 AND b.answered = 0 AND p.state = ?2",
            params![bundle_id, ProductState::Packed],
            |r| r.get(0),
        ).map_err(LedgerError::from)
    }

    /// `apply --reissue`: every product with a CID on hand moves to `cid_received` with
    /// the stored CID (a real one wherever one was ever obtained).
    pub fn reissue(&self, at: &str) -> Result<usize> {
        let event = Event::Reissue;
        let to = ProductState::bulk_target(event).expect("a reissue has one target");
        let h = History::Reissued;
        for from in ProductState::sources(event) {
            self.tx.execute(
                "INSERT INTO history(product_id, at, event, detail) SELECT id, ?1, ?2, ?3 FROM products WHERE state = ?4",
                params![at, h.event(), h.detail(to), from],
            )?;
        }
        let mut n = 0;
        for from in ProductState::sources(event) {
            n += self.tx.execute(
                "UPDATE product_status SET
                    cid = (SELECT c.cid FROM cids c JOIN product_facts f ON c.host = f.host AND c.activation_id = f.activation_id AND c.iid = f.iid WHERE f.id = product_status.product_id),
                    cid_simulated = (SELECT c.simulated FROM cids c JOIN product_facts f ON c.host = f.host AND c.activation_id = f.activation_id AND c.iid = f.iid WHERE f.id = product_status.product_id),
                    state = ?2, reason_code = NULL, reason = 'reissued from the ledger; no activation spent', updated_at = ?3 WHERE state = ?1",
                params![from, to, at],
            )?;
        }
        Ok(n)
    }

    /// Hosts with products awaiting deposit (of one request bundle when given).
    pub fn hosts_awaiting_deposit(&self, bundle_id: Option<&BundleId>) -> Result<Vec<HostName>> {
        self.tx
            .prepare(
                "SELECT DISTINCT p.host FROM products p WHERE p.state = ?2
                 AND (?1 IS NULL OR p.id IN (SELECT product_id FROM bundle_records WHERE bundle_id = ?1)) ORDER BY p.host",
            )?
            .query_map(params![bundle_id, ProductState::CidReceived], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>().map_err(LedgerError::from)
    }

    /// A host's products awaiting deposit, every value read back through its ID type.
    pub fn deposit_rows(&self, host: &HostName) -> Result<Vec<DepositItem>> {
        self.tx
            .prepare_cached("SELECT activation_id, application, wmi_class, product, iid, cid, cid_simulated, partial_key FROM products WHERE host = ?1 AND state = ?2 ORDER BY activation_id")?
            .query_map(params![host, ProductState::CidReceived], |x| {
                Ok(DepositItem {
                    activation_id: x.get(0)?,
                    application: typed(x, 1, |s| {
                        DepositItem::APPLICATIONS.into_iter().find(|a| *a == s).ok_or("not an application label")
                    })?,
                    wmi_class: typed(x, 2, |s| WmiClass::parse(s).ok_or("not a WMI class"))?,
                    product: x.get(3)?,
                    iid: x.get(4)?,
                    cid: x.get(5)?,
                    simulated: x.get(6)?,
                    partial_key: x.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>().map_err(LedgerError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use ProductState as S;

    /// A bundle ID numbered `n`.
    fn bid(n: u8) -> BundleId {
        BundleId::parse(&format!("{n:032x}")).unwrap()
    }

    const PACK: Event = E::Pack {
        retry_failed: false,
        only_failed: false,
        repack: false,
    };
    const RETRY: Event = E::Pack {
        retry_failed: true,
        only_failed: false,
        repack: false,
    };
    const ONLY_FAILED: Event = E::Pack {
        retry_failed: false,
        only_failed: true,
        repack: false,
    };
    const REPACK: Event = E::Pack {
        retry_failed: false,
        only_failed: false,
        repack: true,
    };
    const CID: Event = E::Cid {
        replaces_simulated: false,
    };
    const REAL_OVER_SIM: Event = E::Cid {
        replaces_simulated: true,
    };

    /// Every event, in the order of the table's columns.
    const EVENTS: [Event; 10] = [
        PACK,
        RETRY,
        ONLY_FAILED,
        REPACK,
        CID,
        REAL_OVER_SIM,
        E::Refused,
        E::Reissue,
        E::Deposited,
        E::DepositFailed,
    ];

    /// The whole table, row by row: every (state, event) pair and where it leads.
    #[test]
    fn transition_table() {
        let events = EVENTS;
        #[rustfmt::skip]
        let table: [(S, [Option<S>; 10]); 8] = [
            //                 PACK              RETRY             ONLY_FAILED       REPACK            CID                    REAL_OVER_SIM          Refused          Reissue                Deposited           DepositFailed
            (S::Queued,        [Some(S::Packed), Some(S::Packed),  None,             Some(S::Packed),  Some(S::CidReceived),  Some(S::CidReceived),  Some(S::Failed), None,                  None,               None]),
            (S::Packed,        [None,            None,             None,             Some(S::Packed),  Some(S::CidReceived),  Some(S::CidReceived),  Some(S::Failed), None,                  None,               None]),
            (S::CidOnHand,     [None,            None,             None,             None,             None,                  None,                  None,            Some(S::CidReceived),  None,               None]),
            (S::CidReceived,   [None,            None,             None,             None,             None,                  Some(S::CidReceived),  None,            None,                  Some(S::Activated), Some(S::DepositFailed)]),
            (S::Activated,     [None,            None,             None,             None,             None,                  None,                  None,            None,                  Some(S::Activated), Some(S::DepositFailed)]),
            (S::Failed,        [None,            Some(S::Packed),  Some(S::Packed),  None,             Some(S::CidReceived),  Some(S::CidReceived),  Some(S::Failed), None,                  None,               None]),
            (S::DepositFailed, [None,            Some(S::Packed),  Some(S::Packed),  None,             None,                  None,                  None,            None,                  Some(S::Activated), Some(S::DepositFailed)]),
            (S::Skipped,       [None,            None,             None,             None,             None,                  None,                  None,            None,                  None,               None]),
        ];
        for (from, row) in table {
            for (event, want) in events.iter().zip(row) {
                assert_eq!(from.after(*event), want, "{from} on {event:?}");
            }
        }
        assert_eq!(S::ALL.len(), table.len(), "every state has a row");
    }

    /// One thing that can happen to a product: an event, or a collect of a record for
    /// the same IID or a new one that says the product is to be skipped, is licensed,
    /// or needs activation.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Event(Event),
        Collect { says: Seen, new_iid: bool },
    }

    fn all_ops() -> Vec<Op> {
        let mut ops: Vec<Op> = EVENTS.iter().map(|e| Op::Event(*e)).collect();
        for says in [Seen::Skip, Seen::Licensed, Seen::NeedsActivation] {
            for new_iid in [false, true] {
                ops.push(Op::Collect { says, new_iid });
            }
        }
        ops
    }

    /// A product as the ledger holds it: its state, and whether a usable CID is stored
    /// for its current IID (which is what turns "needs activation" into "CID on hand").
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Product {
        state: S,
        cid_stored: bool,
    }

    /// `op` applied to `p` (an event that does not apply leaves it), as the ledger does.
    fn step(p: Option<Product>, op: Op) -> Option<Product> {
        match (p, op) {
            (None, Op::Event(_)) => None,
            (Some(p), Op::Event(e)) => Some(Product {
                state: p.state.after(e).unwrap_or(p.state),
                // apply keeps every CID for its IID, whatever the state; a CID Windows
                // refused at deposit is no answer any more, and one arriving after
                // such a refusal (most likely the same CID again) is not trusted until
                // a repack asks anew.
                cid_stored: match e {
                    E::Cid { .. } => p.cid_stored || p.state != S::DepositFailed,
                    E::DepositFailed => false,
                    _ => p.cid_stored,
                },
            }),
            (p, Op::Collect { says, new_iid }) => {
                let cid_stored = p.is_some_and(|p| p.cid_stored) && !new_iid;
                let seen = match says {
                    Seen::NeedsActivation if cid_stored => Seen::CidOnHand,
                    s => s,
                };
                Some(Product {
                    state: after_collect(p.map(|p| (p.state, !new_iid)), seen),
                    cid_stored,
                })
            }
        }
    }

    /// Whether some sequence of operations activates `p`.
    fn can_activate(p: Product) -> bool {
        let mut seen = vec![p];
        let mut i = 0;
        while i < seen.len() {
            if seen[i].state == S::Activated {
                return true;
            }
            for op in all_ops() {
                if let Some(n) = step(Some(seen[i]), op) {
                    if !seen.contains(&n) {
                        seen.push(n);
                    }
                }
            }
            i += 1;
        }
        false
    }

    #[test]
    fn states_read_back_as_stored_and_nothing_else_is_a_state() {
        for st in S::ALL {
            assert_eq!(S::parse(st.as_str()), Some(st));
        }
        assert_eq!(S::parse("Queued"), None);
        assert_eq!(S::parse("done"), None);
    }

    #[test]
    fn nothing_is_stuck_every_state_can_still_be_activated() {
        for state in S::ALL {
            for cid_stored in [false, true] {
                let p = Product { state, cid_stored };
                assert!(can_activate(p), "{p:?} can never be activated");
            }
        }
    }

    fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let ops = all_ops();
        (0..ops.len()).prop_map(move |i| ops[i])
    }

    proptest::proptest! {
        /// Any sequence of collects, packs, returns, reissues and deposit results keeps
        /// the lifecycle's promises, checked against rules stated apart from the table:
        /// a stored CID is never asked for again for the same IID unless Windows refused
        /// it; only a deposit or Windows itself
        /// says activated; only collect skips; and no product is ever stuck (some
        /// sequence of operator actions still activates it).
        #[test]
        fn any_sequence_keeps_the_lifecycle_promises(ops in proptest::collection::vec(op_strategy(), 1..40)) {
            let mut p: Option<Product> = None;
            for op in ops {
                let next = step(p, op);
                if let (Some(before), Some(after)) = (p, next) {
                    let (b, a) = (before.state, after.state);
                    // A stored CID for the current IID is used, not asked for again,
                    // unless Windows refused it at deposit.
                    let holds_answer = before.cid_stored;
                    let asks_again = a != b && matches!(a, S::Queued | S::Packed | S::Failed);
                    let new_iid = matches!(op, Op::Collect { new_iid: true, .. });
                    proptest::prop_assert!(!(holds_answer && asks_again && !new_iid), "{b} -> {a} on {op:?} with a CID stored");
                    if a == S::Activated && b != S::Activated {
                        proptest::prop_assert!(matches!(op, Op::Event(E::Deposited) | Op::Collect { says: Seen::Licensed, .. }), "{b} -> activated on {op:?}");
                    }
                    // Activated goes back only on the machine's own word: a newer
                    // report, or a deposit it says failed.
                    if b == S::Activated && a != S::Activated {
                        proptest::prop_assert!(matches!(op, Op::Event(E::DepositFailed) | Op::Collect { .. }), "activated -> {a} on {op:?}");
                    }
                    if a == S::Skipped && b != S::Skipped {
                        proptest::prop_assert!(matches!(op, Op::Collect { .. }), "{b} -> skipped on {op:?}");
                    }
                }
                if let Some(n) = next {
                    proptest::prop_assert!(can_activate(n), "{n:?} is stuck");
                }
                p = next;
            }
        }
    }

    #[test]
    fn no_event_ever_leaves_skipped_or_reaches_queued() {
        // Only collect queues (a new IID) or skips; nothing else may.
        for s in S::ALL {
            for e in EVENTS {
                assert_ne!(s.after(e), Some(S::Queued), "{s} on {e:?}");
                assert_ne!(s.after(e), Some(S::Skipped), "{s} on {e:?}");
            }
        }
    }

    #[test]
    fn collect_rules() {
        use Seen as N;
        // New products.
        assert_eq!(after_collect(None, N::NeedsActivation), S::Queued);
        assert_eq!(after_collect(None, N::CidOnHand), S::CidOnHand);
        assert_eq!(after_collect(None, N::Skip), S::Skipped);
        assert_eq!(after_collect(None, N::Licensed), S::Skipped);
        // Licensed after makproxy's CID: activated; never had one: skipped.
        for s in [S::CidReceived, S::Activated, S::DepositFailed, S::CidOnHand] {
            assert_eq!(
                after_collect(Some((s, true)), N::Licensed),
                S::Activated,
                "{s}"
            );
        }
        assert_eq!(
            after_collect(Some((S::Queued, true)), N::Licensed),
            S::Skipped
        );
        // Same IID, in flight: kept.
        for s in [
            S::Packed,
            S::CidReceived,
            S::Failed,
            S::DepositFailed,
            S::CidOnHand,
        ] {
            assert_eq!(after_collect(Some((s, true)), N::NeedsActivation), s, "{s}");
        }
        // Activated, and a new report says unlicensed: the stored CID is offered again.
        assert_eq!(
            after_collect(Some((S::Activated, true)), N::CidOnHand),
            S::CidOnHand
        );
        // A new IID (reimaged): queued again, or CID on hand when the ledger has one.
        for s in S::ALL {
            assert_eq!(
                after_collect(Some((s, false)), N::NeedsActivation),
                S::Queued,
                "{s}"
            );
            assert_eq!(
                after_collect(Some((s, false)), N::CidOnHand),
                S::CidOnHand,
                "{s}"
            );
        }
    }

    #[test]
    fn a_missing_or_empty_ledger_is_never_recreated_by_open() {
        let dir = tempfile::tempdir().unwrap();
        let (home, _) =
            Home::init(dir.path(), makproxy_core::keys::Role::Secure, "s", None).unwrap();
        assert!(matches!(Ledger::open(&home), Err(OpenError::Missing(_))));
        std::fs::write(path(&home), b"").unwrap();
        assert!(matches!(Ledger::open(&home), Err(OpenError::Missing(_))));
        // An empty main file whose content is still in the WAL is a ledger.
        let mut wal = path(&home).into_os_string();
        wal.push("-wal");
        std::fs::write(&wal, b"x").unwrap();
        assert!(exists(&home));
        std::fs::remove_file(&wal).unwrap();
        std::fs::remove_file(path(&home)).unwrap();
        drop(Ledger::create(&home, 7).unwrap());
        let mut l = Ledger::open(&home).unwrap();
        assert_eq!(l.begin().unwrap().next_sequence().unwrap(), 7);
    }

    /// A return's summary is read back as what apply counted: a damaged row is a
    /// damaged ledger, never an earlier apply that counted nothing.
    #[test]
    fn an_applied_returns_summary_is_read_back_through_its_type() {
        let dir = tempfile::tempdir().unwrap();
        let (home, _) =
            Home::init(dir.path(), makproxy_core::keys::Role::Secure, "s", None).unwrap();
        let mut l = Ledger::create(&home, 1).unwrap();
        let counted = Summary {
            cids: 3,
            failed: 1,
            pending: 2,
            ..Summary::default()
        };
        let tx = l.begin().unwrap();
        tx.return_recorded(
            &AppliedReturn {
                bundle_id: &bid(1),
                answers: &bid(0xc1),
                signer: "gw",
                backend: "microsoft",
                simulated: false,
                summary: &counted,
            },
            "2026-12-04T00:00:00Z",
        )
        .unwrap();
        let before = tx.return_applied(&bid(1)).unwrap().unwrap();
        assert_eq!(before.summary, counted);
        assert_eq!(before.at, "2026-12-04T00:00:00Z");
        for damaged in ["", "{\"cids\": -1}", "[1, 2]", "{\"cids\": 1}"] {
            tx.tx
                .execute("UPDATE returns SET summary = ?1", params![damaged])
                .unwrap();
            match tx.return_applied(&bid(1)) {
                Err(e @ LedgerError::Invalid(_)) => {
                    assert!(e.to_string().contains("not an apply summary"), "{e}")
                }
                other => panic!("{damaged:?} read as {other:?}"),
            }
        }
    }

    /// ESU coverage puts each machine reporting an add-on in exactly one count: an
    /// add-on skipped for a reason other than "licensed" or "no key" waits for nothing
    /// makproxy does, so it is skipped, not pending.
    #[test]
    fn esu_coverage_counts_each_machine_where_it_stands() {
        use makproxy_core::records::Skip;
        let dir = tempfile::tempdir().unwrap();
        let (home, _) =
            Home::init(dir.path(), makproxy_core::keys::Role::Secure, "s", None).unwrap();
        let l = Ledger::create(&home, 1).unwrap();
        let year1 = "f520e45e-7413-4a34-a497-d2765967d094";
        let rows = [
            (S::Activated, None),
            (S::Skipped, Some(Skip::Licensed.id())),
            (S::Skipped, Some(Skip::NoKey.id())),
            (S::Skipped, Some(Skip::ChannelOff.id())),
            (S::Skipped, Some(Skip::NoIid.id())),
            (S::Queued, None),
            (S::Packed, None),
            (S::CidReceived, None),
            (S::Failed, Some("MP-BKD-001")),
            (S::DepositFailed, None),
        ];
        for (i, (state, reason)) in rows.iter().enumerate() {
            l.conn
                .execute(
                    "INSERT INTO product_facts(id, host, activation_id, application, wmi_class) VALUES(?1, ?2, ?3, 'windows', 'SoftwareLicensingProduct')",
                    params![i as i64 + 1, format!("PC-{i}"), year1],
                )
                .unwrap();
            l.conn
                .execute(
                    "INSERT INTO product_status(product_id, state, reason_code, updated_at) VALUES(?1, ?2, ?3, 't')",
                    params![i as i64 + 1, state, reason],
                )
                .unwrap();
        }
        let all = l.esu_coverage().unwrap();
        assert_eq!(all.len(), 1, "only Year 1 is reported");
        let c = &all[0];
        assert_eq!(
            (
                c.machines,
                c.activated,
                c.no_key,
                c.skipped,
                c.pending,
                c.refused
            ),
            (10, 2, 1, 2, 3, 2)
        );
        assert_eq!(
            c.to_string(),
            "Windows 10 ESU Year 1: 2 of 10 machine(s) activated, 3 pending, 2 refused, 1 without an ESU key installed (install the year's ESU MAK on each: slmgr /ipk KEY, then collect again), 2 skipped (not proxy-activated here: status --state skipped says why)"
        );
    }

    /// A gateway's rule is the one its newest applied return said: a return written
    /// earlier and applied later (media carried out of order) never replaces it.
    #[test]
    fn an_older_return_never_replaces_a_newer_gateway_rule() {
        use makproxy_core::bundle::{RuleSigner, SiteRule};
        let dir = tempfile::tempdir().unwrap();
        let (home, key) =
            Home::init(dir.path(), makproxy_core::keys::Role::Secure, "s", None).unwrap();
        let mut l = Ledger::create(&home, 1).unwrap();
        let rule = |n: u32| SiteRule {
            signatures_required: n,
            signers: vec![RuleSigner::new("s", &key.key)],
        };
        let tx = l.begin().unwrap();
        tx.gateway_rule_seen("gw", &rule(2), &bid(2), "2026-12-02T10:00:00Z")
            .unwrap();
        tx.gateway_rule_seen("gw", &rule(1), &bid(1), "2026-12-01T10:00:00Z")
            .unwrap();
        tx.gateway_rule_seen("gw2", &rule(3), &bid(0x91), "2026-11-01T10:00:00Z")
            .unwrap();
        tx.commit().unwrap();
        let got: Vec<(String, u32, BundleId)> = l
            .gateway_rules()
            .unwrap()
            .into_iter()
            .map(|g| (g.gateway, g.rule.signatures_required, g.return_bundle))
            .collect();
        assert_eq!(
            got,
            [("gw".into(), 2, bid(2)), ("gw2".into(), 3, bid(0x91))]
        );
        let tx = l.begin().unwrap();
        tx.gateway_rule_seen("gw", &rule(1), &bid(3), "2026-12-03T10:00:00Z")
            .unwrap();
        tx.commit().unwrap();
        let g = &l.gateway_rules().unwrap()[0];
        assert_eq!((g.rule.signatures_required, &g.return_bundle), (1, &bid(3)));
        assert_eq!(g.rule.signers[0].verifying_key(), Some(key.key));
    }
}
