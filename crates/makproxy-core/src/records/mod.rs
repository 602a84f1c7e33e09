//! Machine records as they arrive in the secure side's drop folder, and their parsers.
//!
//! Accepted inputs (see docs/operator-guide.md and docs/formats.md):
//! - the agent's JSON (`schema: "makproxy-agent/1"`, strict);
//! - raw `Get-CimInstance SoftwareLicensingProduct | ConvertTo-Json` output (one
//!   object or an array; PascalCase WMI property names; other properties ignored);
//! - CSV with a header naming at least host, activation_id, extended_product_id,
//!   installation_id;
//! - the agent's deposit result files (`schema: "makproxy-deposit-result/1"`);
//! - saved console output of `slmgr /dlv all` (`/dti`) and `ospp.vbs /dstatus`
//!   (`/dinstid`), in any display language, for machines that cannot run the agent.
//!
//! Text may be UTF-8 (with or without BOM) or UTF-16LE/BE with BOM. JSON objects with
//! a repeated key are rejected (serde_json would silently keep the last one).
//!
//! One file per job: [`text`] (decoding by byte order mark), [`json`] (strict JSON),
//! [`validate`] (the checks every format's fields go through), then one parser per
//! format: [`agent`], [`wmi`], [`csv`], [`console`], [`deposit`]. [`parse`] here detects the format.

mod agent;
mod console;
mod csv;
mod deposit;
pub mod deposit_file;
mod json;
mod text;
mod validate;
mod wmi;

use agent::parse_agent;
pub use console::decode_console_text;
use console::{looks_like_console, parse_console};
use csv::parse_csv;
use deposit::parse_deposits;
pub use json::parse_json_strict;
use json::type_name;
pub use text::decode_text;
use validate::{nonempty, serde_err, validate, Fields};
use wmi::parse_wmi;

pub use crate::channel::{Channel, Policy};
use crate::codes::Code;
use crate::ids::{
    ApplicationId, ConfirmationId, ExtendedProductId, Guid, HostName, IdError, InstallationId,
    LicenseStatus, WmiClass,
};
use serde_json::Value;

/// Largest input file accepted.
pub const MAX_FILE: u64 = 16 << 20;
/// Most products accepted from one file.
pub const MAX_PRODUCTS: usize = 4096;

/// Why a file or record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct RecordError {
    /// The stable code (`MP-REC-…` or `MP-ID-…`).
    pub code: Code,
    /// 1-based record number within the file, when the problem is one record.
    pub record: Option<usize>,
    /// What exactly was wrong.
    pub detail: String,
}

impl RecordError {
    fn file(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            record: None,
            detail: detail.into(),
        }
    }
    fn at(record: usize, code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            record: Some(record),
            detail: detail.into(),
        }
    }
    fn id(record: usize, field: &str, e: IdError) -> Self {
        let msg = e.to_string();
        if msg
            .to_ascii_lowercase()
            .starts_with(&field.to_ascii_lowercase())
        {
            Self::at(record, e.code(), msg)
        } else {
            Self::at(record, e.code(), format!("{field}: {msg}"))
        }
    }
}

/// One licensable product of one machine, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRecord {
    /// The machine (its file must be named after it).
    pub host: HostName,
    /// The product's activation ID.
    pub activation_id: Guid,
    /// Windows, Office or another application.
    pub application: ApplicationId,
    /// The product's name.
    pub name: Option<String>,
    /// Its description (names the channel: MAK, KMS client, retail …).
    pub description: Option<String>,
    /// The last five characters of the installed key.
    pub partial_key: Option<String>,
    /// The extended product ID of the installed key.
    pub epid: Option<ExtendedProductId>,
    /// The installation ID to activate.
    pub iid: Option<InstallationId>,
    /// What Windows says about its activation.
    pub license_status: Option<LicenseStatus>,
    /// The WMI class that reported it.
    pub wmi_class: WmiClass,
    /// The kind of key installed (`None`: the input did not say, e.g. a CSV inventory
    /// without a `channel` column).
    pub channel: Option<Channel>,
    /// When the machine wrote the report, by its own clock (agent files' `collected`;
    /// `None` for formats without one).
    pub observed: Option<MachineTime>,
}

/// Why a product is recorded but not queued for activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No product key installed.
    NoKey,
    /// A KMS client key: activates against KMS.
    KmsClient,
    /// A manufacturer's (OEM) key: activated by the manufacturer, not by proxy.
    Oem,
    /// A channel no proxy activation serves (evaluation, timebased …).
    NotMak,
    /// A channel the site does not proxy-activate (`collect --channels`).
    ChannelOff,
    /// Already activated.
    Licensed,
    /// No installation ID reported.
    NoIid,
}

impl Skip {
    /// Every reason, as documented.
    pub const ALL: [Skip; 7] = [
        Skip::NoKey,
        Skip::KmsClient,
        Skip::Oem,
        Skip::NotMak,
        Skip::ChannelOff,
        Skip::Licensed,
        Skip::NoIid,
    ];

    /// The reason's code in the ledger and reports.
    pub fn id(self) -> &'static str {
        match self {
            Skip::NoKey => "no-key",
            Skip::KmsClient => "kms-client",
            Skip::Oem => "oem",
            Skip::NotMak => "not-mak",
            Skip::ChannelOff => "channel-off",
            Skip::Licensed => "licensed",
            Skip::NoIid => "no-iid",
        }
    }
    /// The reason in words.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::NoKey => "no product key installed",
            Skip::KmsClient => "KMS client product; activates against KMS, not by MAK proxy",
            Skip::Oem => "OEM key; activated by the manufacturer's licence, not by proxy",
            Skip::NotMak => {
                "a channel proxy activation does not serve (not MAK, KMS host or retail)"
            }
            Skip::ChannelOff => {
                "this site does not proxy-activate this channel (collect --channels)"
            }
            Skip::Licensed => "already licensed",
            Skip::NoIid => "no installation ID reported",
        }
    }
}

impl ProductRecord {
    /// The activation ID of the marker a machine with no product key is recorded
    /// under (the nil GUID: no real product has it).
    pub const NO_KEY_MARKER: &'static str = "00000000-0000-0000-0000-000000000000";

    /// The marker for a machine whose agent found no product key at all.
    pub fn no_key(host: HostName) -> Self {
        Self {
            host,
            activation_id: Guid::parse(Self::NO_KEY_MARKER).expect("the nil GUID is a GUID"),
            application: ApplicationId::Windows,
            name: Some("(no product key on this machine)".into()),
            description: None,
            partial_key: None,
            epid: None,
            iid: None,
            license_status: None,
            wmi_class: WmiClass::SoftwareLicensingProduct,
            observed: None,
            channel: None,
        }
    }

    /// Whether this is the no-key marker of its machine.
    pub fn is_no_key_marker(&self) -> bool {
        self.activation_id.to_string() == Self::NO_KEY_MARKER
    }

    /// None if the product needs a proxy activation under the site's `policy`, else why not.
    pub fn skip(&self, policy: Policy) -> Option<Skip> {
        skip_reason(
            self.channel,
            self.partial_key.as_deref(),
            self.license_status == Some(LicenseStatus::Licensed),
            self.iid.is_some(),
            policy,
        )
    }
}

/// Why a product with these facts is not proxy-activated under `policy` (None: it is).
/// The one rule collect applies to a new record and the ledger to stored facts when the
/// site's policy changes.
pub fn skip_reason(
    channel: Option<Channel>,
    partial_key: Option<&str>,
    licensed: bool,
    has_iid: bool,
    policy: Policy,
) -> Option<Skip> {
    if partial_key.is_none_or(|k| k.trim().is_empty()) {
        return Some(Skip::NoKey);
    }
    match channel {
        Some(Channel::KmsClient) => return Some(Skip::KmsClient),
        Some(Channel::Oem) => return Some(Skip::Oem),
        Some(Channel::Other) => return Some(Skip::NotMak),
        _ => {}
    }
    if licensed {
        Some(Skip::Licensed)
    } else if !policy.enables(channel) {
        Some(Skip::ChannelOff)
    } else if !has_iid {
        Some(Skip::NoIid)
    } else {
        None
    }
}

/// Outcome of depositing one CID on a machine, reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositResult {
    /// The machine that deposited.
    pub host: HostName,
    /// The product's activation ID.
    pub activation_id: Guid,
    /// The installation ID the CID was for.
    pub installation_id: InstallationId,
    /// The CID deposited.
    pub confirmation_id: ConfirmationId,
    /// Whether Windows accepted it.
    pub activated: bool,
    /// Windows error code, e.g. `0xC004F031`.
    pub error_code: Option<String>,
    /// The license status after the deposit.
    pub license_status: Option<LicenseStatus>,
    /// When the machine deposited, by its own clock (the file's `time`).
    pub observed: Option<MachineTime>,
}

/// When a machine wrote a report or result, by its own clock: RFC 3339, kept in UTC to
/// the second, so two times compare as their text does (the ledger orders a product's
/// facts by it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineTime(String);

impl MachineTime {
    /// How far a machine's clock may run ahead of this one's before its time is
    /// refused: a report dated later would outrank every true report after it.
    pub const MAX_AHEAD: time::Duration = time::Duration::days(1);

    /// Parses an RFC 3339 time such as `2026-11-22T09:00:00Z` (any offset).
    pub fn parse(field: &str, text: &str) -> Result<Self, RecordError> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
            RecordError::file(
                Code::RecFieldType,
                format!(
                    "{field} {:?} is not an RFC 3339 time: {e}",
                    crate::sanitize::escape(crate::bundle::truncate_utf8(text, 64))
                ),
            )
        })?;
        Ok(Self::from_time(t))
    }

    /// The machine time of `t`.
    pub fn from_time(t: time::OffsetDateTime) -> Self {
        MachineTime(crate::bundle::rfc3339(t.to_offset(time::UtcOffset::UTC)))
    }

    /// The time as stored and printed (`2026-11-22T09:00:00Z`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is more than [`Self::MAX_AHEAD`] after `now`.
    pub fn is_ahead_of(&self, now: time::OffsetDateTime) -> bool {
        *self > Self::from_time(now + Self::MAX_AHEAD)
    }
}

impl std::fmt::Display for MachineTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Meaning of Windows deposit errors (documented in docs/errors.md).
pub fn deposit_error_meaning(code: &str) -> &'static str {
    match code.to_ascii_uppercase().as_str() {
        "0XC004F04D" => "installation ID or confirmation ID is invalid (check digits)",
        "0XC004F031" => {
            "installation ID and confirmation ID do not match (machine changed? re-collect)"
        }
        "0XC004F025" => "access denied: run the deposit script as administrator",
        "0XC004F074" => "no key management service could be contacted (KMS client product)",
        _ => "unrecognised Windows error (reported verbatim)",
    }
}

/// What one input file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Products, each validated, or the reason one was rejected.
    Products(Vec<Result<ProductRecord, RecordError>>),
    /// Deposit results, each validated, or the reason one was rejected.
    Deposits(Vec<Result<DepositResult, RecordError>>),
}

/// The input format detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The agent's JSON.
    Agent,
    /// Raw WMI JSON.
    Wmi,
    /// CSV with a header.
    Csv,
    /// The agent's deposit result file.
    DepositResult,
    /// Saved `slmgr /dlv` (`/dti`) or `ospp.vbs /dstatus` (`/dinstid`) console output.
    Console,
}

/// Detects the format of `text` and parses it. `fallback_host` (usually the file stem)
/// is used for WMI output that carries no `PSComputerName`.
pub fn parse(text: &str, fallback_host: &str) -> Result<(Format, Parsed), RecordError> {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        let v = parse_json_strict(t)?;
        if let Some(schema) = v.get("schema").and_then(Value::as_str) {
            if schema.starts_with("makproxy-agent/") {
                return parse_agent(v).map(|p| (Format::Agent, p));
            }
            if schema.starts_with("makproxy-deposit-result/") {
                return parse_deposits(v).map(|p| (Format::DepositResult, p));
            }
            return Err(RecordError::file(
                Code::RecSchemaVersion,
                format!("unsupported schema {:?}", crate::sanitize::escape(schema)),
            ));
        }
        return parse_wmi(v, fallback_host).map(|p| (Format::Wmi, p));
    }
    let first = t.lines().next().unwrap_or("").to_ascii_lowercase();
    if first.contains("installation_id") && first.contains(',') {
        return parse_csv(t).map(|p| (Format::Csv, p));
    }
    if looks_like_console(t) {
        return parse_console(t, fallback_host).map(|p| (Format::Console, p));
    }
    Err(RecordError::file(
        Code::RecShape,
        "not agent JSON, WMI JSON, CSV, saved slmgr/ospp output or a deposit result file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::with_check_digits;

    fn iid() -> String {
        with_check_digits(&[7; 54], 7)
    }

    fn wmi_obj(host: Option<&str>) -> String {
        let pc = host
            .map(|h| format!(r#""PSComputerName": "{h}","#))
            .unwrap_or_default();
        format!(
            r#"{{ {pc} "ID": "2DE67392-B7A7-462A-B1CA-108DD189F588", "ApplicationID": "55c92734-d682-4d71-983e-d6ec3f16059f",
               "Name": "Windows(R), Professional edition", "Description": "Windows(R) Operating System, VOLUME_MAK channel",
               "PartialProductKey": "3V66T", "ProductKeyID": "03612-03305-317-008912-02-1033-9200.0000-0662023",
               "OfflineInstallationId": "{}", "LicenseStatus": 5, "GracePeriodRemaining": 0 }}"#,
            iid()
        )
    }

    #[test]
    fn decodes_boms_and_utf16() {
        let s = "{\"a\": \"é\"}";
        let mut le = vec![0xFF, 0xFE];
        le.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        let mut be = vec![0xFE, 0xFF];
        be.extend(s.encode_utf16().flat_map(u16::to_be_bytes));
        let mut u8bom = vec![0xEF, 0xBB, 0xBF];
        u8bom.extend_from_slice(s.as_bytes());
        let bare_le: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        for b in [le, be, u8bom, s.as_bytes().to_vec(), bare_le] {
            assert_eq!(decode_text(&b).unwrap(), s);
        }
        assert_eq!(
            decode_text(&[0xFF, 0xFE, 0x41]).unwrap_err().code,
            Code::RecUnreadable
        );
        assert_eq!(
            decode_text(&[0xC3, 0x28]).unwrap_err().code,
            Code::RecUnreadable
        );
    }

    #[test]
    fn wmi_single_object_and_array() {
        let (fmt, p) = parse(&wmi_obj(Some("pc-7")), "file-stem").unwrap();
        assert_eq!(fmt, Format::Wmi);
        let Parsed::Products(v) = p else { panic!() };
        let r = v[0].as_ref().unwrap();
        assert_eq!(r.host.as_str(), "PC-7");
        assert_eq!(r.skip(Policy::default()), None);
        let arr = format!(
            "[{}, {}]",
            wmi_obj(None),
            wmi_obj(None).replace("VOLUME_MAK", "VOLUME_KMSCLIENT")
        );
        let (_, Parsed::Products(v)) = parse(&arr, "lab-3").unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].as_ref().unwrap().host.as_str(), "LAB-3");
        assert_eq!(
            v[1].as_ref().unwrap().skip(Policy::default()),
            Some(Skip::KmsClient)
        );
    }

    #[test]
    fn bad_record_does_not_hide_good_one() {
        // every group of the IID is 7777770; a typo makes the first one 7777771
        let bad = wmi_obj(None).replacen("7777770", "7777771", 1);
        let arr = format!("[{}, {}]", bad, wmi_obj(None));
        let (_, Parsed::Products(v)) = parse(&arr, "pc").unwrap() else {
            panic!()
        };
        let e = v[0].as_ref().unwrap_err();
        assert_eq!(e.record, Some(1));
        assert_eq!(e.code, Code::IdCheckDigit);
        assert!(e.detail.contains("group 1 of 9"), "{}", e.detail);
        assert!(v[1].is_ok());
    }

    #[test]
    fn duplicate_keys_and_depth_rejected() {
        let e = parse(r#"{"ID": "x", "ID": "y"}"#, "h").unwrap_err();
        assert_eq!(e.code, Code::RecDuplicateKey);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parse(&deep, "h").unwrap_err().code, Code::RecTooDeep);
        assert_eq!(parse("{} x", "h").unwrap_err().code, Code::RecSyntax);
        assert_eq!(parse("hello", "h").unwrap_err().code, Code::RecShape);
    }

    #[test]
    fn agent_schema_strict() {
        let good = format!(
            r#"{{"schema":"makproxy-agent/1","host":"PC-1","collected":"2026-11-20T10:00:00Z","agent":"t","products":[{{"activation_id":"2de67392-b7a7-462a-b1ca-108dd189f588","partial_product_key":"3V66T","extended_product_id":"03612-03305-317-008912-02-1033-9200.0000-0662023","installation_id":"{}","license_status":0,"description":"VOLUME_MAK"}}]}}"#,
            iid()
        );
        let (f, Parsed::Products(v)) = parse(&good, "x").unwrap() else {
            panic!()
        };
        assert_eq!(f, Format::Agent);
        assert!(v[0].is_ok());
        let unknown = good.replace("\"license_status\"", "\"licence_status\"");
        let (_, Parsed::Products(v)) = parse(&unknown, "x").unwrap() else {
            panic!()
        };
        assert_eq!(v[0].as_ref().unwrap_err().code, Code::RecUnknownField);
        assert_eq!(
            parse(&good.replace("agent/1", "agent/9"), "x")
                .unwrap_err()
                .code,
            Code::RecSchemaVersion
        );
    }

    #[test]
    fn csv_rows() {
        let text = format!("host,activation_id,extended_product_id,installation_id\nPC-1,2de67392-b7a7-462a-b1ca-108dd189f588,03612-03305-317-008912-02-1033-9200.0000-0662023,\"{}\"\nPC-2,nope,x,y\n", iid());
        let (f, Parsed::Products(v)) = parse(&text, "x").unwrap() else {
            panic!()
        };
        assert_eq!(f, Format::Csv);
        assert!(v[0].is_ok());
        assert_eq!(v[1].as_ref().unwrap_err().code, Code::IdGuid);
    }
}
