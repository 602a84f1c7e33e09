//! Input text: UTF-8 with or without a byte order mark, UTF-16 LE/BE with one, and
//! BOM-less UTF-16LE as PowerShell 5.1 pipes sometimes write it.

use super::*;
use crate::codes::Code;

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
