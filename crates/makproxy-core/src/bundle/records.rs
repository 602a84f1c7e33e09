//! The data entry's records: one JSON line each, CIL requests and return results,
//! with the cross-field checks serde cannot express.

use super::format::{valid_service_code, MAX_FAILURE_CODE, MAX_FAILURE_MESSAGE, MAX_PRODUCT_NAME};
use super::manifest::BackendKind;
use super::Kind;
use crate::ids::{ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A record of a CIL bundle: what one product needs activated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CilRecord {
    /// 1-based position in the bundle; the secure ledger maps it back to the machine.
    pub handle: u64,
    /// The machine's installation ID.
    pub installation_id: InstallationId,
    /// The extended product ID of its key.
    pub extended_product_id: ExtendedProductId,
    /// The product's activation ID.
    pub activation_id: Guid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The product's name, for people reading the bundle.
    pub product: Option<String>,
    /// Only with `pack --include-hostnames`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
}

/// Where a return record's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Obtained from the backend during this run.
    Backend,
    /// Served from the online journal: no activation was spent.
    Journal,
}

/// A per-record failure in a return bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFailure {
    /// makproxy code, e.g. `MP-BKD-001`.
    pub code: String,
    /// The activation service's own code, verbatim, e.g. `0x7F`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_code: Option<String>,
    /// What happened, for the operator.
    pub message: String,
}

impl RecordFailure {
    /// `[CODE] SERVICE-CODE message` for a terminal, every part escaped.
    pub fn line(&self) -> String {
        use crate::sanitize::escape;
        format!(
            "[{}]{} {}",
            escape(&self.code),
            self.service_code
                .as_deref()
                .map(|c| format!(" {}", escape(c)))
                .unwrap_or_default(),
            escape(&self.message)
        )
    }
}

/// A record of a return bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnRecord {
    /// The handle of the request record answered.
    pub handle: u64,
    /// Its installation ID, repeated (apply checks it).
    pub installation_id: InstallationId,
    /// Its extended product ID, repeated.
    pub extended_product_id: ExtendedProductId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The confirmation ID (exactly one of this and `failure`).
    pub confirmation_id: Option<ConfirmationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Why there is no confirmation ID.
    pub failure: Option<RecordFailure>,
    /// Whether the answer was obtained now or served from the journal.
    pub source: Source,
    /// The backend that produced this answer (or refusal).
    pub backend: BackendKind,
    /// True when the answer came from the simulator.
    pub simulated: bool,
}

/// Records of either kind.
pub trait Record: DeserializeOwned + Serialize {
    /// Which kind of bundle carries records of this type.
    const KIND: Kind;
    /// The record's 1-based position in its bundle.
    fn handle(&self) -> u64;
    /// Cross-field checks serde cannot express.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Record for CilRecord {
    const KIND: Kind = Kind::Cil;
    fn handle(&self) -> u64 {
        self.handle
    }
    fn check(&self) -> Result<(), String> {
        match &self.product {
            Some(p) if p.len() > MAX_PRODUCT_NAME => {
                Err(format!("product name longer than {MAX_PRODUCT_NAME} bytes"))
            }
            _ => Ok(()),
        }
    }
}

impl Record for ReturnRecord {
    const KIND: Kind = Kind::Return;
    fn handle(&self) -> u64 {
        self.handle
    }
    fn check(&self) -> Result<(), String> {
        match (&self.confirmation_id, &self.failure) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("exactly one of confirmation_id and failure must be present".into()),
        }
        if self.simulated != self.backend.simulated() {
            return Err("simulated flag disagrees with the backend".into());
        }
        match &self.failure {
            Some(f)
                if f.message.len() > MAX_FAILURE_MESSAGE
                    || f.code.len() > MAX_FAILURE_CODE
                    || f.service_code
                        .as_ref()
                        .is_some_and(|s| !valid_service_code(s)) =>
            {
                Err("failure text too long or service code malformed".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length limits of record fields are exact (found by mutation testing).
    #[test]
    fn record_text_limits_are_exact() {
        use crate::ids::{digits_from_seed, with_check_digits};
        let iid =
            InstallationId::parse(&with_check_digits(&digits_from_seed(b"r", 54), 7)).unwrap();
        let epid =
            ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap();
        let cil = |len: usize| CilRecord {
            handle: 1,
            installation_id: iid.clone(),
            extended_product_id: epid.clone(),
            activation_id: crate::ids::Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").unwrap(),
            product: Some("p".repeat(len)),
            host: None,
        };
        assert!(cil(MAX_PRODUCT_NAME).check().is_ok());
        assert!(cil(MAX_PRODUCT_NAME + 1).check().is_err());
        let ret = |code: usize, message: usize| ReturnRecord {
            handle: 1,
            installation_id: iid.clone(),
            extended_product_id: epid.clone(),
            confirmation_id: None,
            failure: Some(RecordFailure {
                code: "M".repeat(code),
                service_code: None,
                message: "m".repeat(message),
            }),
            source: Source::Backend,
            backend: BackendKind::Microsoft,
            simulated: false,
        };
        assert!(ret(MAX_FAILURE_CODE, MAX_FAILURE_MESSAGE).check().is_ok());
        assert!(ret(MAX_FAILURE_CODE + 1, 1).check().is_err());
        assert!(ret(1, MAX_FAILURE_MESSAGE + 1).check().is_err());
    }

    #[test]
    fn a_failure_line_shows_both_codes_and_escapes_what_the_service_said() {
        let f = RecordFailure {
            code: "MP-BKD-001".into(),
            service_code: Some("0x7F".into()),
            message: "limit\u{1b}[2J reached".into(),
        };
        assert_eq!(f.line(), "[MP-BKD-001] 0x7F limit\\u{1b}[2J reached");
        let g = RecordFailure {
            service_code: None,
            ..f
        };
        assert!(g.line().starts_with("[MP-BKD-001] limit"));
    }
}
