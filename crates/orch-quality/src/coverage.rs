//! Coverage reports: Cobertura XML (coverage.py `coverage xml`, many JVM and .NET tools)
//! and LCOV (c8, nyc, Node's `--experimental-test-coverage`, grcov, `cargo llvm-cov`).
//!
//! Lines are counted from the per-line data (`<line>` elements, `DA:` records), not from
//! the summary attributes a tool may add; branches from `condition-coverage` and `BRDA:`
//! when the report has them. The same source file in several reports is merged line by
//! line (a line is covered when any report covers it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::InputError;
use crate::inputs;

/// The coverage of one line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCoverage {
    /// How often it ran.
    pub hits: u64,
    /// Branches taken from it.
    pub branches_covered: u64,
    /// Branches from it.
    pub branches_total: u64,
}

impl LineCoverage {
    fn merge(&mut self, other: LineCoverage) {
        self.hits = self.hits.max(other.hits);
        if other.branches_total > 0 {
            self.branches_total = self.branches_total.max(other.branches_total);
            self.branches_covered = self.branches_covered.max(other.branches_covered);
        }
    }
}

/// Line data by file, then by line number.
pub type FileLines = BTreeMap<String, BTreeMap<u64, LineCoverage>>;

/// A coverage report that was read.
#[derive(Clone, Debug, PartialEq)]
pub struct CoverageReport {
    /// The file.
    pub path: PathBuf,
    /// `cobertura` or `lcov`.
    pub format: &'static str,
    /// Lines by source file.
    pub files: FileLines,
}

/// Covered and total counts, with the percentage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Covered.
    pub covered: u64,
    /// Total.
    pub total: u64,
    /// `covered / total` in percent, two decimals (0 when `total` is 0).
    pub percent: f64,
}

impl Ratio {
    /// A ratio from counts.
    pub fn new(covered: u64, total: u64) -> Self {
        let percent = if total == 0 {
            0.0
        } else {
            (covered as f64 * 10_000.0 / total as f64).round() / 100.0
        };
        Self {
            covered,
            total,
            percent,
        }
    }
}

/// Totals over line data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoverageTotals {
    /// Lines.
    pub lines: Ratio,
    /// Branches, when the data has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Ratio>,
    /// Source files.
    pub files: u64,
}

/// Totals of line data.
pub fn totals(files: &FileLines) -> CoverageTotals {
    let (mut lc, mut lt, mut bc, mut bt) = (0, 0, 0, 0);
    for lines in files.values() {
        for l in lines.values() {
            lt += 1;
            if l.hits > 0 {
                lc += 1;
            }
            bc += l.branches_covered;
            bt += l.branches_total;
        }
    }
    CoverageTotals {
        lines: Ratio::new(lc, lt),
        branches: (bt > 0).then(|| Ratio::new(bc, bt)),
        files: files.len() as u64,
    }
}

/// Merges line data into `into`.
pub fn merge_into(into: &mut FileLines, from: &FileLines) {
    for (file, lines) in from {
        let target = into.entry(file.clone()).or_default();
        for (n, l) in lines {
            target.entry(*n).or_default().merge(*l);
        }
    }
}

/// Reads a coverage report, Cobertura XML or LCOV (told apart by their content).
pub fn read(path: &Path) -> Result<CoverageReport, InputError> {
    let text = inputs::read(path, "coverage")?;
    parse(&text, path)
}

/// Parses a coverage report (`path` is for messages).
pub fn parse(text: &str, path: &Path) -> Result<CoverageReport, InputError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let (format, files) = if trimmed.starts_with('<') {
        ("cobertura", cobertura(text, path)?)
    } else if text
        .lines()
        .any(|l| l.starts_with("SF:") || l.trim() == "end_of_record")
    {
        ("lcov", lcov(text, path)?)
    } else {
        return Err(InputError::UnknownCoverage {
            path: path.to_owned(),
        });
    };
    if files.values().all(BTreeMap::is_empty) {
        return Err(InputError::Malformed {
            path: path.to_owned(),
            format: "coverage",
            line: 1,
            column: 1,
            message: format!("the {format} report has no line data"),
        });
    }
    Ok(CoverageReport {
        path: path.to_owned(),
        format,
        files,
    })
}

fn cobertura(text: &str, path: &Path) -> Result<FileLines, InputError> {
    let doc = roxmltree::Document::parse(text).map_err(|e| {
        let (line, column) = inputs::xml_error_pos(text, &e);
        InputError::Malformed {
            path: path.to_owned(),
            format: "Cobertura XML",
            line,
            column,
            message: e.to_string(),
        }
    })?;
    let at = |node: roxmltree::Node<'_, '_>, message: String| {
        let pos = doc.text_pos_at(node.range().start);
        InputError::Malformed {
            path: path.to_owned(),
            format: "Cobertura XML",
            line: pos.row as usize,
            column: pos.col as usize,
            message,
        }
    };
    let root = doc.root_element();
    if root.tag_name().name() != "coverage" {
        return Err(at(
            root,
            format!(
                "the root element is <{}>, not Cobertura's <coverage>",
                root.tag_name().name()
            ),
        ));
    }
    let mut files = FileLines::new();
    for class in root.descendants().filter(|n| n.has_tag_name("class")) {
        let file = class
            .attribute("filename")
            .ok_or_else(|| at(class, "<class> without a `filename`".to_owned()))?;
        let target = files.entry(file.to_owned()).or_default();
        // Only the class's own <lines>: <method> elements repeat the same lines.
        for lines in class.children().filter(|n| n.has_tag_name("lines")) {
            for line in lines.children().filter(|n| n.has_tag_name("line")) {
                let number = line
                    .attribute("number")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| at(line, "<line> without a numeric `number`".to_owned()))?;
                let hits = line
                    .attribute("hits")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| at(line, "<line> without a numeric `hits`".to_owned()))?;
                let mut l = LineCoverage {
                    hits,
                    ..LineCoverage::default()
                };
                if line.attribute("branch") == Some("true")
                    && let Some(cc) = line.attribute("condition-coverage")
                {
                    let (c, t) = condition_coverage(cc).ok_or_else(|| {
                        at(
                            line,
                            format!("`condition-coverage` `{cc}` is not like `50% (1/2)`"),
                        )
                    })?;
                    l.branches_covered = c;
                    l.branches_total = t;
                }
                target.entry(number).or_default().merge(l);
            }
        }
    }
    Ok(files)
}

/// `50% (1/2)` as `(1, 2)`.
fn condition_coverage(text: &str) -> Option<(u64, u64)> {
    let inner = text.split_once('(')?.1.split_once(')')?.0;
    let (c, t) = inner.split_once('/')?;
    Some((c.trim().parse().ok()?, t.trim().parse().ok()?))
}

fn lcov(text: &str, path: &Path) -> Result<FileLines, InputError> {
    let mut files = FileLines::new();
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = |column: usize, message: String| InputError::Malformed {
            path: path.to_owned(),
            format: "LCOV",
            line: i + 1,
            column,
            message,
        };
        if line.is_empty() {
            continue;
        }
        if line == "end_of_record" {
            current = None;
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(bad(1, format!("`{}` is not an LCOV record", cut(line))));
        };
        let value_col = key.len() + 2;
        match key {
            "SF" => {
                current = Some(value.to_owned());
                files.entry(value.to_owned()).or_default();
            }
            "DA" | "BRDA" => {
                let Some(file) = &current else {
                    return Err(bad(
                        1,
                        format!("`{key}` outside a file record (no `SF:` before it)"),
                    ));
                };
                let fields: Vec<&str> = value.split(',').collect();
                let num = |idx: usize| -> Result<u64, InputError> {
                    let f = fields.get(idx).copied().unwrap_or("");
                    let col =
                        value_col + fields.iter().take(idx).map(|f| f.len() + 1).sum::<usize>();
                    if key == "BRDA" && idx == 3 && f == "-" {
                        return Ok(0);
                    }
                    f.trim().parse::<u64>().map_err(|_| {
                        bad(
                            col,
                            format!("`{key}` field {} is `{f}`, not a number", idx + 1),
                        )
                    })
                };
                let number = num(0)?;
                let entry = files
                    .entry(file.clone())
                    .or_default()
                    .entry(number)
                    .or_default();
                if key == "DA" {
                    let hits = num(1)?;
                    entry.hits = entry.hits.max(hits);
                } else {
                    num(1)?;
                    num(2)?;
                    let taken = num(3)?;
                    entry.branches_total += 1;
                    if taken > 0 {
                        entry.branches_covered += 1;
                    }
                }
            }
            // Summaries (LF, LH, BRF, BRH) are recomputed from the data; functions, test
            // names and versions are not measured.
            _ => {}
        }
    }
    Ok(files)
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// A name for a coverage report, for "coverage by service": the file's stem, or its
/// directory's name when the stem is a tool's default (`coverage.xml`, `lcov.info`).
pub fn source_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    const GENERIC: [&str; 6] = [
        "coverage",
        "lcov",
        "cobertura",
        "cobertura-coverage",
        "coverage-final",
        "report",
    ];
    if GENERIC.contains(&stem.as_str()) {
        // The nearest directory with a telling name (`services/gateway/coverage/lcov.info`
        // is `gateway`).
        for dir in path.ancestors().skip(1).filter_map(Path::file_name) {
            let dir = dir.to_string_lossy();
            if !matches!(dir.as_ref(), "coverage" | "reports" | "report" | "." | "") {
                return dir.into_owned();
            }
        }
    }
    stem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcov_counts_lines_and_branches() {
        let text = "TN:\nSF:a.js\nDA:1,1\nDA:2,0\nBRDA:2,0,0,1\nBRDA:2,0,1,-\nLF:2\nLH:1\nend_of_record\nSF:b.js\nDA:1,3\nend_of_record\n";
        let r = parse(text, Path::new("lcov.info")).unwrap();
        let t = totals(&r.files);
        assert_eq!(t.lines, Ratio::new(2, 3));
        assert_eq!(t.branches, Some(Ratio::new(1, 2)));
        assert_eq!(t.lines.percent, 66.67);
    }

    #[test]
    fn faults_are_located() {
        let e = parse("SF:a.js\nDA:1,x\n", Path::new("l.info")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "l.info:2:6: malformed LCOV: `DA` field 2 is `x`, not a number"
        );
        let e = parse(
            "<coverage>\n <packages><class/></packages></coverage>",
            Path::new("c.xml"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.xml:2:12: malformed Cobertura XML: <class> without a `filename`"
        );
        let e = parse("<coverage><a></coverage>", Path::new("c.xml")).unwrap_err();
        assert!(e.to_string().starts_with("c.xml:1:"), "{e}");
        let e = parse("hello", Path::new("c.txt")).unwrap_err();
        assert!(matches!(e, InputError::UnknownCoverage { .. }));
        let e = parse("<coverage></coverage>", Path::new("c.xml")).unwrap_err();
        assert!(e.to_string().contains("no line data"), "{e}");
    }

    #[test]
    fn names_come_from_the_file_or_its_directory() {
        assert_eq!(source_name(Path::new("cov/identity.xml")), "identity");
        assert_eq!(
            source_name(Path::new("svc/gateway/coverage/lcov.info")),
            "gateway"
        );
        assert_eq!(source_name(Path::new("gateway/lcov.info")), "gateway");
    }
}
