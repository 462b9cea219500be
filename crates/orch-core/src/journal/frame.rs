//! The bytes of a journal: the header, each record framed with its length and CRC-32C
//! checksums, and reading back (telling a torn tail from corruption).

use std::path::Path;

use super::entry::{Entry, Record};
use super::{JOURNAL_FORMAT_VERSION, JournalError};

const MAGIC: &[u8; 8] = b"ORCHJRNL";
pub(super) const HEADER_LEN: usize = 12;
const FRAME_LEN: usize = 12;

/// Slicing-by-8 tables: `t[0]` is the classic byte table, `t[k][b]` the CRC of byte `b`
/// followed by `k` zero bytes.
const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = t[0][(prev & 0xff) as usize] ^ (prev >> 8);
            k += 1;
        }
        i += 1;
    }
    t
}

static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

/// CRC-32C of `data`: with the CPU's instruction where it has one (x86-64 with SSE4.2,
/// some twenty times faster than the tables), else with the tables.
fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2 (checked just above), all this function needs.
        #[allow(unsafe_code)]
        return unsafe { crc32c_sse42(data) };
    }
    crc32c_tables(data)
}

/// CRC-32C of `data` with the `crc32` instruction, eight bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut c = u64::from(!0u32);
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        c = _mm_crc32_u64(c, u64::from_le_bytes(word));
    }
    // The instruction keeps the CRC in the low 32 bits.
    let mut c = c as u32;
    for &b in chunks.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

/// CRC-32C of `data` with the slicing-by-8 tables.
fn crc32c_tables(data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut c = !0u32;
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(b[4])]
            ^ t[2][usize::from(b[5])]
            ^ t[1][usize::from(b[6])]
            ^ t[0][usize::from(b[7])];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The journal header.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
    h
}

/// Appends the framed record of `entry` to `buf`.
#[cfg(any(test, feature = "test-support"))]
pub fn encode(entry: &Entry, buf: &mut Vec<u8>) {
    encode_record(entry, buf);
}

/// Appends the framed record of a [`Record`] (an entry, a [`StartedRef`], a
/// [`FinishedRef`]) to `buf`.
///
/// [`StartedRef`]: super::StartedRef
/// [`FinishedRef`]: super::FinishedRef
pub fn encode_record<T: Record + ?Sized>(entry: &T, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_LEN]);
    entry.write_json(buf);
    let len = (buf.len() - start - FRAME_LEN) as u32;
    let len_bytes = len.to_le_bytes();
    let pcrc = crc32c(&buf[start + FRAME_LEN..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc32c(&len_bytes).to_le_bytes());
    buf[start + 8..start + 12].copy_from_slice(&pcrc.to_le_bytes());
}

/// What [`read`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Contents {
    /// Every whole record, in order.
    pub entries: Vec<Entry>,
    /// Bytes of header and whole records.
    pub valid_len: u64,
    /// Bytes of torn tail after them (0 when the file ends with a whole record).
    pub torn: u64,
}

/// Reads a journal file. See the module docs for what counts as a torn tail.
pub fn read(path: &Path) -> Result<Contents, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes, path)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Parses journal bytes (`path` is only used in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Contents, JournalError> {
    let corrupt = |offset: usize, message: String| JournalError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        message,
    };
    let n = bytes.len();
    if n < HEADER_LEN {
        // Cut short while the header was written: a prefix of the header is an empty
        // journal; anything else is not a journal.
        if header()[..n] == bytes[..] {
            return Ok(Contents {
                entries: Vec::new(),
                valid_len: 0,
                torn: n as u64,
            });
        }
        return Err(corrupt(0, "not an orch journal (bad header)".into()));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt(0, "not an orch journal (bad magic)".into()));
    }
    let version = u32_at(bytes, 8);
    if version != JOURNAL_FORMAT_VERSION {
        return Err(JournalError::Version {
            path: path.to_owned(),
            version,
        });
    }
    let mut entries = Vec::new();
    let mut pos = HEADER_LEN;
    let zero_tail = |from: usize| bytes[from..].iter().all(|b| *b == 0);
    while pos < n {
        let torn = |pos: usize| Contents {
            entries: Vec::new(),
            valid_len: pos as u64,
            torn: (n - pos) as u64,
        };
        if n - pos < FRAME_LEN {
            let mut c = torn(pos);
            c.entries = entries;
            return Ok(c);
        }
        let len_bytes = &bytes[pos..pos + 4];
        let len = u32_at(bytes, pos) as usize;
        if crc32c(len_bytes) != u32_at(bytes, pos + 4) {
            if zero_tail(pos) {
                let mut c = torn(pos);
                c.entries = entries;
                return Ok(c);
            }
            return Err(corrupt(pos, "record header checksum mismatch".into()));
        }
        let end = pos + FRAME_LEN + len;
        if end > n {
            let mut c = torn(pos);
            c.entries = entries;
            return Ok(c);
        }
        let payload = &bytes[pos + FRAME_LEN..end];
        if crc32c(payload) != u32_at(bytes, pos + 8) {
            if end == n || zero_tail(pos) {
                let mut c = torn(pos);
                c.entries = entries;
                return Ok(c);
            }
            return Err(corrupt(
                pos,
                format!(
                    "record checksum mismatch with {} more bytes after it",
                    n - end
                ),
            ));
        }
        let entry: Entry = serde_json::from_slice(payload)
            .map_err(|e| corrupt(pos, format!("record cannot be decoded: {e}")))?;
        entry.check().map_err(|m| corrupt(pos, m))?;
        entries.push(entry);
        pos = end;
    }
    Ok(Contents {
        entries,
        valid_len: n as u64,
        torn: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    fn sample() -> Vec<u8> {
        let mut b = header().to_vec();
        for i in 0..3 {
            encode(
                &Entry::Started {
                    phase: format!("p{i}"),
                    attempt: 1,
                    at: "t".into(),
                },
                &mut b,
            );
        }
        b
    }

    #[test]
    fn whole_journal_reads_back() {
        let b = sample();
        let c = parse(&b, Path::new("j")).unwrap();
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.torn, 0);
        assert_eq!(c.valid_len, b.len() as u64);
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        let b = sample();
        let mut last = 0;
        for cut in 0..=b.len() {
            let c = parse(&b[..cut], Path::new("j")).unwrap();
            assert!(c.entries.len() >= last, "cut {cut}");
            last = c.entries.len();
            assert_eq!(c.valid_len + c.torn, cut as u64);
        }
        assert_eq!(last, 3);
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut b = sample();
        b.extend_from_slice(&[0u8; 100]);
        let c = parse(&b, Path::new("j")).unwrap();
        assert_eq!((c.entries.len(), c.torn), (3, 100));
    }

    #[test]
    fn damage_before_the_last_record_is_corruption() {
        let b = sample();
        let c = parse(&b, Path::new("j")).unwrap();
        // The last record starts where the whole journal minus its length ends.
        let mut last_start = HEADER_LEN;
        let mut pos = HEADER_LEN;
        while pos < b.len() {
            last_start = pos;
            pos += FRAME_LEN + u32_at(&b, pos) as usize;
        }
        assert_eq!(c.entries.len(), 3);
        for at in 0..last_start {
            let mut d = b.clone();
            d[at] ^= 0x5a;
            let r = parse(&d, Path::new("j"));
            assert!(r.is_err(), "flip at {at} not detected: {r:?}");
        }
    }

    #[test]
    fn crc32c_slices_match_the_bytewise_form() {
        let bytewise = |data: &[u8]| {
            let mut c = !0u32;
            for &b in data {
                c = CRC_TABLES[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
            }
            !c
        };
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for start in 0..9 {
            for end in (start..data.len()).step_by(37) {
                let want = bytewise(&data[start..end]);
                // The form this CPU uses, and the tables (what a CPU without the
                // instruction uses).
                assert_eq!(crc32c(&data[start..end]), want);
                assert_eq!(crc32c_tables(&data[start..end]), want);
            }
        }
        assert_eq!(crc32c_tables(b"123456789"), 0xE306_9283);
    }
}
