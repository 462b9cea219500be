//! Fixtures: real repositories in temp dirs, the git CLI with isolated configuration, and
//! phases driven through their registered factories.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use git2::{Repository, RepositoryInitOptions, Signature, Time};
use orch_core::InterpolationError;
use orch_core::interpolate::{Reference, Scope};
use orch_core::{
    Description, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec, PlanContext, Registry,
    RunEvent, RunId, WithTable,
};

pub type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A repository in a temp dir, with its own identity and a fake home for the git CLI.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub repo: Repository,
}

impl TestRepo {
    /// `git init` with branch `main`, identity and neutral settings in the repo's config.
    pub fn new() -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let home = tempfile::tempdir()?;
        let repo = Repository::init_opts(
            dir.path(),
            RepositoryInitOptions::new().initial_head("main"),
        )?;
        isolate_config(&repo)?;
        Ok(Self { dir, home, repo })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating directories).
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> Res {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
        Ok(())
    }

    /// Runs the git CLI in the repository, isolated from the user's configuration; fails on
    /// a non-zero exit. Returns stdout.
    pub fn git(&self, args: &[&str]) -> Res<String> {
        git_in(self.path(), self.home.path(), args)
    }

    /// Stages everything and commits with git2 (fixed times when `at` is given).
    pub fn commit_all(&self, message: &str, at: Option<i64>) -> Res<git2::Oid> {
        let mut index = self.repo.index()?;
        index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"].iter(), None)?;
        index.write()?;
        let tree = self.repo.find_tree(index.write_tree()?)?;
        let sig = match at {
            Some(t) => Signature::new("Dev", "dev@example.com", &Time::new(t, 0))?,
            None => self.repo.signature()?,
        };
        let parents = match self.repo.head() {
            Ok(h) => vec![h.peel_to_commit()?],
            Err(_) => Vec::new(),
        };
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        Ok(self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?)
    }

    pub fn head(&self) -> Res<git2::Oid> {
        Ok(self.repo.head()?.peel_to_commit()?.id())
    }

    /// Bytes of `.git/index` (to prove it was not rewritten).
    pub fn index_bytes(&self) -> Res<Vec<u8>> {
        Ok(std::fs::read(self.repo.path().join("index"))?)
    }

    /// `git status --porcelain -uall`.
    pub fn status(&self) -> Res<String> {
        self.git(&["status", "--porcelain=v1", "-uall"])
    }

    /// Every ref with its value, per `git for-each-ref`.
    pub fn refs(&self) -> Res<String> {
        self.git(&["for-each-ref", "--format=%(refname) %(objectname)"])
    }
}

/// Settings that keep tests independent of the user's global git configuration.
pub fn isolate_config(repo: &Repository) -> Res {
    let mut cfg = repo.config()?;
    cfg.set_str("user.name", "Dev")?;
    cfg.set_str("user.email", "dev@example.com")?;
    cfg.set_bool("core.autocrlf", false)?;
    cfg.set_bool("core.filemode", true)?;
    cfg.set_str("credential.helper", "")?;
    cfg.set_bool("commit.gpgsign", false)?;
    cfg.set_bool("tag.gpgsign", false)?;
    Ok(())
}

/// Runs the git CLI in `dir` with `GIT_CONFIG_GLOBAL=/dev/null`, no system config and a
/// fake `HOME`, on this command only.
pub fn git_in(dir: &Path, home: &Path, args: &[&str]) -> Res<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", home)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A file as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File { exec: bool, bytes: Vec<u8> },
    Link(PathBuf),
}

/// Every file and symlink under `root` (`.git` excluded), by relative path.
pub fn tree_state(root: &Path) -> Res<BTreeMap<String, Node>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) -> Res {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if rel == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(std::fs::read_link(&path)?));
            } else if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                out.insert(
                    rel,
                    Node::File {
                        exec: meta.permissions().mode() & 0o111 != 0,
                        bytes: std::fs::read(&path)?,
                    },
                );
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

pub fn set_exec(path: &Path, exec: bool) -> Res {
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A phase to run, and what it should see.
pub struct Run<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub with: toml::Table,
    pub base: &'a Path,
    pub run_id: &'a str,
    pub vars: Vec<(&'a str, &'a str)>,
    pub secrets: Vec<(&'a str, &'a str)>,
    pub cancelled: bool,
}

impl<'a> Run<'a> {
    pub fn new(kind: &'a str, base: &'a Path, with: toml::Table) -> Self {
        Self {
            kind,
            id: "phase",
            with,
            base,
            run_id: "run-1",
            vars: Vec::new(),
            secrets: Vec::new(),
            cancelled: false,
        }
    }

    pub fn id(mut self, id: &'a str) -> Self {
        self.id = id;
        self
    }

    pub fn run_id(mut self, id: &'a str) -> Self {
        self.run_id = id;
        self
    }

    pub fn var(mut self, k: &'a str, v: &'a str) -> Self {
        self.vars.push((k, v));
        self
    }

    /// Runs with the run already cancelled.
    pub fn cancelled(mut self) -> Self {
        self.cancelled = true;
        self
    }

    pub fn secret(mut self, k: &'a str, v: &'a str) -> Self {
        self.secrets.push((k, v));
        self
    }

    fn spec(&self) -> Res<PhaseSpec> {
        let mut spec = PhaseSpec::new(PhaseId::new(self.id)?, self.kind);
        spec.with = WithTable::new(self.with.clone());
        spec.secrets = self.secrets.iter().map(|(k, _)| (*k).to_owned()).collect();
        Ok(spec)
    }

    /// Builds the phase through the registry, as the engine does at load time.
    pub fn build(&self) -> Result<Arc<dyn orch_core::Phase>, orch_core::KindError> {
        let spec = self
            .spec()
            .map_err(|e| orch_core::KindError::new(e.to_string()))?;
        registry().build_phase(&spec)
    }

    /// Runs the phase; returns its result and every log line it emitted.
    pub async fn go(&self) -> Res<Ran> {
        let phase = self.build()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink_lines = lines.clone();
        let mut builder = PhaseContext::builder(PhaseId::new(self.id)?, self.base)
            .run_id(RunId::parse(self.run_id)?)
            .run_dir(self.base.join(".orch").join("runs").join(self.run_id))
            .sink(Arc::new(move |e: &orch_core::Event| {
                if let RunEvent::PhaseOutput { line, .. } = &e.kind {
                    sink_lines
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(line.clone());
                }
            }));
        for (k, v) in &self.vars {
            builder = builder.var(*k, *v);
        }
        for (k, v) in &self.secrets {
            builder = builder.secret(*k, *v);
        }
        let token = tokio_util::sync::CancellationToken::new();
        if self.cancelled {
            token.cancel();
        }
        let ctx = builder.cancel(token).build();
        let result = phase.run(&ctx).await;
        ctx.flush_output();
        let lines = lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Ran { result, lines })
    }

    /// What `orch plan` would show.
    pub fn describe(&self) -> Res<Description> {
        let phase = self.build()?;
        let id = PhaseId::new(self.id)?;
        let scope = VarScope(
            self.vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let ctx = PlanContext::new(&id, self.base, &scope);
        Ok(phase.describe(&ctx))
    }
}

struct VarScope(Vec<(String, String)>);

impl Scope for VarScope {
    fn lookup(&self, r: &Reference) -> Result<std::borrow::Cow<'_, str>, InterpolationError> {
        match r {
            Reference::Var(k) => self
                .0
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| std::borrow::Cow::Borrowed(v.as_str()))
                .ok_or_else(|| InterpolationError::UnknownVar { name: k.clone() }),
            Reference::RunId => Ok("RUN_ID".into()),
            Reference::Output { phase, key } => {
                Ok(format!("<phases.{phase}.outputs.{key}>").into())
            }
        }
    }
}

/// The result of one phase run.
pub struct Ran {
    pub result: Result<PhaseOutcome, PhaseError>,
    pub lines: Vec<String>,
}

impl Ran {
    /// The outputs; panics with the error and log when the phase failed.
    pub fn ok(&self) -> &BTreeMap<String, String> {
        match &self.result {
            Ok(o) => &o.outputs,
            Err(e) => panic!("phase failed: {e}\nlog:\n{}", self.lines.join("\n")),
        }
    }

    /// The error message; panics when the phase succeeded.
    pub fn err(&self) -> String {
        match &self.result {
            Ok(o) => panic!("phase succeeded but should not: {:?}", o.outputs),
            Err(e) => e.to_string(),
        }
    }

    pub fn log(&self) -> String {
        self.lines.join("\n")
    }
}

/// A registry with the built-ins and this crate's kinds.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    orch_git::register(&mut r).expect("the kinds register once");
    r
}

/// A `toml::Table` from TOML text.
pub fn table(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("bad test TOML {text}: {e}"))
}
