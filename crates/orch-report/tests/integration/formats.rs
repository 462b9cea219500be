//! Markdown, JUnit, HTML and JSON of built runs: snapshots and properties.

use orch_core::RunRecord;
use orch_report::{Format, ReportError, ReportOptions, append_step_summary, write_default_reports};

use crate::fixtures::{self, Fixture};
use crate::{html_text, redacted, render_text};

fn scenarios() -> Vec<(&'static str, Fixture)> {
    vec![
        ("succeeded", fixtures::succeeded()),
        ("failed", fixtures::failed()),
        ("blocked", fixtures::blocked()),
        ("retried", fixtures::retried()),
        ("cancelled", fixtures::cancelled()),
    ]
}

#[test]
fn markdown_snapshots() {
    for (name, fx) in scenarios() {
        let md = render_text(&fx, Format::Markdown);
        redacted(&fx).bind(|| insta::assert_snapshot!(format!("markdown_{name}"), md));
    }
}

#[test]
fn junit_snapshots() {
    for (name, fx) in scenarios() {
        let xml = render_text(&fx, Format::Junit);
        redacted(&fx).bind(|| insta::assert_snapshot!(format!("junit_{name}"), xml));
    }
}

#[test]
fn html_text_snapshots() {
    for (name, fx) in scenarios() {
        let html = render_text(&fx, Format::Html);
        let text = html_text(&html);
        redacted(&fx).bind(|| insta::assert_snapshot!(format!("html_text_{name}"), text));
    }
}

#[test]
fn compliance_text_snapshots() {
    for (name, fx) in [
        ("succeeded", fixtures::succeeded()),
        ("failed", fixtures::failed()),
    ] {
        let html = render_text(&fx, Format::ComplianceHtml);
        let text = html_text(&html);
        redacted(&fx).bind(|| insta::assert_snapshot!(format!("compliance_text_{name}"), text));
    }
}

#[test]
fn markdown_log_tails_cannot_break_out_of_their_fence() {
    let fx = fixtures::failed();
    let md = render_text(&fx, Format::Markdown);
    // The log holds a line of three backticks: the fence must be longer.
    let start = md.find("````text\n").expect("a four-backtick fence");
    let body_end = md[start + 9..].find("\n````\n").expect("closing fence") + start + 9;
    let body = &md[start + 9..body_end];
    assert!(body.contains("```\n## not a heading"), "{body}");
    assert!(body.contains("<script>document.title='pwned'</script>"));
    assert!(
        body.contains("error: test failed"),
        "ANSI codes stripped: {body}"
    );
    assert!(!body.contains('\u{1b}'));
    // The tail is the last 30 lines: the first test lines are gone.
    assert_eq!(body.lines().count(), 30, "{body}");
    assert!(!body.contains("case_01 "));
    // Text outside fences is escaped.
    assert!(
        md.contains("exit status 101 &lt;b&gt;after 3 attempts&lt;/b&gt;"),
        "{md}"
    );
}

#[test]
fn html_escapes_logs_outputs_and_reasons() {
    let fx = fixtures::failed();
    let html = render_text(&fx, Format::Html);
    assert!(
        !html.contains("<script>document.title"),
        "log inlined unescaped"
    );
    assert!(html.contains("&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;&#x2f;script&gt;"));
    assert!(!html.contains("<b>after"));
    // Exactly one script element: ours, pinned by hash in the policy.
    assert_eq!(html.matches("<script").count(), 1);
    // (Quotes in the policy attribute are escaped like everything else.)
    assert!(html.contains("script-src &#x27;sha256-"));
    assert!(html.contains("default-src &#x27;none&#x27;"));
    // Self-contained: nothing is loaded from anywhere.
    for needle in ["src=\"http", "href=\"http", "@import", "url(http", "<link"] {
        assert!(!html.contains(needle), "{needle}");
    }
}

#[test]
fn html_has_one_timeline_bar_per_phase_and_marks_retries() {
    for (_, fx) in scenarios() {
        let html = render_text(&fx, Format::Html);
        assert_eq!(
            html.matches("class=\"tl-bar ").count(),
            fx.record.phases.len()
        );
    }
    let html = render_text(&fixtures::retried(), Format::Html);
    assert!(html.contains("tl-bar s-succeeded retried"));
    assert!(html.contains("↻2"));
}

#[test]
fn html_caps_logs_and_notes_it() {
    let mut b = fixtures::Builder::new("big-log", orch_core::RunStatus::Failed);
    let line = "0123456789abcdef".repeat(4);
    let log: String = (0..20_000).map(|i| format!("{i:05} {line}\n")).collect();
    b.phase("huge", "command", orch_core::PhaseStatus::Failed)
        .ran(0.0, 1.0)
        .log(&log)
        .add();
    let fx = b.finish(1.0);
    let html = render_text(&fx, Format::Html);
    assert!(html.len() < 64 * 1024, "{} bytes", html.len());
    assert!(html.contains("19999 0123"), "the end of the log is kept");
    assert!(!html.contains("00000 0123"));
    assert!(
        html.contains("(last 230 lines, 15.9 KiB of 1.4 MiB; the whole log is logs&#x2f;huge.log)")
    );
}

#[test]
fn json_is_the_record() {
    let fx = fixtures::failed();
    let json = render_text(&fx, Format::Json);
    let back: RunRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, fx.record);
    assert!(json.contains("\n  \"run_id\""), "pretty-printed");
}

#[test]
fn default_reports_are_written_into_the_run_dir() {
    let fx = fixtures::failed();
    let paths = write_default_reports(&fx.record, &fx.run_dir).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.strip_prefix(&fx.run_dir).unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["report.md", "junit.xml", "report.html"]);
    for p in &paths {
        assert!(std::fs::metadata(p).unwrap().len() > 100, "{}", p.display());
    }
    assert_eq!(
        std::fs::read_to_string(&paths[0]).unwrap(),
        render_text(&fx, Format::Markdown)
    );
}

#[test]
fn a_device_or_pipe_is_written_to_not_replaced() {
    // `orch report -o /dev/null` once replaced the device with a regular file (written
    // beside and renamed over it). A named pipe stands for any such path here.
    use std::os::unix::fs::FileTypeExt as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let reader = {
        let fifo = fifo.clone();
        // Opening blocks until the report is written into the pipe.
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let result = orch_report::write_file(&fifo, b"report text\n");
    let still_a_pipe = std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo();
    assert!(still_a_pipe, "the pipe was replaced by a file");
    result.unwrap();
    assert_eq!(reader.join().unwrap(), b"report text\n");
    assert!(!dir.path().join("pipe.tmp").exists());
}

#[test]
fn step_summaries_are_appended() {
    let fx = fixtures::retried();
    let summary = fx.dir.path().join("step_summary.md");
    std::fs::write(&summary, "previous step\n").unwrap();
    append_step_summary(&fx.record, &fx.run_dir, &summary).unwrap();
    append_step_summary(&fx.record, &fx.run_dir, &summary).unwrap();
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.starts_with("previous step\n## ✅ flaky: succeeded"));
    assert_eq!(text.matches("## ✅ flaky: succeeded").count(), 2);
    let err = append_step_summary(
        &fx.record,
        &fx.run_dir,
        &fx.dir.path().join("no/such/dir/f"),
    )
    .unwrap_err();
    assert!(matches!(err, ReportError::Write { .. }));
    assert!(err.to_string().starts_with("cannot write "), "{err}");
}

#[test]
fn formats_parse_by_name() {
    for f in Format::ALL {
        assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
    }
    assert_eq!("Markdown".parse::<Format>().unwrap(), Format::Markdown);
    let err = "docx".parse::<Format>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown report format `docx`: use one of md, junit, html, json, compliance, pdf"
    );
}

/// The rows of a large run's dashboard (its `phase-data` block).
fn phase_rows(html: &str) -> Vec<serde_json::Value> {
    let start = "<script type=\"application/json\" id=\"phase-data\">";
    let at = html.find(start).expect("a phase-data block") + start.len();
    let end = at + html[at..].find("</script>").expect("its end");
    serde_json::from_str(&html[at..end]).expect("JSON rows")
}

#[test]
fn large_runs_stay_small_and_paginated() {
    let fx = fixtures::large(2_000);
    let started = std::time::Instant::now();
    let html = render_text(&fx, Format::Html);
    let elapsed = started.elapsed();
    println!(
        "rendered 2000 phases: {} KiB of html in {elapsed:?}",
        html.len() / 1024
    );
    // Too many phases for markup: the page's script draws the timeline and builds the
    // list a page at a time from one row per phase. Phases with something rows do not
    // carry (a failure, a log inlined within the budget) keep their markup.
    let rows = phase_rows(&html);
    assert_eq!(rows.len(), 2_000);
    assert_eq!(rows[1999][0], "phase-1999");
    assert!(html.contains("timeline compact"));
    assert_eq!(html.matches("class=\"tl-bar ").count(), 0);
    let marked = rows.iter().filter(|r| r[12] == 1).count();
    assert_eq!(html.matches("<details class=\"phase ").count(), marked);
    assert!((20..1_000).contains(&marked), "{marked} phases with markup");
    assert_eq!(html.matches("\" hidden>").count(), 0);
    // Too many phases to draw the graph: a table per column instead.
    assert!(!html.contains("<svg class=\"dag\""));
    assert!(html.contains("too many to draw"));
    // At most the 2 MiB log budget, the rows and the markup of the phases with a log.
    assert!(html.len() < 4 * 1024 * 1024, "{} bytes", html.len());
    let md = render_text(&fx, Format::Markdown);
    assert!(md.contains("succeeded or skipped phases are not listed"));
    assert!(md.len() < 256 * 1024);
}

#[test]
fn a_graph_too_large_to_draw_has_a_row_per_column_naming_its_first_phases() {
    // 2,000 phases in 50 columns of 40: each row names the first 8 of its column.
    let html = render_text(&fixtures::large(2_000), Format::Html);
    let table = &html[html.find("too many to draw").expect("the column table")..];
    let table = &table[..table.find("</table>").expect("its end")];
    assert_eq!(table.matches("<tr><td class=\"num\">").count(), 50);
    let sample = |first: usize| -> String {
        (first..first + 8)
            .map(|i| format!("<a href=\"#phase-phase-{i:04}\"><code>phase-{i:04}</code></a> "))
            .collect()
    };
    for (column, first) in [(1, 0), (2, 40), (50, 1960)] {
        let row = format!(
            "<tr><td class=\"num\">{column}</td><td class=\"num\">40</td><td>{}<span class=\"muted\">and 32 more</span></td></tr>",
            sample(first)
        );
        assert!(table.contains(&row), "no row {row}");
    }
}

#[test]
fn a_large_dashboard_carries_every_phase_as_escaped_data() {
    let mut fx = fixtures::large(60);
    let hostile = "</script><script>alert(1)</script><!--";
    let p = fx.record.phases.get_mut("phase-0005").unwrap();
    p.reason = Some(hostile.to_owned());
    p.outputs.insert("k&<>".into(), hostile.into());
    let small = render_text(&fx, Format::Html);
    let mut options = ReportOptions::default();
    options.inline_phases = 50;
    options.html_log_budget = 0;
    let html = String::from_utf8(
        orch_report::render_with(&fx.record, &fx.run_dir, Format::Html, &options).unwrap(),
    )
    .unwrap();
    // The data block and the page's script end; nothing from the record ends either.
    assert_eq!(html.matches("</script>").count(), 2);
    assert!(!html.contains("<!--"));
    let rows = phase_rows(&html);
    assert_eq!(rows.len(), 60);
    let r = &rows[5];
    assert_eq!(
        (r[0].as_str(), r[7].as_str()),
        (Some("phase-0005"), Some(hostile))
    );
    assert_eq!(r[16], serde_json::json!([["k&<>", hostile]]));
    assert_eq!(r[19], "logs/phase-0005.log");
    // No failure, and no log inlined with no budget: every phase is data.
    assert_eq!(rows.iter().filter(|r| r[12] == 1).count(), 0);
    assert_eq!(html.matches("<details class=\"phase ").count(), 0);
    assert!(
        html.len() < small.len() / 2,
        "{} vs {}",
        html.len(),
        small.len()
    );
}
