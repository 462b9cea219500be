//! The `discovery.json` format (version [`DISCOVERY_FORMAT_VERSION`]).
//!
//! Every path in it is relative to [`Discovery::base`] and uses `/`; every list is sorted
//! (services, compose files and problems by path, variables by name), so the same tree
//! always gives the same bytes.

use serde::{Deserialize, Serialize};

/// The version of the `discovery.json` format written by this build.
pub const DISCOVERY_FORMAT_VERSION: u32 = 1;

/// What `discover` found in a tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// Format version ([`DISCOVERY_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The absolute directory every other path is relative to.
    pub base: String,
    /// The roots walked, relative to `base` (`.` for `base` itself).
    pub roots: Vec<String>,
    /// Directories with at least one manifest, sorted by path.
    pub services: Vec<Service>,
    /// Compose files, sorted by path.
    pub compose_files: Vec<ComposeFile>,
    /// Environment variable names, sorted by name. Values are never recorded.
    pub env_vars: Vec<EnvVar>,
    /// What looks wrong, sorted by file, line and kind.
    pub problems: Vec<Problem>,
    /// Directories left out by the built-in rules (not those of `.gitignore`), with why.
    pub skipped: Vec<Skipped>,
}

impl Discovery {
    /// Number of services inside Compose files, summed over files.
    pub fn compose_service_count(&self) -> usize {
        self.compose_files.iter().map(|f| f.services.len()).sum()
    }
}

/// A directory holding one or more manifests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The directory (`.` for the base).
    pub path: String,
    /// The directory's name.
    pub name: String,
    /// The name its manifest declares (`package.json` `name`, `[project] name`,
    /// `[package] name`, the last part of the Go module, the Maven `artifactId`), when it
    /// differs from `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_name: Option<String>,
    /// Main language (`python`, `node`, `typescript`, `rust`, `go`, `java`), if any manifest
    /// says.
    pub language: Option<String>,
    /// Manifest file names found in the directory, sorted.
    pub manifests: Vec<String>,
    /// The Dockerfile (path), if the directory has one.
    pub dockerfile: Option<String>,
    /// Whether test files were found in the service (outside nested services).
    pub tests: bool,
    /// How many test files.
    pub test_files: usize,
    /// Ports the service declares, sorted by port and source.
    pub ports: Vec<DeclaredPort>,
    /// Compose services whose build context is this directory.
    pub compose_services: Vec<ComposeRef>,
    /// The enclosing service's path, for nested services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl Service {
    /// Whether the service has a manifest other than a Dockerfile.
    pub fn has_language_manifest(&self) -> bool {
        self.manifests.iter().any(|m| !is_dockerfile_name(m))
    }
}

/// Whether a file name is a Dockerfile (`Dockerfile`, `Containerfile`, `Dockerfile.x`,
/// `x.Dockerfile`).
pub fn is_dockerfile_name(name: &str) -> bool {
    name == "Dockerfile"
        || name == "Containerfile"
        || name.starts_with("Dockerfile.")
        || name.ends_with(".Dockerfile")
}

/// A port a service declares.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeclaredPort {
    /// The port number.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Where it was declared: `dockerfile-expose`, `dockerfile-env`, `dockerfile-cmd`,
    /// `package-json-script`, `source-default`, `compose`.
    pub source: String,
    /// The file that declares it.
    pub file: String,
}

/// A compose service, by file and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ComposeRef {
    /// The Compose file.
    pub file: String,
    /// The service name in it.
    pub service: String,
}

/// A Compose file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComposeFile {
    /// The file.
    pub path: String,
    /// `name` (its file name says Compose) or `content` (a YAML file with top-level
    /// `services:` of mappings with `image` or `build`).
    pub detected_by: String,
    /// Anchors defined in the file (`&name`), sorted; aliases and `<<` merges are resolved.
    pub anchors: Vec<String>,
    /// Top-level `x-` extension keys, sorted.
    pub extensions: Vec<String>,
    /// Top-level `networks` names, sorted.
    pub networks: Vec<String>,
    /// Top-level `volumes` names, sorted.
    pub volumes: Vec<String>,
    /// Services, sorted by name.
    pub services: Vec<ComposeService>,
}

/// A service in a Compose file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComposeService {
    /// Its name.
    pub name: String,
    /// `image`.
    pub image: Option<String>,
    /// `build`.
    pub build: Option<BuildInfo>,
    /// The discovered service directory the build context points at.
    pub service_path: Option<String>,
    /// `ports`, in file order.
    pub ports: Vec<PortMapping>,
    /// Names set or passed through by `environment`, sorted.
    pub environment: Vec<String>,
    /// `env_file` entries, in file order.
    pub env_file: Vec<EnvFileRef>,
    /// `depends_on`, short or long form, sorted by service.
    pub depends_on: Vec<Dependency>,
    /// `profiles`, sorted.
    pub profiles: Vec<String>,
    /// `x-` keys of the service, sorted.
    pub extensions: Vec<String>,
}

/// A Compose `build` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// `context` as written (`.` when only `dockerfile` is set).
    pub context: String,
    /// `dockerfile` as written (default `Dockerfile`).
    pub dockerfile: String,
    /// The context directory, relative to `base`; `None` for remote contexts.
    pub context_path: Option<String>,
    /// Whether the context directory exists.
    pub context_exists: bool,
    /// Whether the Dockerfile exists in it.
    pub dockerfile_exists: bool,
    /// The context is a URL (git, http): nothing to check locally.
    pub remote: bool,
}

/// One `ports` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address, if bound to one.
    pub host_ip: Option<String>,
    /// Published host port or range; `None` when Docker picks one.
    pub published: Option<String>,
    /// Container port or range.
    pub target: String,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One `env_file` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFileRef {
    /// As written.
    pub path: String,
    /// Relative to `base`.
    pub resolved: String,
    /// Whether the file exists.
    pub exists: bool,
    /// `required` (long form; default true).
    pub required: bool,
}

/// One `depends_on` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The service depended on.
    pub service: String,
    /// `condition` (default `service_started`).
    pub condition: String,
    /// `required` (default true).
    pub required: bool,
    /// `restart` (default false).
    pub restart: bool,
}

/// An environment variable name and where it appears.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// The name.
    pub name: String,
    /// Where a value is given: env files, Compose `environment` entries with a value.
    pub defined_in: Vec<EnvSite>,
    /// Where it is read: Compose interpolation, pass-through `environment` entries,
    /// `env_file` use, source code.
    pub used_in: Vec<EnvSite>,
}

/// One place a variable appears.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvSite {
    /// The file.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// How: `env-template`, `env-file`, `compose-environment`, `compose-interpolation`,
    /// `compose-required`, `compose-env-file`, `source`.
    pub how: String,
    /// The Compose service, for Compose sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Will break a build or a start.
    Error,
    /// Worth fixing.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// Something that looks wrong.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Problem {
    /// The file (or directory) concerned.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// A stable identifier: `malformed-file`, `missing-build-context`,
    /// `missing-dockerfile`, `missing-env-file`, `undefined-required-variable`,
    /// `host-port-clash`, `duplicate-key`, `obsolete-key`, `unknown-dependency`,
    /// `unreadable`.
    pub kind: String,
    /// `error` or `warning`.
    pub severity: Severity,
    /// One line for people.
    pub message: String,
}

/// A directory the built-in rules left out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Skipped {
    /// The directory.
    pub path: String,
    /// `vcs`, `node-modules`, `virtualenv`, `vendor`, `build-output`, `cache`, `backup`,
    /// `state-dir`, `ignore-setting`.
    pub reason: String,
}
