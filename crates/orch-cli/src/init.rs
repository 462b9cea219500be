//! `orch init`: a commented `orch.toml` that runs as it is.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::exit_codes::ExitCodes;
use crate::output::errln;

/// `orch init [--template minimal|delivery] [DIR]`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// What to start from.
    #[arg(long, short, value_enum, default_value_t = Template::Minimal)]
    template: Template,
    /// The pipeline's name (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// The directory to write into (created when missing).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

/// The starting points.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// Command phases with needs, outputs, retries, an allowed failure, a gate and a
    /// conditional phase.
    Minimal,
    /// The delivery flow: discover, parity (with a modules.toml), gate, package, verify,
    /// report.
    Delivery,
}

impl Template {
    /// The files it writes: name and text (with `{{name}}` to fill in).
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Minimal => &[("orch.toml", include_str!("templates/minimal.toml"))],
            Self::Delivery => &[
                ("orch.toml", include_str!("templates/delivery.toml")),
                ("modules.toml", include_str!("templates/modules.toml")),
            ],
        }
    }
}

/// A pipeline name made of the characters a file name and a TOML string take as they are.
fn pipeline_name(dir: &Path, given: Option<&str>) -> String {
    let raw = match given {
        Some(n) => n.to_owned(),
        None => std::path::absolute(dir)
            .ok()
            .and_then(|p| {
                // `a/.` and `a/b/..` name `a` and the parent of `b`.
                let p: PathBuf = p.components().collect();
                std::fs::canonicalize(&p)
                    .unwrap_or(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default(),
    };
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '.').to_owned();
    if name.is_empty() {
        "pipeline".into()
    } else {
        name
    }
}

/// Runs `orch init`: writes the template's files, or nothing when one of them exists.
pub fn init(a: &InitArgs) -> Result<u8, (String, u8)> {
    let files = a.template.files();
    // Paths as the user would type them: `orch.toml`, not `./orch.toml`.
    let shown = |file: &str| -> PathBuf {
        if a.dir == Path::new(".") {
            PathBuf::from(file)
        } else {
            a.dir.join(file)
        }
    };
    let existing: Vec<String> = files
        .iter()
        .filter(|(f, _)| {
            let p = a.dir.join(f);
            p.exists() || p.is_symlink()
        })
        .map(|(f, _)| shown(f).display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err((
            format!(
                "error: {} already exist{}; orch init never overwrites a file (move {} away or \
                 choose another directory: orch init DIR)",
                existing.join(" and "),
                if existing.len() == 1 { "s" } else { "" },
                if existing.len() == 1 { "it" } else { "them" },
            ),
            ExitCodes::INVALID,
        ));
    }
    std::fs::create_dir_all(&a.dir).map_err(|e| {
        (
            format!("error: cannot create {}: {e}", a.dir.display()),
            ExitCodes::INVALID,
        )
    })?;
    let name = pipeline_name(&a.dir, a.name.as_deref());
    let mut written = Vec::new();
    for (file, text) in files {
        let path = a.dir.join(file);
        let text = text.replace("{{name}}", &name);
        // `create_new`: a file that appeared since the check is still never overwritten.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = result {
            return Err((
                format!("error: cannot write {}: {e}", path.display()),
                ExitCodes::INVALID,
            ));
        }
        written.push(shown(file).display().to_string());
    }
    errln!("wrote {}", written.join(" and "));
    let run = if a.dir == Path::new(".") {
        "orch run".to_owned()
    } else {
        format!("orch run {}", shown("orch.toml").display())
    };
    errln!("next: {run}    (or `orch plan` to see what it would do)");
    Ok(ExitCodes::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_directory_and_are_tidied() {
        assert_eq!(pipeline_name(Path::new("/tmp/My Shop!"), None), "My-Shop");
        assert_eq!(pipeline_name(Path::new("/srv/api/."), None), "api");
        assert_eq!(pipeline_name(Path::new("/"), None), "pipeline");
        assert_eq!(pipeline_name(Path::new("."), Some("a\"b")), "a-b");
    }
}
