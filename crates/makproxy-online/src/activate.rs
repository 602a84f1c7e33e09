//! `activate IN --out OUT --backend NAME`: verify a CIL bundle from a trusted secure
//! site, obtain a CID or a refusal for every record, and write the signed return.
//!
//! Nothing is spent before everything checkable is checked: the output path is free,
//! the keys and journal open, and a full pass over the verified records finds every
//! record valid. Then one walk over the records. A record the journal answers (or that
//! the same backend refused earlier) is settled at once; a record whose earlier request
//! may have reached the service (an open intent from a run that died) is *uncertain*
//! and is not sent again without `--retry-uncertain`; any other record is handed to a
//! small pool of workers (bounded concurrency, polite by default). Before a request for
//! a backend that can spend leaves, its intent is committed; each answer is committed
//! (closing the intent) on the main thread before it is used for anything. Records go
//! into the return in bundle order as soon as they and every record before them are
//! settled; the return file gets its final name only once all are written and signed.
//!
//! Stopping: Ctrl-C (or SIGTERM) stops handing out requests, waits for those in flight,
//! commits their answers and exits 130; a second Ctrl-C ends the process at once (what
//! was in flight is then uncertain, as after a kill). After `--max-transport-failures`
//! consecutive requests that got no answer, nothing more is sent; a return holding
//! nothing but such failures is not written.

use crate::journal::{Intent, Journal, JournalError, NewAnswer, RecordOf};
use makproxy_backend::{activate_with_retry, Backend, Outcome, Remaining, Request, RetryPolicy};
use makproxy_cli::Progress;
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{
    self, Answers, BackendInfo, BackendKind, BundleId, BundleWriter, CilRecord, FailureCode,
    Header, Kind, RecordFailure, ReturnAnswer, ReturnRecord, ServiceCode, Source,
};
use makproxy_core::home::Home;
use makproxy_core::ids::{ConfirmationId, ExtendedProductId, InstallationId};
use makproxy_core::sanitize::escape;
use makproxy_core::Code;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `activate` was asked to do.
pub struct Options<'a> {
    /// The CIL bundle to answer.
    pub input: &'a Path,
    /// The return bundle to write.
    pub out: &'a Path,
    /// Where answers come from.
    pub backend: &'a dyn Backend,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of requests that cannot have been sent.
    pub retry: RetryPolicy,
    /// Days until the return bundle expires.
    pub expires_days: u32,
    /// Refuse the batch if the key has fewer activations left than it needs.
    pub check_remaining: bool,
    /// Ask again for records refused in an earlier run.
    pub retry_failed: bool,
    /// Send again the records whose earlier request may have been counted.
    pub retry_uncertain: bool,
    /// Consecutive requests without an answer after which nothing more is sent.
    pub max_transport_failures: u32,
    /// Count what would be sent; send and write nothing.
    pub dry_run: bool,
    /// Set by the signal handler: stop handing out requests and finish cleanly.
    pub stop: &'a AtomicBool,
}

#[derive(Debug, Default, serde::Serialize)]
/// What a run did (`--json` prints it as `summary`).
pub struct Summary {
    /// Records in the bundle.
    pub records: u64,
    /// CIDs obtained from the backend in this run.
    pub obtained: u64,
    /// CIDs served from the journal (no activation spent).
    pub from_journal: u64,
    /// Records without a CID (including `no_response` and `uncertain`).
    pub failed: u64,
    /// Requests that never reached the backend (retried up to --attempts).
    pub no_response: u64,
    /// Requests that may have reached the service without an answer recorded.
    pub uncertain: u64,
    /// Answers with the signs of the service's own outage (MP-BKD-015: 0x80004003,
    /// in a well-formed answer): nothing spent, nothing stored as a refusal.
    pub outage: u64,
    /// Failures by code (service code where there is one).
    pub failed_by_reason: BTreeMap<Reason, u64>,
    /// The first failed records, for the screen (not in --json: the return has all).
    #[serde(skip)]
    pub first_failures: Vec<(u64, RecordFailure)>,
    /// CIDs obtained from the backend per ePID (what the return's `remaining` counts
    /// as spent).
    #[serde(skip)]
    pub obtained_per_epid: BTreeMap<String, u64>,
}

/// Why records failed, as `failed_by_reason` counts them: the activation service's own
/// code where it gave one, else makproxy's. Serialised (and ordered) as that code.
#[derive(Debug, Clone)]
pub enum Reason {
    /// The service's code, verbatim (`0x7F`).
    Service(ServiceCode),
    /// makproxy's code for a failure the service did not name (no answer, a protocol
    /// error …), possibly one this build does not know (from an older journal).
    Makproxy(FailureCode),
}

impl Reason {
    /// The reason a failure is counted under.
    pub fn of(f: &RecordFailure) -> Reason {
        match &f.service_code {
            Some(s) => Reason::Service(s.clone()),
            None => Reason::Makproxy(f.code.clone()),
        }
    }
    /// The code as printed and as the JSON key.
    pub fn key(&self) -> &str {
        match self {
            Reason::Service(s) => s.as_str(),
            Reason::Makproxy(c) => c.as_str(),
        }
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Reason {}

impl Ord for Reason {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl PartialOrd for Reason {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

/// The code, escaped, with what it means: the service's codes from the known table,
/// makproxy's from the registry.
impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meaning = match self {
            Reason::Service(s) => makproxy_backend::service_code_meaning(s.as_str()),
            Reason::Makproxy(c) => c.known().map_or("", Code::summary),
        };
        write!(f, "{}", escape(self.key()))?;
        if !meaning.is_empty() {
            write!(f, " ({meaning})")?;
        }
        Ok(())
    }
}

/// Failed records shown one by one on screen at most.
const SHOWN_FAILURES: usize = 20;

struct Job {
    handle: u64,
    req: Request,
    key: Key,
}

/// What the journal is keyed by, besides the simulated flag fixed for a run: made once
/// per record and shared (the queue, the maps and the job hold the same one).
type Key = std::sync::Arc<(InstallationId, ExtendedProductId)>;

fn key(iid: &InstallationId, epid: &ExtendedProductId) -> Key {
    std::sync::Arc::new((iid.clone(), epid.clone()))
}

/// A record waiting in the queue: its answer, or the key whose answer it waits for.
enum Slot {
    Known(Answer),
    Waiting(Key),
}

/// What the return says for one record.
#[derive(Clone)]
enum Answer {
    /// `now`: obtained by this run (else served from the journal); `by`: who obtained it.
    Cid {
        cid: ConfirmationId,
        now: bool,
        by: BackendKind,
    },
    Failed(RecordFailure),
}

/// Simulated answers committed together at most. Each commit rewrites the journal's
/// index pages the group touched, which at a million answers is most of them: larger
/// groups write each page fewer times (8,192 -> 32,768: 21 s -> 17 s at 1M).
const MAX_BATCH: usize = 32768;
/// Records waiting for an answer (held in memory, in bundle order) at most.
const MAX_WAITING: usize = 2 * MAX_BATCH;
/// Longest an answer waits for its group's commit.
const MAX_COMMIT_DELAY: Duration = Duration::from_millis(1000);

/// The main thread's side of the walk: requests handed out, answers awaiting their
/// commit, records awaiting their answer, and the return being written.
struct Walk<'a> {
    journal: &'a mut Journal,
    backend: BackendKind,
    simulated: bool,
    run: i64,
    bundle_id: &'a BundleId,
    jobs: Option<SyncSender<Vec<Job>>>,
    answers: Receiver<Vec<(Job, Outcome)>>,
    /// Requests not yet handed out, and how many travel together.
    parcel: Vec<Job>,
    parcel_size: usize,
    in_flight: usize,
    /// Workers; for a backend that can spend, requests in flight at most.
    concurrency: usize,
    /// Answers received and not yet committed; committed when `group` wait or the
    /// oldest has waited `MAX_COMMIT_DELAY`.
    uncommitted: Vec<(Job, Outcome)>,
    group: usize,
    oldest: Option<Instant>,
    /// Records in bundle order from the first one not yet written; `None`: waiting.
    queue: VecDeque<(CilRecord, Slot)>,
    /// Keys asked in this run whose records are still queued, with how many wait.
    waiting_on: HashMap<Key, usize>,
    /// Committed answers to those keys.
    settled: HashMap<Key, Answer>,
    /// Refusals received in this run: a later record with the same key (a cloned
    /// machine further on in the bundle) gets the same answer without a new request.
    refused: HashMap<Key, Answer>,
    skip_refused: bool,
    uncertain: Uncertainty,
    retry_uncertain: bool,
    /// Consecutive answers that were transport failures, and the limit.
    transport_failures: u32,
    max_transport_failures: u32,
    /// The service stopped answering: nothing more is sent.
    unreachable: &'a AtomicBool,
    interrupted: &'a AtomicBool,
    writer: BundleWriter<ReturnRecord>,
    out: &'a Path,
    bar: &'a Progress,
    s: Summary,
}

fn stopped() -> CliError {
    CliError::io("backend workers", "stopped")
}

fn interrupted() -> CliError {
    CliError::new(
        Exit::Interrupted,
        Some(Code::BkdInterrupted),
        "stopped on request; every answer obtained so far is saved in the journal",
    )
    .hint("run the same activate command again to finish (nothing answered is asked twice)")
}

impl Walk<'_> {
    /// Takes one record of the bundle: settled from the journal, or asked.
    fn record(&mut self, r: CilRecord) -> Result<(), CliError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(interrupted());
        }
        let k = key(&r.installation_id, &r.extended_product_id);
        let slot = match self.known(&r, &k)? {
            Some(a) => Slot::Known(a),
            None => {
                let n = self.waiting_on.entry(k.clone()).or_default();
                *n += 1;
                // The first record with this key asks; duplicates wait for its answer.
                if *n == 1 {
                    self.parcel.push(Job {
                        handle: r.handle,
                        req: Request {
                            iid: r.installation_id.clone(),
                            epid: r.extended_product_id.clone(),
                        },
                        key: k.clone(),
                    });
                    if self.parcel.len() >= self.parcel_size {
                        self.hand_out()?;
                    }
                }
                Slot::Waiting(k)
            }
        };
        self.queue.push_back((r, slot));
        self.write_settled()?;
        while self.queue.len() > MAX_WAITING {
            self.wait()?;
        }
        // Answers that may have spent an activation are not left uncommitted.
        self.commit_spending()
    }

    /// Commits answers from a backend that can spend, if any wait: called before the
    /// main thread blocks or moves on, so such an answer is never held in memory only.
    fn commit_spending(&mut self) -> Result<(), CliError> {
        if !self.simulated && !self.uncommitted.is_empty() {
            self.commit_with(&[])?;
        }
        Ok(())
    }

    /// The answer a record gets without a request, if any.
    fn known(&self, r: &CilRecord, k: &Key) -> Result<Option<Answer>, CliError> {
        if let Some(st) = self.journal.answer(&k.0, &k.1, self.simulated)? {
            return Ok(Some(Answer::Cid {
                cid: st.cid,
                now: st.run == self.run,
                by: st.backend,
            }));
        }
        if let Some(a) = self.refused.get(k) {
            return Ok(Some(a.clone()));
        }
        if self.skip_refused {
            if let Some(f) = self
                .journal
                .failure(self.bundle_id, r.handle, self.backend)?
            {
                return Ok(Some(Answer::Failed(f)));
            }
        }
        if !self.retry_uncertain && !self.waiting_on.contains_key(k) {
            if let Some(i) = self.uncertain.of(self.journal, &k.0, &k.1)? {
                return Ok(Some(Answer::Failed(RecordFailure::new(
                    Code::BkdUncertain,
                    &format!(
                        "a request to the {} backend at {} (run {}) may have reached the service and no answer was recorded; not sent again without --retry-uncertain",
                        i.backend, i.at, i.run_id
                    ),
                ))));
            }
        }
        if self.unreachable.load(Ordering::SeqCst) {
            return Ok(Some(Answer::Failed(RecordFailure::new(
                Code::BkdNoResponse,
                "not sent: the activation service stopped answering earlier in this run",
            ))));
        }
        Ok(None)
    }

    /// Hands the parcel to the workers. For a backend that can spend, a request is
    /// handed over only when a worker is free to send it at once, and its intent is
    /// durable first: an intent without an answer then really means "may have left".
    /// Simulated parcels queue up (taking answers while the queue is full).
    fn hand_out(&mut self) -> Result<(), CliError> {
        if self.parcel.is_empty() {
            return Ok(());
        }
        let mut jobs = std::mem::replace(&mut self.parcel, Vec::with_capacity(self.parcel_size));
        let n = jobs.len();
        let tx = self.jobs.clone().ok_or_else(stopped)?;
        if !self.simulated {
            while self.in_flight + n > self.concurrency {
                self.commit_spending()?;
                let got = self.answers.recv().map_err(|_| stopped())?;
                self.take(got)?;
            }
            // The new intents and the answers just received: one commit.
            self.commit_with(&jobs)?;
            // A rendezvous: returns once a free worker has taken the job.
            tx.send(jobs).map_err(|_| stopped())?;
        } else {
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
            self.commit_spending()?;
            let got = self.answers.recv().map_err(|_| stopped())?;
            self.take(got)
        } else {
            self.commit_with(&[])
        }
    }

    fn take(&mut self, got: Vec<(Job, Outcome)>) -> Result<(), CliError> {
        self.in_flight -= got.len();
        for (_, o) in &got {
            match o {
                Outcome::NotSent(_) | Outcome::Uncertain(_) | Outcome::Outage(_) => {
                    self.transport_failures += 1
                }
                _ => self.transport_failures = 0,
            }
        }
        if self.max_transport_failures > 0 && self.transport_failures >= self.max_transport_failures
        {
            self.unreachable.store(true, Ordering::SeqCst);
        }
        self.uncommitted.extend(got);
        // Answers that arrived meanwhile join this commit.
        while let Ok(more) = self.answers.try_recv() {
            self.in_flight -= more.len();
            self.uncommitted.extend(more);
        }
        if !self.simulated {
            // Committed by the caller (with the next intent, or before it blocks).
            return Ok(());
        }
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.uncommitted.len() >= self.group || oldest.elapsed() >= MAX_COMMIT_DELAY {
            self.commit_with(&[])?;
        }
        Ok(())
    }

    /// Persists the answers received, and the intents of `asking` (requests about to
    /// leave), in one transaction; then lets the records waiting on the answers go.
    fn commit_with(&mut self, asking: &[Job]) -> Result<(), CliError> {
        self.persist(asking).map_err(|e| self.unsaved(e))?;
        self.release()
    }

    /// A failed persist stops the run; real CIDs obtained and not saved are named in
    /// the error (a CID is no secret), so an operator can still record them (manual
    /// worksheet) instead of spending another activation.
    fn unsaved(&self, e: CliError) -> CliError {
        let lost: Vec<String> = self
            .uncommitted
            .iter()
            .filter_map(|(j, o)| match o {
                Outcome::Cid(c) if !self.simulated => {
                    Some(format!("IID {} -> CID {}", j.req.iid.digits(), c.digits()))
                }
                _ => None,
            })
            .collect();
        if lost.is_empty() {
            return e;
        }
        let message = format!(
            "{}; {} confirmation ID(s) obtained but NOT saved, keep them: {}",
            e.message,
            lost.len(),
            lost.join("; ")
        );
        CliError { message, ..e }.hint(
            "free space for the journal, then enter the CIDs above with --backend manual (a worksheet); their IIDs are otherwise uncertain",
        )
    }

    /// Writes the answers received and then the intents of `asking` in one
    /// transaction. An intent refused (a key that already holds an answer) writes none
    /// of them, and the answers are committed before the refusal ends the run: a CID
    /// obtained is never lost to a request that is not sent. (Defence in depth: the
    /// walk looks every key up before asking, asks each key once per run, and the
    /// journal is opened in SQLite's exclusive locking mode, so no other writer can
    /// answer a key in between; the journal's tests cover the refusal itself.)
    fn persist(&mut self, asking: &[Job]) -> Result<(), CliError> {
        let at = bundle::rfc3339(makproxy_cli::now());
        let Walk {
            journal,
            uncommitted,
            bundle_id,
            backend,
            simulated,
            run,
            ..
        } = self;
        let b = journal.batch()?;
        let mut cids = Vec::new();
        for (job, outcome) in uncommitted.iter() {
            let (iid, epid) = (&job.req.iid, &job.req.epid);
            match outcome {
                Outcome::Cid(cid) => {
                    cids.push(NewAnswer { iid, epid, cid });
                    Ok(())
                }
                Outcome::Failed(f) => b.save_failure(
                    &RecordOf {
                        bundle_id,
                        handle: job.handle,
                        backend: *backend,
                        iid,
                        epid,
                    },
                    &RecordFailure::from(f.clone()),
                    &at,
                ),
                // It never left, or the failing service issued nothing: nothing can
                // have been spent, and no refusal is kept (the IID stays askable).
                Outcome::NotSent(_) | Outcome::Outage(_) => b.settle(iid, epid),
                // The intent stays open: the next run knows this one is uncertain.
                Outcome::Uncertain(_) => Ok(()),
            }?;
        }
        b.save_answers(&cids, *simulated, *run, &at)?;
        let keys: Vec<_> = asking.iter().map(|j| (&j.req.iid, &j.req.epid)).collect();
        match b.intend(&keys, *backend, *run, &at) {
            Ok(()) => b.commit().map_err(CliError::from),
            Err(refused @ JournalError::Backwards(_)) => {
                b.commit()?;
                // Saved: the error must not name them as unsaved.
                uncommitted.clear();
                Err(CliError::from(refused))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// After a commit: lets the records waiting on the saved answers go.
    fn release(&mut self) -> Result<(), CliError> {
        for (job, outcome) in std::mem::take(&mut self.uncommitted) {
            let answer = match outcome {
                Outcome::Cid(cid) => Answer::Cid {
                    cid,
                    now: true,
                    by: self.backend,
                },
                Outcome::Failed(f) => {
                    let a = Answer::Failed(f.into());
                    self.refused.insert(job.key.clone(), a.clone());
                    a
                }
                Outcome::NotSent(why) => Answer::Failed(RecordFailure::new(
                    Code::BkdNoResponse,
                    &format!("{why}; nothing was spent: run activate again to retry"),
                )),
                Outcome::Outage(f) => {
                    let mut r = RecordFailure::from(f);
                    r.message = makproxy_core::bundle::FailureMessage::cut(&format!(
                        "{}; nothing was spent: run activate again later",
                        r.message.as_str()
                    ));
                    Answer::Failed(r)
                }
                Outcome::Uncertain(why) => {
                    // A twin further on in the bundle must not be sent again either.
                    let a = Answer::Failed(RecordFailure::new(
                        Code::BkdUncertain,
                        &format!("{why}; not sent again without --retry-uncertain"),
                    ));
                    self.refused.insert(job.key.clone(), a.clone());
                    a
                }
            };
            self.settled.insert(job.key, answer);
        }
        self.oldest = None;
        self.write_settled()
    }

    /// Writes the records at the front of the queue whose answers are known.
    fn write_settled(&mut self) -> Result<(), CliError> {
        while let Some((_, slot)) = self.queue.front() {
            if let Slot::Waiting(k) = slot {
                if !self.settled.contains_key(k) {
                    return Ok(());
                }
            }
            let (r, slot) = self.queue.pop_front().expect("front exists");
            let answer = match slot {
                Slot::Known(a) => a,
                Slot::Waiting(k) => {
                    let n = self.waiting_on.get_mut(&k).expect("counted when queued");
                    *n -= 1;
                    if *n == 0 {
                        self.waiting_on.remove(&k);
                        self.settled.remove(&k).expect("checked above")
                    } else {
                        self.settled.get(&k).cloned().expect("checked above")
                    }
                }
            };
            self.write(r, answer)?;
        }
        Ok(())
    }

    fn write(&mut self, r: CilRecord, answer: Answer) -> Result<(), CliError> {
        let (answer, source, backend) = match answer {
            Answer::Cid { cid, now, by } => {
                if now {
                    self.s.obtained += 1;
                    if !r.extended_product_id.is_absent() {
                        let epid = r.extended_product_id.as_str();
                        match self.s.obtained_per_epid.get_mut(epid) {
                            Some(n) => *n += 1,
                            None => {
                                self.s.obtained_per_epid.insert(epid.to_string(), 1);
                            }
                        }
                    }
                } else {
                    self.s.from_journal += 1;
                }
                let source = if now {
                    Source::Backend
                } else {
                    Source::Journal
                };
                (ReturnAnswer::Confirmed(cid), source, by)
            }
            Answer::Failed(f) => {
                self.s.failed += 1;
                if f.code == Code::BkdNoResponse {
                    self.s.no_response += 1;
                } else if f.code == Code::BkdUncertain {
                    self.s.uncertain += 1;
                } else if f.code == Code::BkdOutage {
                    self.s.outage += 1;
                }
                *self.s.failed_by_reason.entry(Reason::of(&f)).or_default() += 1;
                if self.s.first_failures.len() < SHOWN_FAILURES {
                    self.s.first_failures.push((r.handle, f.clone()));
                }
                (ReturnAnswer::Failed(f), Source::Journal, self.backend)
            }
        };
        let rec = ReturnRecord {
            handle: r.handle,
            installation_id: r.installation_id,
            extended_product_id: r.extended_product_id,
            answer,
            source,
            backend,
            simulated: self.simulated,
        };
        self.bar.inc(1);
        self.writer
            .push(rec)
            .map_err(|e| CliError::io(self.out.display(), e))
    }

    /// After the last record: hands out the rest, waits for every answer, writes all.
    fn drain(&mut self) -> Result<(), CliError> {
        self.hand_out()?;
        self.close()?;
        debug_assert!(self.queue.is_empty(), "every record was written");
        Ok(())
    }

    /// Closes the job queue (the workers end once it is empty), then receives and
    /// commits every answer still in flight: an answer is never dropped.
    fn close(&mut self) -> Result<(), CliError> {
        self.jobs = None;
        while self.in_flight > 0 {
            self.commit_spending()?;
            let got = self.answers.recv().map_err(|_| stopped())?;
            self.take(got)?;
        }
        self.commit_with(&[])
    }
}

/// What the pre-flight pass over the verified records found.
struct Need {
    /// Records the backend would be asked for, per ePID.
    per_epid: BTreeMap<String, u64>,
    /// Records without an ePID the backend would be asked for (only a phone activation
    /// answers them; a backend that needs an ePID refuses them without sending).
    phone_only: u64,
    /// The key channel the CIL records name for each ePID (format version 3).
    channels: BTreeMap<String, makproxy_core::channel::Channel>,
    /// The key behind each ePID, by the bundle's key group (format version 4): one key
    /// behind several ePIDs (one per build or edition) is checked for their sum.
    keys: BTreeMap<String, std::num::NonZeroU32>,
    /// Records that would be reported uncertain instead of asked.
    uncertain: u64,
}

/// Which records of this run may have reached the service without an answer recorded:
/// open intents of runs that died, and (after `recover`) every record of a request
/// made before the journal was rebuilt. Only backends that can spend care.
struct Uncertainty {
    /// Some intent is open.
    open: bool,
    /// When the journal was recovered, if this request was made up to then.
    lost: Option<String>,
}

impl Uncertainty {
    fn of_run(journal: &Journal, simulated: bool, m: &bundle::Manifest) -> Result<Self, CliError> {
        if simulated {
            return Ok(Uncertainty {
                open: false,
                lost: None,
            });
        }
        let at = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        };
        let lost = journal
            .recovered_at(&m.bundle_id)?
            .filter(|r| matches!((at(&m.created), at(r)), (Some(c), Some(r)) if c <= r));
        Ok(Uncertainty {
            open: journal.any_intent()?,
            lost,
        })
    }

    /// The intent (open, or lost with the old journal) that makes this key uncertain.
    fn of(
        &self,
        journal: &Journal,
        iid: &InstallationId,
        epid: &ExtendedProductId,
    ) -> crate::journal::Result<Option<Intent>> {
        if !self.open && self.lost.is_none() {
            return Ok(None);
        }
        journal.open_intent(iid, epid, self.lost.as_deref())
    }
}

/// Reads every record once before anything is spent: a record the reader refuses ends
/// the run here (no request sent), and the counts serve --dry-run and --check-remaining.
fn preflight(
    v: &mut bundle::Verified,
    journal: &Journal,
    o: &Options,
    skip_refused: bool,
    uncertain: &Uncertainty,
) -> Result<Need, CliError> {
    let (simulated, kind) = (o.backend.simulated(), o.backend.kind());
    let bundle_id = v.manifest.bundle_id.clone();
    let counting = o.dry_run || o.check_remaining;
    let mut need = Need {
        per_epid: BTreeMap::new(),
        phone_only: 0,
        channels: BTreeMap::new(),
        keys: BTreeMap::new(),
        uncertain: 0,
    };
    // A worksheet is checked against the whole bundle before anything is used.
    let batch_check = o.backend.prepared_batch();
    let mut iids = std::collections::HashSet::new();
    v.records(|r: CilRecord| {
        if batch_check {
            iids.insert(r.installation_id.digits().to_string());
        }
        if !counting {
            return Ok::<(), CliError>(());
        }
        let (iid, epid) = (&r.installation_id, &r.extended_product_id);
        if journal.answer(iid, epid, simulated)?.is_some()
            || (skip_refused && journal.failure(&bundle_id, r.handle, kind)?.is_some())
        {
            return Ok(());
        }
        if !o.retry_uncertain && uncertain.of(journal, iid, epid)?.is_some() {
            need.uncertain += 1;
            return Ok(());
        }
        if r.extended_product_id.is_absent() {
            need.phone_only += 1;
        } else {
            *need.per_epid.entry(epid.to_string()).or_default() += 1;
            if let Some(c) = r.channel {
                need.channels.insert(epid.to_string(), c);
            }
            if let Some(k) = r.key_group {
                need.keys.entry(epid.to_string()).or_insert(k);
            }
        }
        Ok(())
    })?;
    o.backend.check_batch(&iids).map_err(|e| {
        CliError::new(Exit::Error, Some(Code::BkdForeignAnswer), escape(&e))
            .hint("use the worksheet written for this bundle (`worksheet FILE --out SHEET`); nothing was recorded")
    })?;
    Ok(need)
}

/// Answers the CIL bundle `o.input` and writes the return `o.out`.
pub fn run(
    out: &Output,
    home: &Home,
    journal: &mut Journal,
    o: &Options,
) -> Result<Exit, CliError> {
    // Everything that can be checked is checked before anything is spent.
    if !o.dry_run {
        makproxy_cli::new_output(
            o.out,
            "a return bundle",
            Code::BndExists,
            "choose another --out name (nothing was sent to any backend)",
        )?;
    }
    let key = home.signing_key()?;
    let now = makproxy_cli::now();
    let mut v = makproxy_cli::open_bundle(home, o.input, Kind::Cil, now)?;
    let m = v.manifest.clone();
    let simulated = o.backend.simulated();
    let kind = o.backend.kind();

    let signer = v.signer.key.key_id();
    refuse_replay(journal, &v, &signer)?;

    // Refusals this backend gave for this bundle are not asked again (unless
    // --retry-failed); open intents only matter to backends that can spend.
    let skip_refused = !o.retry_failed && journal.any_failure(&m.bundle_id, kind)?;
    let uncertain = Uncertainty::of_run(journal, simulated, &m)?;
    let lost = uncertain.lost.is_some();
    let need = preflight(&mut v, journal, o, skip_refused, &uncertain)?;
    let total: u64 = need.per_epid.values().sum::<u64>() + need.phone_only;
    if o.dry_run {
        out.report(&DryRun {
            dry_run: true,
            records: m.records,
            would_request: total,
            uncertain: need.uncertain,
            per_epid: need.per_epid,
            phone_only: need.phone_only,
            backend: o.backend.name(),
        });
        return Ok(Exit::Ok);
    }
    let counts = if o.check_remaining {
        check_remaining(o.backend, &need, now)?
    } else {
        Vec::new()
    };
    // Everything the return will say is read now, before anything is spent.
    let rule = site_rule(home, &m.site)?;

    let at = bundle::rfc3339(now);
    journal.record_request(
        &m.bundle_id,
        &m.site,
        m.sequence,
        &v.manifest_sha256,
        &signer,
        &at,
    )?;
    let endpoint = o.backend.endpoint();
    let run = journal.start_run(&bundle::random_hex_id(), &m.bundle_id, kind, &endpoint, &at)?;
    let this_run = ThisRun {
        run,
        skip_refused,
        uncertain,
    };
    let (writer, s, unreachable) = walk_bundle(out, journal, o, &mut v, this_run)?;

    let got_answers =
        s.obtained + s.from_journal + (s.failed - s.no_response - s.uncertain - s.outage);
    if unreachable && got_answers == 0 {
        drop(writer);
        if s.outage > 0 {
            return Err(CliError::new(
                Exit::Error,
                Some(Code::BkdOutage),
                format!(
                    "the activation service is failing: {} answer(s) with the signs of an outage (0x80004003) and no CID; nothing spent, nothing stored as a refusal, no return written",
                    s.outage
                ),
            )
            .hint("run the same command again later; every record stays askable"));
        }
        return Err(CliError::new(
            Exit::Error,
            Some(Code::BkdNoResponse),
            format!(
                "service unreachable: {} consecutive requests got no answer; no return written ({} uncertain)",
                o.max_transport_failures, s.uncertain
            ),
        )
        .hint("check the network, proxy and --endpoint, then run the same command again; uncertain records need --retry-uncertain"));
    }

    let remaining = carried_counts(counts, &s.obtained_per_epid);
    let facts = ReturnFacts {
        endpoint: &endpoint,
        remaining,
        site_rule: rule,
        now,
    };
    let written = write_return(home, journal, o, &v, &key, writer, facts)?;
    // A bundle from before a journal recovery, gone through whole with
    // --retry-uncertain (nothing left unsent by a stop or an outage): its records are
    // known from here on.
    let whole =
        !unreachable && s.no_response == 0 && s.outage == 0 && !o.stop.load(Ordering::SeqCst);
    if lost && o.retry_uncertain && whole {
        journal.clear_lost(&m.bundle_id, &at)?;
    }
    let exit = Exit::outcome(s.obtained + s.from_journal, s.failed);
    out.report(&Activated {
        return_bundle: o.out.to_path_buf(),
        bundle_id: written.manifest.bundle_id,
        answers: written.manifest.answers,
        backend: written.manifest.backend,
        endpoint,
        simulated,
        summary: s,
    });
    Ok(exit)
}

/// Replay: one (signing key, sequence) is one bundle. The same bundle again is a
/// resume. (The reader has checked the manifest's site is the signing key's.)
fn refuse_replay(journal: &Journal, v: &bundle::Verified, signer: &str) -> Result<(), CliError> {
    let m = &v.manifest;
    if let Some(other) = journal
        .request_with_sequence(signer, m.sequence)?
        .filter(|b| *b != m.bundle_id)
    {
        let highest = journal
            .sequences()?
            .into_iter()
            .filter(|q| q.signer_key_id == signer)
            .map(|q| q.highest)
            .max()
            .unwrap_or(m.sequence);
        return Err(CliError::rejected(
            Code::AplReplay,
            format!(
                "the key of site {:?} (trusted as {:?}) already sent a different bundle ({other}) with sequence {}",
                escape(&m.site),
                escape(&v.signer.name),
                m.sequence
            ),
        )
        .hint(format!(
            "the highest sequence this gateway has taken from that key is {highest} (journal sequences). A secure side recovered with too low a number: move its new ledger aside and run `makproxy-secure recover --next-sequence {next}`, then collect and pack again. Otherwise this is a replayed bundle: discard it",
            next = highest + 1
        )));
    }
    Ok(())
}

/// The counts `--check-remaining` saw, with what this run then spent per ePID, as the
/// return carries them: at most the reader's limit (the first ePIDs in order; several
/// ePIDs of one key give the same count), so the return is never one its reader
/// refuses after activations were spent.
fn carried_counts(
    counts: Vec<bundle::RemainingCount>,
    spent: &BTreeMap<String, u64>,
) -> Option<Vec<bundle::RemainingCount>> {
    (!counts.is_empty()).then(|| {
        counts
            .into_iter()
            .take(bundle::MAX_REMAINING)
            .map(|mut c| {
                c.spent = spent
                    .get(c.extended_product_id.as_str())
                    .copied()
                    .unwrap_or(0);
                c
            })
            .collect()
    })
}

/// `--check-remaining`: every key behind the batch has enough activations left. Each
/// ePID is asked about; ePIDs the bundle says share a key (the same key group) must
/// have enough between them: the smallest count among them covers
/// their sum. The counts go back in the return (`remaining`), for the secure side's key
/// inventory.
fn check_remaining(
    backend: &dyn Backend,
    need: &Need,
    now: time::OffsetDateTime,
) -> Result<Vec<bundle::RemainingCount>, CliError> {
    // The bundle says which kind of key it is (a MAK, a KMS host key, retail).
    let kind = |epid: &str| {
        need.channels
            .get(epid)
            .map_or("key".to_string(), |c| format!("{c} key"))
    };
    let not_enough = |what: String| {
        CliError::rejected(Code::BkdNotEnough, what)
            .hint("split the batch with pack --limit, or raise the key's limit with Microsoft")
    };
    let mut counts = Vec::new();
    let mut per_key: BTreeMap<std::num::NonZeroU32, (Vec<&str>, u64, Remaining)> = BTreeMap::new();
    for (epid, n) in &need.per_epid {
        let epid_v = ExtendedProductId::parse(epid).map_err(|e| CliError::io("journal", e))?;
        let left = backend.remaining(&epid_v).map_err(|f| {
            CliError::new(
                Exit::Error,
                Some(f.code),
                format!("remaining activations for {epid}: {}", escape(&f.message)),
            )
        })?;
        if !left.allows(*n) {
            return Err(not_enough(format!(
                "the {} behind {epid} has {left}; this batch needs {n}",
                kind(epid)
            )));
        }
        if let Some(k) = need.keys.get(epid) {
            let (epids, sum, least) =
                per_key
                    .entry(*k)
                    .or_insert((Vec::new(), 0, Remaining::Unlimited));
            epids.push(epid);
            *sum += n;
            *least = least.least(left);
        }
        counts.push(bundle::RemainingCount {
            extended_product_id: epid_v,
            activations_remaining: left.as_count(),
            spent: 0,
            checked: bundle::rfc3339(now),
        });
    }
    for (epids, sum, least) in per_key.into_values() {
        if epids.len() > 1 && !least.allows(sum) {
            return Err(not_enough(format!(
                "one {} stands behind {} product IDs of this batch ({}): it has {least}; the batch needs {sum} of it",
                kind(epids[0]),
                epids.len(),
                epids.join(", ")
            )));
        }
    }
    Ok(counts)
}

/// Walks the bundle's records through the journal and `o.concurrency` workers into the
/// return's writer (see [`Walk`]). Returns the writer with every record written, what
/// the run did, and whether the service stopped answering.
fn walk_bundle<'o>(
    out: &Output,
    journal: &mut Journal,
    o: &Options<'o>,
    v: &mut bundle::Verified,
    this_run: ThisRun,
) -> Result<(BundleWriter<ReturnRecord>, Summary, bool), CliError> {
    let ThisRun {
        run,
        skip_refused,
        uncertain,
    } = this_run;
    let (bundle_id, records) = (v.manifest.bundle_id.clone(), v.manifest.records);
    let (simulated, kind) = (o.backend.simulated(), o.backend.kind());
    // What the backend can take at once bounds what --concurrency asks for.
    let concurrency = o
        .concurrency
        .max(1)
        .min(o.backend.max_concurrency().unwrap_or(usize::MAX));
    // Backends that can spend get one request per hand-off, through a rendezvous, so
    // that `concurrency` requests are really in flight and none waits with its intent
    // committed; the simulator answers in microseconds, so its requests travel in
    // parcels and its answers are committed in large groups.
    let (parcel_size, queue, group) = if simulated {
        (256, 4, MAX_BATCH)
    } else {
        (1, 0, 1)
    };
    // A prompt on the terminal must not be drawn over.
    let bar = if o.backend.interactive() {
        Progress::hidden()
    } else {
        out.progress(records, "activate")
    };
    let writer = BundleWriter::new(o.out).map_err(|e| CliError::io(o.out.display(), e))?;
    let (job_tx, job_rx) = mpsc::sync_channel::<Vec<Job>>(queue);
    let (res_tx, res_rx) = mpsc::channel::<Vec<(Job, Outcome)>>();
    let unreachable = AtomicBool::new(false);
    let mut walk = Walk {
        journal,
        backend: kind,
        simulated,
        run,
        bundle_id: &bundle_id,
        jobs: Some(job_tx),
        answers: res_rx,
        parcel: Vec::with_capacity(parcel_size),
        parcel_size,
        in_flight: 0,
        concurrency,
        uncommitted: Vec::with_capacity(group),
        group,
        oldest: None,
        queue: VecDeque::new(),
        waiting_on: HashMap::new(),
        settled: HashMap::new(),
        refused: HashMap::new(),
        skip_refused,
        uncertain,
        retry_uncertain: o.retry_uncertain,
        transport_failures: 0,
        max_transport_failures: o.max_transport_failures,
        unreachable: &unreachable,
        interrupted: o.stop,
        writer,
        out: o.out,
        bar: &bar,
        s: Summary {
            records,
            ..Summary::default()
        },
    };
    let stop = || o.stop.load(Ordering::SeqCst) || unreachable.load(Ordering::SeqCst);
    std::thread::scope(|scope| -> Result<(), CliError> {
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..concurrency {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            let retry = o.retry.clone();
            let stop = &stop;
            scope.spawn(move || loop {
                let next = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(jobs)) = next else { return };
                let answers = jobs
                    .into_iter()
                    .map(|job| {
                        let outcome = activate_with_retry(o.backend, &job.req, &retry, stop);
                        (job, outcome)
                    })
                    .collect();
                if res_tx.send(answers).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let walked = v
            .records(|r: CilRecord| walk.record(r))
            .and_then(|()| walk.drain());
        if let Err(e) = walked {
            // Close the queue so the workers end, and keep every answer in flight.
            let _ = walk.close();
            return Err(e);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    // A stop requested during the final drain ends the run like one requested earlier:
    // every answer is saved, and no return of unsent records is written.
    if o.stop.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    let Walk { writer, s, .. } = walk;
    Ok((writer, s, unreachable.load(Ordering::SeqCst)))
}

/// What a run knows when it starts walking the bundle.
struct ThisRun {
    /// The run's row in the journal.
    run: i64,
    /// Refusals by this backend are served from the journal (not --retry-failed).
    skip_refused: bool,
    /// Which records may have reached the service in a run that died.
    uncertain: Uncertainty,
}

/// The return about to be signed: what it says beyond its records.
struct ReturnFacts<'a> {
    /// The backend's endpoint, as the header names it.
    endpoint: &'a str,
    /// Activations left per key, as the run learnt them.
    remaining: Option<Vec<bundle::RemainingCount>>,
    /// What this gateway requires of the site's bundles (read before anything is spent).
    site_rule: bundle::SiteRule,
    /// Its creation time.
    now: time::OffsetDateTime,
}

/// Signs and writes the return (header, then the records already streamed), and
/// records it in the journal.
fn write_return(
    home: &Home,
    journal: &mut Journal,
    o: &Options,
    v: &bundle::Verified,
    key: &makproxy_core::keys::SigningKey,
    writer: BundleWriter<ReturnRecord>,
    facts: ReturnFacts,
) -> Result<bundle::Written, CliError> {
    let ReturnFacts {
        endpoint,
        remaining,
        site_rule,
        now,
    } = facts;
    let m = &v.manifest;
    let (simulated, kind) = (o.backend.simulated(), o.backend.kind());
    let sequence = journal.next_return_sequence()?;
    let header = Header {
        bundle_id: bundle::BundleId::random(),
        site: home.site.clone(),
        sequence,
        created: now,
        expires: now + time::Duration::days(o.expires_days.clamp(1, 365).into()),
        tool: makproxy_core::tool_version("makproxy-online"),
        fields: ReturnRecord::FIELDS.map(String::from).to_vec(),
        answers: Some(Answers {
            bundle_id: m.bundle_id.clone(),
            manifest_sha256: v.manifest_sha256.clone(),
            site: m.site.clone(),
            sequence: m.sequence,
        }),
        backend: Some(BackendInfo {
            name: kind.as_str().into(),
            simulated,
            endpoint: Some(bundle::truncate_utf8(endpoint, bundle::MAX_ENDPOINT).to_string()),
        }),
        remaining,
        site_rule: Some(site_rule),
    };
    let written = writer.finish(header, key, o.out)?;
    journal.record_return(
        &written.manifest.bundle_id,
        &m.bundle_id,
        sequence,
        &o.out.display().to_string(),
        &written.manifest.created,
    )?;

    Ok(written)
}

/// What this gateway requires of `site`'s bundles, for the return to carry: its rule
/// (`trust require`) and the key it pins now for each of the site's signers (retired
/// keys sign nothing new), so the secure side can name who must still cosign.
fn site_rule(home: &Home, site: &str) -> Result<bundle::SiteRule, CliError> {
    let required = home.quorum()?.get(site).copied().unwrap_or(1);
    let signers = home
        .trusted()?
        .into_iter()
        .filter(|t| t.retired_at.is_none() && t.key.site == site)
        .map(|t| bundle::RuleSigner::new(&t.name, &t.key.key));
    Ok(bundle::SiteRule::new(required, signers))
}

/// `activate --dry-run`.
#[derive(Debug, serde::Serialize)]
pub struct DryRun {
    /// Always true.
    pub dry_run: bool,
    /// Records in the bundle.
    pub records: u64,
    /// Records the backend would be asked for.
    pub would_request: u64,
    /// Records not sent without --retry-uncertain.
    pub uncertain: u64,
    /// Records that would be sent, per extended product ID.
    pub per_epid: BTreeMap<String, u64>,
    /// Of those, records without an ePID (only a phone activation answers them).
    pub phone_only: u64,
    /// The backend's name.
    #[serde(skip)]
    pub backend: &'static str,
}

impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dry run: {} record(s); {} would be sent to the {} backend, {} are uncertain (not sent without --retry-uncertain), the rest answered from the journal. Nothing written.", self.records, self.would_request, self.backend, self.uncertain)?;
        if self.phone_only > 0 {
            write!(f, "\n{} of them have no extended product ID: only a phone (manual) activation answers them.", self.phone_only)?;
        }
        Ok(())
    }
}

/// `activate`: the return written and what the run did.
#[derive(Debug, serde::Serialize)]
pub struct Activated {
    /// The return bundle file.
    pub return_bundle: std::path::PathBuf,
    /// Its ID.
    pub bundle_id: BundleId,
    /// The request it answers.
    pub answers: Option<Answers>,
    /// The backend of the run.
    pub backend: Option<BackendInfo>,
    /// The backend's endpoint (URL or program).
    pub endpoint: String,
    /// Whether the CIDs are simulated.
    pub simulated: bool,
    /// What the run did.
    pub summary: Summary,
}

impl std::fmt::Display for Activated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.summary;
        if self.simulated {
            writeln!(
                f,
                "SIMULATOR backend: the CIDs in this return are simulated and activate nothing."
            )?;
        }
        write!(
            f,
            "Wrote {}: {} record(s): {} CID(s) obtained now, {} from the journal (no activation spent), {} failed.",
            makproxy_cli::report::shown(&self.return_bundle),
            s.records,
            s.obtained,
            s.from_journal,
            s.failed
        )?;
        for (reason, n) in &s.failed_by_reason {
            write!(f, "\n  {n} x {reason}")?;
        }
        for (handle, fl) in &s.first_failures {
            write!(f, "\n  record {handle}: {}", fl.line())?;
        }
        if s.failed as usize > s.first_failures.len() {
            write!(
                f,
                "\n  … and {} more (all are in the return; on the secure side refused records become `failed` in `status`, while records not sent or uncertain stay `packed`, their code in the DETAIL column)",
                s.failed as usize - s.first_failures.len()
            )?;
        }
        if s.uncertain > 0 {
            write!(
                f,
                "\n  {} record(s) are UNCERTAIN (MP-BKD-010): their request may have been counted by the service. See `journal list --uncertain`; send them again only with --retry-uncertain.",
                s.uncertain
            )?;
        }
        Ok(())
    }
}

/// `worksheet`.
#[derive(Debug, serde::Serialize)]
pub struct Worksheet {
    /// The CSV to fill in.
    pub worksheet: std::path::PathBuf,
    /// Its printable twin.
    pub printable: std::path::PathBuf,
    /// Records on it.
    pub records: usize,
    /// Records the journal already answers (not on it).
    pub already_answered: u64,
}

impl std::fmt::Display for Worksheet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use makproxy_cli::report::shown;
        writeln!(
            f,
            "Wrote {} record(s) to {} and {} ({} already answered by the journal).",
            self.records,
            shown(&self.worksheet),
            shown(&self.printable),
            self.already_answered
        )?;
        write!(f, "Fill in the confirmation_id column, then: activate FILE --out RETURN --backend manual --worksheet SHEET --retry-failed (records an earlier run refused, e.g. with no extended product ID, are asked again only with --retry-failed)")
    }
}

/// `worksheet`: the records of a CIL bundle the journal cannot answer, as a CSV to fill
/// in and a printable text form beside it (same name, `.txt`). Neither is overwritten.
pub fn worksheet(
    out: &Output,
    home: &Home,
    journal: &Journal,
    input: &Path,
    path: &Path,
) -> Result<Exit, CliError> {
    use makproxy_backend::manual::{worksheet_csv, worksheet_text, Row};
    let txt = path.with_extension("txt");
    for p in [path, txt.as_path()] {
        makproxy_cli::new_output(
            p,
            "a worksheet",
            Code::OutputExists,
            "choose another --out name, or move the old worksheet aside",
        )?;
    }
    let mut v = makproxy_cli::open_bundle(home, input, Kind::Cil, makproxy_cli::now())?;
    let mut rows = Vec::new();
    let mut answered = 0u64;
    v.records(|r: CilRecord| {
        if journal
            .answer(&r.installation_id, &r.extended_product_id, false)?
            .is_some()
        {
            answered += 1;
        } else {
            rows.push(Row {
                handle: r.handle,
                iid: r.installation_id,
                epid: r.extended_product_id,
                product: r.product.map(String::from),
            });
        }
        Ok::<(), CliError>(())
    })?;
    makproxy_core::fsutil::write_atomic(path, worksheet_csv(&rows).as_bytes())
        .map_err(|e| CliError::io(path.display(), e))?;
    makproxy_core::fsutil::write_atomic(
        &txt,
        worksheet_text(&rows, v.manifest.bundle_id.as_str()).as_bytes(),
    )
    .map_err(|e| CliError::io(txt.display(), e))?;
    out.report(&Worksheet {
        worksheet: path.to_path_buf(),
        printable: txt,
        records: rows.len(),
        already_answered: answered,
    });
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    //! activate in process: what no input can do to it (hang, lose or double-spend).
    use super::*;
    use makproxy_backend::{Failure, Remaining};
    use makproxy_core::bundle::FailureMessage;
    use makproxy_core::ids::{with_check_digits, Guid};
    use makproxy_core::keys::Role;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn reasons_count_under_the_service_code_else_makproxys_and_say_what_they_mean() {
        let f = |code: &str, svc: Option<&str>| RecordFailure {
            code: FailureCode::parse(code).unwrap(),
            service_code: svc.map(|s| ServiceCode::parse(s).unwrap()),
            message: FailureMessage::cut("m"),
        };
        let svc = Reason::of(&f("MP-BKD-001", Some("0x7F")));
        let ours = Reason::of(&f("MP-BKD-002", None));
        assert_eq!(svc.key(), "0x7F");
        assert!(
            svc.to_string().starts_with("0x7F (MAK has exceeded"),
            "{svc}"
        );
        assert_eq!(
            ours.to_string(),
            format!("MP-BKD-002 ({})", Code::BkdNoResponse.summary())
        );
        assert_eq!(Reason::of(&f("MP-XXX-999", None)).to_string(), "MP-XXX-999");
        // Equality and order are by the printed code, the key failed_by_reason counts.
        assert_eq!(svc, Reason::of(&f("MP-BKD-003", Some("0x7F"))));
        assert_ne!(svc, ours);
        assert_eq!(svc.partial_cmp(&ours), Some(std::cmp::Ordering::Less));
        assert_eq!(ours.partial_cmp(&svc), Some(std::cmp::Ordering::Greater));
        let mut counts = BTreeMap::new();
        *counts.entry(ours).or_insert(0) += 2;
        *counts.entry(svc).or_insert(0) += 1;
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"0x7F":1,"MP-BKD-002":2}"#
        );
    }

    /// The CID the counting backend gives for an IID.
    fn cid_for(iid: &str) -> String {
        let payload: Vec<u8> = iid.bytes().take(40).map(|b| b - b'0').collect();
        with_check_digits(&payload, 6)
    }

    /// A backend that can spend: counts the requests it receives, per IID.
    #[derive(Default)]
    struct Counting {
        asked: Mutex<Vec<String>>,
        calls: AtomicU32,
    }

    impl Backend for Counting {
        fn kind(&self) -> BackendKind {
            BackendKind::Command
        }
        fn endpoint(&self) -> String {
            "in-process test".into()
        }
        fn activate(&self, req: &Request) -> Outcome {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.asked
                .lock()
                .unwrap()
                .push(req.iid.digits().to_string());
            Outcome::Cid(ConfirmationId::parse(&cid_for(req.iid.digits())).unwrap())
        }
        fn remaining(&self, _: &ExtendedProductId) -> Result<Remaining, Failure> {
            Ok(Remaining::Unlimited)
        }
    }

    /// Answers slowly and records the most requests it ever had in flight at once.
    struct OneAtATime {
        cap: Option<usize>,
        now: AtomicU32,
        most: AtomicU32,
    }

    impl Backend for OneAtATime {
        fn kind(&self) -> BackendKind {
            BackendKind::Command
        }
        fn endpoint(&self) -> String {
            "in-process test".into()
        }
        fn max_concurrency(&self) -> Option<usize> {
            self.cap
        }
        fn activate(&self, req: &Request) -> Outcome {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            self.now.fetch_sub(1, Ordering::SeqCst);
            Outcome::Cid(ConfirmationId::parse(&cid_for(req.iid.digits())).unwrap())
        }
        fn remaining(&self, _: &ExtendedProductId) -> Result<Remaining, Failure> {
            Ok(Remaining::Unlimited)
        }
    }

    #[test]
    fn a_backend_that_answers_one_at_a_time_is_never_asked_two_at_once() {
        // Uncapped, the same run does overlap requests (so the capped run's 1 means
        // something): more than one in flight, at most the 3 asked for.
        for (cap, most) in [(Some(1), 1..=1), (None, 2..=3)] {
            let f = fixture(6);
            let stop = AtomicBool::new(false);
            let b = OneAtATime {
                cap,
                now: AtomicU32::new(0),
                most: AtomicU32::new(0),
            };
            let out = f._dir.path().join("ret.zip");
            let mut j = Journal::open(&f.online).unwrap();
            // --concurrency 3 (options), the backend's own bound wins.
            run(
                &Output { json: true },
                &f.online,
                &mut j,
                &options(&f.cil, &out, &b, &stop),
            )
            .unwrap();
            let seen = b.most.load(Ordering::SeqCst);
            assert!(most.contains(&seen), "cap {cap:?}: {seen} at once");
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        online: Home,
        cil: std::path::PathBuf,
    }

    /// An online home trusting a secure home, and a CIL bundle of `n` records from it.
    fn fixture(n: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (secure, spub) =
            Home::init(&dir.path().join("s"), Role::Secure, "plant-a", None).unwrap();
        let (online, _) = Home::init(&dir.path().join("o"), Role::Online, "gw", None).unwrap();
        Journal::create(&online).unwrap(); // as `init` does
        let pubfile = dir.path().join("s.pub");
        std::fs::write(&pubfile, spub.to_file_bytes(&secure.signing_key().unwrap())).unwrap();
        online.trust_add(&pubfile, "plant-a").unwrap();
        let cil = dir.path().join("cil.zip");
        let mut w = BundleWriter::<CilRecord>::new(&cil).unwrap();
        for h in 1..=n {
            let payload: Vec<u8> = format!("{h:054}").bytes().map(|b| b - b'0').collect();
            w.push(CilRecord {
                handle: h,
                installation_id: InstallationId::parse(&with_check_digits(&payload, 7)).unwrap(),
                extended_product_id: ExtendedProductId::parse(
                    "03612-03305-317-008912-02-1033-9200.0000-0662023",
                )
                .unwrap(),
                activation_id: Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").unwrap(),
                product: None,
                host: None,
                channel: None,
                key_group: None,
            })
            .unwrap();
        }
        let mut header = makproxy_testkit::cil_header(makproxy_cli::now());
        header.site = "plant-a".into();
        w.finish(header, &secure.signing_key().unwrap(), &cil)
            .unwrap();
        Fixture {
            _dir: dir,
            online,
            cil,
        }
    }

    fn options<'a>(
        input: &'a Path,
        out: &'a Path,
        b: &'a dyn Backend,
        stop: &'a AtomicBool,
    ) -> Options<'a> {
        Options {
            input,
            out,
            backend: b,
            concurrency: 3,
            retry: RetryPolicy {
                attempts: 1,
                first_delay: Duration::from_millis(1),
            },
            expires_days: 30,
            check_remaining: false,
            retry_failed: false,
            retry_uncertain: false,
            max_transport_failures: 5,
            dry_run: false,
            stop,
        }
    }

    /// Runs `f` on a thread and fails the test if it has not returned within `secs`.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("activate hung")
    }

    #[test]
    fn a_journal_that_runs_out_of_space_stops_the_run_and_no_answer_is_asked_twice() {
        let f = fixture(300);
        let quiet = Output { json: true };
        let stop = AtomicBool::new(false);
        let mut j = Journal::open(&f.online).unwrap();
        // A "disk" with room for a few more pages: the journal fills up mid-run.
        let pages: i64 = j
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        j.conn
            .pragma_update(None, "max_page_count", pages + 4)
            .unwrap();
        let first = Counting::default();
        let out = f._dir.path().join("ret.zip");
        let (f, first, res) = within(60, move || {
            let r = run(
                &quiet,
                &f.online,
                &mut j,
                &options(&f.cil, &out, &first, &stop),
            )
            .map(|_| ())
            .map_err(|e| e.message);
            (f, first, r)
        });
        let err = res.expect_err("a full journal ends the run with an error");
        assert!(err.contains("journal"), "{err}");
        // Answers obtained and not saved are named, CID and all, in the error: exactly
        // the CIDs the backend gave for those IIDs.
        assert!(err.contains("NOT saved"), "{err}");
        let named: Vec<&str> = err
            .split_once("keep them: ")
            .map(|(_, list)| list.split("; ").collect())
            .unwrap_or_default();
        assert!(!named.is_empty(), "{err}");
        for part in named {
            let words: Vec<&str> = part.split(' ').collect();
            assert_eq!(
                (words[0], words[2], words[3]),
                ("IID", "->", "CID"),
                "{part}"
            );
            assert_eq!(words[4], cid_for(words[1]), "{part}");
        }
        let asked_first: Vec<String> = first.asked.lock().unwrap().clone();
        assert!(
            !asked_first.is_empty() && asked_first.len() < 300,
            "{}",
            asked_first.len()
        );
        assert!(
            !f._dir.path().join("ret.zip").exists(),
            "no return after a failed persist"
        );

        // Space again: nothing asked in the first run is asked again without the
        // operator's say-so; everything else is.
        let mut j = Journal::open(&f.online).unwrap();
        let second = Counting::default();
        let stop = AtomicBool::new(false);
        let out = f._dir.path().join("ret2.zip");
        let exit = run(
            &quiet,
            &f.online,
            &mut j,
            &options(&f.cil, &out, &second, &stop),
        )
        .unwrap();
        let asked_second = second.asked.lock().unwrap().clone();
        for iid in &asked_second {
            assert!(!asked_first.contains(iid), "IID {iid} was asked twice");
        }
        assert_eq!(
            asked_first.len() + asked_second.len(),
            300,
            "every IID asked once overall"
        );
        let uncertain = j.intents().unwrap().len();
        assert!(
            matches!(exit, Exit::Ok | Exit::Partial),
            "the second run completes"
        );
        assert_eq!(
            matches!(exit, Exit::Partial),
            uncertain > 0,
            "partial exactly when some records are uncertain ({uncertain})"
        );
    }

    /// Raises the stop flag (as Ctrl-C does) while answering.
    struct StopsWhileAnswering<'a> {
        inner: Counting,
        stop: &'a AtomicBool,
    }

    impl Backend for StopsWhileAnswering<'_> {
        fn kind(&self) -> BackendKind {
            self.inner.kind()
        }
        fn endpoint(&self) -> String {
            self.inner.endpoint()
        }
        fn activate(&self, req: &Request) -> Outcome {
            self.stop.store(true, Ordering::SeqCst);
            self.inner.activate(req)
        }
        fn remaining(&self, e: &ExtendedProductId) -> Result<Remaining, Failure> {
            self.inner.remaining(e)
        }
    }

    #[test]
    fn a_stop_during_the_final_drain_saves_the_answer_and_writes_no_return() {
        let f = fixture(1);
        let stop = AtomicBool::new(false);
        let b = StopsWhileAnswering {
            inner: Counting::default(),
            stop: &stop,
        };
        let out = f._dir.path().join("ret.zip");
        let mut j = Journal::open(&f.online).unwrap();
        let e = run(
            &Output { json: true },
            &f.online,
            &mut j,
            &options(&f.cil, &out, &b, &stop),
        )
        .map(|_| ())
        .expect_err("stopped");
        assert_eq!(e.exit, Exit::Interrupted);
        assert!(!out.exists(), "no return of a stopped run");
        assert_eq!(b.inner.calls.load(Ordering::SeqCst), 1);
        let asked = b.inner.asked.lock().unwrap()[0].clone();
        let epid =
            ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap();
        assert!(
            j.answer(&InstallationId::parse(&asked).unwrap(), &epid, false)
                .unwrap()
                .is_some(),
            "answer saved"
        );
        assert!(j.intents().unwrap().is_empty(), "nothing left uncertain");
    }

    /// A batch with more ePIDs than a return may carry counts for: the first ones go,
    /// each with what was spent on it, and nothing past the reader's limit.
    #[test]
    fn carried_counts_stay_within_what_the_reader_takes() {
        assert!(carried_counts(Vec::new(), &BTreeMap::new()).is_none());
        let epid = |i: usize| format!("03612-03305-317-{i:06}-02-1033-9200.0000-0662023");
        let counts: Vec<bundle::RemainingCount> = (0..bundle::MAX_REMAINING + 3)
            .map(|i| bundle::RemainingCount {
                extended_product_id: ExtendedProductId::parse(&epid(i)).unwrap(),
                activations_remaining: 10,
                spent: 0,
                checked: "2026-11-23T10:00:00Z".into(),
            })
            .collect();
        let spent = BTreeMap::from([(epid(1), 2u64)]);
        let c = carried_counts(counts, &spent).unwrap();
        assert_eq!(c.len(), bundle::MAX_REMAINING);
        assert_eq!((c[0].spent, c[1].spent), (0, 2));
        assert_eq!(c[0].extended_product_id.as_str(), epid(0));
    }

    #[test]
    fn activate_returns_with_its_code_on_every_kit_case_and_spends_nothing_on_a_bad_one() {
        use makproxy_testkit::{cases, Keys};
        let dir = tempfile::tempdir().unwrap();
        let (online, _) =
            Home::init(&dir.path().join("o"), Role::Online, "kit-gateway", None).unwrap();
        Journal::create(&online).unwrap(); // as `init` does
                                           // The kit's previous secure key pinned, then its rotation accepted (the kit's
                                           // retired-key cases need both).
        let keys = Keys::default();
        let now = makproxy_cli::now();
        keys.pin_cil_signers(&online, dir.path(), now).unwrap();
        let mut checked = 0;
        for case in cases(now) {
            if case.reader != Kind::Cil {
                continue;
            }
            let file = dir.path().join(&case.file);
            std::fs::write(&file, &case.bytes).unwrap();
            let out = dir.path().join(format!("{}.ret", case.file));
            let online = online.clone();
            let (res, calls) = within(30, move || {
                let b = Counting::default();
                let stop = AtomicBool::new(false);
                let mut j = Journal::open(&online).unwrap();
                let o = options(&file, &out, &b, &stop);
                let r = run(&Output { json: true }, &online, &mut j, &o).map_err(|e| e.code);
                (r, b.calls.load(Ordering::SeqCst))
            });
            match case.expect {
                None => assert!(res.is_ok(), "{}: {res:?}", case.file),
                Some(code) => {
                    assert_eq!(res.err().flatten(), Some(code), "{}", case.file);
                    assert_eq!(
                        calls, 0,
                        "{}: a request was sent for a refused bundle",
                        case.file
                    );
                }
            }
            checked += 1;
        }
        assert!(checked >= 30, "{checked}");
    }
}
