//! Machine records as they arrive in the secure side's drop folder, and their parsers.
//!
//! Accepted inputs (see docs/operator-guide.md and docs/formats.md):
//! - the agent's JSON (`schema: "makproxy-agent/1"`, strict);
//! - raw `Get-CimInstance SoftwareLicensingProduct | ConvertTo-Json` output (one
//!   object or an array; PascalCase WMI property names; other properties ignored);
//! - CSV with a header naming at least host, activation_id, extended_product_id,
//!   installation_id;
//! - the agent's deposit result files (`schema: "makproxy-deposit-result/1"`).
//!
//! Text may be UTF-8 (with or without BOM) or UTF-16LE/BE with BOM. JSON objects with
//! a repeated key are rejected (serde_json would silently keep the last one).

use crate::codes::Code;
use crate::ids::{
    ApplicationId, ConfirmationId, ExtendedProductId, Guid, HostName, IdError, InstallationId,
    LicenseStatus,
};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// Largest input file accepted.
pub const MAX_FILE: u64 = 16 << 20;
/// Most products accepted from one file.
pub const MAX_PRODUCTS: usize = 4096;

/// Why a file or record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct RecordError {
    pub code: Code,
    /// 1-based record number within the file, when the problem is one record.
    pub record: Option<usize>,
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

/// Decodes text by BOM: UTF-8 (BOM optional), UTF-16LE/BE (BOM required). Also
/// recognises BOM-less UTF-16LE as PowerShell 5.1 pipes sometimes produce it.
pub fn decode_text(bytes: &[u8]) -> Result<String, RecordError> {
    let utf16 = |b: &[u8], le: bool| -> Result<String, RecordError> {
        if !b.len().is_multiple_of(2) {
            return Err(RecordError::file(
                Code::RecUnreadable,
                "UTF-16 text has an odd number of bytes (truncated?)",
            ));
        }
        let units = b.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| {
                RecordError::file(Code::RecUnreadable, "invalid UTF-16 (unpaired surrogate)")
            })
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => {
            std::str::from_utf8(rest).map(str::to_string).map_err(|e| {
                RecordError::file(
                    Code::RecUnreadable,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to() + 3),
                )
            })
        }
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        [a, 0, b, 0, ..] if a.is_ascii() && b.is_ascii() && *a != 0 => utf16(bytes, true),
        _ => std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
            RecordError::file(
                Code::RecUnreadable,
                format!(
                    "not UTF-8 or UTF-16 with BOM (invalid byte at {})",
                    e.valid_up_to()
                ),
            )
        }),
    }
}

/// A JSON value parsed with duplicate-key detection.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
                Ok(Strict(
                    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Strict, E> {
                Ok(Strict(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                let mut v = Vec::new();
                while let Some(Strict(x)) = a.next_element()? {
                    v.push(x);
                }
                Ok(Strict(Value::Array(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                let mut m = Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let Strict(v) = a.next_value()?;
                    if m.insert(k.clone(), v).is_some() {
                        return Err(de::Error::custom(format_args!("duplicate key {k:?}")));
                    }
                }
                Ok(Strict(Value::Object(m)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses JSON text, rejecting duplicate keys, trailing data and deep nesting.
pub fn parse_json_strict(text: &str) -> Result<Value, RecordError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Strict::deserialize(&mut de).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.contains("duplicate key") {
            Code::RecDuplicateKey
        } else if msg.contains("recursion limit") {
            Code::RecTooDeep
        } else {
            Code::RecSyntax
        };
        RecordError::file(code, format!("JSON: {msg}"))
    })?;
    de.end()
        .map_err(|e| RecordError::file(Code::RecSyntax, format!("JSON: trailing data: {e}")))?;
    Ok(v.0)
}

/// One licensable product of one machine, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRecord {
    pub host: HostName,
    pub activation_id: Guid,
    pub application: ApplicationId,
    pub name: Option<String>,
    pub description: Option<String>,
    pub partial_key: Option<String>,
    pub epid: Option<ExtendedProductId>,
    pub iid: Option<InstallationId>,
    pub license_status: Option<LicenseStatus>,
    /// `SoftwareLicensingProduct` or `OfficeSoftwareProtectionProduct`.
    pub wmi_class: String,
}

/// Why a product is recorded but not queued for activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NoKey,
    KmsClient,
    NotMak,
    Licensed,
    NoIid,
}

impl Skip {
    pub fn id(self) -> &'static str {
        match self {
            Skip::NoKey => "no-key",
            Skip::KmsClient => "kms-client",
            Skip::NotMak => "not-mak",
            Skip::Licensed => "licensed",
            Skip::NoIid => "no-iid",
        }
    }
    pub fn reason(self) -> &'static str {
        match self {
            Skip::NoKey => "no product key installed",
            Skip::KmsClient => "KMS client product; activates against KMS, not by MAK proxy",
            Skip::NotMak => "channel is not VOLUME_MAK; proxy activation needs a MAK",
            Skip::Licensed => "already licensed",
            Skip::NoIid => "no installation ID or extended product ID reported",
        }
    }
}

impl ProductRecord {
    /// None if the product needs a MAK proxy activation, else why not.
    pub fn skip(&self) -> Option<Skip> {
        let desc = self
            .description
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase();
        if self
            .partial_key
            .as_deref()
            .is_none_or(|k| k.trim().is_empty())
        {
            Some(Skip::NoKey)
        } else if desc.contains("KMSCLIENT") {
            Some(Skip::KmsClient)
        } else if self.license_status == Some(LicenseStatus::Licensed) {
            Some(Skip::Licensed)
        } else if !desc.is_empty() && !desc.contains("MAK") {
            Some(Skip::NotMak)
        } else if self.iid.is_none() || self.epid.is_none() {
            Some(Skip::NoIid)
        } else {
            None
        }
    }
}

/// Outcome of depositing one CID on a machine, reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositResult {
    pub host: HostName,
    pub activation_id: Guid,
    pub installation_id: InstallationId,
    pub confirmation_id: ConfirmationId,
    pub activated: bool,
    /// Windows error code, e.g. `0xC004F031`.
    pub error_code: Option<String>,
    pub license_status: Option<LicenseStatus>,
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
    Deposits(Vec<Result<DepositResult, RecordError>>),
}

/// The input format detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Agent,
    Wmi,
    Csv,
    DepositResult,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    schema: String,
    host: String,
    #[allow(dead_code)]
    collected: Option<String>,
    #[allow(dead_code)]
    agent: Option<String>,
    products: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentProduct {
    wmi_class: Option<String>,
    activation_id: Option<String>,
    application_id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    partial_product_key: Option<String>,
    extended_product_id: Option<String>,
    installation_id: Option<String>,
    license_status: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositFile {
    schema: String,
    host: String,
    #[allow(dead_code)]
    time: Option<String>,
    results: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositEntry {
    activation_id: String,
    installation_id: String,
    confirmation_id: String,
    status: String,
    error_code: Option<String>,
    #[allow(dead_code)]
    message: Option<String>,
    license_status: Option<i64>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|x| x.trim().to_string()).filter(|x| !x.is_empty())
}

fn serde_err(record: usize, e: serde_json::Error) -> RecordError {
    let msg = e.to_string();
    let code = if msg.contains("unknown field") {
        Code::RecUnknownField
    } else if msg.contains("missing field") {
        Code::RecMissingField
    } else {
        Code::RecFieldType
    };
    RecordError::at(record, code, msg)
}

struct Fields {
    host: String,
    wmi_class: Option<String>,
    activation_id: Option<String>,
    application_id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    partial_key: Option<String>,
    epid: Option<String>,
    iid: Option<String>,
    license_status: Option<i64>,
}

fn limit_text(
    record: usize,
    field: &str,
    v: Option<String>,
) -> Result<Option<String>, RecordError> {
    match nonempty(v) {
        Some(s) if s.len() > 512 => Err(RecordError::at(
            record,
            Code::RecFieldType,
            format!("{field} is longer than 512 bytes"),
        )),
        other => Ok(other),
    }
}

fn validate(record: usize, f: Fields) -> Result<ProductRecord, RecordError> {
    let host = HostName::parse(&f.host).map_err(|e| {
        RecordError::at(
            record,
            e.code(),
            format!("host \"{}\": {e}", crate::sanitize::escape(&f.host)),
        )
    })?;
    let aid = nonempty(f.activation_id).ok_or_else(|| {
        RecordError::at(
            record,
            Code::RecMissingField,
            "activation ID (ID) is missing",
        )
    })?;
    let activation_id =
        Guid::parse(&aid).map_err(|e| RecordError::id(record, "activation ID", e))?;
    let application = match nonempty(f.application_id) {
        Some(a) => {
            ApplicationId::parse(&a).map_err(|e| RecordError::id(record, "application ID", e))?
        }
        None => ApplicationId::Windows,
    };
    let partial_key = limit_text(record, "partial product key", f.partial_key)?;
    let epid = nonempty(f.epid)
        .map(|s| ExtendedProductId::parse(&s))
        .transpose()
        .map_err(|e| RecordError::id(record, "extended product ID", e))?;
    let iid = nonempty(f.iid)
        .map(|s| InstallationId::parse(&s))
        .transpose()
        .map_err(|e| RecordError::id(record, "installation ID", e))?;
    let license_status = f
        .license_status
        .map(LicenseStatus::from_i64)
        .transpose()
        .map_err(|e| RecordError::id(record, "license status", e))?;
    let wmi_class = match nonempty(f.wmi_class).as_deref() {
        None | Some("SoftwareLicensingProduct") => "SoftwareLicensingProduct".to_string(),
        Some("OfficeSoftwareProtectionProduct") => "OfficeSoftwareProtectionProduct".to_string(),
        Some(other) => {
            return Err(RecordError::at(
                record,
                Code::RecFieldType,
                format!("unknown WMI class {other:?}"),
            ))
        }
    };
    Ok(ProductRecord {
        host,
        activation_id,
        application,
        name: limit_text(record, "name", f.name)?,
        description: limit_text(record, "description", f.description)?,
        partial_key,
        epid,
        iid,
        license_status,
        wmi_class,
    })
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
    Err(RecordError::file(
        Code::RecShape,
        "not agent JSON, WMI JSON, CSV or a deposit result file",
    ))
}

fn parse_agent(v: Value) -> Result<Parsed, RecordError> {
    let f: AgentFile = serde_json::from_value(v).map_err(|e| {
        let mut r = serde_err(0, e);
        r.record = None;
        r
    })?;
    if f.schema != "makproxy-agent/1" {
        return Err(RecordError::file(
            Code::RecSchemaVersion,
            format!(
                "unsupported agent schema {:?}",
                crate::sanitize::escape(&f.schema)
            ),
        ));
    }
    if f.products.len() > MAX_PRODUCTS {
        return Err(RecordError::file(
            Code::RecTooLarge,
            "too many products in one file",
        ));
    }
    let host = f.host;
    let out = f
        .products
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let n = i + 1;
            let p: AgentProduct = serde_json::from_value(p).map_err(|e| serde_err(n, e))?;
            validate(
                n,
                Fields {
                    host: host.clone(),
                    wmi_class: p.wmi_class,
                    activation_id: p.activation_id,
                    application_id: p.application_id,
                    name: p.name,
                    description: p.description,
                    partial_key: p.partial_product_key,
                    epid: p.extended_product_id,
                    iid: p.installation_id,
                    license_status: p.license_status,
                },
            )
        })
        .collect();
    Ok(Parsed::Products(out))
}

fn wmi_str(
    o: &Map<String, Value>,
    key: &str,
    record: usize,
) -> Result<Option<String>, RecordError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(RecordError::at(
            record,
            Code::RecFieldType,
            format!("{key} should be text, found {}", type_name(other)),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_wmi(v: Value, fallback_host: &str) -> Result<Parsed, RecordError> {
    let items = match v {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        other => {
            return Err(RecordError::file(
                Code::RecShape,
                format!("expected an object or array, found {}", type_name(&other)),
            ))
        }
    };
    if items.len() > MAX_PRODUCTS {
        return Err(RecordError::file(
            Code::RecTooLarge,
            "too many products in one file",
        ));
    }
    let looks_wmi = items.iter().any(|i| {
        i.get("ID").is_some()
            && (i.get("OfflineInstallationId").is_some()
                || i.get("ProductKeyID").is_some()
                || i.get("PartialProductKey").is_some())
    });
    if !looks_wmi {
        return Err(RecordError::file(Code::RecShape, "JSON without WMI SoftwareLicensingProduct properties (ID, OfflineInstallationId, ProductKeyID)"));
    }
    let out = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let n = i + 1;
            let Value::Object(o) = item else {
                return Err(RecordError::at(
                    n,
                    Code::RecFieldType,
                    "array element is not an object",
                ));
            };
            let license_status = match o.get("LicenseStatus") {
                None | Some(Value::Null) => None,
                Some(Value::Number(x)) => Some(x.as_i64().ok_or_else(|| {
                    RecordError::at(n, Code::RecFieldType, "LicenseStatus is not a whole number")
                })?),
                Some(other) => {
                    return Err(RecordError::at(
                        n,
                        Code::RecFieldType,
                        format!(
                            "LicenseStatus should be a number, found {}",
                            type_name(other)
                        ),
                    ))
                }
            };
            let host = wmi_str(&o, "PSComputerName", n)?
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| fallback_host.to_string());
            let class = match o
                .get("CimClass")
                .and_then(|c| c.get("CimClassName"))
                .and_then(Value::as_str)
            {
                Some(c) => Some(c.to_string()),
                None => wmi_str(&o, "__CLASS", n)?,
            };
            validate(
                n,
                Fields {
                    host,
                    wmi_class: class,
                    activation_id: wmi_str(&o, "ID", n)?,
                    application_id: wmi_str(&o, "ApplicationID", n)?,
                    name: wmi_str(&o, "Name", n)?,
                    description: wmi_str(&o, "Description", n)?,
                    partial_key: wmi_str(&o, "PartialProductKey", n)?,
                    epid: wmi_str(&o, "ProductKeyID", n)?,
                    iid: wmi_str(&o, "OfflineInstallationId", n)?,
                    license_status,
                },
            )
        })
        .collect();
    Ok(Parsed::Products(out))
}

/// Splits one CSV line (RFC 4180 quoting, no embedded line breaks).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

fn parse_csv(text: &str) -> Result<Parsed, RecordError> {
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap_or(""))
        .map_err(|e| RecordError::file(Code::RecSyntax, format!("CSV header: {e}")))?;
    let header: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let mut seen = std::collections::HashSet::new();
    for h in &header {
        if !seen.insert(h.as_str()) {
            return Err(RecordError::file(
                Code::RecDuplicateKey,
                format!("CSV column {h:?} appears twice"),
            ));
        }
    }
    let required = [
        "host",
        "activation_id",
        "extended_product_id",
        "installation_id",
    ];
    for r in required {
        if col(r).is_none() {
            return Err(RecordError::file(
                Code::RecMissingField,
                format!("CSV header lacks column {r:?}"),
            ));
        }
    }
    let known = [
        "host",
        "activation_id",
        "extended_product_id",
        "installation_id",
        "application_id",
        "product",
        "description",
        "partial_product_key",
        "license_status",
    ];
    if let Some(u) = header.iter().find(|h| !known.contains(&h.as_str())) {
        return Err(RecordError::file(
            Code::RecUnknownField,
            format!("unknown CSV column {:?}", crate::sanitize::escape(u)),
        ));
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= MAX_PRODUCTS {
            return Err(RecordError::file(
                Code::RecTooLarge,
                "too many rows in one file",
            ));
        }
        let rec = csv_fields(line)
            .map_err(|e| RecordError::at(n, Code::RecSyntax, e))
            .and_then(|f| {
                if f.len() != header.len() {
                    return Err(RecordError::at(
                        n,
                        Code::RecSyntax,
                        format!("{} fields; the header has {}", f.len(), header.len()),
                    ));
                }
                let get = |name: &str| col(name).map(|c| f[c].trim().to_string());
                let status = match get("license_status").filter(|s| !s.is_empty()) {
                    Some(s) => Some(s.parse::<i64>().map_err(|_| {
                        RecordError::at(n, Code::RecFieldType, "license_status is not a number")
                    })?),
                    None => None,
                };
                validate(
                    n,
                    Fields {
                        host: get("host").unwrap_or_default(),
                        wmi_class: None,
                        activation_id: get("activation_id"),
                        application_id: get("application_id"),
                        name: get("product"),
                        description: get("description"),
                        // A CSV row names a product that has a key: default to "present".
                        partial_key: get("partial_product_key").or(Some("?????".into())),
                        epid: get("extended_product_id"),
                        iid: get("installation_id"),
                        license_status: status,
                    },
                )
            });
        out.push(rec);
    }
    Ok(Parsed::Products(out))
}

fn parse_deposits(v: Value) -> Result<Parsed, RecordError> {
    let f: DepositFile = serde_json::from_value(v).map_err(|e| {
        let mut r = serde_err(0, e);
        r.record = None;
        r
    })?;
    if f.schema != "makproxy-deposit-result/1" {
        return Err(RecordError::file(
            Code::RecSchemaVersion,
            format!(
                "unsupported deposit result schema {:?}",
                crate::sanitize::escape(&f.schema)
            ),
        ));
    }
    let host =
        HostName::parse(&f.host).map_err(|e| RecordError::file(e.code(), format!("host: {e}")))?;
    if f.results.len() > MAX_PRODUCTS {
        return Err(RecordError::file(
            Code::RecTooLarge,
            "too many results in one file",
        ));
    }
    let out = f
        .results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let n = i + 1;
            let r: DepositEntry = serde_json::from_value(r).map_err(|e| serde_err(n, e))?;
            let activated = match r.status.as_str() {
                "activated" => true,
                "failed" => false,
                other => {
                    return Err(RecordError::at(
                        n,
                        Code::RecFieldType,
                        format!(
                            "status {:?} is neither activated nor failed",
                            crate::sanitize::escape(other)
                        ),
                    ))
                }
            };
            let error_code = nonempty(r.error_code);
            if let Some(c) = &error_code {
                let ok = c.len() <= 10
                    && c.starts_with("0x")
                    && c[2..].bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    return Err(RecordError::at(
                        n,
                        Code::RecFieldType,
                        "error_code is not a hexadecimal Windows error code",
                    ));
                }
            }
            Ok(DepositResult {
                host: host.clone(),
                activation_id: Guid::parse(&r.activation_id)
                    .map_err(|e| RecordError::id(n, "activation ID", e))?,
                installation_id: InstallationId::parse(&r.installation_id)
                    .map_err(|e| RecordError::id(n, "installation ID", e))?,
                confirmation_id: ConfirmationId::parse(&r.confirmation_id)
                    .map_err(|e| RecordError::id(n, "confirmation ID", e))?,
                activated,
                error_code,
                license_status: r
                    .license_status
                    .map(LicenseStatus::from_i64)
                    .transpose()
                    .map_err(|e| RecordError::id(n, "license status", e))?,
            })
        })
        .collect();
    Ok(Parsed::Deposits(out))
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
        assert_eq!(r.skip(), None);
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
        assert_eq!(v[1].as_ref().unwrap().skip(), Some(Skip::KmsClient));
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
