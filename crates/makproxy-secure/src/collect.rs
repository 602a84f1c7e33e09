//! `collect DIR...`: walks drop folders, parses every machine-record and deposit-result
//! file, and records products in the ledger. Bad files and bad records are reported
//! (file, record, code, reason) and never stop the good ones. Re-collecting the same
//! data changes nothing; a new IID for the same host and activation ID supersedes the
//! old one. Changes are committed in batches of whole files.

use crate::ledger::{self, state};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::records::{
    self, deposit_error_meaning, DepositResult, Parsed, ProductRecord, RecordError, Skip,
};
use makproxy_core::sanitize::escape;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files committed per transaction.
const BATCH: usize = 500;

#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub files: u64,
    pub files_rejected: u64,
    pub new: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub queued: u64,
    pub skipped: u64,
    pub cid_on_hand: u64,
    pub rejected: u64,
    pub deposits_activated: u64,
    pub deposits_failed: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct Problem {
    pub file: String,
    pub record: Option<usize>,
    pub code: String,
    pub detail: String,
}

enum Change {
    New,
    Updated,
    Unchanged,
}

fn is_candidate(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    !name.starts_with('.') && !name.starts_with('~') && matches!(ext.as_str(), "json" | "csv")
}

fn read_limited(path: &Path) -> Result<Vec<u8>, RecordError> {
    let f = std::fs::File::open(path).map_err(|e| RecordError {
        code: makproxy_core::Code::RecUnreadable,
        record: None,
        detail: e.to_string(),
    })?;
    let mut buf = Vec::new();
    f.take(records::MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| RecordError {
            code: makproxy_core::Code::RecUnreadable,
            record: None,
            detail: e.to_string(),
        })?;
    if buf.len() as u64 > records::MAX_FILE {
        return Err(RecordError {
            code: makproxy_core::Code::RecTooLarge,
            record: None,
            detail: format!("larger than {} bytes", records::MAX_FILE),
        });
    }
    Ok(buf)
}

pub fn run(out: &Output, conn: &mut Connection, dirs: &[PathBuf]) -> Result<Exit, CliError> {
    let now = makproxy_core::bundle::rfc3339(makproxy_cli::now());
    let mut summary = Summary::default();
    let mut problems: Vec<Problem> = Vec::new();
    let bar = out.progress(0, "collect");
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    let mut tx = conn.transaction().map_err(db)?;
    let mut in_batch = 0usize;
    for dir in dirs {
        if !dir.is_dir() {
            return Err(CliError::new(
                Exit::Error,
                None,
                format!("{} is not a folder", escape(&dir.display().to_string())),
            ));
        }
        for entry in walkdir::WalkDir::new(dir)
            .follow_links(false)
            .max_depth(8)
            .sort_by_file_name()
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    problems.push(Problem {
                        file: dir.display().to_string(),
                        record: None,
                        code: "MP-REC-001".into(),
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            if !entry.file_type().is_file() || !is_candidate(entry.path()) {
                continue;
            }
            summary.files += 1;
            bar.inc(1);
            let path = entry.path();
            let shown = path.display().to_string();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            // The file's current problems replace whatever an earlier collect recorded for it.
            tx.execute("DELETE FROM rejections WHERE file = ?1", params![shown])
                .map_err(db)?;
            let parsed = read_limited(path)
                .and_then(|b| records::decode_text(&b))
                .and_then(|t| records::parse(&t, stem));
            match parsed {
                Err(e) => {
                    summary.files_rejected += 1;
                    record_problem(&tx, &mut problems, &shown, &e, &now).map_err(db)?;
                }
                Ok((_, Parsed::Products(list))) => {
                    let mut seen = HashSet::new();
                    for (i, r) in list.into_iter().enumerate() {
                        let r = r.and_then(|p| {
                            if seen.insert((p.host.clone(), p.activation_id.clone())) {
                                Ok(p)
                            } else {
                                Err(RecordError { code: makproxy_core::Code::RecDuplicateProduct, record: Some(i + 1), detail: format!("host {} and activation ID {} already appear earlier in this file", p.host, p.activation_id) })
                            }
                        });
                        match r {
                            Err(e) => {
                                record_problem(&tx, &mut problems, &shown, &e, &now).map_err(db)?
                            }
                            Ok(p) => {
                                let (change, st) = upsert(&tx, &p, &shown, &now).map_err(db)?;
                                match change {
                                    Change::New => summary.new += 1,
                                    Change::Updated => summary.updated += 1,
                                    Change::Unchanged => summary.unchanged += 1,
                                }
                                match st {
                                    state::QUEUED => summary.queued += 1,
                                    state::SKIPPED => summary.skipped += 1,
                                    state::CID_ON_HAND => summary.cid_on_hand += 1,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                Ok((_, Parsed::Deposits(list))) => {
                    for (i, r) in list.into_iter().enumerate() {
                        let r = match r {
                            Ok(d) => deposit(&tx, &d, i + 1, &now).map_err(db)?,
                            Err(e) => Err(e),
                        };
                        match r {
                            Err(e) => {
                                record_problem(&tx, &mut problems, &shown, &e, &now).map_err(db)?
                            }
                            Ok(true) => summary.deposits_activated += 1,
                            Ok(false) => summary.deposits_failed += 1,
                        }
                    }
                }
            }
            in_batch += 1;
            if in_batch >= BATCH {
                tx.commit().map_err(db)?;
                tx = conn.transaction().map_err(db)?;
                in_batch = 0;
            }
        }
    }
    tx.commit().map_err(db)?;
    bar.finish_and_clear();
    summary.rejected = problems.iter().filter(|p| p.record.is_some()).count() as u64;

    for p in &problems {
        let at = p.record.map(|r| format!(" record {r}")).unwrap_or_default();
        eprintln!(
            "{}{}: [{}] {}",
            escape(&p.file),
            at,
            p.code,
            escape(&p.detail)
        );
    }
    out.json(&json!({"summary": summary, "problems": problems}));
    out.line(format!(
        "Collected {} file(s): {} new, {} updated, {} unchanged; {} queued, {} CID on hand, {} skipped; {} record(s) and {} file(s) rejected; deposits: {} activated, {} failed.",
        summary.files, summary.new, summary.updated, summary.unchanged, summary.queued, summary.cid_on_hand, summary.skipped, summary.rejected, summary.files_rejected, summary.deposits_activated, summary.deposits_failed
    ));
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

fn record_problem(
    tx: &Connection,
    problems: &mut Vec<Problem>,
    file: &str,
    e: &RecordError,
    now: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO rejections(file, record, code, detail, at) VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(file, record) DO UPDATE SET code = excluded.code, detail = excluded.detail, at = excluded.at",
        params![file, e.record.unwrap_or(0) as i64, e.code.as_str(), e.detail, now],
    )?;
    problems.push(Problem {
        file: file.to_string(),
        record: e.record,
        code: e.code.as_str().to_string(),
        detail: e.detail.clone(),
    });
    Ok(())
}

struct Existing {
    id: i64,
    iid: Option<String>,
    epid: Option<String>,
    license_status: Option<i64>,
    partial_key: Option<String>,
    description: Option<String>,
    product: Option<String>,
    state: String,
}

fn has_cid(tx: &Connection, p: &ProductRecord) -> rusqlite::Result<bool> {
    let Some(iid) = &p.iid else { return Ok(false) };
    tx.query_row(
        "SELECT 1 FROM cids WHERE host = ?1 AND activation_id = ?2 AND iid = ?3",
        params![p.host.as_str(), p.activation_id.as_str(), iid.digits()],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}

/// Records one product; returns what changed and the resulting state.
fn upsert(
    tx: &Connection,
    p: &ProductRecord,
    file: &str,
    now: &str,
) -> rusqlite::Result<(Change, &'static str)> {
    let existing = tx
        .query_row(
            "SELECT id, iid, epid, license_status, partial_key, description, product, state FROM products WHERE host = ?1 AND activation_id = ?2",
            params![p.host.as_str(), p.activation_id.as_str()],
            |r| Ok(Existing { id: r.get(0)?, iid: r.get(1)?, epid: r.get(2)?, license_status: r.get(3)?, partial_key: r.get(4)?, description: r.get(5)?, product: r.get(6)?, state: r.get(7)? }),
        )
        .optional()?;
    let iid = p.iid.as_ref().map(|i| i.digits().to_string());
    let epid = p.epid.as_ref().map(|e| e.as_str().to_string());
    let status = p.license_status.map(|s| s as i64);
    let skip = p.skip();
    let had_cid_states = [state::CID_RECEIVED, state::ACTIVATED, state::DEPOSIT_FAILED];
    let (desired, reason_code, reason): (&'static str, Option<&str>, Option<&str>) = match skip {
        Some(Skip::Licensed) if existing.as_ref().is_some_and(|e| had_cid_states.contains(&e.state.as_str()) || e.state == state::CID_ON_HAND) => (state::ACTIVATED, None, None),
        Some(s) => (state::SKIPPED, Some(s.id()), Some(s.reason())),
        None if has_cid(tx, p)? => (state::CID_ON_HAND, None, Some("the ledger holds a CID for this IID; `apply --reissue` deposits it without a new activation")),
        None => (state::QUEUED, None, None),
    };
    let Some(e) = existing else {
        tx.execute(
            "INSERT INTO product_facts(host, activation_id, application, wmi_class, product, description, partial_key, epid, iid, license_status, source_file)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![p.host.as_str(), p.activation_id.as_str(), p.application.label(), p.wmi_class, p.name, p.description, p.partial_key, epid, iid, status, file],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO product_status(product_id, state, reason_code, reason, updated_at) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![id, desired, reason_code, reason, now],
        )?;
        ledger::history(tx, id, now, "collected", &format!("{desired} from {file}"))?;
        return Ok((Change::New, desired));
    };
    let same = e.iid == iid
        && e.epid == epid
        && e.license_status == status
        && e.partial_key == p.partial_key
        && e.description == p.description
        && e.product == p.name;
    let current: &'static str = state::ALL
        .iter()
        .copied()
        .find(|s| *s == e.state)
        .unwrap_or(state::QUEUED);
    if same {
        return Ok((Change::Unchanged, current));
    }
    // Same IID, still waiting on a bundle, a deposit or a retry: keep that state.
    let in_flight = [
        state::PACKED,
        state::CID_RECEIVED,
        state::FAILED,
        state::DEPOSIT_FAILED,
        state::CID_ON_HAND,
    ];
    let next = if e.iid == iid
        && desired != state::SKIPPED
        && desired != state::ACTIVATED
        && in_flight.contains(&current)
    {
        current
    } else {
        desired
    };
    let detail = if e.iid != iid {
        format!(
            "IID changed ({} -> {}); {next}",
            e.iid.as_deref().unwrap_or("none"),
            iid.as_deref().unwrap_or("none")
        )
    } else {
        format!("record changed; {next}")
    };
    let clears = next != current;
    tx.execute(
        "UPDATE product_facts SET application = ?2, wmi_class = ?3, product = ?4, description = ?5, partial_key = ?6, epid = ?7, iid = ?8, license_status = ?9,
           source_file = ?10 WHERE id = ?1",
        params![e.id, p.application.label(), p.wmi_class, p.name, p.description, p.partial_key, epid, iid, status, file],
    )?;
    tx.execute(
        "UPDATE product_status SET state = ?2, reason_code = CASE WHEN ?3 THEN ?4 ELSE reason_code END, reason = CASE WHEN ?3 THEN ?5 ELSE reason END,
           bundle_id = CASE WHEN ?3 THEN NULL ELSE bundle_id END, updated_at = ?6 WHERE product_id = ?1",
        params![e.id, next, clears, reason_code, reason, now],
    )?;
    ledger::history(
        tx,
        e.id,
        now,
        if e.iid != iid {
            "superseded"
        } else {
            "updated"
        },
        &detail,
    )?;
    Ok((Change::Updated, next))
}

/// Applies one deposit result; Ok(true) activated, Ok(false) failed, Err(record error).
fn deposit(
    tx: &Connection,
    d: &DepositResult,
    n: usize,
    now: &str,
) -> rusqlite::Result<Result<bool, RecordError>> {
    let row: Option<(i64, Option<String>, Option<String>)> = tx
        .query_row(
            "SELECT id, iid, cid FROM products WHERE host = ?1 AND activation_id = ?2",
            params![d.host.as_str(), d.activation_id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let mismatch = |detail: String| {
        Ok(Err(RecordError {
            code: makproxy_core::Code::AplIidMismatch,
            record: Some(n),
            detail,
        }))
    };
    let Some((id, iid, cid)) = row else {
        return mismatch(format!(
            "no product {} on host {} in the ledger",
            d.activation_id, d.host
        ));
    };
    if iid.as_deref() != Some(d.installation_id.digits())
        || cid.as_deref() != Some(d.confirmation_id.digits())
    {
        return mismatch(
            "installation or confirmation ID differs from the ledger's; result ignored".into(),
        );
    }
    if let Some(status) = d.license_status {
        tx.execute(
            "UPDATE product_facts SET license_status = ?2 WHERE id = ?1",
            params![id, status as i64],
        )?;
    }
    if d.activated {
        tx.execute("UPDATE product_status SET state = ?2, reason_code = NULL, reason = NULL, updated_at = ?3 WHERE product_id = ?1", params![id, state::ACTIVATED, now])?;
        ledger::history(tx, id, now, "deposited", "agent reports activated")?;
        Ok(Ok(true))
    } else {
        let code = d.error_code.clone().unwrap_or_else(|| "unknown".into());
        let meaning = deposit_error_meaning(&code);
        tx.execute("UPDATE product_status SET state = ?2, reason_code = ?3, reason = ?4, updated_at = ?5 WHERE product_id = ?1", params![id, state::DEPOSIT_FAILED, code, meaning, now])?;
        ledger::history(tx, id, now, "deposit-failed", &format!("{code}: {meaning}"))?;
        Ok(Ok(false))
    }
}
