//! The pipeline file: TOML parse, the spanned walk, semantic validation (needs, cycles,
//! kinds and their settings, templates, CEL), and the rendering of every diagnostic with
//! its line and caret. Any panic is a finding.

use std::path::Path;
use std::sync::OnceLock;

use orch_core::{LoadError, LoadOptions, Pipeline, Registry};

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = Registry::with_builtins();
        orch_delivery::register(&mut r).expect("delivery kinds register once");
        r
    })
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let options = LoadOptions {
            vars: vec![("version".to_owned(), "1".to_owned())],
        };
        match Pipeline::from_str(text, Path::new("/nonexistent/orch.toml"), registry(), &options) {
            Ok(p) => {
                let _ = orch_core::Plan::new(&p, &orch_core::Selection::default(), None)
                    .map(|plan| plan.render());
                let _ = orch_core::graph::render(&p, orch_core::graph::GraphFormat::Mermaid);
            }
            Err(LoadError::Invalid(d)) => {
                let _ = d.render();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}
