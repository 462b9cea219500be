//! The checked-in JSON Schemas are current, and every example pipeline follows them.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema_of(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .output()
        .expect("orch schema");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("schema is JSON")
}

#[test]
fn checked_in_schemas_are_current() {
    for (file, args) in [
        ("schemas/pipeline.schema.json", &["schema"][..]),
        ("schemas/run.schema.json", &["schema", "--run"][..]),
    ] {
        let path = repo().join(file);
        let generated = serde_json::to_string_pretty(&schema_of(args)).unwrap() + "\n";
        if std::env::var_os("ORCH_UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{file} is stale: run `ORCH_UPDATE_SCHEMAS=1 cargo test -p orch-cli --test cli schema`"
        );
    }
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() && !name.starts_with('.') && name != "target" && name != "node_modules" {
            toml_files(&p, out);
        } else if name == "orch.toml" || name.ends_with(".orch.toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_example_pipeline_follows_the_schema_and_validates() {
    let schema = schema_of(&["schema"]);
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut files = Vec::new();
    toml_files(&repo().join("examples"), &mut files);
    assert!(!files.is_empty(), "no example pipelines found");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let value: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let json = serde_json::to_value(&value).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{} does not follow the schema: {errors:#?}",
            f.display()
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("validate")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn run_json_follows_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orch.toml"),
        "[pipeline]\nname = \"s\"\n[phases.a]\nrun = \"echo k=v >> $ORCH_OUTPUT\"\n[phases.b]\nrun = \"exit 1\"\nneeds = [\"a\"]\n[phases.c]\nrun = \"true\"\nneeds = [\"b\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("run")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".orch/runs/latest/run.json")).unwrap(),
    )
    .unwrap();
    let schema = schema_of(&["schema", "--run"]);
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&record)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
