//! CSV with a header (RFC 4180 quoting, no line breaks inside a field).

use super::*;
use crate::codes::Code;

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

pub(super) fn parse_csv(text: &str) -> Result<Parsed, RecordError> {
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
        "channel",
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
                        channel: get("channel"),
                    },
                )
            });
        out.push(rec);
    }
    Ok(Parsed::Products(out))
}
