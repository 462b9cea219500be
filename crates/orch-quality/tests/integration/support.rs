//! Finding and running the external tools.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Fails (ORCH_REQUIRE_SERVICES=1) or prints why the test skips; returns false to skip.
pub fn available(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    let msg = format!("{what}; run scripts/install/quality-tools.sh");
    assert!(!required(), "ORCH_REQUIRE_SERVICES=1 but {msg}");
    eprintln!("skipping: {msg}");
    false
}

/// `python3 -m MODULE`, when the module runs.
pub fn python_module(module: &str) -> Option<Command> {
    let ok = Command::new("python3")
        .args(["-m", module, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    available(&format!("python3 -m {module} does not run"), ok).then(|| {
        let mut c = Command::new("python3");
        c.args(["-m", module]);
        c.env("PYTHONDONTWRITEBYTECODE", "1");
        c
    })
}

/// The directory holding the npm tools' executables.
pub fn node_bin() -> PathBuf {
    std::env::var_os("ORCH_NODE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/node/node_modules/.bin"))
}

/// An npm tool from [`node_bin`], when it runs.
pub fn node_tool(name: &str) -> Option<Command> {
    let path = node_bin().join(name);
    let ok = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    available(&format!("{} does not run", path.display()), ok).then(|| Command::new(path))
}

/// Runs a command in `dir`; panics with its output when it cannot start.
pub fn run_in(mut cmd: Command, dir: &Path) -> Output {
    let out = cmd
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!(
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
