//! The HTML dashboard and the compliance report, rendered with minijinja (HTML
//! auto-escaping on: every value from records, logs and outputs is escaped).

use std::path::Path;

use base64::Engine as _;
use minijinja::value::Serde;
use minijinja::{Environment, Value};
use orch_core::{PhaseStatus, RunRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dag::{self, LayerTable, Layout};
use crate::errors::ReportError;
use crate::junit::{self, FailingCase, TestCounts, TestFile};
use crate::sources::{self, JsonDoc};
use crate::view::{ArtifactView, PhaseView, RunView};
use crate::{ReportOptions, logs, time};

const DASHBOARD: &str = include_str!("../templates/dashboard.html");
const COMPLIANCE: &str = include_str!("../templates/compliance.html");
const MACROS: &str = include_str!("../templates/macros.html");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const COMPLIANCE_CSS: &str = include_str!("../assets/compliance.css");

/// Above this many phases the timeline is drawn compact (thin rows, no labels).
const COMPACT_TIMELINE: usize = 150;
/// At most this many failures are listed under the dashboard's header.
const MAX_FAILURES_LISTED: usize = 20;
/// At most this many failing test cases are listed.
const MAX_FAILING_CASES: usize = 100;
/// The compliance report lists every phase up to this many, then only the ones that did
/// not succeed.
const COMPLIANCE_ALL_PHASES: usize = 200;

fn environment() -> Result<Environment<'static>, ReportError> {
    let mut env = Environment::new();
    // The table of a graph's columns (thousands of rows for a long chain) is written by its
    // own code, straight into the page; every other value is escaped as usual.
    env.set_formatter(|out, state, value| match LayerTable::of(value) {
        Some(table) => table.write_rows(out).map_err(minijinja::Error::from),
        None => minijinja::escape_formatter(out, state, value),
    });
    // Names end in `.html`: auto-escaping is on for all of them.
    for (name, source) in [
        ("macros.html", MACROS),
        ("dashboard.html", DASHBOARD),
        ("compliance.html", COMPLIANCE),
    ] {
        env.add_template(name, source)
            .map_err(|source| ReportError::Template {
                template: name,
                source,
            })?;
    }
    Ok(env)
}

/// The `script-src` hash of an inline script for the Content Security Policy.
fn csp_hash(script: &str) -> String {
    let digest = Sha256::digest(script.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// A phase of the dashboard: the view plus its log and tests.
#[derive(Clone, Debug, Serialize)]
struct DashPhase<'a> {
    #[serde(flatten)]
    view: &'a PhaseView<'a>,
    log: Option<LogView>,
    open: bool,
    problem: bool,
    tests: Option<TestCounts>,
}

/// A log as the dashboard inlines it.
#[derive(Clone, Debug, Serialize)]
struct LogView {
    rel_path: String,
    /// The text, or none when the report's log budget was spent.
    text: Option<String>,
    /// `last 16.0 KiB of 1.2 MiB`, or why it is not inlined.
    note: String,
}

/// Test results, from the phases' JUnit files.
#[derive(Clone, Debug, Serialize)]
struct TestsView {
    totals: TestCounts,
    files: Vec<TestFileView>,
    failing: Vec<FailingCase>,
    failing_more: usize,
}

#[derive(Clone, Debug, Serialize)]
struct TestFileView {
    phase: String,
    path: String,
    counts: Option<TestCounts>,
    error: Option<String>,
}

/// A `discover` or `parity` phase with its outputs and report.
#[derive(Clone, Debug, Serialize)]
struct KindSection {
    phase: String,
    status: &'static str,
    class: &'static str,
    outputs: Vec<(String, String)>,
    doc: Option<JsonDoc>,
    /// `parity_percent` as a number, for the bar.
    percent: Option<String>,
}

/// A gate and its verdict.
#[derive(Clone, Debug, Serialize)]
struct GateView {
    phase: String,
    verdict: &'static str,
    class: &'static str,
    reason: Option<String>,
    description: Option<String>,
}

/// A value from a git phase.
#[derive(Clone, Debug, Serialize)]
struct GitFact {
    phase: String,
    kind: String,
    key: String,
    value: String,
}

/// A digest or checksum published as an output.
#[derive(Clone, Debug, Serialize)]
struct Checksum {
    phase: String,
    kind: String,
    key: String,
    value: String,
}

fn tests_view(files: &[TestFile]) -> Option<TestsView> {
    if files.is_empty() {
        return None;
    }
    let mut totals = TestCounts::default();
    let mut failing = Vec::new();
    let views = files
        .iter()
        .map(|f| {
            let counts = f.report.is_ok().then(|| f.counts());
            if let Some(c) = counts {
                totals.add(c);
            }
            failing.extend(f.failing());
            TestFileView {
                phase: f.phase.clone(),
                path: f.path.clone(),
                counts,
                error: f.report.as_ref().err().cloned(),
            }
        })
        .collect();
    let failing_more = failing.len().saturating_sub(MAX_FAILING_CASES);
    failing.truncate(MAX_FAILING_CASES);
    Some(TestsView {
        totals,
        files: views,
        failing,
        failing_more,
    })
}

fn kind_sections(record: &RunRecord, run_dir: &Path, kind: &str) -> Vec<KindSection> {
    let mut docs = sources::json_reports(record, run_dir, kind);
    record
        .phases
        .iter()
        .filter(|(_, p)| p.kind == kind)
        .map(|(id, p)| {
            let doc = docs
                .iter()
                .position(|d| d.phase == id.as_str())
                .map(|i| docs.remove(i));
            KindSection {
                phase: id.to_string(),
                status: p.status.as_str(),
                class: crate::view::status_class(p),
                outputs: p
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), sources::truncate(v, 300)))
                    .collect(),
                doc,
                percent: p
                    .outputs
                    .get("parity_percent")
                    .and_then(|v| v.trim().trim_end_matches('%').parse::<f64>().ok())
                    .map(|v| format!("{:.1}", v.clamp(0.0, 100.0))),
            }
        })
        .collect()
}

fn gates(record: &RunRecord) -> Vec<GateView> {
    record
        .phases
        .iter()
        .filter(|(_, p)| p.kind == "gate")
        .map(|(id, p)| {
            let (verdict, class) = match p.status {
                PhaseStatus::Succeeded => ("passed", "succeeded"),
                PhaseStatus::Failed | PhaseStatus::TimedOut if p.allowed_failure => {
                    ("failed (allowed)", "allowed")
                }
                PhaseStatus::Failed | PhaseStatus::TimedOut => ("failed", "failed"),
                PhaseStatus::Cancelled => ("not evaluated (cancelled)", "cancelled"),
                PhaseStatus::Skipped => ("not evaluated (skipped)", "skipped"),
                PhaseStatus::Blocked => ("not evaluated (blocked)", "blocked"),
                PhaseStatus::Running => ("being evaluated", "running"),
            };
            GateView {
                phase: id.to_string(),
                verdict,
                class,
                reason: p.reason.clone(),
                description: p.description.clone(),
            }
        })
        .collect()
}

fn git_facts(record: &RunRecord) -> Vec<GitFact> {
    let mut out = Vec::new();
    for (id, p) in &record.phases {
        let keys: &[&str] = match p.kind.as_str() {
            "git.inventory" => &["head", "branch", "dirty", "latest_tag"],
            "git.tag" => &["tag", "commit"],
            "git.snapshot" => &["snapshot", "ref"],
            _ => continue,
        };
        for key in keys {
            if let Some(v) = p.outputs.get(*key) {
                out.push(GitFact {
                    phase: id.to_string(),
                    kind: p.kind.to_string(),
                    key: (*key).to_owned(),
                    value: sources::truncate(v, 200),
                });
            }
        }
    }
    out
}

fn checksums(record: &RunRecord) -> Vec<Checksum> {
    let mut out = Vec::new();
    for (id, p) in &record.phases {
        for (k, v) in &p.outputs {
            if matches!(k.as_str(), "sha256" | "digest" | "image_id" | "checksum") {
                out.push(Checksum {
                    phase: id.to_string(),
                    kind: p.kind.to_string(),
                    key: k.clone(),
                    value: sources::truncate(v, 200),
                });
            }
        }
    }
    out
}

/// Attaches logs to phases within the options' budgets: failures first.
fn dash_phases<'a>(
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    view: &'a RunView<'a>,
    files: &[TestFile],
) -> Vec<DashPhase<'a>> {
    let mut phases: Vec<DashPhase<'a>> = view
        .phases
        .iter()
        .map(|p| {
            let problem = !matches!(p.status, "succeeded" | "skipped");
            let mut tests: Option<TestCounts> = None;
            for f in files.iter().filter(|f| f.phase == p.id && f.report.is_ok()) {
                tests
                    .get_or_insert_with(TestCounts::default)
                    .add(f.counts());
            }
            DashPhase {
                view: p,
                log: None,
                open: matches!(p.status, "failed" | "timed_out") && !p.allowed_failure,
                problem,
                tests,
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..phases.len()).collect();
    order.sort_by_key(|&i| !phases[i].problem);
    let mut budget = options.html_log_budget;
    let names = logs::LogNames::read(run_dir);
    for i in order {
        let id = phases[i].view.id;
        let Some(rec) = record.phases.get(id) else {
            continue;
        };
        let Some((_, rel_path)) = names.log_path(run_dir, id, rec) else {
            continue;
        };
        let max = options.html_log_bytes.min(budget);
        if max < 256 {
            let size = std::fs::metadata(run_dir.join(&rel_path)).map_or(0, |m| m.len());
            phases[i].log = Some(LogView {
                note: format!(
                    "{} not inlined (the report's log budget of {} is spent); see {rel_path}",
                    time::size(size),
                    time::size(options.html_log_budget)
                ),
                rel_path,
                text: None,
            });
            continue;
        }
        if let Some(tail) = logs::tail_bytes(run_dir, id, rec, max) {
            budget = budget.saturating_sub(tail.text.len() as u64);
            let note = if tail.truncated {
                format!(
                    "last {} lines, {} of {}; the whole log is {rel_path}",
                    tail.lines,
                    time::size(tail.text.len() as u64),
                    time::size(tail.total_bytes)
                )
            } else {
                format!(
                    "{} line{}, {}",
                    tail.lines,
                    if tail.lines == 1 { "" } else { "s" },
                    time::size(tail.total_bytes)
                )
            };
            phases[i].log = Some(LogView {
                rel_path,
                text: Some(tail.text),
                note,
            });
        }
    }
    phases
}

/// Whether a phase of a large run keeps its markup: it has something rows do not carry.
fn has_markup(p: &DashPhase<'_>) -> bool {
    p.problem
        || p.log.as_ref().is_some_and(|l| l.text.is_some())
        || p.tests.is_some()
        || !p.view.artifacts.is_empty()
}

/// What a phase's row says beside its view.
struct RowExtra {
    /// Its element is in the page (a phase with a problem, an inlined log, artifacts or
    /// tests).
    markup: bool,
    /// Its log file, relative to the run directory.
    log: Option<String>,
}

/// Appends `text` as a JSON string that can stand inside a `<script>` element: escaped as
/// `serde_json` escapes strings, and `<`, `>` and `&` written `\u003c`, `\u003e` and
/// `\u0026`, which JSON reads back as they were.
fn push_json_str(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            b'<' => "\\u003c",
            b'>' => "\\u003e",
            b'&' => "\\u0026",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Appends a value shown as text (a time, a duration, a percentage) as a JSON string: its
/// text has nothing to escape (digits, letters, spaces, `.`, `:`, `-`, `+`) unless it is a
/// record's own text that is not a time, which is escaped.
fn push_json_shown(out: &mut String, scratch: &mut String, push: impl FnOnce(&mut String)) {
    scratch.clear();
    push(scratch);
    push_json_str(out, scratch);
}

fn push_json_opt_str(out: &mut String, text: Option<&str>) {
    match text {
        Some(t) => push_json_str(out, t),
        None => out.push_str("null"),
    }
}

/// Appends the row of one phase, as the dashboard's script reads it when the run is too
/// large for markup: a JSON array (keys would double its size), in the order
/// `assets/dashboard.js` reads it.
fn push_row(out: &mut String, scratch: &mut String, v: &PhaseView<'_>, extra: &RowExtra) {
    out.push('[');
    push_json_str(out, v.id);
    out.push(',');
    push_json_str(out, v.kind);
    out.push(',');
    push_json_str(out, v.class);
    out.push(',');
    push_json_str(out, &v.label);
    out.push(',');
    time::push_u64(out, u64::from(v.attempts));
    out.push(',');
    match v.exit_code {
        Some(code) => {
            if code < 0 {
                out.push('-');
            }
            time::push_u64(out, u64::from(code.unsigned_abs()));
        }
        None => out.push_str("null"),
    }
    out.push(',');
    match v.duration {
        Some(d) => push_json_shown(out, scratch, |s| d.push(s)),
        None => out.push_str("null"),
    }
    out.push(',');
    push_json_opt_str(out, v.reason);
    out.push_str(",[");
    for (i, need) in v.needs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, need.as_str());
    }
    out.push_str("],");
    push_json_shown(out, scratch, |s| v.left.push(s));
    out.push(',');
    push_json_shown(out, scratch, |s| v.width.push(s));
    out.push_str(if v.ran { ",1," } else { ",0," });
    out.push_str(if extra.markup { "1," } else { "0," });
    for time in [v.started, v.finished] {
        match time {
            Some(t) => push_json_shown(out, scratch, |s| t.push(s)),
            None => out.push_str("null"),
        }
        out.push(',');
    }
    out.push('[');
    for (i, tag) in v.tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, tag);
    }
    out.push_str("],[");
    for (i, (key, value)) in v.outputs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_json_str(out, key);
        out.push(',');
        push_json_str(out, value);
        out.push(']');
    }
    out.push_str("],");
    push_json_opt_str(out, v.description);
    out.push(',');
    push_json_str(out, v.status);
    out.push(',');
    push_json_opt_str(out, extra.log.as_deref());
    out.push(']');
}

/// Writes the rows of every phase as a JSON array that can stand inside a `<script>`
/// element, a buffer at a time (never the whole array in memory).
fn phase_data(
    view: &RunView<'_>,
    rows: &[RowExtra],
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let write = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        let mut buf = String::with_capacity(64 * 1024);
        let mut scratch = String::new();
        buf.push('[');
        for (i, (view, extra)) in view.phases.iter().zip(rows).enumerate() {
            if i > 0 {
                buf.push(',');
            }
            push_row(&mut buf, &mut scratch, view, extra);
            if buf.len() >= 32 * 1024 {
                out.write_all(buf.as_bytes())?;
                buf.clear();
            }
        }
        buf.push(']');
        out.write_all(buf.as_bytes())
    };
    write(out).map_err(|e| ReportError::Template {
        template: "dashboard.html",
        source: minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()),
    })
}

#[derive(Serialize)]
struct DashboardContext<'a> {
    run: &'a RunView<'a>,
    ok: bool,
    /// Failed and timed-out phases, for the box under the header.
    failures: Vec<&'a PhaseView<'a>>,
    failures_more: usize,
    phases: Vec<DashPhase<'a>>,
    compact: bool,
    page_size: usize,
    /// Above `inline_phases`: every phase is written as data (see [`PhaseRow`]) after the
    /// page's markup, and `phases` holds only those whose element is in the page.
    data: bool,
    dag: Option<Layout>,
    /// A [`LayerTable`]: its rows are written as the template prints it.
    dag_summary: Value,
    tests: Option<TestsView>,
    discovery: Vec<KindSection>,
    parity: Vec<KindSection>,
    gates: Vec<GateView>,
    quality: Vec<crate::quality::QualityView>,
    secrets: Vec<crate::quality::SecretsView>,
    artifacts: Vec<ArtifactView>,
    checksums: Vec<Checksum>,
    version: &'static str,
}

/// Renders the dashboard.
/// Renders the dashboard into `out`, as it is rendered (a dashboard of 10k phases is some
/// MB of text).
pub(crate) fn dashboard(
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let view = RunView::new(record);
    let files = junit::collect(record, run_dir);
    let mut phases = dash_phases(record, run_dir, options, &view, &files);
    let data = view.phases.len() > options.inline_phases;
    // With data, only the phases with markup are given to the template; the rows of all of
    // them are written between its two parts.
    let rows: Vec<RowExtra> = if data {
        phases
            .iter()
            .map(|p| RowExtra {
                markup: has_markup(p),
                log: p.log.as_ref().map(|l| l.rel_path.clone()),
            })
            .collect()
    } else {
        Vec::new()
    };
    if data {
        // Most phases of a large run have no markup: their room goes back before the graph's
        // columns are worked out.
        phases.retain(has_markup);
        phases.shrink_to_fit();
    }
    let (dag, dag_summary) = if view.phases.len() <= options.dag_max_phases {
        (Some(dag::layout(&view.phases)), LayerTable::default())
    } else {
        // The view's phases are the record's, in its order.
        let find = |id: &orch_core::PhaseId| {
            record
                .phases
                .get_index_of(id)
                .and_then(|i| u32::try_from(i).ok())
        };
        (None, LayerTable::new(&view.phases, find))
    };
    let dag_summary = Value::from_object(dag_summary);
    let mut failures: Vec<&PhaseView<'_>> = view
        .phases
        .iter()
        .filter(|p| matches!(p.status, "failed" | "timed_out"))
        .collect();
    let failures_more = failures.len().saturating_sub(MAX_FAILURES_LISTED);
    failures.truncate(MAX_FAILURES_LISTED);
    let ctx = DashboardContext {
        ok: crate::view::run_ok(record.status),
        failures,
        failures_more,
        compact: view.phases.len() > COMPACT_TIMELINE,
        page_size: options.page_size.max(1),
        data,
        artifacts: view.artifacts(),
        run: &view,
        phases,
        dag,
        dag_summary,
        tests: tests_view(&files),
        discovery: kind_sections(record, run_dir, "discover"),
        parity: kind_sections(record, run_dir, "parity"),
        gates: gates(record),
        quality: crate::quality::sections(record, run_dir),
        secrets: crate::quality::secrets(record),
        checksums: checksums(record),
        version: env!("CARGO_PKG_VERSION"),
    };
    let write_data = |out: &mut dyn std::io::Write| phase_data(&view, &rows, out);
    render_template(
        "dashboard.html",
        Value::from(Serde(&ctx)),
        DASHBOARD_CSS,
        Some(DASHBOARD_JS),
        data.then_some(&write_data as &WriteData<'_>),
        out,
    )
}

#[derive(Serialize)]
struct ComplianceContext<'a> {
    run: RunView<'a>,
    ok: bool,
    phases: Vec<PhaseView<'a>>,
    phases_omitted: usize,
    tests: Option<TestsView>,
    discovery: Vec<KindSection>,
    parity: Vec<KindSection>,
    gates: Vec<GateView>,
    quality: Vec<crate::quality::QualityView>,
    secrets: Vec<crate::quality::SecretsView>,
    git: Vec<GitFact>,
    artifacts: Vec<ArtifactView>,
    checksums: Vec<Checksum>,
    revision: Option<String>,
    tag: Option<String>,
    policy: Vec<PolicyRow>,
    audit: Option<orch_core::record::AuditHead>,
    deployments: Vec<crate::deploy::DeploymentView>,
    version: &'static str,
}

/// One phase's policy decision, as the compliance report lists it.
#[derive(Serialize)]
struct PolicyRow {
    phase: String,
    allowed: bool,
    why: String,
}

/// The decisions `[policy]` made, in phase order.
fn policy_rows(record: &RunRecord) -> Vec<PolicyRow> {
    record
        .phases
        .iter()
        .filter_map(|(id, p)| {
            let v = p.policy.as_ref()?;
            let why = match &v.error {
                Some(e) => e.clone(),
                None if !v.deny.is_empty() => v.deny.join("; "),
                None if v.allowed => String::new(),
                None => "`data.orch.allow` is not true".to_owned(),
            };
            Some(PolicyRow {
                phase: id.to_string(),
                allowed: v.allowed,
                why,
            })
        })
        .collect()
}

/// Renders the compliance report into `out`.
pub(crate) fn compliance(
    record: &RunRecord,
    run_dir: &Path,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let view = RunView::new(record);
    let files = junit::collect(record, run_dir);
    let git = git_facts(record);
    let find = |keys: &[&str]| {
        git.iter()
            .find(|f| keys.contains(&f.key.as_str()))
            .map(|f| f.value.clone())
    };
    let phases: Vec<PhaseView<'_>> = if view.phases.len() <= COMPLIANCE_ALL_PHASES {
        view.phases.clone()
    } else {
        view.phases
            .iter()
            .filter(|p| !matches!(p.status, "succeeded" | "skipped"))
            .cloned()
            .collect()
    };
    let ctx = ComplianceContext {
        ok: crate::view::run_ok(record.status),
        phases_omitted: view.phases.len() - phases.len(),
        phases,
        artifacts: view.artifacts(),
        tests: tests_view(&files),
        discovery: kind_sections(record, run_dir, "discover"),
        parity: kind_sections(record, run_dir, "parity"),
        gates: gates(record),
        quality: crate::quality::sections(record, run_dir),
        secrets: crate::quality::secrets(record),
        revision: find(&["commit", "head", "snapshot"]),
        tag: find(&["tag"]).or_else(|| find(&["latest_tag"])),
        git,
        checksums: checksums(record),
        policy: policy_rows(record),
        audit: record.audit.clone(),
        deployments: crate::deploy::sections(record, run_dir),
        run: view,
        version: env!("CARGO_PKG_VERSION"),
    };
    render_template(
        "compliance.html",
        Value::from(Serde(&ctx)),
        COMPLIANCE_CSS,
        None,
        None,
        out,
    )
}

/// Writes a page's data between its two parts (see [`render_template`]).
type WriteData<'a> = dyn Fn(&mut dyn std::io::Write) -> Result<(), ReportError> + 'a;

/// Renders template `name` into `out`. With `data`, the template is rendered in two parts
/// (`tail` false, then true) and `data` writes between them: a large run's phase rows go
/// to the file as they are serialized, never whole in memory.
fn render_template(
    name: &'static str,
    ctx: Value,
    css: &str,
    script: Option<&str>,
    data: Option<&WriteData<'_>>,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let env = environment()?;
    let template = env
        .get_template(name)
        .map_err(|source| ReportError::Template {
            template: name,
            source,
        })?;
    // Only this crate's script may run: the policy names its hash, and nothing may load.
    let script_src = script.map_or_else(|| "'none'".to_owned(), csp_hash);
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src {script_src}; \
         base-uri 'none'; form-action 'none'"
    );
    let full = |tail: bool| {
        minijinja::context! {
            css => Value::from_safe_string(css.to_owned()),
            script => match script {
                Some(s) => Value::from_safe_string(s.to_owned()),
                None => Value::from(()),
            },
            csp => csp.clone(),
            tail => tail,
            ..ctx.clone()
        }
    };
    let render = |tail: bool, out: &mut dyn std::io::Write| {
        template
            .render_captured_to(full(tail), out)
            .map(drop)
            .map_err(|source| ReportError::Template {
                template: name,
                source,
            })
    };
    render(false, &mut *out)?;
    if let Some(data) = data {
        data(&mut *out)?;
        render(true, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows as they were written before they were written directly: serialized by
    /// `serde_json` through a writer that escapes `<`, `>` and `&`.
    mod reference {
        use serde::Serialize;

        use super::super::RowExtra;
        use crate::view::{PhaseView, RunView};

        /// One phase as the dashboard's script reads it, when the run is too large for markup: a
        /// JSON array (keys would double its size), in the order `assets/dashboard.js` reads it.
        struct PhaseRow<'a> {
            view: &'a PhaseView<'a>,
            /// Its element is in the page (a phase with a problem, an inlined log, artifacts or
            /// tests).
            markup: bool,
            /// Its log file, relative to the run directory.
            log: Option<&'a str>,
        }

        impl Serialize for PhaseRow<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple as _;
                let v = self.view;
                let mut t = s.serialize_tuple(20)?;
                t.serialize_element(&v.id)?;
                t.serialize_element(&v.kind)?;
                t.serialize_element(v.class)?;
                t.serialize_element(&v.label)?;
                t.serialize_element(&v.attempts)?;
                t.serialize_element(&v.exit_code)?;
                t.serialize_element(&v.duration)?;
                t.serialize_element(&v.reason)?;
                t.serialize_element(&v.needs)?;
                t.serialize_element(&v.left)?;
                t.serialize_element(&v.width)?;
                t.serialize_element(&u8::from(v.ran))?;
                t.serialize_element(&u8::from(self.markup))?;
                t.serialize_element(&v.started)?;
                t.serialize_element(&v.finished)?;
                t.serialize_element(&v.tags)?;
                t.serialize_element(&v.outputs)?;
                t.serialize_element(&v.description)?;
                t.serialize_element(v.status)?;
                t.serialize_element(&self.log)?;
                t.end()
            }
        }

        /// Every phase's row, serialized one after another (never a whole array in memory).
        struct PhaseRows<'a> {
            view: &'a RunView<'a>,
            rows: &'a [RowExtra],
        }

        impl Serialize for PhaseRows<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(
                    self.view
                        .phases
                        .iter()
                        .zip(self.rows)
                        .map(|(view, r)| PhaseRow {
                            view,
                            markup: r.markup,
                            log: r.log.as_deref(),
                        }),
                )
            }
        }

        /// A writer that passes JSON text on with `<`, `>` and `&` escaped (`\\u003c`...), which
        /// JSON reads back as they were: the text can then stand inside a `<script>` element. JSON
        /// has these characters inside strings only, and they are ASCII: escaping bytes is exact.
        struct ScriptSafe<'w>(&'w mut dyn std::io::Write);

        impl std::io::Write for ScriptSafe<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let mut start = 0;
                for (i, b) in buf.iter().enumerate() {
                    let escaped: &[u8] = match b {
                        b'<' => b"\\u003c",
                        b'>' => b"\\u003e",
                        b'&' => b"\\u0026",
                        _ => continue,
                    };
                    self.0.write_all(&buf[start..i])?;
                    self.0.write_all(escaped)?;
                    start = i + 1;
                }
                self.0.write_all(&buf[start..])?;
                Ok(buf.len())
            }

            fn flush(&mut self) -> std::io::Result<()> {
                self.0.flush()
            }
        }

        /// Writes the rows of every phase as a JSON array that can stand inside a `<script>`
        /// element, as they are serialized.
        pub(super) fn phase_data(
            view: &RunView<'_>,
            rows: &[RowExtra],
            out: &mut dyn std::io::Write,
        ) -> serde_json::Result<()> {
            serde_json::to_writer(ScriptSafe(out), &PhaseRows { view, rows })
        }
    }

    /// Text that tests every rule of the rows' strings: JSON's and HTML's special
    /// characters, every control character, DEL, non-ASCII, line and paragraph separators.
    fn tricky() -> String {
        let mut s = String::from(
            "</script><!-- a&b \"q\" \\ back ' é 日本 🦀 \u{7f} \u{85} \u{2028}\u{2029}",
        );
        s.extend((0u8..0x20).map(char::from));
        s
    }

    #[test]
    fn rows_are_the_bytes_serde_json_wrote() {
        let t = tricky();
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "R0", "pipeline": t, "status": "failed",
            "started_at": "2026-01-01T00:00:00.000Z", "finished_at": "2026-01-01T01:00:00.000Z",
            "duration_ms": 3_600_000,
            "phases": {
                "a": { "status": "succeeded", "kind": t, "attempts": 1, "exit_code": 0,
                       "started_at": "2026-01-01T00:00:00.000Z",
                       "finished_at": "2026-01-01T00:00:01.250Z", "duration_ms": 1250,
                       "tags": [t, "", "x"], "description": t,
                       "outputs": { "k": t, "": "", "quote\"": "v" } },
                "b-2": { "status": "failed", "kind": "command", "attempts": 3, "exit_code": -9,
                         "reason": t, "needs": ["a"], "allowed_failure": true,
                         "started_at": "2026-01-01T00:10:00+02:00",
                         "finished_at": "not a time" },
                "c_3": { "status": "timed_out", "kind": "command", "attempts": 2,
                         "needs": ["a", "b-2"], "started_at": "2016-12-31T23:59:60.000Z",
                         "duration_ms": 4_000_000 },
                "d": { "status": "skipped", "kind": "command", "attempts": 0,
                       "reason": "when: false", "needs": ["c_3"] },
                "e": { "status": "running", "kind": "command", "attempts": 4_000_000_000_u32,
                       "exit_code": i32::MIN,
                       "started_at": "2026-01-01T00:59:59.999Z" }
            }
        }))
        .unwrap();
        let view = RunView::new(&record);
        let logs = [
            Some(t.clone()),
            None,
            Some("logs/c_3.log".to_owned()),
            None,
            Some(String::new()),
        ];
        let rows: Vec<RowExtra> = logs
            .into_iter()
            .enumerate()
            .map(|(i, log)| RowExtra {
                markup: i % 2 == 0,
                log,
            })
            .collect();
        let mut old = Vec::new();
        reference::phase_data(&view, &rows, &mut old).unwrap();
        let mut new = Vec::new();
        phase_data(&view, &rows, &mut new).unwrap();
        assert_eq!(
            String::from_utf8(new).unwrap(),
            String::from_utf8(old).unwrap()
        );
        // Many rows: the buffer is passed on in parts.
        let many: Vec<RowExtra> = (0..view.phases.len())
            .map(|_| RowExtra {
                markup: true,
                log: Some("x".repeat(20_000)),
            })
            .collect();
        let (mut old, mut new) = (Vec::new(), Vec::new());
        reference::phase_data(&view, &many, &mut old).unwrap();
        phase_data(&view, &many, &mut new).unwrap();
        assert_eq!(new, old);
        let empty = RunView {
            phases: Vec::new(),
            ..view.clone()
        };
        let (mut old, mut new) = (Vec::new(), Vec::new());
        reference::phase_data(&empty, &[], &mut old).unwrap();
        phase_data(&empty, &[], &mut new).unwrap();
        assert_eq!(new, old);
    }

    #[test]
    fn the_column_table_is_the_markup_the_template_loop_wrote() {
        // A chain, a column of 12 (more than a row names) and phases needing both.
        let mut phases = serde_json::Map::new();
        let mut need = |id: String, needs: Vec<String>| {
            phases.insert(
                id,
                serde_json::json!({ "status": "succeeded", "kind": "command", "attempts": 1,
                                    "needs": needs }),
            );
        };
        for i in 0..30 {
            need(
                format!("chain-{i}"),
                (i > 0)
                    .then(|| format!("chain-{}", i - 1))
                    .into_iter()
                    .collect(),
            );
        }
        for i in 0..12 {
            need(format!("wide_{i}"), vec!["chain-3".to_owned()]);
        }
        need(
            "join".to_owned(),
            (0..12).map(|i| format!("wide_{i}")).collect(),
        );
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "R0", "pipeline": "p", "status": "succeeded",
            "started_at": "2026-01-01T00:00:00.000Z", "phases": phases
        }))
        .unwrap();
        let view = RunView::new(&record);
        let find = |id: &orch_core::PhaseId| {
            record
                .phases
                .get_index_of(id)
                .and_then(|i| u32::try_from(i).ok())
        };
        assert_eq!(
            dag::layers_by(&view.phases, find),
            dag::layers(&view.phases)
        );
        let table = Value::from_object(LayerTable::new(&view.phases, find));
        let old = r##"<tbody>
{%- for l in dag_summary %}
<tr><td class="num">{{ l.layer }}</td><td class="num">{{ l.count }}</td><td>{% for id in l.sample %}<a href="#phase-{{ id }}"><code>{{ id }}</code></a> {% endfor %}{% if l.more %}<span class="muted">and {{ l.more }} more</span>{% endif %}</td></tr>
{%- endfor %}
</tbody>"##;
        let new = r#"<tbody>
{{- dag_summary }}
</tbody>"#;
        let render = |env: &mut Environment<'static>, source: &'static str| {
            env.add_template("t.html", source).unwrap();
            env.get_template("t.html")
                .unwrap()
                .render(minijinja::context! { dag_summary => table.clone() })
                .unwrap()
        };
        let old = render(&mut Environment::new(), old);
        let new = render(&mut environment().unwrap(), new);
        assert_eq!(new, old);
        assert!(new.contains("and 5 more"), "{new}");
        assert_eq!(new.matches("<tr>").count(), 30, "{new}");
    }
}
