//! Activation backends: the one trait `makproxy-online` obtains CIDs through, and its
//! implementations (spec: docs/backends.md).
//!
//! A backend answers one (IID, ePID) at a time with a CID, a refusal that carries the
//! service's code verbatim, or "no response" — the only outcome that may be retried,
//! because only then can no activation have been spent. Answers are validated here
//! (check digits, IID and PID echo) so no backend can slip a bad CID through.

pub mod command;
pub mod manual;
pub mod microsoft;
#[cfg(feature = "mock")]
pub mod mock;
pub mod simulator;

use makproxy_core::ids::{ConfirmationId, ExtendedProductId, InstallationId};
use makproxy_core::Code;
use std::time::Duration;

/// One activation request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    pub iid: InstallationId,
    pub epid: ExtendedProductId,
}

/// A per-record failure with a stable code and, where the service gave one, its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub service_code: Option<String>,
    pub message: String,
}

impl Failure {
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
    Cid(ConfirmationId),
    /// A response arrived and says no (or is unusable): never retried automatically.
    Failed(Failure),
    /// No response arrived (connection refused or dropped, timeout): safe to retry.
    NoResponse(String),
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
    /// Name recorded in return bundles.
    fn name(&self) -> &'static str;
    /// True for backends whose CIDs do not activate anything.
    fn simulated(&self) -> bool {
        false
    }
    /// Requests a CID for one record.
    fn activate(&self, req: &Request) -> Outcome;
    /// Remaining activations of the MAK behind `epid` (-1: not a MAK / unlimited).
    fn remaining(&self, epid: &ExtendedProductId) -> Result<i64, Failure>;
}

/// Retries only `NoResponse`, with exponential backoff.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
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

/// Calls the backend, retrying only when no response arrived, and validates the CID.
pub fn activate_with_retry(backend: &dyn Backend, req: &Request, policy: &RetryPolicy) -> Outcome {
    let mut delay = policy.first_delay;
    let mut last = String::new();
    for attempt in 0..policy.attempts.max(1) {
        if attempt > 0 {
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
        }
        match backend.activate(req) {
            Outcome::NoResponse(why) => last = why,
            other => return other,
        }
    }
    Outcome::NoResponse(format!(
        "no response after {} attempts: {last}",
        policy.attempts.max(1)
    ))
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
