//! `artifacts_manifest.json`: every image a run built or pushed.

use std::path::{Path, PathBuf};

use orch_core::RunRecord;
use serde_json::{Value, json};

/// The file name the manifest is written under, in the run directory.
pub const MANIFEST_FILE: &str = "artifacts_manifest.json";

/// Collects the `image` artifacts of a run, one entry per image (by image id): name,
/// tags, image id, registry digests, size, build duration, cached or not, and the phases
/// that built and pushed it.
///
/// ```json
/// { "format_version": 1, "run_id": "...", "pipeline": "...",
///   "images": [ { "name": "app:1.0", "image_id": "sha256:...", "tags": ["app:1.0"],
///                 "size": 1234, "cached": false, "build_duration_ms": 812,
///                 "registry_digests": {"127.0.0.1:5000/app:1.0": "127.0.0.1:5000/app@sha256:..."},
///                 "built_by": "build", "pushed_by": ["push"] } ] }
/// ```
pub fn artifacts_manifest(record: &RunRecord) -> Value {
    let mut images: Vec<serde_json::Map<String, Value>> = Vec::new();
    for (phase, p) in &record.phases {
        for a in p.artifacts.iter().filter(|a| a.kind == "image") {
            let detail = |k: &str| a.details.get(k).cloned().unwrap_or(Value::Null);
            let image_id = detail("image_id");
            let tags: Vec<Value> = match detail("tags") {
                Value::Array(v) => v,
                _ => Vec::new(),
            };
            let pushed = matches!(detail("pushed"), Value::Bool(true))
                || !matches!(detail("registry_digest"), Value::Null);
            let slot = match images
                .iter()
                .position(|e| !image_id.is_null() && e.get("image_id") == Some(&image_id))
            {
                Some(i) => i,
                None => {
                    let mut e = serde_json::Map::new();
                    e.insert("name".into(), json!(a.name));
                    e.insert("image_id".into(), image_id.clone());
                    e.insert("tags".into(), json!([]));
                    e.insert("size".into(), json!(a.size));
                    e.insert("cached".into(), Value::Null);
                    e.insert("build_duration_ms".into(), Value::Null);
                    e.insert("registry_digests".into(), json!({}));
                    e.insert("built_by".into(), Value::Null);
                    e.insert("pushed_by".into(), json!([]));
                    images.push(e);
                    images.len() - 1
                }
            };
            let e = &mut images[slot];
            if let Some(Value::Array(have)) = e.get_mut("tags") {
                for t in tags {
                    if !have.contains(&t) {
                        have.push(t);
                    }
                }
            }
            if e.get("size").is_none_or(Value::is_null) {
                e.insert("size".into(), json!(a.size));
            }
            if pushed {
                if let (Some(Value::Object(d)), Value::String(rd)) =
                    (e.get_mut("registry_digests"), detail("registry_digest"))
                {
                    d.insert(a.name.clone(), json!(rd));
                }
                if let Some(Value::Array(by)) = e.get_mut("pushed_by") {
                    let me = json!(phase);
                    if !by.contains(&me) {
                        by.push(me);
                    }
                }
            } else {
                e.insert("name".into(), json!(a.name));
                e.insert("cached".into(), detail("cached"));
                e.insert("build_duration_ms".into(), detail("build_duration_ms"));
                e.insert("built_by".into(), json!(phase));
                if let Some(h) = a.details.get("content_hash") {
                    e.insert("content_hash".into(), h.clone());
                }
            }
        }
    }
    json!({
        "format_version": 1,
        "run_id": record.run_id.as_str(),
        "pipeline": record.pipeline,
        "images": images,
    })
}

/// Writes [`artifacts_manifest`] to `RUN_DIR/artifacts_manifest.json` and returns its
/// path.
pub fn write_artifacts_manifest(record: &RunRecord, run_dir: &Path) -> std::io::Result<PathBuf> {
    let path = run_dir.join(MANIFEST_FILE);
    let text =
        serde_json::to_string_pretty(&artifacts_manifest(record)).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(run_dir)?;
    std::fs::write(&path, text + "\n")?;
    Ok(path)
}
