//! makproxy-core: the pieces both sides of the air gap share — identifiers, stable error
//! codes, keys and trust, crash-safe file writing, escaping of untrusted text, and the
//! signed bundle format. No network code lives here, and no database code beyond the
//! column conversions of its types (`sql`, feature `sqlite`, for the stores).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
pub mod channel;
pub mod codes;
pub mod esu;
pub mod fsutil;
pub mod home;
pub mod ids;
pub mod keys;
pub mod ordered;
mod os;
pub mod records;
pub mod role;
pub mod sanitize;
pub mod secret;
#[cfg(feature = "sqlite")]
pub mod sql;
pub mod sshsig;
pub mod statement;

pub use codes::Code;

/// What a build is: its version, the commit it was built from and whether it is a
/// reproducible release build (both set by `scripts/release.sh` through the
/// environment at build time; docs/release.md says how to match a binary or a bundle
/// to a release).
pub mod build {
    /// The crate version (every crate of the workspace shares it).
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    /// The commit the build was made from, when the builder said (`MAKPROXY_COMMIT`).
    pub const COMMIT: Option<&str> = option_env!("MAKPROXY_COMMIT");
    /// Set by `scripts/release.sh` (`MAKPROXY_RELEASE_BUILD=1`): pinned toolchain,
    /// remapped paths, fixed time, `--locked`.
    pub const RELEASE: bool = is_one(option_env!("MAKPROXY_RELEASE_BUILD"));

    const fn is_one(v: Option<&str>) -> bool {
        matches!(v, Some(s) if s.len() == 1 && s.as_bytes()[0] == b'1')
    }

    /// `0.1.0 (commit 93ea20c…, reproducible release build)` or
    /// `0.1.0 (commit unknown, development build)`.
    pub fn describe() -> String {
        format!(
            "{VERSION} (commit {}, {})",
            COMMIT.unwrap_or("unknown"),
            if RELEASE {
                "reproducible release build"
            } else {
                "development build"
            }
        )
    }
}

/// Tool name and version recorded in bundles.
pub fn tool_version(binary: &str) -> String {
    format!("{binary} {}", env!("CARGO_PKG_VERSION"))
}
