//! Parsing a large pipeline file in pieces of a few hundred phases.
//!
//! The TOML parser holds the whole document's tokens and events beside its tree, some fifty
//! bytes per byte of text: 300 MB for a file of 100k phases. Its phases come one table
//! after another, so the file is cut before `[phases.ID]` headers into pieces that are
//! parsed one at a time, and each piece's tree is walked and freed before the next is
//! parsed.
//!
//! A file is cut only where that gives the tree parsing it whole would give: the phases
//! come last, each under its own `[phases.ID]` or `[phases.ID.KEY]` headers (bare ids, the
//! headers of one phase together), and nothing before them declares `phases`. Anything
//! else (a table after the phases, a line starting with `[` in a multi-line string, an
//! array of tables) parses the file whole, as does a piece that does not parse: its error
//! is then the whole file's, word for word.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// Phases per piece.
pub(super) const PHASES_PER_PIECE: usize = 512;

/// Where to cut `text`: the byte ranges of its pieces (the first holds everything before
/// the phases) and how many phases it declares. `None` when it must be parsed whole.
pub(super) fn split(text: &str) -> Option<(Vec<Range<usize>>, usize)> {
    let mut pieces = Vec::new();
    let mut start = None;
    let mut ids = HashSet::new();
    let mut last = None;
    let mut in_piece = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let at = pos;
        pos += line.len();
        let trimmed = line.trim_start_matches([' ', '\t']);
        if !trimmed.starts_with('[') {
            continue;
        }
        // An indented header (or a `[` line in a string or an array) among the phases.
        let indented = trimmed.len() != line.len();
        let Some(rest) = line.strip_prefix("[phases.").filter(|_| !indented) else {
            if start.is_some() {
                return None;
            }
            continue;
        };
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
        let (id, tail) = rest.split_at(end);
        if id.is_empty() || !(tail.starts_with(']') || tail.starts_with('.')) {
            return None;
        }
        let Some(piece_start) = start else {
            pieces.push(0..at);
            start = Some(at);
            last = Some(id);
            ids.insert(id);
            in_piece = 1;
            continue;
        };
        if last == Some(id) {
            continue;
        }
        // A phase's headers apart from each other: parsed whole.
        if !ids.insert(id) {
            return None;
        }
        if in_piece == PHASES_PER_PIECE {
            pieces.push(piece_start..at);
            start = Some(at);
            in_piece = 0;
        }
        in_piece += 1;
        last = Some(id);
    }
    let start = start?;
    // Not worth it for one piece of phases.
    if pieces.len() < 2 {
        return None;
    }
    pieces.push(start..text.len());
    Some((pieces, ids.len()))
}

/// The trees of the pieces of `text`, parsed one at a time, their spans in `text`. Stops
/// at a piece that does not parse, or that declares what it should not: `failed` tells.
pub(super) struct Trees<'i> {
    text: &'i str,
    pieces: std::vec::IntoIter<Range<usize>>,
    first: bool,
    /// A piece did not parse (or did not hold what the cut expects).
    pub(super) failed: bool,
}

impl<'i> Trees<'i> {
    pub(super) fn new(text: &'i str, pieces: Vec<Range<usize>>) -> Self {
        Self {
            text,
            pieces: pieces.into_iter(),
            first: true,
            failed: false,
        }
    }
}

impl<'i> Iterator for Trees<'i> {
    type Item = DeTable<'i>;

    fn next(&mut self) -> Option<DeTable<'i>> {
        if self.failed {
            return None;
        }
        let range = self.pieces.next()?;
        let first = std::mem::replace(&mut self.first, false);
        let piece = self.text.get(range.clone())?;
        let Ok(tree) = DeTable::parse(piece) else {
            self.failed = true;
            return None;
        };
        let tree = tree.into_inner();
        // The first piece is what comes before the phases; each other holds phases only.
        let expected = if first {
            !tree.contains_key("phases")
        } else {
            tree.len() == 1 && tree.contains_key("phases")
        };
        if !expected {
            self.failed = true;
            return None;
        }
        Some(if range.start == 0 {
            tree
        } else {
            shift_table(tree, range.start)
        })
    }
}

fn shifted(span: Range<usize>, by: usize) -> Range<usize> {
    span.start + by..span.end + by
}

/// `t` with every span moved `by` bytes on.
fn shift_table(t: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (k, v) in t {
        let span = shifted(k.span(), by);
        out.insert(Spanned::new(span, k.into_inner()), shift(v, by));
    }
    out
}

fn shift(v: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = shifted(v.span(), by);
    let value = match v.into_inner() {
        DeValue::Array(a) => {
            let mut out = DeArray::new();
            for x in a {
                out.push(shift(x, by));
            }
            DeValue::Array(out)
        }
        DeValue::Table(t) => DeValue::Table(shift_table(t, by)),
        other => other,
    };
    Spanned::new(span, value)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::Path;
    use std::sync::Arc;

    use super::{PHASES_PER_PIECE, Trees, split};

    /// A file of `n` phases with most of what a file can hold, and a few mistakes.
    fn file(n: usize) -> String {
        let mut t = String::from(
            "[pipeline]\nname = \"big\"\n\n[vars]\nstage = \"ci\"\n\n[defaults]\nretries = 1\n\n\
             [agents.box]\ntype = \"local\"\ncapacity = 2\n\n",
        );
        for i in 0..n {
            let _ = writeln!(t, "[phases.p{i}]");
            match i % 7 {
                0 => t.push_str("run = \"echo {{ vars.stage }}\"\nenv = { A = \"1\" }\n"),
                1 => t.push_str("run = [\"true\"]\nagent = \"box\"\ntags = [\"t\"]\n"),
                2 => t.push_str("kind = \"gate\"\nassert = [\"true\"]\n"),
                3 => t.push_str("run = [\"true\"]\nwhen = \"vars.stage == 'ci'\"\ncwd = \"x\"\n"),
                _ => t.push_str("run = [\"true\"] # a comment\n"),
            }
            if i > 0 {
                let _ = writeln!(t, "needs = [\"p{}\"]", i - 1);
            }
            if i == 9 {
                t.push_str("[phases.p9.env]\nB = \"2\"\n");
            }
            if i == n - 3 {
                t.push_str("colour = \"blue\"\n");
            }
        }
        t
    }

    fn both(text: &str) -> (String, String) {
        let text: Arc<str> = Arc::from(text);
        let path = Path::new("dir/orch.toml");
        (
            format!("{:?}", super::super::parse(&text, path)),
            format!("{:?}", super::super::parse_whole(&text, path)),
        )
    }

    #[test]
    fn a_file_parsed_in_pieces_reads_as_parsed_whole() {
        let text = file(3 * PHASES_PER_PIECE + 100);
        let (cuts, phases) = split(&text).expect("cut");
        assert_eq!((cuts.len(), phases), (5, 3 * PHASES_PER_PIECE + 100));
        let mut trees = Trees::new(&text, cuts);
        assert_eq!(trees.by_ref().count(), 5);
        assert!(!trees.failed);
        let (pieces, whole) = both(&text);
        assert!(pieces.contains("unknown key `colour`"), "{pieces}");
        assert_eq!(pieces, whole);
    }

    #[test]
    fn what_cannot_be_cut_is_parsed_whole_with_the_same_errors() {
        let n = 2 * PHASES_PER_PIECE + 10;
        let cases = [
            // The same phase twice, apart.
            (format!("{}[phases.p3]\nrun = \"x\"\n", file(n)), false),
            // A table after the phases.
            (
                format!("{}[policy]\nfiles = [\"p.rego\"]\n", file(n)),
                false,
            ),
            // An indented header among the phases.
            (format!("{}  [phases.q]\nrun = \"x\"\n", file(n)), false),
            // A phase's headers together, twice.
            (
                file(n).replace("[phases.p700]\n", "[phases.p700]\n[phases.p700]\n"),
                true,
            ),
            // A syntax error in a late piece.
            (format!("{}[phases.q]\nrun = [\n", file(n)), true),
            // A header inside a multi-line string.
            (
                file(n).replace(
                    "[phases.p600]\n",
                    "[phases.p600]\nrun = \"\"\"\n[phases.x]\n\"\"\"\n",
                ),
                true,
            ),
            // `phases` declared before the phases.
            (
                file(n).replace("[agents.box]", "[phases]\n[agents.box]"),
                true,
            ),
        ];
        for (i, (text, cut)) in cases.iter().enumerate() {
            assert_eq!(split(text).is_some(), *cut, "case {i}");
            let (pieces, whole) = both(text);
            assert_eq!(pieces, whole, "case {i}");
        }
    }

    #[test]
    fn a_small_file_is_parsed_whole() {
        assert!(split(&file(PHASES_PER_PIECE)).is_none());
        assert!(split("[pipeline]\nname = \"x\"\n").is_none());
    }
}
