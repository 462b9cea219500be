//! insta settings for output that names temporary paths, run ids and times.

use std::path::Path;

/// insta settings that hide `workspace` (as given and canonical), run ids and times (with
/// the padding that aligns them, whose width varies).
pub fn redactions(workspace: &Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let path = workspace.display().to_string();
    let canon = std::fs::canonicalize(workspace)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    s.add_filter(&regex_escape(&canon), "[WS]");
    s.add_filter(&regex_escape(&path), "[WS]");
    s.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "[RUN_ID]");
    s.add_filter(r" *\b\d+(\.\d+)?(ms|s)\b", " [T]");
    s.add_filter(r"\b\d+m\d\ds\b", "[T]");
    s
}

/// `s` with the characters a regular expression gives a meaning escaped.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
