//! The format's name and version, its named limits, and the entry names.

/// Format name and the only version this build reads and writes.
pub const FORMAT: &str = "makproxy-bundle";
/// Version 2 added `backend` to every return record and `endpoint` to the return's
/// backend block; version 3 added `channel` to CIL records and `remaining` to the return
/// manifest, both optional; version 4 added `partial_product_key` to CIL records and
/// `site_rule` to the return manifest, both optional. Readers take CIL bundles of
/// versions 1-4 and returns of 2-4.
pub const VERSION: u32 = 4;
/// Most remaining-activation counts one return carries.
pub const MAX_REMAINING: usize = 4096;
/// Longest failure message in a return record, in bytes.
pub const MAX_FAILURE_MESSAGE: usize = 1024;
/// Longest activation-service error code in a return record (`0x80131600`).
pub const MAX_SERVICE_CODE: usize = 32;
/// Longest backend endpoint (URL or program) recorded in a return.
pub const MAX_ENDPOINT: usize = 512;
/// Longest product name in a CIL record, in bytes.
pub const MAX_PRODUCT_NAME: usize = 256;

/// Whether a service error code can be carried in a return: 1-32 ASCII letters, digits,
/// `x`, `-` or `_` (codes are reported verbatim, so nothing else is expected).
pub fn valid_service_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SERVICE_CODE
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
/// Most cosignatures a bundle carries (`manifest.cosig-1` … `-5`).
pub const MAX_COSIGNATURES: usize = 5;

/// The entry name of the `n`th cosignature (1-based).
pub fn cosignature_name(n: usize) -> String {
    format!("manifest.cosig-{n}")
}

/// Whether `name` is a cosignature entry's name (`manifest.cosig-1` … `-5`, exactly).
pub fn is_cosignature(name: &str) -> bool {
    (1..=MAX_COSIGNATURES).any(|n| name == cosignature_name(n))
}

/// Name of the signed statement's entry.
pub const MANIFEST: &str = "manifest.json";
/// Name of the signature's entry.
pub const SIGNATURE: &str = "manifest.sig";

/// Resource limits applied while reading. The defaults allow several million records.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest bundle file, in bytes.
    pub max_archive: u64,
    /// Most entries in the archive.
    pub max_entries: usize,
    /// Largest manifest, in bytes.
    pub max_manifest: u64,
    /// Largest signature file, in bytes.
    pub max_signature: u64,
    /// Largest data entry, uncompressed, in bytes.
    pub max_data: u64,
    /// Largest allowed uncompressed/compressed ratio for entries over 1 MiB.
    pub max_ratio: u64,
    /// Longest record line, in bytes, its newline not counted.
    pub max_line: usize,
    /// Most records in one bundle.
    pub max_records: u64,
    /// Allowed clock skew between the two sides, in seconds.
    pub skew_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_archive: 1 << 30,
            max_entries: 8,
            max_manifest: 1 << 20,
            max_signature: 4096,
            max_data: 3 << 30,
            max_ratio: 200,
            max_line: 16 * 1024,
            max_records: 10_000_000,
            skew_secs: 600,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_are_short_plain_ascii() {
        for ok in [
            "0x7F",
            "0xC004F04D",
            "E_FAIL",
            "x-1",
            &"9".repeat(MAX_SERVICE_CODE),
        ] {
            assert!(valid_service_code(ok), "{ok}");
        }
        for bad in [
            "",
            "0x7F ",
            "0x7F\n",
            "\u{202e}7F",
            "a.b",
            &"9".repeat(MAX_SERVICE_CODE + 1),
        ] {
            assert!(!valid_service_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn truncation_cuts_at_a_character_boundary_never_inside_one() {
        assert_eq!(truncate_utf8("abc", 3), "abc");
        assert_eq!(truncate_utf8("abc", 2), "ab");
        // "é" is two bytes: a cut in its middle steps back before it.
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("日本", 5), "日");
        assert_eq!(truncate_utf8("日本", 0), "");
    }
}
