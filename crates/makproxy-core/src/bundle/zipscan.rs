//! An independent reading of a zip file's central directory, and the canonical-layout
//! rule (docs/bundle-format.md, "Container"): a bundle is exactly its entries, each a
//! local header equal to its central-directory entry and its data, back to back from
//! offset 0, then the central directory, then one end record with no comment at the end
//! of the file. No extra fields, comments, data descriptors or zip64, and every header
//! field that the data does not decide has the one value the writer writes (version,
//! flags, time, attributes; [`METHODS`]). What the scan cannot see, the reader checks:
//! each entry's method by its name, the deflate stream ending exactly at the compressed
//! size, and signature files in their one serialisation. So every byte of a verified
//! bundle is signed or fixed by the format.
//!
//! The zip crate keeps only one of two same-named entries and accepts names that are
//! paths; this scanner sees every raw entry so the bundle reader can reject
//! duplicates, special files, encryption and zip64 before the zip crate is used to
//! inflate anything.

use super::error::BundleError;
use crate::codes::Code;
use std::io::{Read, Seek, SeekFrom};

/// One central-directory record, as stored.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The entry's name, as raw bytes.
    pub name: Vec<u8>,
    /// "Version made by" (the high byte names the archiver's OS).
    pub made_by: u16,
    /// "Version needed to extract".
    pub needed: u16,
    /// DOS modification time and date.
    pub time: u16,
    /// DOS modification date.
    pub date: u16,
    /// Disk number where the entry starts.
    pub disk_start: u16,
    /// Internal attributes (bit 0: "text").
    pub internal_attrs: u16,
    /// General-purpose flags.
    pub flags: u16,
    /// Compression method (0 stored, 8 deflate).
    pub method: u16,
    /// CRC-32 of the uncompressed data.
    pub crc32: u32,
    /// Compressed size.
    pub compressed: u64,
    /// Uncompressed size.
    pub uncompressed: u64,
    /// External attributes (DOS and Unix file type bits).
    pub external_attrs: u32,
    /// Where its local header starts.
    pub local_offset: u64,
}

/// Size of a local file header before its name.
const LOCAL_HEADER: u64 = 30;

impl RawEntry {
    /// Unix symlink, or any non-regular file type recorded by a Unix archiver.
    pub fn is_special(&self) -> bool {
        let host = self.made_by >> 8;
        let unix_mode = self.external_attrs >> 16;
        let dos_dir = self.external_attrs & 0x10 != 0;
        let unix_special = host == 3 && unix_mode != 0 && (unix_mode & 0o170000) != 0o100000;
        self.name.ends_with(b"/") || dos_dir || unix_special
    }
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn unreadable(detail: &str) -> BundleError {
    BundleError::new(Code::BndUnreadable, detail)
}

/// Reads the central directory of `r` (whose total length is `len`).
pub fn scan<R: Read + Seek>(
    r: &mut R,
    len: u64,
    max_entries: usize,
    max_cd: u64,
) -> Result<Vec<RawEntry>, BundleError> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    if len < 22 {
        return Err(unreadable("file is too short to be a zip archive"));
    }
    let tail_len = len.min(22 + 65535);
    let mut tail = vec![0u8; tail_len as usize];
    r.seek(SeekFrom::Start(len - tail_len))
        .map_err(|e| unreadable(&e.to_string()))?;
    r.read_exact(&mut tail)
        .map_err(|e| unreadable(&e.to_string()))?;
    let pos = (0..=tail.len() - 22)
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD && i + 22 + u16le(&tail, i + 20) as usize == tail.len())
        .ok_or_else(|| unreadable("no end-of-central-directory record (truncated?)"))?;
    if u16le(&tail, pos + 20) != 0 {
        return Err(BundleError::new(
            Code::BndExtraData,
            "the archive has a comment; a bundle has none (an end record must end the file)",
        ));
    }
    let e = &tail[pos..];
    let (disk, cd_disk, on_disk, total) = (u16le(e, 4), u16le(e, 6), u16le(e, 8), u16le(e, 10));
    let (cd_size, cd_offset) = (u32le(e, 12), u32le(e, 16));
    if total == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return Err(BundleError::new(
            Code::BndUnsupportedZip,
            "zip64 archives are not used by this format",
        ));
    }
    if pos >= 20 && tail[pos - 20..pos - 16] == [0x50, 0x4b, 0x06, 0x07] {
        return Err(BundleError::new(
            Code::BndUnsupportedZip,
            "zip64 locator present",
        ));
    }
    if disk != 0 || cd_disk != 0 || on_disk != total {
        return Err(BundleError::new(
            Code::BndUnsupportedZip,
            "multi-disk archive",
        ));
    }
    if total as usize > max_entries {
        return Err(BundleError::new(
            Code::BndTooManyEntries,
            &format!("{total} entries; at most {max_entries}"),
        ));
    }
    let eocd_at = len - tail_len + pos as u64;
    if u64::from(cd_offset) + u64::from(cd_size) > eocd_at || u64::from(cd_size) > max_cd {
        return Err(unreadable("central directory lies outside the archive"));
    }
    if u64::from(cd_offset) + u64::from(cd_size) != eocd_at {
        return Err(BundleError::new(
            Code::BndLayout,
            "bytes between the central directory and the end record (a second end record?)",
        ));
    }
    let mut cd = vec![0u8; cd_size as usize];
    r.seek(SeekFrom::Start(u64::from(cd_offset)))
        .map_err(|e| unreadable(&e.to_string()))?;
    r.read_exact(&mut cd)
        .map_err(|e| unreadable(&e.to_string()))?;
    let mut out = Vec::with_capacity(total as usize);
    let mut at = 0usize;
    while at < cd.len() {
        if cd.len() - at < 46 || cd[at..at + 4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err(unreadable("corrupt central directory record"));
        }
        let name_len = u16le(&cd, at + 28) as usize;
        let extra_len = u16le(&cd, at + 30) as usize;
        let comment_len = u16le(&cd, at + 32) as usize;
        let end = at + 46 + name_len + extra_len + comment_len;
        if end > cd.len() {
            return Err(unreadable("corrupt central directory record"));
        }
        if extra_len != 0 || comment_len != 0 {
            return Err(BundleError::new(
                Code::BndExtraData,
                &format!(
                    "entry {:?} has an extra field or comment (zip64, timestamps …); a bundle has none",
                    String::from_utf8_lossy(&cd[at + 46..at + 46 + name_len])
                ),
            ));
        }
        out.push(RawEntry {
            made_by: u16le(&cd, at + 4),
            needed: u16le(&cd, at + 6),
            time: u16le(&cd, at + 12),
            date: u16le(&cd, at + 14),
            disk_start: u16le(&cd, at + 34),
            internal_attrs: u16le(&cd, at + 36),
            flags: u16le(&cd, at + 8),
            method: u16le(&cd, at + 10),
            crc32: u32le(&cd, at + 16),
            compressed: u64::from(u32le(&cd, at + 20)),
            uncompressed: u64::from(u32le(&cd, at + 24)),
            external_attrs: u32le(&cd, at + 38),
            local_offset: u64::from(u32le(&cd, at + 42)),
            name: cd[at + 46..at + 46 + name_len].to_vec(),
        });
        if out.len() > max_entries {
            return Err(BundleError::new(
                Code::BndTooManyEntries,
                "more entries than declared",
            ));
        }
        at = end;
    }
    if out.len() != total as usize {
        return Err(unreadable(
            "entry count differs from the end-of-central-directory record",
        ));
    }
    canonical(r, &out, u64::from(cd_offset))?;
    Ok(out)
}

/// The one value of each header field the writer writes, by compression method:
/// (method, version needed, version made by). Made by Unix (3), version 1.0 for stored
/// entries and 2.0 for deflated ones, as the zip crate writes them.
const METHODS: [(u16, u16, u16); 2] = [(0, 10, 0x030A), (8, 20, 0x0314)];
/// DOS time 00:00:00 and date 1980-01-01: the writer records no time.
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;
/// A regular file readable by all, writable by its owner (Unix mode 0100644), in the
/// high half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100644 << 16;

/// Every central-directory field that the format fixes has its one value (the fields
/// the entry's data decides, CRC and sizes, are checked against the data itself).
/// The reader calls it for each entry once special files and names are decided (a
/// symlink is reported as one, not as odd attributes).
pub fn fixed_fields(e: &RawEntry) -> Result<(), BundleError> {
    let shown = String::from_utf8_lossy(&e.name);
    let wrong = |field: &str, got: String, want: String| {
        Err(BundleError::new(
            Code::BndHeaderField,
            &format!("entry {shown:?}: {field} is {got}; a bundle has {want}"),
        ))
    };
    let (_, needed, made_by) =
        *METHODS
            .iter()
            .find(|(m, _, _)| *m == e.method)
            .ok_or_else(|| {
                BundleError::new(
                    Code::BndUnsupportedZip,
                    &format!("entry {shown:?} uses compression method {}", e.method),
                )
            })?;
    if e.needed != needed {
        return wrong(
            "version needed to extract",
            e.needed.to_string(),
            needed.to_string(),
        );
    }
    if e.made_by != made_by {
        return wrong(
            "version made by",
            format!("{:#06x}", e.made_by),
            format!("{made_by:#06x}"),
        );
    }
    if e.flags != 0 {
        return wrong("the flags", format!("{:#06x}", e.flags), "none".into());
    }
    if (e.time, e.date) != (DOS_TIME, DOS_DATE) {
        return wrong(
            "the modification time",
            format!("{:#06x} {:#06x}", e.date, e.time),
            "1980-01-01 00:00 (0x0021 0x0000)".into(),
        );
    }
    if e.disk_start != 0 || e.internal_attrs != 0 {
        return wrong(
            "the disk or internal attributes",
            format!("{} {:#06x}", e.disk_start, e.internal_attrs),
            "0 0x0000".into(),
        );
    }
    if e.external_attrs != EXTERNAL_ATTRS {
        return wrong(
            "the external attributes",
            format!("{:#010x}", e.external_attrs),
            format!("{EXTERNAL_ATTRS:#010x} (a regular file, mode 0644)"),
        );
    }
    Ok(())
}

/// The entries' local headers and data must fill the file from offset 0 up to the
/// central directory, back to back, each local header equal to its directory entry,
/// every fixed field with its one value.
fn canonical<R: Read + Seek>(
    r: &mut R,
    entries: &[RawEntry],
    cd_offset: u64,
) -> Result<(), BundleError> {
    let layout = |d: String| BundleError::new(Code::BndLayout, &d);
    let mut order: Vec<&RawEntry> = entries.iter().collect();
    order.sort_by_key(|e| e.local_offset);
    let mut next = 0u64;
    for e in order {
        let shown = String::from_utf8_lossy(&e.name).into_owned();
        if e.local_offset != next {
            return Err(layout(format!(
                "entry {shown:?} starts at byte {}, not {next}: bytes before or between entries (a prepended program, a gap, a hidden entry)",
                e.local_offset
            )));
        }
        // Methods are the reader's (fixed_fields, by name); flags for encryption or a
        // data descriptor change how the entry is laid out, so they are refused here.
        if e.flags & !0x0800 != 0 {
            return Err(BundleError::new(
                Code::BndUnsupportedZip,
                &format!(
                    "entry {shown:?} uses flags {:#06x} (encryption, data descriptor …)",
                    e.flags
                ),
            ));
        }
        let mut h = [0u8; LOCAL_HEADER as usize];
        r.seek(SeekFrom::Start(e.local_offset))
            .and_then(|_| r.read_exact(&mut h))
            .map_err(|_| unreadable("a local header lies outside the archive"))?;
        let name_len = u16le(&h, 26) as u64;
        let extra_len = u16le(&h, 28);
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name)
            .map_err(|_| unreadable("a local header lies outside the archive"))?;
        let same = h[..4] == [0x50, 0x4b, 0x03, 0x04]
            && u16le(&h, 4) == e.needed
            && u16le(&h, 6) == e.flags
            && u16le(&h, 10) == e.time
            && u16le(&h, 12) == e.date
            && u16le(&h, 8) == e.method
            && u32le(&h, 14) == e.crc32
            && u64::from(u32le(&h, 18)) == e.compressed
            && u64::from(u32le(&h, 22)) == e.uncompressed
            && name == e.name;
        if !same {
            return Err(BundleError::new(
                Code::BndLocalHeader,
                &format!(
                    "the local header of entry {shown:?} differs from its central-directory entry (name {:?}; version, flags, method, time, CRC or sizes)",
                    String::from_utf8_lossy(&name)
                ),
            ));
        }
        if extra_len != 0 {
            return Err(BundleError::new(
                Code::BndExtraData,
                &format!("entry {shown:?} has a local extra field; a bundle has none"),
            ));
        }
        next = e.local_offset + LOCAL_HEADER + name_len + e.compressed;
    }
    if next != cd_offset {
        return Err(layout(format!(
            "the central directory starts at byte {cd_offset}, not {next}: bytes after the last entry"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Archives built byte by byte, so each refusal of `scan` is met exactly once
    //! (found by mutation testing: these paths had no test of their own).
    use super::*;
    use std::io::Cursor;

    /// An entry as (local header + data, central record without its offset filled).
    fn entry(name: &[u8], data: &[u8], offset: u32) -> (Vec<u8>, Vec<u8>) {
        let n = name.len() as u16;
        let size = data.len() as u32;
        let mut local = Vec::new();
        local.extend([0x50, 0x4b, 0x03, 0x04]);
        local.extend(10u16.to_le_bytes()); // version needed
        local.extend([0u8; 4]); // flags, method (stored)
        local.extend([0, 0, 0x21, 0]); // time, date (1980-01-01)
        local.extend(0u32.to_le_bytes()); // crc32 (not checked by scan)
        local.extend(size.to_le_bytes());
        local.extend(size.to_le_bytes());
        local.extend(n.to_le_bytes());
        local.extend(0u16.to_le_bytes()); // extra
        local.extend(name);
        local.extend(data);
        let mut c = Vec::new();
        c.extend([0x50, 0x4b, 0x01, 0x02]);
        c.extend(0x030Au16.to_le_bytes()); // made by (Unix, 1.0)
        c.extend(10u16.to_le_bytes()); // version needed
        c.extend([0u8; 4]); // flags, method
        c.extend([0, 0, 0x21, 0]); // time, date (1980-01-01)
        c.extend(0u32.to_le_bytes());
        c.extend(size.to_le_bytes());
        c.extend(size.to_le_bytes());
        c.extend(n.to_le_bytes());
        c.extend([0u8; 4]); // extra, comment lengths
        c.extend([0u8; 4]); // disk, internal attributes
        c.extend(EXTERNAL_ATTRS.to_le_bytes()); // external attributes
        c.extend(offset.to_le_bytes());
        c.extend(name);
        (local, c)
    }

    /// End record: (disk, cd disk, entries on disk, total, cd size, cd offset).
    fn eocd(f: (u16, u16, u16, u16, u32, u32)) -> Vec<u8> {
        let mut e = vec![0x50, 0x4b, 0x05, 0x06];
        for v in [f.0, f.1, f.2, f.3] {
            e.extend(v.to_le_bytes());
        }
        e.extend(f.4.to_le_bytes());
        e.extend(f.5.to_le_bytes());
        e.extend(0u16.to_le_bytes()); // comment length
        e
    }

    /// A well-formed archive of `entries`, and the bytes of its central directory.
    fn archive(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let (mut body, mut cd) = (Vec::new(), Vec::new());
        for (name, data) in entries {
            let (l, c) = entry(name, data, body.len() as u32);
            body.extend(l);
            cd.extend(c);
        }
        let n = entries.len() as u16;
        let (size, at) = (cd.len() as u32, body.len() as u32);
        body.extend(cd);
        body.extend(eocd((0, 0, n, n, size, at)));
        body
    }

    fn scan_bytes(b: &[u8], max_entries: usize, max_cd: u64) -> Result<Vec<RawEntry>, BundleError> {
        scan(&mut Cursor::new(b), b.len() as u64, max_entries, max_cd)
    }

    fn code(r: Result<Vec<RawEntry>, BundleError>) -> Code {
        r.expect_err("refused").code
    }

    /// The scan, then the fixed fields of each entry (as the reader does).
    fn scan_fixed(b: &[u8]) -> Result<Vec<RawEntry>, BundleError> {
        let v = scan_bytes(b, 3, 1 << 20)?;
        v.iter().try_for_each(fixed_fields)?;
        Ok(v)
    }

    #[test]
    fn well_formed_archives_scan_to_their_entries() {
        let b = archive(&[(b"a.json", b"{}"), (b"b", b"xyz")]);
        let names: Vec<Vec<u8>> = scan_bytes(&b, 3, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, [b"a.json".to_vec(), b"b".to_vec()]);
        // The smallest archive: an end record alone (22 bytes), no entries.
        assert!(scan_bytes(&archive(&[]), 3, 1 << 20).unwrap().is_empty());
        // A record of exactly 46 bytes (an empty name) is read, not called corrupt.
        assert_eq!(
            scan_bytes(&archive(&[(b"", b"")]), 3, 1 << 20)
                .unwrap()
                .len(),
            1
        );
    }

    /// Each field the format fixes, changed alone in the central directory (and in the
    /// local header too where it has one, so the two still agree), is refused as such;
    /// changed in the local header alone, as a disagreement.
    #[test]
    fn every_fixed_header_field_has_one_value() {
        let good = archive(&[(b"a", b"1")]);
        assert!(scan_fixed(&good).is_ok());
        let cd = 30 + 1 + 1;
        // (what, central offset, local offset, value)
        let cases: [(&str, usize, Option<usize>, &[u8]); 9] = [
            ("made by MS-DOS", 4, None, &20u16.to_le_bytes()),
            ("made by Unix 2.0", 4, None, &0x0314u16.to_le_bytes()),
            ("version needed", 6, Some(4), &20u16.to_le_bytes()),
            ("UTF-8 flag", 8, Some(6), &0x0800u16.to_le_bytes()),
            ("time", 12, Some(10), &0x6000u16.to_le_bytes()),
            ("date", 14, Some(12), &0x5b81u16.to_le_bytes()),
            ("disk start", 34, None, &1u16.to_le_bytes()),
            ("internal attributes", 36, None, &1u16.to_le_bytes()),
            (
                "external attributes",
                38,
                None,
                &(0o100755u32 << 16).to_le_bytes(),
            ),
        ];
        for (what, c, l, v) in cases {
            let mut b = good.clone();
            b[cd + c..cd + c + v.len()].copy_from_slice(v);
            if let Some(l) = l {
                b[l..l + v.len()].copy_from_slice(v);
            }
            assert_eq!(code(scan_fixed(&b)), Code::BndHeaderField, "{what}");
            if let Some(l) = l {
                let mut b = good.clone();
                b[l..l + v.len()].copy_from_slice(v);
                assert_eq!(
                    code(scan_fixed(&b)),
                    Code::BndLocalHeader,
                    "{what}, local only"
                );
            }
        }
        // Deflated: version 2.0, made by Unix 2.0, is the one pair for method 8.
        let mut b = good.clone();
        for (at, v) in [
            (cd + 4, 0x0314u16),
            (cd + 6, 20),
            (cd + 10, 8),
            (4, 20),
            (8, 8),
        ] {
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        assert!(scan_fixed(&b).is_ok(), "deflated with its own versions");
        b[cd + 4..cd + 6].copy_from_slice(&0x030Au16.to_le_bytes());
        assert_eq!(
            code(scan_fixed(&b)),
            Code::BndHeaderField,
            "deflated, made by 1.0"
        );
    }

    #[test]
    fn the_end_record_must_end_the_file() {
        let mut b = archive(&[(b"a", b"1")]);
        b.extend([0u8; 22]);
        assert_eq!(code(scan_bytes(&b, 3, 1 << 20)), Code::BndUnreadable);
        assert_eq!(code(scan_bytes(&b[..21], 3, 1 << 20)), Code::BndUnreadable);
    }

    #[test]
    fn each_zip64_marker_and_each_multi_disk_field_is_refused_alone() {
        for f in [
            (0, 0, 0xFFFF, 0xFFFF, 0, 0),
            (0, 0, 0, 0, 0xFFFF_FFFF, 0),
            (0, 0, 0, 0, 0, 0xFFFF_FFFF),
            (1, 0, 0, 0, 0, 0),
            (0, 1, 0, 0, 0, 0),
            (0, 0, 1, 0, 0, 0),
        ] {
            assert_eq!(
                code(scan_bytes(&eocd(f), 3, 1 << 20)),
                Code::BndUnsupportedZip,
                "{f:?}"
            );
        }
    }

    #[test]
    fn entry_and_directory_limits_are_exact() {
        let b = archive(&[(b"a", b"1"), (b"b", b"2")]);
        assert_eq!(scan_bytes(&b, 2, 1 << 20).unwrap().len(), 2, "at the limit");
        assert_eq!(code(scan_bytes(&b, 1, 1 << 20)), Code::BndTooManyEntries);
        let cd_size = 2 * (46 + 1);
        assert_eq!(scan_bytes(&b, 2, cd_size).unwrap().len(), 2);
        assert_eq!(code(scan_bytes(&b, 2, cd_size - 1)), Code::BndUnreadable);
    }

    #[test]
    fn a_damaged_central_directory_is_refused_not_misread() {
        // Ten bytes where a 46-byte record should be.
        let mut b = vec![0x50, 0x4b, 0x01, 0x02, 0, 0, 0, 0, 0, 0];
        b.extend(eocd((0, 0, 1, 1, 10, 0)));
        assert_eq!(code(scan_bytes(&b, 3, 1 << 20)), Code::BndUnreadable);
        // The same, after a good record.
        let (l, c) = entry(b"a", b"1", 0);
        let mut b = l.clone();
        let cd_size = (c.len() + 10) as u32;
        b.extend(c);
        b.extend([0x50, 0x4b, 0x01, 0x02, 0, 0, 0, 0, 0, 0]);
        b.extend(eocd((0, 0, 2, 2, cd_size, l.len() as u32)));
        assert_eq!(code(scan_bytes(&b, 3, 1 << 20)), Code::BndUnreadable);
        // A record whose extra field or comment would run past the directory.
        for at in [30, 32] {
            let mut b = archive(&[(b"a", b"1")]);
            let cd_at = 30 + 1 + 1;
            b[cd_at + at..cd_at + at + 2].copy_from_slice(&100u16.to_le_bytes());
            assert_eq!(
                code(scan_bytes(&b, 3, 1 << 20)),
                Code::BndUnreadable,
                "field at {at}"
            );
        }
        // Within the directory, an extra field or comment is refused as such.
        let mut b = archive(&[(b"a", b"1"), (b"b", b"2")]);
        let cd_at = 2 * (30 + 1 + 1);
        b[cd_at + 30..cd_at + 32].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(code(scan_bytes(&b, 3, 1 << 20)), Code::BndExtraData);
    }
}
