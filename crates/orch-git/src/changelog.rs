//! `git.changelog`: release notes from the commits since the previous tag, grouped by
//! conventional-commit type, as Markdown.
//!
//! The parsing and rendering are plain functions ([`parse_commit`], [`render_markdown`]) so
//! they can be used without a repository.

use std::path::PathBuf;

use async_trait::async_trait;
use orch_core::{
    Artifact, Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec,
    PlanContext,
};
use serde::Deserialize;

use crate::common::{plan_repo, render, render_opt, repo_path};
use crate::errors::GitError;
use crate::exec::{RepoLock, run_blocking};
use crate::repo;

/// Largest Markdown published as the `markdown` output (bytes); larger notes are only in the
/// file.
pub const MARKDOWN_OUTPUT_LIMIT: usize = 8 * 1024;

/// Sections in the order they are rendered: conventional-commit type and heading. Breaking
/// changes come before all of them; untyped commits and unknown types come last, as Other.
pub const SECTIONS: &[(&str, &str)] = &[
    ("feat", "Features"),
    ("fix", "Bug fixes"),
    ("perf", "Performance"),
    ("refactor", "Refactoring"),
    ("docs", "Documentation"),
    ("test", "Tests"),
    ("build", "Build"),
    ("ci", "Continuous integration"),
    ("style", "Style"),
    ("chore", "Chores"),
    ("revert", "Reverts"),
];

/// One commit, as the changelog sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Abbreviated commit id.
    pub id: String,
    /// The conventional-commit type, lowercased (`feat`), when the subject has one.
    pub kind: Option<String>,
    /// The scope (`api` in `feat(api): ...`).
    pub scope: Option<String>,
    /// `!` after the type, or a `BREAKING CHANGE:` footer.
    pub breaking: bool,
    /// The description after `type(scope): `, or the whole subject for untyped commits.
    pub description: String,
    /// Texts of `BREAKING CHANGE:` / `BREAKING-CHANGE:` footers.
    pub notes: Vec<String>,
}

/// Parses a commit message as a conventional commit.
///
/// ```
/// use orch_git::changelog::parse_commit;
/// let e = parse_commit("abc1234", "feat(api)!: drop v1\n\nBREAKING CHANGE: v1 is gone\n");
/// assert_eq!(e.kind.as_deref(), Some("feat"));
/// assert_eq!(e.scope.as_deref(), Some("api"));
/// assert!(e.breaking);
/// assert_eq!(e.notes, ["v1 is gone"]);
/// let other = parse_commit("def5678", "tidy up");
/// assert_eq!(other.kind, None);
/// ```
pub fn parse_commit(id: &str, message: &str) -> Entry {
    let subject = message.lines().next().unwrap_or("").trim();
    let mut entry = Entry {
        id: id.to_owned(),
        kind: None,
        scope: None,
        breaking: false,
        description: subject.to_owned(),
        notes: Vec::new(),
    };
    if let Some((prefix, description)) = subject.split_once(':') {
        let (prefix, bang) = match prefix.strip_suffix('!') {
            Some(p) => (p, true),
            None => (prefix, false),
        };
        let (kind, scope) = match prefix.split_once('(') {
            Some((k, rest)) => match rest.strip_suffix(')') {
                Some(scope) if !scope.is_empty() && !scope.contains(['(', ')']) => {
                    (k, Some(scope.trim()))
                }
                _ => ("", None),
            },
            None => (prefix, None),
        };
        let description = description.trim();
        if !kind.is_empty()
            && kind.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
            && !description.is_empty()
        {
            entry.kind = Some(kind.to_ascii_lowercase());
            entry.scope = scope.map(str::to_owned);
            entry.breaking = bang;
            entry.description = description.to_owned();
        }
    }
    entry.notes = breaking_notes(message);
    if !entry.notes.is_empty() {
        entry.breaking = true;
    }
    entry
}

/// Texts of the `BREAKING CHANGE:` footers of a message (a footer runs to the next blank
/// line or the next footer).
fn breaking_notes(message: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let mut current: Option<String> = None;
    for line in message.lines().skip(1) {
        let trimmed = line.trim();
        let started = trimmed
            .strip_prefix("BREAKING CHANGE:")
            .or_else(|| trimmed.strip_prefix("BREAKING-CHANGE:"));
        if let Some(text) = started {
            notes.extend(current.take());
            current = Some(text.trim().to_owned());
        } else if trimmed.is_empty() || is_footer(trimmed) {
            notes.extend(current.take());
        } else if let Some(c) = &mut current {
            c.push(' ');
            c.push_str(trimmed);
        }
    }
    notes.extend(current);
    notes.retain(|n| !n.is_empty());
    notes
}

/// `Token: value` or `Token #value`, as git trailers are written.
fn is_footer(line: &str) -> bool {
    let token_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(line.len());
    token_end > 0 && (line[token_end..].starts_with(": ") || line[token_end..].starts_with(" #"))
}

fn heading(kind: Option<&str>) -> &'static str {
    kind.and_then(|k| SECTIONS.iter().find(|(t, _)| *t == k))
        .map_or("Other", |(_, h)| h)
}

fn line_of(e: &Entry, with_kind: bool) -> String {
    let lead = match (with_kind, e.kind.as_deref(), e.scope.as_deref()) {
        (true, Some(k), Some(s)) => format!("**{k}({s}):** "),
        (true, Some(k), None) => format!("**{k}:** "),
        (false, Some(_), Some(s)) => format!("**{s}:** "),
        _ => String::new(),
    };
    format!("- {lead}{} (`{}`)\n", e.description, e.id)
}

/// Renders release notes: a `## TITLE` heading, a count line, then a section per type
/// (Breaking changes first, Other last), newest commit first within each.
pub fn render_markdown(title: &str, since: Option<&str>, entries: &[Entry]) -> String {
    let mut md = format!("## {title}\n\n");
    let n = entries.len();
    let commits = if n == 1 {
        "1 commit".to_owned()
    } else {
        format!("{n} commits")
    };
    match since {
        Some(s) => md.push_str(&format!("{commits} since {s}.\n")),
        None => md.push_str(&format!("{commits}.\n")),
    }
    if entries.is_empty() {
        md.push_str("\nNo changes.\n");
        return md;
    }
    let breaking: Vec<&Entry> = entries.iter().filter(|e| e.breaking).collect();
    if !breaking.is_empty() {
        md.push_str("\n### Breaking changes\n\n");
        for e in &breaking {
            md.push_str(&line_of(e, true));
            for note in &e.notes {
                md.push_str(&format!("  - {note}\n"));
            }
        }
    }
    let known = |e: &&Entry| {
        e.kind
            .as_deref()
            .is_some_and(|k| SECTIONS.iter().any(|(t, _)| *t == k))
    };
    for (kind, title) in SECTIONS {
        let items: Vec<&Entry> = entries
            .iter()
            .filter(|e| !e.breaking && e.kind.as_deref() == Some(*kind))
            .collect();
        if items.is_empty() {
            continue;
        }
        md.push_str(&format!("\n### {title}\n\n"));
        for e in items {
            md.push_str(&line_of(e, false));
        }
    }
    let other: Vec<&Entry> = entries
        .iter()
        .filter(|e| !e.breaking && !known(e))
        .collect();
    if !other.is_empty() {
        md.push_str(&format!("\n### {}\n\n", heading(None)));
        for e in other {
            let mut e = e.clone();
            // Unknown types keep their prefix, so nothing is lost.
            if e.kind.is_some() {
                e.description = format!(
                    "{}{}: {}",
                    e.kind.as_deref().unwrap_or(""),
                    e.scope
                        .as_deref()
                        .map(|s| format!("({s})"))
                        .unwrap_or_default(),
                    e.description
                );
            }
            md.push_str(&format!("- {} (`{}`)\n", e.description, e.id));
        }
    }
    md
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    repo: Option<String>,
    since: Option<String>,
    output: Option<String>,
    title: Option<String>,
}

pub(crate) fn factory(_: &PhaseSpec, s: Settings) -> Result<ChangelogPhase, KindError> {
    Ok(ChangelogPhase {
        repo: s.repo,
        since: s.since,
        output: s.output,
        title: s.title,
    })
}

/// Writes release notes.
#[derive(Debug, Clone)]
pub(crate) struct ChangelogPhase {
    repo: Option<String>,
    since: Option<String>,
    output: Option<String>,
    title: Option<String>,
}

struct Notes {
    markdown: String,
    commits: usize,
    since: Option<String>,
}

fn collect(
    repo: &git2::Repository,
    since: Option<&str>,
    title: Option<&str>,
) -> Result<Notes, GitError> {
    let dir = repo::display_path(repo);
    let Some(head) = repo::head_commit(repo)? else {
        return Ok(Notes {
            markdown: render_markdown(title.unwrap_or("Unreleased"), None, &[]),
            commits: 0,
            since: None,
        });
    };
    let base: Option<(String, git2::Oid)> = match since {
        Some(s) => Some((s.to_owned(), repo::resolve_commit(repo, s)?.id())),
        None => repo::nearest_tag(repo, head.id(), true)?,
    };
    let mut walk = repo
        .revwalk()
        .map_err(GitError::git("walk the history", &dir))?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
        .and_then(|()| walk.push(head.id()))
        .map_err(GitError::git("walk the history", &dir))?;
    if let Some((_, oid)) = &base {
        walk.hide(*oid)
            .map_err(GitError::git("walk the history", &dir))?;
    }
    let mut entries = Vec::new();
    for oid in walk {
        let oid = oid.map_err(GitError::git("walk the history", &dir))?;
        let commit = repo
            .find_commit(oid)
            .map_err(GitError::git("read a commit", &dir))?;
        if commit.parent_count() > 1 {
            continue;
        }
        let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
        entries.push(parse_commit(&repo::short(oid), &message));
    }
    let title = match title {
        Some(t) => t.to_owned(),
        None => repo::tags_by_commit(repo)?
            .get(&head.id())
            .and_then(|names| names.last().cloned())
            .unwrap_or_else(|| "Unreleased".to_owned()),
    };
    let since_label = base.map(|(name, _)| name);
    Ok(Notes {
        markdown: render_markdown(&title, since_label.as_deref(), &entries),
        commits: entries.len(),
        since: since_label,
    })
}

#[async_trait]
impl Phase for ChangelogPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let path = plan_repo(ctx, self.repo.as_deref());
        let since = self
            .since
            .as_deref()
            .map_or_else(|| "the previous tag".to_owned(), |s| ctx.render(s));
        let output = self.output.as_deref().map_or_else(
            || "RUN_DIR/CHANGELOG.md".to_owned(),
            |o| ctx.resolve(o).display().to_string(),
        );
        Description::new(format!(
            "write release notes of {} since {since}",
            path.display()
        ))
        .detail("repo", path.display().to_string())
        .detail("since", since)
        .detail("output", output.clone())
        .change(format!("write {output}"))
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let path = repo_path(ctx, self.repo.as_deref())?;
        let since = render_opt(ctx, "since", self.since.as_deref())?;
        let title = render_opt(ctx, "title", self.title.as_deref())?;
        let output: PathBuf = match &self.output {
            Some(o) => ctx.base_dir().join(render(ctx, "output", o)?),
            None => ctx.run_dir().join("CHANGELOG.md"),
        };
        let out = output.clone();
        // Commit messages are external text: the notes are masked like every file a kind
        // writes.
        let redactor = ctx.redactor().clone();
        let notes = run_blocking(ctx, move |job| {
            let repo = repo::open(&path)?;
            job.know_repo(&repo);
            let lock = RepoLock::of(repo.path());
            let mut notes = {
                let _held = lock.lock();
                collect(&repo, since.as_deref(), title.as_deref())?
            };
            if let std::borrow::Cow::Owned(masked) = redactor.redact(&notes.markdown) {
                notes.markdown = masked;
            }
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(GitError::io("create the directory", parent))?;
            }
            std::fs::write(&out, &notes.markdown).map_err(GitError::io("write", &out))?;
            job.log(format!(
                "{} commit(s) since {} written to {}",
                notes.commits,
                notes.since.as_deref().unwrap_or("the first commit"),
                out.display()
            ));
            Ok(notes)
        })
        .await?;

        let mut outputs = orch_core::Outputs::new();
        outputs.insert("path".into(), output.display().to_string());
        outputs.insert("commits".into(), notes.commits.to_string());
        outputs.insert("since".into(), notes.since.unwrap_or_default());
        if notes.markdown.len() <= MARKDOWN_OUTPUT_LIMIT {
            outputs.insert("markdown".into(), notes.markdown.clone());
        }
        let mut artifact = Artifact::new(
            "file",
            output.file_name().map_or_else(
                || "CHANGELOG.md".into(),
                |n| n.to_string_lossy().into_owned(),
            ),
        );
        artifact.path = Some(output.display().to_string());
        artifact.size = Some(notes.markdown.len() as u64);
        Ok(PhaseOutcome {
            outputs,
            artifacts: vec![artifact],
            exit_code: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: &str, kind: Option<&str>, scope: Option<&str>, breaking: bool, desc: &str) {
        let e = parse_commit("1234567", message);
        assert_eq!(e.kind.as_deref(), kind, "{message}");
        assert_eq!(e.scope.as_deref(), scope, "{message}");
        assert_eq!(e.breaking, breaking, "{message}");
        assert_eq!(e.description, desc, "{message}");
    }

    #[test]
    fn parses_conventional_subjects() {
        check("feat: add x", Some("feat"), None, false, "add x");
        check("Fix(parser): y", Some("fix"), Some("parser"), false, "y");
        check("refactor!: drop z", Some("refactor"), None, true, "drop z");
        check("feat(api)!: v2", Some("feat"), Some("api"), true, "v2");
        check("tidy up", None, None, false, "tidy up");
        check("Merge branch 'x'", None, None, false, "Merge branch 'x'");
        check("see: ", None, None, false, "see:");
        check("fix(: broken", None, None, false, "fix(: broken");
        check("two words: no", None, None, false, "two words: no");
        check(
            "chore: bump\n\nBREAKING CHANGE: needs rust 1.88",
            Some("chore"),
            None,
            true,
            "bump",
        );
    }

    #[test]
    fn breaking_footers_run_to_a_blank_line_or_next_footer() {
        let e = parse_commit(
            "1",
            "feat: x\n\nbody\n\nBREAKING CHANGE: first line\ncontinued\nRefs: #12\nBREAKING-CHANGE: two\n",
        );
        assert_eq!(e.notes, ["first line continued", "two"]);
    }

    #[test]
    fn empty_notes_say_so() {
        assert_eq!(
            render_markdown("v1", Some("v0"), &[]),
            "## v1\n\n0 commits since v0.\n\nNo changes.\n"
        );
    }
}
