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
//!
//! A product's facts are ordered by the machine's own time (agent `collected`, result
//! `time`): a report or result older than what the ledger knows of the product changes
//! nothing (MP-REC-016), one dated far ahead is refused (MP-REC-017). Deposit results
//! are matched against the CID the ledger gave ([`settle`]); a failed deposit is a
//! failure of the run (MP-REC-018, exit 4/5); a result naming a CID the ledger does not
//! know yet is kept (MP-REC-015) and matched later ([`match_kept`], also run by apply).
//!
//! Files are read, hashed and parsed on `READERS` threads ahead of the ledger's work
//! and handed to it in the walk's order ([`makproxy_core::ordered`]); what waits is
//! bounded by the files' size (`READ_AHEAD_BYTES` of files read ahead, plus one file
//! per reader; a file waits as its parsed records, whose size follows the file's), so
//! a drop-share writer who fills the share with files at the size limit cannot make
//! collect hold more than that many files at once. Unchanged files are read and parsed
//! too before the ledger says they are unchanged: on a re-run that work is the readers'.

use crate::ledger::{
    after_collect, Change, Facts, History, Ledger, ProductState, ResultRow, Seen, Tx,
};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::channel::Policy;
use makproxy_core::records::{
    self, deposit_error_meaning, DepositResult, Format, MachineTime, Parsed, ProductRecord,
    RecordError, Skip,
};
use makproxy_core::sanitize::escape;
use makproxy_core::Code;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Files committed per transaction.
const BATCH: usize = 500;
/// Threads reading and parsing drop files ahead of the ledger's work: opening many
/// small files waits on the file system, so more readers than cores keep it busy.
const READERS: usize = 4;
/// What files read ahead may hold at most, beyond the one the ledger works on (a
/// drop file is at most `records::MAX_FILE`, 16 MiB).
const READ_AHEAD_BYTES: u64 = 32 << 20;

/// One entry of the walk, as it travels from the walking thread (`F`: the file's path)
/// through a reader (`F`: the file read and parsed) to the ledger's.
enum Walked<F> {
    /// A folder that could not be listed.
    Unreadable { dir: String, detail: String },
    /// Named like a drop file, not a regular file.
    NotRegular(PathBuf),
    /// A drop file.
    File(F),
}

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
    /// Deposit results saying Windows refused it (each also listed as a problem,
    /// MP-REC-018: collect exits 4, or 5 when nothing else went in).
    pub deposits_failed: u64,
    /// Reports and results older than what the ledger knows of their product, by the
    /// machine's own time: ignored (MP-REC-016).
    pub stale: u64,
    /// Deposit results naming a CID the ledger does not know yet: kept (MP-REC-015).
    pub deposits_kept: u64,
    /// Results kept earlier and matched now.
    pub deposits_matched: u64,
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
    /// Every refused file and record, and every failed deposit (also printed to
    /// stderr).
    pub problems: Vec<Problem>,
    /// What was kept for later or ignored as older, with its code (also printed to
    /// stderr); not failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Problem>,
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
        )?;
        if s.stale + s.deposits_kept + s.deposits_matched > 0 {
            write!(
                f,
                " {} older report(s) ignored; {} deposit result(s) kept until their CID is known, {} kept earlier matched now.",
                s.stale, s.deposits_kept, s.deposits_matched
            )?;
        }
        Ok(())
    }
}

/// What one collect pass carries from file to file.
struct Pass {
    policy: Policy,
    /// This computer's time (RFC 3339), for the ledger's rows.
    now: String,
    /// This computer's clock, which machine times may not run far ahead of.
    clock: time::OffsetDateTime,
    summary: Summary,
    problems: Vec<Problem>,
    notes: Vec<Problem>,
}

impl Pass {
    fn note(&mut self, file: &str, record: Option<usize>, code: Code, detail: String) {
        self.notes.push(Problem {
            file: file.to_string(),
            record,
            code: code.as_str().into(),
            detail,
        });
    }
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
/// Deposit results kept earlier are matched at the end ([`match_kept`]).
pub fn run(
    out: &Output,
    ledger: &mut Ledger,
    dirs: &[PathBuf],
    channels: Option<Policy>,
) -> Result<Exit, CliError> {
    let clock = makproxy_cli::now();
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
    let before = ledger.policy()?;
    let policy = channels.unwrap_or(before);
    let mut pass = Pass {
        policy,
        now: makproxy_core::bundle::rfc3339(clock),
        clock,
        summary: Summary::default(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut channels_changed = None;
    if policy != before {
        let tx = ledger.begin()?;
        let moved = tx.set_policy(policy, &pass.now)?;
        tx.commit()?;
        channels_changed = Some(PolicyChange {
            from: before.as_string(),
            to: policy.as_string(),
            moved,
        });
    }
    let bar = out.progress(0, "collect");
    // The walk (in name order) and the reading and parsing of files run on their own
    // threads, ahead of this one, which does the ledger's work in the walk's order.
    let walked = dirs.iter().flat_map(|dir| {
        walkdir::WalkDir::new(dir)
            .follow_links(false)
            .max_depth(8)
            .sort_by_file_name()
            .into_iter()
            .filter_map(move |entry| match entry {
                Err(e) => Some(Walked::Unreadable {
                    dir: dir.display().to_string(),
                    detail: e.to_string(),
                }),
                Ok(e) if e.file_type().is_dir() || !is_candidate(e.path()) => None,
                // A link, FIFO or device named like a drop file: never followed or read.
                Ok(e) if !e.file_type().is_file() => Some(Walked::NotRegular(e.into_path())),
                Ok(e) => Some(Walked::File(e.into_path())),
            })
    });
    let (clock, now) = (pass.clock, pass.now.clone());
    let work = |w: Walked<PathBuf>| match w {
        Walked::File(path) => {
            let (read, weight) = read_file(path, clock, &now);
            (Walked::File(read), weight)
        }
        Walked::Unreadable { dir, detail } => (Walked::Unreadable { dir, detail }, 0),
        Walked::NotRegular(path) => (Walked::NotRegular(path), 0),
    };
    let walk = |files: &mut makproxy_core::ordered::InOrder<'_, Walked<ReadFile>>| -> crate::ledger::Result<()> {
        let mut tx = ledger.begin()?;
        let mut in_batch = 0usize;
        for w in files {
            match w {
                Walked::Unreadable { dir, detail } => pass.problems.push(Problem {
                    file: dir,
                    record: None,
                    code: Code::RecUnreadable.as_str().into(),
                    detail,
                }),
                Walked::NotRegular(path) => {
                    pass.summary.files += 1;
                    pass.summary.files_rejected += 1;
                    let e = RecordError {
                        code: Code::RecUnreadable,
                        record: None,
                        detail: "not a regular file (link, FIFO or device); not followed".into(),
                    };
                    record_problem(&tx, &mut pass, &path.display().to_string(), &e)?;
                }
                Walked::File(read) => {
                    pass.summary.files += 1;
                    bar.inc(1);
                    file(&tx, read, &mut pass)?;
                    in_batch += 1;
                    if in_batch >= BATCH {
                        tx.commit()?;
                        tx = ledger.begin()?;
                        in_batch = 0;
                    }
                }
            }
        }
        let matched = match_kept(&tx, &pass.now)?;
        pass.summary.deposits_matched = matched.matched;
        pass.summary.deposits_activated += matched.activated;
        pass.summary.deposits_failed += matched.failed.len() as u64;
        pass.problems.extend(matched.failed);
        tx.commit()
    };
    makproxy_core::ordered::map_in_order(walked, READERS, READ_AHEAD_BYTES, work, walk)?;
    bar.finish_and_clear();
    let Pass {
        mut summary,
        problems,
        notes,
        ..
    } = pass;
    summary.rejected = problems
        .iter()
        .filter(|p| p.record.is_some() && p.code != Code::RecDepositFailed.as_str())
        .count() as u64;
    for p in problems.iter().chain(&notes) {
        let at = p.record.map(|r| format!(" record {r}")).unwrap_or_default();
        eprintln!(
            "{}{}: [{}] {}",
            escape(&p.file),
            at,
            p.code,
            escape(&p.detail)
        );
    }
    // A failed deposit is a failure of the run (exit 4, or 5 when nothing else went
    // in), so a scheduled collect shows it.
    let went_in = summary.new
        + summary.updated
        + summary.unchanged
        + summary.files_unchanged
        + summary.deposits_activated
        + summary.stale
        + summary.deposits_kept;
    let exit = Exit::outcome(went_in, problems.len() as u64);
    out.report(&Collected {
        summary,
        channels: policy.as_string(),
        channels_changed,
        problems,
        notes,
    });
    Ok(exit)
}

/// One drop file as a worker read it: its bytes' digest and what they parse to
/// (everything that needs no ledger, so it can run ahead of the ledger's work).
struct ReadFile {
    path: PathBuf,
    /// The digest and the parse, or why the file could not be read at all.
    content: Result<(String, ParsedFile), RecordError>,
}

type ParsedFile = Result<(Format, Parsed), RecordError>;

/// Reads, digests and parses one file (no ledger): run on `collect`'s reader threads.
/// The weight is the bytes read, which the parsed records are about the size of.
fn read_file(path: PathBuf, clock: time::OffsetDateTime, now: &str) -> (ReadFile, u64) {
    let bytes = match read_limited(&path) {
        Ok(b) => b,
        Err(e) => {
            return (
                ReadFile {
                    path,
                    content: Err(e),
                },
                0,
            )
        }
    };
    let weight = bytes.len() as u64;
    let digest = makproxy_core::bundle::sha256_hex(&bytes);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
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
    // A machine time far ahead of this clock would outrank every true report after it.
    let ahead = |t: Option<&MachineTime>| {
        t.filter(|t| t.is_ahead_of(clock)).map(|t| RecordError {
            code: Code::RecFutureTime,
            record: None,
            detail: format!(
                "dated {t}, more than a day after this computer's clock ({now}); the file is ignored"
            ),
        })
    };
    let parsed = parsed.and_then(|p| {
        let first = match &p.1 {
            Parsed::Products(l) => l.iter().flatten().find_map(|r| r.observed.as_ref()),
            Parsed::Deposits(l) => l.iter().flatten().find_map(|r| r.observed.as_ref()),
        };
        ahead(first).map_or(Ok(p), Err)
    });
    (
        ReadFile {
            path,
            content: Ok((digest, parsed)),
        },
        weight,
    )
}

/// Collects one file read by [`read_file`]: skipped when unchanged, else every record
/// applied.
fn file(tx: &Tx, read: ReadFile, pass: &mut Pass) -> crate::ledger::Result<()> {
    let path = read.path.as_path();
    let shown = path.display().to_string();
    let (digest, parsed) = match read.content {
        Ok(c) => c,
        Err(e) => {
            pass.summary.files_rejected += 1;
            return record_problem(tx, pass, &shown, &e);
        }
    };
    if tx.already_collected(&shown, &digest)? {
        pass.summary.files_unchanged += 1;
        return Ok(());
    }
    // The file's current problems replace whatever an earlier collect recorded for it.
    tx.collected(&shown, &digest, &pass.now)?;
    let claimed = claimed_host(path);
    match parsed {
        Err(e) => {
            pass.summary.files_rejected += 1;
            record_problem(tx, pass, &shown, &e)?;
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
                let p = match r {
                    Err(e) => {
                        record_problem(tx, pass, &shown, &e)?;
                        continue;
                    }
                    Ok(p) => p,
                };
                if !p.is_no_key_marker() && !forgot.contains(p.host.as_str()) {
                    tx.forget_no_key_marker(&p.host, ProductRecord::NO_KEY_MARKER)?;
                    forgot.insert(p.host.as_str().to_string());
                }
                let s = &mut pass.summary;
                let st = match upsert(tx, &p, pass.policy, &shown, &pass.now)? {
                    Upserted::New(st) => {
                        s.new += 1;
                        st
                    }
                    Upserted::Updated(st) => {
                        s.updated += 1;
                        st
                    }
                    Upserted::Unchanged(st) => {
                        s.unchanged += 1;
                        st
                    }
                    Upserted::Stale { known } => {
                        s.stale += 1;
                        let detail = format!(
                            "{} {}: written at {}, before what the ledger already knows of it ({known}); ignored",
                            p.host,
                            p.activation_id,
                            p.observed.as_ref().map_or("?", MachineTime::as_str)
                        );
                        pass.note(&shown, Some(i + 1), Code::RecStale, detail);
                        continue;
                    }
                };
                match st {
                    ProductState::Queued => s.queued += 1,
                    ProductState::Skipped => s.skipped += 1,
                    ProductState::CidOnHand => s.cid_on_hand += 1,
                    _ => {}
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
                match r {
                    Err(e) => record_problem(tx, pass, &shown, &e)?,
                    Ok(d) => {
                        let row = result_row(&shown, i + 1, &d);
                        let settled = settle(tx, &row, &pass.now)?;
                        report_settled(tx, pass, &row, settled)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn record_problem(
    tx: &Tx,
    pass: &mut Pass,
    file: &str,
    e: &RecordError,
) -> crate::ledger::Result<()> {
    tx.reject(
        file,
        e.record.unwrap_or(0),
        e.code.as_str(),
        &e.detail,
        &pass.now,
    )?;
    pass.problems.push(Problem {
        file: file.to_string(),
        record: e.record,
        code: e.code.as_str().to_string(),
        detail: e.detail.clone(),
    });
    Ok(())
}

/// What collect did with one product record.
enum Upserted {
    New(ProductState),
    Updated(ProductState),
    Unchanged(ProductState),
    /// Written before the newest report or result the ledger holds for the product
    /// (its machine time): nothing changed.
    Stale {
        known: String,
    },
}

/// Records one product; returns what changed and the resulting state.
fn upsert(
    tx: &Tx,
    p: &ProductRecord,
    policy: Policy,
    file: &str,
    now: &str,
) -> crate::ledger::Result<Upserted> {
    let existing = tx.product(&p.host, &p.activation_id)?;
    let observed = p.observed.as_ref().map(MachineTime::as_str);
    if let Some(known) = existing
        .as_ref()
        .and_then(|e| e.observed_at.clone())
        .filter(|k| observed.is_some_and(|o| o < k.as_str()))
    {
        return Ok(Upserted::Stale { known });
    }
    let (iid, epid) = (&p.iid, &p.epid);
    let status = p.license_status.map(|s| s as i64);
    let facts = Facts {
        host: &p.host,
        activation_id: &p.activation_id,
        application: p.application.label(),
        wmi_class: p.wmi_class,
        product: p.name.as_deref(),
        description: p.description.as_deref(),
        partial_key: p.partial_key.as_deref(),
        epid: epid.as_ref(),
        iid: iid.as_ref(),
        license_status: status,
        channel: p.channel,
        file,
    };
    let skip = p.skip(policy);
    let seen = match skip {
        Some(Skip::Licensed) => Seen::Licensed,
        Some(_) => Seen::Skip,
        None => match iid {
            Some(i) if tx.has_cid(&p.host, &p.activation_id, i)? => Seen::CidOnHand,
            _ => Seen::NeedsActivation,
        },
    };
    let current = existing.as_ref().map(|e| (e.state, e.iid == *iid));
    let next = after_collect(current, seen);
    let reason = match (next, skip) {
        (ProductState::Skipped, Some(s)) => (Some(s.id()), Some(s.reason())),
        (ProductState::CidOnHand, _) => (None, Some("the ledger holds a CID for this IID; `apply --reissue` deposits it without a new activation")),
        _ => (None, None),
    };
    let Some(e) = existing else {
        let (_, st) = tx.insert_product(&facts, seen, reason, observed, now)?;
        return Ok(Upserted::New(st));
    };
    let same = e.iid == *iid
        && e.epid == *epid
        && e.license_status == status
        && e.partial_key == p.partial_key
        && e.description == p.description
        && e.product == p.name
        && e.channel == p.channel;
    if same && next == e.state {
        // The same facts, reported again later, are still the machine's newest word.
        tx.observed(e.id, observed)?;
        return Ok(Upserted::Unchanged(e.state));
    }
    let history = if e.iid != *iid {
        History::Superseded {
            old: e.iid.as_ref().map(|i| i.digits()),
            new: iid.as_ref().map(|i| i.digits()),
        }
    } else {
        History::Updated
    };
    tx.record_facts(e.id, &facts)?;
    let change = Change::Seen {
        seen,
        same_iid: e.iid == *iid,
        reason,
        history,
    };
    let moved = tx
        .apply(e.id, e.state, &change, observed, now)?
        .expect("collect always decides");
    Ok(Upserted::Updated(moved.to))
}

/// A deposit result as the ledger compares it.
fn result_row(file: &str, record: usize, d: &DepositResult) -> ResultRow {
    ResultRow {
        file: file.to_string(),
        record: record as i64,
        host: d.host.clone(),
        activation_id: d.activation_id.clone(),
        iid: d.installation_id.clone(),
        cid: d.confirmation_id.clone(),
        error_code: (!d.activated)
            .then(|| d.error_code.clone().unwrap_or_else(|| "unknown".into())),
        license_status: d.license_status.map(|s| s as i64),
        observed_at: d.observed.as_ref().map(|t| t.as_str().to_string()),
    }
}

/// What became of one deposit result.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// The product is activated.
    Activated,
    /// The product is deposit-failed (`from`: its state before, `activated` when the
    /// machine had been activated with the CID).
    Failed {
        /// The state before.
        from: ProductState,
    },
    /// The product's state has no move for it (e.g. it is in a new bundle).
    NoMove,
    /// Older than what the ledger knows of the product, or about an IID or CID the
    /// product has since left: ignored.
    Stale(String),
    /// The ledger does not know the CID yet: kept.
    Kept,
    /// The ledger holds another CID for that IID: ignored.
    Contradicts,
}

/// Matches one deposit result against the ledger and applies it where it matches: the
/// product and IID it names must be the product's current ones and the CID the one the
/// ledger gave it, and it must not be older (machine time) than what the ledger already
/// knows of the product. A result the ledger cannot match yet (after `recover`, before
/// its return is applied) is [`Settled::Kept`], for the caller to keep.
pub fn settle(tx: &Tx, r: &ResultRow, now: &str) -> crate::ledger::Result<Settled> {
    let Some(t) = tx.deposit_target(&r.host, &r.activation_id)? else {
        return Ok(Settled::Kept);
    };
    if let (Some(known), Some(at)) = (&t.observed_at, &r.observed_at) {
        if at < known {
            return Ok(Settled::Stale(format!(
                "written at {at}, before what the ledger already knows of it ({known}); ignored"
            )));
        }
    }
    if t.iid.as_ref() == Some(&r.iid) && t.cid.as_ref() == Some(&r.cid) {
        let failure = r
            .error_code
            .as_deref()
            .map(|c| (c, deposit_error_meaning(c)));
        let change = Change::Deposit {
            failure,
            license_status: r.license_status,
        };
        return Ok(
            match tx.apply(t.id, t.state, &change, r.observed_at.as_deref(), now)? {
                None => {
                    // Still the machine's newest word, whatever its state.
                    tx.observed(t.id, r.observed_at.as_deref())?;
                    Settled::NoMove
                }
                Some(_) if failure.is_none() => Settled::Activated,
                Some(m) => Settled::Failed { from: m.from },
            },
        );
    }
    Ok(match tx.known_cid(&r.host, &r.activation_id, &r.iid)? {
        Some(c) if c == r.cid => {
            // A CID this site gave for an IID the product has left (restored to an
            // old image?): not applied, but the machine spoke at that time, so reports
            // written before it are older than its newest word.
            tx.observed(t.id, r.observed_at.as_deref())?;
            Settled::Stale("the product has a new IID or CID since this deposit; ignored".into())
        }
        Some(_) => Settled::Contradicts,
        None => Settled::Kept,
    })
}

/// Counts and lists what [`settle`] did with a result collect just read.
fn report_settled(
    tx: &Tx,
    pass: &mut Pass,
    r: &ResultRow,
    settled: Settled,
) -> crate::ledger::Result<()> {
    let n = Some(r.record as usize);
    let what = format!("{} {}", r.host, r.activation_id);
    match settled {
        Settled::Activated => pass.summary.deposits_activated += 1,
        Settled::Failed { from } => {
            pass.summary.deposits_failed += 1;
            pass.problems.push(deposit_failure(r, from));
        }
        Settled::NoMove => {}
        Settled::Stale(why) => {
            pass.summary.stale += 1;
            pass.note(&r.file, n, Code::RecStale, format!("{what}: {why}"));
        }
        Settled::Kept => {
            pass.summary.deposits_kept += 1;
            tx.keep_result(r, &pass.now)?;
            pass.note(
                &r.file,
                n,
                Code::RecResultKept,
                format!(
                    "{what}: the ledger does not know this CID yet; kept, and matched once it does"
                ),
            );
        }
        Settled::Contradicts => {
            let e = RecordError {
                code: Code::RecResultContradicts,
                record: n,
                detail: format!(
                    "{what}: the ledger holds another CID for this installation ID; result ignored"
                ),
            };
            record_problem(tx, pass, &r.file, &e)?;
        }
    }
    Ok(())
}

/// The problem a failed deposit is listed as.
fn deposit_failure(r: &ResultRow, from: ProductState) -> Problem {
    let code = r.error_code.as_deref().unwrap_or("unknown");
    let was = if from == ProductState::Activated {
        " (it was activated: the machine now reports it is not)"
    } else {
        ""
    };
    Problem {
        file: r.file.clone(),
        record: Some(r.record as usize),
        code: Code::RecDepositFailed.as_str().into(),
        detail: format!(
            "{} {}: Windows refused the CID ({code}: {}){was}",
            r.host,
            r.activation_id,
            deposit_error_meaning(code)
        ),
    }
}

/// What [`match_kept`] did.
#[derive(Debug, Default)]
pub struct Matched {
    /// Kept results matched now.
    pub matched: u64,
    /// Of those, deposits that activated their product.
    pub activated: u64,
    /// Of those, failed deposits, as problems.
    pub failed: Vec<Problem>,
}

/// Matches the deposit results kept earlier against what the ledger knows now (after
/// `collect`, after `apply` brought their CIDs), oldest machine time first; a result
/// matched or overtaken is dropped, one still unknown stays kept.
pub fn match_kept(tx: &Tx, now: &str) -> crate::ledger::Result<Matched> {
    let mut m = Matched::default();
    for r in tx.kept_results()? {
        let settled = settle(tx, &r, now)?;
        if settled == Settled::Kept {
            continue;
        }
        tx.forget_result(&r.file, r.record)?;
        match settled {
            Settled::Activated => {
                m.matched += 1;
                m.activated += 1;
            }
            Settled::Failed { from } => {
                m.matched += 1;
                m.failed.push(deposit_failure(&r, from));
            }
            _ => {}
        }
    }
    Ok(m)
}
