//! The `manual` backend: for phone or web activation, or another tool. The operator
//! exports a worksheet (CSV plus a printable text form with IIDs in groups), obtains
//! CIDs, and either fills them into the CSV or types them at an interactive prompt.
//! Every CID is check-digit validated group by group before it is accepted.

use crate::{Backend, BackendKind, Failure, Outcome, Remaining, Request};
use makproxy_core::ids::{ConfirmationId, ExtendedProductId, InstallationId};
use makproxy_core::Code;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Mutex;

/// One worksheet row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The record's handle in the bundle.
    pub handle: u64,
    /// The installation ID to read out on the phone.
    pub iid: InstallationId,
    /// The key's extended product ID.
    pub epid: ExtendedProductId,
    /// The product name, to help the person on the phone.
    pub product: Option<String>,
}

const HEADER: [&str; 5] = [
    "handle",
    "installation_id",
    "extended_product_id",
    "product",
    "confirmation_id",
];

/// A product name as a spreadsheet cell: a leading `= + - @` would start a formula.
fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// The CSV worksheet: one row per record, `confirmation_id` left empty to fill in.
/// Written and read with a real CSV implementation (RFC 4180 quoting), so a product
/// name with commas, quotes or line breaks stays inside its own cell.
pub fn worksheet_csv(rows: &[Row]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    w.write_record(HEADER).expect("in memory");
    for r in rows {
        w.write_record([
            r.handle.to_string(),
            r.iid.grouped(),
            r.epid.to_string(),
            cell(r.product.as_deref().unwrap_or("")),
            String::new(),
        ])
        .expect("in memory");
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8 in, UTF-8 out")
}

/// The printable worksheet: IIDs in numbered groups, boxes for the CID groups A–H.
pub fn worksheet_text(rows: &[Row], bundle: &str) -> String {
    let mut s = format!("makproxy manual activation worksheet, bundle {bundle}\r\nRead each installation ID group by group; write the confirmation ID groups A-H.\r\n\r\n");
    for r in rows {
        s.push_str(&format!(
            "Record {}   {}\r\n",
            r.handle,
            makproxy_core::sanitize::escape(r.product.as_deref().unwrap_or(""))
        ));
        s.push_str(&format!(
            "  Product ID:       {}\r\n",
            crate::shown_epid(&r.epid)
        ));
        let groups: Vec<String> = r
            .iid
            .grouped()
            .split('-')
            .enumerate()
            .map(|(i, g)| format!("{}:{g}", i + 1))
            .collect();
        s.push_str(&format!("  Installation ID:  {}\r\n", groups.join("  ")));
        s.push_str("  Confirmation ID:  A:______ B:______ C:______ D:______ E:______ F:______ G:______ H:______\r\n\r\n");
    }
    s
}

/// Reads CIDs from a filled-in worksheet CSV, keyed by IID digits. A CID that fails its
/// check digits is kept as the failure to report for that record. Every row must have
/// exactly the five columns; an IID given twice with different CIDs is an error.
pub fn read_worksheet(
    text: &str,
) -> Result<HashMap<String, Result<ConfirmationId, String>>, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let header = r
        .headers()
        .map_err(|e| format!("worksheet header: {e}"))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if header != HEADER {
        return Err(format!("worksheet header must be {:?}", HEADER.join(",")));
    }
    let mut out: HashMap<String, Result<ConfirmationId, String>> = HashMap::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("worksheet: {e}"))?;
        // The file's own line number, the header being line 1 (the reader's count is
        // one behind it here; the tests pin lines 2 and 3).
        let line = rec.position().map_or(0, |p| p.line() + 1);
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let iid =
            InstallationId::parse(&rec[1]).map_err(|e| format!("worksheet line {line}: {e}"))?;
        let cid_text = rec[4].trim();
        if cid_text.is_empty() {
            continue;
        }
        let cid = ConfirmationId::parse(cid_text).map_err(|e| {
            format!(
                "worksheet line {line} (bundle record {}): {e}",
                rec[0].trim()
            )
        });
        if let Some(prev) = out.get(iid.digits()) {
            if *prev != cid {
                return Err(format!(
                    "worksheet line {line}: installation ID {} is given twice with different confirmation IDs",
                    iid.grouped()
                ));
            }
        }
        out.insert(iid.digits().to_string(), cid);
    }
    Ok(out)
}

enum Source {
    Sheet(HashMap<String, Result<ConfirmationId, String>>),
    Prompt(Mutex<()>),
}

/// Answers from a worksheet or from an operator at the terminal.
pub struct Manual {
    source: Source,
    endpoint: String,
}

impl Manual {
    /// Answers from a filled-in worksheet; `name` is recorded as where they came from.
    pub fn from_worksheet(text: &str, name: &str) -> Result<Self, String> {
        Ok(Self {
            source: Source::Sheet(read_worksheet(text)?),
            endpoint: format!("worksheet {name}"),
        })
    }
    /// Prompts on the terminal (stdin/stderr) for each record.
    pub fn interactive() -> Self {
        Self {
            source: Source::Prompt(Mutex::new(())),
            endpoint: "typed at the terminal".into(),
        }
    }
}

/// Reads one CID from `input`, re-asking for any group that fails its check digit.
pub fn prompt_cid(req: &Request, input: &mut dyn BufRead, out: &mut dyn Write) -> Outcome {
    let _ = writeln!(
        out,
        "\nInstallation ID: {}\nProduct ID:      {}",
        req.iid.grouped().replace('-', " "),
        crate::shown_epid(&req.epid)
    );
    let mut groups: Vec<String> = Vec::new();
    while groups.len() < 8 {
        let letter = char::from(b'A' + groups.len() as u8);
        let _ = write!(
            out,
            "Confirmation ID group {letter} (6 digits, empty line to skip this record): "
        );
        let _ = out.flush();
        let mut line = String::new();
        if input.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            return Outcome::Failed(Failure::new(
                Code::BkdNoAnswer,
                "no confirmation ID entered",
            ));
        }
        let digits: Vec<u8> = line
            .trim()
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        if digits.len() != 6
            || line
                .trim()
                .bytes()
                .any(|b| !b.is_ascii_digit() && b != b' ' && b != b'-')
        {
            let _ = writeln!(out, "  group {letter} needs exactly 6 digits; try again");
            continue;
        }
        if makproxy_core::ids::check_digit(&digits[..5]) != digits[5] {
            let _ = writeln!(out, "  group {letter} fails its check digit (a digit was misheard or mistyped); try again");
            continue;
        }
        groups.push(digits.iter().map(|d| char::from(b'0' + d)).collect());
    }
    match ConfirmationId::parse(&groups.concat()) {
        Ok(c) => Outcome::Cid(c),
        Err(e) => Outcome::Failed(Failure::new(Code::BkdBadCid, e.to_string())),
    }
}

impl Backend for Manual {
    fn kind(&self) -> BackendKind {
        BackendKind::Manual
    }
    fn max_concurrency(&self) -> Option<usize> {
        Some(1)
    }
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
    fn interactive(&self) -> bool {
        matches!(self.source, Source::Prompt(_))
    }
    fn needs_epid(&self) -> bool {
        false
    }
    fn prepared_batch(&self) -> bool {
        matches!(self.source, Source::Sheet(_))
    }
    fn check_batch(&self, iids: &std::collections::HashSet<String>) -> Result<(), String> {
        let Source::Sheet(map) = &self.source else {
            return Ok(());
        };
        let mut extra: Vec<&String> = map.keys().filter(|k| !iids.contains(*k)).collect();
        extra.sort();
        match extra.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "the worksheet has {} row(s) for installation IDs not in this bundle (first: {first}); was it filled in for another bundle?",
                extra.len()
            )),
        }
    }
    fn activate(&self, req: &Request) -> Outcome {
        match &self.source {
            Source::Sheet(map) => match map.get(req.iid.digits()) {
                Some(Ok(cid)) => Outcome::Cid(cid.clone()),
                Some(Err(e)) => {
                    Outcome::Failed(Failure::new(Code::BkdBadCid, format!("worksheet: {e}")))
                }
                None => Outcome::Failed(Failure::new(
                    Code::BkdNoAnswer,
                    "no confirmation ID in the worksheet",
                )),
            },
            Source::Prompt(lock) => {
                let _one_at_a_time = lock.lock();
                let stdin = std::io::stdin();
                prompt_cid(req, &mut stdin.lock(), &mut std::io::stderr())
            }
        }
    }
    fn remaining(&self, _epid: &ExtendedProductId) -> Result<Remaining, Failure> {
        Ok(Remaining::Unlimited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use makproxy_core::ids::with_check_digits;

    fn req() -> Request {
        Request {
            iid: InstallationId::parse(&with_check_digits(&[3; 54], 7)).unwrap(),
            epid: ExtendedProductId::parse("03612-03305-317-008912-02-1033-9200.0000-0662023")
                .unwrap(),
        }
    }

    #[test]
    fn worksheet_round_trip_and_bad_cid_reported() {
        let rows = vec![Row {
            handle: 1,
            iid: req().iid,
            epid: req().epid,
            product: Some("Windows, \"Pro\"".into()),
        }];
        let csv = worksheet_csv(&rows);
        let text = worksheet_text(&rows, "abc");
        assert!(text.contains("1:3333336") && text.contains("A:______"));
        let cid = with_check_digits(&[4; 40], 6);
        let filled = csv.replace(",\"\"\r\n", &format!(",{cid}\r\n"));
        let m = Manual::from_worksheet(&filled, "t").unwrap();
        assert!(matches!(m.activate(&req()), Outcome::Cid(c) if c.digits() == cid));
        let mut bad = cid.clone().into_bytes();
        bad[13] = if bad[13] == b'9' { b'8' } else { bad[13] + 1 };
        let m = Manual::from_worksheet(
            &csv.replace(
                ",\"\"\r\n",
                &format!(",{}\r\n", String::from_utf8(bad.clone()).unwrap()),
            ),
            "t",
        )
        .unwrap();
        let Outcome::Failed(f) = m.activate(&req()) else {
            panic!()
        };
        assert_eq!(f.code, Code::BkdBadCid);
        assert!(f.message.contains("group 3 of 8"), "{}", f.message);
        // The file's own line (the header is line 1) and the bundle's record number.
        assert!(
            f.message.contains("worksheet line 2 (bundle record 1)"),
            "{}",
            f.message
        );
        // A second row is line 3.
        let two = vec![
            rows[0].clone(),
            Row {
                handle: 2,
                iid: InstallationId::parse(&with_check_digits(&[5; 54], 7)).unwrap(),
                epid: req().epid,
                product: None,
            },
        ];
        let sheet = worksheet_csv(&two);
        let mut lines: Vec<String> = sheet.split("\r\n").map(String::from).collect();
        let cut = lines[2].rfind(',').unwrap();
        lines[2] = format!(
            "{},{}",
            &lines[2][..cut],
            String::from_utf8(bad.clone()).unwrap()
        );
        let m = Manual::from_worksheet(&lines.join("\r\n"), "t").unwrap();
        let r2 = Request {
            iid: two[1].iid.clone(),
            epid: req().epid,
        };
        let Outcome::Failed(f) = m.activate(&r2) else {
            panic!()
        };
        assert!(
            f.message.contains("worksheet line 3 (bundle record 2)"),
            "{}",
            f.message
        );
        let m = Manual::from_worksheet(&csv, "t").unwrap();
        assert!(matches!(m.activate(&req()), Outcome::Failed(f) if f.code == Code::BkdNoAnswer));
    }

    #[test]
    fn a_product_name_with_line_breaks_and_commas_cannot_inject_a_row() {
        // The attack from issue 13: a signed CIL's product name carrying a whole row.
        let victim = req();
        let forged = with_check_digits(&[7; 40], 6);
        let rows = vec![Row {
            handle: 1,
            iid: victim.iid.clone(),
            epid: victim.epid.clone(),
            product: Some(format!(
                "Office\r\n2,{},{},x,{forged}\r\n\"",
                victim.iid.grouped(),
                victim.epid
            )),
        }];
        let m = Manual::from_worksheet(&worksheet_csv(&rows), "t").unwrap();
        assert!(
            matches!(m.activate(&victim), Outcome::Failed(f) if f.code == Code::BkdNoAnswer),
            "the forged CID in the product cell was taken as an answer"
        );
        let back = csv::Reader::from_reader(worksheet_csv(&rows).as_bytes())
            .records()
            .count();
        assert_eq!(back, 1, "one record, one row");
    }

    #[test]
    fn a_worksheet_row_for_an_iid_outside_the_bundle_is_refused_before_anything() {
        let cid = with_check_digits(&[4; 40], 6);
        let rows = vec![Row {
            handle: 1,
            iid: req().iid,
            epid: req().epid,
            product: None,
        }];
        let filled = worksheet_csv(&rows).replace(",\"\"\r\n", &format!(",{cid}\r\n"));
        let m = Manual::from_worksheet(&filled, "t").unwrap();
        let mut batch = std::collections::HashSet::new();
        assert!(m
            .check_batch(&batch)
            .unwrap_err()
            .contains("not in this bundle"));
        batch.insert(req().iid.digits().to_string());
        assert!(m.check_batch(&batch).is_ok());
    }

    #[test]
    fn only_the_prompt_is_interactive() {
        assert!(Manual::interactive().interactive());
        let sheet = worksheet_csv(&[]);
        assert!(!Manual::from_worksheet(&sheet, "t").unwrap().interactive());
    }

    #[test]
    fn conflicting_cids_for_one_iid_are_refused() {
        let a = with_check_digits(&[4; 40], 6);
        let b = with_check_digits(&[5; 40], 6);
        let r = req();
        let text = format!(
            "handle,installation_id,extended_product_id,product,confirmation_id\r\n1,{i},{e},,{a}\r\n2,{i},{e},,{b}\r\n",
            i = r.iid.grouped(),
            e = r.epid
        );
        let Err(err) = read_worksheet(&text) else {
            panic!("conflicting CIDs were accepted")
        };
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn prompt_rejects_a_mistyped_group_and_asks_again() {
        let cid = with_check_digits(&[1, 2, 3, 4, 5].repeat(8), 6);
        let groups: Vec<&str> = (0..8).map(|i| &cid[i * 6..i * 6 + 6]).collect();
        let mut typo = groups[1].as_bytes().to_vec();
        typo[0] = if typo[0] == b'9' { b'8' } else { typo[0] + 1 };
        let input = format!(
            "{}\n{}\n{}\n{}\n",
            groups[0],
            String::from_utf8(typo).unwrap(),
            groups[1],
            groups[2..].join("\n")
        );
        let mut out = Vec::new();
        let o = prompt_cid(&req(), &mut input.as_bytes(), &mut out);
        assert!(matches!(o, Outcome::Cid(c) if c.digits() == cid));
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("group B fails its check digit"));
    }
}
