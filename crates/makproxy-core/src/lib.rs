//! makproxy-core: the pieces both sides of the air gap share — identifiers, stable error
//! codes, keys and trust, crash-safe file writing, escaping of untrusted text, and the
//! signed bundle format. No network and no database code lives here.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
pub mod channel;
pub mod codes;
pub mod esu;
pub mod fsutil;
pub mod ids;
pub mod keys;
mod os;
pub mod records;
pub mod sanitize;
pub mod secret;
pub mod sshsig;
pub mod statement;

pub use codes::Code;

/// Tool name and version recorded in bundles.
pub fn tool_version(binary: &str) -> String {
    format!("{binary} {}", env!("CARGO_PKG_VERSION"))
}
