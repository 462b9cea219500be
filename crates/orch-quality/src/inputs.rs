//! Input files: glob patterns expanded against a directory, and positions in text.

use std::path::{Component, Path, PathBuf};

use crate::errors::InputError;

/// The most read from one input file (256 MiB).
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Expands glob patterns (`reports/*.sarif`, `cov/**/lcov.info`) relative to `dir`, in
/// pattern order, each pattern's files sorted, duplicates dropped. `*` does not cross `/`;
/// `**` does. A pattern that matches nothing is an error ([`InputError::NoMatch`]).
pub fn expand(
    key: &'static str,
    patterns: &[String],
    dir: &Path,
) -> Result<Vec<PathBuf>, InputError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let mut found = expand_one(key, pattern, dir)?;
        if found.is_empty() {
            return Err(InputError::NoMatch {
                key,
                pattern: pattern.clone(),
                dir: dir.to_owned(),
            });
        }
        found.sort();
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

fn expand_one(key: &'static str, pattern: &str, dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let full = dir.join(pattern);
    if !has_meta(pattern) {
        return Ok(if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        });
    }
    // The literal directories before the first component with a glob character.
    let mut base = PathBuf::new();
    let mut rest = PathBuf::new();
    let mut in_glob = false;
    for c in full.components() {
        let text = c.as_os_str().to_string_lossy();
        if !in_glob && matches!(c, Component::Normal(_)) && has_meta(&text) {
            in_glob = true;
        }
        if in_glob {
            rest.push(c.as_os_str());
        } else {
            base.push(c.as_os_str());
        }
    }
    let glob = globset::GlobBuilder::new(&rest.to_string_lossy())
        .literal_separator(true)
        .build()
        .map_err(|e| InputError::BadGlob {
            key,
            pattern: pattern.to_owned(),
            message: e.kind().to_string(),
        })?
        .compile_matcher();
    if !base.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    let walker = ignore::WalkBuilder::new(&base)
        .standard_filters(false)
        .follow_links(false)
        .build();
    for entry in walker.flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(&base)
            && glob.is_match(rel)
        {
            found.push(entry.path().to_owned());
        }
    }
    Ok(found)
}

/// Reads an input file whole, refusing empty ones and ones over [`MAX_INPUT_BYTES`].
pub fn read(path: &Path, format: &'static str) -> Result<String, InputError> {
    let err = |source| InputError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(err)?.len();
    if len > MAX_INPUT_BYTES {
        return Err(err(std::io::Error::other(format!(
            "{len} bytes, more than the {MAX_INPUT_BYTES} read"
        ))));
    }
    let bytes = std::fs::read(path).map_err(err)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let (line, column) = line_col(&String::from_utf8_lossy(e.as_bytes()), offset);
        InputError::Malformed {
            path: path.to_owned(),
            format,
            line,
            column,
            message: "not UTF-8 text".to_owned(),
        }
    })?;
    if text.trim().is_empty() {
        return Err(InputError::Empty {
            path: path.to_owned(),
            format,
        });
    }
    Ok(text)
}

/// The 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The 1-based line and column of an XML error: where the parser stopped, or the end of
/// the text when the document was cut short.
pub fn xml_error_pos(text: &str, e: &roxmltree::Error) -> (usize, usize) {
    match e {
        roxmltree::Error::UnclosedRootNode | roxmltree::Error::UnexpectedEndOfStream => {
            line_col(text, text.trim_end().len())
        }
        other => {
            let pos = other.pos();
            (pos.row as usize, pos.col as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_sorted_and_empty_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["r/b.sarif", "r/a.sarif", "r/x.txt", "r/deep/c.sarif"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let names = |v: Vec<PathBuf>| {
            v.iter()
                .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
                .collect::<Vec<_>>()
        };
        let got = expand("sarif", &["r/*.sarif".into()], dir.path()).unwrap();
        assert_eq!(names(got), ["r/a.sarif", "r/b.sarif"]);
        let got = expand(
            "sarif",
            &["r/**/*.sarif".into(), "r/a.sarif".into()],
            dir.path(),
        )
        .unwrap();
        assert_eq!(names(got), ["r/a.sarif", "r/b.sarif", "r/deep/c.sarif"]);
        let err = expand("junit", &["junit/*.xml".into()], dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`junit` pattern `junit/*.xml` matches no file"),
            "{err}"
        );
        let err = expand("coverage", &["r/missing.xml".into()], dir.path()).unwrap_err();
        assert!(matches!(err, InputError::NoMatch { .. }));
    }

    #[test]
    fn positions_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
