//! Writing JSON text directly: the bytes `serde_json` writes (compact) for strings and
//! integers, without its generic machinery. The journal and the audit log write several
//! records per phase; most of their strings need no escaping, and that is checked eight
//! bytes at a time.

/// Whether `b` holds a byte JSON escapes (as `serde_json` does: a control character below
/// 0x20, `"` or `\`).
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether a byte of `w` is below `n` (n <= 128): exact as a yes/no answer.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let w = u64::from_le_bytes(word);
        // A byte equal to `x` is a zero byte of `w ^ x`.
        let quote = w ^ (ONES * u64::from(b'"'));
        let slash = w ^ (ONES * u64::from(b'\\'));
        if below(w, 0x20) | below(quote, 1) | below(slash, 1) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// Appends `s` as a JSON string (quoted, escaped as `serde_json` escapes it).
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Appends `n` in decimal.
pub(crate) fn uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `n` in decimal, with its sign.
pub(crate) fn int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    uint(out, n.unsigned_abs());
}

/// Appends `,"key":` (`key` is one of the writer's own field names: no escaping).
pub(crate) fn key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `value` as `serde_json` writes it (what the direct forms leave to serde).
pub(crate) fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing the engine's own types to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_writes_them() {
        let mut samples: Vec<String> = [
            "",
            "p00001",
            "2026-01-01T00:00:00.000Z",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{1}\u{1f} \u{7f}",
            "caf\u{e9} \u{1f600} \u{2028}",
            "exactly8",
            "sixteen bytes!!\"",
            "\"sixteen bytes!!",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Every byte below 0x80 at every place in a word, and after a whole word.
        for b in 0u8..0x80 {
            for at in 0..17 {
                let mut s = "x".repeat(17);
                s.replace_range(at..=at, &char::from(b).to_string());
                samples.push(s);
            }
        }
        for s in &samples {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        for n in [0u64, 7, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            uint(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
        for n in [0i64, -1, 42, -130, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            int(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
    }
}
