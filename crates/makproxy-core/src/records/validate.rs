//! The checks every format's fields go through, whatever format they came in.

use super::*;
use crate::codes::Code;
use crate::ids::{
    ApplicationId, ExtendedProductId, Guid, HostName, InstallationId, LicenseStatus, WmiClass,
};

pub(super) fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|x| x.trim().to_string()).filter(|x| !x.is_empty())
}

pub(super) fn serde_err(record: usize, e: serde_json::Error) -> RecordError {
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

pub(super) struct Fields {
    pub(super) host: String,
    pub(super) wmi_class: Option<String>,
    pub(super) activation_id: Option<String>,
    pub(super) application_id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) partial_key: Option<String>,
    pub(super) epid: Option<String>,
    pub(super) iid: Option<String>,
    pub(super) license_status: Option<i64>,
    /// `ProductKeyChannel` (Windows 8 and later) or a CSV `channel` column.
    pub(super) channel: Option<String>,
}

pub(super) fn limit_text(
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

pub(super) fn validate(record: usize, f: Fields) -> Result<ProductRecord, RecordError> {
    let host = HostName::parse(&f.host).map_err(|e| {
        RecordError::at(
            record,
            e.code(),
            format!("host \"{}\": {e}", crate::sanitize::escape(&f.host)),
        )
    })?;
    let wmi_class = match nonempty(f.wmi_class) {
        None => WmiClass::SoftwareLicensingProduct,
        Some(c) => WmiClass::parse(&c).ok_or_else(|| {
            RecordError::at(
                record,
                Code::RecFieldType,
                format!("unknown WMI class {c:?}"),
            )
        })?,
    };
    let partial_key = limit_text(record, "partial product key", f.partial_key)?;
    let key_shaped = |k: &str| k.len() == 5 && k.bytes().all(|b| b.is_ascii_alphanumeric());
    if wmi_class == WmiClass::ActiveDirectoryActivation
        && !partial_key.as_deref().is_some_and(key_shaped)
    {
        return Err(RecordError::at(
            record,
            Code::RecMissingField,
            "an Active Directory forest's record needs the KMS host key's last five characters (partial_product_key: five letters or digits)",
        ));
    }
    let activation_id = match nonempty(f.activation_id) {
        Some(aid) => Guid::parse(&aid).map_err(|e| RecordError::id(record, "activation ID", e))?,
        // An Active Directory forest has no product: its record is named after the key.
        None if wmi_class == WmiClass::ActiveDirectoryActivation => {
            Guid::for_ad_forest(partial_key.as_deref().unwrap_or_default())
        }
        None => {
            return Err(RecordError::at(
                record,
                Code::RecMissingField,
                "activation ID (ID) is missing",
            ))
        }
    };
    let application = match nonempty(f.application_id) {
        Some(a) => {
            ApplicationId::parse(&a).map_err(|e| RecordError::id(record, "application ID", e))?
        }
        None => ApplicationId::Windows,
    };
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
    let channel_text = limit_text(record, "product key channel", f.channel)?;
    let description = limit_text(record, "description", f.description)?;
    let channel = match channel_text
        .as_deref()
        .map(|c| (c, Channel::parse(&c.to_ascii_lowercase())))
    {
        // A CSV column may name the channel as makproxy writes it.
        Some((_, Some(c))) => Some(c),
        other => Channel::detect(other.map(|(c, _)| c), description.as_deref()),
    };
    Ok(ProductRecord {
        host,
        activation_id,
        application,
        name: limit_text(record, "name", f.name)?,
        description,
        partial_key,
        epid,
        iid,
        license_status,
        wmi_class,
        channel,
        observed: None,
    })
}
