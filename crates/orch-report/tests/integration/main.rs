//! Integration tests of orch-report: one binary.

#![allow(clippy::unwrap_used)]

mod browser;
mod engine;
mod fixtures;
mod formats;
mod junit;
mod phase;
mod quality;

use std::path::Path;

use orch_report::{Format, render};

/// Renders a format as text.
pub fn render_text(fx: &fixtures::Fixture, format: Format) -> String {
    String::from_utf8(render(&fx.record, &fx.run_dir, format).unwrap()).unwrap()
}

/// Insta settings that redact run ids, times and temporary paths.
pub fn redacted(fx: &fixtures::Fixture) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    let tmp = fx.dir.path().display().to_string();
    s.add_filter(&regex_escape(&tmp), "[TMP]");
    s.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "[RUN_ID]");
    s.add_filter(
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?( UTC|Z|[+-]\d{2}:\d{2})?",
        "[TIME]",
    );
    s
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The text a person reads in an HTML page: no styles, scripts or tags; entities decoded;
/// one line per block, blank lines dropped.
pub fn html_text(html: &str) -> String {
    let mut s = html.to_owned();
    for tag in ["style", "script"] {
        while let Some(start) = s.find(&format!("<{tag}")) {
            let end_tag = format!("</{tag}>");
            let Some(end) = s[start..].find(&end_tag) else {
                break;
            };
            s.replace_range(start..start + end + end_tag.len(), "");
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    let mut tag = String::new();
    for c in s.chars() {
        if in_tag {
            if c == '>' {
                in_tag = false;
                let name: String = tag
                    .trim_start_matches('/')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                // Block-level elements end a line.
                if matches!(
                    name.as_str(),
                    "p" | "div"
                        | "tr"
                        | "li"
                        | "h1"
                        | "h2"
                        | "h3"
                        | "h4"
                        | "summary"
                        | "pre"
                        | "section"
                        | "header"
                        | "footer"
                        | "dt"
                        | "table"
                        | "thead"
                        | "tbody"
                        | "nav"
                        | "br"
                        | "details"
                        | "ul"
                        | "dl"
                        | "title"
                        | "text"
                ) {
                    out.push('\n');
                } else if matches!(name.as_str(), "td" | "th") && !tag.starts_with('/') {
                    out.push_str(" | ");
                }
                tag.clear();
            } else {
                tag.push(c);
            }
        } else if c == '<' {
            in_tag = true;
        } else {
            out.push(c);
        }
    }
    let decoded = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&");
    decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|l| l.trim_matches(|c| c == ' ' || c == '|').trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Writes a file into `target/orch-report-preview/` for people to look at.
pub fn preview(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/orch-report-preview");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
