//! Reading phase logs: the tail of a file, cleaned of terminal control sequences.
//!
//! Logs can be large; only their last bytes are read.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use orch_core::PhaseRecord;

/// The longest line kept in a log tail, in characters.
const MAX_LINE_CHARS: usize = 2_000;

/// The end of a phase's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogTail {
    /// The text, cleaned; lines end with `\n` except possibly the last.
    pub text: String,
    /// Lines in `text`.
    pub lines: usize,
    /// Whether the log has more before `text`.
    pub truncated: bool,
    /// Size of the whole log in bytes.
    pub total_bytes: u64,
    /// The log's path relative to the run directory.
    pub rel_path: String,
}

/// Where a phase's log is: `PhaseRecord.log` (relative to the run directory), or
/// `logs/ID.log` when the record names none but the file exists. Paths that leave the run
/// directory are ignored.
pub(crate) fn log_path(run_dir: &Path, id: &str, phase: &PhaseRecord) -> Option<(PathBuf, String)> {
    let rel = match &phase.log {
        Some(rel) => rel.clone(),
        None => format!("logs/{id}.log"),
    };
    let rel_path = Path::new(&rel);
    if rel_path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let path = run_dir.join(rel_path);
    path.is_file().then_some((path, rel))
}

/// The names in a run directory's `logs/`, listed once: a report of many phases looks up
/// a phase's default log (`logs/ID.log`, when the record names none) here instead of asking
/// the file system for each phase. Names listed are still checked with [`log_path`].
pub(crate) struct LogNames {
    /// `None` when the directory could not be listed (other than missing): every phase is
    /// then checked.
    names: Option<std::collections::HashSet<std::ffi::OsString>>,
}

impl LogNames {
    /// Lists `RUN_DIR/logs`.
    pub(crate) fn read(run_dir: &Path) -> Self {
        let names = match std::fs::read_dir(run_dir.join("logs")) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(std::collections::HashSet::new())
            }
            Err(_) => None,
        };
        Self { names }
    }

    /// [`log_path`], without a look at the file system for a default log that is not
    /// listed.
    pub(crate) fn log_path(
        &self,
        run_dir: &Path,
        id: &str,
        phase: &PhaseRecord,
    ) -> Option<(PathBuf, String)> {
        if phase.log.is_none()
            && let Some(names) = &self.names
            && !names.contains(std::ffi::OsStr::new(&format!("{id}.log")))
        {
            return None;
        }
        log_path(run_dir, id, phase)
    }
}

/// Reads the last `max_bytes` of a phase's log (whole lines only when cut).
pub(crate) fn tail_bytes(
    run_dir: &Path,
    id: &str,
    phase: &PhaseRecord,
    max_bytes: u64,
) -> Option<LogTail> {
    let (path, rel) = log_path(run_dir, id, phase)?;
    let (raw, total, cut) = read_tail(&path, max_bytes).ok()?;
    let mut text = clean(&raw);
    if cut {
        // Drop the partial first line.
        match text.find('\n') {
            Some(i) => {
                text.drain(..=i);
            }
            None => text.clear(),
        }
    }
    let lines = text.lines().count();
    Some(LogTail {
        text,
        lines,
        truncated: cut,
        total_bytes: total,
        rel_path: rel,
    })
}

/// Reads the last `n` lines of a phase's log (looking at most at its last 256 KiB).
pub(crate) fn tail_lines(
    run_dir: &Path,
    id: &str,
    phase: &PhaseRecord,
    n: usize,
) -> Option<LogTail> {
    let mut tail = tail_bytes(run_dir, id, phase, 256 * 1024)?;
    let all: Vec<&str> = tail.text.lines().collect();
    if all.len() > n {
        let kept = all[all.len() - n..].join("\n");
        tail.text = kept;
        tail.text.push('\n');
        tail.truncated = true;
    }
    tail.lines = tail.text.lines().count();
    Some(tail)
}

fn read_tail(path: &Path, max_bytes: u64) -> std::io::Result<(Vec<u8>, u64, bool)> {
    let mut file = std::fs::File::open(path)?;
    let total = file.metadata()?.len();
    let start = total.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(usize::try_from(total - start).unwrap_or(0));
    file.take(max_bytes).read_to_end(&mut buf)?;
    Ok((buf, total, start > 0))
}

/// Makes log bytes safe to show: invalid UTF-8 replaced, ANSI escape sequences removed,
/// carriage-return overwrites resolved as a terminal shows them, other control characters
/// dropped, very long lines cut.
pub(crate) fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let stripped = strip_ansi(&text);
    let mut out = String::with_capacity(stripped.len());
    for (i, line) in stripped.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // A terminal shows what came after the last carriage return.
        let line = line.trim_end_matches('\r');
        let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
        let mut chars = 0;
        for c in line.chars() {
            if c.is_control() && c != '\t' {
                continue;
            }
            if chars == MAX_LINE_CHARS {
                out.push_str(" […]");
                break;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// Removes ANSI escape sequences (CSI, OSC and two-byte escapes).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // CSI: parameters and intermediates, then a final byte in 0x40..=0x7e.
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                // OSC: ends with BEL or ESC \.
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_removes_terminal_sequences() {
        let raw = b"\x1b[1;32mok\x1b[0m done\n\x1b]8;;http://x\x07link\x1b]8;;\x07\nprogress 10%\rprogress 100%\r\nbell\x07!\n";
        assert_eq!(clean(raw), "ok done\nlink\nprogress 100%\nbell!\n");
    }

    #[test]
    fn listed_log_names_find_the_logs_the_file_system_finds() {
        let dir = tempfile::tempdir().unwrap();
        let phase = |log: Option<&str>| -> PhaseRecord {
            serde_json::from_value(serde_json::json!({
                "status": "succeeded", "kind": "command", "attempts": 1, "log": log
            }))
            .unwrap()
        };
        let cases = [
            ("written", None),
            ("none", None),
            ("named", Some("elsewhere/named.txt")),
            ("missing", Some("logs/missing.log")),
            ("a_dir", None),
            ("escape", Some("../outside.log")),
        ];
        // No `logs/` directory at all.
        let names = LogNames::read(dir.path());
        for (id, log) in cases {
            let p = phase(log);
            assert_eq!(
                names.log_path(dir.path(), id, &p),
                log_path(dir.path(), id, &p)
            );
        }
        std::fs::create_dir_all(dir.path().join("logs/a_dir.log")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::fs::write(dir.path().join("logs/written.log"), "out\n").unwrap();
        std::fs::write(dir.path().join("elsewhere/named.txt"), "out\n").unwrap();
        let names = LogNames::read(dir.path());
        let mut found = 0;
        for (id, log) in cases {
            let p = phase(log);
            let listed = names.log_path(dir.path(), id, &p);
            found += usize::from(listed.is_some());
            assert_eq!(listed, log_path(dir.path(), id, &p), "{id}");
        }
        assert_eq!(found, 2);
    }

    #[test]
    fn cleaning_keeps_tabs_and_replaces_bad_utf8() {
        assert_eq!(clean(b"a\tb \xff"), "a\tb \u{fffd}");
    }

    #[test]
    fn long_lines_are_cut() {
        let line = "x".repeat(MAX_LINE_CHARS + 10);
        let cleaned = clean(line.as_bytes());
        assert!(cleaned.ends_with(" […]"));
        assert_eq!(cleaned.chars().count(), MAX_LINE_CHARS + 4);
    }

    #[test]
    fn log_paths_stay_in_the_run_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::write(dir.path().join("logs/a.log"), "hi\n").unwrap();
        std::fs::write(dir.path().join("secret"), "no\n").unwrap();
        let mut rec: PhaseRecord = serde_json::from_value(serde_json::json!({
            "status": "failed", "kind": "command", "attempts": 1, "outputs": {}
        }))
        .unwrap();
        assert!(
            log_path(dir.path(), "a", &rec).is_some(),
            "falls back to logs/ID.log"
        );
        rec.log = Some("../secret".into());
        assert!(log_path(&dir.path().join("logs"), "a", &rec).is_none());
        rec.log = Some(dir.path().join("secret").display().to_string());
        assert!(log_path(dir.path(), "a", &rec).is_none());
    }

    #[test]
    fn tails_cut_at_line_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join("logs/a.log"), &text).unwrap();
        let rec: PhaseRecord = serde_json::from_value(serde_json::json!({
            "status": "failed", "kind": "command", "attempts": 1, "outputs": {},
            "log": "logs/a.log"
        }))
        .unwrap();
        let t = tail_lines(dir.path(), "a", &rec, 3).unwrap();
        assert_eq!(t.text, "line 98\nline 99\nline 100\n");
        assert!(t.truncated);
        assert_eq!(t.total_bytes, text.len() as u64);
        let t = tail_bytes(dir.path(), "a", &rec, 20).unwrap();
        assert_eq!(t.text, "line 99\nline 100\n");
        let t = tail_bytes(dir.path(), "a", &rec, 1 << 20).unwrap();
        assert!(!t.truncated);
        assert_eq!(t.lines, 100);
    }
}
