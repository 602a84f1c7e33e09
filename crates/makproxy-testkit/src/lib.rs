//! makproxy-testkit: code that exists only to test makproxy, kept out of the libraries
//! the binaries are built from. The malicious-bundle kit ([`cases`], [`Keys`]), the
//! bodies of the fuzz targets ([`fuzz`]) and a loopback mock of the BatchActivation
//! service ([`mock`]). Used by tests, benches, the fuzz crate and the developer tools;
//! `tests/e2e/release.rs` checks that neither shipped binary depends on it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod kit;
#[cfg(feature = "mock")]
pub mod mock;

pub use kit::*;
