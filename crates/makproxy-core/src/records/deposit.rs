//! The agent's deposit result files (`schema: "makproxy-deposit-result/1"`).

use super::*;
use crate::codes::Code;
use crate::ids::{ConfirmationId, Guid, HostName, InstallationId, LicenseStatus};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositFile {
    schema: String,
    host: String,
    time: Option<String>,
    results: Vec<Value>,
    /// Set when the deposit script refused the whole file (and deposited nothing).
    refused: Option<Refusal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refusal {
    code: String,
    message: String,
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

pub(super) fn parse_deposits(v: Value) -> Result<Parsed, RecordError> {
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
    let observed = f
        .time
        .as_deref()
        .map(|t| MachineTime::parse("time", t))
        .transpose()?;
    if let Some(r) = f.refused {
        return Err(RecordError::file(
            Code::RecDepositRefused,
            format!(
                "{host} refused its deposit file ({}): {}",
                crate::sanitize::escape(crate::bundle::truncate_utf8(&r.code, 32)),
                crate::sanitize::escape(crate::bundle::truncate_utf8(&r.message, 512))
            ),
        ));
    }
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
                observed: observed.clone(),
            })
        })
        .collect();
    Ok(Parsed::Deposits(out))
}
