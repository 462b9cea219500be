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
#[cfg(test)]
fn split(text: &str) -> Option<(Vec<Range<usize>>, usize)> {
    layout(text).filter(|(pieces, _)| worth_cutting(pieces))
}

/// Whether cuts make more than one piece of phases (one is parsed whole).
pub(super) fn worth_cutting(pieces: &[Range<usize>]) -> bool {
    pieces.len() > 2
}

/// Where the file could be cut, however few the pieces: `Some` when the phases come last,
/// each under its own `[phases.ID]` or `[phases.ID.KEY]` headers, together (then
/// [`phase_section`] holds a phase's tables). See [`worth_cutting`].
pub(super) fn layout(text: &str) -> Option<(Vec<Range<usize>>, usize)> {
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
    pieces.push(start..text.len());
    Some((pieces, ids.len()))
}

/// Whether `line` is a header of phase `id`'s tables (`[phases.ID]`, `[phases.ID.KEY]`).
fn is_header_of(line: &str, id: &str) -> bool {
    line.strip_prefix("[phases.")
        .and_then(|rest| rest.strip_prefix(id))
        .is_some_and(|tail| tail.starts_with(']') || tail.starts_with('.'))
}

/// The part of `text` made of the headers of phase `id` and their keys, around byte `at` (in
/// one of its tables): from its first header to the next header of anything else. Only for
/// a text whose [`layout`] is known (a phase's headers together, unindented); `None` when
/// `at` is under no header of the phase.
pub(super) fn phase_section(text: &str, id: &str, at: usize) -> Option<Range<usize>> {
    let at = at.min(text.len());
    let line_start = |i: usize| text[..i].rfind('\n').map_or(0, |n| n + 1);
    // Back to the phase's first header.
    let mut start = None;
    let mut pos = line_start(at);
    loop {
        let line = &text[pos..];
        if line.starts_with('[') {
            if !is_header_of(line, id) {
                break;
            }
            start = Some(pos);
        }
        if pos == 0 {
            break;
        }
        pos = line_start(pos - 1);
    }
    let start = start?;
    // On to the next header that is not the phase's.
    let mut end = text.len();
    let mut pos = at;
    while let Some(n) = text[pos..].find('\n') {
        pos += n + 1;
        let line = &text[pos..];
        if line.starts_with('[') && !is_header_of(line, id) {
            end = pos;
            break;
        }
    }
    Some(start..end)
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

    use super::{PHASES_PER_PIECE, Trees, phase_section, split};

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
            format!(
                "{:?}",
                super::super::parse_whole(&text, path, super::layout(&text).is_some())
            ),
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
    fn a_phase_section_holds_its_headers_and_keys_only() {
        let text = "[pipeline]\nname = \"x\"\n\n[phases.a]\nrun = \"x\"\n[phases.ab]\n\
                    kind = \"k\"\n[phases.ab.with]\nn = 1\n[phases.ab.with.deep]\nm = 2\n\
                    [phases.b]\nrun = \"y\"\n";
        let at = text.find("n = 1").unwrap();
        let section = phase_section(text, "ab", at).unwrap();
        assert_eq!(
            &text[section],
            "[phases.ab]\nkind = \"k\"\n[phases.ab.with]\nn = 1\n[phases.ab.with.deep]\nm = 2\n"
        );
        // The last phase's section ends with the text; a place under no header of the
        // phase has none.
        let last = phase_section(text, "b", text.len() - 3).unwrap();
        assert_eq!(&text[last], "[phases.b]\nrun = \"y\"\n");
        assert_eq!(phase_section(text, "ab", text.find("name").unwrap()), None);
    }

    /// A kind whose settings are read from its `with` table.
    fn with_kind() -> crate::registry::Registry {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Settings {
            #[allow(dead_code)]
            n: u32,
        }
        let mut r = crate::registry::Registry::with_builtins();
        r.add_kind(
            crate::registry::Kind::new("k", "a kind with settings"),
            |_: &crate::spec::PhaseSpec, _: Settings| {
                Ok(crate::command::CommandPhase::new(
                    crate::spec::RunSpec::Argv(vec!["true".into()]),
                ))
            },
        )
        .unwrap();
        r
    }

    #[test]
    fn with_tables_of_many_phases_load_in_linear_time_and_point_at_their_errors() {
        // Each `[phases.ID.with]` table was found by parsing the whole file again: loading
        // 4,000 of them took minutes. Each is now read from its phase's part of the file.
        let n = 4_000;
        let mut text = String::from("[pipeline]\nname = \"w\"\n\n");
        for i in 0..n {
            let _ = writeln!(text, "[phases.p{i}]\nkind = \"k\"\n[phases.p{i}.with]");
            text.push_str(if i == n - 2 { "n = -1\n" } else { "n = 1\n" });
        }
        let started = std::time::Instant::now();
        let err = crate::pipeline::Pipeline::from_str(
            &text,
            Path::new("orch.toml"),
            &with_kind(),
            &Default::default(),
        )
        .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed < std::time::Duration::from_secs(20),
            "{n} with tables loaded in {elapsed:?}"
        );
        let crate::errors::LoadError::Invalid(d) = err else {
            panic!("{err:?}")
        };
        assert_eq!(d.items.len(), 1, "{:?}", d.items);
        let item = &d.items[0];
        assert!(
            item.message.contains(&format!("phase `p{}`", n - 2)),
            "{item:?}"
        );
        let bad = text.find("n = -1").unwrap();
        let span = item.span.clone().unwrap();
        assert!(span.start >= bad && span.end <= bad + 6, "{span:?}");
    }

    #[test]
    fn a_small_file_is_parsed_whole() {
        assert!(split(&file(PHASES_PER_PIECE)).is_none());
        assert!(split("[pipeline]\nname = \"x\"\n").is_none());
    }
}
