//! The pipeline file (TOML, contract version 1): parsing with every problem reported at
//! once, each with its location.
//!
//! The walk goes over the spanned TOML tree by hand rather than through one
//! `#[derive(Deserialize)]`, because serde stops at the first error; here each table and
//! field is checked on its own, so a file with five mistakes gets five diagnostics. The
//! types in [`schema`] describe the same format for `orch schema`; a test keeps them in step.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostics::Diagnostic;
use crate::ids::{KindName, PhaseId};
use crate::pipeline::{Node, unbuilt_phase};
use crate::spec::{
    AgentSpec, BreakerSpec, Defaults, MAX_JOBS, MAX_RETRIES, PhaseSpec, PipelineSpec, RunSpec,
    Unavailable, WithTable,
};

mod notify;
mod pieces;
pub mod schema;
mod walker;

use notify::parse_notify;
use walker::{Walker, plain};

type Span = Range<usize>;
type Value<'a> = Spanned<DeValue<'a>>;
type Key<'a> = Spanned<std::borrow::Cow<'a, str>>;

/// A byte span in the pipeline file, in half the room of a `Range<usize>` (the file is at
/// most [`crate::input::MAX_PIPELINE_FILE`] bytes): a file of 100k phases keeps a dozen of
/// them per phase until it is validated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct At {
    start: u32,
    end: u32,
}

impl At {
    /// The span as a range of bytes.
    pub fn range(self) -> Span {
        self.start as usize..self.end as usize
    }
}

impl From<Span> for At {
    fn from(r: Span) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            start: clamp(r.start),
            end: clamp(r.end),
        }
    }
}

/// Where each part of a phase stood in the file, for later diagnostics.
#[derive(Clone, Debug, Default)]
pub(crate) struct PhaseSpans {
    pub id: Option<At>,
    pub kind: Option<At>,
    pub needs: Vec<At>,
    pub agent: Option<At>,
    pub with: Option<At>,
    pub run: Option<At>,
    pub cwd: Option<At>,
    pub env: Option<At>,
    pub when: Option<At>,
    pub assert: Option<At>,
}

/// Spans of a parsed file.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileSpans {
    pub phases: Vec<PhaseSpans>,
    pub agents: IndexMap<String, (Option<Span>, Option<Span>)>,
    pub vars: Option<Span>,
    /// Each `[policy] files` entry.
    pub policy_files: Vec<Span>,
}

const TOP_KEYS: &[&str] = &[
    "pipeline", "vars", "defaults", "agents", "phases", "policy", "notify",
];
const POLICY_KEYS: &[&str] = &["files", "timeout"];
const NOTIFY_KEYS: &[&str] = &[
    "url", "url_env", "format", "secret", "on", "timeout", "retries",
];
const PIPELINE_KEYS: &[&str] = &["name", "jobs", "state_dir", "description"];
const DEFAULT_KEYS: &[&str] = &["timeout", "retries", "backoff", "env", "agent"];
const AGENT_KEYS: &[&str] = &["type", "capacity", "with", "breaker", "unavailable"];
const BREAKER_KEYS: &[&str] = &["failures", "cooldown"];
const BACKOFF_KEYS: &[&str] = &["initial", "factor", "max", "jitter"];
/// Fields of a phase table.
pub const PHASE_KEYS: &[&str] = &[
    "kind",
    "run",
    "needs",
    "with",
    "env",
    "cwd",
    "timeout",
    "retries",
    "backoff",
    "allow_failure",
    "tags",
    "secrets",
    "agent",
    "description",
    "when",
    "assert",
];

/// A parsed file: the spec (its `phases` empty), each phase's declaration in the node it
/// keeps (never a list of declarations beside the nodes), the spans and the structural
/// problems.
pub(crate) type Parsed = (PipelineSpec, Vec<Node>, FileSpans, Vec<Diagnostic>);

/// Parses the text of a pipeline file into a spec, its phases' nodes and the spans of its
/// parts.
/// Structural problems come back with the spec of everything that could be read, so the
/// semantic checks can still run and the user sees every problem at once. A TOML syntax
/// error gives no spec.
///
/// The TOML tree is consumed as it is read: each phase's table is freed once its phase is
/// built, so the tree and the spec are never both whole in memory.
///
/// A large file is parsed in pieces (see [`pieces`]), each walked and freed before the
/// next is parsed; the result is the same as parsing it whole.
pub(crate) fn parse(text: &Arc<str>, path: &Path) -> Result<Parsed, Vec<Diagnostic>> {
    let layout = pieces::layout(text);
    // Each phase's tables are together: a `with` table is found in its phase's part.
    let sections = layout.is_some();
    if let Some((cuts, phases)) = layout.filter(|(cuts, _)| pieces::worth_cutting(cuts)) {
        let mut trees = pieces::Trees::new(text, cuts);
        let parsed = walk(text, path, &mut trees, phases, sections);
        if !trees.failed {
            return Ok(parsed);
        }
    }
    parse_whole(text, path, sections)
}

/// [`parse`], in one piece.
fn parse_whole(text: &Arc<str>, path: &Path, sections: bool) -> Result<Parsed, Vec<Diagnostic>> {
    match DeTable::parse(text) {
        Ok(root) => Ok(walk(
            text,
            path,
            std::iter::once(root.into_inner()),
            0,
            sections,
        )),
        Err(e) => Err(vec![Diagnostic::at(
            e.span(),
            format!("invalid TOML: {}", e.message().trim_end()),
        )]),
    }
}

/// Reads the file's tables from `roots`, the trees of its pieces in order (a file parsed
/// whole is one piece), consuming each as it goes. `phases` is how many phases to make
/// room for at once (0 when unknown); `sections` tells that each phase's tables are
/// together in the text (see [`pieces::layout`]).
fn walk<'i>(
    text: &Arc<str>,
    path: &Path,
    roots: impl IntoIterator<Item = DeTable<'i>>,
    phases: usize,
    sections: bool,
) -> Parsed {
    let mut w = Walker {
        diags: Vec::new(),
        text: text.clone(),
        sections,
    };
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut spec = PipelineSpec::new(String::new(), base_dir);
    spec.source_path = Some(path.to_owned());
    let mut spans = FileSpans::default();
    let mut defaults = Defaults::default();
    let mut saw_pipeline = false;
    let mut saw_phases = false;
    let mut nodes: Vec<Node> = Vec::with_capacity(phases);
    let unbuilt = unbuilt_phase();
    spans.phases.reserve_exact(phases);

    for (key, value) in roots.into_iter().flatten() {
        let key = &key;
        match key.get_ref().as_ref() {
            "pipeline" => {
                saw_pipeline = true;
                let Some(t) = w.table(&value, "[pipeline]") else {
                    continue;
                };
                let mut saw_name = false;
                for (k, v) in t {
                    match k.get_ref().as_ref() {
                        "name" => {
                            saw_name = true;
                            if let Some(name) = w.string(v, "`pipeline.name`") {
                                if name.trim().is_empty() {
                                    w.err(v.span(), "`pipeline.name` is empty");
                                }
                                spec.name = name;
                            }
                        }
                        "jobs" => {
                            spec.jobs = w
                                .integer_in(v, "`pipeline.jobs`", 1, MAX_JOBS as i64)
                                .map(|n| n as usize)
                        }
                        "state_dir" => {
                            if let Some(s) = w.string(v, "`pipeline.state_dir`") {
                                if names_the_base_dir(&s) {
                                    w.diags.push(
                                        Diagnostic::at(
                                            Some(v.span()),
                                            format!(
                                                "`pipeline.state_dir` {s:?} is the pipeline's own directory"
                                            ),
                                        )
                                        .with_help(
                                            "runs, logs and reports need a directory of their own: leave it out for \".orch\"",
                                        ),
                                    );
                                } else {
                                    spec.state_dir = PathBuf::from(s);
                                }
                            }
                        }
                        "description" => {
                            w.string(v, "`pipeline.description`");
                        }
                        _ => w.unknown_key(k, "[pipeline]", PIPELINE_KEYS),
                    }
                }
                if !saw_name {
                    w.diags.push(
                        Diagnostic::at(Some(key.span()), "[pipeline] has no `name`")
                            .with_help("add `name = \"my-pipeline\"`"),
                    );
                }
            }
            "vars" => {
                spans.vars = Some(key.span());
                spec.vars = w.string_map(&value, "[vars]");
            }
            "defaults" => {
                let Some(t) = w.table(&value, "[defaults]") else {
                    continue;
                };
                for (k, v) in t {
                    match k.get_ref().as_ref() {
                        "timeout" => defaults.timeout = w.duration(v, "`defaults.timeout`"),
                        "retries" => {
                            defaults.retries = w
                                .integer_in(v, "`defaults.retries`", 0, i64::from(MAX_RETRIES))
                                .map(|n| n as u32)
                        }
                        "backoff" => defaults.backoff = w.backoff(v),
                        "env" => defaults.env = w.env_map(v, "`defaults.env`"),
                        "agent" => defaults.agent = w.string(v, "`defaults.agent`"),
                        _ => w.unknown_key(k, "[defaults]", DEFAULT_KEYS),
                    }
                }
            }
            "agents" => {
                let Some(t) = w.table(&value, "[agents]") else {
                    continue;
                };
                for (name, v) in t {
                    if PhaseId::new(name.get_ref().as_ref()).is_err() {
                        w.err(
                            name.span(),
                            format!(
                                "invalid agent name `{}`: use letters, digits, `_` and `-`",
                                name.get_ref()
                            ),
                        );
                    }
                    if let Some(agent) = parse_agent(&mut w, name, v) {
                        spans
                            .agents
                            .insert(agent.name.clone(), (Some(name.span()), None));
                        spec.agents.insert(agent.name.clone(), agent);
                    }
                }
            }
            "phases" => {
                saw_phases = true;
                if w.table(&value, "[phases]").is_none() {
                    continue;
                }
                let DeValue::Table(t) = value.into_inner() else {
                    continue;
                };
                nodes.reserve_exact(t.len());
                spans.phases.reserve_exact(t.len());
                for (id, v) in t {
                    let (id, v) = (&id, &v);
                    let phase_id = match PhaseId::new(id.get_ref().as_ref()) {
                        Ok(p) => p,
                        Err(e) => {
                            w.err(id.span(), e.to_string());
                            continue;
                        }
                    };
                    if let Some((phase, ps)) = parse_phase(&mut w, phase_id, id.span(), v) {
                        nodes.push(Node::unbuilt(phase, unbuilt.clone()));
                        spans.phases.push(ps);
                    }
                }
            }
            "policy" => {
                let Some(t) = w.table(&value, "[policy]") else {
                    continue;
                };
                let mut policy = crate::policy::PolicySpec {
                    files: Vec::new(),
                    timeout: crate::policy::DEFAULT_TIMEOUT,
                };
                let mut saw_files = false;
                for (k, v) in t {
                    match k.get_ref().as_ref() {
                        "files" => {
                            saw_files = true;
                            for f in w.strings(v, "`policy.files`").unwrap_or_default() {
                                spans.policy_files.push(f.span());
                                policy.files.push(f.into_inner());
                            }
                        }
                        "timeout" => {
                            if let Some(d) = w.duration(v, "`policy.timeout`") {
                                policy.timeout = d;
                            }
                        }
                        _ => w.unknown_key(k, "[policy]", POLICY_KEYS),
                    }
                }
                if !saw_files {
                    w.diags.push(
                        Diagnostic::at(Some(key.span()), "[policy] has no `files`")
                            .with_help("add `files = [\"policy/*.rego\"]`"),
                    );
                }
                spec.policy = Some(policy);
            }
            "notify" => {
                let Some(t) = w.table(&value, "[notify]") else {
                    continue;
                };
                for (name, v) in t {
                    if PhaseId::new(name.get_ref().as_ref()).is_err() {
                        w.err(
                            name.span(),
                            format!(
                                "invalid notification target name `{}`: use letters, digits, `_` and `-`",
                                name.get_ref()
                            ),
                        );
                        continue;
                    }
                    if let Some(target) = parse_notify(&mut w, name, v) {
                        spec.notify.push(target);
                    }
                }
            }
            _ => w.unknown_key(key, "the file", TOP_KEYS),
        }
    }
    if !saw_pipeline {
        w.diags.push(
            Diagnostic::at(Some(0..0), "the file has no [pipeline] table")
                .with_help("start with `[pipeline]` and `name = \"...\"`"),
        );
    }
    if !saw_phases {
        w.diags.push(
            Diagnostic::at(Some(0..0), "the file has no [phases] table")
                .with_help("add a phase: `[phases.hello]` with `run = \"echo hello\"`"),
        );
    }
    // Validation applies them (the section may come after the phases).
    spec.defaults = defaults;
    (spec, nodes, spans, w.diags)
}

fn parse_agent(w: &mut Walker, name: &Key<'_>, v: &Value<'_>) -> Option<AgentSpec> {
    let t = w.table(v, &format!("[agents.{}]", name.get_ref()))?;
    let mut agent = AgentSpec {
        name: name.get_ref().to_string(),
        agent_type: String::new(),
        capacity: None,
        with: WithTable::default(),
        breaker: None,
        unavailable: Unavailable::Fail,
    };
    let where_ = format!("[agents.{}]", name.get_ref());
    for (k, val) in t {
        match k.get_ref().as_ref() {
            "type" => agent.agent_type = w.string(val, "`type`").unwrap_or_default(),
            "capacity" => {
                agent.capacity = w
                    .integer_in(val, "`capacity`", 1, MAX_JOBS as i64)
                    .map(|n| n as usize)
            }
            "with" => {
                if let Some(tbl) = w.table(val, "`with`") {
                    let table = tbl
                        .iter()
                        .map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref())))
                        .collect();
                    agent.with = WithTable::from_source(
                        table,
                        w.text.clone(),
                        val.span(),
                        vec!["agents".into(), agent.name.clone(), "with".into()],
                        None,
                    );
                }
            }
            "breaker" => {
                let breaker = agent.breaker.insert(BreakerSpec::default());
                if let Some(bt) = w.table(val, "`breaker`") {
                    for (bk, bv) in bt {
                        match bk.get_ref().as_ref() {
                            "failures" => {
                                breaker.failures = w
                                    .integer_in(bv, "`breaker.failures`", 0, u32::MAX.into())
                                    .map(|n| n as u32)
                                    .unwrap_or(5)
                            }
                            "cooldown" => {
                                breaker.cooldown = w
                                    .duration(bv, "`breaker.cooldown`")
                                    .unwrap_or(breaker.cooldown)
                            }
                            _ => w.unknown_key(bk, "`breaker`", BREAKER_KEYS),
                        }
                    }
                }
            }
            "unavailable" => match w.string(val, "`unavailable`").as_deref() {
                Some("fail") => agent.unavailable = Unavailable::Fail,
                Some("skip") => agent.unavailable = Unavailable::Skip,
                Some(other) => w.err(
                    val.span(),
                    format!("`unavailable` must be \"fail\" or \"skip\", not \"{other}\""),
                ),
                None => {}
            },
            _ => w.unknown_key(k, &where_, AGENT_KEYS),
        }
    }
    if agent.agent_type.is_empty() {
        w.diags.push(
            Diagnostic::at(Some(name.span()), format!("{where_} has no `type`"))
                .with_help("add `type = \"local\"` (or docker, git, python)"),
        );
        return None;
    }
    Some(agent)
}

/// The strings of a list, in a vector of their number: a phase's lists live as long as
/// the run, and collecting in place would keep the room of the spanned strings they came
/// from (over 100 bytes for a one-word `run`, 1.4 MB at 10,000 phases).
fn values(list: Vec<Spanned<String>>) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    out.extend(list.into_iter().map(Spanned::into_inner));
    out
}

fn parse_phase(
    w: &mut Walker,
    id: PhaseId,
    id_span: Span,
    v: &Value<'_>,
) -> Option<(PhaseSpec, PhaseSpans)> {
    let where_ = format!("[phases.{id}]");
    let t = w.table(v, &where_)?;
    let mut p = PhaseSpec::new(id, String::new());
    let mut spans = PhaseSpans {
        id: Some(id_span.into()),
        ..PhaseSpans::default()
    };
    let mut timeout = None;
    let mut kind = None;
    let mut agent = None;
    for (k, val) in t {
        match k.get_ref().as_ref() {
            "kind" => {
                spans.kind = Some(val.span().into());
                kind = w.string(val, "`kind`");
            }
            "run" => {
                spans.run = Some(val.span().into());
                p.run = match val.get_ref() {
                    DeValue::String(s) => Some(RunSpec::Shell(s.to_string())),
                    DeValue::Array(_) => w.strings(val, "`run`").map(|v| RunSpec::Argv(values(v))),
                    other => {
                        w.err(val.span(), format!("`run` must be a string (run by `sh -c`) or an array (an argv), not {}", other.type_str()));
                        None
                    }
                };
            }
            "needs" => {
                if let Some(needs) = w.strings(val, "`needs`") {
                    let mut ids = Vec::with_capacity(needs.len());
                    spans.needs.reserve_exact(needs.len());
                    for n in needs {
                        match PhaseId::new(n.get_ref()) {
                            Ok(nid) => {
                                spans.needs.push(n.span().into());
                                ids.push(nid);
                            }
                            Err(e) => w.err(n.span(), e.to_string()),
                        }
                    }
                    p.needs = ids.into();
                }
            }
            "with" => {
                spans.with = Some(val.span().into());
                if let Some(tbl) = w.table(val, "`with`") {
                    let table = tbl
                        .iter()
                        .map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref())))
                        .collect();
                    let doc = w
                        .sections
                        .then(|| pieces::phase_section(&w.text, p.id.as_str(), val.span().start))
                        .flatten();
                    p.with = WithTable::from_source(
                        table,
                        w.text.clone(),
                        val.span(),
                        vec!["phases".into(), p.id.to_string(), "with".into()],
                        doc,
                    );
                }
            }
            "env" => {
                spans.env = Some(val.span().into());
                p.env = w.env_map(val, "`env`").into();
            }
            "cwd" => {
                spans.cwd = Some(val.span().into());
                p.cwd = w.string(val, "`cwd`");
            }
            "timeout" => timeout = w.duration(val, "`timeout`"),
            "retries" => {
                p.retries = w
                    .integer_in(val, "`retries`", 0, i64::from(MAX_RETRIES))
                    .map(|n| n as u32)
            }
            "backoff" => p.backoff = w.backoff(val).map(Box::new),
            "allow_failure" => p.allow_failure = w.boolean(val, "`allow_failure`").unwrap_or(false),
            "tags" => p.tags = w.strings(val, "`tags`").map(values).unwrap_or_default(),
            "secrets" => {
                if let Some(names) = w.strings(val, "`secrets`") {
                    p.secrets.reserve_exact(names.len());
                    for n in names {
                        if n.get_ref().is_empty()
                            || !n
                                .get_ref()
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        {
                            w.err(
                                n.span(),
                                format!(
                                    "secret `{}` is not an environment variable name",
                                    n.get_ref()
                                ),
                            );
                        } else {
                            p.secrets.push(n.into_inner());
                        }
                    }
                }
            }
            "agent" => {
                spans.agent = Some(val.span().into());
                agent = w.string(val, "`agent`");
            }
            "description" => p.description = w.string(val, "`description`"),
            "when" => {
                spans.when = Some(val.span().into());
                p.when = w.string(val, "`when`");
            }
            "assert" => {
                spans.assert = Some(val.span().into());
                p.assert = w.strings(val, "`assert`").map(values).unwrap_or_default();
            }
            _ => w.unknown_key(k, &where_, PHASE_KEYS),
        }
    }
    p.kind = match (kind, &p.run) {
        (Some(k), _) => k.into(),
        (None, Some(_)) => command_kind(),
        // `run` was there but invalid (already reported).
        (None, None) if spans.run.is_some() => return None,
        (None, None) => {
            w.diags.push(
                Diagnostic::at(
                    spans.id.map(At::range),
                    format!("{where_} has neither `kind` nor `run`"),
                )
                .with_help("add `run = \"...\"` for a command, or `kind = \"...\"`"),
            );
            return None;
        }
    };
    if p.run.is_some() && p.kind != "command" {
        w.err(
            spans.run.map_or(0..0, At::range),
            format!("`run` is for `command` phases; this phase is `{}`", p.kind),
        );
    }
    p.agent = agent;
    p.timeout = timeout;
    Some((p, spans))
}

/// Whether a `state_dir` names the pipeline's own directory (`""`, `"."`, `"a/.."`).
fn names_the_base_dir(state_dir: &str) -> bool {
    let path = Path::new(state_dir);
    if path.is_absolute() {
        return false;
    }
    let mut depth = 0i64;
    for c in path.components() {
        match c {
            std::path::Component::Normal(_) => depth += 1,
            std::path::Component::ParentDir => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
}

/// Whether `name` is `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The kind of a phase that declares only `run`: one name that every such phase shares.
fn command_kind() -> KindName {
    static COMMAND: std::sync::LazyLock<KindName> =
        std::sync::LazyLock::new(|| KindName::from("command"));
    COMMAND.clone()
}

#[cfg(test)]
mod props;
