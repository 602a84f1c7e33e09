//! Activation backends: the one trait `makproxy-online` obtains CIDs through, and its
//! implementations (spec: docs/backends.md).
//!
//! A backend answers one (IID, ePID) at a time with one of four outcomes: a CID; a
//! refusal (a complete answer that says no, with the service's code verbatim); "not
//! sent" (the request cannot have reached the service: connection refused, name or TLS
//! failure, a send that failed before the request was complete), the only outcome that
//! is retried; or "uncertain" (the request was sent but no complete answer came back:
//! an activation may have been spent, so it is never retried without the operator).
//! Every answer passes through [`validated`], which applies the return-bundle reader's
//! limits, so a backend can only hand on what the other side of the gap will accept.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod command;
pub mod manual;
pub mod microsoft;
pub mod simulator;

pub use makproxy_core::bundle::BackendKind;
use makproxy_core::ids::{ConfirmationId, ExtendedProductId, InstallationId};
use makproxy_core::Code;
use std::time::Duration;

/// One activation request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// The installation ID to answer.
    pub iid: InstallationId,
    /// The extended product ID of the key the IID belongs to.
    pub epid: ExtendedProductId,
}

/// A per-record failure with a stable code and, where the service gave one, its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// makproxy's code for the failure (`MP-BKD-…`).
    pub code: Code,
    /// The activation service's own code, verbatim (`0x7F`), when it gave one.
    pub service_code: Option<String>,
    /// What happened, for the operator.
    pub message: String,
}

impl Failure {
    /// A failure with no service code.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            service_code: None,
            message: message.into(),
        }
    }
    /// A refusal by the activation service, explained where the code is known.
    pub fn service(service_code: &str) -> Self {
        Self {
            code: Code::BkdRefused,
            service_code: Some(service_code.to_string()),
            message: service_code_meaning(service_code).to_string(),
        }
    }
}

/// What one call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The confirmation ID, checked group by group.
    Cid(ConfirmationId),
    /// A complete response arrived and says no (or is unusable): never retried
    /// automatically.
    Failed(Failure),
    /// The request cannot have reached the service: safe to retry.
    NotSent(String),
    /// The request was sent and no complete answer arrived: it may have been counted.
    Uncertain(String),
    /// The backend cannot answer for now, and nothing was issued: the service answered
    /// with the signs of its own outage (0x80004003 in a well-formed answer: `MP-BKD-015`), or a
    /// gateway program has stopped and never received the record (`MP-BKD-002`).
    /// Nothing is spent and no refusal is stored; the record stays askable for a later
    /// run. Never retried in the same run, and it counts toward stopping the run.
    Outage(Failure),
}

/// Service error codes that mean the service itself is failing, not that it refuses
/// this record (seen for every request during the September 2025 outage).
pub fn is_outage_code(service_code: &str) -> bool {
    service_code.trim().eq_ignore_ascii_case("0x80004003")
}

/// The refusal of a backend that needs an extended product ID for a record that has
/// none (an Active Directory forest, Office read from ospp.vbs output): nothing is sent.
pub fn needs_phone() -> Failure {
    Failure::new(
        Code::BkdNeedsPhone,
        "no extended product ID (Active Directory forest or ospp.vbs output): the service cannot answer it; activate it by phone with the manual backend (--retry-failed)",
    )
}

/// How a record's extended product ID is shown to people: `(none)` when absent.
pub fn shown_epid(epid: &ExtendedProductId) -> &str {
    if epid.is_absent() {
        "(none: phone activation needs only the installation ID)"
    } else {
        epid.as_str()
    }
}

/// Meanings of BatchActivation service error codes (docs/errors.md lists them all).
pub fn service_code_meaning(code: &str) -> &'static str {
    match code
        .to_ascii_uppercase()
        .trim_start_matches("0X")
        .trim_start_matches('0')
    {
        "7F" => "MAK has exceeded its activation limit",
        "67" => "product key is blocked",
        "68" => "invalid product key",
        "86" => "invalid key type",
        "90" => "installation ID is invalid; check the IID collected from the machine",
        "71" => "key exceeded its activation limit",
        "D5" | "D6" => "override limit reached",
        "80131600" => "invalid PID or server error",
        "80004003" => "service error (seen during service outages); try again later",
        _ => "unrecognised service error code (reported verbatim)",
    }
}

/// An activation backend.
pub trait Backend: Send + Sync {
    /// What kind of backend this is (recorded with every answer).
    fn kind(&self) -> BackendKind;
    /// Name recorded in return bundles.
    fn name(&self) -> &'static str {
        self.kind().as_str()
    }
    /// True for backends whose CIDs do not activate anything.
    fn simulated(&self) -> bool {
        self.kind().simulated()
    }
    /// Where the answers come from: the service URL, the gateway program, the worksheet.
    fn endpoint(&self) -> String;
    /// True when answering talks to the operator's terminal (nothing else may draw there).
    fn interactive(&self) -> bool {
        false
    }
    /// Whether it can answer only records with an extended product ID (the service and
    /// a gateway program can; phone activation needs only the IID). Records without
    /// one are refused before the backend is asked ([`activate_with_retry`]), the one
    /// place that rule lives.
    fn needs_epid(&self) -> bool {
        true
    }
    /// How many requests it can answer at once (`None`: as many as `--concurrency`
    /// asks). A person, or a single gateway process reading one line at a time, answers
    /// one record at a time.
    fn max_concurrency(&self) -> Option<usize> {
        None
    }
    /// Whether its answers were prepared for one batch (a filled-in worksheet): the
    /// caller then hands [`Backend::check_batch`] the IIDs of the whole bundle first.
    fn prepared_batch(&self) -> bool {
        false
    }
    /// Checked before anything is asked, with the IIDs (digits) of the whole bundle,
    /// where [`Backend::prepared_batch`]: answers prepared for a batch are refused for
    /// IIDs that are not in it.
    fn check_batch(&self, _iids: &std::collections::HashSet<String>) -> Result<(), String> {
        Ok(())
    }
    /// Requests a CID for one record.
    fn activate(&self, req: &Request) -> Outcome;
    /// Remaining activations of the MAK behind `epid`.
    fn remaining(&self, epid: &ExtendedProductId) -> Result<Remaining, Failure>;
}

/// What a backend says about a key's activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remaining {
    /// This many activations left.
    Limited(u64),
    /// No limit reported (not a MAK, or a backend that cannot tell).
    Unlimited,
}

impl Remaining {
    /// From the service's count, where a negative number means no limit.
    pub fn from_count(n: i64) -> Self {
        u64::try_from(n).map_or(Self::Unlimited, Self::Limited)
    }
    /// Whether `need` activations can be spent.
    pub fn allows(self, need: u64) -> bool {
        match self {
            Self::Limited(n) => n >= need,
            Self::Unlimited => true,
        }
    }
    /// The smaller of two counts (no limit is the largest).
    pub fn least(self, other: Self) -> Self {
        match (self, other) {
            (Self::Limited(a), Self::Limited(b)) => Self::Limited(a.min(b)),
            (Self::Unlimited, x) | (x, Self::Unlimited) => x,
        }
    }
    /// As `--json` prints it (docs/json.md): the count, or -1 for no limit.
    pub fn as_count(self) -> i64 {
        match self {
            Self::Limited(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Self::Unlimited => -1,
        }
    }
}

impl std::fmt::Display for Remaining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Limited(n) => write!(f, "{n} activation(s) remaining"),
            Self::Unlimited => f.write_str("no activation limit reported (-1; not a MAK?)"),
        }
    }
}

/// Retries only `NotSent`, with exponential backoff.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per record, the first included.
    pub attempts: u32,
    /// Pause before the second try, doubled for each later one.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(500),
        }
    }
}

/// Calls the backend, retrying only what cannot have reached the service, and
/// validates the answer. `stop` is checked before every attempt (an interrupted run
/// sends nothing new).
pub fn activate_with_retry(
    backend: &dyn Backend,
    req: &Request,
    policy: &RetryPolicy,
    stop: &dyn Fn() -> bool,
) -> Outcome {
    if backend.needs_epid() && req.epid.is_absent() {
        return Outcome::Failed(needs_phone());
    }
    let mut delay = policy.first_delay;
    let mut last = String::new();
    for attempt in 0..policy.attempts.max(1) {
        if stop() {
            return Outcome::NotSent("not sent: the run is stopping".into());
        }
        if attempt > 0 {
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
        }
        match validated(backend.activate(req)) {
            Outcome::NotSent(why) => last = why,
            other => return other,
        }
    }
    Outcome::NotSent(format!(
        "not sent after {} attempts: {last}",
        policy.attempts.max(1)
    ))
}

/// The record a failure becomes in a return. Pass the outcome through [`validated`]
/// first: a service code that cannot be carried has been replaced there, so none is
/// dropped here.
impl From<Failure> for makproxy_core::bundle::RecordFailure {
    fn from(f: Failure) -> Self {
        use makproxy_core::bundle::{FailureMessage, ServiceCode};
        Self {
            code: f.code.into(),
            service_code: f.service_code.and_then(|s| ServiceCode::parse(s).ok()),
            message: FailureMessage::cut(&f.message),
        }
    }
}

/// The one check every backend answer passes: service codes must be representable in
/// a return record (else the record fails with MP-BKD-003 naming the code, escaped),
/// and messages are cut to the reader's limit at a character boundary.
pub fn validated(o: Outcome) -> Outcome {
    use makproxy_core::bundle::{truncate_utf8, valid_service_code, MAX_FAILURE_MESSAGE};
    let cut = |m: String| truncate_utf8(&m, MAX_FAILURE_MESSAGE).to_string();
    match o {
        Outcome::Failed(mut f) => {
            if let Some(sc) = f.service_code.take() {
                if valid_service_code(&sc) {
                    f.service_code = Some(sc);
                } else {
                    let shown = makproxy_core::sanitize::escape(truncate_utf8(&sc, 64));
                    f = Failure::new(
                        Code::BkdBadResponse,
                        format!("the service sent an error code that cannot be carried: {shown}"),
                    );
                }
            }
            f.message = cut(f.message);
            Outcome::Failed(f)
        }
        Outcome::NotSent(m) => Outcome::NotSent(cut(m)),
        Outcome::Uncertain(m) => Outcome::Uncertain(cut(m)),
        Outcome::Outage(mut f) => {
            f.service_code = f.service_code.filter(|sc| valid_service_code(sc));
            f.message = cut(f.message);
            Outcome::Outage(f)
        }
        cid => cid,
    }
}

/// Parses a CID text from a backend, turning a bad one into a per-record failure.
pub fn checked_cid(text: &str) -> Result<ConfirmationId, Failure> {
    ConfirmationId::parse(text).map_err(|e| {
        Failure::new(
            Code::BkdBadCid,
            format!("backend returned a bad confirmation ID: {e}"),
        )
    })
}

#[cfg(test)]
mod remaining_tests {
    use super::Remaining;

    #[test]
    fn a_negative_count_means_no_limit_and_the_json_keeps_minus_one() {
        assert_eq!(Remaining::from_count(-1), Remaining::Unlimited);
        assert_eq!(Remaining::from_count(0), Remaining::Limited(0));
        assert_eq!(Remaining::Unlimited.as_count(), -1);
        assert_eq!(Remaining::Limited(7).as_count(), 7);
        assert!(Remaining::Limited(7).allows(7));
        assert!(!Remaining::Limited(6).allows(7));
        assert!(Remaining::Unlimited.allows(u64::MAX));
    }
}
