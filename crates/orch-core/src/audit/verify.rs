//! Reading the audit log back: entries, the verdict of its chain (intact, torn tail,
//! tampered) and filters for `orch audit`.

use std::path::Path;
use std::time::SystemTime;

use indexmap::IndexMap;

use super::chain::{hex, hmac_sha256, sha256_hex};
use super::{AuditError, GENESIS};

/// One entry as read back.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its sequence number.
    pub seq: u64,
    /// The hash it claims for the entry before it.
    pub prev: String,
    /// Its hash, as written.
    pub hash: String,
    /// Its HMAC, as written.
    pub hmac: Option<String>,
    /// The hash of its bytes (what `hash` must be).
    pub computed: String,
    /// The whole entry as JSON.
    pub value: serde_json::Value,
}

impl Entry {
    /// The `event` field.
    pub fn event(&self) -> &str {
        self.value["event"].as_str().unwrap_or("")
    }

    /// A string field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.value.get(name).and_then(serde_json::Value::as_str)
    }
}

/// Parses one line (without its newline).
pub(super) fn parse_line(line: &[u8]) -> Result<Entry, String> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON entry: {e}"))?;
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    let at = text
        .rfind(",\"hash\":\"")
        .ok_or_else(|| "the entry has no hash".to_owned())?;
    let mut body = text.as_bytes()[..at].to_vec();
    body.push(b'}');
    let str_field = |k: &str| value.get(k).and_then(serde_json::Value::as_str);
    let seq = value
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "the entry has no seq".to_owned())?;
    let prev = str_field("prev")
        .ok_or_else(|| "the entry has no prev".to_owned())?
        .to_owned();
    let hash = str_field("hash")
        .ok_or_else(|| "the entry has no hash".to_owned())?
        .to_owned();
    let hmac = str_field("hmac").map(str::to_owned);
    Ok(Entry {
        seq,
        prev,
        hash,
        hmac,
        computed: sha256_hex(&body),
        value,
    })
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry is whole and chained (and keyed, when a key was given).
    Intact,
    /// Line `line` (1-based) is where the chain breaks, with why.
    Tampered {
        /// The first bad line.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

/// The result of checking a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Intact or where it breaks.
    pub verdict: Verdict,
    /// Whole entries read before the verdict (all of them when intact).
    pub entries: usize,
    /// The head of the chain: the last good entry's seq and hash.
    pub head: Option<(u64, String)>,
    /// Bytes of torn tail after the last whole entry (an interrupted write).
    pub torn: u64,
    /// Entries carrying an HMAC.
    pub keyed: usize,
    /// Whether HMACs were checked (a key was given).
    pub key_checked: bool,
    /// Torn tails earlier runs cut off (`torn_tail` entries).
    pub recovered: usize,
    /// Runs that started and have no `run_finished` entry (interrupted or still running).
    pub unfinished: Vec<String>,
}

/// Checks a log: every line whole, each `hash` right, each `prev` the hash before it,
/// `seq` counting up by one, and with `key`, every entry from the first keyed one on
/// carrying a right HMAC (and at least one keyed entry).
pub fn verify(path: &Path, key: Option<&[u8]>) -> Result<Report, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(verify_bytes(&bytes, key))
}

/// [`verify`] over the bytes of a log.
pub fn verify_bytes(bytes: &[u8], key: Option<&[u8]>) -> Report {
    let mut report = Report {
        verdict: Verdict::Intact,
        entries: 0,
        head: None,
        torn: 0,
        keyed: 0,
        key_checked: key.is_some(),
        recovered: 0,
        unfinished: Vec::new(),
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1);
    report.torn = (bytes.len() - whole) as u64;
    let mut prev = GENESIS.to_owned();
    let mut seq = 0u64;
    let mut keyed_from: Option<usize> = None;
    let mut open_runs: IndexMap<String, ()> = IndexMap::new();
    let tamper = |report: &mut Report, line: usize, why: String| {
        report.verdict = Verdict::Tampered { line, why };
    };
    for (n, line) in bytes[..whole].split_inclusive(|&b| b == b'\n').enumerate() {
        let lineno = n + 1;
        let line = &line[..line.len() - 1];
        let entry = match parse_line(line) {
            Ok(e) => e,
            Err(why) => {
                tamper(&mut report, lineno, why);
                return report;
            }
        };
        if entry.computed != entry.hash {
            tamper(
                &mut report,
                lineno,
                format!(
                    "entry {} was changed: its hash does not match its contents",
                    entry.seq
                ),
            );
            return report;
        }
        if entry.prev != prev {
            let why = if entry.seq <= seq {
                format!(
                    "entry {} comes after entry {seq}: entries were reordered or inserted",
                    entry.seq
                )
            } else if entry.seq > seq + 1 {
                format!(
                    "entries {} to {} are missing (removed)",
                    seq + 1,
                    entry.seq - 1
                )
            } else {
                format!(
                    "entry {} does not chain to the entry before it: an entry was removed, inserted or replaced",
                    entry.seq
                )
            };
            tamper(&mut report, lineno, why);
            return report;
        }
        if entry.seq != seq + 1 {
            tamper(
                &mut report,
                lineno,
                format!("entry has seq {}, expected {}", entry.seq, seq + 1),
            );
            return report;
        }
        if entry.hmac.is_some() {
            report.keyed += 1;
            keyed_from.get_or_insert(lineno);
        }
        if let Some(key) = key {
            match &entry.hmac {
                Some(mac) if *mac != hex(&hmac_sha256(key, entry.hash.as_bytes())) => {
                    tamper(
                        &mut report,
                        lineno,
                        format!(
                            "entry {}: its HMAC does not match (rewritten without the key, or another key)",
                            entry.seq
                        ),
                    );
                    return report;
                }
                Some(_) => {}
                None if keyed_from.is_some() => {
                    tamper(
                        &mut report,
                        lineno,
                        format!(
                            "entry {} has no HMAC, but entries before it have one",
                            entry.seq
                        ),
                    );
                    return report;
                }
                None => {}
            }
        }
        match entry.event() {
            "run_started" => {
                if let Some(run) = entry.field("run") {
                    open_runs.insert(run.to_owned(), ());
                }
            }
            "run_finished" => {
                if let Some(run) = entry.field("run") {
                    open_runs.shift_remove(run);
                }
            }
            "torn_tail" => report.recovered += 1,
            _ => {}
        }
        seq = entry.seq;
        prev = entry.hash.clone();
        report.entries += 1;
        report.head = Some((entry.seq, entry.hash));
    }
    if key.is_some() && report.entries > 0 && report.keyed == 0 {
        tamper(
            &mut report,
            1,
            "a key was given, but no entry carries an HMAC (the log was written, or rewritten, without the key)".into(),
        );
        return report;
    }
    report.unfinished = open_runs.into_keys().collect();
    report
}

/// Which entries `orch audit show` prints.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this run's entries.
    pub run: Option<String>,
    /// Only this phase's entries.
    pub phase: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<SystemTime>,
    /// Only entries before this time.
    pub until: Option<SystemTime>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Entry) -> bool {
        if self
            .run
            .as_deref()
            .is_some_and(|r| e.field("run") != Some(r))
        {
            return false;
        }
        if self
            .phase
            .as_deref()
            .is_some_and(|p| e.field("phase") != Some(p))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = e
                .field("time")
                .and_then(|t| humantime::parse_rfc3339(t).ok())
            else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        true
    }
}

impl Entry {
    /// One line for people: `SEQ TIME EVENT fields...`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:>6} {} {}",
            self.seq,
            self.field("time").unwrap_or("-"),
            self.event()
        );
        if let serde_json::Value::Object(m) = &self.value {
            for (k, v) in m {
                if matches!(
                    k.as_str(),
                    "seq" | "time" | "prev" | "hash" | "hmac" | "event"
                ) {
                    continue;
                }
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push_str(&format!(" {k}={v}"));
            }
        }
        out
    }
}

impl Report {
    /// The result for people, naming the log.
    pub fn render(&self, path: &Path) -> String {
        let mut out = String::new();
        let head = self
            .head
            .as_ref()
            .map(|(seq, h)| format!("head: entry {seq}, sha256 {h}"))
            .unwrap_or_else(|| "empty".into());
        match &self.verdict {
            Verdict::Intact => out.push_str(&format!(
                "{}: intact, {} entr{}; {head}\n",
                path.display(),
                self.entries,
                if self.entries == 1 { "y" } else { "ies" }
            )),
            Verdict::Tampered { line, why } => {
                out.push_str(&format!(
                    "{}: TAMPERED: line {line}: {why}\n",
                    path.display()
                ));
                out.push_str(&format!(
                    "  the {} entr{} before it chain correctly; last good {head}\n",
                    self.entries,
                    if self.entries == 1 { "y" } else { "ies" }
                ));
            }
        }
        if self.key_checked {
            out.push_str("  keyed: HMACs checked with ORCH_AUDIT_KEY (a rewrite of the whole log is detected too)\n");
            if self.keyed < self.entries {
                out.push_str(&format!(
                    "  note: the first {} entr{} carry no HMAC (written before a key was used)\n",
                    self.entries - self.keyed,
                    if self.entries - self.keyed == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                ));
            }
        } else if self.keyed > 0 {
            out.push_str("  entries carry HMACs, but ORCH_AUDIT_KEY is not set: only edits, removals, insertions and reorderings can be detected, not a rewrite of the whole log\n");
        } else {
            out.push_str("  not keyed: only edits, removals, insertions and reorderings can be detected, not a rewrite of the whole log (set ORCH_AUDIT_KEY when running to key entries)\n");
        }
        if self.torn > 0 {
            out.push_str(&format!(
                "  torn tail: {} byte{} after the last entry (a write cut short by a crash, not tampering)\n",
                self.torn,
                if self.torn == 1 { "" } else { "s" }
            ));
        }
        if self.recovered > 0 {
            out.push_str(&format!(
                "  {} torn tail{} cut off by later runs (recorded as torn_tail entries)\n",
                self.recovered,
                if self.recovered == 1 { "" } else { "s" }
            ));
        }
        if !self.unfinished.is_empty() {
            out.push_str(&format!(
                "  runs with no end entry (interrupted or still running): {}\n",
                self.unfinished.join(", ")
            ));
        }
        out
    }
}

/// Reads every whole entry of a log (for `orch audit show`); lines that cannot be read
/// are left out.
pub fn read(path: &Path) -> Result<Vec<Entry>, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1);
    Ok(bytes[..whole]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| parse_line(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{Event, encode};

    fn log(n: usize, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_owned();
        for i in 0..n {
            prev = encode(
                i as u64 + 1,
                "2026-01-01T00:00:00.000Z",
                &prev,
                &Event::PhaseStarted {
                    run: "r1",
                    phase: &format!("p{i}"),
                    attempt: 1,
                },
                key,
                &mut out,
            )
            .as_str()
            .to_owned();
        }
        out
    }

    #[test]
    fn a_written_log_verifies_and_a_torn_tail_is_not_tampering() {
        let bytes = log(3, None);
        let r = verify_bytes(&bytes, None);
        assert_eq!(r.verdict, Verdict::Intact);
        assert_eq!(r.entries, 3);
        for cut in 1..40 {
            let r = verify_bytes(&bytes[..bytes.len() - cut], None);
            assert_eq!(r.verdict, Verdict::Intact, "cut {cut}");
            assert_eq!(r.entries, 2);
            assert!(r.torn > 0 || cut == 0);
        }
    }

    #[test]
    fn keyed_entries_verify_only_with_the_key() {
        let bytes = log(3, Some(b"k1"));
        assert_eq!(verify_bytes(&bytes, Some(b"k1")).verdict, Verdict::Intact);
        assert!(matches!(
            verify_bytes(&bytes, Some(b"k2")).verdict,
            Verdict::Tampered { line: 1, .. }
        ));
        // Without a key, the chain still verifies.
        assert_eq!(verify_bytes(&bytes, None).verdict, Verdict::Intact);
        // A rewrite without the key carries no HMAC: refused when the key is given.
        let bytes = log(3, None);
        assert!(matches!(
            verify_bytes(&bytes, Some(b"k1")).verdict,
            Verdict::Tampered { .. }
        ));
    }
}
