//! Semantic validation of a pipeline: ids, needs, cycles with their whole path, kinds,
//! agents, `when`/`assert` expressions and template references, each problem with its
//! place in the file.

use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use super::{IdMap, Node, Pipeline, default_jobs};
use crate::agent::LocalAgent;
use crate::diagnostics::{Diagnostic, did_you_mean};
use crate::file::{At, FileSpans, PhaseSpans};
use crate::interpolate::Reference;
use crate::registry::Registry;
use crate::spec::{AgentSpec, MAX_JOBS, MAX_RETRIES, PhaseSpec, PipelineSpec, RunSpec};
use crate::{expr, interpolate};

fn span_of(
    spans: Option<&FileSpans>,
    i: usize,
    f: impl Fn(&PhaseSpans) -> Option<At>,
) -> Option<std::ops::Range<usize>> {
    spans
        .and_then(|s| s.phases.get(i))
        .and_then(f)
        .map(At::range)
}

/// Every template string of a phase, with where it stands.
fn templates(p: &PhaseSpec) -> Vec<String> {
    let mut out = Vec::new();
    match &p.run {
        Some(RunSpec::Shell(s)) => out.push(s.clone()),
        Some(RunSpec::Argv(v)) => out.extend(v.iter().cloned()),
        None => {}
    }
    out.extend(p.env.values().cloned());
    out.extend(p.cwd.iter().cloned());
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    for v in p.with.table().values() {
        walk(v, &mut out);
    }
    out
}

/// Validates `spec` with its phases in `nodes` (each node holds its phase's declaration;
/// `spec.phases` is not read), builds each phase and links the DAG. `custom[i]` tells that
/// node `i` brings its own implementation (phases added in code; absent means no).
pub(super) fn validate(
    mut spec: PipelineSpec,
    mut nodes: Vec<Node>,
    custom: &[bool],
    spans: Option<&FileSpans>,
    registry: &Registry,
    mut diags: Vec<Diagnostic>,
) -> Result<Pipeline, Vec<Diagnostic>> {
    let is_custom = |i: usize| custom.get(i).copied().unwrap_or(false);
    // Phases run in their own working directories: every path the engine hands them
    // (ORCH_OUTPUT, the run dir, resolved settings) must not depend on where orch started.
    if let Ok(abs) = std::path::absolute(&spec.base_dir) {
        spec.base_dir = abs;
    }
    // The file's walk checks these ranges at their positions; pipelines built in code come
    // through here only.
    if let Some(j) = spec.jobs
        && !(1..=MAX_JOBS).contains(&j)
    {
        diags.push(Diagnostic::at(
            None,
            format!("`jobs` must be between 1 and {MAX_JOBS}, not {j}"),
        ));
    }
    // `[defaults]`, applied here and nowhere else, to phases from a file and from code.
    for (i, n) in nodes.iter_mut().enumerate() {
        n.spec.apply_defaults(&spec.defaults, !is_custom(i));
    }
    for (i, n) in nodes.iter().enumerate() {
        let p = &n.spec;
        if let Some(retries) = p.retries
            && retries > MAX_RETRIES
        {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.id),
                format!(
                    "phase `{}`: `retries` must be at most {MAX_RETRIES}, not {retries}",
                    p.id
                ),
            ));
        }
    }
    let mut index = IdMap::with_capacity_and_hasher(nodes.len(), Default::default());
    for (i, n) in nodes.iter().enumerate() {
        if index.insert(n.spec.id.clone(), i).is_some() {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.id),
                format!("phase `{}` is declared twice", n.spec.id),
            ));
        }
    }
    // Every phase's id, in declaration order, for "did you mean" (only when one is wrong).
    fn ids(nodes: &[Node]) -> impl Iterator<Item = &str> {
        nodes.iter().map(|n| n.spec.id.as_str())
    }

    // Agents: declared ones, then implied ones per type.
    let jobs = spec.jobs.unwrap_or_else(default_jobs);
    let mut agents: Vec<AgentSpec> = spec.agents.values().cloned().collect();
    for a in &mut agents {
        a.breaker
            .get_or_insert_with(|| registry.agent_type_defaults(&a.agent_type).breaker);
    }
    for a in &agents {
        if !registry.has_agent_type(&a.agent_type) {
            let span = spans
                .and_then(|s| s.agents.get(&a.name))
                .and_then(|s| s.0.clone());
            let mut d = Diagnostic::at(
                span,
                format!("agent `{}` has unknown type `{}`", a.name, a.agent_type),
            );
            if let Some(h) = did_you_mean(&a.agent_type, registry.agent_types()) {
                d = d.with_help(h);
            }
            diags.push(d);
        } else if let Err(e) = registry.build_agent(a, jobs) {
            let span = e.span.clone().or_else(|| {
                spans
                    .and_then(|s| s.agents.get(&a.name))
                    .and_then(|s| s.0.clone())
            });
            diags.push(Diagnostic::at(
                span,
                format!("agent `{}`: {}", a.name, e.message),
            ));
        }
    }

    for i in 0..nodes.len() {
        let p = &nodes[i].spec;
        // needs
        let mut needs = Vec::with_capacity(p.needs.len());
        for (j, n) in p.needs.iter().enumerate() {
            match index.get(n) {
                Some(&k) if k == i => diags.push(Diagnostic::at(
                    span_of(spans, i, |s| s.needs.get(j).copied()),
                    format!("phase `{}` needs itself", p.id),
                )),
                Some(&k) => needs.push(k as u32),
                None => {
                    let mut d = Diagnostic::at(
                        span_of(spans, i, |s| s.needs.get(j).copied()),
                        format!("phase `{}` needs `{n}`, which is not a phase", p.id),
                    );
                    if let Some(h) = did_you_mean(n.as_str(), ids(&nodes)) {
                        d = d.with_help(h);
                    }
                    diags.push(d);
                }
            }
        }
        needs.sort_unstable();
        needs.dedup();

        // kind (phases built in code bring their own implementation)
        let custom_phase = is_custom(i);
        let kind_entry = registry.kind(&p.kind);
        let phase = match kind_entry {
            _ if custom_phase => None,
            None => {
                let mut d = Diagnostic::at(
                    span_of(spans, i, |s| s.kind.or(s.id)),
                    format!("phase `{}` has unknown kind `{}`", p.id, p.kind),
                );
                let kinds: Vec<&str> = registry
                    .kinds()
                    .map(|(k, _)| k)
                    .filter(|k| !k.starts_with('\u{0}'))
                    .collect();
                d = d.with_help(
                    did_you_mean(&p.kind, kinds.iter().copied())
                        .unwrap_or_else(|| format!("known kinds: {}", kinds.join(", "))),
                );
                diags.push(d);
                None
            }
            Some(_) => match registry.build_phase(p) {
                Ok(ph) => Some(ph),
                Err(e) => {
                    let span = e
                        .span
                        .clone()
                        .or_else(|| span_of(spans, i, |s| s.with.or(s.run).or(s.id)));
                    diags.push(Diagnostic::at(
                        span,
                        format!("phase `{}` ({}): {}", p.id, p.kind, e.message),
                    ));
                    None
                }
            },
        };

        // agent
        let agent_type = kind_entry
            .filter(|_| !custom_phase)
            .map(|k| k.agent_type.clone())
            .unwrap_or_else(|| LocalAgent::TYPE.into());
        let agent = match &p.agent {
            Some(name) => match agents.iter().position(|a| &a.name == name) {
                Some(ai)
                    if agents[ai].agent_type == agent_type
                        || kind_entry.is_some_and(|k| k.runs_on(&agents[ai].agent_type))
                        || kind_entry.is_none()
                        || custom_phase =>
                {
                    Some(ai)
                }
                Some(ai) => {
                    diags.push(Diagnostic::at(
                        span_of(spans, i, |s| s.agent),
                        format!("phase `{}` ({}) runs on {agent_type} agents, but agent `{name}` is a {} agent", p.id, p.kind, agents[ai].agent_type),
                    ));
                    None
                }
                None => {
                    let mut d = Diagnostic::at(
                        span_of(spans, i, |s| s.agent),
                        format!(
                            "phase `{}` names agent `{name}`, which is not declared",
                            p.id
                        ),
                    );
                    if let Some(h) = did_you_mean(name, agents.iter().map(|a| a.name.as_str())) {
                        d = d.with_help(h);
                    }
                    diags.push(d);
                    None
                }
            },
            // The agent type decides which declared agent serves the phase, or implies one.
            None => Some(match registry.serving_agent(&agents, &agent_type) {
                Some(ai) => ai,
                None => {
                    agents.push(registry.implied_agent(&agent_type));
                    agents.len() - 1
                }
            }),
        };

        // expressions
        if let Some(w) = &p.when
            && let Err(e) = expr::check(w)
        {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.when),
                format!("phase `{}`: {e}", p.id),
            ));
        }
        if !p.assert.is_empty() && p.kind != "gate" {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.assert),
                format!("phase `{}`: `assert` is for `gate` phases", p.id),
            ));
        }

        // A phase that could not be built keeps what stands in for it: validation fails.
        let node = &mut nodes[i];
        if let Some(phase) = phase {
            node.phase = phase;
        }
        node.agent = agent.unwrap_or(0);
        node.needs = needs.into_boxed_slice();
    }
    // Dependents, each list sized to what it holds.
    let mut counts = vec![0u32; nodes.len()];
    for n in &nodes {
        for &k in &n.needs {
            counts[k as usize] += 1;
        }
    }
    let mut dependents: Vec<Vec<u32>> = counts
        .into_iter()
        .map(|c| Vec::with_capacity(c as usize))
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        for &k in &n.needs {
            dependents[k as usize].push(i as u32);
        }
    }
    for (n, d) in nodes.iter_mut().zip(dependents) {
        n.dependents = d.into_boxed_slice();
    }

    // Cycles, each reported once with its whole path.
    for cycle in find_cycles(&nodes) {
        let first = cycle[0];
        let path: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&first))
            .map(|&i| nodes[i].spec.id.as_str())
            .collect();
        let need_pos = nodes[first]
            .spec
            .needs
            .iter()
            .position(|n| n.as_str() == nodes[cycle[1 % cycle.len()]].spec.id.as_str());
        let span = span_of(spans, first, |s| {
            need_pos.and_then(|j| s.needs.get(j).copied()).or(s.id)
        });
        // The DAG edge is need -> dependent; print the cycle in "needs" direction.
        diags.push(
            Diagnostic::at(
                span,
                format!("the needs form a cycle: {}", path.join(" -> ")),
            )
            .with_help("remove one of these needs"),
        );
    }

    // Templates: vars exist, outputs come from phases the phase (transitively) needs.
    let ancestors_of = |i: usize| -> Vec<bool> {
        let mut seen = vec![false; nodes.len()];
        let mut stack: Vec<usize> = nodes[i].needs.iter().map(|&k| k as usize).collect();
        while let Some(k) = stack.pop() {
            if !std::mem::replace(&mut seen[k], true) {
                stack.extend(nodes[k].needs.iter().map(|&x| x as usize));
            }
        }
        seen
    };
    for (i, n) in nodes.iter().enumerate() {
        let p = &n.spec;
        let mut ancestors: Option<Vec<bool>> = None;
        let mut check_refs = |text: &str, diags: &mut Vec<Diagnostic>| match interpolate::references(
            text,
        ) {
            Err(e) => diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.run.or(s.with).or(s.env).or(s.id)),
                format!("phase `{}`: {e}", p.id),
            )),
            Ok(refs) => {
                for r in refs {
                    match &r {
                        Reference::Var(k) if !spec.vars.contains_key(k) => {
                            let mut d = Diagnostic::at(
                                span_of(spans, i, |s| s.run.or(s.with).or(s.env).or(s.id)),
                                format!(
                                    "phase `{}` reads `${{{{ vars.{k} }}}}`, but [vars] has no `{k}`",
                                    p.id
                                ),
                            );
                            if let Some(h) = did_you_mean(k, spec.vars.keys().map(String::as_str)) {
                                d = d.with_help(h);
                            }
                            diags.push(d);
                        }
                        Reference::Output { phase, .. } => match index.get(phase.as_str()) {
                            None => {
                                let mut d = Diagnostic::at(
                                    span_of(spans, i, |s| s.run.or(s.with).or(s.id)),
                                    format!(
                                        "phase `{}` reads outputs of `{phase}`, which is not a phase",
                                        p.id
                                    ),
                                );
                                if let Some(h) = did_you_mean(phase, ids(&nodes)) {
                                    d = d.with_help(h);
                                }
                                diags.push(d);
                            }
                            Some(&k) => {
                                let anc = ancestors.get_or_insert_with(|| ancestors_of(i));
                                if !anc[k] {
                                    diags.push(Diagnostic::at(span_of(spans, i, |s| s.run.or(s.with).or(s.id)), format!("phase `{}` reads outputs of `{phase}` but does not need it", p.id)).with_help(format!("add \"{phase}\" to its `needs`")));
                                }
                            }
                        },
                        _ => {}
                    }
                }
            }
        };
        for t in templates(p) {
            check_refs(&t, &mut diags);
        }
        // CEL `when` and `assert` read outputs as `phases.ID.outputs.KEY`.
        let exprs = p
            .when
            .iter()
            .map(|w| (w, span_of(spans, i, |s| s.when)))
            .chain(
                p.assert
                    .iter()
                    .map(|a| (a, span_of(spans, i, |s| s.assert))),
            );
        for (text, span) in exprs {
            for id in expr::phase_refs(text) {
                match index.get(id.as_str()) {
                    None => {
                        let mut d = Diagnostic::at(
                            span.clone(),
                            format!(
                                "phase `{}`: `{text}` reads phase `{id}`, which is not a phase",
                                p.id
                            ),
                        );
                        if let Some(h) = did_you_mean(&id, ids(&nodes)) {
                            d = d.with_help(h);
                        }
                        diags.push(d);
                    }
                    Some(&k) => {
                        let anc = ancestors.get_or_insert_with(|| ancestors_of(i));
                        if !anc[k] {
                            diags.push(
                                Diagnostic::at(
                                    span.clone(),
                                    format!(
                                        "phase `{}`: `{text}` reads outputs of `{id}` but does not need it",
                                        p.id
                                    ),
                                )
                                .with_help(format!("add \"{id}\" to its `needs`")),
                            );
                        }
                    }
                }
            }
        }
    }

    if !diags.is_empty() {
        return Err(diags);
    }
    // A need names its phase with the phase's own id (one string per phase, not one per
    // need: a run of 100k phases holds them all), and the lists the run keeps are sized to
    // what they hold (a list built by pushing has room for four).
    for node in &mut nodes {
        let p = &mut node.spec;
        for n in p.needs.make_mut() {
            if let Some((id, _)) = index.get_key_value(&*n) {
                *n = id.clone();
            }
        }
        p.tags.shrink_to_fit();
        p.secrets.shrink_to_fit();
        p.assert.shrink_to_fit();
    }
    spec.agents = agents.iter().map(|a| (a.name.clone(), a.clone())).collect();
    Ok(Pipeline {
        spec,
        nodes,
        index: Arc::new(index),
        agents,
        registry: registry.clone(),
        source_sha256: None,
        policy: None,
    })
}

/// Finds cycles: for each strongly connected component with more than one phase, one
/// cycle through it, starting at its earliest-declared phase and following `needs`.
fn find_cycles(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(nodes.len(), 0);
    for _ in nodes {
        g.add_node(());
    }
    for (i, n) in nodes.iter().enumerate() {
        for &k in &n.needs {
            g.add_edge(NodeIndex::new(i), NodeIndex::new(k as usize), ());
        }
    }
    let mut cycles = Vec::new();
    for scc in petgraph::algo::tarjan_scc(&g) {
        if scc.len() < 2 {
            continue;
        }
        let members: std::collections::HashSet<usize> = scc.iter().map(|n| n.index()).collect();
        let start = *members.iter().min().unwrap_or(&0);
        // Walk needs inside the component until we come back; BFS for the shortest loop.
        let mut prev = vec![usize::MAX; nodes.len()];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut found = None;
        'bfs: while let Some(u) = queue.pop_front() {
            for &k in &nodes[u].needs {
                let k = k as usize;
                if !members.contains(&k) {
                    continue;
                }
                if k == start {
                    found = Some(u);
                    break 'bfs;
                }
                if prev[k] == usize::MAX {
                    prev[k] = u;
                    queue.push_back(k);
                }
            }
        }
        if let Some(mut last) = found {
            let mut path = vec![last];
            while last != start {
                last = prev[last];
                path.push(last);
            }
            path.reverse();
            cycles.push(path);
        }
    }
    cycles.sort();
    cycles
}
