//! `activate IN --out OUT --backend NAME`: verify a CIL bundle from a trusted secure
//! site, obtain a CID or a refusal for every record, and write the signed return.
//!
//! Phase A walks the records and sends those the journal cannot answer to a small pool
//! of workers (bounded concurrency, polite by default). Each answer is committed to the
//! journal on the main thread before it is used for anything; a burst of answers shares
//! one commit. Phase B walks the records again and writes the return bundle purely from
//! the journal, so a run killed at any point resumes without re-asking anything already
//! answered.

use crate::journal;
use makproxy_backend::{activate_with_retry, Backend, Outcome, Request, RetryPolicy};
use makproxy_cli::{CliError, Exit, Output};
use makproxy_core::bundle::{
    self, Answers, BackendInfo, BundleWriter, CilRecord, Header, Kind, Limits, RecordFailure,
    ReturnRecord, Source,
};
use makproxy_core::ids::ConfirmationId;
use makproxy_core::keys::Home;
use makproxy_core::sanitize::escape;
use makproxy_core::Code;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::mpsc::{self, TrySendError};
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

/// Answers received but not yet committed, and requests in flight.
struct Pending {
    buf: Vec<(Job, Outcome)>,
    /// Commit when this many answers wait (1: at once).
    group: usize,
    oldest: Option<Instant>,
    in_flight: usize,
    /// (IID, ePID) asked and not yet committed: a duplicate waits for that answer.
    asked: HashSet<(String, String)>,
}

/// Most simulated answers committed together.
const MAX_BATCH: usize = 2000;

pub fn run(
    out: &Output,
    home: &Home,
    conn: &mut Connection,
    o: &Options,
) -> Result<Exit, CliError> {
    let db = |e: rusqlite::Error| CliError::io("journal", e);
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
            let refused = !o.retry_failed
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
            let epid_v = makproxy_core::ids::ExtendedProductId::parse(epid)
                .map_err(|e| CliError::io("journal", e))?;
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
    let run_id = bundle::new_bundle_id();
    let mut s = Summary {
        records: m.records,
        ..Summary::default()
    };

    // Phase A: obtain. Answers that may have spent an activation are committed the
    // moment they arrive; simulated ones (nothing spent) are committed in groups.
    let bar = out.progress(m.records, "activate");
    let concurrency = o.concurrency.max(1);
    let (queue, group) = if simulated {
        (1024, MAX_BATCH)
    } else {
        (concurrency * 2, 1)
    };
    let mut pending = Pending {
        buf: Vec::with_capacity(group),
        group,
        oldest: None,
        in_flight: 0,
        asked: HashSet::new(),
    };
    std::thread::scope(|scope| -> Result<(), CliError> {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(queue);
        let (res_tx, res_rx) = mpsc::channel::<(Job, Outcome)>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..concurrency {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            let retry = o.retry.clone();
            scope.spawn(move || loop {
                let next = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(job)) = next else { return };
                let outcome = activate_with_retry(o.backend, &job.req, &retry);
                if res_tx.send((job, outcome)).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let save = |conn: &mut Connection,
                    p: &mut Pending,
                    s: &mut Summary|
         -> Result<(), CliError> {
            let at = bundle::rfc3339(makproxy_cli::now());
            let tx = conn.transaction().map_err(db)?;
            for (job, outcome) in &p.buf {
                match outcome {
                    Outcome::Cid(cid) => {
                        tx.prepare_cached("INSERT OR IGNORE INTO answers(iid, epid, simulated, cid, backend, run_id, bundle_id, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
                            .and_then(|mut st| st.execute(params![job.req.iid.digits(), job.req.epid.as_str(), simulated, cid.digits(), o.backend.name(), run_id, m.bundle_id, at]))
                            .map_err(db)?;
                    }
                    Outcome::Failed(f) => {
                        tx.prepare_cached(
                            "INSERT INTO failures(bundle_id, handle, code, service_code, message, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT(bundle_id, handle) DO UPDATE SET code = excluded.code, service_code = excluded.service_code, message = excluded.message, at = excluded.at",
                        )
                        .and_then(|mut st| st.execute(params![m.bundle_id, job.handle as i64, f.code.as_str(), f.service_code, f.message, at]))
                        .map_err(db)?;
                    }
                    Outcome::NoResponse(_) => s.no_response += 1,
                }
            }
            tx.commit().map_err(db)?;
            bar.inc(p.buf.len() as u64);
            for (job, _) in p.buf.drain(..) {
                p.asked.remove(&(
                    job.req.iid.digits().to_string(),
                    job.req.epid.as_str().to_string(),
                ));
            }
            p.oldest = None;
            Ok(())
        };
        // Takes one answer; commits when the group is full or its oldest answer waited 100 ms.
        let take = |conn: &mut Connection,
                    p: &mut Pending,
                    s: &mut Summary,
                    r: (Job, Outcome)|
         -> Result<(), CliError> {
            p.in_flight -= 1;
            p.buf.push(r);
            let started = *p.oldest.get_or_insert_with(Instant::now);
            if p.buf.len() >= p.group || started.elapsed() >= Duration::from_millis(100) {
                save(conn, p, s)?;
            }
            Ok(())
        };
        v.records(|r: CilRecord| {
            let (iid, epid) = (
                r.installation_id.digits().to_string(),
                r.extended_product_id.as_str().to_string(),
            );
            if journal::answer(conn, &iid, &epid, simulated)
                .map_err(db)?
                .is_some()
                || (!o.retry_failed
                    && journal::failure(conn, &m.bundle_id, r.handle)
                        .map_err(db)?
                        .is_some())
                || !pending.asked.insert((iid, epid))
            {
                bar.inc(1);
                return Ok(());
            }
            let mut job = Job {
                handle: r.handle,
                req: Request {
                    iid: r.installation_id,
                    epid: r.extended_product_id,
                },
            };
            loop {
                match job_tx.try_send(job) {
                    Ok(()) => break,
                    Err(TrySendError::Full(j)) => {
                        job = j;
                        let answer = res_rx
                            .recv()
                            .map_err(|_| CliError::io("backend workers", "stopped"))?;
                        take(conn, &mut pending, &mut s, answer)?;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(CliError::io("backend workers", "stopped"))
                    }
                }
            }
            pending.in_flight += 1;
            while let Ok(answer) = res_rx.try_recv() {
                take(conn, &mut pending, &mut s, answer)?;
            }
            Ok::<(), CliError>(())
        })?;
        drop(job_tx);
        while pending.in_flight > 0 {
            let answer = res_rx
                .recv()
                .map_err(|_| CliError::io("backend workers", "stopped early"))?;
            take(conn, &mut pending, &mut s, answer)?;
        }
        if !pending.buf.is_empty() {
            save(conn, &mut pending, &mut s)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    // Phase B: write the return purely from the journal.
    let mut writer =
        BundleWriter::new(o.out, Kind::Return).map_err(|e| CliError::io(o.out.display(), e))?;
    v.records(|r: CilRecord| {
        let (iid, epid) = (r.installation_id.digits(), r.extended_product_id.as_str());
        let mut rec = ReturnRecord {
            handle: r.handle,
            installation_id: r.installation_id.clone(),
            extended_product_id: r.extended_product_id.clone(),
            confirmation_id: None,
            failure: None,
            source: Source::Journal,
            simulated,
        };
        if let Some((cid, run)) = journal::answer(conn, iid, epid, simulated).map_err(db)? {
            rec.confirmation_id =
                Some(ConfirmationId::parse(&cid).map_err(|e| CliError::io("journal", e))?);
            if run == run_id {
                rec.source = Source::Backend;
                s.obtained += 1;
            } else {
                s.from_journal += 1;
            }
        } else {
            let (code, service_code, message) = journal::failure(conn, &m.bundle_id, r.handle)
                .map_err(db)?
                .unwrap_or_else(|| {
                    (
                        Code::BkdNoResponse.as_str().to_string(),
                        None,
                        "no response from the activation backend; run activate again to retry"
                            .into(),
                    )
                });
            s.failed += 1;
            *s.failed_by_reason
                .entry(service_code.clone().unwrap_or_else(|| code.clone()))
                .or_default() += 1;
            rec.failure = Some(RecordFailure {
                code,
                service_code,
                message,
            });
        }
        writer
            .push(&rec)
            .map_err(|e| CliError::io(o.out.display(), e))
    })?;
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
    let db = |e: rusqlite::Error| CliError::io("journal", e);
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
