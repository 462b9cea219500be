//! The `discover` kind: an inventory of a project tree (services, Compose files, env var
//! names, problems), written as `discovery.json`.
//!
//! [`discover`] is the whole job as a plain function; [`DiscoverPhase`] wraps it as a phase.

mod checks;
mod compose;
mod env;
pub mod model;
mod scan;
mod services;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::registry::Kind;
use orch_core::{
    Artifact, Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
    Registry,
};
use serde::Deserialize;

use crate::errors::DiscoverError;
use crate::util;
use crate::yaml::Yaml;
pub(crate) use env::EnvIndex;
pub use model::*;
pub(crate) use scan::line_of;
use services::ServiceAcc;
use walk::FileRec;

/// Largest file read for source scanning, env files and manifests.
const MAX_SCAN_BYTES: u64 = 1 << 20;

/// What to walk.
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// The directory paths are reported relative to (the pipeline's directory).
    pub base: PathBuf,
    /// Directories to walk (absolute, or relative to `base`).
    pub roots: Vec<PathBuf>,
    /// Extra patterns to leave out, in `.gitignore` syntax, relative to `base`.
    pub ignore: Vec<String>,
    /// Directories to leave out (the state directory), absolute.
    pub skip: Vec<PathBuf>,
}

impl DiscoverOptions {
    /// Walks `base` itself.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        let base = base.into();
        Self {
            roots: vec![base.clone()],
            base,
            ignore: Vec::new(),
            skip: Vec::new(),
        }
    }
}

/// Walks the tree and reports what is there. Problems in files are findings in the result;
/// only an unusable root or pattern is an error.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("api")).unwrap();
/// std::fs::write(dir.path().join("api/requirements.txt"), "fastapi\n").unwrap();
/// let found = orch_delivery::discover::discover(
///     &orch_delivery::discover::DiscoverOptions::new(dir.path()),
/// ).unwrap();
/// assert_eq!(found.services[0].path, "api");
/// assert_eq!(found.services[0].language.as_deref(), Some("python"));
/// ```
pub fn discover(opts: &DiscoverOptions) -> Result<Discovery, DiscoverError> {
    discover_with(opts, &|| false)
}

/// Joins a relative path onto a `base`-relative directory, resolving `.` and `..`
/// lexically (the result may start with `..` when it leaves the base).
pub(crate) fn join_rel(dir_rel: &str, path: &str) -> String {
    if Path::new(path).is_absolute() {
        return path.to_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    let joined = if dir_rel == "." {
        PathBuf::from(path)
    } else {
        Path::new(dir_rel).join(path)
    };
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else {
                    parts.push("..".to_owned());
                }
            }
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// A file's text, when it is a regular file of at most [`MAX_SCAN_BYTES`] in UTF-8 (an
/// `env_file` naming a FIFO must not block the walk).
fn read_text(abs: &Path) -> Option<String> {
    orch_core::input::read_regular_text(abs, MAX_SCAN_BYTES).ok()
}

/// Reads the text of one Compose file as discovery reads it (YAML with duplicate keys
/// kept, services, builds, ports, `env_file` and interpolation sites) and returns the file
/// with the problems found. `rel` names the file in problems; `base` is the directory that
/// relative build contexts and `env_file` paths are checked against. [`discover`] reads
/// whole trees; this reads one text (for tools and fuzzing).
///
/// ```
/// let (file, problems) = orch_delivery::discover::read_compose_text(
///     "services:\n  web:\n    image: nginx\n    ports: [\"8080:80\"]\n",
///     "compose.yaml",
///     std::path::Path::new("."),
/// );
/// assert_eq!(file.unwrap().services.len(), 1);
/// assert!(problems.is_empty());
/// ```
pub fn read_compose_text(
    text: &str,
    rel: &str,
    base: &Path,
) -> (Option<ComposeFile>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut env = EnvIndex::default();
    match Yaml::parse(text) {
        Ok(doc) => {
            let read = compose::read(&doc, text, rel, "name", base, &mut problems, &mut env);
            (Some(read.file), problems)
        }
        Err(e) => {
            problems.push(Problem {
                file: rel.to_owned(),
                line: e.line,
                kind: "malformed-file".to_owned(),
                severity: Severity::Error,
                message: format!("invalid YAML: {}", e.message),
            });
            (None, problems)
        }
    }
}

/// What reading the files found, before it is assembled into a [`Discovery`].
struct Found {
    services: BTreeMap<String, ServiceAcc>,
    env: EnvIndex,
    /// The env files read (their names are defined there).
    env_files_read: BTreeSet<String>,
    compose_reads: Vec<compose::ComposeRead>,
    problems: Vec<Problem>,
}

/// [`discover`], stopping with [`DiscoverError::Cancelled`] once `cancelled` says so: the
/// walk, what the files declare, the checks across files, then the report.
pub(crate) fn discover_with(
    opts: &DiscoverOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<Discovery, DiscoverError> {
    let walk::Tree {
        base,
        roots,
        files,
        problems,
        skipped,
    } = walk::walk(opts, cancelled)?;
    let mut found = Found {
        services: services::directories(&files),
        env: EnvIndex::default(),
        env_files_read: BTreeSet::new(),
        compose_reads: Vec::new(),
        problems,
    };
    read_files(&files, &base, &mut found, cancelled)?;
    let Found {
        mut services,
        mut env,
        mut env_files_read,
        mut compose_reads,
        mut problems,
    } = found;
    services::link_compose(&mut compose_reads, &mut services);
    env.read_env_file_uses(&mut env_files_read, &base);
    checks::undefined_required_variables(&env, &mut problems);
    checks::port_and_dependency_checks(&compose_reads, &mut problems);

    let out_services = services::assemble(services, &base);
    let mut compose_files: Vec<ComposeFile> = compose_reads.into_iter().map(|r| r.file).collect();
    compose_files.sort_by(|a, b| a.path.cmp(&b.path));
    let env_vars = env.into_vars();
    problems.sort();
    problems.dedup();
    Ok(Discovery {
        format_version: DISCOVERY_FORMAT_VERSION,
        base: base.to_string_lossy().into_owned(),
        roots: roots.iter().map(|r| walk::rel_of(&base, r)).collect(),
        services: out_services,
        compose_files,
        env_vars,
        problems,
        skipped: skipped.into_iter().collect(),
    })
}

/// A problem with a file's content.
fn malformed(problems: &mut Vec<Problem>, rel: &str, line: Option<u64>, msg: String) {
    problems.push(Problem {
        file: rel.to_owned(),
        line,
        kind: "malformed-file".to_owned(),
        severity: Severity::Error,
        message: msg,
    });
}

/// Reads each file the walk found that can declare something (sources, env files, YAML,
/// manifests) and notes what it declares: env var sites, Compose files, and the facts of
/// the service it belongs to.
fn read_files(
    files: &[FileRec],
    base: &Path,
    found: &mut Found,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), DiscoverError> {
    let owners = services::owners(&found.services, files);
    let Found {
        services,
        env,
        env_files_read,
        compose_reads,
        problems,
    } = found;
    for (i, f) in files.iter().enumerate() {
        if i % 64 == 0 && cancelled() {
            return Err(DiscoverError::Cancelled);
        }
        let owner = owners[i].clone();
        let in_service = |owner: &str| -> String {
            if owner == "." {
                f.rel.clone()
            } else {
                f.rel[owner.len() + 1..].to_owned()
            }
        };
        if let Some(o) = &owner {
            let acc = services.get_mut(o);
            if let Some(acc) = acc {
                if scan::is_test_file(&in_service(o)) {
                    acc.test_files += 1;
                }
                if f.name == "tsconfig.json" && compose::parent_rel(&f.rel) == *o {
                    acc.has_tsconfig = true;
                }
            }
        }
        if f.size > MAX_SCAN_BYTES {
            continue;
        }
        let is_source = scan::is_scanned_source(&f.name);
        let is_env = scan::is_env_file_name(&f.name);
        let is_yaml = scan::is_yaml_name(&f.name);
        let is_manifest = scan::is_manifest(&f.name);
        if !(is_source || is_env || is_yaml || is_manifest) {
            continue;
        }
        let Some(text) = read_text(&f.abs) else {
            continue;
        };

        if is_source {
            for (name, line) in scan::env_reads(&text) {
                env.add(&name, &f.rel, Some(line), "source", None, false);
            }
            if let Some(acc) = owner.as_ref().and_then(|o| services.get_mut(o)) {
                for port in scan::source_port_defaults(&text) {
                    acc.ports.insert(DeclaredPort {
                        port,
                        protocol: "tcp".to_owned(),
                        source: "source-default".to_owned(),
                        file: f.rel.clone(),
                    });
                }
            }
        }

        if is_env {
            let how = if scan::is_env_template_name(&f.name) {
                "env-template"
            } else {
                "env-file"
            };
            for (name, line) in scan::env_file_names(&text) {
                env.add(&name, &f.rel, Some(line), how, None, true);
            }
            env_files_read.insert(f.rel.clone());
        }

        if is_yaml {
            let by_name = scan::is_compose_name(&f.name);
            if by_name || scan::has_top_level_services(&text) {
                match Yaml::parse(&text) {
                    Ok(doc) => {
                        if by_name || compose::looks_like_compose(&doc) {
                            let how = if by_name { "name" } else { "content" };
                            compose_reads
                                .push(compose::read(&doc, &text, &f.rel, how, base, problems, env));
                        }
                    }
                    Err(e) => malformed(
                        problems,
                        &f.rel,
                        e.line,
                        format!("invalid YAML: {}", e.message),
                    ),
                }
            }
        }

        if is_manifest && let Some(acc) = services.get_mut(&compose::parent_rel(&f.rel)) {
            if model::is_dockerfile_name(&f.name) {
                for (port, protocol, source) in scan::dockerfile_ports(&text) {
                    acc.ports.insert(DeclaredPort {
                        port,
                        protocol,
                        source: source.to_owned(),
                        file: f.rel.clone(),
                    });
                }
            }
            match scan::manifest_package_name(&f.name, &text) {
                Ok(name) => {
                    if acc.package_name.is_none() {
                        acc.package_name = name;
                    }
                }
                Err((line, msg)) => malformed(problems, &f.rel, line, msg),
            }
            if f.name == "package.json"
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(scripts) = v.get("scripts").and_then(|s| s.as_object())
            {
                for script in scripts.values().filter_map(|s| s.as_str()) {
                    for port in scan::command_ports(script) {
                        acc.ports.insert(DeclaredPort {
                            port,
                            protocol: "tcp".to_owned(),
                            source: "package-json-script".to_owned(),
                            file: f.rel.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn register_discover(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new(
            "discover",
            "inventory services, Compose files, env var names and problems of a tree",
        ),
        |spec: &PhaseSpec, settings: DiscoverSettings| {
            if settings.root.is_some() && settings.roots.is_some() {
                return Err(spec.with.error("set `root` or `roots`, not both"));
            }
            Ok(DiscoverPhase { settings })
        },
    )
}

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    register_discover(r)
}

/// The `with` table of `discover`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverSettings {
    /// Directory to walk, relative to the pipeline's directory (default: that directory).
    #[serde(default)]
    pub root: Option<String>,
    /// Several directories to walk (instead of `root`).
    #[serde(default)]
    pub roots: Option<Vec<String>>,
    /// Extra patterns to leave out, `.gitignore` syntax.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Where to write `discovery.json` (default: the run directory).
    #[serde(default)]
    pub output: Option<String>,
}

/// The `discover` phase.
#[derive(Clone, Debug)]
pub struct DiscoverPhase {
    settings: DiscoverSettings,
}

impl DiscoverPhase {
    fn roots(&self) -> Vec<String> {
        match (&self.settings.root, &self.settings.roots) {
            (Some(r), _) => vec![r.clone()],
            (None, Some(rs)) => rs.clone(),
            (None, None) => vec![".".to_owned()],
        }
    }
}

#[async_trait]
impl Phase for DiscoverPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let roots: Vec<String> = self.roots().iter().map(|r| ctx.render(r)).collect();
        let mut d = Description::new(format!("discover services under {}", roots.join(", ")));
        if !self.settings.ignore.is_empty() {
            d = d.detail("ignore", self.settings.ignore.join(", "));
        }
        match &self.settings.output {
            Some(o) => {
                let path = ctx.resolve(o);
                d.detail("report", path.display().to_string())
                    .change(format!("write {}", path.display()))
            }
            None => d.detail("report", "RUN_DIR/discovery.json"),
        }
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let render = |what: &str, s: &str| {
            ctx.render(s)
                .map_err(|e| PhaseError::failed(format!("cannot render `{what}`: {e}")))
        };
        let mut roots = Vec::new();
        for r in self.roots() {
            roots.push(PathBuf::from(render("root", &r)?));
        }
        let mut ignore = Vec::new();
        for p in &self.settings.ignore {
            ignore.push(render("ignore", p)?);
        }
        let output = match &self.settings.output {
            Some(o) => ctx.base_dir().join(render("output", o)?),
            None => ctx.run_dir().join("discovery.json"),
        };
        let opts = DiscoverOptions {
            base: ctx.base_dir().to_owned(),
            roots,
            ignore,
            skip: util::state_dirs(ctx),
        };
        let found = util::blocking(ctx, move |cancel| {
            discover_with(&opts, &|| cancel.is_cancelled())
        })
        .await?
        .map_err(|e| match e {
            DiscoverError::Cancelled => PhaseError::Cancelled,
            e => PhaseError::from_error(&e),
        })?;

        // Through the run's redactor, like every file a kind writes.
        let written = ctx
            .write_json(&output, &found)
            .map_err(|e| PhaseError::from_error(&e))?;
        let (size, digest) = (written.size, written.digest);
        ctx.log(format!(
            "{} service(s), {} compose file(s) with {} service(s), {} env var name(s), {} problem(s)",
            found.services.len(),
            found.compose_files.len(),
            found.compose_service_count(),
            found.env_vars.len(),
            found.problems.len()
        ));
        for p in &found.problems {
            let at = p
                .line
                .map_or_else(|| p.file.clone(), |l| format!("{}:{l}", p.file));
            ctx.log(format!(
                "{} {} {at}: {}",
                p.severity.as_str(),
                p.kind,
                p.message
            ));
        }
        let report = output.display().to_string();
        let mut outcome = PhaseOutcome::with_outputs([
            ("services", found.services.len().to_string()),
            ("compose_files", found.compose_files.len().to_string()),
            (
                "compose_services",
                found.compose_service_count().to_string(),
            ),
            ("env_vars", found.env_vars.len().to_string()),
            ("problems", found.problems.len().to_string()),
            ("report", report.clone()),
        ]);
        outcome.artifacts.push(Artifact {
            kind: "report".to_owned(),
            name: "discovery.json".to_owned(),
            path: Some(report),
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
    fn join_rel_resolves_dots() {
        assert_eq!(join_rel(".", "./api"), "api");
        assert_eq!(join_rel("deploy", "../services/api"), "services/api");
        assert_eq!(join_rel(".", "../outside"), "../outside");
        assert_eq!(join_rel("a", "."), "a");
    }
}
