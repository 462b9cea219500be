//! Located problems in a pipeline file, and their rendering with the source line and a caret.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// What is wrong, as a lowercase fragment.
    pub message: String,
    /// Byte span in the file, when the problem has a location.
    #[serde(skip)]
    pub span: Option<Range<usize>>,
    /// 1-based line, when located.
    pub line: Option<usize>,
    /// 1-based column (in characters), when located.
    pub column: Option<usize>,
    /// A hint such as "did you mean `unit`?".
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at `span`.
    pub fn at(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span,
            line: None,
            column: None,
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The source a set of diagnostics points into.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file's path as given.
    pub path: PathBuf,
    /// Its text.
    pub text: Arc<str>,
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The file (absent for pipelines built in code).
    pub source: Option<Source>,
    /// The problems, in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Fills line and column from spans and sorts by position.
    pub(crate) fn new(source: Option<Source>, mut items: Vec<Diagnostic>) -> Self {
        if let Some(src) = &source {
            for d in &mut items {
                if let Some(span) = &d.span {
                    let (l, c) = line_col(&src.text, span.start);
                    d.line = Some(l);
                    d.column = Some(c);
                }
            }
        }
        items.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
        Self { source, items }
    }

    /// The file path, if any.
    pub fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(|s| s.path.as_path())
    }

    /// Renders every problem like a compiler: `error: ...`, `--> file:line:col`, the
    /// source line and a caret under the span.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            render_one(&mut out, self.source.as_ref(), d);
        }
        let n = self.items.len();
        out.push_str(&format!(
            "{n} problem{} found\n",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        match (self.items.first(), n) {
            (Some(first), 1) => write!(f, "{}", located(self.path(), first)),
            (Some(first), _) => write!(
                f,
                "{} (and {} more problem{})",
                located(self.path(), first),
                n - 1,
                if n == 2 { "" } else { "s" }
            ),
            (None, _) => f.write_str("invalid pipeline"),
        }
    }
}

fn located(path: Option<&Path>, d: &Diagnostic) -> String {
    match (path, d.line, d.column) {
        (Some(p), Some(l), Some(c)) => format!("{}:{l}:{c}: {}", p.display(), d.message),
        (Some(p), _, _) => format!("{}: {}", p.display(), d.message),
        _ => d.message.clone(),
    }
}

/// 1-based line and character column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn render_one(out: &mut String, source: Option<&Source>, d: &Diagnostic) {
    out.push_str(&format!("error: {}\n", d.message));
    if let (Some(src), Some(span), Some(line), Some(col)) = (source, &d.span, d.line, d.column) {
        let text = &src.text;
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_text = text[line_start..line_end].trim_end_matches('\r');
        let end = floor_char_boundary(text, span.end.clamp(start, line_end));
        let width = text[start..end].chars().count().max(1);
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        out.push_str(&format!("{pad}--> {}:{line}:{col}\n", src.path.display()));
        out.push_str(&format!("{pad} |\n"));
        out.push_str(&format!("{line} | {line_text}\n"));
        out.push_str(&format!(
            "{pad} | {}{}\n",
            " ".repeat(col - 1),
            "^".repeat(width)
        ));
    } else if let Some(src) = source {
        out.push_str(&format!("  --> {}\n", src.path.display()));
    }
    if let Some(help) = &d.help {
        out.push_str(&format!("  = help: {help}\n"));
    }
    out.push('\n');
}

/// The closest candidate to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let text = "ab\ncdé f\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 8), (2, 5));
    }

    #[test]
    fn suggestions_pick_the_closest_name() {
        assert_eq!(
            did_you_mean("needs", ["needs", "env", "run"]).as_deref(),
            Some("did you mean `needs`?")
        );
        assert_eq!(did_you_mean("zzz", ["needs"]), None);
    }
}
