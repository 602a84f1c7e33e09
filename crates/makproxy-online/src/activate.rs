//! `activate IN --out OUT --backend NAME`: verify a CIL bundle from a trusted secure
//! site, obtain a CID or a refusal for every record, and write the signed return.
//!
//! One walk over the verified records. A record the journal answers (or refused
//! earlier) is settled at once; any other is handed to a small pool of workers (bounded
//! concurrency, polite by default) and waits. Each answer is committed to the journal on
//! the main thread before it is used for anything: answers that may have spent an
//! activation one by one as they arrive, simulated ones (nothing spent) in groups.
//! Records go into the return in bundle order as soon as they and every record before
//! them are settled; the return file only gets its final name once all are written and
//! signed, so a run killed at any point resumes without re-asking anything answered.

use crate::journal;
use indicatif::ProgressBar;
use makproxy_backend::{activate_with_retry, Backend, Outcome, Request, RetryPolicy};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{
    self, Answers, BackendInfo, BundleWriter, CilRecord, Header, Kind, Limits, RecordFailure,
    ReturnRecord, Source,
};
use makproxy_core::ids::{ConfirmationId, ExtendedProductId, InstallationId};
use makproxy_core::keys::Home;
use makproxy_core::sanitize::escape;
use makproxy_core::Code;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Options<'a> {
    pub input: &'a Path,
    pub out: &'a Path,
    pub backend: &'a dyn Backend,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub expires_days: u32,
    pub check_remaining: bool,
    pub retry_failed: bool,
    pub dry_run: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub records: u64,
    pub obtained: u64,
    pub from_journal: u64,
    pub failed: u64,
    pub no_response: u64,
    /// Failures by code (service code where there is one).
    pub failed_by_reason: BTreeMap<String, u64>,
}

struct Job {
    handle: u64,
    req: Request,
}

impl Job {
    fn key(&self) -> Key {
        key(&self.req.iid, &self.req.epid)
    }
}

/// What the journal is keyed by, besides the simulated flag fixed for a run.
type Key = (String, String);

fn key(iid: &InstallationId, epid: &ExtendedProductId) -> Key {
    (iid.digits().to_string(), epid.as_str().to_string())
}

/// What the return says for one record.
#[derive(Clone)]
enum Answer {
    /// `now`: obtained by this run (else served from the journal).
    Cid {
        cid: ConfirmationId,
        now: bool,
    },
    Failed(RecordFailure),
}

/// Simulated answers committed together at most.
const MAX_BATCH: usize = 8192;
/// Records waiting for an answer (held in memory, in bundle order) at most.
const MAX_WAITING: usize = 4 * MAX_BATCH;

/// The main thread's side of the walk: requests handed out, answers awaiting their
/// commit, records awaiting their answer, and the return being written.
struct Walk<'a> {
    conn: &'a mut Connection,
    simulated: bool,
    run: i64,
    bundle_id: &'a str,
    jobs: Option<SyncSender<Vec<Job>>>,
    answers: Receiver<Vec<(Job, Outcome)>>,
    /// Requests not yet handed out, and how many travel together.
    parcel: Vec<Job>,
    parcel_size: usize,
    in_flight: usize,
    /// Answers received and not yet committed; committed when `group` wait or the
    /// oldest has waited a moment.
    uncommitted: Vec<(Job, Outcome)>,
    group: usize,
    oldest: Option<Instant>,
    /// Records in bundle order from the first one not yet written; `None`: waiting.
    queue: VecDeque<(CilRecord, Option<Answer>)>,
    /// Keys asked in this run whose records are still queued, with how many wait.
    waiting_on: HashMap<Key, usize>,
    /// Committed answers to those keys.
    settled: HashMap<Key, Answer>,
    /// Refusals received in this run: a later record with the same key (a cloned
    /// machine further on in the bundle) gets the same answer without a new request.
    refused: HashMap<Key, Answer>,
    writer: BundleWriter<ReturnRecord>,
    out: &'a Path,
    bar: &'a ProgressBar,
    s: Summary,
}

fn db(e: impl std::fmt::Display) -> CliError {
    CliError::io("journal", e)
}

fn stopped() -> CliError {
    CliError::io("backend workers", "stopped")
}

impl Walk<'_> {
    /// Takes one record of the bundle: settled from the journal, or asked.
    fn record(&mut self, r: CilRecord, skip_refused: bool) -> Result<(), CliError> {
        let k = key(&r.installation_id, &r.extended_product_id);
        let answer = if let Some((cid, by)) =
            journal::answer(self.conn, &k.0, &k.1, self.simulated).map_err(db)?
        {
            Some(Answer::Cid {
                cid: ConfirmationId::parse(&cid).map_err(db)?,
                now: by == self.run,
            })
        } else if let Some(a) = self.refused.get(&k) {
            Some(a.clone())
        } else if skip_refused {
            journal::failure(self.conn, self.bundle_id, r.handle)
                .map_err(db)?
                .map(|(code, service_code, message)| {
                    Answer::Failed(RecordFailure {
                        code,
                        service_code,
                        message,
                    })
                })
        } else {
            None
        };
        if answer.is_none() {
            let n = self.waiting_on.entry(k).or_default();
            *n += 1;
            // The first record with this key asks; duplicates wait for its answer.
            if *n == 1 {
                self.parcel.push(Job {
                    handle: r.handle,
                    req: Request {
                        iid: r.installation_id.clone(),
                        epid: r.extended_product_id.clone(),
                    },
                });
                if self.parcel.len() >= self.parcel_size {
                    self.hand_out()?;
                }
            }
        }
        self.queue.push_back((r, answer));
        self.write_settled()?;
        while self.queue.len() > MAX_WAITING {
            self.wait()?;
        }
        Ok(())
    }

    /// Hands the parcel to the workers, taking answers while their queue is full.
    fn hand_out(&mut self) -> Result<(), CliError> {
        if self.parcel.is_empty() {
            return Ok(());
        }
        let mut jobs = std::mem::replace(&mut self.parcel, Vec::with_capacity(self.parcel_size));
        let n = jobs.len();
        let tx = self.jobs.clone().ok_or_else(stopped)?;
        loop {
            match tx.try_send(jobs) {
                Ok(()) => break,
                Err(TrySendError::Full(j)) => {
                    jobs = j;
                    let got = self.answers.recv().map_err(|_| stopped())?;
                    self.take(got)?;
                }
                Err(TrySendError::Disconnected(_)) => return Err(stopped()),
            }
        }
        self.in_flight += n;
        while let Ok(got) = self.answers.try_recv() {
            self.take(got)?;
        }
        Ok(())
    }

    /// Makes progress when records wait: hands out, receives or commits.
    fn wait(&mut self) -> Result<(), CliError> {
        self.hand_out()?;
        if self.in_flight > 0 {
            let got = self.answers.recv().map_err(|_| stopped())?;
            self.take(got)
        } else {
            self.commit()
        }
    }

    fn take(&mut self, got: Vec<(Job, Outcome)>) -> Result<(), CliError> {
        self.in_flight -= got.len();
        self.uncommitted.extend(got);
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.uncommitted.len() >= self.group || oldest.elapsed() >= Duration::from_millis(200) {
            self.commit()?;
        }
        Ok(())
    }

    /// Persists the answers received, then lets the records waiting on them go.
    fn commit(&mut self) -> Result<(), CliError> {
        let at = bundle::rfc3339(makproxy_cli::now());
        let tx = self.conn.transaction().map_err(db)?;
        for (job, outcome) in &self.uncommitted {
            match outcome {
                Outcome::Cid(cid) => journal::save_answer(
                    &tx,
                    job.req.iid.digits(),
                    job.req.epid.as_str(),
                    self.simulated,
                    cid.digits(),
                    self.run,
                    &at,
                ),
                Outcome::Failed(f) => journal::save_failure(
                    &tx,
                    self.bundle_id,
                    job.handle,
                    f.code.as_str(),
                    f.service_code.as_deref(),
                    &f.message,
                    &at,
                ),
                Outcome::NoResponse(_) => Ok(()),
            }
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        for (job, outcome) in std::mem::take(&mut self.uncommitted) {
            let answer = match outcome {
                Outcome::Cid(cid) => Answer::Cid { cid, now: true },
                Outcome::Failed(f) => {
                    let a = Answer::Failed(RecordFailure {
                        code: f.code.as_str().into(),
                        service_code: f.service_code,
                        message: f.message,
                    });
                    self.refused.insert(job.key(), a.clone());
                    a
                }
                Outcome::NoResponse(_) => {
                    self.s.no_response += 1;
                    Answer::Failed(RecordFailure {
                        code: Code::BkdNoResponse.as_str().into(),
                        service_code: None,
                        message:
                            "no response from the activation backend; run activate again to retry"
                                .into(),
                    })
                }
            };
            self.settled.insert(job.key(), answer);
        }
        self.oldest = None;
        self.write_settled()
    }

    /// Writes the records at the front of the queue whose answers are known.
    fn write_settled(&mut self) -> Result<(), CliError> {
        while let Some((r, known)) = self.queue.front() {
            let answer = match known {
                Some(a) => a.clone(),
                None => {
                    let k = key(&r.installation_id, &r.extended_product_id);
                    let Some(a) = self.settled.get(&k).cloned() else {
                        return Ok(());
                    };
                    let n = self.waiting_on.get_mut(&k).expect("counted when queued");
                    *n -= 1;
                    if *n == 0 {
                        self.waiting_on.remove(&k);
                        self.settled.remove(&k);
                    }
                    a
                }
            };
            let (r, _) = self.queue.pop_front().expect("front exists");
            self.write(r, answer)?;
        }
        Ok(())
    }

    fn write(&mut self, r: CilRecord, answer: Answer) -> Result<(), CliError> {
        let mut rec = ReturnRecord {
            handle: r.handle,
            installation_id: r.installation_id,
            extended_product_id: r.extended_product_id,
            confirmation_id: None,
            failure: None,
            source: Source::Journal,
            simulated: self.simulated,
        };
        match answer {
            Answer::Cid { cid, now } => {
                rec.confirmation_id = Some(cid);
                if now {
                    rec.source = Source::Backend;
                    self.s.obtained += 1;
                } else {
                    self.s.from_journal += 1;
                }
            }
            Answer::Failed(f) => {
                self.s.failed += 1;
                *self
                    .s
                    .failed_by_reason
                    .entry(f.service_code.clone().unwrap_or_else(|| f.code.clone()))
                    .or_default() += 1;
                rec.failure = Some(f);
            }
        }
        self.bar.inc(1);
        self.writer
            .push(rec)
            .map_err(|e| CliError::io(self.out.display(), e))
    }

    /// After the last record: hands out the rest, waits for every answer, writes all.
    fn drain(&mut self) -> Result<(), CliError> {
        self.hand_out()?;
        self.jobs = None;
        while self.in_flight > 0 {
            let got = self.answers.recv().map_err(|_| stopped())?;
            self.take(got)?;
        }
        self.commit()?;
        debug_assert!(self.queue.is_empty(), "every record was written");
        Ok(())
    }
}

pub fn run(
    out: &Output,
    home: &Home,
    conn: &mut Connection,
    o: &Options,
) -> Result<Exit, CliError> {
    let key = home.signing_key()?;
    let now = makproxy_cli::now();
    let mut v = bundle::open(
        o.input,
        Kind::Cil,
        &home.trusted()?,
        now,
        &Limits::default(),
    )?;
    let m = v.manifest.clone();
    let simulated = o.backend.simulated();

    // Replay: one (site, sequence) is one bundle. The same bundle again is a resume.
    let seen: Option<String> = conn
        .query_row(
            "SELECT bundle_id FROM requests WHERE site = ?1 AND sequence = ?2",
            params![m.site, m.sequence as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    if let Some(other) = seen.filter(|b| *b != m.bundle_id) {
        return Err(CliError::rejected(
            Code::AplReplay,
            format!(
                "site {:?} already sent a different bundle ({other}) with sequence {}",
                escape(&m.site),
                m.sequence
            ),
        ));
    }

    // Refusals recorded for this bundle are not asked again (unless --retry-failed).
    let skip_refused = !o.retry_failed && journal::any_failure(conn, &m.bundle_id).map_err(db)?;
    if o.dry_run || o.check_remaining {
        let mut need: BTreeMap<String, u64> = BTreeMap::new();
        v.records(|r: CilRecord| {
            let answered = journal::answer(
                conn,
                r.installation_id.digits(),
                r.extended_product_id.as_str(),
                simulated,
            )
            .map_err(db)?
            .is_some();
            let refused = skip_refused
                && journal::failure(conn, &m.bundle_id, r.handle)
                    .map_err(db)?
                    .is_some();
            if !answered && !refused {
                *need
                    .entry(r.extended_product_id.as_str().to_string())
                    .or_default() += 1;
            }
            Ok::<(), CliError>(())
        })?;
        let total: u64 = need.values().sum();
        if o.dry_run {
            out.json(&json!({"dry_run": true, "records": m.records, "would_request": total, "per_epid": need}));
            out.line(format!("Dry run: {} record(s); {total} would be sent to the {} backend, the rest answered from the journal. Nothing written.", m.records, o.backend.name()));
            return Ok(Exit::Ok);
        }
        for (epid, n) in &need {
            let epid_v = makproxy_core::ids::ExtendedProductId::parse(epid).map_err(db)?;
            let left = o.backend.remaining(&epid_v).map_err(|f| {
                CliError::new(
                    Exit::Error,
                    Some(f.code),
                    format!("remaining activations for {epid}: {}", escape(&f.message)),
                )
            })?;
            if left >= 0 && (left as u64) < *n {
                return Err(CliError::rejected(
                    Code::BkdNotEnough,
                    format!(
                        "the MAK behind {epid} has {left} activation(s) left; this batch needs {n}"
                    ),
                )
                .hint(
                    "split the batch with pack --limit, or raise the MAK's limit with Microsoft",
                ));
            }
        }
    }

    conn.execute(
        "INSERT OR IGNORE INTO requests(bundle_id, site, sequence, manifest_sha256, first_seen) VALUES(?1, ?2, ?3, ?4, ?5)",
        params![m.bundle_id, m.site, m.sequence as i64, v.manifest_sha256, bundle::rfc3339(now)],
    )
    .map_err(db)?;
    let run = journal::start_run(
        conn,
        &bundle::new_bundle_id(),
        &m.bundle_id,
        o.backend.name(),
        &bundle::rfc3339(now),
    )
    .map_err(db)?;
    let concurrency = o.concurrency.max(1);
    // Network backends get one request per hand-off so that `concurrency` requests are
    // really in flight; the simulator answers in microseconds, so its requests travel in
    // parcels and its answers are committed in large groups.
    let (parcel_size, queue, group) = if simulated {
        (256, 4, MAX_BATCH)
    } else {
        (1, concurrency * 2, 1)
    };
    let bar = out.progress(m.records, "activate");
    let writer = BundleWriter::new(o.out).map_err(|e| CliError::io(o.out.display(), e))?;
    let (job_tx, job_rx) = mpsc::sync_channel::<Vec<Job>>(queue);
    let (res_tx, res_rx) = mpsc::channel::<Vec<(Job, Outcome)>>();
    let mut walk = Walk {
        conn,
        simulated,
        run,
        bundle_id: &m.bundle_id,
        jobs: Some(job_tx),
        answers: res_rx,
        parcel: Vec::with_capacity(parcel_size),
        parcel_size,
        in_flight: 0,
        uncommitted: Vec::with_capacity(group),
        group,
        oldest: None,
        queue: VecDeque::new(),
        waiting_on: HashMap::new(),
        settled: HashMap::new(),
        refused: HashMap::new(),
        writer,
        out: o.out,
        bar: &bar,
        s: Summary {
            records: m.records,
            ..Summary::default()
        },
    };
    std::thread::scope(|scope| -> Result<(), CliError> {
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..concurrency {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            let retry = o.retry.clone();
            scope.spawn(move || loop {
                let next = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(jobs)) = next else { return };
                let answers = jobs
                    .into_iter()
                    .map(|job| {
                        let outcome = activate_with_retry(o.backend, &job.req, &retry);
                        (job, outcome)
                    })
                    .collect();
                if res_tx.send(answers).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        // On an error the job queue closes when `walk` is dropped and the workers end.
        v.records(|r: CilRecord| walk.record(r, skip_refused))?;
        walk.drain()
    })?;
    bar.finish_and_clear();
    let Walk {
        writer, s, conn, ..
    } = walk;
    let sequence: u64 = journal::meta_get(conn, "next_sequence")
        .map_err(db)?
        .and_then(|x| x.parse().ok())
        .unwrap_or(1);
    let header = Header {
        bundle_id: bundle::new_bundle_id(),
        site: home.site.clone(),
        sequence,
        created: now,
        expires: now + time::Duration::days(o.expires_days.clamp(1, 365).into()),
        tool: makproxy_core::tool_version("makproxy-online"),
        fields: [
            "handle",
            "installation_id",
            "extended_product_id",
            "confirmation_id",
            "failure",
            "source",
            "simulated",
        ]
        .map(String::from)
        .to_vec(),
        answers: Some(Answers {
            bundle_id: m.bundle_id.clone(),
            manifest_sha256: v.manifest_sha256.clone(),
            site: m.site.clone(),
            sequence: m.sequence,
        }),
        backend: Some(BackendInfo {
            name: o.backend.name().into(),
            simulated,
        }),
    };
    let written = writer.finish(header, &key, o.out)?;
    let tx = conn.transaction().map_err(db)?;
    tx.execute(
        "INSERT OR REPLACE INTO returns(bundle_id, answers, sequence, file, at) VALUES(?1, ?2, ?3, ?4, ?5)",
        params![written.manifest.bundle_id, m.bundle_id, sequence as i64, o.out.display().to_string(), written.manifest.created],
    )
    .map_err(db)?;
    journal::meta_set(&tx, "next_sequence", &(sequence + 1).to_string()).map_err(db)?;
    tx.commit().map_err(db)?;

    out.json(&json!({"return_bundle": o.out, "bundle_id": written.manifest.bundle_id, "answers": m.bundle_id, "backend": o.backend.name(), "simulated": simulated, "summary": s}));
    if simulated {
        out.line("SIMULATOR backend: the CIDs in this return are simulated and activate nothing.");
    }
    out.line(format!(
        "Wrote {}: {} record(s): {} CID(s) obtained now, {} from the journal (no activation spent), {} failed.",
        escape(&o.out.display().to_string()),
        s.records,
        s.obtained,
        s.from_journal,
        s.failed
    ));
    for (reason, n) in &s.failed_by_reason {
        let meaning = if reason.starts_with("MP-") {
            String::new()
        } else {
            format!(" ({})", makproxy_backend::service_code_meaning(reason))
        };
        out.line(format!("  {n} x {reason}{meaning}"));
    }
    Ok(if s.failed > 0 {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

/// `worksheet`: the records of a CIL bundle the journal cannot answer, as a CSV to fill
/// in and a printable text form beside it (same name, `.txt`).
pub fn worksheet(
    out: &Output,
    home: &Home,
    conn: &mut Connection,
    input: &Path,
    path: &Path,
) -> Result<Exit, CliError> {
    use makproxy_backend::manual::{worksheet_csv, worksheet_text, Row};
    let mut v = bundle::open(
        input,
        Kind::Cil,
        &home.trusted()?,
        makproxy_cli::now(),
        &Limits::default(),
    )?;
    let mut rows = Vec::new();
    let mut answered = 0u64;
    v.records(|r: CilRecord| {
        if journal::answer(
            conn,
            r.installation_id.digits(),
            r.extended_product_id.as_str(),
            false,
        )
        .map_err(db)?
        .is_some()
        {
            answered += 1;
        } else {
            rows.push(Row {
                handle: r.handle,
                iid: r.installation_id,
                epid: r.extended_product_id,
                product: r.product,
            });
        }
        Ok::<(), CliError>(())
    })?;
    let txt = path.with_extension("txt");
    makproxy_core::fsutil::write_atomic(path, worksheet_csv(&rows).as_bytes())
        .map_err(|e| CliError::io(path.display(), e))?;
    makproxy_core::fsutil::write_atomic(
        &txt,
        worksheet_text(&rows, &v.manifest.bundle_id).as_bytes(),
    )
    .map_err(|e| CliError::io(txt.display(), e))?;
    out.json(&json!({"worksheet": path, "printable": txt, "records": rows.len(), "already_answered": answered}));
    out.line(format!(
        "Wrote {} record(s) to {} and {} ({answered} already answered by the journal).",
        rows.len(),
        escape(&path.display().to_string()),
        escape(&txt.display().to_string())
    ));
    out.line("Fill in the confirmation_id column, then: activate FILE --out RETURN --backend manual --worksheet SHEET");
    Ok(Exit::Ok)
}
