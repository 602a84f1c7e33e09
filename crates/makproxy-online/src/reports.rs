//! The results of `journal …` and `remaining`, as reports (text and JSON from one value;
//! see `makproxy_cli::report`). activate's and worksheet's live in [`crate::activate`].

use crate::journal::{Entry, Intent, StoredFailure};
use makproxy_core::sanitize::escape;
use std::fmt::{self, Display, Formatter};

/// `journal list --uncertain`.
#[derive(Debug, serde::Serialize)]
pub struct Uncertain {
    /// Requests that may have reached the service with no answer saved.
    pub uncertain: Vec<Intent>,
}

impl Display for Uncertain {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} uncertain request(s): sent (or about to be) by a run that ended before the answer was saved.",
            self.uncertain.len()
        )?;
        for i in &self.uncertain {
            write!(
                f,
                "\n  {}  {}  {} backend, run {}, {}",
                i.iid.digits(),
                i.epid,
                i.backend,
                i.run_id,
                i.at
            )?;
        }
        if !self.uncertain.is_empty() {
            write!(f, "\nEach may already have cost an activation. Send them again with activate --retry-uncertain, or forget one with journal forget IID --reason TEXT.")?;
        }
        Ok(())
    }
}

/// `journal list`.
#[derive(Debug, serde::Serialize)]
pub struct Answers {
    /// Answers, newest first.
    pub answers: Vec<Entry>,
}

impl Display for Answers {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} answer(s), newest first:", self.answers.len())?;
        for e in &self.answers {
            write!(
                f,
                "\n  {}  {}  {}  {}{}  {}",
                escape(e.site.as_deref().unwrap_or("?")),
                e.iid.digits(),
                e.cid.as_ref().map_or("-", |c| c.digits()),
                e.backend.as_str(),
                if e.simulated { " (SIMULATED)" } else { "" },
                e.at
            )?;
        }
        Ok(())
    }
}

/// `journal show IID`.
#[derive(Debug, serde::Serialize)]
pub struct Story {
    /// The installation ID (digits).
    pub installation_id: String,
    /// Its answers.
    pub answers: Vec<Entry>,
    /// Its refusals.
    pub refusals: Vec<StoredFailure>,
    /// Its open requests.
    pub uncertain: Vec<Intent>,
    /// The IID grouped for people.
    #[serde(skip)]
    pub grouped: String,
}

impl Display for Story {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "Installation ID {}", self.grouped)?;
        for e in &self.answers {
            write!(
                f,
                "\n  CID {} from the {} backend{} ({}), bundle {} of site {}, run {}, {}",
                e.cid.as_ref().map_or("-", |c| c.digits()),
                e.backend.as_str(),
                if e.simulated { ", SIMULATED" } else { "" },
                escape(&e.endpoint),
                e.bundle_id,
                escape(e.site.as_deref().unwrap_or("?")),
                e.run_id,
                e.at
            )?;
        }
        for r in &self.refusals {
            write!(
                f,
                "\n  refused by the {} backend: {} {} {}, bundle {} record {}, {}",
                r.backend,
                r.failure.code,
                escape(r.failure.service_code.as_deref().unwrap_or("")),
                escape(&r.failure.message),
                r.bundle_id,
                r.handle,
                r.at
            )?;
        }
        for i in &self.uncertain {
            write!(
                f,
                "\n  UNCERTAIN: sent to the {} backend by run {} at {}; no answer saved",
                i.backend, i.run_id, i.at
            )?;
        }
        if self.answers.is_empty() && self.refusals.is_empty() && self.uncertain.is_empty() {
            write!(f, "\n  nothing recorded")?;
        }
        Ok(())
    }
}

/// `journal forget IID --reason TEXT`.
#[derive(Debug, serde::Serialize)]
pub struct Forgotten {
    /// The installation ID (digits).
    pub installation_id: String,
    /// Rows removed.
    pub removed: usize,
    /// The IID grouped for people.
    #[serde(skip)]
    pub grouped: String,
}

impl Display for Forgotten {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.removed == 0 {
            write!(f, "Nothing recorded for {}; nothing changed.", self.grouped)
        } else {
            write!(
                f,
                "Forgot {} row(s) for {}; the next activate asks for it again. The reason is kept in the journal's audit table.",
                self.removed, self.grouped
            )
        }
    }
}

/// `remaining --pid EPID`.
#[derive(Debug, serde::Serialize)]
pub struct Remaining {
    /// The extended product ID asked about.
    pub pid: String,
    /// Activations left; -1 when no limit is reported.
    #[serde(serialize_with = "as_count")]
    pub remaining: makproxy_backend::Remaining,
    /// The backend asked.
    pub backend: String,
}

fn as_count<S: serde::Serializer>(
    r: &makproxy_backend::Remaining,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_i64(r.as_count())
}

impl Display for Remaining {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pid, self.remaining)
    }
}

/// `recover`.
#[derive(Debug, serde::Serialize)]
pub struct Recovered {
    /// The journal built.
    pub journal: String,
    /// Each return read, in sequence order.
    pub returns: Vec<crate::journal::RecoveredReturn>,
    /// CIDs now in the journal again.
    pub answers_restored: u64,
    /// Requests created up to this time: their records without an answer are
    /// uncertain (the lost journal may have sent them).
    pub uncertain_before: String,
}

impl Display for Recovered {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Built {} from {} return bundle(s): {} CID(s) restored; they are never asked for again.",
            escape(&self.journal),
            self.returns.len(),
            self.answers_restored
        )?;
        for r in &self.returns {
            writeln!(
                f,
                "  {} (return {}, sequence {}, answers {}): {} CID(s)",
                escape(&r.file),
                r.bundle_id,
                r.sequence,
                r.answers,
                r.answers_restored
            )?;
        }
        write!(
            f,
            "What no return tells cannot be rebuilt: which installation IDs the lost journal sent and never wrote into a return. Every record without an answer of a request bundle created up to {} is UNCERTAIN (MP-BKD-010): `activate` does not send it without --retry-uncertain. Refusals are not restored (asking again spends nothing). The next return continues the sequence after the highest one read.",
            self.uncertain_before
        )
    }
}

/// `journal sequences`.
#[derive(Debug, serde::Serialize)]
pub struct Sequences {
    /// Per site and signing key.
    pub sequences: Vec<crate::journal::SequenceSeen>,
}

impl Display for Sequences {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<24} {:<18} {:>8} {:>8}  LAST SEEN",
            "SITE", "KEY ID", "HIGHEST", "BUNDLES"
        )?;
        for q in &self.sequences {
            write!(
                f,
                "\n{:<24} {:<18} {:>8} {:>8}  {}",
                escape(&q.site),
                escape(&q.signer_key_id),
                q.highest,
                q.bundles,
                escape(&q.last_seen)
            )?;
        }
        Ok(())
    }
}
