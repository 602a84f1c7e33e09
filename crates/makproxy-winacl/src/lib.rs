//! Owner-only protection of secret files on Windows: the one place makproxy calls the
//! Win32 security API, so its `unsafe` is confined to this crate's `windows` module
//! and every other crate forbids `unsafe` outright. On other systems the crate is empty:
//! `makproxy_core::fsutil` holds the Unix twin (modes 0600 and 0700).
//!
//! The rule is OpenSSH's for private keys on Windows: besides the file's owner (and the
//! user makproxy runs as), only SYSTEM and the Administrators group may hold any access.

#![cfg_attr(not(windows), forbid(unsafe_code))]
#![warn(missing_docs)]

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::{readable_by_others, restrict_to_owner};
