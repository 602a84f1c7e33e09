//! Saved console output, for machines where the agent cannot run: `slmgr.vbs /dlv all`
//! (with `/dti` output appended or not) and `ospp.vbs /dstatus` with `/dinstid`, in
//! English or another Windows display language, saved as UTF-8, UTF-16 or in the
//! console's OEM code page (850; German, French … umlauts and accents read the same in
//! 437).
//!
//! Lines are `Label: value`. Identifiers are recognised by their shape, whatever the
//! language (an IID, an extended product ID, a GUID: Windows' and Office's application
//! IDs are known, any other GUID is the activation ID; `Volume:MAK`, `Retail` … is the
//! channel); the other fields by their label, in English, German or French. A field
//! that a product already has starts the next product, so products need no separator.
//! An `/dti` or `/dinstid` IID joins the product it names or already carries.

use super::validate::{validate, Fields};
use super::*;
use crate::codes::Code;

/// OEM code page 850, bytes 0x80-0xFF.
const CP850: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜø£Ø×ƒáíóúñÑªº¿®¬½¼¡«»░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐└┴┬├─┼ãÃ╚╔╩╦╠═╬¤ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀ÓßÔÒõÕµþÞÚÛÙýÝ¯´\u{ad}±‗¾¶§÷¸°¨·¹³²■\u{a0}";

/// Decodes saved console text: by byte order mark as [`decode_text`] does, else as OEM
/// code page 850 when it is not UTF-8 (what `slmgr … > file.txt` writes in cmd.exe).
pub fn decode_console_text(bytes: &[u8]) -> Result<String, RecordError> {
    decode_text(bytes).or_else(|e| {
        if bytes.contains(&0) {
            return Err(e);
        }
        let high: Vec<char> = CP850.chars().collect();
        Ok(bytes
            .iter()
            .map(|&b| {
                if b < 0x80 {
                    b as char
                } else {
                    high[usize::from(b - 0x80)]
                }
            })
            .collect())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Name,
    Description,
    ActivationId,
    ApplicationId,
    Epid,
    Channel,
    Iid,
    PartialKey,
    Status,
}

/// Labels, lower case, in English, German and French. A labelled identifier that does
/// not parse is reported (a typo in a saved file); an unlabelled one is found by shape.
const LABELS: &[(Kind, &[&str])] = &[
    (
        Kind::Iid,
        &["installation id", "installations-id", "id d'installation"],
    ),
    (
        Kind::Epid,
        &["extended pid", "erweiterte pid", "pid étendu"],
    ),
    (
        Kind::ActivationId,
        &[
            "activation id",
            "aktivierungs-id",
            "id d'activation",
            "sku id",
        ],
    ),
    (
        Kind::ApplicationId,
        &["application id", "anwendungs-id", "id d'application"],
    ),
    (Kind::Name, &["name", "nom", "license name"]),
    (
        Kind::Description,
        &["description", "beschreibung", "license description"],
    ),
    (
        Kind::PartialKey,
        &[
            "partial product key",
            "teilweiser product key",
            "clé de produit partielle",
            "last 5 characters of installed product key",
        ],
    ),
    (
        Kind::Status,
        &[
            "license status",
            "lizenzstatus",
            "état de la licence",
            "statut de la licence",
        ],
    ),
    (
        Kind::Channel,
        &[
            "product key channel",
            "product key-kanal",
            "canal de clé de produit",
        ],
    ),
];

fn status_of(value: &str) -> Option<i64> {
    let v = value.trim().trim_matches('-').trim().to_lowercase();
    const TABLE: &[(&str, i64)] = &[
        ("unlicensed", 0),
        ("nicht lizenziert", 0),
        ("sans licence", 0),
        ("non licencié", 0),
        ("licensed", 1),
        ("lizenziert", 1),
        ("licencié", 1),
        ("sous licence", 1),
        ("initial grace", 2),
        ("oob_grace", 2),
        ("additional grace", 3),
        ("oot_grace", 3),
        ("non-genuine grace", 4),
        ("notification", 5),
        ("benachrichtigung", 5),
        ("extended grace", 6),
    ];
    TABLE
        .iter()
        .find(|(word, _)| v.starts_with(word))
        .map(|(_, n)| *n)
}

fn looks_like_channel(v: &str) -> bool {
    let u = v.to_ascii_uppercase();
    u.starts_with("VOLUME:") || u == "RETAIL" || u.starts_with("RETAIL:") || u.starts_with("OEM:")
}

/// What a `Label: value` line is, if it is anything makproxy reads.
fn classify(label: &str, value: &str) -> Option<Kind> {
    let l = label.trim().to_lowercase();
    if let Some((k, _)) = LABELS.iter().find(|(_, names)| names.contains(&l.as_str())) {
        return Some(*k);
    }
    let digits = value
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ' ');
    if digits && InstallationId::parse(value).is_ok() {
        return Some(Kind::Iid);
    }
    if ExtendedProductId::parse(value).is_ok() {
        return Some(Kind::Epid);
    }
    if let Ok(g) = Guid::parse(value) {
        return Some(
            if [ApplicationId::WINDOWS, ApplicationId::OFFICE].contains(&g.as_str()) {
                Kind::ApplicationId
            } else {
                Kind::ActivationId
            },
        );
    }
    if looks_like_channel(value) {
        return Some(Kind::Channel);
    }
    // A display language whose label is not in the table still names the key.
    let keyish = ["key", "schlüssel", "clé", "clave", "chiave"]
        .iter()
        .any(|w| l.contains(w));
    if keyish
        && value.len() == 5
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
        && value.bytes().any(|b| b.is_ascii_alphabetic())
    {
        return Some(Kind::PartialKey);
    }
    None
}

#[derive(Default)]
struct Block {
    fields: Vec<(Kind, String)>,
    first_line: usize,
}

impl Block {
    fn get(&self, k: Kind) -> Option<&str> {
        self.fields
            .iter()
            .find(|(x, _)| *x == k)
            .map(|(_, v)| v.as_str())
    }
}

fn same_iid(a: &str, b: &str) -> bool {
    let d = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    d(a) == d(b)
}

/// `ospp.vbs /dinstid`: `Installation ID for: NAME (ACTIVATION-ID): DIGITS`.
fn dinstid(line: &str) -> Option<(String, String, String)> {
    let (head, iid) = line.rsplit_once(':')?;
    let iid = iid.trim();
    if !iid.chars().all(|c| c.is_ascii_digit()) || InstallationId::parse(iid).is_err() {
        return None;
    }
    let open = head.rfind('(')?;
    let guid = head[open + 1..].trim_end().strip_suffix(')')?;
    Guid::parse(guid).ok()?;
    let name = head[..open].split_once(':').map_or("", |(_, n)| n).trim();
    Some((name.to_string(), guid.to_string(), iid.to_string()))
}

/// Whether `text` is saved slmgr/ospp console output.
pub(super) fn looks_like_console(text: &str) -> bool {
    text.lines().any(|l| {
        dinstid(l.trim()).is_some()
            || l.split_once(':').is_some_and(|(label, value)| {
                matches!(
                    classify(label, value.trim()),
                    Some(Kind::Iid | Kind::ActivationId | Kind::Epid)
                )
            })
    })
}

pub(super) fn parse_console(text: &str, host: &str) -> Result<Parsed, RecordError> {
    // ospp.vbs frames every command's output with this line; slmgr.vbs never prints it.
    let ospp = text.contains("---Processing");
    let mut blocks: Vec<Block> = Vec::new();
    let mut cur = Block::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some((name, guid, iid)) = dinstid(line) {
            let g = guid.to_ascii_lowercase();
            let owner = blocks
                .iter_mut()
                .chain(std::iter::once(&mut cur))
                .find(|b| {
                    b.get(Kind::ActivationId).map(str::to_ascii_lowercase) == Some(g.clone())
                });
            match owner {
                Some(b) if b.get(Kind::Iid).is_none() => b.fields.push((Kind::Iid, iid)),
                Some(_) => {}
                None => blocks.push(Block {
                    fields: vec![
                        (Kind::Name, name),
                        (Kind::ActivationId, guid),
                        (Kind::Iid, iid),
                    ],
                    first_line: i + 1,
                }),
            }
            continue;
        }
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let Some(kind) = classify(label, value) else {
            continue;
        };
        // An IID already carried (`/dti` after `/dlv`) adds nothing.
        if kind == Kind::Iid
            && blocks
                .iter()
                .chain(std::iter::once(&cur))
                .any(|b| b.get(Kind::Iid).is_some_and(|x| same_iid(x, value)))
        {
            continue;
        }
        if cur.get(kind).is_some() {
            blocks.push(std::mem::take(&mut cur));
        }
        if cur.fields.is_empty() {
            cur.first_line = i + 1;
        }
        cur.fields.push((kind, value.to_string()));
    }
    if !cur.fields.is_empty() {
        blocks.push(cur);
    }
    if blocks.is_empty() {
        return Err(RecordError::file(
            Code::RecShape,
            "no product found in the saved slmgr/ospp output",
        ));
    }
    if blocks.len() > MAX_PRODUCTS {
        return Err(RecordError::file(
            Code::RecTooLarge,
            "too many products in one file",
        ));
    }
    let out = blocks
        .into_iter()
        .enumerate()
        .map(|(n, b)| {
            let n = n + 1;
            let text = |k| b.get(k).map(str::to_string);
            if b.get(Kind::ActivationId).is_none() {
                return Err(RecordError::at(
                    n,
                    Code::RecMissingField,
                    format!(
                        "the product from line {} has no activation ID: save `slmgr /dlv all` (not only /dti or /dli)",
                        b.first_line
                    ),
                ));
            }
            validate(
                n,
                Fields {
                    host: host.to_string(),
                    wmi_class: ospp.then(|| "OfficeSoftwareProtectionProduct".to_string()),
                    activation_id: text(Kind::ActivationId),
                    application_id: text(Kind::ApplicationId)
                        .or_else(|| ospp.then(|| ApplicationId::OFFICE.to_string())),
                    name: text(Kind::Name),
                    description: text(Kind::Description),
                    partial_key: text(Kind::PartialKey),
                    epid: text(Kind::Epid),
                    iid: text(Kind::Iid),
                    license_status: b.get(Kind::Status).and_then(status_of),
                    channel: text(Kind::Channel),
                },
            )
        })
        .collect();
    Ok(Parsed::Products(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LicenseStatus;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/mixed-estate")
            .join(name);
        std::fs::read(p).unwrap()
    }

    fn products(name: &str, host: &str) -> Vec<Result<ProductRecord, RecordError>> {
        let text = decode_console_text(&fixture(name)).unwrap();
        let (format, Parsed::Products(v)) = parse(&text, host).unwrap() else {
            panic!("not products")
        };
        assert_eq!(format, Format::Console);
        v
    }

    /// `slmgr /dlv all` of a KMS host, English, saved by PowerShell 5.1 (UTF-16LE).
    #[test]
    fn a_kms_host_saved_as_utf16_reads_as_a_csvlk_product() {
        let v = products("SRV-KMS01.txt", "SRV-KMS01");
        assert_eq!(v.len(), 1, "the KMS section adds no product");
        let p = v[0].as_ref().unwrap();
        assert_eq!(p.channel, Some(Channel::Csvlk));
        assert_eq!(
            p.activation_id.as_str(),
            "8e7f7a1c-5b2d-4c3e-9a6f-1d2e3f405162"
        );
        assert_eq!(p.application, ApplicationId::Windows);
        assert_eq!(p.partial_key.as_deref(), Some("KH3W9"));
        assert_eq!(p.license_status, Some(LicenseStatus::OobGrace));
        assert_eq!(
            p.epid.as_ref().unwrap().as_str(),
            "03612-04012-000-000051-03-1033-17763.0000-3052026"
        );
        assert!(p.iid.is_some());
        assert_eq!(p.skip(Policy::default()), None);
    }

    /// German display language in the OEM code page, `/dti` appended to `/dlv all`.
    #[test]
    fn german_output_in_the_oem_code_page_reads_by_shape_and_label() {
        let bytes = fixture("PC-DE-01.txt");
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "the fixture is not UTF-8"
        );
        assert!(decode_console_text(&bytes)
            .unwrap()
            .contains("Überprüfungs-URL"));
        assert!(decode_text(&bytes).is_err(), "JSON and CSV stay strict");
        let v = products("PC-DE-01.txt", "PC-DE-01");
        assert_eq!(v.len(), 2, "the /dti IID joins the product it belongs to");
        let (w, o) = (v[0].as_ref().unwrap(), v[1].as_ref().unwrap());
        assert_eq!(
            w.description.as_deref(),
            Some("Windows(R) Operating System, VOLUME_MAK channel")
        );
        assert_eq!(
            w.partial_key.as_deref(),
            Some("3V66T"),
            "found through 'schlüssel'"
        );
        assert_eq!(w.license_status, Some(LicenseStatus::Notification));
        assert_eq!(o.application, ApplicationId::Office);
        assert_eq!(o.partial_key.as_deref(), Some("FJ82H"));
        assert_eq!(o.license_status, Some(LicenseStatus::Unlicensed));
        assert_ne!(w.iid, o.iid);
        assert!([w, o].iter().all(|p| p.skip(Policy::default()).is_none()));
    }

    /// Office 2010 through ospp.vbs: the activation ID from `SKU ID`, the IID from
    /// `/dinstid`; ospp.vbs prints no extended product ID.
    #[test]
    fn ospp_status_and_dinstid_read_as_one_office_product() {
        let v = products("WIN7-OSPP.txt", "WIN7-OSPP");
        assert_eq!(v.len(), 1);
        let p = v[0].as_ref().unwrap();
        assert_eq!(p.wmi_class, WmiClass::OfficeSoftwareProtectionProduct);
        assert_eq!(p.application, ApplicationId::Office);
        assert_eq!(
            p.activation_id.as_str(),
            "6f327760-8c5c-417c-9b61-836a98287e0c"
        );
        assert_eq!(
            p.name.as_deref(),
            Some("Office 14, OfficeProPlus-MAK edition")
        );
        assert_eq!(p.partial_key.as_deref(), Some("MK7QX"));
        assert_eq!(p.license_status, Some(LicenseStatus::Notification));
        assert!(p.iid.is_some());
        assert!(p.epid.is_none(), "PRODUCT ID is not an extended product ID");
    }

    /// A display language none of the labels are in: identifiers by shape (an IID with
    /// spaces, an ePID, GUIDs, the channel), the partial key by a label that names a key
    /// and a five-character value; a URL under a key label is not a key.
    #[test]
    fn an_unknown_display_language_still_reads_by_shape() {
        let iid = crate::ids::with_check_digits(&crate::ids::digits_from_seed(b"es", 54), 7);
        let spaced: String = iid
            .as_bytes()
            .chunks(7)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let text = format!(
            "Nombre: Windows(R), Enterprise edition\n\
             Descripción: Windows(R) Operating System, VOLUME_KMS_WS19 channel\n\
             Id. de activación: 2de67392-b7a7-462a-b1ca-108dd189f588\n\
             Id. de aplicación: {}\n\
             PID extendido: 03612-03305-317-008912-02-3082-9200.0000-0662023\n\
             Canal: Volume:CSVLK\n\
             Id. de instalación: {spaced}\n\
             URL de certificado de clave de producto: https://example.invalid/a\n\
             Clave de producto parcial: 3V66T\n",
            ApplicationId::WINDOWS
        );
        let (_, Parsed::Products(v)) = parse(&text, "PC-ES").unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), 1, "{v:?}");
        let p = v[0].as_ref().unwrap();
        assert_eq!(p.channel, Some(Channel::Csvlk));
        assert_eq!(p.iid.as_ref().unwrap().digits(), iid);
        assert_eq!(p.partial_key.as_deref(), Some("3V66T"));
        assert!(p.epid.is_some());
        for (value, c) in [
            ("Retail", Channel::Retail),
            ("OEM:DM", Channel::Oem),
            ("Retail:TB:Eval", Channel::Retail),
        ] {
            let t = text.replace("Volume:CSVLK", value);
            let (_, Parsed::Products(v)) = parse(&t, "PC-ES").unwrap() else {
                panic!()
            };
            assert_eq!(v[0].as_ref().unwrap().channel, Some(c), "{value}");
        }
        // The OEM code page's first and last upper bytes.
        assert_eq!(
            decode_console_text(&[0x41, 0x80, 0xff]).unwrap(),
            "AÇ\u{a0}"
        );
        // An ospp.vbs /dinstid line whose IID fails its check is not taken as one.
        let bad = format!("{}{}", &iid[..62], (iid.as_bytes()[62] - b'0' + 1) % 10);
        let line =
            format!("Installation ID for: Office (6f327760-8c5c-417c-9b61-836a98287e0c): {bad}\n");
        let e = parse(&line, "PC").unwrap_err();
        assert_eq!(e.code, Code::RecShape, "{}", e.detail);
        // Text that is not console output says so.
        let e = parse("hello: world\n", "PC").unwrap_err();
        assert!(e.detail.contains("not agent JSON"), "{}", e.detail);
    }

    #[test]
    fn dti_alone_or_a_bad_iid_is_a_record_error_naming_what_to_save() {
        let iid = crate::ids::with_check_digits(&crate::ids::digits_from_seed(b"d", 54), 7);
        let (_, Parsed::Products(v)) = parse(&format!("Installation ID: {iid}\r\n"), "PC").unwrap()
        else {
            panic!()
        };
        let e = v[0].as_ref().unwrap_err();
        assert_eq!(e.code, Code::RecMissingField);
        assert_eq!(e.record, Some(1));
        assert!(
            e.detail.contains("from line 1 ") && e.detail.contains("slmgr /dlv all"),
            "{}",
            e.detail
        );
        // As many products as a file may hold, and one more.
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("Activation ID: 2de67392-b7a7-462a-b1ca-{i:012x}\n"))
                .collect::<String>()
        };
        let (_, Parsed::Products(v)) = parse(&many(MAX_PRODUCTS), "PC").unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), MAX_PRODUCTS);
        assert_eq!(
            parse(&many(MAX_PRODUCTS + 1), "PC").unwrap_err().code,
            Code::RecTooLarge
        );
        // A typo in a group is caught where the label says it is an IID.
        let bad = iid.replacen(
            &iid[..7],
            &format!("{}{}", &iid[..6], (iid.as_bytes()[6] - b'0' + 1) % 10),
            1,
        );
        let text = format!(
            "Name: W\nActivation ID: 2de67392-b7a7-462a-b1ca-108dd189f588\nInstallation ID: {bad}\nPartial Product Key: 3V66T\n"
        );
        let (_, Parsed::Products(v)) = parse(&text, "PC").unwrap() else {
            panic!()
        };
        let e = v[0].as_ref().unwrap_err();
        assert_eq!(e.code, Code::IdCheckDigit);
        assert!(e.detail.contains("group 1 of 9"), "{}", e.detail);
        assert!(
            parse("hello: world\n", "PC").is_err(),
            "text with no product is not console output"
        );
    }
}
