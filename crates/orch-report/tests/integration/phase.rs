//! The `report` phase kind, run through the registry as the engine runs it.

use orch_core::{PhaseContext, PhaseError, PhaseId, PhaseSpec, Registry, WithTable};

use crate::fixtures;

fn spec(with: &str) -> PhaseSpec {
    let mut spec = PhaseSpec::new(PhaseId::new("report").unwrap(), "report");
    spec.with = WithTable::new(toml::from_str(with).unwrap());
    spec
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    orch_report::register(&mut r).expect("the kinds register once");
    r
}

#[test]
fn the_kind_is_registered_for_local_agents() {
    let r = registry();
    let entry = r.kind("report").expect("registered");
    assert_eq!(entry.agent_type, "local");
}

#[test]
fn settings_are_checked_at_load_time() {
    let r = registry();
    let err = r
        .build_phase(&spec(r#"formats = ["md", "docx"]"#))
        .err()
        .unwrap();
    assert_eq!(
        err.message,
        "unknown report format `docx`: use one of md, junit, html, json, compliance, pdf"
    );
    let err = r.build_phase(&spec(r#"format = ["md"]"#)).err().unwrap();
    assert!(
        err.message.contains("unknown field `format`"),
        "{}",
        err.message
    );
    let err = r.build_phase(&spec("formats = []")).err().unwrap();
    assert!(
        err.message.starts_with("`formats` is empty"),
        "{}",
        err.message
    );
    assert!(
        r.build_phase(&spec("")).is_ok(),
        "defaults: md, junit, html"
    );
}

#[tokio::test]
async fn it_writes_reports_of_the_run_so_far() {
    let fx = fixtures::succeeded();
    let r = registry();
    let phase = r
        .build_phase(&spec(
            r#"formats = ["md", "json", "compliance"]
output = "out/${{ vars.version }}""#,
        ))
        .unwrap();
    let base = fx.dir.path();
    let ctx = PhaseContext::builder(PhaseId::new("report").unwrap(), base)
        .var("version", "1.2.0")
        .run_dir(&fx.run_dir)
        .snapshot(fx.record.clone())
        .build();
    let outcome = phase.run(&ctx).await.unwrap();
    let out = base.join("out/1.2.0");
    let paths: Vec<String> = serde_json::from_str(&outcome.outputs["paths"]).unwrap();
    assert_eq!(
        paths,
        [
            out.join("report.md").display().to_string(),
            out.join("report.json").display().to_string(),
            out.join("compliance.html").display().to_string(),
        ]
    );
    assert_eq!(outcome.artifacts.len(), 3);
    for (a, p) in outcome.artifacts.iter().zip(&paths) {
        assert_eq!(a.kind, "report");
        assert_eq!(a.path.as_deref(), Some(p.as_str()));
        assert_eq!(a.size, Some(std::fs::metadata(p).unwrap().len()));
        assert!(a.digest.as_deref().unwrap().starts_with("sha256:"));
        assert_eq!(a.digest.as_deref().unwrap().len(), "sha256:".len() + 64);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("## ✅ nexus-cos: succeeded"), "{md}");
    let html = std::fs::read_to_string(out.join("compliance.html")).unwrap();
    assert!(html.contains("v1.2.0"));
    // The log names what it wrote.
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("report.log");
    let ctx = PhaseContext::builder(PhaseId::new("report").unwrap(), base)
        .var("version", "1.2.0")
        .run_dir(&fx.run_dir)
        .snapshot(fx.record.clone())
        .log_path(&log_path)
        .build();
    phase.run(&ctx).await.unwrap();
    ctx.flush_output();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().all(|l| l.starts_with("wrote ")), "{log}");
}

#[tokio::test]
async fn default_output_is_the_run_dir() {
    let fx = fixtures::failed();
    let phase = registry().build_phase(&spec("")).unwrap();
    let ctx = PhaseContext::builder(PhaseId::new("report").unwrap(), fx.dir.path())
        .run_dir(&fx.run_dir)
        .snapshot(fx.record.clone())
        .build();
    let outcome = phase.run(&ctx).await.unwrap();
    let paths: Vec<String> = serde_json::from_str(&outcome.outputs["paths"]).unwrap();
    assert_eq!(paths.len(), 3);
    for name in ["report.md", "junit.xml", "report.html"] {
        assert!(fx.run_dir.join(name).is_file(), "{name}");
    }
}

#[tokio::test]
async fn without_a_snapshot_it_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let phase = registry().build_phase(&spec("")).unwrap();
    let ctx = PhaseContext::builder(PhaseId::new("report").unwrap(), dir.path()).build();
    let err = phase.run(&ctx).await.unwrap_err();
    assert_eq!(
        err,
        PhaseError::failed("no run snapshot: the `report` kind runs inside a run")
    );
}

#[test]
fn describe_says_what_it_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let phase = registry()
        .build_phase(&spec(
            r#"formats = ["html", "pdf"]
output = "reports""#,
        ))
        .unwrap();
    let id = PhaseId::new("report").unwrap();
    let scope = NoScope;
    let ctx = orch_core::PlanContext::new(&id, dir.path(), &scope);
    let d = phase.describe(&ctx);
    let reports = dir.path().join("reports").display().to_string();
    assert_eq!(
        d.summary,
        format!("render html, pdf reports into {reports}")
    );
    assert_eq!(
        d.changes,
        [
            format!("write {reports}/report.html"),
            format!("write {reports}/compliance.pdf"),
        ]
    );
    assert!(!dir.path().join("reports").exists());

    let phase = registry().build_phase(&spec("")).unwrap();
    let d = phase.describe(&ctx);
    assert_eq!(d.summary, "render md, junit, html reports into RUN_DIR");
    assert_eq!(d.changes[0], "write RUN_DIR/report.md");
}

struct NoScope;

impl orch_core::interpolate::Scope for NoScope {
    fn lookup(
        &self,
        r: &orch_core::interpolate::Reference,
    ) -> Result<std::borrow::Cow<'_, str>, orch_core::InterpolationError> {
        Ok(std::borrow::Cow::Owned(format!("<{r:?}>")))
    }
    fn vars(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn phase_outputs(&self, _phase: &str) -> Option<orch_core::Outputs> {
        None
    }
}
