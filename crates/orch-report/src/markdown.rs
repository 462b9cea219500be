//! The Markdown summary (GitHub-flavoured), for pull requests and `$GITHUB_STEP_SUMMARY`.

use std::fmt::Write as _;
use std::path::Path;

use orch_core::RunRecord;

use crate::junit::TestFile;
use crate::view::{PhaseView, RunView};
use crate::{ReportOptions, logs, sources};

/// Above this many phases the table lists only the phases that did not succeed.
const FULL_TABLE_MAX: usize = 300;
/// At most this many failures get their log tail.
const MAX_FAILURE_SECTIONS: usize = 20;
/// At most this many outputs are listed.
const MAX_OUTPUT_ROWS: usize = 60;
/// Output values are cut to this many characters.
const MAX_OUTPUT_VALUE: usize = 120;

fn emoji(class: &str) -> &'static str {
    match class {
        "succeeded" => "✅",
        "failed" => "❌",
        "timed_out" => "⏱️",
        "cancelled" => "🚫",
        "skipped" => "⏭️",
        "blocked" => "⛔",
        "allowed" => "⚠️",
        "running" => "⏳",
        _ => "•",
    }
}

/// Escapes text for inline Markdown (and table cells): nothing in it can start markup.
pub(crate) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '#' | '!' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A code span that holds any text (for table cells: pipes are escaped as GFM requires).
pub(crate) fn code(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace('|', "\\|");
    if s.is_empty() {
        return String::new();
    }
    let ticks = "`".repeat(longest_run(&s, '`') + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// A fenced code block that the text cannot close: the fence is longer than any run of
/// backticks in it.
pub(crate) fn fenced(info: &str, body: &str) -> String {
    let fence = "`".repeat(longest_run(body, '`').max(2) + 1);
    let mut out = format!("{fence}{info}\n{body}");
    if !body.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&fence);
    out.push('\n');
    out
}

fn longest_run(s: &str, c: char) -> usize {
    let mut best = 0;
    let mut run = 0;
    for x in s.chars() {
        if x == c {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

fn status_cell(p: &PhaseView<'_>) -> String {
    match p.exit_code {
        Some(code) if p.status != "succeeded" => format!("{} (exit {code})", p.label),
        _ => p.label.to_string(),
    }
}

fn attempts_cell(p: &PhaseView<'_>) -> String {
    match p.retries {
        0 => p.attempts.to_string(),
        1 => format!("{} (1 retry)", p.attempts),
        n => format!("{} ({n} retries)", p.attempts),
    }
}

/// Renders the Markdown summary.
pub(crate) fn render(record: &RunRecord, run_dir: &Path, options: &ReportOptions) -> String {
    let view = RunView::new(record);
    let files = crate::junit::collect(record, run_dir);
    render_view(record, &view, run_dir, options, &files)
}

fn render_view(
    record: &RunRecord,
    view: &RunView<'_>,
    run_dir: &Path,
    options: &ReportOptions,
    files: &[TestFile],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## {} {}: {}\n",
        emoji(view.status),
        text(&view.pipeline),
        view.status
    );
    let mut facts = vec![
        format!("**Run** {}", code(&view.run_id)),
        format!("**started** {}", view.started),
    ];
    if let Some(d) = &view.duration {
        facts.push(format!("**duration** {d}"));
    }
    if let Some(r) = &view.resumed_from {
        facts.push(format!("**resumed from** {}", code(r)));
    }
    let _ = writeln!(md, "{}\n", facts.join(" · "));
    let _ = writeln!(
        md,
        "{} phase{}: {}\n",
        view.total,
        if view.total == 1 { "" } else { "s" },
        view.counts_line()
    );

    // Phases.
    let listed: Vec<&PhaseView<'_>> = if view.phases.len() > FULL_TABLE_MAX {
        view.phases
            .iter()
            .filter(|p| !matches!(p.status, "succeeded" | "skipped"))
            .collect()
    } else {
        view.phases.iter().collect()
    };
    if !listed.is_empty() {
        md.push_str("| | Phase | Kind | Status | Duration | Attempts |\n");
        md.push_str("|---|---|---|---|---:|---:|\n");
        for p in &listed {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                emoji(p.class),
                code(p.id),
                text(p.kind),
                text(&status_cell(p)),
                p.duration.map_or_else(|| "–".to_owned(), |d| d.to_string()),
                attempts_cell(p),
            );
        }
        md.push('\n');
    }
    if listed.len() < view.phases.len() {
        let _ = writeln!(
            md,
            "_{} succeeded or skipped phases are not listed; see the HTML report._\n",
            view.phases.len() - listed.len()
        );
    }

    // Failures with the tail of their logs.
    let failures: Vec<&PhaseView<'_>> = view
        .phases
        .iter()
        .filter(|p| matches!(p.status, "failed" | "timed_out"))
        .collect();
    if !failures.is_empty() {
        md.push_str("### Failures\n\n");
        for p in failures.iter().take(MAX_FAILURE_SECTIONS) {
            let _ = writeln!(
                md,
                "#### {} {} {}\n",
                emoji(p.class),
                code(p.id),
                text(&status_cell(p))
            );
            if let Some(reason) = &p.reason {
                let _ = writeln!(md, "> {}\n", text(reason));
            }
            let Some(record_phase) = record.phases.get(p.id) else {
                continue;
            };
            match logs::tail_lines(run_dir, p.id, record_phase, options.log_tail_lines) {
                Some(tail) if !tail.text.trim().is_empty() => {
                    let what = if tail.truncated {
                        format!("Last {} lines of", tail.lines)
                    } else {
                        "Log".to_owned()
                    };
                    let _ = writeln!(md, "{what} {}:\n", code(&tail.rel_path));
                    md.push_str(&fenced("text", &tail.text));
                    md.push('\n');
                }
                Some(_) => md.push_str("_The log is empty._\n\n"),
                None => md.push_str("_No log was written._\n\n"),
            }
        }
        if failures.len() > MAX_FAILURE_SECTIONS {
            let rest: Vec<String> = failures[MAX_FAILURE_SECTIONS..]
                .iter()
                .map(|p| code(p.id))
                .collect();
            let _ = writeln!(md, "_Also failed:_ {}\n", rest.join(", "));
        }
    }

    // Tests from the phases' JUnit files.
    if !files.is_empty() {
        md.push_str("### Tests\n\n");
        md.push_str("| Phase | File | Tests | Passed | Failed | Errors | Skipped |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        for f in files {
            match &f.report {
                Ok(_) => {
                    let c = f.counts();
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        code(&f.phase),
                        code(&f.path),
                        c.tests,
                        c.passed,
                        c.failures,
                        c.errors,
                        c.skipped
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | | | | |",
                        code(&f.phase),
                        code(&f.path),
                        text(&sources::truncate(e, 120))
                    );
                }
            }
        }
        md.push('\n');
    }

    // Outputs worth showing: not empty, not JUnit paths (the tests table has them).
    let outputs: Vec<(&str, &str, &str)> = view
        .phases
        .iter()
        .flat_map(|p| {
            p.outputs
                .iter()
                .filter(|(k, v)| k != "junit" && !matches!(v.trim(), "" | "[]" | "{}" | "\"\""))
                .map(move |(k, v)| (p.id, k.as_str(), v.as_str()))
        })
        .collect();
    if !outputs.is_empty() {
        md.push_str("### Outputs\n\n| Phase | Output | Value |\n|---|---|---|\n");
        for (phase, key, value) in outputs.iter().take(MAX_OUTPUT_ROWS) {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                code(phase),
                code(key),
                code(&sources::truncate(value, MAX_OUTPUT_VALUE))
            );
        }
        if outputs.len() > MAX_OUTPUT_ROWS {
            let _ = writeln!(
                md,
                "\n_{} more outputs are in the HTML report._",
                outputs.len() - MAX_OUTPUT_ROWS
            );
        }
        md.push('\n');
    }

    quality_sections(&mut md, &crate::quality::sections(record, run_dir));

    let artifacts = view.artifacts();
    if !artifacts.is_empty() {
        md.push_str(
            "### Artifacts\n\n| Phase | Kind | Name | Digest | Size |\n|---|---|---|---|---:|\n",
        );
        for a in &artifacts {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                code(&a.phase),
                text(&a.kind),
                code(&a.name),
                a.digest.as_deref().map(code).unwrap_or_default(),
                a.size.as_deref().unwrap_or("")
            );
        }
        md.push('\n');
    }
    md
}

/// Findings listed per quality phase (the HTML report lists more).
const MAX_QUALITY_FINDINGS: usize = 10;

/// One section per `quality` phase: the verdict and score, why it failed, the conditions,
/// the measures and the first findings.
fn quality_sections(md: &mut String, sections: &[crate::quality::QualityView]) {
    for q in sections {
        let _ = writeln!(md, "### {} Quality: {}\n", emoji(q.class), code(&q.phase));
        if let Some(e) = &q.error {
            let _ = writeln!(md, "> {}\n", text(e));
            continue;
        }
        let score = q.score.as_deref().unwrap_or("–");
        let verdict = if q.passed { "passed" } else { "failed" };
        match &q.threshold {
            Some(t) => {
                let _ = writeln!(md, "**Score {score} / 100** (threshold {t}): {verdict}\n");
            }
            None => {
                let _ = writeln!(md, "**Score {score} / 100**: {verdict}\n");
            }
        }
        for f in &q.failures {
            let _ = writeln!(md, "- {}", text(f));
        }
        if !q.failures.is_empty() {
            md.push('\n');
        }
        if !q.conditions.is_empty() {
            md.push_str("| Condition | Verdict | Seen |\n|---|---|---|\n");
            for c in &q.conditions {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    code(&c.expr),
                    if c.passed { "holds" } else { "fails" },
                    text(&c.detail)
                );
            }
            md.push('\n');
        }
        if !q.measures.is_empty() {
            md.push_str("| Measure | Value |\n|---|---|\n");
            for (label, value) in &q.measures {
                let _ = writeln!(md, "| {} | {} |", text(label), text(value));
            }
            md.push('\n');
        }
        if !q.findings.is_empty() {
            md.push_str("| Level | Tool | Rule | Where | Message |\n|---|---|---|---|---|\n");
            for f in q.findings.iter().take(MAX_QUALITY_FINDINGS) {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    text(&f.level),
                    text(&f.tool),
                    code(&f.rule),
                    code(&f.at),
                    text(&sources::truncate(&f.message, MAX_OUTPUT_VALUE))
                );
            }
            let more =
                (q.findings.len().saturating_sub(MAX_QUALITY_FINDINGS)) as u64 + q.findings_more;
            if more > 0 {
                let _ = writeln!(md, "\n_{more} more findings are in the HTML report._");
            }
            md.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outgrow_the_backticks_inside() {
        assert_eq!(fenced("text", "a\n"), "```text\na\n```\n");
        let body = "````\n```evil\n";
        let out = fenced("text", body);
        assert!(out.starts_with("`````text\n"), "{out}");
        assert!(out.ends_with("\n`````\n"), "{out}");
    }

    #[test]
    fn inline_text_cannot_start_markup() {
        assert_eq!(
            text("<b>*x*</b> | [l](u) `c`\nnext"),
            "&lt;b&gt;\\*x\\*&lt;/b&gt; \\| \\[l\\](u) \\`c\\` next"
        );
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("x`y"), "``x`y``");
        assert_eq!(code("`y"), "`` `y ``");
    }
}
