//! `.dockerignore` patterns, with the semantics of Docker's own matcher
//! (`moby/patternmatcher`), so a context sent by orch holds the same files as one sent by
//! `docker build`.
//!
//! - Lines starting with `#` are comments; blank lines are ignored; surrounding spaces are
//!   trimmed.
//! - `!` makes a line an exception: a path it matches is sent again.
//! - Patterns are cleaned like paths (`./a//b/` is `a/b`) and a leading `/` is dropped:
//!   every pattern is anchored at the context root. Unlike `.gitignore`, `*.log` matches
//!   `app.log` at the root only; write `**/*.log` for every directory.
//! - `*` matches any run of characters except `/`, `?` one character except `/`,
//!   `[a-z]`/`[^a-z]` a class, `\` escapes the next character, and `**` any number of
//!   directories (`**/x`, `a/**/b`, `a/**`).
//! - A path is excluded when the last pattern that matches it, or one of its parent
//!   directories, is not an exception.

/// One parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    text: String,
    exception: bool,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// One literal character.
    Lit(char),
    /// `*`: any run without `/`.
    Star,
    /// `?`: one character except `/`.
    One,
    /// `[...]`.
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
    /// `**/` in the middle or at the start: empty, or anything ending with `/`.
    AnyDirs,
    /// `**` at the end: anything.
    Any,
}

/// The patterns of one `.dockerignore` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// A pattern that cannot be parsed (an unclosed `[`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid .dockerignore pattern `{pattern}`: {message}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong.
    pub message: String,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            patterns.extend(Self::pattern(line)?);
        }
        Ok(Self { patterns })
    }

    /// Adds one pattern after the others (`!Dockerfile` keeps the Dockerfile).
    pub fn push(&mut self, pattern: &str) -> Result<(), PatternError> {
        self.patterns.extend(Self::pattern(pattern)?);
        Ok(())
    }

    fn pattern(line: &str) -> Result<Option<Pattern>, PatternError> {
        let (exception, body) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if body.is_empty() {
            return Ok(None);
        }
        let mut cleaned = clean(body);
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        let tokens = compile(&cleaned).map_err(|message| PatternError {
            pattern: line.to_owned(),
            message,
        })?;
        Ok(Some(Pattern {
            text: cleaned,
            exception,
            tokens,
        }))
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!...`): an excluded directory must then still
    /// be walked, since something below it may be sent again.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let parents: Vec<&str> = path
            .char_indices()
            .filter(|&(_, c)| c == '/')
            .map(|(i, _)| &path[..i])
            .collect();
        let mut excluded = false;
        for p in &self.patterns {
            let hit = matches(&p.tokens, &path) || parents.iter().any(|d| matches(&p.tokens, d));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// The patterns as cleaned, `!` included (for messages and tests).
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exception {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }
}

/// Cleans a `/`-separated path like Go's `filepath.Clean`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

fn compile(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i >= chars.len() {
                    Token::Any
                } else {
                    Token::AnyDirs
                });
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::One),
            '\\' => {
                i += 1;
                match chars.get(i) {
                    Some(&n) => tokens.push(Token::Lit(n)),
                    None => return Err("trailing `\\`".into()),
                }
            }
            '[' => {
                let (token, next) = class(&chars, i)?;
                tokens.push(token);
                i = next;
                continue;
            }
            c => tokens.push(Token::Lit(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// Parses `[...]` starting at `start`; returns the token and the index after `]`.
fn class(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('^') | Some('!'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("`[` without a closing `]`".into());
        };
        if c == ']' && !first {
            return Ok((Token::Class { negated, items }, i + 1));
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars.get(i).ok_or("`[` without a closing `]`")?
        } else {
            c
        };
        i += 1;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let mut hi = chars[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i).ok_or("`[` without a closing `]`")?;
                i += 1;
            }
            if hi < lo {
                return Err(format!("bad range `{lo}-{hi}`"));
            }
            items.push((lo, hi));
        } else {
            items.push((lo, lo));
        }
    }
}

/// Whether the tokens match the whole of `text` (memoised backtracking: O(tokens × chars)).
fn matches(tokens: &[Token], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let width = chars.len() + 1;
    let mut seen = vec![false; (tokens.len() + 1) * width];
    go(tokens, &chars, 0, 0, &mut seen, width)
}

fn go(t: &[Token], s: &[char], ti: usize, si: usize, seen: &mut [bool], width: usize) -> bool {
    let key = ti * width + si;
    if seen[key] {
        return false;
    }
    seen[key] = true;
    let Some(tok) = t.get(ti) else {
        return si == s.len();
    };
    match tok {
        Token::Lit(c) => s.get(si) == Some(c) && go(t, s, ti + 1, si + 1, seen, width),
        Token::One => s.get(si).is_some_and(|&c| c != '/') && go(t, s, ti + 1, si + 1, seen, width),
        Token::Class { negated, items } => {
            s.get(si).is_some_and(|&c| {
                c != '/' && items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }) && go(t, s, ti + 1, si + 1, seen, width)
        }
        Token::Star => {
            let mut j = si;
            loop {
                if go(t, s, ti + 1, j, seen, width) {
                    return true;
                }
                if j >= s.len() || s[j] == '/' {
                    return false;
                }
                j += 1;
            }
        }
        Token::Any => (si..=s.len()).any(|j| go(t, s, ti + 1, j, seen, width)),
        Token::AnyDirs => {
            // Empty, or any prefix that ends just after a `/`.
            if go(t, s, ti + 1, si, seen, width) {
                return true;
            }
            (si..s.len()).any(|j| s[j] == '/' && go(t, s, ti + 1, j + 1, seen, width))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(patterns: &str, cases: &[(&str, bool)]) {
        let d = DockerIgnore::parse(patterns).unwrap();
        for (path, want) in cases {
            assert_eq!(
                d.is_excluded(path),
                *want,
                "patterns {patterns:?}, path {path:?}"
            );
        }
    }

    #[test]
    fn star_does_not_cross_directories() {
        check(
            "*.log",
            &[("a.log", true), ("dir/a.log", false), ("a.logx", false)],
        );
        check("*/*.log", &[("dir/a.log", true), ("a/b/c.log", false)]);
    }

    #[test]
    fn double_star_spans_directories() {
        check(
            "**/*.log",
            &[("a.log", true), ("d/a.log", true), ("d/e/a.log", true)],
        );
        check(
            "a/**/b",
            &[
                ("a/b", true),
                ("a/x/b", true),
                ("a/x/y/b", true),
                ("ab", false),
            ],
        );
        check("a/**", &[("a/x", true), ("a/x/y", true), ("b/x", false)]);
        check("**", &[("anything/at/all", true)]);
    }

    #[test]
    fn a_directory_excludes_what_is_below_it() {
        check(
            "node_modules\n/build/",
            &[
                ("node_modules", true),
                ("node_modules/x/y.js", true),
                ("build/out", true),
                ("src/node_modules", false),
            ],
        );
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        check(
            "*.md\n!README.md",
            &[("CHANGES.md", true), ("README.md", false)],
        );
        check("!README.md\n*.md", &[("README.md", true)]);
        check(
            "docs\n!docs/keep.txt",
            &[("docs/a.txt", true), ("docs/keep.txt", false)],
        );
    }

    #[test]
    fn cleaning_comments_and_classes() {
        check(
            "# comment\n\n  ./secret//key  \n/top\nfile[0-9].txt\n[^a]x\nq?\\*",
            &[
                ("secret/key", true),
                ("top", true),
                ("file3.txt", true),
                ("filex.txt", false),
                ("bx", true),
                ("ax", false),
                ("q1*", true),
                ("q1x", false),
                ("# comment", false),
            ],
        );
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(DockerIgnore::parse("[abc").is_err());
        assert!(DockerIgnore::parse("x\\").is_err());
    }

    #[test]
    fn clean_is_like_go() {
        for (i, o) in [
            ("a/./b/", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("", "."),
            ("//a", "/a"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }
}
