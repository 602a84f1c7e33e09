//! Identifier types parsed from operator text: installation ID, confirmation ID,
//! extended product ID, activation ID, application ID, license status, host name.
//!
//! Every parser accepts the separators operators actually paste (spaces, dashes,
//! line breaks, tabs) and every failure names what is wrong, down to the group
//! whose check digit fails, so a typing error can be found on paper.

use crate::codes::Code;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
// Each variant is documented by its #[error] message.
#[allow(missing_docs)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error(
        "{what} contains {found:?} at position {position}; only digits and separators are allowed"
    )]
    Character {
        what: &'static str,
        found: char,
        position: usize,
    },
    #[error("{what} has {found} digits; expected {expected}")]
    Length {
        what: &'static str,
        found: usize,
        expected: &'static str,
    },
    #[error("{what}: group {group} of {groups} ({digits}) fails its check digit")]
    CheckDigit {
        what: &'static str,
        group: usize,
        groups: usize,
        digits: String,
    },
    #[error("{what} is not a valid GUID")]
    Guid { what: &'static str },
    #[error("not a valid extended product ID")]
    Epid,
    #[error("license status {0} is outside 0-6")]
    LicenseStatus(i64),
    #[error("host name is not a valid Windows computer name (letters, digits, '-', '_', '.'; 1-63 characters)")]
    HostName,
}

impl IdError {
    /// The stable code of this error.
    pub fn code(&self) -> Code {
        match self {
            IdError::Empty { .. } => Code::IdEmpty,
            IdError::Character { .. } => Code::IdCharacter,
            IdError::Length { .. } => Code::IdLength,
            IdError::CheckDigit { .. } => Code::IdCheckDigit,
            IdError::Guid { .. } => Code::IdGuid,
            IdError::Epid => Code::IdEpid,
            IdError::LicenseStatus(_) => Code::IdLicenseStatus,
            IdError::HostName => Code::IdHostName,
        }
    }
}

/// The check digit of one group: weights 1,2,1,2,… over the other digits, mod 7.
pub fn check_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(*d) * if i % 2 == 0 { 1 } else { 2 })
        .sum();
    (sum % 7) as u8
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

/// Strips separators and returns the digit values.
fn digits_of(what: &'static str, text: &str) -> Result<Vec<u8>, IdError> {
    let mut out = Vec::with_capacity(64);
    for (position, c) in text.chars().enumerate() {
        if let Some(d) = c.to_digit(10).filter(|_| c.is_ascii_digit()) {
            out.push(d as u8);
        } else if !is_separator(c) {
            return Err(IdError::Character {
                what,
                found: c,
                position: position + 1,
            });
        }
        if out.len() > 128 {
            return Err(IdError::Length {
                what,
                found: out.len(),
                expected: "fewer",
            });
        }
    }
    if out.is_empty() {
        return Err(IdError::Empty { what });
    }
    Ok(out)
}

/// The digit values of `text` when it is already canonical (ASCII digits only, at most
/// 64 of them): the form bundles, ledgers and journals hold, checked without the
/// general parser's allocations. Anything else is left to [`digits_of`].
fn canonical_digits(text: &str) -> Option<([u8; 64], usize)> {
    let b = text.as_bytes();
    if b.is_empty() || b.len() > 64 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut d = [0u8; 64];
    for (o, c) in d.iter_mut().zip(b) {
        *o = c - b'0';
    }
    Some((d, b.len()))
}

fn verify_groups(what: &'static str, digits: &[u8], group_len: usize) -> Result<(), IdError> {
    let groups = digits.len() / group_len;
    for (i, g) in digits.chunks(group_len).enumerate() {
        let (body, check) = g.split_at(group_len - 1);
        if check_digit(body) != check[0] {
            return Err(IdError::CheckDigit {
                what,
                group: i + 1,
                groups,
                digits: g.iter().map(|d| char::from(b'0' + d)).collect(),
            });
        }
    }
    Ok(())
}

fn to_string(digits: &[u8]) -> String {
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

fn grouped(digits: &str, group_len: usize) -> String {
    let mut s = String::with_capacity(digits.len() + digits.len() / group_len);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % group_len == 0 {
            s.push('-');
        }
        s.push(c);
    }
    s
}

macro_rules! digit_id {
    ($name:ident, $what:literal) => {
        impl $name {
            /// The digits without separators (the form the service and slmgr take).
            pub fn digits(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.grouped())
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An installation ID: 63 digits in 9 groups of 7, or 54 digits in 9 groups of 6.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstallationId(String);

impl InstallationId {
    const WHAT: &'static str = "installation ID";
    /// Parses operator text with any separators and validates every group.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if let Some((d, n @ (63 | 54))) = canonical_digits(text) {
            verify_groups(Self::WHAT, &d[..n], n / 9)?;
            return Ok(Self(text.to_string()));
        }
        let d = digits_of(Self::WHAT, text)?;
        let group_len = match d.len() {
            63 => 7,
            54 => 6,
            n => {
                return Err(IdError::Length {
                    what: Self::WHAT,
                    found: n,
                    expected: "63 (9 groups of 7) or 54 (9 groups of 6)",
                })
            }
        };
        verify_groups(Self::WHAT, &d, group_len)?;
        Ok(Self(to_string(&d)))
    }
    /// Digits per group: 7 or 6.
    pub fn group_len(&self) -> usize {
        self.0.len() / 9
    }
    /// Canonical display: groups joined by dashes.
    pub fn grouped(&self) -> String {
        grouped(&self.0, self.group_len())
    }
}
digit_id!(InstallationId, "installation ID");

/// A confirmation ID: 48 digits in 8 groups of 6 (A–H).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfirmationId(String);

impl ConfirmationId {
    const WHAT: &'static str = "confirmation ID";
    /// Parses operator text with any separators and validates every group.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if let Some((d, 48)) = canonical_digits(text) {
            verify_groups(Self::WHAT, &d[..48], 6)?;
            return Ok(Self(text.to_string()));
        }
        let d = digits_of(Self::WHAT, text)?;
        if d.len() != 48 {
            return Err(IdError::Length {
                what: Self::WHAT,
                found: d.len(),
                expected: "48 (8 groups of 6)",
            });
        }
        verify_groups(Self::WHAT, &d, 6)?;
        Ok(Self(to_string(&d)))
    }
    /// Canonical display: groups joined by dashes.
    pub fn grouped(&self) -> String {
        grouped(&self.0, 6)
    }
}
digit_id!(ConfirmationId, "confirmation ID");

/// Completes groups of `group_len - 1` payload digits with their check digits.
/// Used by generators (the simulator, fixtures, benchmarks).
pub fn with_check_digits(payload: &[u8], group_len: usize) -> String {
    let mut s = String::with_capacity(payload.len() + payload.len() / (group_len - 1));
    for body in payload.chunks(group_len - 1) {
        for d in body {
            s.push(char::from(b'0' + d));
        }
        s.push(char::from(b'0' + check_digit(body)));
    }
    s
}

/// `n` pseudo-random decimal digits derived from `seed` with SHA-256 (for generators).
pub fn digits_from_seed(seed: &[u8], n: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(n);
    let mut counter = 0u32;
    while out.len() < n {
        let h = Sha256::new()
            .chain_update(seed)
            .chain_update(counter.to_le_bytes())
            .finalize();
        out.extend(h.iter().filter(|b| **b < 250).map(|b| b % 10));
        counter += 1;
    }
    out.truncate(n);
    out
}

/// An extended product ID (WMI `ProductKeyID`), e.g.
/// `03612-03305-317-008912-02-1033-9200.0000-0662023`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ExtendedProductId(String);

impl ExtendedProductId {
    /// Accepts 6 to 10 dash-separated groups of digits (a group may contain one dot).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let t = text.trim();
        let mut groups = 0usize;
        let ok = (20..=64).contains(&t.len())
            && t.split('-').all(|g| {
                groups += 1;
                !g.is_empty()
                    && g.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && g.bytes().filter(|b| *b == b'.').count() <= 1
                    && !g.starts_with('.')
                    && !g.ends_with('.')
            })
            && (6..=10).contains(&groups);
        if ok {
            Ok(Self(t.to_string()))
        } else {
            Err(IdError::Epid)
        }
    }
    /// The canonical text (empty when [absent](Self::absent)).
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The ePID of a record that has none: an Active Directory forest's activation, or
    /// an Office product read from `ospp.vbs` output. Only a phone (manual) activation
    /// can answer such a record; on the wire the field is left out.
    pub fn absent() -> Self {
        Self(String::new())
    }
    /// Whether this is [`ExtendedProductId::absent`].
    pub fn is_absent(&self) -> bool {
        self.0.is_empty()
    }
}
impl Default for ExtendedProductId {
    fn default() -> Self {
        Self::absent()
    }
}
impl fmt::Display for ExtendedProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for ExtendedProductId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A GUID in canonical lower-case form without braces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Guid(String);

impl Guid {
    /// Accepts any case, with or without braces.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        Self::parse_as("GUID", text)
    }
    fn parse_as(what: &'static str, text: &str) -> Result<Self, IdError> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(t);
        let b = t.as_bytes();
        let ok = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        if ok {
            Ok(Self(t.to_ascii_lowercase()))
        } else {
            Err(IdError::Guid { what })
        }
    }
    /// The activation ID makproxy gives an Active Directory forest's activation with the
    /// KMS host key ending `last5` (the forest has no product to name it): a UUID of
    /// version 8 from SHA-256 of `makproxy/ad-forest/` and the five characters in upper
    /// case, so the same key always names the same record and no real SKU collides.
    pub fn for_ad_forest(last5: &str) -> Self {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("makproxy/ad-forest/{}", last5.to_ascii_uppercase()));
        let mut b: [u8; 16] = d[..16].try_into().expect("16 of 32 bytes");
        b[6] = (b[6] & 0x0f) | 0x80; // version 8
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Self(format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        ))
    }
    /// The canonical text (lower case, no braces).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Activation ID: the SKU GUID (`SoftwareLicensingProduct.ID`).
pub type ActivationId = Guid;

/// The WMI class a product is reported by: Windows' own licensing service, or Office's
/// own (OSPP), whose products are deposited with `ospp.vbs` instead of `slmgr.vbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WmiClass {
    /// Windows' own licensing service (Windows; Office 2013 and later on Windows 8 and later).
    SoftwareLicensingProduct,
    /// Office's own licensing service, OSPP (Office 2010; later Office on Windows 7).
    OfficeSoftwareProtectionProduct,
    /// Not a product: an Active Directory forest's activation object, made with a KMS
    /// host key through `SoftwareLicensingService` (`slmgr /ad-activation-get-IID`,
    /// `/ad-activation-apply-cid`).
    ActiveDirectoryActivation,
}

impl WmiClass {
    /// The class name as WMI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoftwareLicensingProduct => "SoftwareLicensingProduct",
            Self::OfficeSoftwareProtectionProduct => "OfficeSoftwareProtectionProduct",
            Self::ActiveDirectoryActivation => "ActiveDirectoryActivation",
        }
    }
    /// The class named exactly as WMI spells it.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::SoftwareLicensingProduct,
            Self::OfficeSoftwareProtectionProduct,
            Self::ActiveDirectoryActivation,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for WmiClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The licensing application a product belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApplicationId {
    /// Windows.
    Windows,
    /// Office.
    Office,
    /// Any other application, by its GUID.
    Other(Guid),
}

impl ApplicationId {
    /// Windows' application ID.
    pub const WINDOWS: &'static str = "55c92734-d682-4d71-983e-d6ec3f16059f";
    /// Office's application ID.
    pub const OFFICE: &'static str = "0ff1ce15-a989-479d-af46-f275c6370663";
    /// The application with this GUID.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let g = Guid::parse_as("application ID", text)?;
        Ok(match g.as_str() {
            Self::WINDOWS => Self::Windows,
            Self::OFFICE => Self::Office,
            _ => Self::Other(g),
        })
    }
    /// The application's GUID.
    pub fn guid(&self) -> &str {
        match self {
            Self::Windows => Self::WINDOWS,
            Self::Office => Self::OFFICE,
            Self::Other(g) => g.as_str(),
        }
    }
    /// A short label for reports.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Windows => "windows",
            Self::Office => "office",
            Self::Other(_) => "other",
        }
    }
}

/// `SoftwareLicensingProduct.LicenseStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LicenseStatus {
    /// Not activated.
    Unlicensed = 0,
    /// Activated.
    Licensed = 1,
    /// Out-of-box grace period.
    OobGrace = 2,
    /// Out-of-tolerance grace period (hardware changed).
    OotGrace = 3,
    /// Non-genuine grace period.
    NonGenuineGrace = 4,
    /// Notification mode (grace expired).
    Notification = 5,
    /// Extended grace period.
    ExtendedGrace = 6,
}

impl LicenseStatus {
    /// The status WMI reports as `v`.
    pub fn from_i64(v: i64) -> Result<Self, IdError> {
        Ok(match v {
            0 => Self::Unlicensed,
            1 => Self::Licensed,
            2 => Self::OobGrace,
            3 => Self::OotGrace,
            4 => Self::NonGenuineGrace,
            5 => Self::Notification,
            6 => Self::ExtendedGrace,
            _ => return Err(IdError::LicenseStatus(v)),
        })
    }
    /// The status's name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unlicensed => "Unlicensed",
            Self::Licensed => "Licensed",
            Self::OobGrace => "OOBGrace",
            Self::OotGrace => "OOTGrace",
            Self::NonGenuineGrace => "NonGenuineGrace",
            Self::Notification => "Notification",
            Self::ExtendedGrace => "ExtendedGrace",
        }
    }
}

/// A validated host name, safe to use as a file name on Windows and Unix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HostName(String);

impl HostName {
    /// Letters, digits, `-`, `_` and `.`; 1–63 characters; not starting with `.` or `-`;
    /// not a reserved DOS device name. Case is kept, comparison is case-insensitive
    /// (the stored form is upper-cased, as Windows shows computer names).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let t = text.trim();
        let ok = (1..=63).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !t.starts_with(['.', '-'])
            && !t.ends_with('.')
            && !t.contains("..");
        if !ok {
            return Err(IdError::HostName);
        }
        let upper = t.to_ascii_uppercase();
        let stem = upper.split('.').next().unwrap_or("");
        const RESERVED: &[&str] = &["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];
        let device = RESERVED.contains(&stem)
            || ((stem.starts_with("COM") || stem.starts_with("LPT"))
                && stem.len() == 4
                && stem.as_bytes()[3].is_ascii_digit());
        if device {
            return Err(IdError::HostName);
        }
        Ok(Self(upper))
    }
    /// The name, upper case as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Active Directory forest's record is named after its key, the same every time,
    /// as a version 8 UUID no real SKU (version 4 GUIDs) can be.
    #[test]
    fn a_forest_is_named_after_its_key() {
        let a = Guid::for_ad_forest("ad7kh");
        assert_eq!(a, Guid::for_ad_forest("AD7KH"));
        assert_ne!(a, Guid::for_ad_forest("AD7KJ"));
        assert_eq!(Guid::parse(a.as_str()).unwrap(), a, "canonical");
        let b = a.as_str().as_bytes();
        assert_eq!(b[14], b'8', "version 8");
        assert!(
            matches!(b[19], b'8' | b'9' | b'a' | b'b'),
            "RFC 9562 variant"
        );
    }
    use proptest::prelude::*;

    // Built with the documented rule from a fixed payload (digits of pi).
    fn iid63() -> String {
        with_check_digits(
            &[
                3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3,
                2, 7, 9, 5, 0, 2, 8, 8, 4, 1, 9, 7, 1, 6, 9, 3, 9, 9, 3, 7, 5, 1, 0, 5, 8, 2,
            ],
            7,
        )
    }

    #[test]
    fn check_digit_rule_matches_worked_example() {
        // 1 + 2*2 + 3 + 2*4 + 5 + 2*6 = 33; 33 mod 7 = 5
        assert_eq!(check_digit(&[1, 2, 3, 4, 5, 6]), 5);
        // 0+0+0+0+0 = 0
        assert_eq!(check_digit(&[0, 0, 0, 0, 0]), 0);
        // 9 + 18 + 9 + 18 + 9 = 63; 63 mod 7 = 0
        assert_eq!(check_digit(&[9, 9, 9, 9, 9]), 0);
    }

    #[test]
    fn parses_with_any_separators() {
        let canon = iid63();
        let spaced: String = canon
            .as_bytes()
            .chunks(7)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let dashed = spaced.replace(' ', "-");
        let wrapped = spaced.replacen(' ', "\r\n", 3);
        for form in [&canon, &spaced, &dashed, &wrapped] {
            let id = InstallationId::parse(form).unwrap();
            assert_eq!(id.digits(), canon);
            assert_eq!(id.grouped(), dashed);
        }
    }

    #[test]
    fn names_the_failing_group() {
        let mut d: Vec<u8> = iid63().into_bytes();
        // change a digit in group 4 by one
        d[3 * 7 + 2] = if d[3 * 7 + 2] == b'9' {
            b'8'
        } else {
            d[3 * 7 + 2] + 1
        };
        let err = InstallationId::parse(std::str::from_utf8(&d).unwrap()).unwrap_err();
        assert_eq!(err.code(), Code::IdCheckDigit);
        assert!(err.to_string().contains("group 4 of 9"), "{err}");
    }

    #[test]
    fn rejects_wrong_lengths_and_characters() {
        assert_eq!(InstallationId::parse("").unwrap_err().code(), Code::IdEmpty);
        assert_eq!(
            InstallationId::parse(" - ").unwrap_err().code(),
            Code::IdEmpty
        );
        assert_eq!(
            InstallationId::parse("12345").unwrap_err().code(),
            Code::IdLength
        );
        assert_eq!(
            InstallationId::parse(&format!("{}x", iid63()))
                .unwrap_err()
                .code(),
            Code::IdCharacter
        );
        // full-width and other non-ASCII digits are not silently accepted
        assert_eq!(
            InstallationId::parse("１２３").unwrap_err().code(),
            Code::IdCharacter
        );
        assert_eq!(
            ConfirmationId::parse(&iid63()).unwrap_err().code(),
            Code::IdLength
        );
    }

    #[test]
    fn accepts_54_digit_iids_in_groups_of_6() {
        let payload: Vec<u8> = (0..45).map(|i| (i * 7 % 10) as u8).collect();
        let s = with_check_digits(&payload, 6);
        let id = InstallationId::parse(&s).unwrap();
        assert_eq!(id.group_len(), 6);
        assert_eq!(id.grouped().split('-').count(), 9);
    }

    #[test]
    fn guid_forms() {
        let a = Guid::parse("{2DE67392-B7A7-462A-B1CA-108DD189F588}").unwrap();
        let b = Guid::parse("2de67392-b7a7-462a-b1ca-108dd189f588").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "2de67392-b7a7-462a-b1ca-108dd189f588");
        assert_eq!(
            Guid::parse("2de67392b7a7462ab1ca108dd189f588")
                .unwrap_err()
                .code(),
            Code::IdGuid
        );
        assert_eq!(
            Guid::parse("{2de67392-b7a7-462a-b1ca-108dd189f58g}")
                .unwrap_err()
                .code(),
            Code::IdGuid
        );
        assert_eq!(
            ApplicationId::parse("{55C92734-D682-4D71-983E-D6EC3F16059F}").unwrap(),
            ApplicationId::Windows
        );
        assert_eq!(
            ApplicationId::parse(ApplicationId::OFFICE).unwrap(),
            ApplicationId::Office
        );
    }

    #[test]
    fn epid_examples() {
        ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap();
        ExtendedProductId::parse("05426-04342-045-088012-03-1033-9600.0000-1512019").unwrap();
        for bad in [
            "",
            "abc",
            "03612-03305",
            "03612-03305-317-008912-02-1033-9200..0000-0662023",
            "03612;03305-317-008912-02-1033-9200.0000-0662023",
        ] {
            assert_eq!(
                ExtendedProductId::parse(bad).unwrap_err().code(),
                Code::IdEpid,
                "{bad}"
            );
        }
    }

    #[test]
    fn license_status_names() {
        assert_eq!(LicenseStatus::from_i64(1).unwrap().name(), "Licensed");
        assert_eq!(LicenseStatus::from_i64(6).unwrap().name(), "ExtendedGrace");
        assert_eq!(
            LicenseStatus::from_i64(7).unwrap_err().code(),
            Code::IdLicenseStatus
        );
        assert_eq!(
            LicenseStatus::from_i64(-1).unwrap_err().code(),
            Code::IdLicenseStatus
        );
    }

    #[test]
    fn host_names() {
        assert_eq!(HostName::parse("pc-0001").unwrap().as_str(), "PC-0001");
        assert_eq!(
            HostName::parse("lab7.corp.example").unwrap().as_str(),
            "LAB7.CORP.EXAMPLE"
        );
        for bad in [
            "",
            "../x",
            "a/b",
            "a\\b",
            "CON",
            "com1",
            "lpt9.txt",
            ".hidden",
            "x\u{202e}y",
            "a b",
            &"x".repeat(64),
        ] {
            assert_eq!(
                HostName::parse(bad).unwrap_err().code(),
                Code::IdHostName,
                "{bad:?}"
            );
        }
    }

    /// What the error messages say, exactly (found by mutation testing: positions,
    /// the digits shown and the digit cap had no test of their own).
    #[test]
    fn errors_name_the_position_the_group_digits_and_the_length() {
        let e = InstallationId::parse("12a4").unwrap_err().to_string();
        assert!(e.contains("position 3"), "{e}");
        let mut cid = with_check_digits(&[5; 40], 6);
        // Break group 2's check digit: the message shows that group as typed.
        let last = cid.as_bytes()[11] - b'0';
        cid.replace_range(11..12, &((last + 1) % 10).to_string());
        let e = ConfirmationId::parse(&cid).unwrap_err().to_string();
        assert!(
            e.contains(&format!("group 2 of 8 ({})", &cid[6..12])),
            "{e}"
        );
        // Up to 128 digits are read and then judged by their count; more stop the read.
        let e = InstallationId::parse(&"1".repeat(128))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 128 digits") && !e.contains("fewer"), "{e}");
        let e = InstallationId::parse(&"1".repeat(129))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fewer"), "{e}");
    }

    #[test]
    fn identifiers_display_as_their_canonical_text() {
        let e =
            ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023").unwrap();
        assert_eq!(e.to_string(), e.as_str());
        let g = Guid::parse("{2DE67392-B7A7-462A-B1CA-108DD189F588}").unwrap();
        assert_eq!(g.to_string(), "2de67392-b7a7-462a-b1ca-108dd189f588");
        assert_eq!(
            WmiClass::OfficeSoftwareProtectionProduct.to_string(),
            "OfficeSoftwareProtectionProduct"
        );
        assert_eq!(
            HostName::parse("lab-7.corp").unwrap().to_string(),
            "LAB-7.CORP"
        );
        let app = |g: &str| ApplicationId::parse(g).unwrap().label();
        assert_eq!(app(ApplicationId::WINDOWS), "windows");
        assert_eq!(app(ApplicationId::OFFICE), "office");
        assert_eq!(app("2de67392-b7a7-462a-b1ca-108dd189f588"), "other");
    }

    #[test]
    fn wmi_classes_are_named_exactly_as_wmi_spells_them() {
        for c in [
            WmiClass::SoftwareLicensingProduct,
            WmiClass::OfficeSoftwareProtectionProduct,
        ] {
            assert_eq!(WmiClass::parse(c.as_str()), Some(c));
            assert_eq!(WmiClass::parse(&c.as_str().to_lowercase()), None);
        }
        assert_eq!(WmiClass::parse("Win32_Process"), None);
    }

    fn payload(len: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..10, len)
    }

    proptest! {
        #[test]
        fn iid_parse_display_roundtrip(p in payload(54), sep in prop_oneof![Just(" "), Just("-"), Just("\n"), Just("")]) {
            let canon = with_check_digits(&p, 7);
            let id = InstallationId::parse(&canon).unwrap();
            let shown = id.grouped().replace('-', sep);
            prop_assert_eq!(InstallationId::parse(&shown).unwrap(), id.clone());
            prop_assert_eq!(InstallationId::parse(&id.to_string()).unwrap(), id);
        }

        /// IIDs (9 groups of 7 or of 6) and CIDs (8 groups of 6) are accepted exactly
        /// when every group passes the reference's rule, computed here from the text
        /// without `check_digit`; a rejection names the first failing group.
        #[test]
        fn check_digits_follow_the_reference_rule(
            kind in 0usize..3,
            groups in proptest::collection::vec((proptest::collection::vec(0u32..10, 7), any::<bool>()), 9),
        ) {
            let (count, size) = [(9, 7), (9, 6), (8, 6)][kind];
            let mut text = String::new();
            let mut first_bad = None;
            for (i, (digits, make_valid)) in groups.iter().take(count).enumerate() {
                let body = &digits[..size - 1];
                let odd: u32 = body.iter().step_by(2).sum();
                let even: u32 = body.iter().skip(1).step_by(2).sum();
                let rule = (odd + 2 * even) % 7;
                let last = if *make_valid { rule } else { digits[size - 1] };
                if last != rule && first_bad.is_none() {
                    first_bad = Some(i + 1);
                }
                text.extend(body.iter().map(|d| char::from_digit(*d, 10).unwrap()));
                text.push(char::from_digit(last, 10).unwrap());
                text.push('-');
            }
            text.pop();
            let parsed = if kind == 2 {
                ConfirmationId::parse(&text).map(|_| ())
            } else {
                InstallationId::parse(&text).map(|_| ())
            };
            match (parsed, first_bad) {
                (Ok(()), None) => {}
                (Err(e), Some(g)) => {
                    prop_assert_eq!(e.code(), Code::IdCheckDigit);
                    let expected = format!("group {g} of {count}");
                    prop_assert!(e.to_string().contains(&expected), "{}", e);
                }
                (r, bad) => prop_assert!(false, "{text}: parsed {r:?}, first bad group {bad:?}"),
            }
        }

        #[test]
        fn cid_parse_display_roundtrip(p in payload(40)) {
            let id = ConfirmationId::parse(&with_check_digits(&p, 6)).unwrap();
            prop_assert_eq!(ConfirmationId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn single_digit_change_detected_unless_mod7_sum_kept(p in payload(40), pos in 0usize..48, new in 0u8..10) {
            let canon = with_check_digits(&p, 6);
            let mut d: Vec<u8> = canon.bytes().map(|b| b - b'0').collect();
            let old = d[pos];
            prop_assume!(old != new);
            d[pos] = new;
            let group = pos / 6;
            let g = &d[group * 6..group * 6 + 6];
            let keeps_sum = check_digit(&g[..5]) == g[5];
            let text: String = d.iter().map(|x| char::from(b'0' + x)).collect();
            match ConfirmationId::parse(&text) {
                Ok(_) => prop_assert!(keeps_sum, "change at {} undetected", pos),
                Err(e) => {
                    prop_assert!(!keeps_sum);
                    prop_assert_eq!(e.code(), Code::IdCheckDigit);
                    let expected = format!("group {} of 8", group + 1);
                    prop_assert!(e.to_string().contains(&expected));
                }
            }
        }
    }
}
