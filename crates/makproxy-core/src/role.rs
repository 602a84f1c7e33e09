//! Which side of the gap a key, a home or a file belongs to.

use serde::{Deserialize, Serialize};

/// Which side of the gap a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inside the air gap: packs requests, applies returns.
    Secure,
    /// On the internet side: answers requests.
    Online,
}

impl Role {
    /// The role this side trusts.
    pub fn peer(self) -> Role {
        match self {
            Role::Secure => Role::Online,
            Role::Online => Role::Secure,
        }
    }
    /// The role's name in key files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Secure => "secure",
            Role::Online => "online",
        }
    }
    /// The name with its article, for messages ("a secure", "an online").
    pub(crate) fn with_article(self) -> &'static str {
        match self {
            Role::Secure => "a secure",
            Role::Online => "an online",
        }
    }
}
