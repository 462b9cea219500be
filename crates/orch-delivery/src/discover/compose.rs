//! Compose files: detection and a full read of what discovery reports.

use std::path::Path;

use super::model::{
    BuildInfo, ComposeFile, ComposeService, Dependency, EnvFileRef, PortMapping, Problem, Severity,
};
use super::scan;
use super::{EnvIndex, join_rel};
use crate::yaml::Yaml;

/// Whether a parsed YAML document is a Compose file: top-level `services` is a non-empty
/// mapping of mappings, at least one with `image` or `build`.
pub(crate) fn looks_like_compose(doc: &Yaml) -> bool {
    let Some(Yaml::Map(services)) = doc.get("services") else {
        return false;
    };
    !services.is_empty()
        && services.iter().all(|(_, s)| s.is_map())
        && services
            .iter()
            .any(|(_, s)| s.get("image").is_some() || s.get("build").is_some())
}

/// A Compose file read, with the problems and env sites it gave.
pub(crate) struct ComposeRead {
    pub file: ComposeFile,
    /// Line of each service's key, by name.
    pub service_lines: Vec<(String, u64)>,
    /// The line of the `ports` key for each port entry: (service, line), in file order.
    pub port_lines: Vec<(String, u64)>,
}

/// Reads a parsed Compose document. `rel` is the file's path relative to the base,
/// `base` the base directory.
pub(crate) fn read(
    doc: &Yaml,
    text: &str,
    rel: &str,
    detected_by: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
    env: &mut EnvIndex,
) -> ComposeRead {
    let dir_rel = parent_rel(rel);
    let problem = |line: Option<u64>, kind: &str, severity: Severity, message: String| Problem {
        file: rel.to_owned(),
        line,
        kind: kind.to_owned(),
        severity,
        message,
    };

    for (path, key, line) in doc.duplicates() {
        let place = if path.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in `{path}`")
        };
        problems.push(problem(
            Some(line),
            "duplicate-key",
            Severity::Error,
            format!(
                "duplicate key `{key}` {place}; Compose rejects it (the last value is used here)"
            ),
        ));
    }
    if let Some((k, _)) = doc.entry("version") {
        problems.push(problem(
            Some(k.line),
            "obsolete-key",
            Severity::Warning,
            "top-level `version` is obsolete; Compose ignores it".to_owned(),
        ));
    }

    let mut file = ComposeFile {
        path: rel.to_owned(),
        detected_by: detected_by.to_owned(),
        anchors: scan::yaml_anchors(text),
        extensions: sorted(
            doc.entries()
                .iter()
                .filter(|(k, _)| k.text.starts_with("x-"))
                .map(|(k, _)| k.text.clone()),
        ),
        networks: sorted(doc.get("networks").map_or_else(Vec::new, |n| {
            n.entries().iter().map(|(k, _)| k.text.clone()).collect()
        })),
        volumes: sorted(doc.get("volumes").map_or_else(Vec::new, |n| {
            n.entries().iter().map(|(k, _)| k.text.clone()).collect()
        })),
        services: Vec::new(),
    };
    let mut service_lines = Vec::new();
    let mut port_lines = Vec::new();

    // Interpolation anywhere outside `services` (x- blocks, networks, ...).
    for (k, v) in doc.entries() {
        if k.text != "services" {
            v.visit_strings(k.line, &mut |s, line| {
                record_interpolations(env, rel, None, s, line)
            });
        }
    }

    let services = doc.get("services").map(Yaml::entries).unwrap_or_default();
    for (key, svc) in services {
        let name = key.text.clone();
        service_lines.push((name.clone(), key.line));
        svc.visit_strings(key.line, &mut |s, line| {
            record_interpolations(env, rel, Some(&name), s, line)
        });
        let mut out = ComposeService {
            name: name.clone(),
            // Credentials in what discovery reads are stripped where they are read, so no
            // report or dashboard can show them.
            image: svc.get("image").and_then(Yaml::scalar).map(no_credentials),
            extensions: sorted(
                svc.entries()
                    .iter()
                    .filter(|(k, _)| k.text.starts_with("x-"))
                    .map(|(k, _)| k.text.clone()),
            ),
            profiles: sorted(strings(svc.get("profiles"))),
            ..ComposeService::default()
        };

        if let Some((bkey, build)) = svc.entry("build") {
            let b = read_build(build, &dir_rel, base);
            if !b.remote {
                if !b.context_exists {
                    problems.push(problem(
                        Some(bkey.line),
                        "missing-build-context",
                        Severity::Error,
                        format!(
                            "service `{name}`: build context `{}` does not exist",
                            b.context
                        ),
                    ));
                } else if !b.dockerfile_exists {
                    problems.push(problem(
                        Some(bkey.line),
                        "missing-dockerfile",
                        Severity::Error,
                        format!(
                            "service `{name}`: Dockerfile `{}` does not exist in build context `{}`",
                            b.dockerfile, b.context
                        ),
                    ));
                }
            }
            out.build = Some(b);
        }

        if let Some((pkey, Yaml::Seq(items))) = svc.entry("ports") {
            for item in items {
                if let Some(p) = read_port(item) {
                    port_lines.push((name.clone(), pkey.line));
                    out.ports.push(p);
                }
            }
        }

        if let Some((ekey, environment)) = svc.entry("environment") {
            let mut names = Vec::new();
            match environment {
                Yaml::Map(_) => {
                    for (k, v) in environment.entries() {
                        names.push(k.text.clone());
                        let defined = !matches!(v, Yaml::Null);
                        env.add(
                            &k.text,
                            rel,
                            Some(k.line),
                            "compose-environment",
                            Some(&name),
                            defined,
                        );
                    }
                }
                Yaml::Seq(items) => {
                    for item in items {
                        if let Some(s) = item.scalar() {
                            let (var, defined) = match s.split_once('=') {
                                Some((n, _)) => (n.trim().to_owned(), true),
                                None => (s.trim().to_owned(), false),
                            };
                            if scan::is_env_name(&var) {
                                env.add(
                                    &var,
                                    rel,
                                    Some(ekey.line),
                                    "compose-environment",
                                    Some(&name),
                                    defined,
                                );
                                names.push(var);
                            }
                        }
                    }
                }
                _ => {}
            }
            out.environment = sorted(names);
        }

        if let Some((fkey, env_file)) = svc.entry("env_file") {
            let items: Vec<&Yaml> = match env_file {
                Yaml::Seq(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let (path, required) = match item {
                    Yaml::Map(_) => (
                        item.get("path").and_then(Yaml::scalar),
                        !matches!(item.get("required"), Some(Yaml::Bool(false))),
                    ),
                    other => (other.scalar(), true),
                };
                let Some(path) = path.map(no_credentials) else {
                    continue;
                };
                let resolved = join_rel(&dir_rel, &path);
                let exists = base.join(&resolved).is_file();
                if !exists && required {
                    problems.push(problem(
                        Some(fkey.line),
                        "missing-env-file",
                        Severity::Error,
                        format!("service `{name}`: env_file `{path}` does not exist"),
                    ));
                }
                env.env_file_uses
                    .push((resolved.clone(), rel.to_owned(), fkey.line, name.clone()));
                out.env_file.push(EnvFileRef {
                    path,
                    resolved,
                    exists,
                    required,
                });
            }
        }

        if let Some(deps) = svc.get("depends_on") {
            let mut list = Vec::new();
            match deps {
                Yaml::Seq(items) => {
                    for item in items {
                        if let Some(s) = item.scalar() {
                            list.push(Dependency {
                                service: s,
                                condition: "service_started".to_owned(),
                                required: true,
                                restart: false,
                            });
                        }
                    }
                }
                Yaml::Map(_) => {
                    for (k, v) in deps.entries() {
                        list.push(Dependency {
                            service: k.text.clone(),
                            condition: v
                                .get("condition")
                                .and_then(Yaml::scalar)
                                .unwrap_or_else(|| "service_started".to_owned()),
                            required: !matches!(v.get("required"), Some(Yaml::Bool(false))),
                            restart: matches!(v.get("restart"), Some(Yaml::Bool(true))),
                        });
                    }
                }
                _ => {}
            }
            list.sort_by(|a, b| a.service.cmp(&b.service));
            out.depends_on = list;
        }
        file.services.push(out);
    }
    file.services.sort_by(|a, b| a.name.cmp(&b.name));
    ComposeRead {
        file,
        service_lines,
        port_lines,
    }
}

fn record_interpolations(env: &mut EnvIndex, rel: &str, service: Option<&str>, s: &str, line: u64) {
    for (name, required) in scan::interpolations(s) {
        let how = if required {
            "compose-required"
        } else {
            "compose-interpolation"
        };
        env.add(&name, rel, Some(line), how, service, false);
    }
}

fn read_build(build: &Yaml, dir_rel: &str, base: &Path) -> BuildInfo {
    let (context, dockerfile, inline) = match build {
        Yaml::Map(_) => (
            build
                .get("context")
                .and_then(Yaml::scalar)
                .unwrap_or_else(|| ".".to_owned()),
            build
                .get("dockerfile")
                .and_then(Yaml::scalar)
                .unwrap_or_else(|| "Dockerfile".to_owned()),
            build.get("dockerfile_inline").is_some(),
        ),
        other => (
            other.scalar().unwrap_or_else(|| ".".to_owned()),
            "Dockerfile".to_owned(),
            false,
        ),
    };
    let (context, dockerfile) = (no_credentials(context), no_credentials(dockerfile));
    let remote = context.contains("://") || context.starts_with("git@");
    if remote {
        return BuildInfo {
            context,
            dockerfile,
            context_path: None,
            context_exists: true,
            dockerfile_exists: true,
            remote,
        };
    }
    let context_rel = join_rel(dir_rel, &context);
    let context_dir = base.join(&context_rel);
    let context_exists = context_dir.is_dir();
    let dockerfile_exists = inline
        || (context_exists
            && if Path::new(&dockerfile).is_absolute() {
                Path::new(&dockerfile).is_file()
            } else {
                context_dir.join(&dockerfile).is_file()
            });
    BuildInfo {
        context,
        dockerfile: if inline {
            "(dockerfile_inline)".to_owned()
        } else {
            dockerfile
        },
        context_path: Some(context_rel),
        context_exists,
        dockerfile_exists,
        remote,
    }
}

fn read_port(item: &Yaml) -> Option<PortMapping> {
    match item {
        Yaml::Map(_) => Some(PortMapping {
            host_ip: item.get("host_ip").and_then(Yaml::scalar),
            published: item.get("published").and_then(Yaml::scalar),
            target: item.get("target").and_then(Yaml::scalar)?,
            protocol: item
                .get("protocol")
                .and_then(Yaml::scalar)
                .unwrap_or_else(|| "tcp".to_owned()),
        }),
        other => {
            let raw = other.scalar()?;
            let (text, _) = scan::resolve_defaults(&raw);
            let (spec, protocol) = match text.rsplit_once('/') {
                Some((s, p)) => (s.to_owned(), p.to_owned()),
                None => (text.clone(), "tcp".to_owned()),
            };
            let (host_ip, rest) = if let Some(inner) = spec.strip_prefix('[') {
                let (ip, rest) = inner.split_once(']')?;
                (Some(ip.to_owned()), rest.trim_start_matches(':').to_owned())
            } else {
                let parts: Vec<&str> = spec.split(':').collect();
                if parts.len() > 2 {
                    (
                        Some(parts[..parts.len() - 2].join(":")),
                        parts[parts.len() - 2..].join(":"),
                    )
                } else {
                    (None, spec.clone())
                }
            };
            let (published, target) = match rest.split_once(':') {
                Some((p, t)) => ((!p.is_empty()).then(|| p.to_owned()), t.to_owned()),
                None => (None, rest),
            };
            Some(PortMapping {
                host_ip,
                published,
                target,
                protocol,
            })
        }
    }
}

/// Host ports a published value covers (`8080`, `8000-8005`); empty when unknown.
pub(crate) fn published_ports(published: &str) -> Vec<u16> {
    let parse = |s: &str| s.trim().parse::<u16>().ok();
    match published.split_once('-') {
        Some((a, b)) => match (parse(a), parse(b)) {
            (Some(a), Some(b)) if a <= b && b - a < 1024 => (a..=b).collect(),
            _ => Vec::new(),
        },
        None => parse(published).into_iter().collect(),
    }
}

/// Container ports a target value covers.
pub(crate) fn target_ports(target: &str) -> Vec<u16> {
    published_ports(target)
}

fn strings(v: Option<&Yaml>) -> Vec<String> {
    match v {
        Some(Yaml::Seq(items)) => items
            .iter()
            .filter_map(Yaml::scalar)
            .map(no_credentials)
            .collect(),
        Some(other) => other.scalar().map(no_credentials).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The text with the credentials of any URL in it stripped.
fn no_credentials(text: String) -> String {
    match crate::util::strip_url_credentials(&text) {
        std::borrow::Cow::Owned(s) => s,
        std::borrow::Cow::Borrowed(_) => text,
    }
}

fn sorted(v: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().collect();
    v.sort();
    v.dedup();
    v
}

/// The directory part of a relative path (`.` for a top-level file).
pub(crate) fn parent_rel(rel: &str) -> String {
    rel.rsplit_once('/')
        .map_or_else(|| ".".to_owned(), |(d, _)| d.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        let p = |s: &str| read_port(&Yaml::Str(s.to_owned())).unwrap();
        assert_eq!(p("80").published, None);
        assert_eq!(p("8080:80").published.as_deref(), Some("8080"));
        let full = p("127.0.0.1:5432:5432/udp");
        assert_eq!(
            (
                full.host_ip.as_deref(),
                full.published.as_deref(),
                full.target.as_str(),
                full.protocol.as_str()
            ),
            (Some("127.0.0.1"), Some("5432"), "5432", "udp")
        );
        assert_eq!(p("${WEB_PORT:-8081}:80").published.as_deref(), Some("8081"));
        assert_eq!(p("[::1]:9000:9000").host_ip.as_deref(), Some("::1"));
        assert_eq!(published_ports("8000-8002"), [8000, 8001, 8002]);
    }
}
