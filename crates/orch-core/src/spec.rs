//! The in-memory model of a pipeline: what the file (or Rust and Python code) declares.
//!
//! These types are the parsed, validated form of the pipeline file. The engine's run-time
//! state lives elsewhere; reports read [`crate::record::RunRecord`].

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::errors::KindError;
use crate::ids::{KindName, Needs, PhaseId};

/// What a `command` phase runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RunSpec {
    /// A script run under `sh -c`.
    Shell(String),
    /// An argv run without a shell.
    Argv(Vec<String>),
}

/// Delay between attempts: `initial * factor^(n-1)`, capped at `max`, optionally jittered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Growth factor per attempt (>= 1.0).
    pub factor: f64,
    /// Upper bound of one delay.
    pub max: Duration,
    /// Randomise each delay in `[delay/2, delay]` ("equal jitter").
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            factor: 2.0,
            max: Duration::from_secs(30),
            jitter: false,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        let capped = secs.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped.max(0.0))
    }

    /// The delay after attempt `attempt`, with jitter applied when enabled.
    pub fn delay_jittered(&self, attempt: u32) -> Duration {
        let d = self.delay(attempt);
        if self.jitter && !d.is_zero() {
            let half = d / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            d
        }
    }
}

/// A kind-specific `with` table, kept with its source location when it came from a file.
///
/// One pointer wide while it is empty and came from no file (most phases have no `with`).
#[derive(Clone, Debug, Default)]
pub struct WithTable(Option<Box<WithInner>>);

#[derive(Clone, Debug)]
struct WithInner {
    table: toml::Table,
    source: Option<WithSource>,
}

#[derive(Clone, Debug)]
struct WithSource {
    text: Arc<str>,
    span: Range<usize>,
    path: Vec<String>,
    /// The part of `text` that holds the table's headers and keys, and parses as a
    /// document on its own (the whole text when it is not known).
    doc: Range<usize>,
}

/// What [`WithTable::table`] gives for a table that holds nothing.
static EMPTY_TABLE: std::sync::LazyLock<toml::Table> = std::sync::LazyLock::new(toml::Table::new);

impl WithTable {
    /// A table built in code (no source location).
    pub fn new(table: toml::Table) -> Self {
        if table.is_empty() {
            return Self(None);
        }
        Self(Some(Box::new(WithInner {
            table,
            source: None,
        })))
    }

    /// A table from a file: `path` is its key path (`phases`, `ID`, `with`), `span` where
    /// its value stands in `text`, `doc` the part of `text` that holds all of it as a
    /// document of its own (deserializing a `[phases.ID.with]` table parses that part, not
    /// the whole file for every table).
    pub(crate) fn from_source(
        table: toml::Table,
        text: Arc<str>,
        span: Range<usize>,
        path: Vec<String>,
        doc: Option<Range<usize>>,
    ) -> Self {
        let doc = doc.unwrap_or(0..text.len());
        Self(Some(Box::new(WithInner {
            table,
            source: Some(WithSource {
                text,
                span,
                path,
                doc,
            }),
        })))
    }

    /// The table's values.
    pub fn table(&self) -> &toml::Table {
        self.0.as_ref().map_or(&EMPTY_TABLE, |w| &w.table)
    }

    fn source(&self) -> Option<&WithSource> {
        self.0.as_ref().and_then(|w| w.source.as_ref())
    }

    /// Byte span of the table in the pipeline file, when it came from one.
    pub fn span(&self) -> Option<Range<usize>> {
        self.source().map(|s| s.span.clone())
    }

    /// An error about these settings that points at the table in the file (a check that
    /// deserializing cannot make, such as two settings that exclude each other).
    pub fn error(&self, message: impl Into<String>) -> KindError {
        KindError {
            message: message.into(),
            span: self.span(),
        }
    }

    /// Deserializes the table into a kind's settings type.
    ///
    /// Use `#[serde(deny_unknown_fields)]` on `T`: errors then name the unknown key and,
    /// for tables from a file, point at it.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, KindError> {
        match self.source() {
            Some(src) => {
                let to_kind = |e: toml::de::Error, offset: usize| KindError {
                    message: e.message().trim_end().to_owned(),
                    span: e.span().map(|s| s.start + offset..s.end + offset),
                };
                // An inline table is a value on its own: parse just that slice.
                let slice = src.text.get(src.span.clone()).unwrap_or_default();
                if let Ok(de) = toml::de::ValueDeserializer::parse(slice) {
                    return T::deserialize(de).map_err(|e| to_kind(e, src.span.start));
                }
                // A `[phases.ID.with]` table: find it in the part of the file that holds it
                // (the whole file when that part does not parse or lacks it: parsing the
                // whole file for every table made loading quadratic).
                let find = |doc: Range<usize>| {
                    let text = src.text.get(doc.clone())?;
                    let tree = toml::de::DeTable::parse(text).ok()?;
                    let mut node = tree.get_ref().get(src.path[0].as_str()).cloned();
                    for key in &src.path[1..] {
                        node = node.and_then(|n| n.get_ref().get(key.as_str()).cloned());
                    }
                    node.map(|n| (n, doc.start))
                };
                let whole = 0..src.text.len();
                let found = match find(src.doc.clone()) {
                    None if src.doc != whole => find(whole),
                    found => found,
                };
                let Some((node, offset)) = found else {
                    return Err(match toml::de::DeTable::parse(&src.text) {
                        Err(e) => to_kind(e, 0),
                        Ok(_) => KindError::new("`with` table not found"),
                    });
                };
                T::deserialize(toml::de::ValueDeserializer::from(node))
                    .map_err(|e| to_kind(e, offset))
            }
            None => {
                T::deserialize(toml::Value::Table(self.table().clone())).map_err(|e| KindError {
                    message: e.message().to_owned(),
                    span: None,
                })
            }
        }
    }
}

/// A phase's `env`: its variables in declaration order, used as an
/// `IndexMap<String, String>` (it dereferences to one, and iterates as one).
///
/// One pointer wide while it is empty, as it is for most phases: a pipeline of 100k phases
/// keeps one [`PhaseSpec`] per phase for the whole run.
#[derive(Clone, Default)]
pub struct PhaseEnv(Option<Box<IndexMap<String, String>>>);

/// What [`PhaseEnv`] dereferences to while it holds nothing.
static EMPTY_ENV: std::sync::LazyLock<IndexMap<String, String>> =
    std::sync::LazyLock::new(IndexMap::new);

impl PhaseEnv {
    /// No variables.
    pub fn new() -> Self {
        Self(None)
    }

    /// The variables, as a map of their own.
    pub fn into_map(self) -> IndexMap<String, String> {
        self.0.map(|m| *m).unwrap_or_default()
    }
}

impl std::ops::Deref for PhaseEnv {
    type Target = IndexMap<String, String>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&EMPTY_ENV)
    }
}

impl std::ops::DerefMut for PhaseEnv {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.get_or_insert_with(Box::default)
    }
}

impl std::fmt::Debug for PhaseEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for PhaseEnv {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for PhaseEnv {}

impl From<IndexMap<String, String>> for PhaseEnv {
    fn from(map: IndexMap<String, String>) -> Self {
        if map.is_empty() {
            return Self(None);
        }
        Self(Some(Box::new(map)))
    }
}

impl From<PhaseEnv> for IndexMap<String, String> {
    fn from(env: PhaseEnv) -> Self {
        env.into_map()
    }
}

impl FromIterator<(String, String)> for PhaseEnv {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<IndexMap<_, _>>())
    }
}

impl Extend<(String, String)> for PhaseEnv {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        let mut iter = iter.into_iter().peekable();
        if iter.peek().is_some() {
            (**self).extend(iter);
        }
    }
}

impl IntoIterator for PhaseEnv {
    type Item = (String, String);
    type IntoIter = indexmap::map::IntoIter<String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.into_map().into_iter()
    }
}

impl<'a> IntoIterator for &'a PhaseEnv {
    type Item = (&'a String, &'a String);
    type IntoIter = indexmap::map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        (**self).iter()
    }
}

/// One phase as declared.
#[derive(Clone, Debug)]
pub struct PhaseSpec {
    /// The phase id.
    pub id: PhaseId,
    /// The kind (`command`, `gate`, `docker.build`, ...).
    pub kind: KindName,
    /// The command, for `command` phases.
    pub run: Option<RunSpec>,
    /// Phases that must succeed first, in declaration order.
    pub needs: Needs,
    /// Kind-specific settings.
    pub with: WithTable,
    /// Extra environment (values may interpolate).
    pub env: PhaseEnv,
    /// Working directory, relative to the pipeline's directory.
    pub cwd: Option<String>,
    /// Limit for one attempt; `None` takes `[defaults]`, else no limit.
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure; `None` takes `[defaults]`, else 0 (see
    /// [`PhaseSpec::retry_limit`]).
    pub retries: Option<u32>,
    /// Delay between attempts; `None` takes `[defaults]`, else [`Backoff::default`] (see
    /// [`PhaseSpec::retry_backoff`]). Boxed: most phases leave it to the defaults.
    pub backoff: Option<Box<Backoff>>,
    /// A failure is recorded but does not fail the run or block dependents.
    pub allow_failure: bool,
    /// Labels for selection and reports.
    pub tags: Vec<String>,
    /// Names of environment variables given to the phase as secrets.
    pub secrets: Vec<String>,
    /// The agent that runs it; `None` picks the agent serving the kind.
    pub agent: Option<String>,
    /// Shown in plans and reports.
    pub description: Option<String>,
    /// A CEL condition; the phase is skipped when it is false.
    pub when: Option<String>,
    /// CEL assertions, for `gate` phases.
    pub assert: Vec<String>,
}

impl PhaseSpec {
    /// A phase of `kind` with every other field at its default.
    pub fn new(id: PhaseId, kind: impl Into<KindName>) -> Self {
        Self {
            id,
            kind: kind.into(),
            run: None,
            needs: Needs::default(),
            with: WithTable::default(),
            env: PhaseEnv::new(),
            cwd: None,
            timeout: None,
            retries: None,
            backoff: None,
            allow_failure: false,
            tags: Vec::new(),
            secrets: Vec::new(),
            agent: None,
            description: None,
            when: None,
            assert: Vec::new(),
        }
    }

    /// A `command` phase.
    pub fn command(id: PhaseId, run: RunSpec) -> Self {
        let mut spec = Self::new(id, "command");
        spec.run = Some(run);
        spec
    }

    /// Adds needs (builder style).
    pub fn needs(mut self, needs: impl IntoIterator<Item = PhaseId>) -> Self {
        self.needs = self.needs.iter().cloned().chain(needs).collect();
        self
    }

    /// Extra attempts after a failure: its own `retries`, else 0. A validated pipeline's
    /// phases have `[defaults]` applied already.
    pub fn retry_limit(&self) -> u32 {
        self.retries.unwrap_or(0)
    }

    /// Delay between attempts: its own `backoff`, else [`Backoff::default`].
    pub fn retry_backoff(&self) -> Backoff {
        self.backoff.as_deref().copied().unwrap_or_default()
    }

    /// Fills what the phase leaves unset from `defaults`: `timeout`, `retries` and
    /// `backoff` always; `agent` and `env` (merged under the phase's own) when `declared`,
    /// that is when the phase is of a registered kind. A phase with its own implementation
    /// (added in code) runs in-process where it is, so the defaults' agent and environment
    /// are not its. Applying the same defaults twice changes nothing.
    ///
    /// This is the one place `[defaults]` are applied: validation calls it for every phase,
    /// whether it came from a file or from code.
    pub fn apply_defaults(&mut self, defaults: &Defaults, declared: bool) {
        if self.timeout.is_none() {
            self.timeout = defaults.timeout;
        }
        if self.retries.is_none() {
            self.retries = defaults.retries;
        }
        if self.backoff.is_none() {
            self.backoff = defaults.backoff.map(Box::new);
        }
        if !declared {
            return;
        }
        if self.agent.is_none() {
            self.agent.clone_from(&defaults.agent);
        }
        if !defaults.env.is_empty() {
            let mut env = defaults.env.clone();
            env.extend(std::mem::take(&mut self.env));
            self.env = env.into();
        }
    }
}

/// Circuit-breaker settings of an agent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerSpec {
    /// Consecutive failures that open the breaker; 0 disables it.
    pub failures: u32,
    /// How long the breaker stays open before it lets one phase through (half-open).
    pub cooldown: Duration,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// One agent as declared (or implied).
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// The agent's name (the key under `[agents]`, or the type for implied agents).
    pub name: String,
    /// The agent type (`local`, `docker`, `git`, `python`, ...).
    pub agent_type: String,
    /// Phases at once; `None` means the type's default.
    pub capacity: Option<usize>,
    /// Type-specific settings.
    pub with: WithTable,
    /// Circuit breaker; `None` takes the agent type's (see
    /// [`crate::registry::AgentTypeDefaults`]). A validated pipeline's agents have it set.
    pub breaker: Option<BreakerSpec>,
    /// What happens to phases sent to it when its health check fails.
    pub unavailable: Unavailable,
}

/// What happens to the phases of an agent whose health check fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unavailable {
    /// They fail, with the agent's error (the default).
    #[default]
    Fail,
    /// They end `skipped`, with the agent's error as the reason.
    Skip,
}

/// Most extra attempts a phase may declare (`retries`).
pub const MAX_RETRIES: u32 = 100;

/// Most phases at once (`jobs`, `--jobs`) and most phases an agent takes at once
/// (`capacity`).
pub const MAX_JOBS: usize = 4096;

/// Per-phase defaults from `[defaults]`.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// Default timeout.
    pub timeout: Option<Duration>,
    /// Default retries.
    pub retries: Option<u32>,
    /// Default backoff.
    pub backoff: Option<Backoff>,
    /// Default env, merged under each phase's env.
    pub env: IndexMap<String, String>,
    /// Default agent.
    pub agent: Option<String>,
}

/// A whole pipeline as declared.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// Pipeline name.
    pub name: String,
    /// Phases at once; `None` means the number of CPUs.
    pub jobs: Option<usize>,
    /// Where runs, logs and reports go, relative to `base_dir`.
    pub state_dir: PathBuf,
    /// Variables.
    pub vars: IndexMap<String, String>,
    /// Agents, in declaration order.
    pub agents: IndexMap<String, AgentSpec>,
    /// Phases, in declaration order.
    pub phases: Vec<PhaseSpec>,
    /// The directory relative paths resolve against.
    pub base_dir: PathBuf,
    /// The file this came from, if any.
    pub source_path: Option<PathBuf>,
    /// `[defaults]` as declared. Validation applies them to every phase (see
    /// [`PhaseSpec::apply_defaults`]); they are kept for phases added later (in code).
    pub defaults: Defaults,
    /// `[policy]`, when declared: which phases may start.
    pub policy: Option<crate::policy::PolicySpec>,
    /// `[notify.NAME]`: where the run's events are posted, in declaration order.
    pub notify: Vec<NotifyTarget>,
}

/// The events a notification target can be sent.
pub const NOTIFY_EVENTS: &[&str] = &[
    "run.started",
    "run.finished",
    "run.failed",
    "phase.started",
    "phase.retrying",
    "phase.finished",
    "phase.failed",
];

/// The body a notification target is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyFormat {
    /// `{"text": "..."}`, what Slack (and Mattermost, Rocket.Chat...) incoming webhooks take.
    Slack,
    /// The event as a JSON object, signed with HMAC-SHA256 when the target has a secret.
    Json,
}

/// Where a notification target's URL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyUrl {
    /// Written in the file.
    Literal(String),
    /// Read from this environment variable when the run starts (a webhook URL that is
    /// itself a credential, as Slack's are).
    Env(String),
}

/// `[notify.NAME]`: one place the run's events are posted to.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyTarget {
    /// The target's name (what records and warnings show; never the URL).
    pub name: String,
    /// The URL (`http://` or `https://`).
    pub url: NotifyUrl,
    /// The body.
    pub format: NotifyFormat,
    /// Name of the environment variable holding the HMAC key (JSON bodies only).
    pub secret: Option<String>,
    /// Events sent, from [`NOTIFY_EVENTS`] (default: `run.finished`).
    pub on: Vec<String>,
    /// Limit of one request, and of the wait for pending deliveries at the run's end.
    pub timeout: Duration,
    /// Extra attempts after a failed request.
    pub retries: u32,
}

/// Most extra attempts of one notification.
pub const MAX_NOTIFY_RETRIES: u32 = 10;

impl PipelineSpec {
    /// An empty pipeline rooted at `base_dir`.
    pub fn new(name: impl Into<String>, base_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            jobs: None,
            state_dir: PathBuf::from(".orch"),
            vars: IndexMap::new(),
            agents: IndexMap::new(),
            phases: Vec::new(),
            base_dir: base_dir.into(),
            source_path: None,
            defaults: Defaults::default(),
            policy: None,
            notify: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(350),
            jitter: false,
        };
        let got: Vec<_> = (1..=4).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let b = Backoff {
            jitter: true,
            ..Backoff::default()
        };
        for _ in 0..100 {
            let d = b.delay_jittered(2);
            assert!(d >= b.delay(2) / 2 && d <= b.delay(2), "{d:?}");
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            timeout: Some(Duration::from_secs(7)),
            retries: Some(2),
            backoff: Some(Backoff {
                initial: Duration::from_millis(10),
                ..Backoff::default()
            }),
            env: [("STAGE".to_owned(), "ci".to_owned())]
                .into_iter()
                .collect(),
            agent: Some("serial".into()),
        }
    }

    #[test]
    fn defaults_fill_what_a_phase_leaves_unset_and_only_that() {
        let d = defaults();
        let mut p = PhaseSpec::command(PhaseId::new("a").unwrap(), RunSpec::Shell("x".into()));
        p.retries = Some(0);
        p.env.insert("STAGE".into(), "mine".into());
        p.env.insert("OWN".into(), "1".into());
        p.apply_defaults(&d, true);
        assert_eq!(p.timeout, d.timeout);
        assert_eq!((p.retries, p.retry_limit()), (Some(0), 0));
        assert_eq!(p.retry_backoff(), d.backoff.unwrap());
        assert_eq!(p.agent.as_deref(), Some("serial"));
        let env: Vec<_> = p.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(env, ["STAGE=mine", "OWN=1"]);
        // Twice is once.
        let before = format!("{p:?}");
        p.apply_defaults(&d, true);
        assert_eq!(format!("{p:?}"), before);
    }

    #[test]
    fn a_phase_with_its_own_implementation_takes_no_agent_or_env_from_defaults() {
        let mut p = PhaseSpec::new(PhaseId::new("f").unwrap(), "python");
        p.apply_defaults(&defaults(), false);
        assert_eq!(
            (p.retry_limit(), p.timeout),
            (2, Some(Duration::from_secs(7)))
        );
        assert_eq!(p.agent, None);
        assert!(p.env.is_empty());
        let unset = PhaseSpec::new(PhaseId::new("g").unwrap(), "python");
        assert_eq!(
            (unset.retry_limit(), unset.retry_backoff()),
            (0, Backoff::default())
        );
    }

    #[test]
    fn a_phase_env_reads_writes_and_prints_as_its_map_and_is_one_pointer_while_empty() {
        assert_eq!(
            std::mem::size_of::<PhaseEnv>(),
            std::mem::size_of::<usize>()
        );
        let mut env = PhaseEnv::new();
        assert!(env.is_empty());
        assert_eq!(format!("{env:?}"), "{}");
        assert_eq!(env, PhaseEnv::from(IndexMap::new()));
        env.insert("B".into(), "2".into());
        env.extend([("A".to_owned(), "1".to_owned())]);
        let map: IndexMap<String, String> = [("B", "2"), ("A", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(format!("{env:?}"), format!("{map:?}"));
        let seen: Vec<String> = (&env)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(seen, ["B=2", "A=1"]);
        assert_eq!(env, PhaseEnv::from(map.clone()));
        assert_eq!(env.clone().into_map(), map);
        // Emptied again, it equals one that never held anything.
        env.clear();
        assert_eq!(env, PhaseEnv::new());
    }
}
