//! `collect DIR...`: walks drop folders, parses every machine-record and deposit-result
//! file, and records products in the ledger. Bad files and bad records are reported
//! (file, record, code, reason) and never stop the good ones. Changes are committed in
//! batches of whole files.
//!
//! Idempotent: a file whose content digest equals the one collected last time from its
//! path, or (a path never collected) from a file of the same name in another folder,
//! is skipped ("unchanged"), so re-running collect over the same folder, or the same
//! folder under another spelling of its path, changes nothing
//! and stale result files of a reimaged machine are never re-read. A deposit writes
//! its time into its result file, so a new deposit (after a reissue) is new content. A file may only speak for the host it is named
//! after (`<HOST>.json`, `<HOST>.result.json`); CSV inventories are the operator's own
//! imports and may name many hosts. Files are opened without following links or
//! blocking, and must be regular files on the opened handle.

use crate::ledger::{after_collect, Facts, Ledger, ProductState, Seen, Tx};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::channel::{Channel, Policy};
use makproxy_core::records::{
    self, deposit_error_meaning, DepositResult, Format, Parsed, ProductRecord, RecordError, Skip,
};
use makproxy_core::sanitize::escape;
use makproxy_core::Code;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Files committed per transaction.
const BATCH: usize = 500;

#[derive(Debug, Default, serde::Serialize)]
/// What one collect did (`--json` prints it as `summary`).
pub struct Summary {
    /// Files looked at.
    pub files: u64,
    /// Files skipped because their content is what the last collect read.
    pub files_unchanged: u64,
    /// Files refused as a whole.
    pub files_rejected: u64,
    /// Products seen for the first time.
    pub new: u64,
    /// Products whose record changed.
    pub updated: u64,
    /// Products reported as before.
    pub unchanged: u64,
    /// Products now waiting to be packed.
    pub queued: u64,
    /// Products that need no MAK proxy activation.
    pub skipped: u64,
    /// Products whose IID already has a stored CID (apply --reissue).
    pub cid_on_hand: u64,
    /// Records refused one by one.
    pub rejected: u64,
    /// Deposit results saying Windows accepted the CID.
    pub deposits_activated: u64,
    /// Deposit results saying Windows refused it.
    pub deposits_failed: u64,
}

#[derive(Debug, serde::Serialize)]
/// A refused file or record, as collect reports it.
pub struct Problem {
    /// The file.
    pub file: String,
    /// 1-based record number, when the problem is one record.
    pub record: Option<usize>,
    /// The stable code.
    pub code: String,
    /// What went wrong.
    pub detail: String,
}

/// `collect`.
#[derive(Debug, serde::Serialize)]
pub struct Collected {
    /// What it did.
    pub summary: Summary,
    /// The channels this site proxy-activates (after `--channels`, if given).
    pub channels: String,
    /// What `--channels` changed, when it changed the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels_changed: Option<PolicyChange>,
    /// Every refused file and record (also printed to stderr as they are found).
    pub problems: Vec<Problem>,
}

/// A change of the site's channel policy.
#[derive(Debug, serde::Serialize)]
pub struct PolicyChange {
    /// The channels before.
    pub from: String,
    /// The channels now.
    pub to: String,
    /// Products queued or skipped again by the change.
    pub moved: u64,
}

impl std::fmt::Display for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.channels_changed {
            writeln!(
                f,
                "Channels proxy-activated at this site: {} (were {}); {} product(s) queued or skipped again.",
                c.to, c.from, c.moved
            )?;
        }
        let s = &self.summary;
        write!(
            f,
            "Collected {} file(s) ({} unchanged since the last collect): {} new, {} updated, {} unchanged; {} queued, {} CID on hand, {} skipped; {} record(s) and {} file(s) rejected; deposits: {} activated, {} failed.",
            s.files, s.files_unchanged, s.new, s.updated, s.unchanged, s.queued, s.cid_on_hand, s.skipped, s.rejected, s.files_rejected, s.deposits_activated, s.deposits_failed
        )
    }
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
    !name.starts_with('.')
        && !name.starts_with('~')
        && matches!(ext.as_str(), "json" | "csv" | "txt")
}

fn read_limited(path: &Path) -> Result<Vec<u8>, RecordError> {
    makproxy_core::fsutil::read_regular(path, records::MAX_FILE).map_err(|e| RecordError {
        code: if e.kind() == std::io::ErrorKind::InvalidData {
            Code::RecTooLarge
        } else {
            Code::RecUnreadable
        },
        record: None,
        detail: e.to_string(),
    })
}

/// The host a drop file may speak for, from its name: `<HOST>.json` or
/// `<HOST>.result.json` (compared without regard to case, as Windows names are).
fn claimed_host(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let lower = name.to_ascii_lowercase();
    let stem_len = lower
        .strip_suffix(".result.json")
        .or_else(|| lower.strip_suffix(".json"))
        .or_else(|| lower.strip_suffix(".txt"))
        .map_or(name.len(), str::len);
    name[..stem_len].to_ascii_uppercase()
}

fn misnamed(record: usize, host: &str, path: &Path) -> RecordError {
    RecordError {
        code: Code::RecHostFileName,
        record: Some(record),
        detail: format!(
            "claims host {host} but the file is named {}; a machine's file must be named after it",
            escape(
                &path
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            )
        ),
    }
}

/// Reads every drop file under `dirs` (eight levels deep) into the ledger, reporting and skipping bad files and records.
///
/// `channels` (from `--channels`) replaces the site's channel policy first, moving the
/// products it decides (see [`Tx::set_policy`]); it is kept in the home for later runs.
pub fn run(
    out: &Output,
    ledger: &mut Ledger,
    dirs: &[PathBuf],
    channels: Option<Policy>,
) -> Result<Exit, CliError> {
    let now = makproxy_core::bundle::rfc3339(makproxy_cli::now());
    let mut summary = Summary::default();
    let mut problems: Vec<Problem> = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(CliError::new(
                Exit::Usage,
                Some(Code::RecUnreadable),
                format!("{} is not a folder", escape(&dir.display().to_string())),
            )
            .hint("give the drop folder the agents write to (a UNC path or a local folder)"));
        }
    }
    let db = |e: rusqlite::Error| CliError::io("ledger", e);
    let before = ledger.policy().map_err(db)?;
    let policy = channels.unwrap_or(before);
    let mut channels_changed = None;
    if policy != before {
        let tx = ledger.begin().map_err(db)?;
        let moved = tx.set_policy(policy, &now).map_err(db)?;
        tx.commit().map_err(db)?;
        channels_changed = Some(PolicyChange {
            from: before.as_string(),
            to: policy.as_string(),
            moved,
        });
    }
    let bar = out.progress(0, "collect");
    let mut tx = ledger.begin().map_err(db)?;
    let mut in_batch = 0usize;
    for dir in dirs {
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
                        code: Code::RecUnreadable.as_str().into(),
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            if entry.file_type().is_dir() || !is_candidate(entry.path()) {
                continue;
            }
            if !entry.file_type().is_file() {
                // A link, FIFO or device named like a drop file: never followed or read.
                summary.files += 1;
                summary.files_rejected += 1;
                let e = RecordError {
                    code: Code::RecUnreadable,
                    record: None,
                    detail: "not a regular file (link, FIFO or device); not followed".into(),
                };
                record_problem(
                    &tx,
                    &mut problems,
                    &entry.path().display().to_string(),
                    &e,
                    &now,
                )
                .map_err(db)?;
                continue;
            }
            summary.files += 1;
            bar.inc(1);
            file(&tx, entry.path(), policy, &now, &mut summary, &mut problems).map_err(db)?;
            in_batch += 1;
            if in_batch >= BATCH {
                tx.commit().map_err(db)?;
                tx = ledger.begin().map_err(db)?;
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
    let went_in = summary.new
        + summary.updated
        + summary.unchanged
        + summary.files_unchanged
        + summary.deposits_activated
        + summary.deposits_failed;
    let exit = Exit::outcome(went_in, problems.len() as u64);
    out.report(&Collected {
        summary,
        channels: policy.as_string(),
        channels_changed,
        problems,
    });
    Ok(exit)
}

/// Collects one file: skipped when unchanged, else parsed and every record applied.
fn file(
    tx: &Tx,
    path: &Path,
    policy: Policy,
    now: &str,
    summary: &mut Summary,
    problems: &mut Vec<Problem>,
) -> rusqlite::Result<()> {
    let shown = path.display().to_string();
    let bytes = match read_limited(path) {
        Ok(b) => b,
        Err(e) => {
            summary.files_rejected += 1;
            return record_problem(tx, problems, &shown, &e, now);
        }
    };
    let digest = makproxy_core::bundle::sha256_hex(&bytes);
    if tx.already_collected(&shown, &digest)? {
        summary.files_unchanged += 1;
        return Ok(());
    }
    // The file's current problems replace whatever an earlier collect recorded for it.
    tx.collected(&shown, &digest, now)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let claimed = claimed_host(path);
    // Saved console output may be in the console's OEM code page.
    let txt = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    let decoded = if txt {
        records::decode_console_text(&bytes)
    } else {
        records::decode_text(&bytes)
    };
    let parsed = decoded.and_then(|t| records::parse(&t, stem));
    match parsed {
        Err(e) => {
            summary.files_rejected += 1;
            record_problem(tx, problems, &shown, &e, now)?;
        }
        Ok((format, Parsed::Products(list))) => {
            let bound = format != Format::Csv;
            let mut seen = HashSet::new();
            let mut forgot: HashSet<String> = HashSet::new();
            for (i, r) in list.into_iter().enumerate() {
                let r = r.and_then(|p| {
                    if bound && p.host.as_str() != claimed {
                        Err(misnamed(i + 1, p.host.as_str(), path))
                    } else if seen.insert((p.host.clone(), p.activation_id.clone())) {
                        Ok(p)
                    } else {
                        Err(RecordError {
                            code: Code::RecDuplicateProduct,
                            record: Some(i + 1),
                            detail: format!(
                                "host {} and activation ID {} already appear earlier in this file",
                                p.host, p.activation_id
                            ),
                        })
                    }
                });
                match r {
                    Err(e) => record_problem(tx, problems, &shown, &e, now)?,
                    Ok(p) => {
                        if !p.is_no_key_marker() && !forgot.contains(p.host.as_str()) {
                            tx.forget_no_key_marker(p.host.as_str(), ProductRecord::NO_KEY_MARKER)?;
                            forgot.insert(p.host.as_str().to_string());
                        }
                        let (change, st) = upsert(tx, &p, policy, &shown, now)?;
                        match change {
                            Change::New => summary.new += 1,
                            Change::Updated => summary.updated += 1,
                            Change::Unchanged => summary.unchanged += 1,
                        }
                        match st {
                            ProductState::Queued => summary.queued += 1,
                            ProductState::Skipped => summary.skipped += 1,
                            ProductState::CidOnHand => summary.cid_on_hand += 1,
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok((_, Parsed::Deposits(list))) => {
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".result.json"));
            for (i, r) in list.into_iter().enumerate() {
                let r = r.and_then(|d| {
                    if !named || d.host.as_str() != claimed {
                        Err(misnamed(i + 1, d.host.as_str(), path))
                    } else {
                        Ok(d)
                    }
                });
                let r = match r {
                    Ok(d) => deposit(tx, &d, i + 1, now)?,
                    Err(e) => Err(e),
                };
                match r {
                    Err(e) => record_problem(tx, problems, &shown, &e, now)?,
                    Ok(Some(true)) => summary.deposits_activated += 1,
                    Ok(Some(false)) => summary.deposits_failed += 1,
                    Ok(None) => {}
                }
            }
        }
    }
    Ok(())
}

fn record_problem(
    tx: &Tx,
    problems: &mut Vec<Problem>,
    file: &str,
    e: &RecordError,
    now: &str,
) -> rusqlite::Result<()> {
    tx.reject(file, e.record.unwrap_or(0), e.code.as_str(), &e.detail, now)?;
    problems.push(Problem {
        file: file.to_string(),
        record: e.record,
        code: e.code.as_str().to_string(),
        detail: e.detail.clone(),
    });
    Ok(())
}

/// Records one product; returns what changed and the resulting state.
fn upsert(
    tx: &Tx,
    p: &ProductRecord,
    policy: Policy,
    file: &str,
    now: &str,
) -> rusqlite::Result<(Change, ProductState)> {
    let existing = tx.product(p.host.as_str(), p.activation_id.as_str())?;
    let iid = p.iid.as_ref().map(|i| i.digits().to_string());
    let epid = p.epid.as_ref().map(|e| e.as_str().to_string());
    let status = p.license_status.map(|s| s as i64);
    let facts = Facts {
        host: p.host.as_str(),
        activation_id: p.activation_id.as_str(),
        application: p.application.label(),
        wmi_class: p.wmi_class,
        product: p.name.as_deref(),
        description: p.description.as_deref(),
        partial_key: p.partial_key.as_deref(),
        epid: epid.as_deref(),
        iid: iid.as_deref(),
        license_status: status,
        channel: p.channel,
        file,
    };
    let skip = p.skip(policy);
    let seen = match skip {
        Some(Skip::Licensed) => Seen::Licensed,
        Some(_) => Seen::Skip,
        None => match &iid {
            Some(i) if tx.has_cid(p.host.as_str(), p.activation_id.as_str(), i)? => Seen::CidOnHand,
            _ => Seen::NeedsActivation,
        },
    };
    let current = existing.as_ref().map(|e| (e.state, e.iid == iid));
    let next = after_collect(current, seen);
    let (reason_code, reason) = match (next, skip) {
        (ProductState::Skipped, Some(s)) => (Some(s.id()), Some(s.reason())),
        (ProductState::CidOnHand, _) => (None, Some("the ledger holds a CID for this IID; `apply --reissue` deposits it without a new activation")),
        _ => (None, None),
    };
    let Some(e) = existing else {
        tx.insert_product(&facts, next, reason_code, reason, now)?;
        return Ok((Change::New, next));
    };
    let same = e.iid == iid
        && e.epid == epid
        && e.license_status == status
        && e.partial_key == p.partial_key
        && e.description == p.description
        && e.product == p.name
        && e.channel.as_deref() == p.channel.map(Channel::as_str);
    if same && next == e.state {
        return Ok((Change::Unchanged, e.state));
    }
    let (event, detail) = if e.iid != iid {
        (
            "superseded",
            format!(
                "IID changed ({} -> {}); {next}",
                e.iid.as_deref().unwrap_or("none"),
                iid.as_deref().unwrap_or("none")
            ),
        )
    } else {
        ("updated", format!("record changed; {next}"))
    };
    tx.update_product(
        e.id,
        &facts,
        e.state,
        next,
        reason_code,
        reason,
        event,
        &detail,
        now,
    )?;
    Ok((Change::Updated, next))
}

/// Applies one deposit result: Some(true) activated, Some(false) failed, None no move
/// from the product's state; Err a record error. (Read once by the file's content
/// digest: a deposit writes its time into the file, so a new deposit is new content.)
fn deposit(
    tx: &Tx,
    d: &DepositResult,
    n: usize,
    now: &str,
) -> rusqlite::Result<Result<Option<bool>, RecordError>> {
    let mismatch = |detail: String| {
        Ok(Err(RecordError {
            code: Code::AplIidMismatch,
            record: Some(n),
            detail,
        }))
    };
    let Some(crate::ledger::DepositTarget {
        id,
        iid,
        cid,
        state,
    }) = tx.deposit_target(d.host.as_str(), d.activation_id.as_str())?
    else {
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
    let failure = (!d.activated).then(|| {
        let code = d.error_code.clone().unwrap_or_else(|| "unknown".into());
        let meaning = deposit_error_meaning(&code);
        (code, meaning)
    });
    let moved = tx.deposit_result(
        id,
        state,
        d.license_status.map(|s| s as i64),
        failure.as_ref().map(|(c, m)| (c.as_str(), *m)),
        now,
    )?;
    Ok(Ok(moved.then_some(d.activated)))
}
