//! Env var names: where each is defined (env files, templates) and used (sources, Compose
//! files), gathered as the files are read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{EnvSite, EnvVar, read_text, scan};

/// Env var sites gathered during the walk.
#[derive(Default)]
pub(crate) struct EnvIndex {
    pub(super) vars: BTreeMap<String, (BTreeSet<EnvSite>, BTreeSet<EnvSite>)>,
    /// `env_file` uses: (file relative to base, compose file, line, service).
    pub(super) env_file_uses: Vec<(String, String, u64, String)>,
}

impl EnvIndex {
    pub(crate) fn add(
        &mut self,
        name: &str,
        file: &str,
        line: Option<u64>,
        how: &str,
        service: Option<&str>,
        defined: bool,
    ) {
        let site = EnvSite {
            file: file.to_owned(),
            line,
            how: how.to_owned(),
            service: service.map(str::to_owned),
        };
        let entry = self.vars.entry(name.to_owned()).or_default();
        if defined {
            entry.0.insert(site);
        } else {
            entry.1.insert(site);
        }
    }

    /// Files named by `env_file`: their names are defined there and used by the service
    /// (`read` holds the env files the walk read already).
    pub(super) fn read_env_file_uses(&mut self, read: &mut BTreeSet<String>, base: &Path) {
        let uses = std::mem::take(&mut self.env_file_uses);
        for (resolved, compose_rel, line, service) in &uses {
            let text = if resolved.starts_with("..") || Path::new(resolved).is_absolute() {
                None
            } else {
                read_text(&base.join(resolved))
            };
            let Some(text) = text else { continue };
            for (name, def_line) in scan::env_file_names(&text) {
                if !read.contains(resolved) {
                    self.add(&name, resolved, Some(def_line), "env-file", None, true);
                }
                self.add(
                    &name,
                    compose_rel,
                    Some(*line),
                    "compose-env-file",
                    Some(service),
                    false,
                );
            }
            read.insert(resolved.clone());
        }
    }

    /// The env var names, with where each is defined and used.
    pub(super) fn into_vars(self) -> Vec<EnvVar> {
        self.vars
            .into_iter()
            .map(|(name, (defined, used))| EnvVar {
                name,
                defined_in: defined.into_iter().collect(),
                used_in: used.into_iter().collect(),
            })
            .collect()
    }
}
