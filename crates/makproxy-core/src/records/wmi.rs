//! Raw `Get-CimInstance SoftwareLicensingProduct | ConvertTo-Json` output (PascalCase
//! WMI property names; other properties ignored).

use super::*;
use crate::codes::Code;
use serde_json::{Map, Value};

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

pub(super) fn parse_wmi(v: Value, fallback_host: &str) -> Result<Parsed, RecordError> {
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
                    channel: wmi_str(&o, "ProductKeyChannel", n)?,
                },
            )
        })
        .collect();
    Ok(Parsed::Products(out))
}
