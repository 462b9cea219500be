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
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostics::{Diagnostic, did_you_mean};
use crate::ids::PhaseId;
use crate::spec::{
    AgentSpec, Backoff, BreakerSpec, Defaults, MAX_JOBS, MAX_NOTIFY_RETRIES, MAX_RETRIES,
    NOTIFY_EVENTS, NotifyFormat, NotifyTarget, NotifyUrl, PhaseSpec, PipelineSpec, RunSpec,
    Unavailable, WithTable,
};

pub mod schema;

type Span = Range<usize>;
type Value<'a> = Spanned<DeValue<'a>>;
type Key<'a> = Spanned<std::borrow::Cow<'a, str>>;

/// Where each part of a phase stood in the file, for later diagnostics.
#[derive(Clone, Debug, Default)]
pub(crate) struct PhaseSpans {
    pub id: Option<Span>,
    pub kind: Option<Span>,
    pub needs: Vec<Span>,
    pub agent: Option<Span>,
    pub with: Option<Span>,
    pub run: Option<Span>,
    pub cwd: Option<Span>,
    pub env: Option<Span>,
    pub when: Option<Span>,
    pub assert: Option<Span>,
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

struct Walker {
    diags: Vec<Diagnostic>,
    text: Arc<str>,
}

impl Walker {
    fn err(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(Some(span), message));
    }

    fn unknown_key(&mut self, key: &Key<'_>, table: &str, known: &[&str]) {
        let mut d = Diagnostic::at(
            Some(key.span()),
            format!("unknown key `{}` in {table}", key.get_ref()),
        );
        if let Some(help) = did_you_mean(key.get_ref(), known.iter().copied()) {
            d = d.with_help(help);
        } else {
            d = d.with_help(format!("expected one of: {}", known.join(", ")));
        }
        self.diags.push(d);
    }

    fn table<'a, 'i>(&mut self, v: &'a Value<'i>, what: &str) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a table, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Value<'_>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value<'_>, what: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be true or false, not {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An integer in `min..=max`; one out of range is an error at its position, never
    /// clamped (a clamped value could land on a meaning of its own).
    fn integer_in(&mut self, v: &Value<'_>, what: &str, min: i64, max: i64) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.err(
                v.span(),
                format!("{what} must be an integer, not {}", v.get_ref().type_str()),
            );
            return None;
        };
        let text = i.as_str().replace('_', "");
        // Past i128 the text is only ever too large (TOML integers carry no sign for other
        // radixes, and a negative one this long is below any minimum).
        let n = i128::from_str_radix(&text, i.radix()).unwrap_or(if text.starts_with('-') {
            i128::MIN
        } else {
            i128::MAX
        });
        if n < i128::from(min) {
            self.err(
                v.span(),
                format!("{what} must be at least {min}, not {}", i.as_str()),
            );
            None
        } else if n > i128::from(max) {
            self.err(
                v.span(),
                format!("{what} must be at most {max}, not {}", i.as_str()),
            );
            None
        } else {
            i64::try_from(n).ok()
        }
    }

    fn float(&mut self, v: &Value<'_>, what: &str) -> Option<f64> {
        match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
            DeValue::Integer(i) => i.as_str().replace('_', "").parse().ok(),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a number, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn duration(&mut self, v: &Value<'_>, what: &str) -> Option<Duration> {
        let s = self.string(v, what)?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                let mut d =
                    Diagnostic::at(Some(v.span()), format!("{what} \"{s}\" is not a duration"));
                d = d.with_help("use a number with a unit: \"250ms\", \"30s\", \"10m\", \"1h\"");
                self.diags.push(d);
                None
            }
        }
    }

    fn strings(&mut self, v: &Value<'_>, what: &str) -> Option<Vec<Spanned<String>>> {
        match v.get_ref() {
            DeValue::Array(a) => {
                let mut out = Vec::new();
                for item in a.iter() {
                    if let Some(s) = self.string(item, &format!("each entry of {what}")) {
                        out.push(Spanned::new(item.span(), s));
                    }
                }
                Some(out)
            }
            other => {
                self.err(
                    v.span(),
                    format!(
                        "{what} must be an array of strings, not {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// A table of string values; numbers and booleans are accepted as their text.
    fn string_map(&mut self, v: &Value<'_>, what: &str) -> IndexMap<String, String> {
        let mut out = IndexMap::new();
        if let Some(t) = self.table(v, what) {
            for (k, val) in t {
                if let Some(s) = self.scalar_text(val, &format!("{what}.{}", k.get_ref())) {
                    out.insert(k.get_ref().to_string(), s);
                }
            }
        }
        out
    }

    /// An `env` table: its keys must be variable names (`[A-Za-z_][A-Za-z0-9_]*`) outside
    /// `ORCH_*`, which orch sets itself (a phase could otherwise hide from the run's sweeps).
    fn env_map(&mut self, v: &Value<'_>, what: &str) -> IndexMap<String, String> {
        let mut out = self.string_map(v, what);
        if let DeValue::Table(t) = v.get_ref() {
            for (k, _) in t {
                let name: &str = k.get_ref();
                let problem = if !is_env_name(name) {
                    "is not an environment variable name (use letters, digits and `_`, not first a digit)"
                } else if name.starts_with("ORCH_") {
                    "is reserved: orch sets `ORCH_*` variables itself"
                } else {
                    continue;
                };
                self.err(k.span(), format!("{what} key `{name}` {problem}"));
                out.shift_remove(name);
            }
        }
        out
    }

    fn scalar_text(&mut self, v: &Value<'_>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            DeValue::Integer(i) => Some(i.as_str().to_owned()),
            DeValue::Float(f) => Some(f.as_str().to_owned()),
            DeValue::Boolean(b) => Some(b.to_string()),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn backoff(&mut self, v: &Value<'_>) -> Option<Backoff> {
        let t = self.table(v, "`backoff`")?;
        let mut b = Backoff::default();
        for (k, val) in t {
            match k.get_ref().as_ref() {
                "initial" => {
                    b.initial = self.duration(val, "`backoff.initial`").unwrap_or(b.initial)
                }
                "max" => b.max = self.duration(val, "`backoff.max`").unwrap_or(b.max),
                "factor" => {
                    if let Some(f) = self.float(val, "`backoff.factor`") {
                        if f >= 1.0 && f.is_finite() {
                            b.factor = f;
                        } else {
                            self.err(val.span(), "`backoff.factor` must be at least 1.0");
                        }
                    }
                }
                "jitter" => b.jitter = self.boolean(val, "`backoff.jitter`").unwrap_or(false),
                _ => self.unknown_key(k, "`backoff`", BACKOFF_KEYS),
            }
        }
        Some(b)
    }
}

/// Converts a spanned TOML value into a plain one.
fn plain(v: &DeValue<'_>) -> toml::Value {
    match v {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(i.as_str().to_owned())),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse()
            .map(toml::Value::Float)
            .unwrap_or_else(|_| toml::Value::String(f.as_str().to_owned())),
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(a) => toml::Value::Array(a.iter().map(|x| plain(x.get_ref())).collect()),
        DeValue::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref())))
                .collect(),
        ),
    }
}

/// Parses the text of a pipeline file into a spec and the spans of its parts.
/// Structural problems come back with the spec of everything that could be read, so the
/// semantic checks can still run and the user sees every problem at once. A TOML syntax
/// error gives no spec.
pub(crate) fn parse(
    text: &str,
    path: &Path,
) -> Result<(PipelineSpec, FileSpans, Vec<Diagnostic>), Vec<Diagnostic>> {
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diagnostic::at(
                e.span(),
                format!("invalid TOML: {}", e.message().trim_end()),
            )]);
        }
    };
    let mut w = Walker {
        diags: Vec::new(),
        text: Arc::from(text),
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
    let mut unset = Vec::new();

    for (key, value) in root.get_ref() {
        match key.get_ref().as_ref() {
            "pipeline" => {
                saw_pipeline = true;
                let Some(t) = w.table(value, "[pipeline]") else {
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
                spec.vars = w.string_map(value, "[vars]");
            }
            "defaults" => {
                let Some(t) = w.table(value, "[defaults]") else {
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
                let Some(t) = w.table(value, "[agents]") else {
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
                let Some(t) = w.table(value, "[phases]") else {
                    continue;
                };
                for (id, v) in t {
                    let phase_id = match PhaseId::new(id.get_ref().as_ref()) {
                        Ok(p) => p,
                        Err(e) => {
                            w.err(id.span(), e.to_string());
                            continue;
                        }
                    };
                    if let Some((phase, ps, u)) = parse_phase(&mut w, phase_id, id.span(), v) {
                        spec.phases.push(phase);
                        spans.phases.push(ps);
                        unset.push(u);
                    }
                }
            }
            "policy" => {
                let Some(t) = w.table(value, "[policy]") else {
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
                let Some(t) = w.table(value, "[notify]") else {
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
    apply_defaults(&mut spec, &defaults, unset);
    spec.defaults = defaults;
    Ok((spec, spans, w.diags))
}

fn parse_agent(w: &mut Walker, name: &Key<'_>, v: &Value<'_>) -> Option<AgentSpec> {
    let t = w.table(v, &format!("[agents.{}]", name.get_ref()))?;
    let mut agent = AgentSpec {
        name: name.get_ref().to_string(),
        agent_type: String::new(),
        capacity: None,
        with: WithTable::default(),
        breaker: BreakerSpec::default(),
        unavailable: Unavailable::Fail,
    };
    let mut breaker_set = false;
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
                    );
                }
            }
            "breaker" => {
                breaker_set = true;
                if let Some(bt) = w.table(val, "`breaker`") {
                    for (bk, bv) in bt {
                        match bk.get_ref().as_ref() {
                            "failures" => {
                                agent.breaker.failures = w
                                    .integer_in(bv, "`breaker.failures`", 0, u32::MAX.into())
                                    .map(|n| n as u32)
                                    .unwrap_or(5)
                            }
                            "cooldown" => {
                                agent.breaker.cooldown = w
                                    .duration(bv, "`breaker.cooldown`")
                                    .unwrap_or(agent.breaker.cooldown)
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
    if !breaker_set && agent.agent_type == "local" {
        agent.breaker.failures = 0;
    }
    Some(agent)
}

fn parse_notify(w: &mut Walker, name: &Key<'_>, v: &Value<'_>) -> Option<NotifyTarget> {
    let where_ = format!("[notify.{}]", name.get_ref());
    let t = w.table(v, &where_)?;
    let mut url = None;
    let mut url_given = false;
    let mut format = (NotifyFormat::Json, None);
    let mut secret = None;
    let mut on = vec!["run.finished".to_owned()];
    let mut timeout = std::time::Duration::from_secs(10);
    let mut retries = 3;
    let mut ok = true;
    for (k, val) in t {
        match k.get_ref().as_ref() {
            "url" => {
                url_given = true;
                if let Some(u) = w.string(val, "`url`") {
                    if u.starts_with("http://") || u.starts_with("https://") {
                        url = Some(NotifyUrl::Literal(u));
                    } else {
                        ok = false;
                        w.diags.push(
                            Diagnostic::at(
                                Some(val.span()),
                                "`url` must start with http:// or https://",
                            )
                            .with_help("a webhook URL that is a credential belongs in an environment variable: `url_env = \"NAME\"`"),
                        );
                    }
                }
            }
            "url_env" => {
                url_given = true;
                if let Some(n) = w.string(val, "`url_env`") {
                    if is_env_name(&n) {
                        url = Some(NotifyUrl::Env(n));
                    } else {
                        ok = false;
                        w.err(
                            val.span(),
                            format!("`url_env` `{n}` is not an environment variable name"),
                        );
                    }
                }
            }
            "format" => match w.string(val, "`format`").as_deref() {
                Some("slack") => format = (NotifyFormat::Slack, Some(val.span())),
                Some("json") => format = (NotifyFormat::Json, Some(val.span())),
                Some(other) => {
                    ok = false;
                    w.err(
                        val.span(),
                        format!("`format` must be \"slack\" or \"json\", not \"{other}\""),
                    );
                }
                None => ok = false,
            },
            "secret" => {
                if let Some(n) = w.string(val, "`secret`") {
                    if is_env_name(&n) {
                        secret = Some(n);
                    } else {
                        ok = false;
                        w.diags.push(
                            Diagnostic::at(
                                Some(val.span()),
                                format!("`secret` `{n}` is not an environment variable name"),
                            )
                            .with_help("`secret` names the variable holding the HMAC key, never the key itself"),
                        );
                    }
                }
            }
            "on" => {
                if let Some(events) = w.strings(val, "`on`") {
                    on.clear();
                    for e in events {
                        if NOTIFY_EVENTS.contains(&e.get_ref().as_str()) {
                            on.push(e.into_inner());
                        } else {
                            ok = false;
                            let mut d = Diagnostic::at(
                                Some(e.span()),
                                format!("unknown event `{}` in `on`", e.get_ref()),
                            );
                            d = match did_you_mean(e.get_ref(), NOTIFY_EVENTS.iter().copied()) {
                                Some(help) => d.with_help(help),
                                None => d.with_help(format!(
                                    "expected one of: {}",
                                    NOTIFY_EVENTS.join(", ")
                                )),
                            };
                            w.diags.push(d);
                        }
                    }
                }
            }
            "timeout" => match w.duration(val, "`timeout`") {
                Some(d) if !d.is_zero() => timeout = d,
                Some(_) => {
                    ok = false;
                    w.err(val.span(), "`timeout` must be more than zero");
                }
                None => ok = false,
            },
            "retries" => match w.integer_in(val, "`retries`", 0, i64::from(MAX_NOTIFY_RETRIES)) {
                Some(n) => retries = n as u32,
                None => ok = false,
            },
            _ => w.unknown_key(k, &where_, NOTIFY_KEYS),
        }
    }
    if let (NotifyFormat::Slack, Some(span), Some(_)) = (format.0, &format.1, &secret) {
        ok = false;
        w.diags.push(
            Diagnostic::at(
                Some(span.clone()),
                format!("{where_} has a `secret` but `format = \"slack\"`"),
            )
            .with_help("a Slack webhook is not signed: drop `secret`, or use `format = \"json\"`"),
        );
    }
    let Some(url) = url else {
        if url_given {
            return None;
        }
        w.diags.push(
            Diagnostic::at(Some(name.span()), format!("{where_} has no `url`"))
                .with_help("add `url = \"https://...\"` or `url_env = \"NAME\"`"),
        );
        return None;
    };
    ok.then(|| NotifyTarget {
        name: name.get_ref().to_string(),
        url,
        format: format.0,
        secret,
        on,
        timeout,
        retries,
    })
}

fn parse_phase(
    w: &mut Walker,
    id: PhaseId,
    id_span: Span,
    v: &Value<'_>,
) -> Option<(PhaseSpec, PhaseSpans, Unset)> {
    let where_ = format!("[phases.{id}]");
    let t = w.table(v, &where_)?;
    let mut p = PhaseSpec::new(id, String::new());
    let mut spans = PhaseSpans {
        id: Some(id_span),
        ..PhaseSpans::default()
    };
    let mut retries = None;
    let mut timeout = None;
    let mut backoff = None;
    let mut kind = None;
    let mut agent = None;
    for (k, val) in t {
        match k.get_ref().as_ref() {
            "kind" => {
                spans.kind = Some(val.span());
                kind = w.string(val, "`kind`");
            }
            "run" => {
                spans.run = Some(val.span());
                p.run = match val.get_ref() {
                    DeValue::String(s) => Some(RunSpec::Shell(s.to_string())),
                    DeValue::Array(_) => w
                        .strings(val, "`run`")
                        .map(|v| RunSpec::Argv(v.into_iter().map(Spanned::into_inner).collect())),
                    other => {
                        w.err(val.span(), format!("`run` must be a string (run by `sh -c`) or an array (an argv), not {}", other.type_str()));
                        None
                    }
                };
            }
            "needs" => {
                if let Some(needs) = w.strings(val, "`needs`") {
                    for n in needs {
                        match PhaseId::new(n.get_ref()) {
                            Ok(nid) => {
                                spans.needs.push(n.span());
                                p.needs.push(nid);
                            }
                            Err(e) => w.err(n.span(), e.to_string()),
                        }
                    }
                }
            }
            "with" => {
                spans.with = Some(val.span());
                if let Some(tbl) = w.table(val, "`with`") {
                    let table = tbl
                        .iter()
                        .map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref())))
                        .collect();
                    p.with = WithTable::from_source(
                        table,
                        w.text.clone(),
                        val.span(),
                        vec!["phases".into(), p.id.to_string(), "with".into()],
                    );
                }
            }
            "env" => {
                spans.env = Some(val.span());
                p.env = w.env_map(val, "`env`");
            }
            "cwd" => {
                spans.cwd = Some(val.span());
                p.cwd = w.string(val, "`cwd`");
            }
            "timeout" => timeout = w.duration(val, "`timeout`"),
            "retries" => {
                retries = w
                    .integer_in(val, "`retries`", 0, i64::from(MAX_RETRIES))
                    .map(|n| n as u32)
            }
            "backoff" => backoff = w.backoff(val),
            "allow_failure" => p.allow_failure = w.boolean(val, "`allow_failure`").unwrap_or(false),
            "tags" => {
                p.tags = w
                    .strings(val, "`tags`")
                    .map(|v| v.into_iter().map(Spanned::into_inner).collect())
                    .unwrap_or_default()
            }
            "secrets" => {
                if let Some(names) = w.strings(val, "`secrets`") {
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
                spans.agent = Some(val.span());
                agent = w.string(val, "`agent`");
            }
            "description" => p.description = w.string(val, "`description`"),
            "when" => {
                spans.when = Some(val.span());
                p.when = w.string(val, "`when`");
            }
            "assert" => {
                spans.assert = Some(val.span());
                p.assert = w
                    .strings(val, "`assert`")
                    .map(|v| v.into_iter().map(Spanned::into_inner).collect())
                    .unwrap_or_default();
            }
            _ => w.unknown_key(k, &where_, PHASE_KEYS),
        }
    }
    p.kind = match (kind, &p.run) {
        (Some(k), _) => k,
        (None, Some(_)) => "command".to_owned(),
        // `run` was there but invalid (already reported).
        (None, None) if spans.run.is_some() => return None,
        (None, None) => {
            w.diags.push(
                Diagnostic::at(
                    spans.id.clone(),
                    format!("{where_} has neither `kind` nor `run`"),
                )
                .with_help("add `run = \"...\"` for a command, or `kind = \"...\"`"),
            );
            return None;
        }
    };
    if p.run.is_some() && p.kind != "command" {
        w.err(
            spans.run.clone().unwrap_or(0..0),
            format!("`run` is for `command` phases; this phase is `{}`", p.kind),
        );
    }
    p.agent = agent;
    p.timeout = timeout;
    Some((p, spans, Unset { retries, backoff }))
}

/// The fields of a phase that take `[defaults]` when the phase leaves them out (the
/// defaults may come later in the file, so they are applied after the walk).
struct Unset {
    retries: Option<u32>,
    backoff: Option<Backoff>,
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

fn apply_defaults(spec: &mut PipelineSpec, d: &Defaults, unset: Vec<Unset>) {
    for (p, u) in spec.phases.iter_mut().zip(unset) {
        if p.timeout.is_none() {
            p.timeout = d.timeout;
        }
        p.retries = u.retries.or(d.retries).unwrap_or(0);
        p.backoff = u.backoff.or(d.backoff).unwrap_or_default();
        if p.agent.is_none() {
            p.agent.clone_from(&d.agent);
        }
        if !d.env.is_empty() {
            let mut env = d.env.clone();
            env.extend(std::mem::take(&mut p.env));
            p.env = env;
        }
    }
}

/// Whether `name` is `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod props {
    //! Properties of the walk over generated files.

    use std::fmt::Write as _;
    use std::path::Path;

    use proptest::prelude::*;

    use crate::{LoadError, LoadOptions, Pipeline, Registry};

    /// A phase: id index, the phases it needs (earlier ones), retries if set.
    #[derive(Clone, Debug)]
    struct Gen {
        needs: Vec<usize>,
        retries: Option<u32>,
    }

    fn phases() -> impl Strategy<Value = Vec<Gen>> {
        prop::collection::vec(
            (
                prop::collection::vec(0usize..64, 0..4),
                prop::option::of(0u32..=100),
            ),
            1..12,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (needs, retries))| Gen {
                    needs: if i == 0 {
                        Vec::new()
                    } else {
                        let mut n: Vec<usize> = needs.into_iter().map(|k| k % i).collect();
                        n.sort_unstable();
                        n.dedup();
                        n
                    },
                    retries,
                })
                .collect()
        })
    }

    fn render(phases: &[Gen], defaults: Option<u32>, defaults_first: bool) -> String {
        let mut text = String::from("[pipeline]\nname = \"gen\"\n");
        let d = defaults.map(|r| format!("[defaults]\nretries = {r}\n"));
        if defaults_first && let Some(d) = &d {
            text.push_str(d);
        }
        for (i, p) in phases.iter().enumerate() {
            let _ = writeln!(text, "[phases.p{i}]\nrun = \"true\"");
            let needs: Vec<String> = p.needs.iter().map(|k| format!("\"p{k}\"")).collect();
            let _ = writeln!(text, "needs = [{}]", needs.join(", "));
            if let Some(r) = p.retries {
                let _ = writeln!(text, "retries = {r}");
            }
        }
        if !defaults_first && let Some(d) = &d {
            text.push_str(d);
        }
        text
    }

    fn load(text: &str) -> Result<Pipeline, LoadError> {
        Pipeline::from_str(
            text,
            Path::new("orch.toml"),
            &Registry::with_builtins(),
            &LoadOptions::default(),
        )
    }

    proptest! {
        /// A generated DAG loads, in declaration order, and every phase's retries are its
        /// own when set, else the defaults' (wherever [defaults] stands), else 0.
        #[test]
        fn generated_pipelines_load_with_their_retries(
            phases in phases(),
            defaults in prop::option::of(0u32..=100),
            defaults_first in any::<bool>(),
        ) {
            let p = load(&render(&phases, defaults, defaults_first)).unwrap();
            prop_assert_eq!(p.len(), phases.len());
            for (i, (node, want)) in p.nodes().iter().zip(&phases).enumerate() {
                prop_assert_eq!(node.spec.id.as_str(), format!("p{i}"));
                prop_assert_eq!(node.spec.retries, want.retries.or(defaults).unwrap_or(0));
                let needs: Vec<usize> = node.needs.iter().map(|&k| k as usize).collect();
                prop_assert_eq!(needs, want.needs.clone());
            }
        }

        /// `retries` is accepted exactly in 0..=100; anything else is an error at its line,
        /// never a default.
        #[test]
        fn retries_out_of_range_are_errors_at_their_line(
            value in prop_oneof![
                (-1000i64..1000).prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                "[0-9]{20,40}",
                any::<u32>().prop_map(|n| format!("0x{n:x}")),
            ],
        ) {
            let text = format!("[pipeline]\nname = \"r\"\n[phases.a]\nrun = \"true\"\nretries = {value}\n");
            let parsed: Option<i128> = if let Some(hex) = value.strip_prefix("0x") {
                i128::from_str_radix(hex, 16).ok()
            } else {
                value.parse().ok()
            };
            match (load(&text), parsed) {
                (Ok(p), Some(n)) => {
                    prop_assert!((0..=100).contains(&n), "{value} accepted");
                    prop_assert_eq!(i128::from(p.nodes()[0].spec.retries), n);
                }
                (Err(LoadError::Invalid(d)), _) => {
                    let rendered = d.render();
                    prop_assert!(rendered.contains("orch.toml:5:"), "{}", rendered);
                    prop_assert!(parsed.is_none_or(|n| !(0..=100).contains(&n)), "{}", rendered);
                }
                (other, _) => prop_assert!(false, "{value}: {other:?}"),
            }
        }

        /// Any text: an error or a pipeline, never a panic; every error renders.
        #[test]
        fn any_text_loads_or_is_refused(text in "(\\[pipeline\\]\nname = \"x\"\n)?(\\[phases\\.[a-c]\\]\n|run = \"true\"\n|needs = \\[\"[a-d]\"\\]\n|retries = -?[0-9]{1,3}\n|kind = \"gate\"\n|assert = \\[\"phases\\.[a-d]\\.outputs\\.x == 1\"\\]\n|\\[defaults\\]\n|[ -~\n]{0,8})*") {
            match load(&text) {
                Ok(_) => {}
                Err(LoadError::Invalid(d)) => {
                    let _ = d.render();
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }
}
