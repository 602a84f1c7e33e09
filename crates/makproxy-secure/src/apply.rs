//! `apply FILE --deposit-dir DIR`: verifies a return bundle (trusted online key, bound
//! to a bundle this site issued, unexpired, not applied before), records every answer
//! in one ledger transaction, then writes per-machine deposit files. `--reissue`
//! writes deposit files for products whose CID is already on hand (reimaged machines)
//! without a trip across the gap.
//!
//! Deposit files are derived from the ledger, so writing them again (a second apply of
//! the same return, or after a crash between commit and files) gives the same bytes.
//! They are replaced atomically but not fsynced one by one: the ledger commit is the
//! durable step, and after a power loss a re-run of `apply` writes them again.

use crate::ledger::{self, state};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{self, Kind, Limits, ReturnRecord};
use makproxy_core::keys::Home;
use makproxy_core::sanitize::escape;
use makproxy_core::{fsutil, Code};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;
use std::path::Path;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub cids: u64,
    pub failed: u64,
    pub iid_changed: u64,
    pub already_answered: u64,
    pub rejected: u64,
    /// Records the online side could not settle (not sent, or uncertain): they stay
    /// pending, and a later return for the same request may answer them.
    #[serde(default)]
    pub pending: u64,
    /// Simulated CIDs replaced by real ones.
    #[serde(default)]
    pub superseded: u64,
}

impl Summary {
    fn human(&self) -> String {
        format!(
            "{} CID(s) ({} replacing simulated ones), {} failed online, {} left pending (not sent or uncertain), {} stale (IID changed), {} already answered, {} rejected",
            self.cids, self.superseded, self.failed, self.pending, self.iid_changed, self.already_answered, self.rejected
        )
    }
}

/// What `bundle_records.answered` holds besides 0 (nothing yet): a real CID, a
/// simulated CID. Refusals do not count as answers: a later return may still bring a CID.
mod answered {
    pub const REAL: i64 = 1;
    pub const SIMULATED: i64 = 2;
}

/// Failure codes that say the online side did not settle the record: it stays pending.
fn unsettled(code: &str) -> bool {
    code == Code::BkdNoResponse.as_str() || code == Code::BkdUncertain.as_str()
}

#[derive(Debug, serde::Serialize)]
struct Note {
    handle: u64,
    code: String,
    detail: String,
}

pub fn run(
    out: &Output,
    home: &Home,
    conn: &mut Connection,
    file: &Path,
    deposit_dir: &Path,
    dry_run: bool,
) -> Result<Exit, CliError> {
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    let now = makproxy_cli::now();
    let at = bundle::rfc3339(now);
    let trusted = home.trusted()?;
    let mut v = bundle::open(file, Kind::Return, &trusted, now, &Limits::default())?;
    let m = v.manifest.clone();
    let answers = m.answers.clone().expect("checked by the reader");
    let backend = m.backend.clone().expect("checked by the reader");

    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    if let Some((applied_at, summary)) = tx
        .query_row(
            "SELECT applied_at, summary FROM returns WHERE bundle_id = ?1",
            params![m.bundle_id],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()
        .map_err(db)?
    {
        drop(tx);
        let files = if dry_run {
            0
        } else {
            write_deposit_files(conn, deposit_dir, Some(&answers.bundle_id))?
        };
        let earlier: Summary = serde_json::from_str(&summary).unwrap_or_default();
        out.json(&json!({"already_applied": true, "applied_at": applied_at, "summary": earlier, "deposit_files_rewritten": files}));
        out.line(format!("This return was already applied at {applied_at}; the ledger is unchanged. Earlier result: {}.", earlier.human()));
        if files > 0 {
            out.line(format!(
                "Deposit files for its machines were written again ({files}), identical to before."
            ));
        }
        return Ok(Exit::Ok);
    }
    let issued: Option<String> = tx
        .query_row(
            "SELECT manifest_sha256 FROM bundles WHERE bundle_id = ?1",
            params![answers.bundle_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    match issued {
        Some(sha) if sha == answers.manifest_sha256 && answers.site == home.site => {}
        Some(_) => return Err(CliError::rejected(Code::AplNotIssued, format!("return claims to answer bundle {} but its manifest hash or site ({}) differs from what this site issued", answers.bundle_id, escape(&answers.site)))),
        None => {
            return Err(CliError::rejected(Code::AplNotIssued, format!("return answers bundle {} of site {}, which this site ({}) did not issue", answers.bundle_id, escape(&answers.site), home.site))
                .hint("apply it at the site that packed the request"))
        }
    }

    let mut s = Summary::default();
    let mut notes: Vec<Note> = Vec::new();
    let res: Result<(), CliError> = v.records(|r: ReturnRecord| {
        let row: Option<(i64, String, i64)> = tx
            .query_row("SELECT product_id, iid, answered FROM bundle_records WHERE bundle_id = ?1 AND handle = ?2", params![answers.bundle_id, r.handle as i64], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))
            .optional()
            .map_err(db)?;
        let Some((pid, packed_iid, answered)) = row else {
            s.rejected += 1;
            notes.push(Note { handle: r.handle, code: Code::AplUnknownHandle.as_str().into(), detail: "the answered bundle has no such record".into() });
            return Ok(());
        };
        if packed_iid != r.installation_id.digits() {
            s.rejected += 1;
            notes.push(Note { handle: r.handle, code: Code::AplIidMismatch.as_str().into(), detail: "result's IID differs from the request record; ignored".into() });
            return Ok(());
        }
        if r.simulated != backend.simulated {
            s.rejected += 1;
            notes.push(Note { handle: r.handle, code: Code::AplIidMismatch.as_str().into(), detail: "record's simulated flag contradicts the return's signed backend; ignored".into() });
            return Ok(());
        }
        // A real CID is final; a simulated one gives way only to a real CID.
        let supersedes = answered == answered::SIMULATED && r.confirmation_id.is_some() && !r.simulated;
        if answered == answered::REAL || (answered == answered::SIMULATED && !supersedes) {
            s.already_answered += 1;
            return Ok(());
        }
        if let Some(f) = r.failure.as_ref().filter(|f| unsettled(&f.code)) {
            s.pending += 1;
            notes.push(Note { handle: r.handle, code: f.code.clone(), detail: "not settled online; left pending for a later return".into() });
            return Ok(());
        }
        if r.confirmation_id.is_some() {
            let now_answered = if r.simulated { answered::SIMULATED } else { answered::REAL };
            tx.execute("UPDATE bundle_records SET answered = ?3 WHERE bundle_id = ?1 AND handle = ?2", params![answers.bundle_id, r.handle as i64, now_answered]).map_err(db)?;
        }
        let (host, aid, cur_iid, cur_state, cur_sim): (String, String, Option<String>, String, bool) =
            tx.query_row("SELECT host, activation_id, iid, state, cid_simulated FROM products WHERE id = ?1", params![pid], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?, x.get(4)?))).map_err(db)?;
        if let Some(cid) = &r.confirmation_id {
            // Keep every CID obtained, keyed by the IID it answers, even when not used
            // now; a simulated CID never replaces a real one.
            tx.execute(
                "INSERT INTO cids(host, activation_id, iid, cid, simulated, return_bundle, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(host, activation_id, iid) DO UPDATE SET cid = excluded.cid, simulated = excluded.simulated, return_bundle = excluded.return_bundle, at = excluded.at
                 WHERE cids.simulated = 1 OR excluded.simulated = 0",
                params![host, aid, packed_iid, cid.digits(), r.simulated, m.bundle_id, at],
            )
            .map_err(db)?;
        }
        if cur_iid.as_deref() != Some(packed_iid.as_str()) {
            s.iid_changed += 1;
            notes.push(Note { handle: r.handle, code: Code::AplIidChanged.as_str().into(), detail: format!("{} {}: IID changed since packing; CID kept on record but not deposited", host, aid) });
            ledger::history(&tx, pid, &at, "answer-stale", "IID changed since packing").map_err(db)?;
            return Ok(());
        }
        let replacing = supersedes && cur_state == state::CID_RECEIVED && cur_sim;
        if !replacing && ![state::PACKED, state::QUEUED, state::FAILED].contains(&cur_state.as_str()) {
            s.already_answered += 1;
            notes.push(Note { handle: r.handle, code: Code::AplNothingPending.as_str().into(), detail: format!("{host} {aid} is {cur_state}; answer recorded, state kept") });
            return Ok(());
        }
        if replacing {
            s.superseded += 1;
        }
        match (&r.confirmation_id, &r.failure) {
            (Some(cid), _) => {
                s.cids += 1;
                tx.execute(
                    "UPDATE product_status SET state = ?2, cid = ?3, cid_simulated = ?4, reason_code = NULL, reason = NULL, updated_at = ?5 WHERE product_id = ?1",
                    params![pid, state::CID_RECEIVED, cid.digits(), r.simulated, at],
                )
                .map_err(db)?;
                ledger::history(&tx, pid, &at, "cid-received", &format!("return {}{}", m.bundle_id, if r.simulated { " (SIMULATED)" } else { "" })).map_err(db)?;
            }
            (None, Some(f)) => {
                s.failed += 1;
                let reason = match &f.service_code {
                    Some(sc) => format!("{sc}: {}", f.message),
                    None => f.message.clone(),
                };
                tx.execute("UPDATE product_status SET state = ?2, reason_code = ?3, reason = ?4, updated_at = ?5 WHERE product_id = ?1", params![pid, state::FAILED, f.code, reason, at]).map_err(db)?;
                ledger::history(&tx, pid, &at, "failed-online", &format!("{}: {reason}", f.code)).map_err(db)?;
            }
            (None, None) => unreachable!("checked by the reader"),
        }
        Ok(())
    });
    res?;
    if dry_run {
        drop(tx);
        out.json(&json!({"dry_run": true, "summary": s, "notes": notes}));
        out.line(format!(
            "Dry run: would record {} CID(s) and {} failure(s); nothing changed.",
            s.cids, s.failed
        ));
        return Ok(Exit::Ok);
    }
    tx.execute(
        "INSERT INTO returns(bundle_id, answers, signer, backend, simulated, applied_at, summary) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![m.bundle_id, answers.bundle_id, v.signer.name, backend.name, backend.simulated, at, serde_json::to_string(&s).expect("serialisable")],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    let files = write_deposit_files(conn, deposit_dir, Some(&answers.bundle_id))?;

    for n in &notes {
        eprintln!("handle {}: [{}] {}", n.handle, n.code, escape(&n.detail));
    }
    let pending: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM bundle_records b JOIN product_status p ON p.product_id = b.product_id
             WHERE b.bundle_id = ?1 AND b.answered = 0 AND p.state = 'packed'",
            params![answers.bundle_id],
            |r| r.get(0),
        )
        .map_err(db)?;
    out.json(&json!({"return_bundle": m.bundle_id, "answers": answers.bundle_id, "signer": v.signer.name, "backend": backend, "summary": s, "deposit_files": files, "still_pending": pending, "notes": notes}));
    if backend.simulated {
        out.line("WARNING: this return was produced by the SIMULATOR backend. Its CIDs will not activate anything.");
    }
    out.line(format!(
        "Applied return from {:?} ({} backend): {}; {} deposit file(s) in {}; {} record(s) of the request still pending.",
        v.signer.name, escape(&backend.name), s.human(), files, escape(&deposit_dir.display().to_string()), pending
    ));
    Ok(if s.failed + s.rejected + s.iid_changed + s.pending > 0 {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

/// `apply --reissue`: deposit files for products whose CID is already on hand.
pub fn reissue(
    out: &Output,
    conn: &mut Connection,
    deposit_dir: &Path,
    dry_run: bool,
) -> Result<Exit, CliError> {
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    let at = bundle::rfc3339(makproxy_cli::now());
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let n: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM products WHERE state = ?1",
            params![state::CID_ON_HAND],
            |r| r.get(0),
        )
        .map_err(db)?;
    if dry_run || n == 0 {
        out.json(&json!({"dry_run": dry_run, "reissue": n}));
        out.line(format!(
            "{} product(s) have a CID on hand{}.",
            n,
            if dry_run {
                "; dry run, nothing written"
            } else {
                ""
            }
        ));
        return Ok(Exit::Ok);
    }
    tx.execute("INSERT INTO history(product_id, at, event, detail) SELECT id, ?1, 'reissued', 'CID from the ledger; no activation spent' FROM products WHERE state = ?2", params![at, state::CID_ON_HAND]).map_err(db)?;
    tx.execute(
        "UPDATE product_status SET
            cid = (SELECT c.cid FROM cids c JOIN product_facts f ON c.host = f.host AND c.activation_id = f.activation_id AND c.iid = f.iid WHERE f.id = product_status.product_id),
            cid_simulated = (SELECT c.simulated FROM cids c JOIN product_facts f ON c.host = f.host AND c.activation_id = f.activation_id AND c.iid = f.iid WHERE f.id = product_status.product_id),
            state = ?2, reason_code = NULL, reason = 'reissued from the ledger; no activation spent', updated_at = ?3 WHERE state = ?1",
        params![state::CID_ON_HAND, state::CID_RECEIVED, at],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    let files = write_deposit_files(conn, deposit_dir, None)?;
    out.json(&json!({"reissued": n, "deposit_files": files}));
    out.line(format!("Reissued {n} stored CID(s) without a new activation; {files} deposit file(s) written to {}.", escape(&deposit_dir.display().to_string())));
    Ok(Exit::Ok)
}

struct DepositRow {
    activation_id: String,
    application: String,
    wmi_class: String,
    product: Option<String>,
    iid: String,
    cid: String,
    simulated: bool,
}

/// Writes `<HOST>.json` and `<HOST>.cmd` for every host with products awaiting deposit
/// (restricted to the hosts of one request bundle when given).
pub fn write_deposit_files(
    conn: &Connection,
    dir: &Path,
    bundle_id: Option<&str>,
) -> Result<u64, CliError> {
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir.display(), e))?;
    let mut hosts = conn
        .prepare(
            "SELECT DISTINCT p.host FROM products p WHERE p.state = 'cid_received'
             AND (?1 IS NULL OR p.id IN (SELECT product_id FROM bundle_records WHERE bundle_id = ?1)) ORDER BY p.host",
        )
        .map_err(db)?;
    let mut per_host = conn
        .prepare("SELECT activation_id, application, wmi_class, product, iid, cid, cid_simulated FROM products WHERE host = ?1 AND state = 'cid_received' ORDER BY activation_id")
        .map_err(db)?;
    let mut rows = hosts.query(params![bundle_id]).map_err(db)?;
    let mut n = 0u64;
    while let Some(r) = rows.next().map_err(db)? {
        let host: String = r.get(0).map_err(db)?;
        // Host names were validated at collect (letters, digits, - _ .), so they are safe file names.
        makproxy_core::ids::HostName::parse(&host).map_err(|_| {
            CliError::new(
                Exit::Error,
                None,
                format!("ledger holds an invalid host name {:?}", escape(&host)),
            )
        })?;
        let items: Vec<DepositRow> = per_host
            .query_map(params![host], |x| {
                Ok(DepositRow {
                    activation_id: x.get(0)?,
                    application: x.get(1)?,
                    wmi_class: x.get(2)?,
                    product: x.get(3)?,
                    iid: x.get(4)?,
                    cid: x.get(5)?,
                    simulated: x.get(6)?,
                })
            })
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        let (json_bytes, cmd_bytes) = render(&host, &items);
        let jp = dir.join(format!("{host}.json"));
        let cp = dir.join(format!("{host}.cmd"));
        fsutil::write_derived(&jp, &json_bytes).map_err(|e| CliError::io(jp.display(), e))?;
        fsutil::write_derived(&cp, &cmd_bytes).map_err(|e| CliError::io(cp.display(), e))?;
        n += 1;
    }
    fsutil::sync_dir(dir).map_err(|e| CliError::io(dir.display(), e))?;
    Ok(n)
}

/// The deposit file (schema makproxy-deposit/1) and the equivalent cmd script.
fn render(host: &str, items: &[DepositRow]) -> (Vec<u8>, Vec<u8>) {
    let simulated = items.iter().any(|i| i.simulated);
    let doc = json!({
        "schema": "makproxy-deposit/1",
        "host": host,
        "simulated": simulated,
        "products": items.iter().map(|i| json!({
            "activation_id": i.activation_id,
            "application": i.application,
            "wmi_class": i.wmi_class,
            "product": i.product,
            "installation_id": i.iid,
            "confirmation_id": i.cid,
            "simulated": i.simulated,
        })).collect::<Vec<_>>(),
    });
    let mut j = serde_json::to_vec_pretty(&doc).expect("serialisable");
    j.push(b'\n');
    let mut c = String::new();
    c.push_str("@echo off\r\n");
    c.push_str(&format!(
        "REM makproxy deposit script for {host}. Run as administrator on {host}.\r\n"
    ));
    c.push_str("REM Generated by makproxy-secure apply; the agent script Deposit-ConfirmationId.ps1 reads the .json twin.\r\n");
    if simulated {
        c.push_str("REM WARNING: SIMULATED confirmation IDs. They will NOT activate anything.\r\n");
    }
    c.push_str("setlocal\r\n");
    if items
        .iter()
        .any(|i| i.wmi_class == "OfficeSoftwareProtectionProduct")
    {
        c.push_str("set OSPP=\r\n");
        c.push_str("for %%d in (\"%ProgramFiles%\\Microsoft Office\\Office14\" \"%ProgramFiles(x86)%\\Microsoft Office\\Office14\" \"%ProgramFiles%\\Microsoft Office\\Office15\" \"%ProgramFiles(x86)%\\Microsoft Office\\Office15\") do if exist \"%%~d\\ospp.vbs\" set OSPP=%%~d\\ospp.vbs\r\n");
    }
    for i in items {
        // Both values are digits and a GUID (validated): nothing here needs quoting.
        if i.wmi_class == "OfficeSoftwareProtectionProduct" {
            c.push_str(&format!(
                "cscript //nologo \"%OSPP%\" /actcid:{}\r\n",
                i.cid
            ));
        } else {
            c.push_str(&format!(
                "cscript //nologo %windir%\\System32\\slmgr.vbs /atp {} {}\r\n",
                i.cid, i.activation_id
            ));
        }
    }
    c.push_str("endlocal\r\n");
    (j, c.into_bytes())
}
