//! Files that phases point at (JUnit files, discovery and parity reports), found and read.

use std::io::Read;
use std::path::{Path, PathBuf};

use orch_core::{PhaseRecord, RunRecord};
use serde::Serialize;
use serde_json::Value;

/// The most read from one referenced file.
pub(crate) const MAX_REFERENCED_FILE: u64 = 64 * 1024 * 1024;

/// Resolves a path a phase published: absolute paths stay; relative ones are looked up
/// in the run directory, then in the pipeline file's directory. Returns the first that
/// exists, or the last candidate.
pub(crate) fn resolve(record: &RunRecord, run_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_owned();
    }
    let mut candidates = vec![run_dir.join(p)];
    if let Some(dir) = record
        .pipeline_file
        .as_deref()
        .map(Path::new)
        .and_then(Path::parent)
    {
        candidates.push(dir.join(p));
    }
    candidates
        .iter()
        .find(|c| c.exists())
        .cloned()
        .unwrap_or_else(|| candidates.pop().unwrap_or_else(|| p.to_owned()))
}

/// Reads a referenced file, refusing ones larger than [`MAX_REFERENCED_FILE`].
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_REFERENCED_FILE {
        return Err(format!(
            "too large to read ({len} bytes, limit {MAX_REFERENCED_FILE})"
        ));
    }
    let mut buf = Vec::new();
    file.take(MAX_REFERENCED_FILE)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(buf)
}

/// The JUnit files a phase points at: artifacts of kind `junit` (their `path`) and the
/// output `junit` (one path, a comma-separated list, or a JSON array of paths).
pub(crate) fn junit_paths(phase: &PhaseRecord) -> Vec<String> {
    let mut paths: Vec<String> = phase
        .artifacts
        .iter()
        .filter(|a| a.kind == "junit")
        .filter_map(|a| a.path.clone())
        .collect();
    if let Some(value) = phase.outputs.get("junit") {
        paths.extend(orch_core::list_output::decode(value));
    }
    let mut seen = std::collections::BTreeSet::new();
    paths.retain(|p| !p.is_empty() && seen.insert(p.clone()));
    paths
}

/// A JSON report a phase wrote (`discover` and `parity` publish its path as `report`),
/// summarised for display.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct JsonDoc {
    /// The phase.
    pub phase: String,
    /// The path as published.
    pub path: String,
    /// The summary, when the file was read.
    pub summary: Option<JsonSummary>,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// A generic summary of a JSON document: its scalar fields, lists and tables.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct JsonSummary {
    /// Scalar fields (nested objects flattened as `a.b`).
    pub fields: Vec<(String, String)>,
    /// Arrays of scalars.
    pub lists: Vec<JsonList>,
    /// Arrays of objects.
    pub tables: Vec<JsonTable>,
}

/// An array of scalars.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct JsonList {
    /// Its key.
    pub name: String,
    /// The first items.
    pub items: Vec<String>,
    /// How many items there are in all.
    pub total: usize,
}

/// An array of objects, as a table.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct JsonTable {
    /// Its key.
    pub name: String,
    /// Column names (the objects' keys, in first-seen order, those holding scalars first).
    pub columns: Vec<String>,
    /// How many of the first columns hold only scalars.
    pub scalar_columns: usize,
    /// The first rows.
    pub rows: Vec<Vec<String>>,
    /// How many rows there are in all.
    pub total: usize,
}

const MAX_ITEMS: usize = 200;
const MAX_COLUMNS: usize = 8;
const MAX_CELL: usize = 200;

/// Reads the JSON files that phases of `kind` published as their `report` output.
pub(crate) fn json_reports(record: &RunRecord, run_dir: &Path, kind: &str) -> Vec<JsonDoc> {
    record
        .phases
        .iter()
        .filter(|(_, p)| p.kind == kind)
        .filter_map(|(id, p)| {
            let path = p.outputs.get("report")?.trim().to_owned();
            if path.is_empty() {
                return None;
            }
            let resolved = resolve(record, run_dir, &path);
            let parsed = read_capped(&resolved).and_then(|bytes| {
                serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("not json: {e}"))
            });
            let (summary, error) = match parsed {
                Ok(v) => (Some(summarize(&v)), None),
                Err(e) => (None, Some(e)),
            };
            Some(JsonDoc {
                phase: id.to_string(),
                path,
                summary,
                error,
            })
        })
        .collect()
}

/// Summarises a JSON value for display.
pub(crate) fn summarize(value: &Value) -> JsonSummary {
    let mut s = JsonSummary::default();
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                walk(&mut s, k.clone(), v, 0);
            }
        }
        Value::Array(_) => walk(&mut s, "items".to_owned(), value, 0),
        other => s.fields.push(("value".to_owned(), scalar(other))),
    }
    s
}

fn walk(s: &mut JsonSummary, name: String, value: &Value, depth: usize) {
    match value {
        Value::Object(map) if depth < 2 => {
            for (k, v) in map {
                walk(s, format!("{name}.{k}"), v, depth + 1);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            // Keys in first-seen order, those holding scalars first.
            let mut keys: Vec<(String, bool)> = Vec::new();
            for item in items.iter().take(MAX_ITEMS) {
                if let Value::Object(map) = item {
                    for (k, v) in map {
                        let complex = matches!(v, Value::Array(_) | Value::Object(_));
                        match keys.iter_mut().find(|(key, _)| key == k) {
                            Some((_, c)) => *c |= complex,
                            None => keys.push((k.clone(), complex)),
                        }
                    }
                }
            }
            let columns: Vec<String> = keys
                .iter()
                .filter(|(_, complex)| !complex)
                .chain(keys.iter().filter(|(_, complex)| *complex))
                .take(MAX_COLUMNS)
                .map(|(k, _)| k.clone())
                .collect();
            let scalar_columns = keys
                .iter()
                .filter(|(_, complex)| !complex)
                .count()
                .min(columns.len());
            let rows = items
                .iter()
                .take(MAX_ITEMS)
                .map(|item| {
                    columns
                        .iter()
                        .map(|c| item.get(c).map(scalar).unwrap_or_default())
                        .collect()
                })
                .collect();
            s.tables.push(JsonTable {
                name,
                columns,
                scalar_columns,
                rows,
                total: items.len(),
            });
        }
        Value::Array(items) => s.lists.push(JsonList {
            name,
            items: items.iter().take(MAX_ITEMS).map(scalar).collect(),
            total: items.len(),
        }),
        other => s.fields.push((name, scalar(other))),
    }
}

/// A value as one short line of text.
fn scalar(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    truncate(&text, MAX_CELL)
}

/// Cuts text to `max` characters, marking the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lists_are_split() {
        assert_eq!(orch_core::list_output::decode("a.xml"), ["a.xml"]);
        assert_eq!(
            orch_core::list_output::decode(" a.xml, b.xml ,"),
            ["a.xml", "b.xml"]
        );
        assert_eq!(
            orch_core::list_output::decode(r#"["a,1.xml","b.xml"]"#),
            ["a,1.xml", "b.xml"]
        );
    }

    #[test]
    fn json_is_summarised_as_fields_lists_and_tables() {
        let v = serde_json::json!({
            "root": "services",
            "counts": {"services": 2, "nested": {"deep": {"x": 1}}},
            "problems": ["a", "b"],
            "services": [{"name": "api", "ports": [80], "path": "services/api"}, {"name": "web", "port": 80}],
        });
        let s = summarize(&v);
        assert_eq!(
            s.fields,
            [
                ("root".to_owned(), "services".to_owned()),
                ("counts.services".to_owned(), "2".to_owned()),
                ("counts.nested.deep".to_owned(), r#"{"x":1}"#.to_owned()),
            ]
        );
        assert_eq!(s.lists[0].items, ["a", "b"]);
        assert_eq!(s.tables[0].columns, ["name", "path", "port", "ports"]);
        assert_eq!(s.tables[0].rows[0], ["api", "services/api", "", "[80]"]);
        assert_eq!(s.tables[0].rows[1], ["web", "", "80", ""]);
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
