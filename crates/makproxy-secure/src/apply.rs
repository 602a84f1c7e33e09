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

use crate::ledger::{
    Answered, AppliedReturn, Change, History, KeptCid, Ledger, ProductNow, ProductState, Tx,
};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{
    self, Answers, BackendInfo, BundleId, FailureCode, Kind, ReturnAnswer, ReturnRecord,
};
use makproxy_core::home::Home;
use makproxy_core::ids::InstallationId;
use makproxy_core::records::deposit_file::render;
use makproxy_core::sanitize::escape;
use makproxy_core::{fsutil, Code};
use std::path::Path;

pub use crate::ledger::Summary;

impl Summary {
    fn human(&self) -> String {
        format!(
            "{} CID(s) ({} replacing simulated ones), {} failed online, {} left pending (not sent or uncertain), {} stale (IID changed), {} already answered, {} rejected",
            self.cids, self.superseded, self.failed, self.pending, self.iid_changed, self.already_answered, self.rejected
        )
    }
}

/// Failure codes that say the online side did not settle the record: it stays pending.
fn unsettled(code: &FailureCode) -> bool {
    *code == Code::BkdNoResponse || *code == Code::BkdUncertain || *code == Code::BkdOutage
}

/// Something about one record of a return that an operator may need to act on.
#[derive(Debug, serde::Serialize)]
pub struct Note {
    /// The record's handle.
    pub handle: u64,
    /// Its code.
    pub code: String,
    /// What happened.
    pub detail: String,
    /// The machine, when the record is one of the request's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The product's name (or activation ID), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

impl Note {
    /// A note on the record `handle`, its machine and product not named yet
    /// ([`name_notes`] names them).
    fn new(handle: u64, code: &str, detail: String) -> Note {
        Note {
            handle,
            code: code.into(),
            detail,
            host: None,
            product: None,
        }
    }
}

/// Names the machine and product of each note `record` added from `from` on.
fn name_notes(tx: &Tx, request: &BundleId, notes: &mut [Note]) -> crate::ledger::Result<()> {
    for n in notes {
        if let Some(p) = tx.bundle_record(request, n.handle)? {
            let now = tx.product_now(p.product_id)?;
            n.product = Some(now.product.unwrap_or_else(|| now.activation_id.to_string()));
            n.host = Some(now.host.to_string());
        }
    }
    Ok(())
}

/// Prints notes grouped ([`note_lines`]).
fn print_notes(notes: &[Note]) {
    for l in note_lines(notes) {
        eprintln!("{l}");
    }
}

/// Notes grouped by code and detail, one line each with a count and the first machines
/// (a return leaving 412 records pending is one line, not 412).
fn note_lines(notes: &[Note]) -> Vec<String> {
    let mut lines = Vec::new();
    const SHOWN: usize = 5;
    let mut groups: Vec<(&str, &str, Vec<&Note>)> = Vec::new();
    for n in notes {
        match groups
            .iter_mut()
            .find(|(c, d, _)| *c == n.code && *d == n.detail)
        {
            Some((_, _, v)) => v.push(n),
            None => groups.push((&n.code, &n.detail, vec![n])),
        }
    }
    for (code, detail, v) in groups {
        let names: Vec<String> = v
            .iter()
            .take(SHOWN)
            .map(|n| match (&n.host, &n.product) {
                (Some(h), Some(p)) => format!("{} ({})", escape(h), escape(p)),
                _ => format!("record {}", n.handle),
            })
            .collect();
        let more = v.len().saturating_sub(SHOWN);
        lines.push(format!(
            "[{}] {} x {}: {}{}",
            escape(code),
            v.len(),
            escape(detail),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more (--json lists every one)")
            } else {
                String::new()
            }
        ));
    }
    lines
}

/// `apply FILE` of a return applied before: nothing changes but the deposit files.
#[derive(Debug, serde::Serialize)]
pub struct AlreadyApplied {
    /// Always true.
    pub already_applied: bool,
    /// When it was applied.
    pub applied_at: String,
    /// What that apply did.
    pub summary: Summary,
    /// Deposit files written again.
    pub deposit_files_rewritten: u64,
    /// Hosts whose files could not be written.
    pub deposit_problems: Vec<DepositProblem>,
}

impl std::fmt::Display for AlreadyApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "This return was already applied at {}; the ledger is unchanged. Earlier result: {}.",
            self.applied_at,
            self.summary.human()
        )?;
        if self.deposit_files_rewritten > 0 {
            write!(
                f,
                "\nDeposit files for its machines were written again ({}), identical to before.",
                self.deposit_files_rewritten
            )?;
        }
        Ok(())
    }
}

/// `apply FILE --dry-run`.
#[derive(Debug, serde::Serialize)]
pub struct DryRun {
    /// Always true.
    pub dry_run: bool,
    /// What apply would do.
    pub summary: Summary,
    /// Per-record notes.
    pub notes: Vec<Note>,
}

impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dry run: would record {} CID(s) and {} failure(s); nothing changed.",
            self.summary.cids, self.summary.failed
        )
    }
}

/// `apply FILE`.
#[derive(Debug, serde::Serialize)]
pub struct Applied {
    /// The return's bundle ID.
    pub return_bundle: BundleId,
    /// The request it answers.
    pub answers: Answers,
    /// The name its signer is trusted under.
    pub signer: String,
    /// The backend that answered.
    pub backend: BackendInfo,
    /// What was recorded.
    pub summary: Summary,
    /// Deposit files written.
    pub deposit_files: u64,
    /// Hosts whose files could not be written.
    pub deposit_problems: Vec<DepositProblem>,
    /// Records of the request still without an answer.
    pub still_pending: i64,
    /// Per-record notes.
    pub notes: Vec<Note>,
    /// Keys of the inventory whose remaining-activation count the return updated.
    #[serde(skip_serializing_if = "is_zero")]
    pub keys_updated: u64,
    /// Deposit results kept by collect (their CIDs were unknown) that this return's
    /// CIDs matched.
    #[serde(skip_serializing_if = "is_zero")]
    pub kept_results_matched: u64,
    /// Where the deposit files went.
    #[serde(skip)]
    pub deposit_dir: std::path::PathBuf,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.backend.simulated {
            writeln!(f, "WARNING: this return was produced by the SIMULATOR backend. Its CIDs will not activate anything.")?;
        }
        write!(
            f,
            "Applied return from {:?} ({} backend): {}; {} deposit file(s) in {}; {} record(s) of the request still pending.",
            self.signer,
            escape(&self.backend.name),
            self.summary.human(),
            self.deposit_files,
            makproxy_cli::report::shown(&self.deposit_dir),
            self.still_pending
        )?;
        if self.keys_updated > 0 {
            write!(
                f,
                "\nActivations left updated for {} key(s) of the inventory (keys list).",
                self.keys_updated
            )?;
        }
        if self.kept_results_matched > 0 {
            write!(
                f,
                "\n{} deposit result(s) collected earlier matched the CIDs this return brought.",
                self.kept_results_matched
            )?;
        }
        Ok(())
    }
}

/// `apply --reissue --dry-run`, or `--reissue` with nothing to reissue.
#[derive(Debug, serde::Serialize)]
pub struct ReissuePlan {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Products with a CID on hand.
    pub reissue: i64,
}

impl std::fmt::Display for ReissuePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} product(s) have a CID on hand{}.",
            self.reissue,
            if self.dry_run {
                "; dry run, nothing written"
            } else {
                ""
            }
        )
    }
}

/// `apply --reissue`.
#[derive(Debug, serde::Serialize)]
pub struct Reissued {
    /// Products whose stored CID was issued again.
    pub reissued: i64,
    /// Deposit files written.
    pub deposit_files: u64,
    /// Hosts whose files could not be written.
    pub deposit_problems: Vec<DepositProblem>,
    /// Where the deposit files went.
    #[serde(skip)]
    pub deposit_dir: std::path::PathBuf,
}

impl std::fmt::Display for Reissued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Reissued {} stored CID(s) without a new activation; {} deposit file(s) written to {}.",
            self.reissued,
            self.deposit_files,
            makproxy_cli::report::shown(&self.deposit_dir)
        )
    }
}

/// A host whose deposit files could not be written (the others still were).
#[derive(Debug, serde::Serialize)]
pub struct DepositProblem {
    /// The host whose files could not be written.
    pub host: String,
    /// Why, with the path.
    pub detail: String,
}

/// Verifies the return `file`, records its answers in one transaction, then writes deposit files into `deposit_dir` (with `dry_run`, verifies and counts only).
pub fn run(
    out: &Output,
    home: &Home,
    ledger: &mut Ledger,
    file: &Path,
    deposit_dir: &Path,
    dry_run: bool,
) -> Result<Exit, CliError> {
    let now = makproxy_cli::now();
    let at = bundle::rfc3339(now);
    let mut v = makproxy_cli::open_bundle(home, file, Kind::Return, now)?;
    let m = v.manifest.clone();
    let answers = m.answers.clone().expect("checked by the reader");
    let backend = m.backend.clone().expect("checked by the reader");

    let tx = ledger.begin()?;
    if let Some(before) = tx.return_applied(&m.bundle_id)? {
        let (files, problems) = if dry_run {
            (0, Vec::new())
        } else {
            write_deposit_files(&tx, deposit_dir, Some(&answers.bundle_id))?
        };
        drop(tx);
        report_deposit_problems(&problems);
        let failed = problems.len() as u64;
        out.report(&AlreadyApplied {
            already_applied: true,
            applied_at: before.at,
            summary: before.summary,
            deposit_files_rewritten: files,
            deposit_problems: problems,
        });
        return Ok(Exit::outcome(files, failed));
    }
    match tx.issued(&answers.bundle_id)? {
        Some(i)
            if i.manifest_sha256 == answers.manifest_sha256
                && answers.site == home.site
                && answers.sequence == i.sequence => {}
        Some(_) => return Err(CliError::rejected(Code::AplNotIssued, format!("return claims to answer bundle {} but its manifest hash, site ({}) or sequence ({}) differs from what this site issued", answers.bundle_id, escape(&answers.site), answers.sequence))),
        None => {
            return Err(CliError::rejected(Code::AplNotIssued, format!("return answers bundle {} of site {}, which this site ({}) did not issue", answers.bundle_id, escape(&answers.site), home.site))
                .hint("apply it at the site that packed the request"))
        }
    }

    let mut s = Summary::default();
    let mut notes: Vec<Note> = Vec::new();
    v.records(|r: ReturnRecord| {
        let ret = Applying {
            request: &answers.bundle_id,
            return_id: &m.bundle_id,
            simulated: backend.simulated,
            at: &at,
        };
        record(&tx, &r, &ret, &mut s, &mut notes).map_err(CliError::from)
    })?;
    name_notes(&tx, &answers.bundle_id, &mut notes)?;
    if dry_run {
        drop(tx);
        out.report(&DryRun {
            dry_run: true,
            summary: s,
            notes,
        });
        return Ok(Exit::Ok);
    }
    let mut keys_updated = 0;
    for c in m.remaining.as_deref().unwrap_or_default() {
        keys_updated += tx.key_count_seen(&answers.bundle_id, c, &m.bundle_id, &at)?;
    }
    // What the gateway requires of this site's next bundles, for pack and verify.
    if let Some(rule) = &m.site_rule {
        tx.gateway_rule_seen(&v.signer.name, rule, &m.bundle_id, &m.created)?;
    }
    // Who signed it, for the report: the signer and each cosigner, by pinned name.
    let signers = std::iter::once(&v.signer)
        .chain(&v.cosigners)
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    tx.return_recorded(
        &AppliedReturn {
            bundle_id: &m.bundle_id,
            answers: &answers.bundle_id,
            signer: &signers,
            backend: &backend.name,
            simulated: backend.simulated,
            summary: &s,
        },
        &at,
    )?;
    // Deposit results collect kept because their CIDs were unknown (after a
    // `recover`) are matched now that this return brought them.
    let matched = crate::collect::match_kept(&tx, &at)?;
    let pending = tx.still_pending(&answers.bundle_id)?;
    tx.commit()?;
    // The ledger is committed: deposit files are derived from it and a re-run of the
    // same apply writes them again, so a failure here loses nothing.
    let tx = ledger.begin()?;
    let (files, problems) = write_deposit_files(&tx, deposit_dir, Some(&answers.bundle_id))?;
    drop(tx);

    print_notes(&notes);
    for p in &matched.failed {
        let at = p.record.map(|r| format!(" record {r}")).unwrap_or_default();
        eprintln!(
            "{}{at}: [{}] {}",
            escape(&p.file),
            p.code,
            escape(&p.detail)
        );
    }
    report_deposit_problems(&problems);
    // Deposit problems count against the hosts whose files could not be written.
    let exit = Exit::outcome(
        s.cids + s.already_answered,
        s.failed + s.rejected + s.iid_changed + s.pending + problems.len() as u64,
    );
    out.report(&Applied {
        return_bundle: m.bundle_id,
        answers,
        signer: v.signer.name.clone(),
        backend,
        summary: s,
        deposit_files: files,
        deposit_problems: problems,
        still_pending: pending,
        notes,
        keys_updated,
        kept_results_matched: matched.matched,
        deposit_dir: deposit_dir.to_path_buf(),
    });
    Ok(exit)
}

/// The return being applied, as each of its results sees it.
struct Applying<'a> {
    /// The CIL bundle it answers.
    request: &'a BundleId,
    /// The return bundle.
    return_id: &'a BundleId,
    /// The return is a drill's.
    simulated: bool,
    /// When (RFC 3339).
    at: &'a str,
}

/// A result bound to the request record it answers: the packed record, and the product
/// as it is now (`packed_now`: it still holds the IID that was packed).
struct Bound {
    pid: i64,
    packed_iid: InstallationId,
    answered: Answered,
    now: ProductNow,
    packed_now: bool,
}

/// Binds a result to the record of the request it answers, or says why it is refused
/// (each a rejected result with its code): no such handle, another IID, another ePID
/// while the product still has the packed IID (a reimaged product is the stale-IID
/// rule's business), a simulated flag that contradicts the return's signed backend.
fn bind(
    tx: &Tx,
    r: &ReturnRecord,
    ret: &Applying,
) -> crate::ledger::Result<Result<Bound, (Code, &'static str)>> {
    let Some(crate::ledger::PackedRecord {
        product_id: pid,
        iid: packed_iid,
        answered,
    }) = tx.bundle_record(ret.request, r.handle)?
    else {
        return Ok(Err((
            Code::AplUnknownHandle,
            "the answered bundle has no such record",
        )));
    };
    if packed_iid != r.installation_id {
        return Ok(Err((
            Code::AplIidMismatch,
            "result's IID differs from the request record; ignored",
        )));
    }
    let now = tx.product_now(pid)?;
    let packed_now = now.iid.as_ref() == Some(&packed_iid);
    let absent = makproxy_core::ids::ExtendedProductId::absent();
    if packed_now && *now.epid.as_ref().unwrap_or(&absent) != r.extended_product_id {
        return Ok(Err((
            Code::AplEpidMismatch,
            "result's extended product ID differs from the request record; ignored",
        )));
    }
    if r.simulated != ret.simulated {
        return Ok(Err((
            Code::AplIidMismatch,
            "record's simulated flag contradicts the return's signed backend; ignored",
        )));
    }
    Ok(Ok(Bound {
        pid,
        packed_iid,
        answered,
        now,
        packed_now,
    }))
}

/// Applies one result of a return to the ledger (inside the caller's transaction).
fn record(
    tx: &Tx,
    r: &ReturnRecord,
    ret: &Applying,
    s: &mut Summary,
    notes: &mut Vec<Note>,
) -> crate::ledger::Result<()> {
    let Applying { request, at, .. } = *ret;
    let b = match bind(tx, r, ret)? {
        Ok(b) => b,
        Err((code, detail)) => {
            s.rejected += 1;
            notes.push(Note::new(r.handle, code.as_str(), detail.into()));
            return Ok(());
        }
    };
    // A real CID is final; a simulated one gives way only to a real CID — from a
    // return of the same request, or of another bundle the product was re-packed into.
    let real_cid = r.confirmation_id().is_some() && !r.simulated;
    let supersedes = b.answered == Answered::SIMULATED && real_cid;
    if b.answered == Answered::REAL || (b.answered == Answered::SIMULATED && !supersedes) {
        s.already_answered += 1;
        return Ok(());
    }
    if let Some(f) = r.failure().filter(|f| unsettled(&f.code)) {
        s.pending += 1;
        if b.packed_now {
            tx.left_pending(b.pid, f.code.as_str(), at)?;
        }
        notes.push(Note::new(
            r.handle,
            f.code.as_str(),
            "not settled online; left pending for a later return".into(),
        ));
        return Ok(());
    }
    if r.confirmation_id().is_some() {
        let a = if r.simulated {
            Answered::SIMULATED
        } else {
            Answered::REAL
        };
        tx.set_answered(request, r.handle, a)?;
    }
    take_answer(tx, r, ret, &b, s, notes)
}

/// Keeps the CID a bound result brings and moves the product, unless its IID changed
/// since packing (the CID stays on record, not deposited) or its state takes no answer
/// (recorded, state kept).
fn take_answer(
    tx: &Tx,
    r: &ReturnRecord,
    ret: &Applying,
    b: &Bound,
    s: &mut Summary,
    notes: &mut Vec<Note>,
) -> crate::ledger::Result<()> {
    let Applying { return_id, at, .. } = *ret;
    let Bound {
        pid,
        ref packed_iid,
        ref now,
        ..
    } = *b;
    let real_cid = r.confirmation_id().is_some() && !r.simulated;
    let (host, aid) = (&now.host, &now.activation_id);
    let (cur_iid, cur_state, cur_sim) = (&now.iid, now.state, now.cid_simulated);
    if let Some(cid) = r.confirmation_id() {
        tx.keep_cid(
            &KeptCid {
                host,
                activation_id: aid,
                iid: packed_iid,
                cid,
                simulated: r.simulated,
                return_bundle: return_id,
            },
            at,
        )?;
    }
    if cur_iid.as_ref() != Some(packed_iid) {
        s.iid_changed += 1;
        notes.push(Note::new(
            r.handle,
            Code::AplIidChanged.as_str(),
            format!(
                "{host} {aid}: IID changed since packing; CID kept on record but not deposited"
            ),
        ));
        return tx.note(pid, cur_state, History::AnswerStale, at);
    }
    let reason = match &r.answer {
        ReturnAnswer::Failed(f) => match &f.service_code {
            Some(sc) => format!("{sc}: {}", f.message),
            None => f.message.to_string(),
        },
        ReturnAnswer::Confirmed(_) => String::new(),
    };
    let change = match &r.answer {
        ReturnAnswer::Confirmed(cid) => Change::Cid {
            cid,
            simulated: r.simulated,
            replaces_simulated: real_cid && cur_sim,
            return_id,
        },
        ReturnAnswer::Failed(f) => Change::Refused {
            code: f.code.as_str(),
            reason: &reason,
        },
    };
    let Some(moved) = tx.apply(pid, cur_state, &change, None, at)? else {
        s.already_answered += 1;
        notes.push(Note::new(
            r.handle,
            Code::AplNothingPending.as_str(),
            format!("{host} {aid} is {cur_state}; answer recorded, state kept"),
        ));
        return Ok(());
    };
    match moved.to {
        ProductState::CidReceived => {
            s.cids += 1;
            if moved.from == ProductState::CidReceived {
                s.superseded += 1;
            }
        }
        _ => s.failed += 1,
    }
    Ok(())
}

fn report_deposit_problems(problems: &[DepositProblem]) {
    for p in problems {
        eprintln!("{}", p.line());
    }
}

impl DepositProblem {
    /// The line stderr shows, host and detail escaped.
    pub fn line(&self) -> String {
        format!(
            "deposit file for {}: [{}] {}",
            escape(&self.host),
            Code::AplDepositFile,
            escape(&self.detail)
        )
    }
}

/// `apply --reissue`: deposit files for products whose CID is already on hand.
pub fn reissue(
    out: &Output,
    ledger: &mut Ledger,
    deposit_dir: &Path,
    dry_run: bool,
) -> Result<Exit, CliError> {
    let at = bundle::rfc3339(makproxy_cli::now());
    let tx = ledger.begin()?;
    let n = tx.count_in(ProductState::CidOnHand)?;
    if dry_run || n == 0 {
        out.report(&ReissuePlan {
            dry_run,
            reissue: n,
        });
        return Ok(Exit::Ok);
    }
    tx.reissue(&at)?;
    tx.commit()?;
    let tx = ledger.begin()?;
    let (files, problems) = write_deposit_files(&tx, deposit_dir, None)?;
    drop(tx);
    report_deposit_problems(&problems);
    let exit = Exit::outcome(files, problems.len() as u64);
    out.report(&Reissued {
        reissued: n,
        deposit_files: files,
        deposit_problems: problems,
        deposit_dir: deposit_dir.to_path_buf(),
    });
    Ok(exit)
}

/// Writes `<HOST>.json` and `<HOST>.cmd` for every host with products awaiting deposit
/// (restricted to the hosts of one request bundle when given). A host whose files
/// cannot be written (its name taken by a folder, a read-only file …) is reported and
/// skipped; every other host still gets its files, and a re-run writes the rest.
pub fn write_deposit_files(
    tx: &Tx,
    dir: &Path,
    bundle_id: Option<&BundleId>,
) -> Result<(u64, Vec<DepositProblem>), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir.display(), e))?;
    // Resolved once: a relative folder would be resolved again for every file.
    let dir = &std::path::absolute(dir).map_err(|e| CliError::io(dir.display(), e))?;
    // The ledger is read and the files rendered here; WRITERS threads create them
    // (file creation is I/O-bound: one waiting on the disk does not hold up the next).
    // Hosts travel in batches, so the writers rarely contend for the queue.
    let (to_write, jobs) = std::sync::mpsc::sync_channel::<Vec<Rendered>>(8);
    let jobs = std::sync::Mutex::new(jobs);
    let mut tampered = Vec::new();
    let written = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WRITERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Ok(Ok(batch)) = jobs.lock().map(|rx| rx.recv()) {
                        done.extend(batch.into_iter().map(|r| write_host(dir, r)));
                    }
                    done
                })
            })
            .collect();
        let fed = (|| -> Result<(), CliError> {
            let mut batch = Vec::with_capacity(BATCH);
            // Host names are read through their type (letters, digits, - _ .), so
            // they are safe file names; a ledger holding another stops here.
            for name in tx.hosts_awaiting_deposit(bundle_id)? {
                let host = name.as_str().to_string();
                // Every value is read back through its ID type: a ledger row that is
                // not one (a tampered ledger) writes no script for its host.
                let items = match tx.deposit_rows(&name) {
                    Ok(items) => items,
                    Err(e @ crate::ledger::LedgerError::Invalid(_)) => {
                        tampered.push(DepositProblem {
                            host: host.clone(),
                            detail: format!(
                                "the ledger's row is not valid ({e}); no deposit file written"
                            ),
                        });
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let (json, cmd) = render(&name, &items);
                batch.push(Rendered { host, json, cmd });
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if to_write.send(full).is_err() {
                        return Ok(());
                    }
                }
            }
            if !batch.is_empty() {
                let _ = to_write.send(batch);
            }
            Ok(())
        })();
        drop(to_write);
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.join().expect("a deposit writer panicked"));
        }
        fed.map(|()| all)
    })?;
    let mut n = 0u64;
    let mut problems = tampered;
    for w in written {
        match w {
            Ok(()) => n += 1,
            Err(p) => problems.push(p),
        }
    }
    problems.sort_by(|a, b| a.host.cmp(&b.host));
    fsutil::sync_dir(dir).map_err(|e| CliError::io(dir.display(), e))?;
    Ok((n, problems))
}

/// Threads creating deposit files, and hosts handed to them at a time.
const WRITERS: usize = 2;
const BATCH: usize = 64;

/// A host's deposit file and script, rendered.
struct Rendered {
    host: String,
    json: Vec<u8>,
    cmd: Vec<u8>,
}

/// Replaces a host's `<HOST>.json` and `<HOST>.cmd` (each atomically).
fn write_host(dir: &Path, r: Rendered) -> Result<(), DepositProblem> {
    for (ext, bytes) in [("json", &r.json), ("cmd", &r.cmd)] {
        let p = dir.join(format!("{}.{ext}", r.host));
        fsutil::write_derived(&p, bytes).map_err(|e| DepositProblem {
            host: r.host.clone(),
            detail: format!("{}: {e}", p.display()),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The text of apply's reports (the ledger rules are tested in tests/apply.rs).
    use super::*;

    fn summary() -> Summary {
        Summary {
            cids: 3,
            failed: 1,
            iid_changed: 2,
            already_answered: 4,
            rejected: 5,
            pending: 6,
            superseded: 7,
        }
    }

    #[test]
    fn notes_are_grouped_by_code_with_machines_named_and_long_lists_cut() {
        let note = |handle, code: &str, host: Option<&str>| Note {
            handle,
            code: code.into(),
            detail: "not settled online".into(),
            host: host.map(String::from),
            product: host.map(|_| "Windows\u{1b}".to_string()),
        };
        let mut notes: Vec<Note> = (1..=412)
            .map(|h| note(h, "MP-BKD-010", Some(&format!("PC-{h:04}"))))
            .collect();
        notes.push(note(900, "MP-BKD-002", None));
        let lines = note_lines(&notes);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "[MP-BKD-010] 412 x not settled online: PC-0001 (Windows\\u{1b}), PC-0002 (Windows\\u{1b}), PC-0003 (Windows\\u{1b}), PC-0004 (Windows\\u{1b}), PC-0005 (Windows\\u{1b}) and 407 more (--json lists every one)"
        );
        assert_eq!(lines[1], "[MP-BKD-002] 1 x not settled online: record 900");
    }

    #[test]
    fn reports_say_what_apply_did() {
        assert_eq!(summary().human(), "3 CID(s) (7 replacing simulated ones), 1 failed online, 6 left pending (not sent or uncertain), 2 stale (IID changed), 4 already answered, 5 rejected");
        let again = |files| {
            AlreadyApplied {
                already_applied: true,
                applied_at: "T".into(),
                summary: summary(),
                deposit_files_rewritten: files,
                deposit_problems: vec![],
            }
            .to_string()
        };
        assert!(again(0).starts_with("This return was already applied at T; the ledger is unchanged. Earlier result: 3 CID(s)"));
        assert!(!again(0).contains("written again"));
        assert!(again(1).ends_with(
            "\nDeposit files for its machines were written again (1), identical to before."
        ));
        let dry = DryRun {
            dry_run: true,
            summary: summary(),
            notes: vec![],
        };
        assert_eq!(
            dry.to_string(),
            "Dry run: would record 3 CID(s) and 1 failure(s); nothing changed."
        );
        let applied = |simulated| {
            Applied {
                return_bundle: BundleId::parse(&"e".repeat(32)).unwrap(),
                answers: Answers {
                    bundle_id: BundleId::parse(&"b".repeat(32)).unwrap(),
                    manifest_sha256: "h".into(),
                    site: "s".into(),
                    sequence: 1,
                },
                signer: "gw".into(),
                backend: BackendInfo {
                    name: "microsoft\u{1b}".into(),
                    simulated,
                    endpoint: None,
                },
                summary: summary(),
                deposit_files: 9,
                deposit_problems: vec![],
                still_pending: 2,
                notes: vec![],
                keys_updated: 0,
                kept_results_matched: 0,
                deposit_dir: "dep".into(),
            }
            .to_string()
        };
        assert!(
            applied(false)
                .starts_with("Applied return from \"gw\" (microsoft\\u{1b} backend): 3 CID(s)"),
            "{}",
            applied(false)
        );
        assert!(applied(false)
            .ends_with("; 9 deposit file(s) in dep; 2 record(s) of the request still pending."));
        assert!(applied(true)
            .starts_with("WARNING: this return was produced by the SIMULATOR backend."));
        assert!(!applied(false).contains("SIMULATOR"));
        let plan = |dry_run| {
            ReissuePlan {
                dry_run,
                reissue: 4,
            }
            .to_string()
        };
        assert_eq!(
            plan(true),
            "4 product(s) have a CID on hand; dry run, nothing written."
        );
        assert_eq!(plan(false), "4 product(s) have a CID on hand.");
        let done = Reissued {
            reissued: 4,
            deposit_files: 2,
            deposit_problems: vec![],
            deposit_dir: "dep".into(),
        };
        assert_eq!(
            done.to_string(),
            "Reissued 4 stored CID(s) without a new activation; 2 deposit file(s) written to dep."
        );
        let p = DepositProblem {
            host: "PC\u{1b}".into(),
            detail: "x: denied".into(),
        };
        assert_eq!(
            p.line(),
            "deposit file for PC\\u{1b}: [MP-APL-008] x: denied"
        );
    }
}
