//! `orch-git`: git phase kinds for orch, on libgit2 ([`git2`]).
//!
//! [`register`] adds the `git` agent type and these kinds to a [`Registry`]:
//!
//! | kind | does | outputs |
//! |---|---|---|
//! | `git.inventory` | reads the repository | `head`, `branch`, `detached`, `dirty`, `dirty_files`, `latest_tag`, `remotes` |
//! | `git.snapshot` | records the working tree as a commit under `refs/orch/snapshots/` | `snapshot`, `ref` |
//! | `git.rollback` | restores a snapshot, commit or tag (after a backup snapshot) | `head`, `backup`, `backup_ref`, `target` |
//! | `git.tag` | annotated tag at HEAD, optional branch, optional push | `tag`, `commit`, `created`, `branch`, `pushed`, `remote` |
//! | `git.changelog` | Markdown release notes since the previous tag | `path`, `commits`, `since`, `markdown` |
//!
//! Every string setting may use `${{ vars.X }}` / `${{ phases.ID.outputs.K }}`; `repo`
//! defaults to the pipeline's directory. Remote URLs are shown (logs, outputs, errors,
//! plans) without credentials, and libgit2's messages go through the same sanitiser and the
//! run's secret redaction. The crate's README describes every setting.
//!
//! Transports: with default features, local paths, `file://` and plain `http://` remotes
//! work; the `https` and `ssh` features enable libgit2's TLS and SSH transports (they need
//! Debian's `libssl-dev`).
//!
//! # Example
//!
//! ```
//! use orch_core::{PhaseContext, PhaseId, PhaseSpec, Registry, WithTable};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A repository with one commit.
//! let dir = tempfile::tempdir()?;
//! let repo = git2::Repository::init(dir.path())?;
//! repo.config()?.set_str("user.name", "Dev")?;
//! repo.config()?.set_str("user.email", "dev@example.com")?;
//! std::fs::write(dir.path().join("README"), "hello\n")?;
//! let mut index = repo.index()?;
//! index.add_path(std::path::Path::new("README"))?;
//! index.write()?;
//! let tree = repo.find_tree(index.write_tree()?)?;
//! let sig = repo.signature()?;
//! let head = repo.commit(Some("HEAD"), &sig, &sig, "feat: first", &tree, &[])?;
//!
//! // Register the kinds and build a phase as the engine would.
//! let mut registry = Registry::with_builtins();
//! orch_git::register(&mut registry).unwrap();
//! let mut spec = PhaseSpec::new(PhaseId::new("facts")?, "git.inventory");
//! spec.with = WithTable::new(toml::toml! { repo = "." });
//! let phase = registry.build_phase(&spec)?;
//!
//! let ctx = PhaseContext::builder(PhaseId::new("facts")?, dir.path()).build();
//! let outcome = tokio::runtime::Runtime::new()?.block_on(phase.run(&ctx))?;
//! assert_eq!(outcome.outputs["head"], head.to_string());
//! assert_eq!(outcome.outputs["dirty"], "false");
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use orch_core::Registry;
use orch_core::registry::Kind;

mod agent;
pub mod changelog;
mod common;
pub mod errors;
mod exec;
mod inventory;
mod repo;
mod rollback;
pub mod sanitize;
mod snapshot;
mod tag;

pub use agent::GitAgent;
pub use errors::GitError;
pub use repo::SNAPSHOT_REF_PREFIX;
pub use sanitize::{Sanitizer, sanitize_url};

/// Registers the `git` agent type and the kinds `git.inventory`, `git.snapshot`,
/// `git.rollback`, `git.tag` and `git.changelog`.
pub fn register(registry: &mut Registry) -> Result<(), orch_core::errors::RegistryError> {
    registry.register_agent_type("git", Arc::new(agent::factory))?;
    let git = |name: &str, summary: &str| Kind::new(name, summary).agent_type("git");
    registry.add_kind(
        git(
            "git.inventory",
            "read HEAD, branch, uncommitted changes, latest tag and remotes of a repository",
        ),
        inventory::factory,
    )?;
    registry.add_kind(
        git(
            "git.snapshot",
            "record the working tree (untracked files included) as a commit under refs/orch/snapshots/",
        ),
        snapshot::factory,
    )?;
    registry.add_kind(
        git(
            "git.rollback",
            "restore the working tree and HEAD to a snapshot, commit or tag, after a backup snapshot",
        ),
        rollback::factory,
    )?;
    registry.add_kind(
        git(
            "git.tag",
            "create an annotated tag at HEAD, move a branch to it, and push them",
        ),
        tag::factory,
    )?;
    registry.add_kind(
        git(
            "git.changelog",
            "write Markdown release notes from the conventional commits since the previous tag",
        ),
        changelog::factory,
    )
}
