//! The registry of stable error codes. Every rejection the toolkit reports maps to
//! exactly one code here; `docs/errors.md` documents each one and a test keeps the
//! two in step. Codes are never renumbered or reused.

macro_rules! codes {
    ($( $variant:ident = $code:literal : $summary:literal ),* $(,)?) => {
        /// A stable, documented error code such as `MP-ID-004`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code { $( #[doc = $summary] $variant, )* }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
            /// The code as printed, e.g. `MP-BND-021`.
            pub fn as_str(self) -> &'static str { match self { $( Code::$variant => $code, )* } }
            /// One-line summary (the same text as in docs/errors.md).
            pub fn summary(self) -> &'static str { match self { $( Code::$variant => $summary, )* } }
        }
    };
}

codes! {
    IdEmpty = "MP-ID-001": "identifier is empty",
    IdCharacter = "MP-ID-002": "identifier contains a character that is neither a digit nor a separator",
    IdLength = "MP-ID-003": "identifier has the wrong number of digits",
    IdCheckDigit = "MP-ID-004": "a group of the identifier fails its check digit",
    IdGuid = "MP-ID-005": "not a valid GUID (activation or application ID)",
    IdEpid = "MP-ID-006": "not a valid extended product ID",
    IdLicenseStatus = "MP-ID-007": "license status outside 0-6",
    IdHostName = "MP-ID-008": "host name is not a valid Windows computer name",

    RecUnreadable = "MP-REC-001": "input file cannot be read or decoded (encoding)",
    RecSyntax = "MP-REC-002": "input file is not well-formed (JSON or CSV syntax)",
    RecShape = "MP-REC-003": "input file is not a recognised machine-record format",
    RecDuplicateKey = "MP-REC-004": "input object has a duplicated key",
    RecMissingField = "MP-REC-005": "record lacks a required field",
    RecTooLarge = "MP-REC-006": "input file exceeds the size limit",
    RecFieldType = "MP-REC-007": "record field has the wrong type or an invalid value",
    RecSchemaVersion = "MP-REC-008": "input file declares an unsupported schema version",
    RecDuplicateProduct = "MP-REC-009": "the same host and activation ID appear twice in one file",
    RecUnknownField = "MP-REC-010": "agent file has an unknown field",
    RecTooDeep = "MP-REC-011": "input JSON is nested too deeply",
    RecHostFileName = "MP-REC-012": "a machine's file claims a host other than the one it is named after",

    BndUnreadable = "MP-BND-001": "bundle is not a readable zip archive (truncated or corrupt)",
    BndArchiveTooLarge = "MP-BND-002": "bundle file exceeds the size limit",
    BndTooManyEntries = "MP-BND-003": "bundle has too many entries",
    BndPathTrick = "MP-BND-004": "entry name is a path (.., /, \\, absolute, drive prefix or reserved name)",
    BndUnexpectedEntry = "MP-BND-005": "entry name is not allowed in this kind of bundle",
    BndDuplicateEntry = "MP-BND-006": "two entries share a name",
    BndSpecialEntry = "MP-BND-007": "entry is a symlink, directory or other special file",
    BndEntryTooLarge = "MP-BND-008": "entry exceeds the size or compression-ratio limit (zip bomb)",
    BndEntrySize = "MP-BND-009": "entry's actual size differs from its declared size",
    BndMissingEntry = "MP-BND-010": "an entry the manifest or format requires is missing",
    BndEntryHash = "MP-BND-011": "entry's SHA-256 does not match the signed manifest",
    BndUnsupportedZip = "MP-BND-012": "zip feature not supported (encryption, zip64, multi-disk, method)",
    BndSigMalformed = "MP-BND-020": "signature file is malformed",
    BndSigInvalid = "MP-BND-021": "signature does not verify over the manifest",
    BndUntrustedKey = "MP-BND-022": "bundle is signed by a key that is not trusted here",
    BndWrongKind = "MP-BND-023": "bundle is of the other kind (request passed off as return or vice versa)",
    BndSiteMismatch = "MP-BND-024": "manifest's site differs from the site of the trusted key that signed it",
    BndManifestSyntax = "MP-BND-030": "manifest is not valid UTF-8 JSON of the expected shape",
    BndUnknownField = "MP-BND-031": "manifest or record has an unknown field",
    BndDuplicateKey = "MP-BND-032": "manifest or record has a duplicated JSON key",
    BndVersion = "MP-BND-033": "unsupported bundle format version",
    BndExpired = "MP-BND-034": "bundle has expired",
    BndNotYetValid = "MP-BND-035": "bundle's creation time is in the future",
    BndInconsistent = "MP-BND-036": "manifest is inconsistent with the archive or its kind",
    BndRecord = "MP-BND-037": "a record line is malformed",
    BndRecordCount = "MP-BND-038": "record count differs from the manifest",
    BndRecordOrder = "MP-BND-039": "record handles are duplicated, out of order or out of range",
    BndLineTooLong = "MP-BND-040": "a record line exceeds the length limit",
    BndExists = "MP-BND-041": "output bundle file already exists (never overwritten)",

    KeyNoHome = "MP-KEY-001": "home folder is not initialised (run init)",
    KeyHomeExists = "MP-KEY-002": "home folder is already initialised",
    KeyPermissions = "MP-KEY-003": "private key file is accessible by other users",
    KeyMalformed = "MP-KEY-004": "key file is malformed",
    KeyRole = "MP-KEY-005": "key has the wrong role for this side",
    KeyTrustName = "MP-KEY-006": "trust name is invalid or already in use",
    KeyAlreadyTrusted = "MP-KEY-007": "this key is already trusted under another name",
    KeyUnknownName = "MP-KEY-008": "no trusted key with that name",
    KeyHomeBusy = "MP-KEY-009": "another makproxy process is using this home",

    AplNotIssued = "MP-APL-001": "return answers a bundle this site did not issue",
    AplIidChanged = "MP-APL-003": "the machine's installation ID changed since packing; CID not used",
    AplUnknownHandle = "MP-APL-004": "result refers to a record the answered bundle does not hold",
    AplIidMismatch = "MP-APL-005": "result's installation ID differs from the request record it answers",
    AplReplay = "MP-APL-006": "bundle ID or site sequence replayed",
    AplNothingPending = "MP-APL-007": "record is no longer pending (already answered)",
    AplDepositFile = "MP-APL-008": "a host's deposit files could not be written (others were)",
    AplNoLedger = "MP-APL-009": "the home's ledger is missing or empty (never recreated silently)",

    BkdRefused = "MP-BKD-001": "activation service refused the record (see service code)",
    BkdNoResponse = "MP-BKD-002": "no response from the activation service after retries",
    BkdBadResponse = "MP-BKD-003": "activation service response is malformed",
    BkdMismatch = "MP-BKD-004": "response does not answer the request (other IID or PID)",
    BkdBadCid = "MP-BKD-005": "confirmation ID from the backend fails its check digits",
    BkdSimulatedFailure = "MP-BKD-006": "simulator was told to fail this record",
    BkdNotEnough = "MP-BKD-007": "remaining activations are fewer than the batch needs",
    BkdProtocol = "MP-BKD-008": "external command backend broke its protocol",
    BkdNoAnswer = "MP-BKD-009": "no CID was entered for this record (manual backend)",
    BkdUncertain = "MP-BKD-010": "the request may have reached the service but no answer was recorded (uncertain); not re-sent without --retry-uncertain",
    BkdInterrupted = "MP-BKD-011": "activate was stopped (Ctrl-C or a signal); answers obtained so far are saved",
    BkdEndpoint = "MP-BKD-012": "endpoint refused: plain http:// to a host that is not loopback",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            let parts: Vec<_> = s.split('-').collect();
            assert_eq!(parts.len(), 3, "{s}");
            assert_eq!(parts[0], "MP");
            assert!(
                parts[2].len() == 3 && parts[2].bytes().all(|b| b.is_ascii_digit()),
                "{s}"
            );
            assert!(!c.summary().is_empty());
        }
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../../docs/errors.md");
        for c in Code::ALL {
            assert!(
                doc.contains(&format!("`{}`", c.as_str())),
                "{} missing from docs/errors.md",
                c
            );
        }
    }
}
