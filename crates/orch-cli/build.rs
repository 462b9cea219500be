//! Sets `ORCH_VERSION` for `orch --version`: the crate version, plus the git revision
//! and commit date when built from a git checkout (`0.1.0 (1a2b3c4d5e6f 2026-01-31)`).
//!
//! Builds from a tarball or a checkout without `.git` (or without `git` on the PATH) get
//! the bare version. Packagers can set `ORCH_GIT_REV` to name the revision themselves.
//!
//! On Linux with glibc, `orch` is linked with packed relative relocations (see
//! [`pack_relative_relocations`]).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rerun-if-env-changed=ORCH_GIT_REV");
    let rev = match std::env::var("ORCH_GIT_REV") {
        Ok(rev) if !rev.trim().is_empty() => Some(rev.trim().to_owned()),
        _ => git_revision(),
    };
    let full = match rev {
        Some(rev) => format!("{version} ({rev})"),
        None => version,
    };
    println!("cargo:rustc-env=ORCH_VERSION={full}");
    pack_relative_relocations();
}

/// `orch` is a position-independent executable with some 50,000 pointers in its data
/// (vtables, string tables) that the dynamic loader adjusts at start. Each adjustment is
/// a 24-byte `RELA` entry by default: 1.3 MB of table read at every start and resident for
/// the whole run. Packed (`DT_RELR`, a bitmap of the places to adjust) the table is 14 KB,
/// and a run's peak RSS is 3 MB lower (`benches/delivery_speed.sh` measures peak RSS).
/// GNU ld 2.38 and later, lld 15 and later and mold understand `-z pack-relative-relocs`.
/// The binary then needs glibc 2.36 or later: it names the version `GLIBC_ABI_DT_RELR`, so
/// an older C library refuses to start it with an error instead of running it wrongly.
fn pack_relative_relocations() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `SHORT_HASH DATE` of HEAD, or `None` outside a git checkout.
fn git_revision() -> Option<String> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    // A tarball unpacked inside some other checkout is not a checkout of orch: this file
    // must be tracked by the repository.
    git(&manifest_dir, &["ls-files", "--error-unmatch", "build.rs"])?;
    // Rebuild when HEAD moves: HEAD itself, the branch it points at and packed refs
    // (`--git-path` resolves them in linked worktrees too).
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(head_ref) = git(&manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(head_ref);
    }
    for name in watch {
        if let Some(path) = git(&manifest_dir, &["rev-parse", "--git-path", &name]) {
            println!(
                "cargo:rerun-if-changed={}",
                manifest_dir.join(path).display()
            );
        }
    }
    let out = git(
        &manifest_dir,
        &[
            "log",
            "-1",
            "--date=short",
            "--format=%h %cd",
            "--abbrev=12",
        ],
    )?;
    (!out.is_empty()).then_some(out)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
