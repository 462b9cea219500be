//! Services: the directories holding a manifest, what their files declare (ports, package
//! name, tests), the Compose services that build them, and their records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::walk::FileRec;
use super::{ComposeRef, DeclaredPort, Service, compose, join_rel, model, scan};

#[derive(Default)]
pub(super) struct ServiceAcc {
    pub(super) manifests: BTreeSet<String>,
    pub(super) package_name: Option<String>,
    pub(super) test_files: usize,
    pub(super) ports: BTreeSet<DeclaredPort>,
    pub(super) compose: BTreeSet<ComposeRef>,
    pub(super) has_tsconfig: bool,
}

/// Service directories: those holding a manifest.
pub(super) fn directories(files: &[FileRec]) -> BTreeMap<String, ServiceAcc> {
    let mut services: BTreeMap<String, ServiceAcc> = BTreeMap::new();
    for f in files {
        if scan::is_manifest(&f.name) {
            services
                .entry(compose::parent_rel(&f.rel))
                .or_default()
                .manifests
                .insert(f.name.clone());
        }
    }
    services
}

/// For each file, the service directory it belongs to: the nearest one above it.
pub(super) fn owners(
    services: &BTreeMap<String, ServiceAcc>,
    files: &[FileRec],
) -> Vec<Option<String>> {
    let owner_of = |rel: &str| -> Option<String> {
        let mut dir = compose::parent_rel(rel);
        loop {
            if services.contains_key(&dir) {
                return Some(dir);
            }
            if dir == "." {
                return None;
            }
            dir = compose::parent_rel(&dir);
        }
    };
    let mut owners: Vec<Option<String>> = Vec::with_capacity(files.len());
    for f in files {
        owners.push(owner_of(&f.rel));
    }
    owners
}

/// Compose services building a discovered service: each names the other.
pub(super) fn link_compose(
    compose_reads: &mut [compose::ComposeRead],
    services: &mut BTreeMap<String, ServiceAcc>,
) {
    for read in compose_reads.iter_mut() {
        for svc in &mut read.file.services {
            let Some(ctx_path) = svc.build.as_ref().and_then(|b| b.context_path.clone()) else {
                continue;
            };
            if let Some(acc) = services.get_mut(&ctx_path) {
                svc.service_path = Some(ctx_path.clone());
                acc.compose.insert(ComposeRef {
                    file: read.file.path.clone(),
                    service: svc.name.clone(),
                });
                for p in &svc.ports {
                    for port in compose::target_ports(&p.target) {
                        acc.ports.insert(DeclaredPort {
                            port,
                            protocol: p.protocol.clone(),
                            source: "compose".to_owned(),
                            file: read.file.path.clone(),
                        });
                    }
                }
            }
        }
    }
}

/// The services found, as reported: name, language, Dockerfile, the service they nest in.
pub(super) fn assemble(services: BTreeMap<String, ServiceAcc>, base: &Path) -> Vec<Service> {
    let base_name = base
        .file_name()
        .map_or_else(|| "root".to_owned(), |n| n.to_string_lossy().into_owned());
    let dirs: Vec<String> = services.keys().cloned().collect();
    let mut out_services = Vec::new();
    for (path, acc) in services {
        let name = if path == "." {
            base_name.clone()
        } else {
            path.rsplit('/').next().unwrap_or(&path).to_owned()
        };
        let mut language = None;
        for lang in ["python", "node", "go", "rust", "java"] {
            if acc
                .manifests
                .iter()
                .any(|m| scan::manifest_language(m) == Some(lang))
            {
                language = Some(if lang == "node" && acc.has_tsconfig {
                    "typescript".to_owned()
                } else {
                    lang.to_owned()
                });
                break;
            }
        }
        let dockerfile = ["Dockerfile", "Containerfile"]
            .iter()
            .find(|d| acc.manifests.contains(**d))
            .map(|d| (*d).to_owned())
            .or_else(|| {
                acc.manifests
                    .iter()
                    .find(|m| model::is_dockerfile_name(m))
                    .cloned()
            })
            .map(|d| join_rel(&path, &d));
        let parent = {
            let mut found = None;
            let mut dir = path.clone();
            while dir != "." {
                dir = compose::parent_rel(&dir);
                if dirs.contains(&dir) {
                    found = Some(dir.clone());
                    break;
                }
            }
            found
        };
        out_services.push(Service {
            package_name: acc.package_name.filter(|p| *p != name),
            name,
            language,
            manifests: acc.manifests.into_iter().collect(),
            dockerfile,
            tests: acc.test_files > 0,
            test_files: acc.test_files,
            ports: acc.ports.into_iter().collect(),
            compose_services: acc.compose.into_iter().collect(),
            parent,
            path,
        });
    }
    out_services
}
