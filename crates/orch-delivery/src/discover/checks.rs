//! Checks across files: required variables no env file defines, host ports published
//! twice, `depends_on` naming no service.

use std::collections::{BTreeMap, BTreeSet};

use super::env::EnvIndex;
use super::{Problem, Severity, compose};

/// `${VAR:?}` references that no env file defines.
pub(super) fn undefined_required_variables(env: &EnvIndex, problems: &mut Vec<Problem>) {
    for (name, (defined, used)) in &env.vars {
        let in_file = defined
            .iter()
            .any(|s| s.how == "env-template" || s.how == "env-file");
        if in_file {
            continue;
        }
        let mut reported = BTreeSet::new();
        for site in used.iter().filter(|s| s.how == "compose-required") {
            if reported.insert(site.file.clone()) {
                problems.push(Problem {
                    file: site.file.clone(),
                    line: site.line,
                    kind: "undefined-required-variable".to_owned(),
                    severity: Severity::Error,
                    message: format!(
                        "`${{{name}:?}}` is required but no env file defines `{name}`"
                    ),
                });
            }
        }
    }
}

/// Host port clashes and unknown `depends_on` targets, among the Compose files of one
/// directory (files Compose would merge into one project).
pub(super) fn port_and_dependency_checks(
    reads: &[compose::ComposeRead],
    problems: &mut Vec<Problem>,
) {
    let mut by_dir: BTreeMap<String, Vec<&compose::ComposeRead>> = BTreeMap::new();
    for r in reads {
        by_dir
            .entry(compose::parent_rel(&r.file.path))
            .or_default()
            .push(r);
    }
    for group in by_dir.values() {
        let known: BTreeSet<&str> = group
            .iter()
            .flat_map(|r| r.file.services.iter().map(|s| s.name.as_str()))
            .collect();
        // (port, protocol) -> [(service, file, line, profiles)]
        type Binding<'a> = (&'a str, &'a str, u64, &'a [String]);
        let mut bound: BTreeMap<(u16, String), Vec<Binding<'_>>> = BTreeMap::new();
        for r in group {
            let line_of = |svc: &str| {
                r.service_lines
                    .iter()
                    .find(|(n, _)| n == svc)
                    .map_or(0, |(_, l)| *l)
            };
            for svc in &r.file.services {
                for dep in &svc.depends_on {
                    if !known.contains(dep.service.as_str()) {
                        problems.push(Problem {
                            file: r.file.path.clone(),
                            line: Some(line_of(&svc.name)).filter(|l| *l > 0),
                            kind: "unknown-dependency".to_owned(),
                            severity: Severity::Error,
                            message: format!(
                                "service `{}` depends on `{}`, which no Compose file here defines",
                                svc.name, dep.service
                            ),
                        });
                    }
                }
            }
            // Port lines are recorded per service, in file order.
            for svc in &r.file.services {
                let lines: Vec<u64> = r
                    .port_lines
                    .iter()
                    .filter(|(n, _)| *n == svc.name)
                    .map(|(_, l)| *l)
                    .collect();
                for (i, p) in svc.ports.iter().enumerate() {
                    let line = lines.get(i).copied().unwrap_or_else(|| line_of(&svc.name));
                    if let Some(published) = &p.published {
                        for port in compose::published_ports(published) {
                            bound.entry((port, p.protocol.clone())).or_default().push((
                                svc.name.as_str(),
                                r.file.path.as_str(),
                                line,
                                svc.profiles.as_slice(),
                            ));
                        }
                    }
                }
            }
        }
        for ((port, protocol), users) in bound {
            let names: BTreeSet<&str> = users.iter().map(|u| u.0).collect();
            if names.len() < 2 {
                continue;
            }
            // Services in disjoint profiles never start together: a warning only.
            let mut together = false;
            for (i, a) in users.iter().enumerate() {
                for b in &users[i + 1..] {
                    if a.0 != b.0
                        && (a.3.is_empty() || b.3.is_empty() || a.3.iter().any(|p| b.3.contains(p)))
                    {
                        together = true;
                    }
                }
            }
            let first = users[0];
            let others: Vec<String> = users
                .iter()
                .filter(|u| u.0 != first.0)
                .map(|u| format!("`{}` ({}:{})", u.0, u.1, u.2))
                .collect();
            let last = users
                .iter()
                .rev()
                .find(|u| u.0 != first.0)
                .unwrap_or(&first);
            problems.push(Problem {
                file: last.1.to_owned(),
                line: Some(last.2).filter(|l| *l > 0),
                kind: "host-port-clash".to_owned(),
                severity: if together {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                message: format!(
                    "host port {port}/{protocol} is published by `{}` ({}:{}) and {}",
                    first.0,
                    first.1,
                    first.2,
                    others.join(", ")
                ),
            });
        }
    }
}
