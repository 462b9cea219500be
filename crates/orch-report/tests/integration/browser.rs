//! The reports in a real headless Chromium, and the PDF read back with poppler.
//!
//! When `ORCH_REQUIRE_SERVICES=1`, a missing Chromium or poppler is a failure; otherwise
//! these tests say why they skip and return.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use orch_report::{Format, ReportError, ReportOptions, render, write_reports};

use crate::fixtures;

fn required() -> bool {
    std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Chromium, or `None` (after saying why) when it is missing and not required.
fn chromium() -> Option<PathBuf> {
    match orch_report::find_chromium() {
        Some(p) => Some(p),
        None if required() => panic!(
            "chromium is required (ORCH_REQUIRE_SERVICES=1) but not on PATH: run \
             scripts/install/chromium.sh"
        ),
        None => {
            eprintln!("skipping: chromium is not installed (scripts/install/chromium.sh)");
            None
        }
    }
}

fn poppler() -> bool {
    let found = ["pdftoppm", "pdftotext", "pdfinfo"].iter().all(|tool| {
        Command::new(tool)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !found && required() {
        panic!(
            "poppler-utils are required (ORCH_REQUIRE_SERVICES=1) but missing: run \
             scripts/install/chromium.sh"
        );
    }
    if !found {
        eprintln!("skipping: poppler-utils are not installed (scripts/install/chromium.sh)");
    }
    found
}

/// Runs a command to completion within `limit`, polling; kills it past the deadline.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

/// A headless Chromium command with a fresh profile.
fn headless(chromium: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(chromium);
    cmd.args(orch_report::pdf::headless_args(profile));
    cmd
}

fn dump_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = headless(chromium, profile.path());
    cmd.args(["--virtual-time-budget=5000", "--dump-dom", url]);
    let out = run(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn screenshot(chromium: &Path, url: &str, png: &Path, size: (u32, u32)) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = headless(chromium, profile.path());
    cmd.arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .args(["--hide-scrollbars", "--virtual-time-budget=5000", url]);
    let out = run(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Width and height from a PNG's header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a png");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn dashboard_of_a_failed_run_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let fx = fixtures::failed();
    let paths = orch_report::write_default_reports(&fx.record, &fx.run_dir).unwrap();
    let html_path = &paths[2];
    let url = orch_report::pdf::file_url(html_path);

    let dom = dump_dom(&chromium, &url);
    // Our script ran (so scripts were enabled) ...
    assert!(
        dom.contains("data-ready=\"1\""),
        "the dashboard's script did not run"
    );
    // ... and the one in the log did not: the title is the report's own.
    let title = &dom[dom.find("<title>").unwrap() + 7..dom.find("</title>").unwrap()];
    assert_eq!(title, format!("nexus-cos: failed ({})", fx.record.run_id));
    assert!(!dom.contains("pwned</title>"));
    assert!(!dom.contains("<script>document.title"));
    // The log line is there, as text.
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "the failed phase's log is not in the page"
    );
    // One timeline bar per phase.
    assert_eq!(
        dom.matches("class=\"tl-bar ").count(),
        fx.record.phases.len()
    );
    // The failed phase's details are open, the page list shows every phase.
    assert!(dom.contains("id=\"phase-unit\" data-id=\"unit\" data-kind=\"command\" data-status=\"failed\" data-class=\"failed\" data-problem=\"1\" open"));
    assert!(dom.contains("1–6 of 6"), "pager text set by the script");

    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("dashboard.png");
    screenshot(&chromium, &url, &png, (1280, 1600));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&bytes), (1280, 1600));
    assert!(
        bytes.len() > 40_000,
        "a blank page is much smaller: {}",
        bytes.len()
    );
    crate::preview("dashboard-failed.png", &bytes);
    if std::env::var("ORCH_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("dashboard-failed.png"), &bytes).unwrap();
    }
}

#[test]
fn dashboard_filters_and_pages_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let fx = fixtures::large(250);
    let paths = write_reports(
        &fx.record,
        &fx.run_dir,
        &[Format::Html],
        &fx.run_dir,
        &ReportOptions::default(),
    )
    .unwrap();
    // Linking to a phase on the third page shows that page and opens it.
    let url = format!("{}#phase-phase-0230", orch_report::pdf::file_url(&paths[0]));
    let dom = dump_dom(&chromium, &url);
    assert!(
        dom.contains("201–250 of 250"),
        "pager moved to the phase's page"
    );
    let visible = dom
        .split("<details class=\"phase ")
        .skip(1)
        .filter(|d| !d[..d.find('>').unwrap()].contains(" hidden"))
        .count();
    assert_eq!(visible, 50);
    assert!(dom.contains("id=\"phase-phase-0230\" data-id=\"phase-0230\" data-kind=\"command\" data-status=\"succeeded\" data-class=\"succeeded\" data-problem=\"0\" open"));
}

#[test]
fn a_large_dashboard_pages_from_its_data_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let fx = fixtures::large(250);
    let mut options = ReportOptions::default();
    options.inline_phases = 100;
    options.html_log_budget = 0;
    let paths = write_reports(
        &fx.record,
        &fx.run_dir,
        &[Format::Html],
        &fx.run_dir,
        &options,
    )
    .unwrap();
    // The timeline is drawn from the data; linking to a phase on the third page builds
    // that page and opens the phase.
    let url = format!("{}#phase-phase-0230", orch_report::pdf::file_url(&paths[0]));
    let dom = dump_dom(&chromium, &url);
    assert_eq!(dom.matches("class=\"tl-bar ").count(), 250);
    assert!(
        dom.contains("201–250 of 250"),
        "pager moved to the phase's page"
    );
    assert_eq!(dom.matches("<details class=\"phase ").count(), 50);
    assert!(dom.contains("id=\"phase-phase-0230\" data-id=\"phase-0230\" data-kind=\"command\" data-status=\"succeeded\" data-class=\"succeeded\" data-problem=\"0\" open"));
    assert!(dom.contains("<code>logs/phase-0230.log</code>"));
    // The failure of the second page keeps its markup, and its page shows it.
    let url = format!("{}#phase-phase-0193", orch_report::pdf::file_url(&paths[0]));
    let dom = dump_dom(&chromium, &url);
    assert!(
        dom.contains("101–200 of 250"),
        "pager moved to the failure's page"
    );
    assert!(dom.contains("failed, allowed"));
}

#[test]
fn compliance_pdf_pages_and_text() {
    let Some(_) = chromium() else { return };
    if !poppler() {
        return;
    }
    let fx = fixtures::succeeded();
    let pdf = render(&fx.record, &fx.run_dir, Format::Pdf).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let dir = tempfile::tempdir().unwrap();
    let pdf_path = dir.path().join("compliance.pdf");
    std::fs::write(&pdf_path, &pdf).unwrap();
    crate::preview("compliance.pdf", &pdf);

    let mut cmd = Command::new("pdftoppm");
    cmd.args(["-png", "-r", "60"])
        .arg(&pdf_path)
        .arg(dir.path().join("page"));
    let out = run(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pages.sort();
    // With Debian's DejaVu fonts the content fills four A4 pages; the sign-off starts a
    // page of its own.
    assert_eq!(pages.len(), 5, "{pages:?}");
    for (i, page) in pages.iter().enumerate() {
        let bytes = std::fs::read(page).unwrap();
        let (w, h) = png_size(&bytes);
        // A4 at 60 dpi: 496 x 702.
        assert_eq!((w, h), (496, 702), "page {}", i + 1);
        crate::preview(&format!("compliance-page-{}.png", i + 1), &bytes);
    }

    let text = |first: usize, last: usize| {
        let mut cmd = Command::new("pdftotext");
        cmd.args(["-f", &first.to_string(), "-l", &last.to_string()])
            .arg(&pdf_path)
            .arg("-");
        let out = run(cmd, Duration::from_secs(60));
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let first = text(1, 1);
    for needle in [
        "RELEASE COMPLIANCE REPORT",
        "nexus-cos",
        fx.record.run_id.as_str(),
        "Run succeeded; 1 of 1 gates passed; 5 of 7 tests passed",
        "9f2c1e4b7a0d5c3e8f1a2b3c4d5e6f708192a3b4",
        "v1.2.0",
    ] {
        assert!(first.contains(needle), "page 1 lacks {needle:?}:\n{first}");
    }
    // Long values wrap in table cells: compare without whitespace.
    let all: String = text(1, pages.len()).split_whitespace().collect();
    for needle in [
        "83.3%parity",
        "payments-*",
        "test_refund",
        "sha256:4b1d3e7e0c6f0a1f5b2e9d8c7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "release-gate",
    ] {
        assert!(all.contains(needle), "the pdf lacks {needle:?}:\n{all}");
    }
    let last = text(pages.len(), pages.len());
    assert!(last.contains("10. Sign-off"), "{last}");
    assert!(last.contains("Release manager"));
    assert!(!text(1, pages.len() - 1).contains("Release manager"));
}

#[test]
fn the_report_phase_prints_a_pdf_beside_its_html() {
    let Some(_) = chromium() else { return };
    let fx = fixtures::failed();
    let out = fx.dir.path().join("reports");
    let paths = write_reports(
        &fx.record,
        &fx.run_dir,
        &[Format::Pdf, Format::Markdown],
        &out,
        &ReportOptions::default(),
    )
    .unwrap();
    assert_eq!(
        paths,
        [
            out.join("report.md"),
            out.join("compliance.html"),
            out.join("compliance.pdf")
        ]
    );
    assert!(std::fs::read(&paths[2]).unwrap().starts_with(b"%PDF-"));
}

#[test]
fn without_chromium_the_pdf_fails_clearly_and_the_html_is_written() {
    let fx = fixtures::succeeded();
    let out = fx.dir.path().join("reports");
    let mut options = ReportOptions::default();
    options.chromium = Some(fx.dir.path().join("no-chromium-here"));
    let err = write_reports(&fx.record, &fx.run_dir, &[Format::Pdf], &out, &options).unwrap_err();
    let html = out.join("compliance.html");
    assert!(html.is_file());
    assert!(matches!(err, ReportError::ChromiumMissing { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "cannot print the pdf: chromium is not installed (looked for {}; install Debian's \
             `chromium`, e.g. with scripts/install/chromium.sh); the compliance html is at {}",
            fx.dir.path().join("no-chromium-here").display(),
            html.display()
        )
    );
}

/// Renders a 2,000-phase run and measures how long Chromium takes to load the dashboard.
/// Runs when `ORCH_REPORT_BENCH=1` (see benches/report_2000.sh).
#[test]
fn bench_dashboard_of_2000_phases() {
    if std::env::var("ORCH_REPORT_BENCH").map_or(true, |v| v != "1") {
        eprintln!("skipping: set ORCH_REPORT_BENCH=1 to run the 2,000-phase benchmark");
        return;
    }
    let Some(chromium) = chromium() else { return };
    let fx = fixtures::large(2_000);
    let started = Instant::now();
    let html = render(&fx.record, &fx.run_dir, Format::Html).unwrap();
    let render_time = started.elapsed();
    let path = fx.run_dir.join("report.html");
    std::fs::write(&path, &html).unwrap();
    crate::preview("report-2000.html", &html);
    let blank = fx.run_dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><title>blank</title>").unwrap();

    let mut in_page = Vec::new();
    let mut wall = Vec::new();
    let mut wall_blank = Vec::new();
    for _ in 0..3 {
        for (target, times) in [(&blank, &mut wall_blank), (&path, &mut wall)] {
            let profile = tempfile::tempdir().unwrap();
            let mut cmd = headless(&chromium, profile.path());
            cmd.args(["--dump-dom"])
                .arg(orch_report::pdf::file_url(target));
            let t = Instant::now();
            let out = run(cmd, Duration::from_secs(60));
            times.push(t.elapsed());
            assert!(out.status.success());
            if target == &path {
                let dom = String::from_utf8(out.stdout).unwrap();
                let at = dom.find("data-load-ms=\"").expect("load time recorded") + 14;
                let ms: u64 = dom[at..at + dom[at..].find('"').unwrap()].parse().unwrap();
                assert_eq!(dom.matches("class=\"tl-bar ").count(), 2_000);
                in_page.push(ms);
            }
        }
    }
    in_page.sort_unstable();
    wall.sort();
    wall_blank.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    println!(
        "2000 phases: html {} KiB rendered in {render_time:?}; chromium load event at {} ms \
         (median of {:?} ms); chromium wall {:?} vs {:?} for a blank page",
        html.len() / 1024,
        in_page[1],
        in_page,
        median(&wall),
        median(&wall_blank),
    );
    assert!(in_page[1] < 2_000, "the dashboard loads in under 2 s");
}
