//! Properties of the walk over generated files.

use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;

use crate::{LoadError, LoadOptions, Pipeline, Registry};

/// A phase: id index, the phases it needs (earlier ones), retries if set.
#[derive(Clone, Debug)]
struct Gen {
    needs: Vec<usize>,
    retries: Option<u32>,
}

fn phases() -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec(
        (
            prop::collection::vec(0usize..64, 0..4),
            prop::option::of(0u32..=100),
        ),
        1..12,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (needs, retries))| Gen {
                needs: if i == 0 {
                    Vec::new()
                } else {
                    let mut n: Vec<usize> = needs.into_iter().map(|k| k % i).collect();
                    n.sort_unstable();
                    n.dedup();
                    n
                },
                retries,
            })
            .collect()
    })
}

fn render(phases: &[Gen], defaults: Option<u32>, defaults_first: bool) -> String {
    let mut text = String::from("[pipeline]\nname = \"gen\"\n");
    let d = defaults.map(|r| format!("[defaults]\nretries = {r}\n"));
    if defaults_first && let Some(d) = &d {
        text.push_str(d);
    }
    for (i, p) in phases.iter().enumerate() {
        let _ = writeln!(text, "[phases.p{i}]\nrun = \"true\"");
        let needs: Vec<String> = p.needs.iter().map(|k| format!("\"p{k}\"")).collect();
        let _ = writeln!(text, "needs = [{}]", needs.join(", "));
        if let Some(r) = p.retries {
            let _ = writeln!(text, "retries = {r}");
        }
    }
    if !defaults_first && let Some(d) = &d {
        text.push_str(d);
    }
    text
}

fn load(text: &str) -> Result<Pipeline, LoadError> {
    Pipeline::from_str(
        text,
        Path::new("orch.toml"),
        &Registry::with_builtins(),
        &LoadOptions::default(),
    )
}

proptest! {
    /// A generated DAG loads, in declaration order, and every phase's retries are its
    /// own when set, else the defaults' (wherever [defaults] stands), else 0.
    #[test]
    fn generated_pipelines_load_with_their_retries(
        phases in phases(),
        defaults in prop::option::of(0u32..=100),
        defaults_first in any::<bool>(),
    ) {
        let p = load(&render(&phases, defaults, defaults_first)).unwrap();
        prop_assert_eq!(p.len(), phases.len());
        for (i, (node, want)) in p.nodes().iter().zip(&phases).enumerate() {
            prop_assert_eq!(node.spec.id.as_str(), format!("p{i}"));
            prop_assert_eq!(node.spec.retry_limit(), want.retries.or(defaults).unwrap_or(0));
            let needs: Vec<usize> = node.needs.iter().map(|&k| k as usize).collect();
            prop_assert_eq!(needs, want.needs.clone());
        }
    }

    /// `retries` is accepted exactly in 0..=100; anything else is an error at its line,
    /// never a default.
    #[test]
    fn retries_out_of_range_are_errors_at_their_line(
        value in prop_oneof![
            (-1000i64..1000).prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            "[0-9]{20,40}",
            any::<u32>().prop_map(|n| format!("0x{n:x}")),
        ],
    ) {
        let text = format!("[pipeline]\nname = \"r\"\n[phases.a]\nrun = \"true\"\nretries = {value}\n");
        let parsed: Option<i128> = if let Some(hex) = value.strip_prefix("0x") {
            i128::from_str_radix(hex, 16).ok()
        } else {
            value.parse().ok()
        };
        match (load(&text), parsed) {
            (Ok(p), Some(n)) => {
                prop_assert!((0..=100).contains(&n), "{value} accepted");
                prop_assert_eq!(i128::from(p.nodes()[0].spec.retry_limit()), n);
            }
            (Err(LoadError::Invalid(d)), _) => {
                let rendered = d.render();
                prop_assert!(rendered.contains("orch.toml:5:"), "{}", rendered);
                prop_assert!(parsed.is_none_or(|n| !(0..=100).contains(&n)), "{}", rendered);
            }
            (other, _) => prop_assert!(false, "{value}: {other:?}"),
        }
    }

    /// Any text: an error or a pipeline, never a panic; every error renders.
    #[test]
    fn any_text_loads_or_is_refused(text in "(\\[pipeline\\]\nname = \"x\"\n)?(\\[phases\\.[a-c]\\]\n|run = \"true\"\n|needs = \\[\"[a-d]\"\\]\n|retries = -?[0-9]{1,3}\n|kind = \"gate\"\n|assert = \\[\"phases\\.[a-d]\\.outputs\\.x == 1\"\\]\n|\\[defaults\\]\n|[ -~\n]{0,8})*") {
        match load(&text) {
            Ok(_) => {}
            Err(LoadError::Invalid(d)) => {
                let _ = d.render();
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
