//! The `scaffold` kind: renders a service per module from a template.
//!
//! Built-in templates: `python-fastapi` (default) and `node-express`; any other value is a
//! directory of the user's, relative to the pipeline's directory. Every UTF-8 file of a
//! template, and every file *path*, is a [minijinja] template over these variables:
//! `name` (the module), `snake_name` (`-` and `.` become `_`), `title` (`Payments
//! Gateway`), `port`, `category` (from the parity report, else empty). Other files are
//! copied as they are. Undefined variables are errors.
//!
//! Safety: a module name is one directory name (`[A-Za-z0-9][A-Za-z0-9._-]*`, not `..`);
//! a rendered template path must be relative with no `..`; a symlink in a template
//! directory or on the way to a file to write is refused; an existing file is never
//! overwritten (it is skipped and logged); files are created with `O_EXCL`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use orch_core::interpolate::Reference;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec,
    PlanContext, Registry,
};
use serde::Deserialize;

use crate::errors::ScaffoldError;
use crate::parity::{ModuleStatus, ParityReport};
use crate::util;

/// The default template.
pub const DEFAULT_TEMPLATE: &str = "python-fastapi";

/// The default target directory, relative to the pipeline's directory.
pub const DEFAULT_TARGET: &str = "services";

macro_rules! embed {
    ($dir:literal: $($file:literal),* $(,)?) => {
        &[$(($file, include_bytes!(concat!("../templates/", $dir, "/", $file)) as &[u8])),*]
    };
}

/// Files of the built-in `python-fastapi` template.
const PYTHON_FASTAPI: &[(&str, &[u8])] = embed!("python-fastapi":
    ".dockerignore",
    "Dockerfile",
    "README.md",
    "app/__init__.py",
    "app/main.py",
    "openapi.yaml",
    "pytest.ini",
    "requirements-dev.txt",
    "requirements.txt",
    "tests/test_health.py",
);

/// Files of the built-in `node-express` template.
const NODE_EXPRESS: &[(&str, &[u8])] = embed!("node-express":
    ".dockerignore",
    "Dockerfile",
    "README.md",
    "openapi.yaml",
    "package.json",
    "src/app.js",
    "src/server.js",
    "test/health.test.js",
);

/// A module to scaffold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleToScaffold {
    /// Its name: the directory created under the target.
    pub name: String,
    /// Its category, for templates.
    pub category: Option<String>,
}

/// One template file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateFile {
    /// Path inside the template (a template itself).
    pub path: String,
    /// Content.
    pub content: Vec<u8>,
    /// Whether the file is executable.
    pub executable: bool,
}

/// A loaded template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// `python-fastapi`, `node-express` or the directory.
    pub name: String,
    /// The port it listens on unless told otherwise.
    pub default_port: u16,
    /// Its files, sorted by path.
    pub files: Vec<TemplateFile>,
}

impl Template {
    /// A built-in template, by name.
    pub fn builtin(name: &str) -> Option<Template> {
        let (files, port) = match name {
            "python-fastapi" => (PYTHON_FASTAPI, 8000),
            "node-express" => (NODE_EXPRESS, 3000),
            _ => return None,
        };
        Some(Template {
            name: name.to_owned(),
            default_port: port,
            files: files
                .iter()
                .map(|(path, content)| TemplateFile {
                    path: (*path).to_owned(),
                    content: content.to_vec(),
                    executable: false,
                })
                .collect(),
        })
    }

    /// Reads a template directory. Symlinks anywhere in it are refused, and so is anything
    /// that is not a regular file or a directory (a FIFO, a socket, a device).
    pub fn from_dir(dir: &Path) -> Result<Template, ScaffoldError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| ScaffoldError::Io {
                action,
                path,
                source,
            }
        };
        let meta = std::fs::symlink_metadata(dir).map_err(|_| ScaffoldError::UnknownTemplate {
            name: dir.display().to_string(),
        })?;
        if meta.file_type().is_symlink() {
            return Err(ScaffoldError::Symlink {
                path: dir.to_owned(),
            });
        }
        if !meta.is_dir() {
            return Err(ScaffoldError::UnknownTemplate {
                name: dir.display().to_string(),
            });
        }
        let mut files = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).map_err(io("read", &d))? {
                let entry = entry.map_err(io("read", &d))?;
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).map_err(io("read", &path))?;
                if meta.file_type().is_symlink() {
                    return Err(ScaffoldError::Symlink { path });
                }
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !meta.is_file() {
                    // A FIFO or a device would block or never end: read regular files only.
                    return Err(ScaffoldError::NotRegular { path });
                }
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let rel = rel.to_str().ok_or(ScaffoldError::UnsafeTemplatePath {
                    path: rel.display().to_string(),
                    reason: "the name is not valid UTF-8",
                })?;
                check_rel_path(rel)?;
                #[cfg(unix)]
                let executable = {
                    use std::os::unix::fs::PermissionsExt;
                    meta.permissions().mode() & 0o111 != 0
                };
                #[cfg(not(unix))]
                let executable = false;
                files.push(TemplateFile {
                    path: rel.replace(std::path::MAIN_SEPARATOR, "/"),
                    content: std::fs::read(&path).map_err(io("read", &path))?,
                    executable,
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Template {
            name: dir.display().to_string(),
            default_port: 8080,
            files,
        })
    }

    /// A built-in template by name, else a directory relative to `base`.
    pub fn load(name: &str, base: &Path) -> Result<Template, ScaffoldError> {
        match Template::builtin(name) {
            Some(t) => Ok(t),
            None => Template::from_dir(&base.join(name)),
        }
    }
}

/// Checks a module name: one safe directory name.
pub fn check_module_name(name: &str) -> Result<(), ScaffoldError> {
    let fail = |reason| {
        Err(ScaffoldError::UnsafeName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name == "." || name == ".." {
        return fail("it is `.` or `..`");
    }
    if name.contains(['/', '\\']) {
        return fail("it holds a path separator");
    }
    if name.len() > 100 {
        return fail("it is longer than 100 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return fail("it must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return fail("use letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}

/// Checks a (rendered) template path: relative, no `..`, no empty parts.
pub fn check_rel_path(path: &str) -> Result<(), ScaffoldError> {
    let fail = |reason| {
        Err(ScaffoldError::UnsafeTemplatePath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return fail("it is empty");
    }
    if path.starts_with('/') || path.starts_with('\\') || Path::new(path).is_absolute() {
        return fail("it is absolute");
    }
    if path.contains('\\') {
        return fail("it holds a backslash");
    }
    for part in path.split('/') {
        match part {
            "" => return fail("it has an empty component"),
            "." | ".." => return fail("it has a `.` or `..` component"),
            _ => {}
        }
    }
    if Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return fail("it is not a plain relative path");
    }
    Ok(())
}

/// `payments-gateway` -> `Payments Gateway`.
fn title_of(name: &str) -> String {
    name.split(['-', '_', '.'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_uppercase().collect::<String>() + c.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Plain text files: no HTML escaping, and keep the final newline.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// A file a scaffold would write or wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    /// The module.
    pub module: String,
    /// Where.
    pub path: PathBuf,
    /// Whether it exists already (and so is skipped).
    pub exists: bool,
    /// Content.
    pub content: Vec<u8>,
    /// Whether it is executable.
    pub executable: bool,
}

/// Renders every file of every module, without writing. Checks names, paths and
/// symlinks on the way.
pub fn plan(
    template: &Template,
    modules: &[ModuleToScaffold],
    target: &Path,
    port: Option<u16>,
) -> Result<Vec<PlannedFile>, ScaffoldError> {
    let env = environment();
    let mut out = Vec::new();
    for module in modules {
        check_module_name(&module.name)?;
        let ctx = minijinja::context! {
            name => module.name.clone(),
            snake_name => module.name.replace(['-', '.'], "_"),
            title => title_of(&module.name),
            port => port.unwrap_or(template.default_port),
            category => module.category.clone().unwrap_or_default(),
        };
        let service_dir = target.join(&module.name);
        for file in &template.files {
            let render = |source: &str| {
                env.render_str(source, &ctx)
                    .map_err(|source| ScaffoldError::Render {
                        path: file.path.clone(),
                        source,
                    })
            };
            let rel = render(&file.path)?;
            check_rel_path(&rel)?;
            let content = match std::str::from_utf8(&file.content) {
                Ok(text) => render(text)?.into_bytes(),
                Err(_) => file.content.clone(),
            };
            let path = service_dir.join(&rel);
            // No symlink from the service directory down to the file.
            let mut p = service_dir.clone();
            let mut parts = vec![None];
            parts.extend(Path::new(&rel).components().map(Some));
            let mut exists = false;
            for part in parts {
                if let Some(c) = part {
                    p.push(c);
                }
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(ScaffoldError::Symlink { path: p });
                    }
                    Ok(_) => exists = p == path,
                    Err(_) => break,
                }
            }
            out.push(PlannedFile {
                module: module.name.clone(),
                path,
                exists,
                content,
                executable: file.executable,
            });
        }
    }
    Ok(out)
}

/// Checks the way from the pipeline's directory `base` to `target` (relative to `base`):
/// it stays inside `base`, and no directory on it that exists is a symlink (a link would
/// send what scaffold writes elsewhere). Returns the target under `base`.
pub fn resolve_target(base: &Path, target: &str) -> Result<PathBuf, ScaffoldError> {
    let outside = || ScaffoldError::TargetOutside {
        target: target.to_owned(),
    };
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(target).components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                parts.pop().ok_or_else(outside)?;
            }
            std::path::Component::RootDir | std::path::Component::Prefix(_) => {
                return Err(outside());
            }
        }
    }
    let mut p = base.to_path_buf();
    let mut exists = true;
    for part in parts {
        p.push(part);
        if exists {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ScaffoldError::Symlink { path: p });
                }
                Ok(_) => {}
                Err(_) => exists = false,
            }
        }
    }
    Ok(p)
}

/// What [`write()`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaffoldReport {
    /// Files written.
    pub created: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub skipped: Vec<PathBuf>,
}

/// Writes planned files; never overwrites (an existing file is skipped).
pub fn write(planned: &[PlannedFile]) -> Result<ScaffoldReport, ScaffoldError> {
    let mut report = ScaffoldReport::default();
    for f in planned {
        let io = |action| {
            let path = f.path.clone();
            move |source| ScaffoldError::Io {
                action,
                path,
                source,
            }
        };
        if f.exists || std::fs::symlink_metadata(&f.path).is_ok() {
            report.skipped.push(f.path.clone());
            continue;
        }
        if let Some(dir) = f.path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create"))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if f.executable { 0o755 } else { 0o644 });
        }
        match options.open(&f.path) {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(&f.content).map_err(io("write"))?;
                report.created.push(f.path.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                report.skipped.push(f.path.clone());
            }
            Err(e) => return Err(io("create")(e)),
        }
    }
    Ok(report)
}

/// `modules`: a list, or one string (rendered) holding a JSON array or comma-separated
/// names, so `${{ phases.parity.outputs.missing_modules }}` works.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ModulesSetting {
    /// A list of names.
    List(Vec<String>),
    /// A JSON array or comma-separated names.
    Text(String),
}

/// The `with` table of `scaffold`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaffoldSettings {
    /// Modules to scaffold.
    #[serde(default)]
    pub modules: Option<ModulesSetting>,
    /// A parity phase: scaffold its missing modules (groups are skipped).
    #[serde(default)]
    pub from: Option<String>,
    /// `python-fastapi` (default), `node-express`, or a template directory.
    #[serde(default)]
    pub template: Option<String>,
    /// Where services go (default `services`).
    #[serde(default)]
    pub target: Option<String>,
    /// The port the services listen on (default: the template's).
    #[serde(default)]
    pub port: Option<u16>,
}

/// The `scaffold` phase.
#[derive(Clone, Debug)]
pub struct ScaffoldPhase {
    settings: ScaffoldSettings,
    from: Option<PhaseId>,
}

pub(crate) fn register(r: &mut Registry) {
    r.register_kind(
        "scaffold",
        "local",
        "render services for missing modules from a template",
        Arc::new(|spec: &PhaseSpec| {
            let settings: ScaffoldSettings = spec.with.parse()?;
            let err = |message: String| KindError {
                message,
                span: spec.with.span(),
            };
            let from = match (&settings.modules, &settings.from) {
                (Some(_), Some(_)) => return Err(err("set `modules` or `from`, not both".into())),
                (None, None) => {
                    return Err(err("set `modules` (names) or `from` (a parity phase)".into()));
                }
                (Some(ModulesSetting::List(names)), None) => {
                    for n in names.iter().filter(|n| !n.contains("${{")) {
                        check_module_name(n).map_err(|e| err(e.to_string()))?;
                    }
                    None
                }
                (Some(ModulesSetting::Text(_)), None) => None,
                (None, Some(from)) => {
                    let id = PhaseId::new(from).map_err(|e| err(e.to_string()))?;
                    if !spec.needs.contains(&id) {
                        return Err(err(format!(
                            "`from` names `{from}`, which is not in `needs`: add it there"
                        )));
                    }
                    Some(id)
                }
            };
            if let Some(t) = &settings.template
                && !t.contains("${{")
                && Template::builtin(t).is_none()
                && !(t.contains('/') || t.starts_with('.'))
            {
                return Err(err(format!(
                    "unknown template `{t}`: use `python-fastapi`, `node-express` or a directory path (`./my-template`)"
                )));
            }
            Ok(Arc::new(ScaffoldPhase { settings, from }) as Arc<dyn Phase>)
        }),
    );
}

fn parse_names(text: &str) -> Vec<String> {
    let trimmed = text.trim();
    if trimmed.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed)
    {
        return list;
    }
    trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Missing, non-group modules of a parity report, and the groups left out.
fn missing_from_report(path: &Path) -> Result<(Vec<ModuleToScaffold>, Vec<String>), ScaffoldError> {
    let bytes = std::fs::read(path).map_err(|source| ScaffoldError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let report: ParityReport =
        serde_json::from_slice(&bytes).map_err(|source| ScaffoldError::Report {
            path: path.to_owned(),
            source,
        })?;
    let mut modules = Vec::new();
    let mut groups = Vec::new();
    for m in report
        .modules
        .into_iter()
        .filter(|m| m.status == ModuleStatus::Missing)
    {
        if m.group {
            groups.push(m.name);
        } else {
            modules.push(ModuleToScaffold {
                name: m.name,
                category: m.category,
            });
        }
    }
    Ok((modules, groups))
}

impl ScaffoldPhase {
    fn template_name(&self) -> &str {
        self.settings
            .template
            .as_deref()
            .unwrap_or(DEFAULT_TEMPLATE)
    }

    fn target(&self) -> &str {
        self.settings.target.as_deref().unwrap_or(DEFAULT_TARGET)
    }
}

#[async_trait]
impl Phase for ScaffoldPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let template_name = ctx.render(self.template_name());
        let target = ctx.resolve(self.target());
        let mut d = Description::new(format!(
            "scaffold services from `{template_name}` into {}",
            target.display()
        ))
        .detail("template", template_name.clone())
        .detail("target", target.display().to_string());
        let template = match Template::load(&template_name, ctx.base_dir()) {
            Ok(t) => t,
            Err(e) => return d.detail("error", e.to_string()),
        };
        let names: Option<Vec<String>> = match &self.settings.modules {
            Some(ModulesSetting::List(list)) => Some(list.iter().map(|n| ctx.render(n)).collect()),
            Some(ModulesSetting::Text(t)) => {
                let rendered = ctx.render(t);
                (!rendered.contains("<phases.")).then(|| parse_names(&rendered))
            }
            None => None,
        };
        match names {
            Some(names) => {
                let modules: Vec<ModuleToScaffold> = names
                    .into_iter()
                    .map(|name| ModuleToScaffold {
                        name,
                        category: None,
                    })
                    .collect();
                d = d.detail(
                    "modules",
                    modules
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                match plan(&template, &modules, &target, self.settings.port) {
                    Ok(files) => {
                        for f in files {
                            d = d.change(if f.exists {
                                format!("keep {} (exists)", f.path.display())
                            } else {
                                format!("write {}", f.path.display())
                            });
                        }
                    }
                    Err(e) => d = d.detail("error", e.to_string()),
                }
            }
            None => {
                let source = match &self.from {
                    Some(p) => format!("missing modules of phase `{p}`"),
                    None => "modules known at run time".to_owned(),
                };
                d = d.detail("modules", source);
                for f in &template.files {
                    d = d.change(format!("write {}/<module>/{}", target.display(), f.path));
                }
            }
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let render = |what: &str, s: &str| {
            ctx.render(s)
                .map_err(|e| PhaseError::failed(format!("cannot render `{what}`: {e}")))
        };
        let template_name = render("template", self.template_name())?;
        let target_text = render("target", self.target())?;
        let modules: Vec<ModuleToScaffold> = match (&self.settings.modules, &self.from) {
            (Some(ModulesSetting::List(list)), _) => {
                let mut out = Vec::new();
                for n in list {
                    out.push(ModuleToScaffold {
                        name: render("modules", n)?,
                        category: None,
                    });
                }
                out
            }
            (Some(ModulesSetting::Text(t)), _) => parse_names(&render("modules", t)?)
                .into_iter()
                .map(|name| ModuleToScaffold {
                    name,
                    category: None,
                })
                .collect(),
            (None, Some(from)) => {
                let r = Reference::Output {
                    phase: from.to_string(),
                    key: "report".to_owned(),
                };
                let report = ctx.lookup(&r).map_err(|e| {
                    PhaseError::failed(format!("cannot find the parity report of `{from}`: {e}"))
                })?;
                let path = ctx.base_dir().join(&*report);
                let (modules, groups) =
                    missing_from_report(&path).map_err(|e| PhaseError::from_error(&e))?;
                for g in groups {
                    ctx.log(format!("group `{g}` is missing; groups are not scaffolded"));
                }
                modules
            }
            (None, None) => Vec::new(),
        };
        let base = ctx.base_dir().to_owned();
        let port = self.settings.port;
        let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
        let result = util::blocking(ctx, move |_| {
            let target = resolve_target(&base, &target_text)?;
            let template = Template::load(&template_name, &base)?;
            let planned = plan(&template, &modules, &target, port)?;
            write(&planned)
        })
        .await?
        .map_err(|e| PhaseError::from_error(&e))?;
        let rel = |p: &PathBuf| {
            p.strip_prefix(ctx.base_dir())
                .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
        };
        for p in &result.skipped {
            ctx.log(format!("exists, skipped: {}", rel(p)));
        }
        for p in &result.created {
            ctx.log(format!("created {}", rel(p)));
        }
        let files: Vec<String> = result.created.iter().map(rel).collect();
        let mut outcome = PhaseOutcome::with_outputs([
            ("created", result.created.len().to_string()),
            ("skipped", result.skipped.len().to_string()),
            ("services", util::json_list(&names)),
            ("files", util::json_list(&files)),
        ]);
        for name in &names {
            outcome.artifacts.push(orch_core::Artifact {
                kind: "file".to_owned(),
                name: name.clone(),
                path: Some(rel(&ctx
                    .base_dir()
                    .join(render("target", self.target())?)
                    .join(name))),
                digest: None,
                size: None,
                details: BTreeMap::new(),
            });
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        for ok in ["api", "payments-gateway", "a.b_c", "9lives"] {
            assert!(check_module_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", "-x", "a b", "a\\b", ".hidden",
        ] {
            assert!(check_module_name(bad).is_err(), "{bad}");
        }
        for ok in ["a", "app/main.py", ".dockerignore"] {
            assert!(check_rel_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\..\\b",
        ] {
            assert!(check_rel_path(bad).is_err(), "{bad}");
        }
        assert_eq!(title_of("payments-gateway"), "Payments Gateway");
        assert_eq!(parse_names("[\"a\",\"b\"]"), ["a", "b"]);
        assert_eq!(parse_names(" a, b ,"), ["a", "b"]);
        assert!(parse_names("[]").is_empty());
    }

    #[test]
    fn builtin_templates_render() {
        for name in ["python-fastapi", "node-express"] {
            let t = Template::builtin(name).unwrap();
            let files = plan(
                &t,
                &[ModuleToScaffold {
                    name: "billing-api".into(),
                    category: Some("payments".into()),
                }],
                Path::new("/nonexistent/target"),
                None,
            )
            .unwrap();
            assert_eq!(files.len(), t.files.len());
            let dockerfile = files
                .iter()
                .find(|f| f.path.ends_with("Dockerfile"))
                .unwrap();
            let text = String::from_utf8(dockerfile.content.clone()).unwrap();
            assert!(text.contains("HEALTHCHECK"), "{text}");
            assert!(text.ends_with('\n'));
            assert!(!text.contains("{{"), "{text}");
        }
    }
}
