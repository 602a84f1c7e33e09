//! Key channels and the site's channel policy: which kind of product key a product
//! carries (MAK, KMS host key, retail, OEM, KMS client), read from what Windows reports,
//! and which of them a site proxy-activates.
//!
//! Windows 8 and later report the channel in `SoftwareLicensingProduct.ProductKeyChannel`
//! (`Volume:MAK`, `Volume:CSVLK`, `Volume:GVLK`, `Retail`, `OEM:DM` …); every version
//! names it in `Description` (`… VOLUME_MAK channel`, `… VOLUME_KMS_R2_B channel`,
//! `… RETAIL channel`). The property wins where both are present.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of product key installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    /// Multiple Activation Key (`Volume:MAK`, `VOLUME_MAK`).
    Mak,
    /// KMS host key (`Volume:CSVLK`, `VOLUME_KMS`, `VOLUME_KMS_R2_B`, `VOLUME_KMS_WS19` …).
    Csvlk,
    /// Retail key (`Retail`, `RETAIL`).
    Retail,
    /// A manufacturer's key (`OEM:DM`, `OEM:NONSLP`, `OEM:COA` …): never proxy-activated.
    Oem,
    /// A KMS client setup key (`Volume:GVLK`, `VOLUME_KMSCLIENT`): activates against KMS.
    KmsClient,
    /// Any other channel (evaluation, timebased …): never proxy-activated.
    Other,
}

impl Channel {
    /// Every channel, in the order reports list them.
    pub const ALL: [Channel; 6] = [
        Channel::Mak,
        Channel::Csvlk,
        Channel::Retail,
        Channel::Oem,
        Channel::KmsClient,
        Channel::Other,
    ];

    /// The channel's name in the ledger, bundles, `--channels` and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mak => "mak",
            Channel::Csvlk => "csvlk",
            Channel::Retail => "retail",
            Channel::Oem => "oem",
            Channel::KmsClient => "kms-client",
            Channel::Other => "other",
        }
    }

    /// The channel named exactly as [`Channel::as_str`] writes it.
    pub fn parse(text: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Whether a site may enable the channel for proxy activation at all.
    pub fn proxy_activatable(self) -> bool {
        matches!(self, Channel::Mak | Channel::Csvlk | Channel::Retail)
    }

    /// The channel Windows reports: `ProductKeyChannel` when present (Windows 8 and
    /// later), else the `Description`; `None` when neither says (a CSV inventory). Both
    /// name it with the same words (`Volume:CSVLK` / `VOLUME_KMS_WS19`, `Volume:GVLK` /
    /// `VOLUME_KMSCLIENT`, `Retail`, `OEM:DM` …), read by one table.
    pub fn detect(product_key_channel: Option<&str>, description: Option<&str>) -> Option<Channel> {
        let text = [product_key_channel, description]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|s| !s.is_empty())?;
        Some(Channel::from_words(&text.to_ascii_uppercase()).unwrap_or(Channel::Other))
    }

    fn from_words(d: &str) -> Option<Channel> {
        // Order matters: VOLUME_KMSCLIENT contains VOLUME_KMS.
        Some(if d.contains("KMSCLIENT") || d.contains("GVLK") {
            Channel::KmsClient
        } else if d.contains("MAK") {
            Channel::Mak
        } else if d.contains("VOLUME_KMS") || d.contains("CSVLK") {
            Channel::Csvlk
        } else if d.contains("RETAIL") {
            Channel::Retail
        } else if d.contains("OEM") {
            Channel::Oem
        } else {
            return None;
        })
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The channels a site proxy-activates: MAK and KMS host keys unless the site says
/// otherwise (`collect --channels`, kept in the home). A product whose channel is not
/// known (a CSV inventory without a `channel` column) is treated as a MAK, as before
/// channels were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    mak: bool,
    csvlk: bool,
    retail: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mak: true,
            csvlk: true,
            retail: false,
        }
    }
}

impl Policy {
    /// Parses `mak,csvlk,retail` (any order, at least one). OEM and KMS-client keys
    /// cannot be enabled: they are never proxy-activated.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let mut p = Policy {
            mak: false,
            csvlk: false,
            retail: false,
        };
        for word in text.split(',').map(str::trim) {
            match Channel::parse(&word.to_ascii_lowercase()) {
                Some(Channel::Mak) => p.mak = true,
                Some(Channel::Csvlk) => p.csvlk = true,
                Some(Channel::Retail) => p.retail = true,
                Some(c) => {
                    return Err(format!(
                        "{c} products cannot be proxy-activated; channels are mak, csvlk and retail"
                    ))
                }
                None => {
                    return Err(format!(
                        "unknown channel {:?}; channels are mak, csvlk and retail",
                        crate::sanitize::escape(word)
                    ))
                }
            }
        }
        if p == (Policy {
            mak: false,
            csvlk: false,
            retail: false,
        }) {
            return Err("name at least one channel (mak, csvlk, retail)".into());
        }
        Ok(p)
    }

    /// Whether products of `channel` (`None`: not reported) are proxy-activated here.
    pub fn enables(self, channel: Option<Channel>) -> bool {
        match channel {
            None | Some(Channel::Mak) => self.mak,
            Some(Channel::Csvlk) => self.csvlk,
            Some(Channel::Retail) => self.retail,
            Some(_) => false,
        }
    }

    /// The enabled channels, comma-separated, as `--channels` takes them.
    pub fn as_string(self) -> String {
        [
            (self.mak, Channel::Mak),
            (self.csvlk, Channel::Csvlk),
            (self.retail, Channel::Retail),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptions and ProductKeyChannel values as Windows and Office report them.
    #[test]
    fn channels_read_as_windows_reports_them() {
        for c in Channel::ALL {
            assert_eq!(c.to_string(), c.as_str());
            assert_eq!(
                c.proxy_activatable(),
                matches!(c, Channel::Mak | Channel::Csvlk | Channel::Retail),
                "{c}"
            );
        }
        let d = |s| Channel::detect(None, Some(s));
        assert_eq!(
            d("Windows(R) Operating System, VOLUME_MAK channel"),
            Some(Channel::Mak)
        );
        assert_eq!(d("Office 16, VOLUME_MAK channel"), Some(Channel::Mak));
        assert_eq!(
            d("Windows(R) Operating System, VOLUME_KMSCLIENT channel"),
            Some(Channel::KmsClient)
        );
        assert_eq!(
            d("Windows(R) Operating System, VOLUME_KMS_R2_B channel"),
            Some(Channel::Csvlk)
        );
        assert_eq!(
            d("Windows(R) Operating System, VOLUME_KMS_WS19 channel"),
            Some(Channel::Csvlk)
        );
        assert_eq!(d("Office 16, VOLUME_KMS channel"), Some(Channel::Csvlk));
        assert_eq!(
            d("Windows(R) Operating System, RETAIL channel"),
            Some(Channel::Retail)
        );
        assert_eq!(
            d("Windows(R) Operating System, OEM_DM channel"),
            Some(Channel::Oem)
        );
        assert_eq!(
            d("Windows(R) Operating System, TIMEBASED_EVAL channel"),
            Some(Channel::Other)
        );
        assert_eq!(Channel::detect(None, Some("  ")), None);
        assert_eq!(Channel::detect(None, None), None);
        let p = |s| Channel::detect(Some(s), Some("… VOLUME_MAK channel"));
        assert_eq!(p("Volume:CSVLK"), Some(Channel::Csvlk), "the property wins");
        assert_eq!(p("Volume:GVLK"), Some(Channel::KmsClient));
        assert_eq!(p("Retail:TB:Eval"), Some(Channel::Retail));
        assert_eq!(p("OEM:NONSLP"), Some(Channel::Oem));
        assert_eq!(p("Volume:MAK"), Some(Channel::Mak));
        assert_eq!(p("Something:New"), Some(Channel::Other));
        assert_eq!(
            p(""),
            Some(Channel::Mak),
            "an empty property falls back to the description"
        );
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn policy_enables_what_it_names_and_never_oem_or_kms_clients() {
        let def = Policy::default();
        assert_eq!(def.as_string(), "mak,csvlk");
        assert!(
            def.enables(None)
                && def.enables(Some(Channel::Mak))
                && def.enables(Some(Channel::Csvlk))
        );
        assert!(!def.enables(Some(Channel::Retail)));
        let all = Policy::parse(" retail , MAK,csvlk").unwrap();
        assert_eq!(all.as_string(), "mak,csvlk,retail");
        assert_eq!(all.to_string(), "mak,csvlk,retail");
        assert_eq!(Policy::parse(&all.as_string()), Ok(all));
        for c in [Channel::Oem, Channel::KmsClient, Channel::Other] {
            assert!(!all.enables(Some(c)));
            assert!(Policy::parse(c.as_str()).is_err(), "{c}");
        }
        let only_retail = Policy::parse("retail").unwrap();
        assert!(!only_retail.enables(None) && !only_retail.enables(Some(Channel::Mak)));
        assert!(Policy::parse("").is_err());
        assert!(Policy::parse("mak,bogus").is_err());
    }
}
