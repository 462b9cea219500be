//! A layered layout of the phase graph (from `needs`), drawn as SVG by the HTML templates.
//!
//! Phases go in columns by their longest chain of needs; within a column they are ordered
//! by the barycenter of the phases they need (a few sweeps of the Sugiyama heuristic),
//! which removes most crossings in pipelines.

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr, Serde};
use serde::Serialize;

use orch_core::PhaseId;

use crate::sources::truncate;
use crate::view::PhaseView;

const NODE_W: u32 = 168;
const NODE_H: u32 = 28;
const GAP_X: u32 = 56;
const GAP_Y: u32 = 12;
const MARGIN: u32 = 8;
const LABEL_CHARS: usize = 20;

/// A laid-out graph.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Layout {
    pub width: u32,
    pub height: u32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// A phase box.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Node {
    pub id: String,
    pub label: String,
    pub class: &'static str,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// Text baseline.
    pub tx: u32,
    pub ty: u32,
}

/// A need, as an SVG path.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Edge {
    pub from: String,
    pub to: String,
    pub d: String,
}

/// How many phases a column holds, for graphs too large to draw (a row of [`LayerTable`]).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LayerSummary {
    pub layer: usize,
    pub count: usize,
    pub sample: Vec<String>,
    pub more: usize,
}

/// Column of every phase (index-aligned with `phases`).
///
/// The graph is held as flat lists of indices (a run of 10,000 phases is drawn as a table
/// of its columns, and a vector per phase for its needs and one for its dependents were
/// 1.5 MB).
pub(crate) fn layers(phases: &[PhaseView<'_>]) -> Vec<usize> {
    let mut index: Vec<(&str, u32)> = phases
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id, i as u32))
        .collect();
    index.sort_unstable_by_key(|&(id, _)| id);
    layers_by(phases, |id| {
        index
            .binary_search_by_key(&id.as_str(), |&(k, _)| k)
            .ok()
            .map(|at| index[at].1)
    })
}

/// [`layers`], with `find` giving the index of a phase in `phases` (the record's map does,
/// without sorting the ids first).
pub(crate) fn layers_by(
    phases: &[PhaseView<'_>],
    find: impl Fn(&PhaseId) -> Option<u32>,
) -> Vec<usize> {
    let n = phases.len();
    // Phase `i` needs `needs[need_at[i]..need_at[i + 1]]`.
    let mut need_at: Vec<u32> = Vec::with_capacity(n + 1);
    let mut needs: Vec<u32> = Vec::new();
    need_at.push(0);
    for p in phases {
        needs.extend(p.needs.iter().filter_map(&find));
        need_at.push(needs.len() as u32);
    }
    drop(find);
    // Kahn's algorithm; phases in a cycle (never in a valid pipeline) stay in column 0.
    let mut indegree: Vec<u32> = need_at.windows(2).map(|w| w[1] - w[0]).collect();
    // Phase `k` is needed by `dependents[dependent_at[k]..dependent_at[k + 1]]`, in order.
    let mut dependent_at: Vec<u32> = vec![0; n + 1];
    for &k in &needs {
        dependent_at[k as usize + 1] += 1;
    }
    for k in 0..n {
        dependent_at[k + 1] += dependent_at[k];
    }
    let mut dependents: Vec<u32> = vec![0; needs.len()];
    let mut filled: Vec<u32> = dependent_at[..n].to_vec();
    for i in 0..n {
        for &k in &needs[need_at[i] as usize..need_at[i + 1] as usize] {
            dependents[filled[k as usize] as usize] = i as u32;
            filled[k as usize] += 1;
        }
    }
    drop((needs, need_at, filled));
    let mut layer = vec![0usize; n];
    let mut queue: std::collections::VecDeque<u32> = (0..n as u32)
        .filter(|&i| indegree[i as usize] == 0)
        .collect();
    while let Some(i) = queue.pop_front() {
        let i = i as usize;
        for &d in &dependents[dependent_at[i] as usize..dependent_at[i + 1] as usize] {
            let d = d as usize;
            layer[d] = layer[d].max(layer[i] + 1);
            indegree[d] -= 1;
            if indegree[d] == 0 {
                queue.push_back(d as u32);
            }
        }
    }
    layer
}

/// Lays out the graph.
pub(crate) fn layout(phases: &[PhaseView<'_>]) -> Layout {
    let layer = layers(phases);
    let index: HashMap<&str, usize> = phases.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let columns = layer.iter().max().map_or(0, |m| m + 1);
    let mut cols: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (i, &l) in layer.iter().enumerate() {
        cols[l].push(i);
    }
    let mut pos = vec![0f64; phases.len()];
    let set_pos = |cols: &Vec<Vec<usize>>, pos: &mut Vec<f64>| {
        for col in cols {
            for (row, &i) in col.iter().enumerate() {
                // Rows are small integers.
                #[allow(clippy::cast_precision_loss)]
                let r = row as f64;
                pos[i] = r;
            }
        }
    };
    set_pos(&cols, &mut pos);
    let needs: Vec<Vec<usize>> = phases
        .iter()
        .map(|p| {
            p.needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); phases.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &n in ns {
            dependents[n].push(i);
        }
    }
    let barycenter = |neighbours: &[usize], pos: &[f64], own: f64| -> f64 {
        if neighbours.is_empty() {
            own
        } else {
            // Neighbour counts are small integers.
            #[allow(clippy::cast_precision_loss)]
            let n = neighbours.len() as f64;
            neighbours.iter().map(|&j| pos[j]).sum::<f64>() / n
        }
    };
    for sweep in 0..4 {
        let down = sweep % 2 == 0;
        let order: Vec<usize> = if down {
            (1..columns).collect()
        } else {
            (0..columns.saturating_sub(1)).rev().collect()
        };
        for c in order {
            let mut keyed: Vec<(f64, usize, usize)> = cols[c]
                .iter()
                .enumerate()
                .map(|(row, &i)| {
                    let neighbours = if down { &needs[i] } else { &dependents[i] };
                    (barycenter(neighbours, &pos, pos[i]), row, i)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            cols[c] = keyed.into_iter().map(|(_, _, i)| i).collect();
            set_pos(&cols, &mut pos);
        }
    }

    let rows = cols.iter().map(Vec::len).max().unwrap_or(0);
    let coord = |i: usize| -> (u32, u32) {
        let col = u32::try_from(layer[i]).unwrap_or(u32::MAX / 4);
        let row = cols[layer[i]].iter().position(|&j| j == i).unwrap_or(0);
        let row = u32::try_from(row).unwrap_or(u32::MAX / 4);
        (
            MARGIN + col * (NODE_W + GAP_X),
            MARGIN + row * (NODE_H + GAP_Y),
        )
    };
    let nodes = (0..phases.len())
        .map(|i| {
            let (x, y) = coord(i);
            Node {
                id: phases[i].id.to_owned(),
                label: truncate(phases[i].id, LABEL_CHARS),
                class: phases[i].class,
                x,
                y,
                w: NODE_W,
                h: NODE_H,
                tx: x + 10,
                ty: y + NODE_H / 2 + 4,
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (i, ns) in needs.iter().enumerate() {
        for &n in ns {
            let (x1, y1) = coord(n);
            let (x2, y2) = coord(i);
            let (x1, y1) = (x1 + NODE_W, y1 + NODE_H / 2);
            let y2 = y2 + NODE_H / 2;
            let dx = (x2.saturating_sub(x1)) / 2;
            edges.push(Edge {
                from: phases[n].id.to_owned(),
                to: phases[i].id.to_owned(),
                d: format!(
                    "M{x1} {y1} C{} {y1} {} {y2} {x2} {y2}",
                    x1 + dx,
                    x2.saturating_sub(dx)
                ),
            });
        }
    }
    let columns = u32::try_from(columns).unwrap_or(0);
    let rows = u32::try_from(rows).unwrap_or(0);
    Layout {
        width: 2 * MARGIN + columns * NODE_W + columns.saturating_sub(1) * GAP_X,
        height: 2 * MARGIN + rows * NODE_H + rows.saturating_sub(1) * GAP_Y,
        nodes,
        edges,
    }
}

/// Column sizes, for graphs too large to draw: the rows of the dashboard's table, one per
/// column of the graph, each made when the template reads it. A chain of 10,000 phases has
/// 10,000 columns: as template values all at once, its rows were 3.6 MB.
#[derive(Debug, Default)]
pub(crate) struct LayerTable {
    /// Per column: how many phases it holds and where its sample ends in `samples`.
    columns: Vec<(usize, usize)>,
    /// The first phases of each column, column after column.
    samples: Vec<String>,
}

/// How many phases of a column its row names.
const SAMPLE: usize = 8;

impl LayerTable {
    /// The table of `phases`' columns; `find` gives the index of a phase in `phases`.
    pub(crate) fn new(phases: &[PhaseView<'_>], find: impl Fn(&PhaseId) -> Option<u32>) -> Self {
        let layer = layers_by(phases, find);
        let n = layer.iter().max().map_or(0, |m| m + 1);
        let mut counts = vec![0usize; n];
        for &l in &layer {
            counts[l] += 1;
        }
        // Sample slots in column order; each column's first phases (in phase order) fill
        // its slots.
        let mut columns = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n);
        let mut end = 0;
        for &count in &counts {
            starts.push(end);
            end += count.min(SAMPLE);
            columns.push((count, end));
        }
        let mut samples = vec![String::new(); end];
        let mut filled = vec![0usize; n];
        for (i, &l) in layer.iter().enumerate() {
            if filled[l] < SAMPLE {
                samples[starts[l] + filled[l]] = phases[i].id.to_owned();
                filled[l] += 1;
            }
        }
        Self { columns, samples }
    }

    /// The row of column `l` (from 0).
    fn row(&self, l: usize) -> Option<LayerSummary> {
        let &(count, end) = self.columns.get(l)?;
        let start = l.checked_sub(1).map_or(0, |k| self.columns[k].1);
        let sample = self.samples[start..end].to_vec();
        Some(LayerSummary {
            layer: l + 1,
            count,
            more: count - sample.len(),
            sample,
        })
    }
}

impl LayerTable {
    /// Writes the table's rows, as the dashboard shows them (each on its own line): the
    /// template prints the table as `{{ dag_summary }}` and the page's formatter hands it
    /// here (see [`LayerTable::of`]), so no row is made as a template value.
    pub(crate) fn write_rows(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        let mut start = 0;
        for (l, &(count, end)) in self.columns.iter().enumerate() {
            let sample = &self.samples[start..end];
            start = end;
            write!(
                out,
                "\n<tr><td class=\"num\">{}</td><td class=\"num\">{count}</td><td>",
                l + 1
            )?;
            for id in sample {
                out.write_str("<a href=\"#phase-")?;
                write_html_escaped(out, id)?;
                out.write_str("\"><code>")?;
                write_html_escaped(out, id)?;
                out.write_str("</code></a> ")?;
            }
            let more = count - sample.len();
            if more > 0 {
                write!(out, "<span class=\"muted\">and {more} more</span>")?;
            }
            out.write_str("</td></tr>")?;
        }
        Ok(())
    }

    /// The table a template value is, if it is one.
    pub(crate) fn of(value: &Value) -> Option<&Self> {
        value.downcast_object_ref::<Self>()
    }
}

/// Writes `text` escaped as minijinja's HTML auto-escaping escapes it.
fn write_html_escaped(out: &mut dyn std::fmt::Write, text: &str) -> std::fmt::Result {
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        let entity = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' => "&quot;",
            b'\'' => "&#x27;",
            b'/' => "&#x2f;",
            _ => continue,
        };
        out.write_str(&text[start..i])?;
        out.write_str(entity)?;
        start = i + 1;
    }
    out.write_str(&text[start..])
}

impl Object for LayerTable {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.row(key.as_usize()?).map(|r| Value::from(Serde(&r)))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.columns.len())
    }
}
