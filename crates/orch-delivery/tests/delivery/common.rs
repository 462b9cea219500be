//! Shared helpers: fixture trees, the registry, running a phase.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orch_core::{
    PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec, Registry, RunEvent, WithTable,
};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes a file, creating its directories.
pub fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    orch_delivery::register(&mut r).expect("the kinds register once");
    r
}

/// A `with` table from TOML text.
pub fn with(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

/// What a phase run gave, with its log lines.
pub struct Ran {
    pub result: Result<PhaseOutcome, PhaseError>,
    pub log: Vec<String>,
}

impl Ran {
    pub fn ok(self) -> PhaseOutcome {
        match self.result {
            Ok(o) => o,
            Err(e) => panic!("phase failed: {e}\nlog:\n{}", self.log.join("\n")),
        }
    }

    pub fn err(self) -> String {
        match self.result {
            Ok(o) => panic!("phase succeeded: {o:?}"),
            Err(e) => e.to_string(),
        }
    }
}

/// Builds a phase through its registered factory and runs it once.
pub async fn run_phase(
    kind: &str,
    table: toml::Table,
    base: &Path,
    run_dir: &Path,
    needs: &[&str],
    outputs: &[(&str, &str, &str)],
) -> Ran {
    run_phase_env(kind, table, base, run_dir, needs, outputs, &[]).await
}

/// [`run_phase`] with environment variables given to the phase.
pub async fn run_phase_env(
    kind: &str,
    table: toml::Table,
    base: &Path,
    run_dir: &Path,
    needs: &[&str],
    outputs: &[(&str, &str, &str)],
    env: &[(&str, &str)],
) -> Ran {
    let mut spec = PhaseSpec::new(PhaseId::new("p").unwrap(), kind);
    spec.with = WithTable::new(table);
    spec.needs = needs.iter().map(|n| PhaseId::new(n).unwrap()).collect();
    let phase = registry()
        .build_phase(&spec)
        .expect("factory accepts the settings");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink_log = Arc::clone(&log);
    let mut builder = PhaseContext::builder(PhaseId::new("p").unwrap(), base)
        .run_dir(run_dir)
        .sink(Arc::new(move |e: &orch_core::Event| {
            if let RunEvent::PhaseOutput { line, .. } = &e.kind {
                sink_log.lock().unwrap().push(line.clone());
            }
        }));
    for (p, k, v) in outputs {
        builder = builder.output(*p, *k, *v);
    }
    for (k, v) in env {
        builder = builder.env(*k, *v);
    }
    let ctx = builder.build();
    let result = phase.run(&ctx).await;
    ctx.flush_output();
    let log = log.lock().unwrap().clone();
    Ran { result, log }
}

/// Runs a phase whose run is already cancelled.
pub async fn run_cancelled(
    kind: &str,
    table: toml::Table,
    base: &Path,
) -> Result<PhaseOutcome, PhaseError> {
    let mut spec = PhaseSpec::new(PhaseId::new("p").unwrap(), kind);
    spec.with = WithTable::new(table);
    let phase = registry().build_phase(&spec).unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    token.cancel();
    let ctx = PhaseContext::builder(PhaseId::new("p").unwrap(), base)
        .cancel(token)
        .build();
    phase.run(&ctx).await
}

/// The factory's error for settings it refuses.
pub fn factory_error(kind: &str, table: toml::Table, needs: &[&str]) -> String {
    let mut spec = PhaseSpec::new(PhaseId::new("p").unwrap(), kind);
    spec.with = WithTable::new(table);
    spec.needs = needs.iter().map(|n| PhaseId::new(n).unwrap()).collect();
    match registry().build_phase(&spec) {
        Ok(_) => panic!("factory accepted the settings"),
        Err(e) => e.message,
    }
}

/// Whether tests needing a toolchain must fail rather than skip.
pub fn services_required() -> bool {
    std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}
