//! A bundle rejection: a stable code and what exactly was wrong (shared by the
//! archive scan, the reader and the writer).

use crate::codes::Code;
use std::io;

/// A bundle rejection: a stable code and what exactly was wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct BundleError {
    /// The stable code (`MP-BND-…`).
    pub code: Code,
    /// What exactly was wrong, escaped for a terminal.
    pub detail: String,
}

impl BundleError {
    /// A rejection with `code`; `detail` is escaped here.
    pub fn new(code: Code, detail: &str) -> Self {
        Self {
            code,
            detail: crate::sanitize::escape(detail).into_owned(),
        }
    }
    pub(crate) fn io(e: io::Error) -> Self {
        Self::new(Code::BndUnreadable, &e.to_string())
    }
}
