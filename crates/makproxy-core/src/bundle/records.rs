//! The data entry's records: one JSON line each, CIL requests and return results,
//! with the cross-field checks serde cannot express.

use super::format::{truncate_utf8, valid_service_code, MAX_FAILURE_MESSAGE, MAX_PRODUCT_NAME};
use super::manifest::BackendKind;
use super::Kind;
use crate::codes::Code;
use crate::ids::{ConfirmationId, ExtendedProductId, Guid, HostName, InstallationId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Text a bundle carries with a bound its reader enforces: built only through
/// `parse` (refuses what the reader would refuse) or `cut` where free text may simply be
/// shortened, so a writer cannot produce a record its reader rejects.
macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $what:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The text, if the bundle's reader would accept it.
            pub fn parse(text: impl Into<String>) -> Result<Self, String> {
                let text = text.into();
                let valid: fn(&str) -> bool = $valid;
                if valid(&text) {
                    Ok(Self(text))
                } else {
                    Err(format!("{} {:?} is not allowed", $what, truncate_utf8(&text, 64)))
                }
            }
            /// The text as carried.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                Self::parse(text)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_text!(
    /// A product's name, for people reading a CIL bundle: at most [`MAX_PRODUCT_NAME`] bytes.
    ProductName,
    "product name",
    |s| s.len() <= MAX_PRODUCT_NAME
);
bounded_text!(
    /// The activation service's own error code, verbatim (`0x7F`): see [`valid_service_code`].
    ServiceCode,
    "service code",
    valid_service_code
);
bounded_text!(
    /// A makproxy code as carried in a return (`MP-BKD-001`): `MP-`, three capitals, `-`,
    /// three digits. A code this build does not know is still carried (a newer online side
    /// may send one); [`FailureCode::known`] says which it is.
    FailureCode,
    "makproxy code",
    |s| {
        let b = s.as_bytes();
        b.len() == 10
            && s.starts_with("MP-")
            && b[3..6].iter().all(u8::is_ascii_uppercase)
            && b[6] == b'-'
            && b[7..].iter().all(u8::is_ascii_digit)
    }
);
bounded_text!(
    /// What happened to a record, for the operator: at most [`MAX_FAILURE_MESSAGE`] bytes.
    FailureMessage,
    "failure message",
    |s| s.len() <= MAX_FAILURE_MESSAGE
);

/// Names longer than the reader takes are cut at a character boundary (for people only).
impl ProductName {
    /// `text` cut to [`MAX_PRODUCT_NAME`] bytes at a character boundary.
    pub fn cut(text: &str) -> Self {
        Self(truncate_utf8(text, MAX_PRODUCT_NAME).to_string())
    }
}

impl FailureMessage {
    /// `text` cut to [`MAX_FAILURE_MESSAGE`] bytes at a character boundary.
    pub fn cut(text: &str) -> Self {
        Self(truncate_utf8(text, MAX_FAILURE_MESSAGE).to_string())
    }
}

impl FailureCode {
    /// The registry's code, when this build knows it.
    pub fn known(&self) -> Option<Code> {
        Code::parse(&self.0)
    }
}

impl From<Code> for FailureCode {
    fn from(c: Code) -> Self {
        Self(c.as_str().to_string())
    }
}

impl PartialEq<Code> for FailureCode {
    fn eq(&self, c: &Code) -> bool {
        self.0 == c.as_str()
    }
}

/// A record of a CIL bundle: what one product needs activated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CilRecord {
    /// 1-based position in the bundle; the secure ledger maps it back to the machine.
    pub handle: u64,
    /// The machine's installation ID.
    pub installation_id: InstallationId,
    /// The extended product ID of its key; left out (format version 3) when the record
    /// has none, which only a phone activation can answer.
    #[serde(default, skip_serializing_if = "ExtendedProductId::is_absent")]
    pub extended_product_id: ExtendedProductId,
    /// The product's activation ID.
    pub activation_id: Guid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The product's name, for people reading the bundle.
    pub product: Option<ProductName>,
    /// Only with `pack --include-hostnames`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// The key's channel (`mak`, `csvlk`, `retail`), when the secure side knows it
    /// (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<crate::channel::Channel>,
    /// Which key the product's is, when the secure side knows it (format version 4):
    /// records of one key carry the same number, 1 for the first key in the bundle, 2
    /// for the next, … . It says only which records share a key, nothing of the key
    /// itself; several extended product IDs (one per build or edition) can stand for one
    /// key, so `activate --check-remaining` adds up what the batch needs of each key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_group: Option<std::num::NonZeroU32>,
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
    pub code: FailureCode,
    /// The activation service's own code, verbatim, e.g. `0x7F`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_code: Option<ServiceCode>,
    /// What happened, for the operator.
    pub message: FailureMessage,
}

impl RecordFailure {
    /// A failure made by makproxy (no service code), its message cut to the reader's limit.
    pub fn new(code: Code, message: &str) -> Self {
        Self {
            code: code.into(),
            service_code: None,
            message: FailureMessage::cut(message),
        }
    }

    /// `[CODE] SERVICE-CODE message` for a terminal, every part escaped.
    pub fn line(&self) -> String {
        use crate::sanitize::escape;
        format!(
            "[{}]{} {}",
            escape(self.code.as_str()),
            self.service_code
                .as_ref()
                .map(|c| format!(" {}", escape(c.as_str())))
                .unwrap_or_default(),
            escape(self.message.as_str())
        )
    }
}

/// What a return record says about its request: exactly one of a confirmation ID and a
/// failure, so no reader has to handle "both" or "neither".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnAnswer {
    /// The confirmation ID to deposit.
    Confirmed(ConfirmationId),
    /// Why there is none.
    Failed(RecordFailure),
}

/// A record of a return bundle. On the wire the answer is one of two optional fields,
/// `confirmation_id` and `failure` (docs/bundle-format.md); reading refuses a record with
/// both or neither.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WireReturn")]
pub struct ReturnRecord {
    /// The handle of the request record answered.
    pub handle: u64,
    /// Its installation ID, repeated (apply checks it).
    pub installation_id: InstallationId,
    /// Its extended product ID, repeated (absent where the request had none).
    pub extended_product_id: ExtendedProductId,
    /// The confirmation ID or why there is none.
    pub answer: ReturnAnswer,
    /// Whether the answer was obtained now or served from the journal.
    pub source: Source,
    /// The backend that produced this answer (or refusal).
    pub backend: BackendKind,
    /// True when the answer came from the simulator.
    pub simulated: bool,
}

impl ReturnRecord {
    /// The fields a return record may carry, as a return's manifest lists them.
    pub const FIELDS: [&'static str; 8] = [
        "handle",
        "installation_id",
        "extended_product_id",
        "confirmation_id",
        "failure",
        "source",
        "backend",
        "simulated",
    ];

    /// The confirmation ID, when the answer is one.
    pub fn confirmation_id(&self) -> Option<&ConfirmationId> {
        match &self.answer {
            ReturnAnswer::Confirmed(c) => Some(c),
            ReturnAnswer::Failed(_) => None,
        }
    }
    /// The failure, when the answer is one.
    pub fn failure(&self) -> Option<&RecordFailure> {
        match &self.answer {
            ReturnAnswer::Confirmed(_) => None,
            ReturnAnswer::Failed(f) => Some(f),
        }
    }
}

/// The record as written: the two answer fields are optional there.
#[derive(Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "C: Deserialize<'de>, F: Deserialize<'de>")
)]
struct WireReturn<C = ConfirmationId, F = RecordFailure> {
    handle: u64,
    installation_id: InstallationId,
    #[serde(default, skip_serializing_if = "ExtendedProductId::is_absent")]
    extended_product_id: ExtendedProductId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmation_id: Option<C>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<F>,
    source: Source,
    backend: BackendKind,
    simulated: bool,
}

impl TryFrom<WireReturn> for ReturnRecord {
    type Error = &'static str;
    fn try_from(w: WireReturn) -> Result<Self, Self::Error> {
        let answer = match (w.confirmation_id, w.failure) {
            (Some(c), None) => ReturnAnswer::Confirmed(c),
            (None, Some(f)) => ReturnAnswer::Failed(f),
            _ => return Err("exactly one of confirmation_id and failure must be present"),
        };
        Ok(ReturnRecord {
            handle: w.handle,
            installation_id: w.installation_id,
            extended_product_id: w.extended_product_id,
            answer,
            source: w.source,
            backend: w.backend,
            simulated: w.simulated,
        })
    }
}

impl Serialize for ReturnRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Borrowed, so writing 100,000 records copies nothing.
        WireReturn::<&ConfirmationId, &RecordFailure> {
            handle: self.handle,
            installation_id: self.installation_id.clone(),
            extended_product_id: self.extended_product_id.clone(),
            confirmation_id: self.confirmation_id(),
            failure: self.failure(),
            source: self.source,
            backend: self.backend,
            simulated: self.simulated,
        }
        .serialize(s)
    }
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

impl CilRecord {
    /// The fields a CIL record may carry, as a CIL's manifest lists them, in order.
    /// `host` crosses only with `pack --include-hostnames` ([`CilRecord::fields`]).
    pub const FIELDS: [&'static str; 8] = [
        "handle",
        "installation_id",
        "extended_product_id",
        "activation_id",
        "product",
        "channel",
        "key_group",
        "host",
    ];

    /// The manifest's `fields` of a CIL bundle: every field but `host` unless host
    /// names are included.
    pub fn fields(with_hosts: bool) -> Vec<String> {
        Self::FIELDS
            .iter()
            .filter(|f| with_hosts || **f != "host")
            .map(|f| f.to_string())
            .collect()
    }
}

impl Record for CilRecord {
    const KIND: Kind = Kind::Cil;
    fn handle(&self) -> u64 {
        self.handle
    }
}

impl Record for ReturnRecord {
    const KIND: Kind = Kind::Return;
    fn handle(&self) -> u64 {
        self.handle
    }
    fn check(&self) -> Result<(), String> {
        if self.simulated != self.backend.simulated() {
            return Err("simulated flag disagrees with the backend".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored failure code is compared with the code it names, and only with it.
    #[test]
    fn a_failure_code_equals_its_own_code_only() {
        let f = FailureCode::from(Code::BkdUncertain);
        assert!(f == Code::BkdUncertain);
        assert!(f != Code::BkdRefused);
    }

    /// `FIELDS` is the record's fields, in the order they are written: a CIL record with
    /// every optional field serialises to exactly these keys, and without host names
    /// the manifest lists all but `host`.
    #[test]
    fn cil_fields_are_the_records_own() {
        let iid = crate::ids::with_check_digits(&[3; 54], 7);
        let r = CilRecord {
            handle: 1,
            installation_id: InstallationId::parse(&iid).unwrap(),
            extended_product_id: ExtendedProductId::parse(
                "03612-03305-317-008912-02-1033-9200.0000-0662023",
            )
            .unwrap(),
            activation_id: Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").unwrap(),
            product: Some(ProductName::cut("Windows")),
            host: Some(HostName::parse("PC-1").unwrap()),
            channel: Some(crate::channel::Channel::Mak),
            key_group: std::num::NonZeroU32::new(1),
        };
        let v = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = CilRecord::FIELDS.to_vec();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(CilRecord::fields(true), CilRecord::FIELDS.map(String::from));
        assert_eq!(
            CilRecord::fields(false),
            CilRecord::FIELDS[..7]
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
        );
    }

    /// The bounds of record fields are exact (found by mutation testing), and a record
    /// that breaks one is refused when read.
    #[test]
    fn record_text_bounds_are_exact_and_enforced_on_reading() {
        assert!(ProductName::parse("p".repeat(MAX_PRODUCT_NAME)).is_ok());
        assert!(ProductName::parse("p".repeat(MAX_PRODUCT_NAME + 1)).is_err());
        assert_eq!(
            ProductName::cut(&"é".repeat(MAX_PRODUCT_NAME))
                .as_str()
                .len(),
            MAX_PRODUCT_NAME
        );
        assert!(FailureMessage::parse("m".repeat(MAX_FAILURE_MESSAGE)).is_ok());
        assert!(FailureMessage::parse("m".repeat(MAX_FAILURE_MESSAGE + 1)).is_err());
        let cut = FailureMessage::cut(&format!("{}é", "m".repeat(MAX_FAILURE_MESSAGE - 1)));
        assert_eq!(
            cut.as_str().len(),
            MAX_FAILURE_MESSAGE - 1,
            "cut at a character boundary"
        );
        for ok in ["MP-BKD-001", "MP-ZZZ-999"] {
            assert!(FailureCode::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "MP-BKD-01",
            "MP-BKD-0011",
            "MP-bkd-001",
            "XX-BKD-001",
            "MP-BKD_001",
            "MP-BK1-001",
            "MP-BKD-00A",
        ] {
            assert!(FailureCode::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            FailureCode::from(Code::BkdUncertain).known(),
            Some(Code::BkdUncertain)
        );
        assert_eq!(FailureCode::parse("MP-ZZZ-999").unwrap().known(), None);

        let line = |failure: &str| {
            format!(
                r#"{{"handle":1,"installation_id":"{}","extended_product_id":"03612-03305-317-008912-02-1033-9200.0000-0662023","failure":{failure},"source":"backend","backend":"microsoft","simulated":false}}"#,
                crate::ids::with_check_digits(&crate::ids::digits_from_seed(b"r", 54), 7)
            )
        };
        let read = |failure: &str| serde_json::from_str::<ReturnRecord>(&line(failure));
        let r = read(r#"{"code":"MP-BKD-001","service_code":"0x7F","message":"m"}"#).unwrap();
        assert_eq!(r.failure().unwrap().code, Code::BkdRefused);
        assert!(r.confirmation_id().is_none());
        assert!(read(r#"{"code":"MP-BKD-0001","message":"m"}"#).is_err());
        assert!(read(r#"{"code":"MP-BKD-001","service_code":"0x 7F","message":"m"}"#).is_err());
        let long = format!(
            r#"{{"code":"MP-BKD-001","message":"{}"}}"#,
            "m".repeat(MAX_FAILURE_MESSAGE + 1)
        );
        assert!(read(&long).is_err());
    }

    /// A return record carries exactly one answer, and writes back as it was read.
    #[test]
    fn a_return_record_has_one_answer_and_round_trips() {
        use crate::ids::{digits_from_seed, with_check_digits};
        let iid = with_check_digits(&digits_from_seed(b"r", 54), 7);
        let cid = with_check_digits(&digits_from_seed(b"c", 40), 6);
        let epid = "03612-03305-317-008912-02-1033-9200.0000-0662023";
        let head =
            format!(r#"{{"handle":1,"installation_id":"{iid}","extended_product_id":"{epid}""#);
        let tail = r#""source":"backend","backend":"microsoft","simulated":false}"#;
        let failure = r#""failure":{"code":"MP-BKD-001","message":"m"}"#;
        let confirmed = format!(r#""confirmation_id":"{cid}""#);
        for (body, ok) in [
            (confirmed.clone(), true),
            (failure.to_string(), true),
            (format!("{confirmed},{failure}"), false),
            (String::new(), false),
        ] {
            let text = if body.is_empty() {
                format!("{head},{tail}")
            } else {
                format!("{head},{body},{tail}")
            };
            let read = serde_json::from_str::<ReturnRecord>(&text);
            assert_eq!(read.is_ok(), ok, "{text}");
            if let Ok(r) = read {
                assert_eq!(
                    serde_json::to_string(&r).unwrap(),
                    text,
                    "writes back as read"
                );
            }
        }
        let unknown = format!(r#"{head},{confirmed},"extra":1,{tail}"#);
        assert!(
            serde_json::from_str::<ReturnRecord>(&unknown).is_err(),
            "unknown fields refused"
        );
    }

    #[test]
    fn a_failure_line_shows_both_codes_and_escapes_what_the_service_said() {
        let f = RecordFailure {
            code: Code::BkdRefused.into(),
            service_code: Some(ServiceCode::parse("0x7F").unwrap()),
            message: FailureMessage::parse("limit\u{1b}[2J reached").unwrap(),
        };
        assert_eq!(f.line(), "[MP-BKD-001] 0x7F limit\\u{1b}[2J reached");
        let g = RecordFailure {
            service_code: None,
            ..f
        };
        assert!(g.line().starts_with("[MP-BKD-001] limit"));
    }
}
