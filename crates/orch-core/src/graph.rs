//! The DAG rendered as Graphviz DOT or Mermaid.

use std::fmt::Write as _;

use crate::pipeline::Pipeline;

/// Output format of [`render`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders the DAG: edges go from a phase to the phases that need it.
pub fn render(p: &Pipeline, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(p.name()));
            let _ = writeln!(out, "  rankdir=LR;");
            let _ = writeln!(out, "  node [shape=box, style=rounded];");
            for n in p.nodes() {
                let _ = writeln!(
                    out,
                    "  \"{}\" [label=\"{}\\n({})\"];",
                    n.spec.id,
                    n.spec.id,
                    dot_escape(&n.spec.kind)
                );
            }
            for n in p.nodes() {
                for need in &n.spec.needs {
                    let _ = writeln!(out, "  \"{need}\" -> \"{}\";", n.spec.id);
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            // Mermaid ids cannot hold every character a phase id can (`-` is fine, but
            // keywords like `end` are not): number the nodes and label them.
            for (i, n) in p.nodes().iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  n{i}[\"{} ({})\"]",
                    n.spec.id,
                    n.spec.kind.replace('"', "'")
                );
            }
            for (i, n) in p.nodes().iter().enumerate() {
                for &k in &n.needs {
                    let _ = writeln!(out, "  n{k} --> n{i}");
                }
            }
        }
    }
    out
}
