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

mod phase;

use std::path::{Component, Path, PathBuf};

use crate::errors::ScaffoldError;

pub(crate) use phase::register;
pub use phase::{ModulesSetting, ScaffoldPhase, ScaffoldSettings};

/// The default template.
pub const DEFAULT_TEMPLATE: &str = "python-fastapi";

/// The default target directory, relative to the pipeline's directory.
pub const DEFAULT_TARGET: &str = "services";

macro_rules! embed {
    ($dir:literal: $($file:literal),* $(,)?) => {
        &[$(($file, include_bytes!(concat!("../../templates/", $dir, "/", $file)) as &[u8])),*]
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
