//! The registry of stable error codes. Every rejection the toolkit reports maps to
//! exactly one code here; `docs/errors.md` documents each one and a test keeps the
//! two in step. Codes are never renumbered or reused.

macro_rules! codes {
    ($( $variant:ident = $code:literal : $summary:literal => $fix:literal ),* $(,)?) => {
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
            /// The cause in more words and what to do (docs/errors.md is generated from it;
            /// printed as the hint of an error that has no more specific one).
            pub fn fix(self) -> &'static str { match self { $( Code::$variant => $fix, )* } }
        }
    };
}

codes! {
    Usage = "MP-USE-001": "the command line is not valid (unknown flag, missing or conflicting argument)"
        => "The message names the flag or argument. `--help` after any command shows its options and an example; exit code 2.",
    Io = "MP-IO-001": "a file, folder or store cannot be read or written"
        => "The message names the path and the operating system's reason (no such file, access denied, disk full). Fix that and run the same command again: makproxy's state is consistent after any failure.",
    OutputExists = "MP-IO-002": "an output file or folder already exists (never overwritten)"
        => "A report, worksheet, key statement or signature folder is written only under a new name. Choose another `--out`, or move the old one aside (`report` also takes `--force`). Bundles have their own code, MP-BND-041.",
    IdEmpty = "MP-ID-001": "identifier is empty"
        => "Nothing was typed or collected. Re-read the value from the machine (`slmgr /dti`).",
    IdCharacter = "MP-ID-002": "identifier contains a character that is neither a digit nor a separator"
        => "A letter or symbol crept in (often O for 0, l for 1). Retype the identifier; spaces, dashes and line breaks are fine.",
    IdLength = "MP-ID-003": "identifier has the wrong number of digits"
        => "An IID has 63 digits (9 groups of 7) or 54 (9 groups of 6); a CID has 48 (8 groups of 6). A group was dropped or doubled.",
    IdCheckDigit = "MP-ID-004": "a group of the identifier fails its check digit"
        => "The message names the group whose last digit does not match the others. Compare that group with the source; a digit was mistyped or misread.",
    IdGuid = "MP-ID-005": "not a valid GUID (activation or application ID)"
        => "Activation and application IDs are GUIDs like 2de67392-b7a7-462a-b1ca-108dd189f588 (braces and case do not matter).",
    IdEpid = "MP-ID-006": "not a valid extended product ID"
        => "The extended product ID (WMI ProductKeyID) looks like 03612-03305-317-008912-02-1033-9200.0000-0662023. Collect it again with the agent.",
    IdLicenseStatus = "MP-ID-007": "license status outside 0-6"
        => "LicenseStatus is 0 to 6. The input was edited or is not WMI output.",
    IdHostName = "MP-ID-008": "host name is not a valid Windows computer name"
        => "Host names may hold letters, digits, `-`, `_` and `.` (up to 63), not reserved device names such as CON or COM1. The value is shown escaped; a control or bidi character means the file was tampered with or mis-encoded.",

    RecUnreadable = "MP-REC-001": "input file cannot be read or decoded (encoding)"
        => "Save the file as UTF-8 or UTF-16 (PowerShell 5.1 `Out-File` is fine). A truncated UTF-16 file has an odd length: copy it again.",
    RecSyntax = "MP-REC-002": "input file is not well-formed (JSON or CSV syntax)"
        => "The file is cut off or hand-edited. Run the agent again on that machine.",
    RecShape = "MP-REC-003": "input file is not a recognised machine-record format"
        => "The file is JSON or text but not agent output, WMI output, CSV or a deposit result. Remove it from the drop folder.",
    RecDuplicateKey = "MP-REC-004": "input object has a duplicated key"
        => "A JSON object repeats a key; makproxy refuses to guess which value is meant. Regenerate the file.",
    RecMissingField = "MP-REC-005": "record lacks a required field"
        => "Add the missing field or CSV column (host, activation_id, extended_product_id, installation_id).",
    RecTooLarge = "MP-REC-006": "input file exceeds the size limit"
        => "Files are capped at 16 MiB and 4096 products. Split the file.",
    RecFieldType = "MP-REC-007": "record field has the wrong type or an invalid value"
        => "A field has the wrong JSON type (e.g. text where a number belongs) or a value outside its range.",
    RecSchemaVersion = "MP-REC-008": "input file declares an unsupported schema version"
        => "The file was written by a newer agent. Update makproxy-secure, or use the agent version that matches it.",
    RecDuplicateProduct = "MP-REC-009": "the same host and activation ID appear twice in one file"
        => "One file lists the same product twice; the second is ignored. Fix the exporting script.",
    RecUnknownField = "MP-REC-010": "agent file has an unknown field"
        => "The agent schema is strict; a field name is misspelled or from another version.",
    RecTooDeep = "MP-REC-011": "input JSON is nested too deeply"
        => "JSON deeper than 128 levels is refused (a resource attack or a broken exporter).",
    RecHostFileName = "MP-REC-012": "a machine's file claims a host other than the one it is named after"
        => "An agent or WMI file must be named `<HOST>.json`, a deposit result `<HOST>.result.json`, and claim only that host: otherwise any writer on the drop share could queue IIDs or mark machines activated under another machine's name. Records of the file are ignored. (CSV inventories are operator imports and may list many hosts: keep them out of folders machines can write.)",
    RecAgentError = "MP-REC-013": "the agent could not read licensing on this machine"
        => "The agent wrote its file with `error` instead of products: WMI or the Software Protection service failed, or access was denied. The message and Windows code say which; repair WMI (`winmgmt /verifyrepository`), start the service, and run the agent again. The machine's products are unchanged in the ledger.",
    RecDepositRefused = "MP-REC-014": "the deposit script refused the machine's deposit file as a whole"
        => "Deposit-ConfirmationId.ps1 deposited nothing: `wrong-host` (the file names another machine: check the deposit share's permissions), `simulated` (a drill's CIDs: deposit only real ones, or -AllowSimulated for a drill), `unknown-schema` (a newer makproxy wrote it) or `malformed` (the file is damaged: run apply --reissue or apply again). The products stay as they were; fix the cause and run the script again.",

    RecResultKept = "MP-REC-015": "a deposit result names a CID the ledger does not know yet; kept and matched when it does"
        => "After `recover`, or when a result is collected before the return carrying its CID was applied, the ledger cannot match the result yet. It is kept, not discarded: the next `apply` or `collect` matches it once the CID is known, and moves the product. Nothing to do unless it stays: then the machine deposited a CID this site never received (check who can write the drop share).",
    RecStale = "MP-REC-016": "a machine's report or result is older than what the ledger already knows of that product; ignored"
        => "A product's facts are ordered by the machine's own clock (the agent file's `collected`, the result's `time`): an agent file written before the machine's last deposit result, or a result older than a newer one, changes nothing, however the files are mounted or in what order they are read. For a current report run the agent on the machine again.",
    RecFutureTime = "MP-REC-017": "a machine's report or result is dated more than a day after this computer's clock; refused"
        => "A report dated ahead would outrank every true report after it. Set the machine's clock (or this computer's) right and run the agent or the deposit again. A forged file on the drop share looks the same: check who can write it.",
    RecDepositFailed = "MP-REC-018": "Windows refused the CID on the machine (the deposit failed)"
        => "The product is now `deposit_failed` with Windows' code (meanings below, under Windows deposit errors), also after an earlier activation when the machine itself reports a later deposit failed. collect lists each one and exits 4 (5 when nothing else went in). Fix the cause, then deposit again, or `pack --retry-failed` for a new CID.",
    RecResultContradicts = "MP-REC-019": "a deposit result's CID differs from the one the ledger holds for that installation ID; ignored"
        => "The machine deposited a CID this site did not issue for that IID (a drill's simulated CID since replaced by a real one, or a forged file). The product is unchanged; its deposit files hold the right CID.",

    BndUnreadable = "MP-BND-001": "bundle is not a readable zip archive (truncated or corrupt)"
        => "The file was truncated or damaged in transit. Copy it again from the source medium.",
    BndArchiveTooLarge = "MP-BND-002": "bundle file exceeds the size limit"
        => "Bundles are capped at 1 GiB. Pack smaller batches with `pack --limit`.",
    BndTooManyEntries = "MP-BND-003": "bundle has too many entries"
        => "A bundle holds exactly three entries. The file was altered.",
    BndPathTrick = "MP-BND-004": "entry name is a path (.., /, \\, absolute, drive prefix or reserved name)"
        => "An entry name tries to escape (`..`, `/`, `\\`, drive letters, device names). Treat the file as hostile; report it.",
    BndUnexpectedEntry = "MP-BND-005": "entry name is not allowed in this kind of bundle"
        => "An entry that is not part of the format (or not listed in the signed manifest) was added. Treat as tampering.",
    BndDuplicateEntry = "MP-BND-006": "two entries share a name"
        => "Two entries share a name, a classic trick to show a reviewer one file and a program another. Treat as hostile.",
    BndSpecialEntry = "MP-BND-007": "entry is a symlink, directory or other special file"
        => "Symlinks, directories and device entries are never part of a bundle. Treat as hostile.",
    BndEntryTooLarge = "MP-BND-008": "entry exceeds the size or compression-ratio limit (zip bomb)"
        => "An entry declares more data, or compresses better, than any real bundle (zip bomb).",
    BndEntrySize = "MP-BND-009": "entry's actual size differs from its declared size"
        => "An entry is not the size the signed manifest states. The file was altered or damaged.",
    BndMissingEntry = "MP-BND-010": "an entry the manifest or format requires is missing"
        => "The manifest, signature or data entry is missing. Copy the whole file again.",
    BndEntryHash = "MP-BND-011": "entry's SHA-256 does not match the signed manifest"
        => "Entry content differs from what was signed: altered in transit or on the medium. Never apply it; obtain a fresh copy.",
    BndUnsupportedZip = "MP-BND-012": "zip feature not supported (encryption, zip64, multi-disk, method)"
        => "Encrypted entries, zip64, multi-disk archives and unusual compression are not produced by makproxy. The file was not made by makproxy or was repacked.",
    BndLayout = "MP-BND-013": "archive is not in the canonical layout (bytes before, between or after its entries)"
        => "A bundle is exactly its three entries back to back from the first byte, then the central directory and one end record. Prepended bytes (a program made to run as well), gaps, a hidden entry or a second end record mean another tool built or changed the file: other zip readers could see different contents. Do not use it; ask for the bundle makproxy wrote.",
    BndExtraData = "MP-BND-014": "archive or entry carries a comment or extra field"
        => "makproxy writes no comments and no extra fields (timestamps, zip64, alignment). The file was re-zipped or altered by another tool; ask for the original bundle.",
    BndLocalHeader = "MP-BND-015": "an entry's local header differs from its central-directory entry"
        => "Two descriptions of one entry disagree (name, sizes, CRC, method or flags), so zip readers could extract different things. The file was crafted or corrupted; do not use it.",
    BndHeaderField = "MP-BND-016": "an entry header field differs from the one value the format fixes"
        => "makproxy writes every header field with one fixed value: version made by and needed, method per entry (the data entry deflated, manifest and signatures stored), time and date 1980-01-01 00:00, no flags, disk 0, no internal attributes, a regular file readable by all (0644). Another value means another tool wrote or changed the file, and other zip readers may treat it differently. Ask for the bundle makproxy wrote.",
    BndDeflateEnd = "MP-BND-017": "an entry's deflate stream does not end exactly at its compressed size"
        => "The compressed data of an entry ends before its declared compressed size (bytes hidden after the end of the stream) or runs past it. Those bytes are not signed and other zip readers may see them. Do not use the file; ask for the bundle makproxy wrote.",
    BndSigMalformed = "MP-BND-020": "signature file is malformed"
        => "manifest.sig is not a makproxy signature file. The bundle was altered or repacked by another tool.",
    BndSigInvalid = "MP-BND-021": "signature does not verify over the manifest"
        => "The signature does not match the manifest: the manifest was changed after signing, or signed by another key claiming a trusted key ID.",
    BndUntrustedKey = "MP-BND-022": "bundle is signed by a key that is not trusted here"
        => "The signer is not pinned on this side. If the other side rotated its key (`key rotate` there), do not pin the new key beside the old one: apply the statement it sent with `trust accept STATEMENT`, which pins the successor under the same name and retires the old key. For a new peer, compare fingerprints by phone, then `trust add FILE --name NAME`.",
    BndWrongKind = "MP-BND-023": "bundle is of the other kind (request passed off as return or vice versa)"
        => "A request bundle was given where a return is expected, or the other way round. Check which file you carried.",
    BndSiteMismatch = "MP-BND-024": "manifest's site differs from the site of the trusted key that signed it"
        => "The bundle names one site but is signed by the key pinned for another. A trusted peer tried to speak for another site, or a site was renamed without exchanging keys again. Do not carry the file further; ask the signer.",
    BndRetiredKey = "MP-BND-025": "bundle is signed by a key that a key statement retired before the bundle was created"
        => "The signer's key was rotated or revoked (`trust list` shows when) and this bundle was made after that. A bundle from before still verifies. If the other side rotated, it signs with its new key: ask for a bundle made with it. If you did not expect a rotation, treat the bundle as suspect.",
    BndDuplicateSigner = "MP-BND-026": "one key signed the bundle twice (a cosignature repeats a signer)"
        => "A cosignature is by a key that signed the bundle already. Refused by `cosign`, nothing was changed: the bundle is as good as before; have another operator cosign it. Refused at the gate, the file carries a repeated signature entry that makproxy's `cosign` never writes: ask for the bundle as it was packed and cosigned.",
    BndQuorum = "MP-BND-027": "the bundle carries fewer signatures than this site requires"
        => "This side requires several operators' signatures for bundles of that site (`trust require`; `trust list` shows the rule and the keys). Have more of the named operators run `cosign FILE` on the bundle, then bring it again. Nothing was read from it.",
    BndSameSigner = "MP-BND-028": "a cosignature is by another key of a signer already counted (the same person's rotated, retired or re-pinned key)"
        => "A signer is one identity: a pinned key and every key its rotation statements link to it, under one trust name. The two-person rule counts identities, so a bundle cosigned by an earlier or later key of a signer that already signed it is refused: one operator cannot meet the rule alone by rotating. Have a different operator (another pinned name of that site) cosign it.",
    BndNoSuchCosignature = "MP-BND-029": "`cosign --remove` names a key that made no cosignature in this bundle"
        => "`cosign FILE --remove KEY_ID` takes out one cosignature, by the key ID that `verify FILE` lists beside it. The key named made no cosignature here: nothing was changed. The bundle's own signature (manifest.sig) is never removed; a bundle without it is a new bundle: `pack` again.",
    BndManifestSyntax = "MP-BND-030": "manifest is not valid UTF-8 JSON of the expected shape"
        => "The manifest is not clean UTF-8 JSON (trailing data, wrong types, a bundle ID that is not 32 lower-case hex digits). The signer is trusted but the tool that made it is broken.",
    BndUnknownField = "MP-BND-031": "manifest or record has an unknown field"
        => "The manifest or a record has a field this version does not know. Update makproxy, or ask the sender to use a matching version.",
    BndDuplicateKey = "MP-BND-032": "manifest or record has a duplicated JSON key"
        => "A JSON key is repeated; makproxy refuses to guess which value is meant.",
    BndVersion = "MP-BND-033": "unsupported bundle format version"
        => "The bundle format version is not one this build reads. Use matching makproxy versions on both sides.",
    BndExpired = "MP-BND-034": "bundle has expired"
        => "The bundle is past its expiry (allowing 10 minutes of clock skew). Ask for a fresh bundle; check both clocks.",
    BndNotYetValid = "MP-BND-035": "bundle's creation time is in the future"
        => "The bundle was created more than 10 minutes in this machine's future. Check both clocks.",
    BndInconsistent = "MP-BND-036": "manifest is inconsistent with the archive or its kind"
        => "Fields that belong to the other kind of bundle are present, or the entry list is wrong.",
    BndRecord = "MP-BND-037": "a record line is malformed"
        => "A record line is not valid (bad IID check digit, wrong type, both CID and failure). The sender's tool is broken or the data was forged.",
    BndRecordCount = "MP-BND-038": "record count differs from the manifest"
        => "There are more or fewer records than the manifest states.",
    BndRecordOrder = "MP-BND-039": "record handles are duplicated, out of order or out of range"
        => "Record handles must run 1..N (requests) or strictly increase (returns). Duplicates are refused.",
    BndLineTooLong = "MP-BND-040": "a record line exceeds the length limit"
        => "A record line is longer than 16 KiB.",
    BndExists = "MP-BND-041": "output bundle file already exists (never overwritten)"
        => "makproxy never overwrites a bundle. Choose another `--out` name or move the old file away.",

    KeyNoHome = "MP-KEY-001": "home folder is not initialised (run init)"
        => "Run `init --site NAME` first, or point `--home`/`MAKPROXY_HOME` at the right folder.",
    KeyHomeExists = "MP-KEY-002": "home folder is already initialised"
        => "The folder already holds a key. Use it, or choose a new folder; keys are never replaced silently.",
    KeyPermissions = "MP-KEY-003": "private key file is accessible by other users"
        => "On Unix: `chmod 600 secret.key`. On Windows: `icacls secret.key /inheritance:r /grant:r \"%USERNAME%:F\"` (init sets exactly that; SYSTEM and Administrators may stay). Treat the key as possibly exposed: if anyone else could read it, make a new key pair.",
    KeyMalformed = "MP-KEY-004": "key file is malformed"
        => "A key or home file was edited or damaged. Restore it from backup or re-initialise and re-exchange keys.",
    KeyRole = "MP-KEY-005": "a key or home belongs to the other side"
        => "Each side has its own home and trusts only the other side's key. A home named in the message is the other side's: run the other program with it, or give this one its own --home. A key file named in the message comes from this same side: carry the other side's `key export` file instead.",
    KeyTrustName = "MP-KEY-006": "trust name is invalid or already in use"
        => "Use letters, digits, `-`, `_`, `.` (up to 64), and a name not yet in use (`trust remove` first).",
    KeyAlreadyTrusted = "MP-KEY-007": "this key is already trusted under another name"
        => "The key is already pinned; `trust list` shows under which name.",
    KeyUnknownName = "MP-KEY-008": "no trusted key with that name"
        => "`trust list` shows the names in use.",
    KeyHomeBusy = "MP-KEY-009": "another makproxy process is using this home"
        => "Another makproxy process holds this home (its process ID is named). Wait for it to finish, or run the second job on another home.",
    KeyNeedsPassphrase = "MP-KEY-010": "the secret key is encrypted and no passphrase was given"
        => "Run the command from a terminal to be asked for the passphrase, or give it to a batch script in the MAKPROXY_PASSPHRASE environment variable (set it for that one command; never write it into the script). Nothing was signed.",
    KeyWrongPassphrase = "MP-KEY-011": "the passphrase does not open the secret key"
        => "The passphrase is wrong, or the key file was altered (a change to any byte of the sealed key, its salt, nonce or role fails the same way). Try again; if the passphrase is lost, the key is lost: `init` a new home and have the other side trust its key.",
    KeyWeakPassphrase = "MP-KEY-012": "a new passphrase was refused"
        => "A new passphrase needs at least 8 characters and must be typed the same twice (or given in MAKPROXY_PASSPHRASE for `init --encrypt`, MAKPROXY_NEW_PASSPHRASE for `key passwd`). Nothing was changed.",
    KeyStatement = "MP-KEY-013": "a key statement was refused (forged, altered, malformed or dated in the future)"
        => "The statement does not verify: a signature is missing or wrong, the payload was changed, a successor is not a self-signed key of the same site and side, or it is dated in the future. Nothing was changed. Ask the other side for the file `key rotate` / `key revoke` wrote, compare its fingerprints by phone, and accept that.",
    KeyStatementApplied = "MP-KEY-014": "this key statement was applied already (the key it retires is retired here)"
        => "A replayed or repeated statement: the key it names was retired here by it or by an earlier one. Nothing was changed; `trust accept` reports it as applied already and exits 0 (a second run of the same step, like a return applied twice). `trust list` shows the keys pinned and retired.",
    KeyStatementOrder = "MP-KEY-015": "the key statement is out of order: the key it retires is not pinned here, or it predates the statement that pinned it"
        => "Statements are applied in the order they were made: a rotation A->B before B->C. Apply the earlier one first (the other side keeps them in its home's retired/ folder). Nothing was changed.",
    KeyRevoked = "MP-KEY-016": "this home's key was revoked and can no longer sign"
        => "`key revoke` retired this home's key without a successor. Make a new home (`init`) and have the other side trust its key.",
    KeyQuorumMissing = "MP-KEY-017": "the home's quorum file (trust/quorum.json) is missing: the two-person rule is not known"
        => "Homes made by this release keep their signature rules (`trust require`) in trust/quorum.json from `init` on, so a deleted file cannot silently lift a rule: every bundle is refused until it is back. Restore trust/quorum.json from backup, or set each site's rule again with `trust require SITE --signatures N` (N = 1 for none); find out who deleted it.",
    KeyStatementConflicts = "MP-KEY-018": "a different statement already retired the key this one names: not applied"
        => "This home accepted one statement retiring that key; this one retires it again with another successor or reason. It is not a replay, and nothing changes. Only a holder of the old key could have signed it: ask the other side by phone whether they made it, and if not, treat the old key as stolen (docs/keys.md, a key was stolen).",

    AplNotIssued = "MP-APL-001": "return answers a bundle this site did not issue"
        => "The return answers a bundle this site did not issue (or a different version of it). Apply it at the site that packed the request.",
    AplIidChanged = "MP-APL-003": "the machine's installation ID changed since packing; CID not used"
        => "The machine was re-collected with a new IID after packing; the old CID would fail (0xC004F031). The CID is kept on record; the product is queued again.",
    AplUnknownHandle = "MP-APL-004": "result refers to a record the answered bundle does not hold"
        => "The return refers to a record the answered bundle does not have. The online side is broken or the return was forged.",
    AplIidMismatch = "MP-APL-005": "result's installation ID differs from the request record it answers"
        => "The return repeats an IID that differs from the request record. Never deposited; treat as a broken or forged return.",
    AplReplay = "MP-APL-006": "bundle ID or site sequence replayed"
        => "The online side has already seen another bundle with this site and sequence number (a replay or two ledgers for one site). The message names the highest sequence taken from that key (`journal sequences` lists them all): a secure side recovered with too low a number runs `recover --next-sequence` again with one more, after moving its new ledger aside.",
    AplNothingPending = "MP-APL-007": "record is no longer pending (already answered)"
        => "The record was already answered by an earlier return; this answer was recorded and ignored.",
    AplDepositFile = "MP-APL-008": "a host's deposit files could not be written (others were)"
        => "`<HOST>.json` or `<HOST>.cmd` in the deposit folder could not be replaced (a folder planted under that name, a read-only file, a full disk). Every other host's files were written and the ledger is committed. Remove the obstacle, then run the same `apply` again: it rewrites the files (the return is not applied twice).",
    AplEpidMismatch = "MP-APL-010": "result's extended product ID differs from the request record it answers"
        => "The online side answered a record with another product ID than was asked: a bug or a tampered return from a trusted peer. The result is ignored; the record stays pending. Report it to whoever runs the online side.",
    AplNoLedger = "MP-APL-009": "the home's ledger is missing or empty (never recreated silently)"
        => "`ledger.sqlite3` is gone or empty while the home's keys are there. makproxy does not start a new ledger on its own, because sequence numbers would restart and the online side would refuse the bundles as replays. Restore the ledger from backup; or start a new one with `makproxy-secure recover --next-sequence N`, where N is one more than the highest sequence this site ever packed (`verify` of the last bundle shows it).",

    JnlMissing = "MP-JNL-001": "the online home's journal is missing or empty (never recreated silently)"
        => "The journal is what keeps this gateway from sending an installation ID to the service twice (each request may spend a MAK activation). It is created by `init` and never again silently. Restore journal.sqlite3 from backup; or run `makproxy-online recover RETURN…` with every return bundle this home wrote: it rebuilds the answers they carry and marks every other record of a bundle made before the recovery as uncertain (sent again only with --retry-uncertain).",
    JnlForeign = "MP-JNL-002": "the journal belongs to another home"
        => "journal.sqlite3 was written by a home with another key (copied from another gateway, or a home re-initialised around an old journal). Its answers and sequence numbers are not this home's. Put back this home's own journal, or move this one aside and run `makproxy-online recover RETURN…`.",
    JnlExists = "MP-JNL-003": "recover refused: the home has a journal"
        => "`recover` builds a journal only where none is (it never merges into or replaces one, which could hide answers). If the journal is damaged, move journal.sqlite3 (and its -wal and -shm files) aside first, then run recover again.",
    BkdRefused = "MP-BKD-001": "activation service refused the record (see service code)"
        => "The activation service refused the record; the service code and its meaning are shown (table below).",
    BkdNoResponse = "MP-BKD-002": "no response from the activation service after retries"
        => "The request could not be sent (connection refused, name or TLS failure) after `--attempts` tries, or was not sent because the service stopped answering earlier in the run (`--max-transport-failures`). Nothing was spent. Run `activate` on the same bundle again later. When *every* request failed this way, no return is written and the exit code is 1 (\"service unreachable\").",
    BkdBadResponse = "MP-BKD-003": "activation service response is malformed"
        => "The service answered with something that is not a valid response (HTML error page, garbage, oversized). Often an outage or a proxy page; try later.",
    BkdMismatch = "MP-BKD-004": "response does not answer the request (other IID or PID)"
        => "The response names another IID or product ID than was asked, or carries a CID without echoing both. The CID is not used; report it.",
    BkdBadCid = "MP-BKD-005": "confirmation ID from the backend fails its check digits"
        => "A CID failed its check digits and was not accepted.",
    BkdSimulatedFailure = "MP-BKD-006": "simulator was told to fail this record"
        => "The simulator was told to fail this record (`--sim-fail-suffix`). Drills only.",
    BkdNotEnough = "MP-BKD-007": "remaining activations are fewer than the batch needs"
        => "The MAK has fewer activations left than the batch needs. Split with `pack --limit` or ask Microsoft for more.",
    BkdProtocol = "MP-BKD-008": "external command backend broke its protocol"
        => "An external command backend wrote something outside its protocol.",
    BkdNoAnswer = "MP-BKD-009": "no CID was entered for this record (manual backend)"
        => "No CID was entered for this record in the manual backend.",
    BkdUncertain = "MP-BKD-010": "the request may have reached the service but no answer was recorded (uncertain); not re-sent without --retry-uncertain"
        => "The request left (or was about to leave) and no complete answer came back: the connection dropped or stalled after sending, or the process was killed. The service may have counted an activation. `makproxy-online journal list --uncertain` lists them; `activate --retry-uncertain` sends them again (each may cost one more activation; compare `remaining` before and after to see whether the first one was counted); `journal forget IID --reason …` clears one. The secure side keeps such records pending, not failed.",
    BkdInterrupted = "MP-BKD-011": "activate was stopped (Ctrl-C or a signal); answers obtained so far are saved"
        => "The run was stopped on request. Requests in flight were allowed to finish and their answers saved; nothing else was sent. Exit code 130. Run the same command again.",
    BkdForeignAnswer = "MP-BKD-013": "prepared answers (a worksheet) name installation IDs that are not in this bundle"
        => "The worksheet was filled in for another bundle, or rows were added by hand. Nothing was recorded. Use the worksheet `makproxy-online worksheet` wrote for this bundle.",
    BkdEndpoint = "MP-BKD-012": "endpoint refused: plain http:// to a host that is not loopback"
        => "`--endpoint` must be `https://` (plain `http://` only to 127.0.0.1, ::1 or localhost, for a test service).",
    BkdNeedsPhone = "MP-BKD-014": "the record has no extended product ID, so this backend cannot answer it; only a phone (manual) activation can"
        => "An Active Directory forest's activation, or an Office product read from saved ospp.vbs output, comes with an installation ID and no extended product ID, which the BatchActivation service (and the command protocol) need. Nothing was sent for it. Get its CID by phone or web: `makproxy-online worksheet FILE --out SHEET` lists it, then `activate FILE --out RETURN2 --backend manual --worksheet SHEET --retry-failed` answers it; apply both returns.",
    BkdOutage = "MP-BKD-015": "the activation service is failing (0x80004003): an outage, not a refusal of the record"
        => "The service answered with the signs of its own outage and issued no CID, so nothing was spent and nothing is stored as a refusal: the record stays askable, and the secure side keeps it pending. The run stops sending after --max-transport-failures such answers in a row. Run the same activate again later (a new --out) and apply that return too. (An HTTP 5xx page is not this: it comes after the service received the request and may have counted it, so the record is uncertain, MP-BKD-010.)",
}

impl Code {
    /// The code written as `text` (`MP-BKD-001`), if the registry has it.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

/// Written as printed (`"MP-BKD-001"`).
impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The "makproxy codes" section of docs/errors.md, generated from this registry: one
/// heading per code, so the `see docs/errors.md#mp-…` line every error prints resolves.
pub fn errors_md_section() -> String {
    let mut s = String::from(
        "## makproxy codes\n\n<!-- Generated from crates/makproxy-core/src/codes.rs: edit the registry, then\n     MAKPROXY_BLESS=1 cargo test -p makproxy-core every_code_is_documented -->\n\n",
    );
    for c in Code::ALL {
        s.push_str(&format!(
            "### {}\n\n**{}.** {}\n\n",
            c.as_str(),
            c.summary(),
            c.fix()
        ));
    }
    s
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
        // docs/errors.md's code section is exactly what the registry generates.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = doc.find("## makproxy codes").expect("section heading");
        let end = doc[start + 3..]
            .find("\n## ")
            .map_or(doc.len(), |i| start + 3 + i + 1);
        let want = errors_md_section();
        if std::env::var_os("MAKPROXY_BLESS").is_some() {
            std::fs::write(path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
            return;
        }
        assert!(
            doc[start..end] == want,
            "docs/errors.md is not what codes.rs generates; run MAKPROXY_BLESS=1 cargo test -p makproxy-core every_code_is_documented"
        );
        for c in Code::ALL {
            assert!(doc.contains(&format!("\n### {}\n", c.as_str())), "{c}");
            assert!(!c.fix().is_empty() && !c.fix().contains("TODO"), "{c}");
        }
    }
}
