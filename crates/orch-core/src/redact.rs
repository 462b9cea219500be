//! Secret redaction: every secret value is replaced by `***` before text reaches a log, an
//! event or a record, including values split across writes or spanning lines.
//!
//! A secret is also masked in the escaped forms that would reveal it: as a JSON string
//! holds it (`"` as `\"`, a newline as `\n`) and as Rust's `{:?}` quotes it, so a value
//! printed by a tool as JSON, or quoted in an error message, is masked too.

use std::borrow::Cow;
use std::sync::Arc;

/// The mask written in place of a secret.
pub const MASK: &str = "***";

/// The set of secret values of a run.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    // Longest first, so a secret that contains another is masked whole.
    secrets: Arc<[Vec<u8>]>,
}

impl Redactor {
    /// A redactor for these values. Empty values are ignored.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut secrets: Vec<Vec<u8>> = Vec::new();
        for v in values {
            let v = v.as_ref();
            if v.is_empty() {
                continue;
            }
            secrets.push(v.to_vec());
            if let Ok(text) = std::str::from_utf8(v) {
                secrets.extend(escaped_forms(text).map(String::into_bytes));
            }
        }
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self {
            secrets: secrets.into(),
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    fn max_len(&self) -> usize {
        self.secrets.first().map_or(0, Vec::len)
    }

    /// Masks every secret in `text`.
    ///
    /// ```
    /// use orch_core::redact::Redactor;
    /// let r = Redactor::new(["hunter2"]);
    /// assert_eq!(r.redact("password=hunter2"), "password=***");
    /// ```
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.is_empty() || !self.secrets.iter().any(|s| contains(text.as_bytes(), s)) {
            return Cow::Borrowed(text);
        }
        let bytes = self.redact_bytes(text.as_bytes());
        Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Masks every secret in `bytes`.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'outer: while i < bytes.len() {
            for s in self.secrets.iter() {
                if bytes[i..].starts_with(s) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += s.len();
                    continue 'outer;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    /// Masks every secret in a JSON value: in strings and in object keys, at any depth.
    ///
    /// ```
    /// use orch_core::redact::Redactor;
    /// let r = Redactor::new(["hunter2"]);
    /// let mut v = serde_json::json!({ "hunter2": ["a hunter2"] });
    /// r.redact_json(&mut v);
    /// assert_eq!(v, serde_json::json!({ "***": ["a ***"] }));
    /// ```
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&k).into_owned(), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Masks every secret in a map of strings, keys and values. Two keys that differ only
    /// by the secret they hold become one (the last wins).
    pub fn redact_map<M>(&self, map: M) -> M
    where
        M: IntoIterator<Item = (String, String)> + FromIterator<(String, String)>,
    {
        map.into_iter()
            .map(|(k, v)| {
                let k = match self.redact(&k) {
                    Cow::Owned(r) => r,
                    Cow::Borrowed(_) => k,
                };
                let v = match self.redact(&v) {
                    Cow::Owned(r) => r,
                    Cow::Borrowed(_) => v,
                };
                (k, v)
            })
            .collect()
    }

    /// A streaming redactor for one output stream.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            redactor: self.clone(),
            pending: Vec::new(),
        }
    }
}

/// The forms of a secret that escaping makes from it: JSON string content and `{:?}`
/// content (without the quotes), when they differ from the value.
fn escaped_forms(text: &str) -> impl Iterator<Item = String> + use<'_> {
    let json = serde_json::to_string(text)
        .ok()
        .and_then(|q| Some(q.strip_prefix('"')?.strip_suffix('"')?.to_owned()));
    let debug = format!("{text:?}");
    let debug = debug
        .strip_prefix('"')
        .and_then(|d| d.strip_suffix('"'))
        .map(str::to_owned);
    [json, debug, Some(text.escape_default().to_string())]
        .into_iter()
        .flatten()
        .filter(move |f| f != text)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Redacts a byte stream written in arbitrary chunks and yields whole lines.
///
/// Text is held back only while it could still be the start of a secret, so a secret split
/// across two writes, or one that spans lines, is still masked whole.
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Redactor,
    pending: Vec<u8>,
}

impl StreamRedactor {
    /// Adds a chunk and calls `line` for every complete, redacted line (without `\n`).
    pub fn push(&mut self, chunk: &[u8], mut line: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        if self.redactor.is_empty() {
            self.emit_lines(self.pending.len(), &mut line);
            return;
        }
        let redacted = self.redactor.redact_bytes(&self.pending);
        self.pending = redacted;
        let safe = self.safe_prefix();
        self.emit_lines(safe, &mut line);
    }

    /// Flushes what is left as a last line (at end of stream).
    pub fn finish(&mut self, mut line: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let rest = self.redactor.redact_bytes(&rest);
            let text = String::from_utf8_lossy(&rest);
            line(text.strip_suffix('\r').unwrap_or(&text));
        }
    }

    /// Length of the prefix of `pending` that can no longer be part of a secret: after every
    /// whole secret was masked, a match can only start where the rest is a proper prefix of
    /// some secret.
    fn safe_prefix(&self) -> usize {
        let max = self.redactor.max_len();
        let len = self.pending.len();
        let from = len.saturating_sub(max.saturating_sub(1));
        for start in from..len {
            let tail = &self.pending[start..];
            if self
                .redactor
                .secrets
                .iter()
                .any(|s| s.len() > tail.len() && s.starts_with(tail))
            {
                return start;
            }
        }
        len
    }

    fn emit_lines(&mut self, upto: usize, line: &mut impl FnMut(&str)) {
        let mut start = 0;
        while let Some(nl) = self.pending[start..upto].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            let text = String::from_utf8_lossy(&self.pending[start..end]);
            line(text.strip_suffix('\r').unwrap_or(&text));
            start = end + 1;
        }
        self.pending.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secrets: &[&str], chunks: &[&str]) -> Vec<String> {
        let mut s = Redactor::new(secrets).stream();
        let mut lines = Vec::new();
        for c in chunks {
            s.push(c.as_bytes(), |l| lines.push(l.to_owned()));
        }
        s.finish(|l| lines.push(l.to_owned()));
        lines
    }

    #[test]
    fn masks_whole_and_split_secrets() {
        assert_eq!(run(&["s3cr3t"], &["a s3cr3t b\n"]), ["a *** b"]);
        assert_eq!(run(&["s3cr3t"], &["a s3c", "r3t b\n"]), ["a *** b"]);
        assert_eq!(run(&["s3cr3t"], &["s", "3", "c", "r", "3", "t\n"]), ["***"]);
    }

    #[test]
    fn masks_secrets_that_span_lines() {
        assert_eq!(
            run(&["line1\nline2"], &["x line1\n", "line2 y\n"]),
            ["x *** y"]
        );
        assert_eq!(
            run(&["line1\nline2"], &["x line1\nother\n"]),
            ["x line1", "other"]
        );
    }

    #[test]
    fn lines_without_secret_prefixes_are_not_held_back() {
        let mut s = Redactor::new(["zzz"]).stream();
        let mut lines = Vec::new();
        s.push(b"hello\nwor", |l| lines.push(l.to_owned()));
        assert_eq!(lines, ["hello"]);
    }

    #[test]
    fn longest_secret_wins() {
        let r = Redactor::new(["abc", "abcdef"]);
        assert_eq!(r.redact("xabcdefx"), "x***x");
    }

    #[test]
    fn escaped_forms_are_masked_too() {
        let r = Redactor::new(["pa\"ss\\wo\nrd\t"]);
        // As JSON holds it, as `{:?}` quotes it, and raw.
        assert_eq!(r.redact(r#"{"t":"pa\"ss\\wo\nrd\t"}"#), r#"{"t":"***"}"#);
        assert_eq!(r.redact(&format!("{:?}", "pa\"ss\\wo\nrd\t")), "\"***\"");
        assert_eq!(r.redact("<pa\"ss\\wo\nrd\t>"), "<***>");
    }

    #[test]
    fn json_keys_and_values_are_masked() {
        let r = Redactor::new(["tok-1234"]);
        let mut v = serde_json::json!({"a": {"k-tok-1234": [1, "x tok-1234 y", null]}});
        r.redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": {"k-***": [1, "x *** y", null]}}));
        let m: std::collections::BTreeMap<String, String> = r.redact_map(
            [("tok-1234".to_owned(), "v=tok-1234".to_owned())]
                .into_iter()
                .collect(),
        );
        assert_eq!(m.get("***").map(String::as_str), Some("v=***"));
    }

    #[test]
    fn no_secrets_is_a_passthrough() {
        assert_eq!(run(&[], &["a\nb", "c\n", "tail"]), ["a", "bc", "tail"]);
    }
}
