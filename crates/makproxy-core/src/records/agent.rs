//! The agent's own format (`schema: "makproxy-agent/1"`), parsed strictly.

use super::*;
use crate::codes::Code;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    schema: String,
    host: String,
    collected: Option<String>,
    #[allow(dead_code)]
    agent: Option<String>,
    products: Vec<Value>,
    /// Set when the agent could not read licensing: the products are then unknown.
    error: Option<AgentError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentError {
    message: String,
    code: Option<String>,
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
    /// `ProductKeyChannel` (Windows 8 and later; absent on Windows 7 and OSPP).
    product_key_channel: Option<String>,
}

pub(super) fn parse_agent(v: Value) -> Result<Parsed, RecordError> {
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
    if let Some(e) = f.error {
        return Err(RecordError::file(
            Code::RecAgentError,
            format!(
                "{}{}",
                crate::sanitize::escape(crate::bundle::truncate_utf8(&e.message, 512)),
                e.code
                    .map(|c| format!(
                        " ({})",
                        crate::sanitize::escape(crate::bundle::truncate_utf8(&c, 16))
                    ))
                    .unwrap_or_default()
            ),
        ));
    }
    let observed = f
        .collected
        .as_deref()
        .map(|t| MachineTime::parse("collected", t))
        .transpose()?;
    let host = f.host;
    if f.products.is_empty() {
        // A machine with no product key at all: one marker, so status shows the
        // machine as skipped (no-key) instead of not at all.
        let host = HostName::parse(&host)
            .map_err(|e| RecordError::file(e.code(), format!("host: {e}")))?;
        let mut marker = ProductRecord::no_key(host);
        marker.observed = observed;
        return Ok(Parsed::Products(vec![Ok(marker)]));
    }
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
                    channel: p.product_key_channel,
                },
            )
            .map(|mut r| {
                r.observed = observed.clone();
                r
            })
        })
        .collect();
    Ok(Parsed::Products(out))
}
