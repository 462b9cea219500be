//! The `parity` kind: checks a discovery against a spec of required modules and writes
//! `discrepancy.json`.
//!
//! Matching, in this order, each tier over all modules before the next:
//! 1. **exact**: the module's name equals a candidate's name;
//! 2. **alias**: one of the module's `aliases` equals a candidate's name;
//! 3. **normalised**: [`normalise`]d names are equal.
//!
//! Candidates are the discovered services (named by their directory, their manifest's
//! package name and the Compose services that build them) and the Compose services that
//! build no discovered directory. A candidate satisfies at most one module. A module with
//! one unclaimed candidate in a tier takes it; with several it is `ambiguous` (they are
//! listed and stay free for other modules). Names are never matched by substring: `ai`
//! does not match `email-worker`. Groups (`payments-*`) are matched last and take every
//! free candidate whose name starts with the prefix (exactly, or after normalising).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::interpolate::Reference;
use orch_core::registry::Kind;
use orch_core::{
    Artifact, Description, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec,
    PlanContext, Registry,
};
use serde::{Deserialize, Serialize};

use crate::discover::{ComposeRef, Discovery, Service};
use crate::errors::ParityError;

/// The version of the `discrepancy.json` format written by this build.
pub const DISCREPANCY_FORMAT_VERSION: u32 = 1;

/// Suffixes [`normalise`] removes (one, when something remains before it).
pub const STRIPPED_SUFFIXES: [&str; 5] = ["-service", "-svc", "-api", "-server", "-app"];

/// A spec of required modules: a TOML file of `[[module]]` tables.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParitySpec {
    /// The modules, in file order.
    #[serde(default, rename = "module")]
    pub modules: Vec<ModuleSpec>,
}

/// One required module.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// The name; a trailing `*` makes it a group (`payments-*`).
    pub name: String,
    /// A free-form category (`core`, `payments`, ...).
    #[serde(default)]
    pub category: Option<String>,
    /// Whether a missing module counts in `critical_missing`.
    #[serde(default)]
    pub critical: bool,
    /// Other names it may have (a trailing `*` makes an alias a group pattern too).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Free text, carried into the report.
    #[serde(default)]
    pub description: Option<String>,
}

impl ModuleSpec {
    /// Whether the module is a wildcard group.
    pub fn is_group(&self) -> bool {
        self.name.ends_with('*')
    }
}

impl ParitySpec {
    /// Parses and checks a spec (`path` is for messages).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ParityError> {
        let fail = |message: String| ParityError::Spec {
            path: path.to_owned(),
            message,
        };
        let spec: ParitySpec = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" (line {})", crate::discover::line_of(text, s.start)))
                .unwrap_or_default();
            fail(format!("{}{at}", e.message().trim_end()))
        })?;
        let mut seen = std::collections::BTreeSet::new();
        for m in &spec.modules {
            let name = m.name.trim();
            if name.is_empty() || name == "*" {
                return Err(fail("a module has an empty name".to_owned()));
            }
            if name.trim_end_matches('*').contains('*') {
                return Err(fail(format!(
                    "module `{name}`: `*` is only allowed at the end of a name"
                )));
            }
            if !seen.insert(name.to_owned()) {
                return Err(fail(format!("module `{name}` is listed twice")));
            }
        }
        Ok(spec)
    }

    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Self, ParityError> {
        let text =
            orch_core::input::read_regular_text(path, MAX_INPUT).map_err(|e| input_err(path, e))?;
        Self::from_toml(&text, path)
    }
}

/// Lowercases, turns `_`, `.` and spaces into `-`, collapses repeated `-`, trims `-` and
/// removes one suffix of [`STRIPPED_SUFFIXES`] when something remains before it.
///
/// ```
/// use orch_delivery::parity::normalise;
/// assert_eq!(normalise("User_Service"), "user");
/// assert_eq!(normalise("payments api"), "payments");
/// assert_eq!(normalise("api"), "api");
/// assert_eq!(normalise("email-worker"), "email-worker");
/// ```
pub fn normalise(name: &str) -> String {
    let mut s = unify(name);
    for suffix in STRIPPED_SUFFIXES {
        if let Some(stem) = s.strip_suffix(suffix)
            && !stem.is_empty()
        {
            s = stem.to_owned();
            break;
        }
    }
    s
}

/// Lowercase with separators unified, without removing suffixes.
fn unify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        let c = if matches!(c, '_' | '.' | ' ' | '\t') {
            '-'
        } else {
            c.to_ascii_lowercase()
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out.trim_matches('-').to_owned()
}

/// How a module ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleStatus {
    /// A service with a manifest, a Dockerfile and tests.
    Present,
    /// Evidence, but incomplete (the reason says what is missing).
    Partial,
    /// Several candidates; none was chosen.
    Ambiguous,
    /// Nothing found.
    Missing,
}

/// Which tier matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum MatchedBy {
    /// The module's name.
    Exact,
    /// One of its aliases.
    Alias,
    /// Normalised names.
    Normalised,
}

/// A service or Compose entry matched to a module (or offered, for ambiguous ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its name (directory name, or Compose service name).
    pub name: String,
    /// The service directory, when it is a discovered service.
    pub path: Option<String>,
    /// Compose services that are (or build) it.
    pub compose: Vec<ComposeRef>,
    /// What it lacks to count as present: `no Dockerfile`, `no manifest (Dockerfile only)`,
    /// `no tests`, `only a Compose entry`.
    pub lacks: Vec<String>,
}

/// One module's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModuleReport {
    /// The module's name.
    pub name: String,
    /// Its category.
    pub category: Option<String>,
    /// Whether it is critical.
    pub critical: bool,
    /// Whether it is a wildcard group.
    pub group: bool,
    /// The verdict.
    pub status: ModuleStatus,
    /// The tier that matched, for present and partial modules.
    pub matched_by: Option<MatchedBy>,
    /// What satisfies it (one, or every member of a group).
    pub matches: Vec<Candidate>,
    /// For ambiguous modules: every candidate.
    pub candidates: Vec<Candidate>,
    /// Why it is partial, ambiguous or missing.
    pub reason: Option<String>,
}

/// The counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParitySummary {
    /// Modules in the spec.
    pub required: usize,
    /// Present modules.
    pub present: usize,
    /// Partial modules.
    pub partial: usize,
    /// Ambiguous modules.
    pub ambiguous: usize,
    /// Missing modules.
    pub missing: usize,
    /// Missing modules marked critical.
    pub critical_missing: usize,
    /// `present / required * 100`, one decimal (`100.0` when nothing is required).
    pub parity_percent: String,
}

/// `discrepancy.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParityReport {
    /// Format version ([`DISCREPANCY_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The spec file.
    pub spec: String,
    /// The discovery report.
    pub discovery: String,
    /// The counts.
    pub summary: ParitySummary,
    /// Modules in spec order.
    pub modules: Vec<ModuleReport>,
    /// Candidates no module took, sorted by name.
    pub unmatched: Vec<Candidate>,
}

impl ParityReport {
    /// Names of missing modules, in spec order.
    pub fn missing_modules(&self) -> Vec<&str> {
        self.modules
            .iter()
            .filter(|m| m.status == ModuleStatus::Missing)
            .map(|m| m.name.as_str())
            .collect()
    }
}

struct Cand<'a> {
    name: String,
    keys: Vec<String>,
    service: Option<&'a Service>,
    compose: Vec<ComposeRef>,
}

impl Cand<'_> {
    fn report(&self) -> Candidate {
        let mut lacks = Vec::new();
        match self.service {
            None => lacks.push("only a Compose entry".to_owned()),
            Some(s) => {
                if !s.has_language_manifest() {
                    lacks.push("no manifest (Dockerfile only)".to_owned());
                }
                if s.dockerfile.is_none() {
                    lacks.push("no Dockerfile".to_owned());
                }
                if !s.tests {
                    lacks.push("no tests".to_owned());
                }
            }
        }
        Candidate {
            name: self.name.clone(),
            path: self.service.map(|s| s.path.clone()),
            compose: self.compose.clone(),
            lacks,
        }
    }
}

fn candidates(d: &Discovery) -> Vec<Cand<'_>> {
    let mut out: Vec<Cand<'_>> = Vec::new();
    for s in &d.services {
        let mut keys = vec![s.name.clone()];
        if let Some(p) = &s.package_name {
            keys.push(p.rsplit('/').next().unwrap_or(p).to_owned());
        }
        keys.extend(s.compose_services.iter().map(|c| c.service.clone()));
        keys.sort();
        keys.dedup();
        out.push(Cand {
            name: s.name.clone(),
            keys,
            service: Some(s),
            compose: s.compose_services.clone(),
        });
    }
    // Compose services that build no discovered directory: join a service of the same
    // name when there is exactly one, else an entry of their own (one per name).
    let mut compose_only: BTreeMap<String, Vec<ComposeRef>> = BTreeMap::new();
    for f in &d.compose_files {
        for cs in &f.services {
            if cs.service_path.is_some() {
                continue;
            }
            compose_only
                .entry(cs.name.clone())
                .or_default()
                .push(ComposeRef {
                    file: f.path.clone(),
                    service: cs.name.clone(),
                });
        }
    }
    for (name, refs) in compose_only {
        let same: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, c)| c.service.is_some() && c.keys.contains(&name))
            .map(|(i, _)| i)
            .collect();
        if let [i] = same.as_slice() {
            out[*i].compose.extend(refs);
            out[*i].compose.sort();
        } else {
            out.push(Cand {
                keys: vec![name.clone()],
                name,
                service: None,
                compose: refs,
            });
        }
    }
    out
}

/// Matches a spec against a discovery.
pub fn check(spec: &ParitySpec, discovery: &Discovery) -> ParityReport {
    let cands = candidates(discovery);
    let mut claimed = vec![false; cands.len()];
    let n = spec.modules.len();
    type Verdict = (ModuleStatus, Option<MatchedBy>, Vec<usize>);
    let mut result: Vec<Option<Verdict>> = vec![None; n];

    type Matcher = fn(&ModuleSpec, &Cand<'_>) -> bool;
    let tiers: [(MatchedBy, Matcher); 3] = [
        (MatchedBy::Exact, |m, c| c.keys.contains(&m.name)),
        (MatchedBy::Alias, |m, c| {
            m.aliases.iter().any(|a| c.keys.iter().any(|k| k == a))
        }),
        (MatchedBy::Normalised, |m, c| {
            let mut wanted: Vec<String> = vec![normalise(&m.name)];
            wanted.extend(
                m.aliases
                    .iter()
                    .filter(|a| !a.ends_with('*'))
                    .map(|a| normalise(a)),
            );
            c.keys.iter().any(|k| wanted.contains(&normalise(k)))
        }),
    ];
    for (tier, matches) in tiers {
        for (mi, m) in spec.modules.iter().enumerate() {
            if m.is_group() || result[mi].is_some() {
                continue;
            }
            let found: Vec<usize> = (0..cands.len())
                .filter(|&ci| !claimed[ci] && matches(m, &cands[ci]))
                .collect();
            match found.len() {
                0 => {}
                1 => {
                    claimed[found[0]] = true;
                    let status = if cands[found[0]].report().lacks.is_empty() {
                        ModuleStatus::Present
                    } else {
                        ModuleStatus::Partial
                    };
                    result[mi] = Some((status, Some(tier), found));
                }
                _ => result[mi] = Some((ModuleStatus::Ambiguous, Some(tier), found)),
            }
        }
    }
    // Groups: every free candidate with the prefix, exactly or once normalised.
    for (mi, m) in spec.modules.iter().enumerate() {
        if !m.is_group() {
            continue;
        }
        let mut patterns = vec![(m.name.as_str(), MatchedBy::Exact)];
        patterns.extend(m.aliases.iter().map(|a| (a.as_str(), MatchedBy::Alias)));
        let mut members: Vec<(usize, MatchedBy)> = Vec::new();
        for (ci, c) in cands.iter().enumerate() {
            if claimed[ci] {
                continue;
            }
            let best = patterns
                .iter()
                .filter_map(|(pattern, by)| {
                    group_match(pattern, &c.keys)
                        .map(|exact| if exact { *by } else { MatchedBy::Normalised })
                })
                .min_by_key(|by| *by as u8);
            if let Some(by) = best {
                members.push((ci, by));
            }
        }
        if members.is_empty() {
            continue;
        }
        for (ci, _) in &members {
            claimed[*ci] = true;
        }
        let how = members.iter().map(|(_, by)| *by).min_by_key(|by| *by as u8);
        let mut members: Vec<usize> = members.into_iter().map(|(ci, _)| ci).collect();
        let complete = members
            .iter()
            .all(|&ci| cands[ci].report().lacks.is_empty());
        let status = if complete {
            ModuleStatus::Present
        } else {
            ModuleStatus::Partial
        };
        members.sort_by(|a, b| {
            let key = |i: usize| {
                (
                    cands[i].service.map(|s| s.path.clone()),
                    cands[i].name.clone(),
                )
            };
            key(*a).cmp(&key(*b))
        });
        result[mi] = Some((status, how, members));
    }

    let mut modules = Vec::with_capacity(n);
    let mut summary = ParitySummary {
        required: n,
        ..ParitySummary::default()
    };
    for (m, r) in spec.modules.iter().zip(result) {
        let (status, matched_by, found) = r.unwrap_or((ModuleStatus::Missing, None, Vec::new()));
        let reports: Vec<Candidate> = found.iter().map(|&ci| cands[ci].report()).collect();
        let reason = match status {
            ModuleStatus::Present => None,
            ModuleStatus::Partial => Some(
                reports
                    .iter()
                    .filter(|c| !c.lacks.is_empty())
                    .map(|c| format!("{}: {}", c.name, c.lacks.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ModuleStatus::Ambiguous => Some(format!(
                "{} candidates: {}",
                reports.len(),
                reports
                    .iter()
                    .map(|c| c.path.clone().unwrap_or_else(|| c.name.clone()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            ModuleStatus::Missing => Some("no service or Compose entry matches".to_owned()),
        };
        match status {
            ModuleStatus::Present => summary.present += 1,
            ModuleStatus::Partial => summary.partial += 1,
            ModuleStatus::Ambiguous => summary.ambiguous += 1,
            ModuleStatus::Missing => {
                summary.missing += 1;
                if m.critical {
                    summary.critical_missing += 1;
                }
            }
        }
        let (matches, candidates) = if status == ModuleStatus::Ambiguous {
            (Vec::new(), reports)
        } else {
            (reports, Vec::new())
        };
        modules.push(ModuleReport {
            name: m.name.clone(),
            category: m.category.clone(),
            critical: m.critical,
            group: m.is_group(),
            status,
            matched_by: if status == ModuleStatus::Missing {
                None
            } else {
                matched_by
            },
            matches,
            candidates,
            reason,
        });
    }
    summary.parity_percent = percent(summary.present, summary.required);
    let mut unmatched: Vec<Candidate> = cands
        .iter()
        .enumerate()
        .filter(|(ci, _)| !claimed[*ci])
        .map(|(_, c)| c.report())
        .collect();
    unmatched.sort_by(|a, b| (&a.name, &a.path).cmp(&(&b.name, &b.path)));
    ParityReport {
        format_version: DISCREPANCY_FORMAT_VERSION,
        spec: String::new(),
        discovery: String::new(),
        summary,
        modules,
        unmatched,
    }
}

/// Whether a group pattern (`payments-*`, or a plain alias) matches one of `keys`:
/// `Some(true)` exactly, `Some(false)` once normalised, `None` not at all. A prefix must be
/// followed by something, and after normalising the match must end at a separator, so
/// `pay*` never matches `payments` through normalising alone.
fn group_match(pattern: &str, keys: &[String]) -> Option<bool> {
    let (prefix, wildcard) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let exact = keys.iter().any(|k| {
        if wildcard {
            k.len() > prefix.len() && k.starts_with(prefix)
        } else {
            k == prefix
        }
    });
    if exact {
        return Some(true);
    }
    let p = unify(prefix);
    let loose = keys.iter().any(|k| {
        let k = unify(k);
        if wildcard {
            k.len() > p.len() && k.starts_with(&p) && k[p.len()..].starts_with('-')
        } else {
            normalise(&k) == normalise(&p)
        }
    });
    loose.then_some(false)
}

/// `part / whole * 100` with one decimal, rounded half away from zero, computed in
/// integers so it never prints `-0.0` or float noise.
fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "100.0".to_owned();
    }
    let tenths = (part as u128 * 1000 * 2 + whole as u128) / (whole as u128 * 2);
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// Largest parity spec or discovery file read (bytes).
const MAX_INPUT: u64 = 64 << 20;

/// A spec or discovery file that cannot be read: missing, not a regular file (a FIFO would
/// block), too large.
fn input_err(path: &Path, e: orch_core::input::InputError) -> ParityError {
    ParityError::Read {
        path: path.to_owned(),
        source: match e {
            orch_core::input::InputError::Io(source) => source,
            other => std::io::Error::other(other.to_string()),
        },
    }
}

/// Reads a `discovery.json`.
pub fn load_discovery(path: &Path) -> Result<Discovery, ParityError> {
    let text = orch_core::input::read_regular(path, MAX_INPUT).map_err(|e| input_err(path, e))?;
    serde_json::from_slice(&text).map_err(|source| ParityError::Discovery {
        path: path.to_owned(),
        source,
    })
}

/// The `with` table of `parity`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParitySettings {
    /// The spec file.
    pub spec: String,
    /// A `discovery.json` (default: the `report` output of the first needed phase that has
    /// one).
    #[serde(default)]
    pub discovery: Option<String>,
    /// Where to write `discrepancy.json` (default: the run directory).
    #[serde(default)]
    pub output: Option<String>,
}

/// The `parity` phase.
#[derive(Clone, Debug)]
pub struct ParityPhase {
    settings: ParitySettings,
    needs: Vec<PhaseId>,
}

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new(
            "parity",
            "check discovered services against a spec of required modules",
        ),
        |spec: &PhaseSpec, settings: ParitySettings| {
            if settings.discovery.is_none() && spec.needs.is_empty() {
                return Err(spec
                    .with
                    .error("`parity` needs a `discovery` file or a `discover` phase in `needs`"));
            }
            Ok(ParityPhase {
                settings,
                needs: spec.needs.to_vec(),
            })
        },
    )
}

impl ParityPhase {
    fn discovery_path(&self, ctx: &PhaseContext) -> Result<PathBuf, PhaseError> {
        if let Some(d) = &self.settings.discovery {
            return ctx
                .resolve(d)
                .map_err(|e| PhaseError::failed(format!("cannot render `discovery`: {e}")));
        }
        for need in &self.needs {
            let r = Reference::Output {
                phase: need.to_string(),
                key: "report".to_owned(),
            };
            if let Ok(path) = ctx.lookup(&r) {
                return Ok(ctx.base_dir().join(&*path));
            }
        }
        Err(PhaseError::failed(format!(
            "no discovery report: none of the needed phases ({}) published a `report` output; set `discovery`",
            self.needs
                .iter()
                .map(PhaseId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

#[async_trait]
impl Phase for ParityPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let discovery = match &self.settings.discovery {
            Some(d) => ctx.resolve(d).display().to_string(),
            None => format!(
                "report of {}",
                self.needs
                    .iter()
                    .map(PhaseId::as_str)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        };
        let d = Description::new(format!(
            "check modules of {} against discovered services",
            ctx.render(&self.settings.spec)
        ))
        .detail(
            "spec",
            ctx.resolve(&self.settings.spec).display().to_string(),
        )
        .detail("discovery", discovery);
        match &self.settings.output {
            Some(o) => {
                let p = ctx.resolve(o);
                d.detail("report", p.display().to_string())
                    .change(format!("write {}", p.display()))
            }
            None => d.detail("report", "RUN_DIR/discrepancy.json"),
        }
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let spec_path = ctx
            .resolve(&self.settings.spec)
            .map_err(|e| PhaseError::failed(format!("cannot render `spec`: {e}")))?;
        let discovery_path = self.discovery_path(ctx)?;
        let output = match &self.settings.output {
            Some(o) => ctx
                .resolve(o)
                .map_err(|e| PhaseError::failed(format!("cannot render `output`: {e}")))?,
            None => ctx.run_dir().join("discrepancy.json"),
        };
        let spec = ParitySpec::load(&spec_path).map_err(|e| PhaseError::from_error(&e))?;
        let discovery = load_discovery(&discovery_path).map_err(|e| PhaseError::from_error(&e))?;
        let mut report = check(&spec, &discovery);
        report.spec = spec_path.display().to_string();
        report.discovery = discovery_path.display().to_string();
        let written = ctx
            .write_json(&output, &report)
            .map_err(|e| PhaseError::from_error(&e))?;
        let (size, digest) = (written.size, written.digest);

        let s = &report.summary;
        ctx.log(format!(
            "{} required: {} present, {} partial, {} ambiguous, {} missing ({} critical); parity {}%",
            s.required, s.present, s.partial, s.ambiguous, s.missing, s.critical_missing, s.parity_percent
        ));
        for m in &report.modules {
            let status = serde_json::to_value(m.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            match &m.reason {
                Some(r) => ctx.log(format!("{status:9} {}: {r}", m.name)),
                None => ctx.log(format!("{status:9} {}", m.name)),
            }
        }
        let critical_missing: Vec<&str> = report
            .modules
            .iter()
            .filter(|m| m.critical && m.status == ModuleStatus::Missing)
            .map(|m| m.name.as_str())
            .collect();
        let path = output.display().to_string();
        let mut outcome = PhaseOutcome::with_outputs([
            ("required", s.required.to_string()),
            ("present", s.present.to_string()),
            ("partial", s.partial.to_string()),
            ("ambiguous", s.ambiguous.to_string()),
            ("missing", s.missing.to_string()),
            ("critical_missing", s.critical_missing.to_string()),
            ("parity_percent", s.parity_percent.clone()),
            ("report", path.clone()),
            (
                "missing_modules",
                orch_core::list_output::encode(report.missing_modules()),
            ),
            (
                "critical_missing_modules",
                orch_core::list_output::encode(critical_missing),
            ),
        ]);
        outcome.artifacts.push(Artifact {
            kind: "report".to_owned(),
            name: "discrepancy.json".to_owned(),
            path: Some(path),
            digest: Some(digest),
            size: Some(size),
            details: BTreeMap::new(),
        });
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_to_one_decimal() {
        assert_eq!(percent(7, 12), "58.3");
        assert_eq!(percent(2, 3), "66.7");
        assert_eq!(percent(1, 8), "12.5");
        assert_eq!(percent(0, 5), "0.0");
        assert_eq!(percent(5, 5), "100.0");
        assert_eq!(percent(0, 0), "100.0");
    }

    #[test]
    fn normalising_never_makes_substrings_match() {
        assert_ne!(normalise("ai"), normalise("email-worker"));
        assert_eq!(normalise("Auth Service"), normalise("auth_svc"));
        assert_eq!(normalise("--a__b--"), "a-b");
    }
}
