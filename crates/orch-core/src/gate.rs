//! The `gate` kind: CEL assertions over vars and phase outputs; the gate fails naming the
//! first false expression and the values it saw.

use async_trait::async_trait;

use crate::errors::{KindError, RegistryError};
use crate::expr;
use crate::phase::{Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext};
use crate::registry::{Kind, Registry};
use crate::spec::PhaseSpec;

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new("gate", "check CEL assertions over vars and outputs"),
        |spec: &PhaseSpec, with: toml::Table| {
            if spec.assert.is_empty() {
                return Err(KindError::new("a `gate` phase needs `assert`"));
            }
            if !with.is_empty() {
                return Err(spec
                    .with
                    .error("`gate` phases take no `with` settings; use `assert`"));
            }
            for a in &spec.assert {
                expr::check(a).map_err(|e| KindError::new(e.to_string()))?;
            }
            Ok(GatePhase {
                asserts: spec.assert.clone(),
            })
        },
    )
}

/// Checks assertions.
#[derive(Debug, Clone)]
pub struct GatePhase {
    asserts: Vec<String>,
}

#[async_trait]
impl Phase for GatePhase {
    fn describe(&self, _ctx: &PlanContext<'_>) -> Description {
        let mut d = Description::new(format!("check {} assertion(s)", self.asserts.len()));
        for a in &self.asserts {
            d = d.detail("assert", a.clone());
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        for a in &self.asserts {
            let verdict =
                expr::eval(a, &*ctx.run.scope).map_err(|e| PhaseError::failed(e.to_string()))?;
            let seen = verdict
                .seen
                .iter()
                .map(|(k, v)| format!("{k} = {v:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            if verdict.value {
                ctx.log(format!("passed: {a}"));
            } else {
                let message = if seen.is_empty() {
                    format!("assertion failed: `{a}`")
                } else {
                    format!("assertion failed: `{a}` (seen: {seen})")
                };
                return Err(PhaseError::failed(message));
            }
        }
        Ok(PhaseOutcome::with_outputs([("passed", "true")]))
    }
}
