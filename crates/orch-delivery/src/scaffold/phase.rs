//! The `scaffold` phase: its settings, the modules it is given (a list, a list output, or a
//! parity report's missing modules), and a run that plans and writes the services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::interpolate::Reference;
use orch_core::list_output;
use orch_core::registry::Kind;
use orch_core::{
    Description, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec, PlanContext,
    Registry,
};
use serde::Deserialize;

use super::{
    DEFAULT_TARGET, DEFAULT_TEMPLATE, ModuleToScaffold, Template, check_module_name, plan,
    resolve_target, write,
};
use crate::errors::ScaffoldError;
use crate::parity::{ModuleStatus, ParityReport};
use crate::util;

/// `modules`: a list, or one string (rendered) holding a JSON array or comma-separated
/// names, so `${{ phases.parity.outputs.missing_modules }}` works.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ModulesSetting {
    /// A list of names.
    List(Vec<String>),
    /// A JSON array or comma-separated names.
    Text(String),
}

/// The `with` table of `scaffold`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaffoldSettings {
    /// Modules to scaffold.
    #[serde(default)]
    pub modules: Option<ModulesSetting>,
    /// A parity phase: scaffold its missing modules (groups are skipped).
    #[serde(default)]
    pub from: Option<String>,
    /// `python-fastapi` (default), `node-express`, or a template directory.
    #[serde(default)]
    pub template: Option<String>,
    /// Where services go (default `services`).
    #[serde(default)]
    pub target: Option<String>,
    /// The port the services listen on (default: the template's).
    #[serde(default)]
    pub port: Option<u16>,
}

/// The `scaffold` phase.
#[derive(Clone, Debug)]
pub struct ScaffoldPhase {
    settings: ScaffoldSettings,
    from: Option<PhaseId>,
}

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new(
            "scaffold",
            "render services for missing modules from a template",
        ),
        |spec: &PhaseSpec, settings: ScaffoldSettings| {
            let err = |message: String| spec.with.error(message);
            let from = match (&settings.modules, &settings.from) {
                (Some(_), Some(_)) => return Err(err("set `modules` or `from`, not both".into())),
                (None, None) => {
                    return Err(err("set `modules` (names) or `from` (a parity phase)".into()));
                }
                (Some(ModulesSetting::List(names)), None) => {
                    for n in names.iter().filter(|n| !n.contains("${{")) {
                        check_module_name(n).map_err(|e| err(e.to_string()))?;
                    }
                    None
                }
                (Some(ModulesSetting::Text(_)), None) => None,
                (None, Some(from)) => {
                    let id = PhaseId::new(from).map_err(|e| err(e.to_string()))?;
                    if !spec.needs.contains(&id) {
                        return Err(err(format!(
                            "`from` names `{from}`, which is not in `needs`: add it there"
                        )));
                    }
                    Some(id)
                }
            };
            if let Some(t) = &settings.template
                && !t.contains("${{")
                && Template::builtin(t).is_none()
                && !(t.contains('/') || t.starts_with('.'))
            {
                return Err(err(format!(
                    "unknown template `{t}`: use `python-fastapi`, `node-express` or a directory path (`./my-template`)"
                )));
            }
            Ok(ScaffoldPhase { settings, from })
        },
    )
}

/// Missing, non-group modules of a parity report, and the groups left out.
fn missing_from_report(path: &Path) -> Result<(Vec<ModuleToScaffold>, Vec<String>), ScaffoldError> {
    let bytes = std::fs::read(path).map_err(|source| ScaffoldError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let report: ParityReport =
        serde_json::from_slice(&bytes).map_err(|source| ScaffoldError::Report {
            path: path.to_owned(),
            source,
        })?;
    let mut modules = Vec::new();
    let mut groups = Vec::new();
    for m in report
        .modules
        .into_iter()
        .filter(|m| m.status == ModuleStatus::Missing)
    {
        if m.group {
            groups.push(m.name);
        } else {
            modules.push(ModuleToScaffold {
                name: m.name,
                category: m.category,
            });
        }
    }
    Ok((modules, groups))
}

impl ScaffoldPhase {
    fn template_name(&self) -> &str {
        self.settings
            .template
            .as_deref()
            .unwrap_or(DEFAULT_TEMPLATE)
    }

    fn target(&self) -> &str {
        self.settings.target.as_deref().unwrap_or(DEFAULT_TARGET)
    }
}

#[async_trait]
impl Phase for ScaffoldPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let template_name = ctx.render(self.template_name());
        let target = ctx.resolve(self.target());
        let mut d = Description::new(format!(
            "scaffold services from `{template_name}` into {}",
            target.display()
        ))
        .detail("template", template_name.clone())
        .detail("target", target.display().to_string());
        let template = match Template::load(&template_name, ctx.base_dir()) {
            Ok(t) => t,
            Err(e) => return d.detail("error", e.to_string()),
        };
        let names: Option<Vec<String>> = match &self.settings.modules {
            Some(ModulesSetting::List(list)) => Some(list.iter().map(|n| ctx.render(n)).collect()),
            Some(ModulesSetting::Text(t)) => {
                let rendered = ctx.render(t);
                (!rendered.contains("<phases.")).then(|| list_output::decode(&rendered))
            }
            None => None,
        };
        match names {
            Some(names) => {
                let modules: Vec<ModuleToScaffold> = names
                    .into_iter()
                    .map(|name| ModuleToScaffold {
                        name,
                        category: None,
                    })
                    .collect();
                d = d.detail(
                    "modules",
                    modules
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                match plan(&template, &modules, &target, self.settings.port) {
                    Ok(files) => {
                        for f in files {
                            d = d.change(if f.exists {
                                format!("keep {} (exists)", f.path.display())
                            } else {
                                format!("write {}", f.path.display())
                            });
                        }
                    }
                    Err(e) => d = d.detail("error", e.to_string()),
                }
            }
            None => {
                let source = match &self.from {
                    Some(p) => format!("missing modules of phase `{p}`"),
                    None => "modules known at run time".to_owned(),
                };
                d = d.detail("modules", source);
                for f in &template.files {
                    d = d.change(format!("write {}/<module>/{}", target.display(), f.path));
                }
            }
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let render = |what: &str, s: &str| {
            ctx.render(s)
                .map_err(|e| PhaseError::failed(format!("cannot render `{what}`: {e}")))
        };
        let template_name = render("template", self.template_name())?;
        let target_text = render("target", self.target())?;
        let modules: Vec<ModuleToScaffold> = match (&self.settings.modules, &self.from) {
            (Some(ModulesSetting::List(list)), _) => {
                let mut out = Vec::new();
                for n in list {
                    out.push(ModuleToScaffold {
                        name: render("modules", n)?,
                        category: None,
                    });
                }
                out
            }
            (Some(ModulesSetting::Text(t)), _) => list_output::decode(&render("modules", t)?)
                .into_iter()
                .map(|name| ModuleToScaffold {
                    name,
                    category: None,
                })
                .collect(),
            (None, Some(from)) => {
                let r = Reference::Output {
                    phase: from.to_string(),
                    key: "report".to_owned(),
                };
                let report = ctx.lookup(&r).map_err(|e| {
                    PhaseError::failed(format!("cannot find the parity report of `{from}`: {e}"))
                })?;
                let path = ctx.base_dir().join(&*report);
                let (modules, groups) =
                    missing_from_report(&path).map_err(|e| PhaseError::from_error(&e))?;
                for g in groups {
                    ctx.log(format!("group `{g}` is missing; groups are not scaffolded"));
                }
                modules
            }
            (None, None) => Vec::new(),
        };
        let base = ctx.base_dir().to_owned();
        let port = self.settings.port;
        let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
        let result = util::blocking(ctx, move |_| {
            let target = resolve_target(&base, &target_text)?;
            let template = Template::load(&template_name, &base)?;
            let planned = plan(&template, &modules, &target, port)?;
            write(&planned)
        })
        .await?
        .map_err(|e| PhaseError::from_error(&e))?;
        let rel = |p: &PathBuf| {
            p.strip_prefix(ctx.base_dir())
                .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
        };
        for p in &result.skipped {
            ctx.log(format!("exists, skipped: {}", rel(p)));
        }
        for p in &result.created {
            ctx.log(format!("created {}", rel(p)));
        }
        let files: Vec<String> = result.created.iter().map(rel).collect();
        let mut outcome = PhaseOutcome::with_outputs([
            ("created", result.created.len().to_string()),
            ("skipped", result.skipped.len().to_string()),
            ("services", list_output::encode(&names)),
            ("files", list_output::encode(&files)),
        ]);
        for name in &names {
            outcome.artifacts.push(orch_core::Artifact {
                kind: "file".to_owned(),
                name: name.clone(),
                path: Some(rel(&ctx
                    .base_dir()
                    .join(render("target", self.target())?)
                    .join(name))),
                digest: None,
                size: None,
                details: BTreeMap::new(),
            });
        }
        Ok(outcome)
    }
}
