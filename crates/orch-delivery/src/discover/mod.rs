//! The `discover` kind: an inventory of a project tree (services, Compose files, env var
//! names, problems), written as `discovery.json`.
//!
//! [`discover`] is the whole job as a plain function; [`DiscoverPhase`] wraps it as a phase.

mod compose;
pub mod model;
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orch_core::{
    Artifact, Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec,
    PlanContext, Registry,
};
use serde::Deserialize;

use crate::errors::DiscoverError;
use crate::util;
use crate::yaml::Yaml;
pub use model::*;
pub(crate) use scan::line_of;

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

/// Env var sites gathered during the walk.
#[derive(Default)]
pub(crate) struct EnvIndex {
    vars: BTreeMap<String, (BTreeSet<EnvSite>, BTreeSet<EnvSite>)>,
    /// `env_file` uses: (file relative to base, compose file, line, service).
    env_file_uses: Vec<(String, String, u64, String)>,
}

impl EnvIndex {
    pub(crate) fn add(
        &mut self,
        name: &str,
        file: &str,
        line: Option<u64>,
        how: &str,
        service: Option<&str>,
        defined: bool,
    ) {
        let site = EnvSite {
            file: file.to_owned(),
            line,
            how: how.to_owned(),
            service: service.map(str::to_owned),
        };
        let entry = self.vars.entry(name.to_owned()).or_default();
        if defined {
            entry.0.insert(site);
        } else {
            entry.1.insert(site);
        }
    }
}

struct FileRec {
    rel: String,
    abs: PathBuf,
    name: String,
    size: u64,
}

#[derive(Default)]
struct ServiceAcc {
    manifests: BTreeSet<String>,
    package_name: Option<String>,
    test_files: usize,
    ports: BTreeSet<DeclaredPort>,
    compose: BTreeSet<ComposeRef>,
    has_tsconfig: bool,
}

fn skip_reason(name: &str, path: &Path) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    match name {
        ".git" | ".hg" | ".svn" => return Some("vcs"),
        "node_modules" | "bower_components" => return Some("node-modules"),
        "venv" | ".venv" | ".tox" | ".nox" | "__pypackages__" => return Some("virtualenv"),
        "vendor" => return Some("vendor"),
        "target" => return Some("build-output"),
        "__pycache__" | ".pytest_cache" | ".mypy_cache" | ".ruff_cache" => return Some("cache"),
        ".orch" => return Some("state-dir"),
        _ => {}
    }
    if lower.ends_with(".bak") || name.ends_with('~') || lower.starts_with("backup") {
        return Some("backup");
    }
    if path.join("pyvenv.cfg").is_file() {
        return Some("virtualenv");
    }
    None
}

/// `base`-relative path text with `/` separators (`.` for `base`).
fn rel_of(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
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

fn error_path(e: &ignore::Error) -> Option<&Path> {
    match e {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        _ => None,
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

pub(crate) fn discover_with(
    opts: &DiscoverOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<Discovery, DiscoverError> {
    let canon = |p: &Path| {
        p.canonicalize()
            .ok()
            .filter(|c| c.is_dir())
            .ok_or_else(|| DiscoverError::NotADirectory { path: p.to_owned() })
    };
    let mut base = canon(&opts.base)?;
    let mut roots = Vec::new();
    for r in &opts.roots {
        roots.push(canon(&opts.base.join(r))?);
    }
    if roots.is_empty() {
        roots.push(base.clone());
    }
    if let Some(outside) = roots.iter().find(|r| !r.starts_with(&base)) {
        if roots.len() == 1 {
            base = outside.clone();
        } else {
            return Err(DiscoverError::RootOutside {
                path: outside.clone(),
            });
        }
    }
    let skip: Vec<PathBuf> = opts
        .skip
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();

    let mut ig = ignore::gitignore::GitignoreBuilder::new(&base);
    for pattern in &opts.ignore {
        ig.add_line(None, pattern)
            .map_err(|source| DiscoverError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
    }
    let user_ignore = ig.build().map_err(|source| DiscoverError::Pattern {
        pattern: opts.ignore.join(", "),
        source,
    })?;

    let skipped = Arc::new(Mutex::new(BTreeSet::<Skipped>::new()));
    let mut walk = ignore::WalkBuilder::new(&roots[0]);
    for r in &roots[1..] {
        walk.add(r);
    }
    {
        let skipped = Arc::clone(&skipped);
        let base = base.clone();
        walk.hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(false)
            .require_git(false)
            .ignore(true)
            .parents(true)
            .follow_links(false)
            .sort_by_file_name(|a, b| a.cmp(b))
            .filter_entry(move |entry| {
                let name = entry.file_name().to_string_lossy();
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                if !is_dir {
                    let backup = name.ends_with(".bak") || name.ends_with('~');
                    return !backup && !user_ignore.matched(entry.path(), false).is_ignore();
                }
                let reason = if skip.iter().any(|s| s == entry.path()) {
                    Some("state-dir")
                } else if user_ignore.matched(entry.path(), true).is_ignore() {
                    Some("ignore-setting")
                } else {
                    skip_reason(&name, entry.path())
                };
                match reason {
                    Some(reason) => {
                        let mut s = skipped.lock().unwrap_or_else(|p| p.into_inner());
                        s.insert(Skipped {
                            path: rel_of(&base, entry.path()),
                            reason: reason.to_owned(),
                        });
                        false
                    }
                    None => true,
                }
            });
    }

    let mut problems: Vec<Problem> = Vec::new();
    let mut files = Vec::new();
    for (i, result) in walk.build().enumerate() {
        if i % 256 == 0 && cancelled() {
            return Err(DiscoverError::Cancelled);
        }
        match result {
            Ok(entry) => {
                if entry.file_type().is_some_and(|t| t.is_file()) {
                    files.push(FileRec {
                        rel: rel_of(&base, entry.path()),
                        abs: entry.path().to_owned(),
                        name: entry.file_name().to_string_lossy().into_owned(),
                        size: entry.metadata().map(|m| m.len()).unwrap_or(0),
                    });
                }
            }
            Err(e) => problems.push(Problem {
                file: error_path(&e).map_or_else(|| ".".to_owned(), |p| rel_of(&base, p)),
                line: None,
                kind: "unreadable".to_owned(),
                severity: Severity::Warning,
                message: e.to_string(),
            }),
        }
    }
    // Several roots may overlap.
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    files.dedup_by(|a, b| a.rel == b.rel);

    // Service directories: those holding a manifest.
    let mut services: BTreeMap<String, ServiceAcc> = BTreeMap::new();
    for f in &files {
        if scan::is_manifest(&f.name) {
            services
                .entry(compose::parent_rel(&f.rel))
                .or_default()
                .manifests
                .insert(f.name.clone());
        }
    }
    let owner_of = |rel: &str| -> Option<String> {
        let mut dir = compose::parent_rel(rel);
        loop {
            if services.contains_key(&dir) {
                return Some(dir);
            }
            if dir == "." {
                return None;
            }
            dir = compose::parent_rel(&dir);
        }
    };

    let mut env = EnvIndex::default();
    let mut env_files_read: BTreeSet<String> = BTreeSet::new();
    let mut compose_reads = Vec::new();
    let mut owners: Vec<Option<String>> = Vec::with_capacity(files.len());
    for f in &files {
        owners.push(owner_of(&f.rel));
    }
    let malformed = |problems: &mut Vec<Problem>, rel: &str, line: Option<u64>, msg: String| {
        problems.push(Problem {
            file: rel.to_owned(),
            line,
            kind: "malformed-file".to_owned(),
            severity: Severity::Error,
            message: msg,
        });
    };

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
                            compose_reads.push(compose::read(
                                &doc,
                                &text,
                                &f.rel,
                                how,
                                &base,
                                &mut problems,
                                &mut env,
                            ));
                        }
                    }
                    Err(e) => malformed(
                        &mut problems,
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
                Err((line, msg)) => malformed(&mut problems, &f.rel, line, msg),
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

    // Compose services building a discovered service.
    for read in &mut compose_reads {
        for svc in &mut read.file.services {
            let Some(ctx_path) = svc.build.as_ref().and_then(|b| b.context_path.clone()) else {
                continue;
            };
            if let Some(acc) = services.get_mut(&ctx_path) {
                svc.service_path = Some(ctx_path.clone());
                acc.compose.insert(ComposeRef {
                    file: read.file.path.clone(),
                    service: svc.name.clone(),
                });
                for p in &svc.ports {
                    for port in compose::target_ports(&p.target) {
                        acc.ports.insert(DeclaredPort {
                            port,
                            protocol: p.protocol.clone(),
                            source: "compose".to_owned(),
                            file: read.file.path.clone(),
                        });
                    }
                }
            }
        }
    }

    // Files named by `env_file`: their names are defined there and used by the service.
    let uses = std::mem::take(&mut env.env_file_uses);
    for (resolved, compose_rel, line, service) in &uses {
        let text = if resolved.starts_with("..") || Path::new(resolved).is_absolute() {
            None
        } else {
            read_text(&base.join(resolved))
        };
        let Some(text) = text else { continue };
        for (name, def_line) in scan::env_file_names(&text) {
            if !env_files_read.contains(resolved) {
                env.add(&name, resolved, Some(def_line), "env-file", None, true);
            }
            env.add(
                &name,
                compose_rel,
                Some(*line),
                "compose-env-file",
                Some(service),
                false,
            );
        }
        env_files_read.insert(resolved.clone());
    }

    // `${VAR:?}` that no env file defines.
    for (name, (defined, used)) in &env.vars {
        let in_file = defined
            .iter()
            .any(|s| s.how == "env-template" || s.how == "env-file");
        if in_file {
            continue;
        }
        let mut reported = BTreeSet::new();
        for site in used.iter().filter(|s| s.how == "compose-required") {
            if reported.insert(site.file.clone()) {
                problems.push(Problem {
                    file: site.file.clone(),
                    line: site.line,
                    kind: "undefined-required-variable".to_owned(),
                    severity: Severity::Error,
                    message: format!(
                        "`${{{name}:?}}` is required but no env file defines `{name}`"
                    ),
                });
            }
        }
    }

    port_and_dependency_checks(&compose_reads, &mut problems);

    // Assemble.
    let base_name = base
        .file_name()
        .map_or_else(|| "root".to_owned(), |n| n.to_string_lossy().into_owned());
    let dirs: Vec<String> = services.keys().cloned().collect();
    let mut out_services = Vec::new();
    for (path, acc) in services {
        let name = if path == "." {
            base_name.clone()
        } else {
            path.rsplit('/').next().unwrap_or(&path).to_owned()
        };
        let mut language = None;
        for lang in ["python", "node", "go", "rust", "java"] {
            if acc
                .manifests
                .iter()
                .any(|m| scan::manifest_language(m) == Some(lang))
            {
                language = Some(if lang == "node" && acc.has_tsconfig {
                    "typescript".to_owned()
                } else {
                    lang.to_owned()
                });
                break;
            }
        }
        let dockerfile = ["Dockerfile", "Containerfile"]
            .iter()
            .find(|d| acc.manifests.contains(**d))
            .map(|d| (*d).to_owned())
            .or_else(|| {
                acc.manifests
                    .iter()
                    .find(|m| model::is_dockerfile_name(m))
                    .cloned()
            })
            .map(|d| join_rel(&path, &d));
        let parent = {
            let mut found = None;
            let mut dir = path.clone();
            while dir != "." {
                dir = compose::parent_rel(&dir);
                if dirs.contains(&dir) {
                    found = Some(dir.clone());
                    break;
                }
            }
            found
        };
        out_services.push(Service {
            package_name: acc.package_name.filter(|p| *p != name),
            name,
            language,
            manifests: acc.manifests.into_iter().collect(),
            dockerfile,
            tests: acc.test_files > 0,
            test_files: acc.test_files,
            ports: acc.ports.into_iter().collect(),
            compose_services: acc.compose.into_iter().collect(),
            parent,
            path,
        });
    }
    let mut compose_files: Vec<ComposeFile> = compose_reads.into_iter().map(|r| r.file).collect();
    compose_files.sort_by(|a, b| a.path.cmp(&b.path));
    let env_vars = env
        .vars
        .into_iter()
        .map(|(name, (defined, used))| EnvVar {
            name,
            defined_in: defined.into_iter().collect(),
            used_in: used.into_iter().collect(),
        })
        .collect();
    problems.sort();
    problems.dedup();
    let skipped = std::mem::take(&mut *skipped.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Discovery {
        format_version: DISCOVERY_FORMAT_VERSION,
        base: base.to_string_lossy().into_owned(),
        roots: roots.iter().map(|r| rel_of(&base, r)).collect(),
        services: out_services,
        compose_files,
        env_vars,
        problems,
        skipped: skipped.into_iter().collect(),
    })
}

/// Host port clashes and unknown `depends_on` targets, among the Compose files of one
/// directory (files Compose would merge into one project).
fn port_and_dependency_checks(reads: &[compose::ComposeRead], problems: &mut Vec<Problem>) {
    let mut by_dir: BTreeMap<String, Vec<&compose::ComposeRead>> = BTreeMap::new();
    for r in reads {
        by_dir
            .entry(compose::parent_rel(&r.file.path))
            .or_default()
            .push(r);
    }
    for group in by_dir.values() {
        let known: BTreeSet<&str> = group
            .iter()
            .flat_map(|r| r.file.services.iter().map(|s| s.name.as_str()))
            .collect();
        // (port, protocol) -> [(service, file, line, profiles)]
        type Binding<'a> = (&'a str, &'a str, u64, &'a [String]);
        let mut bound: BTreeMap<(u16, String), Vec<Binding<'_>>> = BTreeMap::new();
        for r in group {
            let line_of = |svc: &str| {
                r.service_lines
                    .iter()
                    .find(|(n, _)| n == svc)
                    .map_or(0, |(_, l)| *l)
            };
            for svc in &r.file.services {
                for dep in &svc.depends_on {
                    if !known.contains(dep.service.as_str()) {
                        problems.push(Problem {
                            file: r.file.path.clone(),
                            line: Some(line_of(&svc.name)).filter(|l| *l > 0),
                            kind: "unknown-dependency".to_owned(),
                            severity: Severity::Error,
                            message: format!(
                                "service `{}` depends on `{}`, which no Compose file here defines",
                                svc.name, dep.service
                            ),
                        });
                    }
                }
            }
            // Port lines are recorded per service, in file order.
            for svc in &r.file.services {
                let lines: Vec<u64> = r
                    .port_lines
                    .iter()
                    .filter(|(n, _)| *n == svc.name)
                    .map(|(_, l)| *l)
                    .collect();
                for (i, p) in svc.ports.iter().enumerate() {
                    let line = lines.get(i).copied().unwrap_or_else(|| line_of(&svc.name));
                    if let Some(published) = &p.published {
                        for port in compose::published_ports(published) {
                            bound.entry((port, p.protocol.clone())).or_default().push((
                                svc.name.as_str(),
                                r.file.path.as_str(),
                                line,
                                svc.profiles.as_slice(),
                            ));
                        }
                    }
                }
            }
        }
        for ((port, protocol), users) in bound {
            let names: BTreeSet<&str> = users.iter().map(|u| u.0).collect();
            if names.len() < 2 {
                continue;
            }
            // Services in disjoint profiles never start together: a warning only.
            let mut together = false;
            for (i, a) in users.iter().enumerate() {
                for b in &users[i + 1..] {
                    if a.0 != b.0
                        && (a.3.is_empty() || b.3.is_empty() || a.3.iter().any(|p| b.3.contains(p)))
                    {
                        together = true;
                    }
                }
            }
            let first = users[0];
            let others: Vec<String> = users
                .iter()
                .filter(|u| u.0 != first.0)
                .map(|u| format!("`{}` ({}:{})", u.0, u.1, u.2))
                .collect();
            let last = users
                .iter()
                .rev()
                .find(|u| u.0 != first.0)
                .unwrap_or(&first);
            problems.push(Problem {
                file: last.1.to_owned(),
                line: Some(last.2).filter(|l| *l > 0),
                kind: "host-port-clash".to_owned(),
                severity: if together {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                message: format!(
                    "host port {port}/{protocol} is published by `{}` ({}:{}) and {}",
                    first.0,
                    first.1,
                    first.2,
                    others.join(", ")
                ),
            });
        }
    }
}

fn register_discover(r: &mut Registry) {
    r.register_kind(
        "discover",
        "local",
        "inventory services, Compose files, env var names and problems of a tree",
        Arc::new(|spec: &PhaseSpec| {
            let settings: DiscoverSettings = spec.with.parse()?;
            if settings.root.is_some() && settings.roots.is_some() {
                return Err(KindError {
                    message: "set `root` or `roots`, not both".into(),
                    span: spec.with.span(),
                });
            }
            Ok(Arc::new(DiscoverPhase { settings }) as Arc<dyn Phase>)
        }),
    );
}

pub(crate) fn register(r: &mut Registry) {
    register_discover(r);
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
