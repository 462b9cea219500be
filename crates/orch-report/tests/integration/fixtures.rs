//! Run records built in code, with logs and referenced files in a temporary run directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use orch_core::record::rfc3339;
use orch_core::{
    Artifact, PhaseId, PhaseRecord, PhaseStatus, RunId, RunRecord, RunStatus, Timestamp,
};

/// A run directory with its record.
pub struct Fixture {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    pub run_dir: PathBuf,
    pub record: RunRecord,
}

pub struct Builder {
    dir: tempfile::TempDir,
    run_dir: PathBuf,
    base: SystemTime,
    record: RunRecord,
}

/// One phase being added.
pub struct PhaseB<'a> {
    b: &'a mut Builder,
    id: String,
    rec: PhaseRecord,
}

impl Builder {
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn new(pipeline: &str, status: RunStatus) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run_id = RunId::generate();
        let run_dir = dir.path().join(".orch/runs").join(run_id.as_str());
        std::fs::create_dir_all(run_dir.join("logs")).unwrap();
        // Whole seconds, so durations are exact.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        let record = RunRecord {
            format_version: orch_core::record::RECORD_FORMAT_VERSION,
            run_id,
            pipeline: pipeline.to_owned(),
            status,
            started_at: rfc3339(base),
            finished_at: None,
            duration_ms: None,
            resumed_from: None,
            pipeline_file: Some(dir.path().join("orch.toml").display().to_string()),
            vars: IndexMap::new(),
            phases: IndexMap::new(),
            audit: None,
            record_errors: Vec::new(),
        };
        Self {
            dir,
            run_dir,
            base,
            record,
        }
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn var(mut self, k: &str, v: &str) -> Self {
        self.record.vars.insert(k.into(), v.into());
        self
    }

    /// Adds a phase of `kind` that ended with `status`.
    pub fn phase(&mut self, id: &str, kind: &str, status: PhaseStatus) -> PhaseB<'_> {
        PhaseB {
            b: self,
            id: id.to_owned(),
            rec: PhaseRecord::new(
                status,
                kind,
                u32::from(!matches!(
                    status,
                    PhaseStatus::Skipped | PhaseStatus::Blocked
                )),
            ),
        }
    }

    /// Writes a file under the pipeline's directory.
    pub fn file(&self, rel: &str, text: &str) -> &Self {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    /// Ends the run `secs` after its start.
    pub fn finish(mut self, secs: f64) -> Fixture {
        let end = self.base + Duration::from_secs_f64(secs);
        self.record.finished_at = Some(rfc3339(end));
        self.record.duration_ms = Some(Duration::from_secs_f64(secs).as_millis() as u64);
        Fixture {
            dir: self.dir,
            run_dir: self.run_dir,
            record: self.record,
        }
    }
}

impl PhaseB<'_> {
    /// Ran from `start` for `secs` seconds after the run's start.
    pub fn ran(mut self, start: f64, secs: f64) -> Self {
        let s = self.b.base + Duration::from_secs_f64(start);
        let e = s + Duration::from_secs_f64(secs);
        self.rec.started_at = Some(Timestamp::new(s));
        self.rec.finished_at = Some(Timestamp::new(e));
        self.rec.duration_ms = Some(Duration::from_secs_f64(secs).as_millis() as u64);
        self
    }
    pub fn needs(mut self, needs: &[&str]) -> Self {
        self.rec.needs = needs.iter().map(|s| PhaseId::new(s).unwrap()).collect();
        self
    }
    pub fn attempts(mut self, n: u32) -> Self {
        self.rec.attempts = n;
        self
    }
    pub fn exit(mut self, code: i32) -> Self {
        self.rec.exit_code = Some(code);
        self
    }
    pub fn reason(mut self, r: &str) -> Self {
        self.rec.reason = Some(r.to_owned());
        self
    }
    pub fn allowed(mut self) -> Self {
        self.rec.allowed_failure = true;
        self
    }
    pub fn output(mut self, k: &str, v: &str) -> Self {
        self.rec.outputs.insert(k.into(), v.into());
        self
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.rec.tags = tags.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    pub fn description(mut self, d: &str) -> Self {
        self.rec.description = Some(d.to_owned());
        self
    }
    pub fn artifact(mut self, a: Artifact) -> Self {
        self.rec.artifacts.push(a);
        self
    }
    /// Writes its log (`logs/ID.log`) and records it.
    pub fn log(mut self, text: &str) -> Self {
        let rel = format!("logs/{}.log", self.id);
        std::fs::write(self.b.run_dir.join(&rel), text).unwrap();
        self.rec.log = Some(rel);
        self
    }
    pub fn add(self) {
        self.b
            .record
            .phases
            .insert(PhaseId::new(&self.id).unwrap(), self.rec);
    }
}

pub fn artifact(kind: &str, name: &str) -> Artifact {
    Artifact::new(kind, name)
}

const PYTEST_JUNIT: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="1.234" timestamp="2026-11-21T20:16:03.000000+00:00" hostname="ci"><testcase classname="tests.test_api" name="test_health" time="0.010"/><testcase classname="tests.test_api" name="test_login" time="0.200"/><testcase classname="tests.test_api" name="test_refund" time="0.300"><failure message="AssertionError: assert 402 == 200">def test_refund():
&gt;       assert r.status == 200
E       AssertionError: assert 402 == 200</failure></testcase><testcase classname="tests.test_api" name="test_slow" time="0.000"><skipped type="pytest.skip" message="slow">skipped</skipped></testcase></testsuite></testsuites>"#;

const CARGO_JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="api-unit" tests="3" failures="0" errors="0" skipped="0"><testcase name="parses_config" classname="api::config"/><testcase name="rejects_bad_token" classname="api::auth"/><testcase name="rounds_money" classname="api::money"/></testsuite>"#;

/// A delivery run where every phase succeeded: discovery, parity, tests with JUnit files,
/// an image, a package, a gate, git inventory and tag.
pub fn succeeded() -> Fixture {
    let mut b = Builder::new("nexus-cos", RunStatus::Succeeded)
        .var("version", "1.2.0")
        .var("registry", "127.0.0.1:5000");
    let base = b.base_dir().display().to_string();
    b.file(
        "reports/discovery.json",
        &serde_json::json!({
            "format_version": 1,
            "base": base,
            "roots": ["services"],
            "services": [
                {"path": "services/api", "name": "api", "language": "rust",
                 "manifests": ["Cargo.toml"], "dockerfile": "Dockerfile", "tests": true,
                 "test_files": 12, "ports": [{"port": 8080, "protocol": "tcp",
                 "source": "dockerfile", "file": "services/api/Dockerfile"}],
                 "compose_services": [{"file": "compose.yaml", "service": "api"}]},
                {"path": "services/web", "name": "web", "language": "typescript",
                 "manifests": ["package.json"], "tests": false, "test_files": 0,
                 "ports": [], "compose_services": []}
            ],
            "compose_files": [{"path": "compose.yaml", "detected_by": "name",
                "services": [{"name": "api", "image": "nexus/api", "ports": []}]}],
            "env_vars": [
                {"name": "DATABASE_URL", "defined_in": [{"file": ".env.example", "line": 1}], "used_in": []},
                {"name": "REDIS_URL", "defined_in": [], "used_in": [{"file": "compose.yaml", "line": 9}]}
            ],
            "problems": [
                {"file": "services/web/package.json", "line": null, "kind": "no_tests",
                 "severity": "warning", "message": "no test files"}
            ],
            "skipped": []
        })
        .to_string(),
    );
    b.file(
        "reports/discrepancy.json",
        &serde_json::json!({
            "format_version": 1,
            "spec": "parity.toml",
            "discovery": "reports/discovery.json",
            "summary": {"required": 3, "present": 2, "partial": 1, "ambiguous": 0,
                        "missing": 0, "critical_missing": 0, "parity_percent": "83.3"},
            "modules": [
                {"name": "api", "category": "core", "critical": true, "group": false,
                 "status": "present", "matched_by": "exact",
                 "matches": [{"name": "api", "path": "services/api", "compose": [], "lacks": []}],
                 "candidates": [], "reason": null},
                {"name": "web", "category": "frontend", "critical": false, "group": false,
                 "status": "present", "matched_by": "exact",
                 "matches": [{"name": "web", "path": "services/web", "compose": [], "lacks": []}],
                 "candidates": [], "reason": null},
                {"name": "payments-*", "category": "billing", "critical": true, "group": true,
                 "status": "partial", "matched_by": "normalised", "matches": [],
                 "candidates": [], "reason": "payments-gateway lacks tests"}
            ],
            "unmatched": []
        })
        .to_string(),
    );
    b.file("reports/unit.xml", CARGO_JUNIT);
    std::fs::write(b.run_dir().join("pytest.xml"), PYTEST_JUNIT).unwrap();
    b.phase("inventory", "git.inventory", PhaseStatus::Succeeded)
        .ran(0.0, 0.4)
        .output("head", "9f2c1e4b7a0d5c3e8f1a2b3c4d5e6f708192a3b4")
        .output("branch", "main")
        .output("dirty", "false")
        .output("latest_tag", "v1.1.0")
        .log("head 9f2c1e4 on main, clean\n")
        .add();
    b.phase("discover", "discover", PhaseStatus::Succeeded)
        .ran(0.0, 1.2)
        .output("services", "2")
        .output("compose_files", "1")
        .output("compose_services", "1")
        .output("env_vars", "2")
        .output("problems", "1")
        .output("report", &format!("{base}/reports/discovery.json"))
        .log("found 2 services\n")
        .add();
    b.phase("parity", "parity", PhaseStatus::Succeeded)
        .ran(1.2, 0.5)
        .needs(&["discover"])
        .output("required", "3")
        .output("present", "2")
        .output("partial", "1")
        .output("missing", "0")
        .output("critical_missing", "0")
        .output("parity_percent", "83.3")
        .output("report", "reports/discrepancy.json")
        .output("missing_modules", "[]")
        .add();
    b.phase("unit", "command", PhaseStatus::Succeeded)
        .ran(1.7, 4.0)
        .needs(&["parity"])
        .tags(&["test"])
        .exit(0)
        .output("junit", "reports/unit.xml")
        .log("running 3 tests\ntest result: ok. 3 passed\n")
        .add();
    b.phase("api-tests", "command", PhaseStatus::Succeeded)
        .ran(1.7, 5.5)
        .needs(&["parity"])
        .tags(&["test"])
        .exit(0)
        .artifact(Artifact {
            path: Some("pytest.xml".into()),
            ..artifact("junit", "pytest.xml")
        })
        .log("4 tests: 2 passed, 1 failed (allowed by the suite config), 1 skipped\n")
        .add();
    b.phase("image", "docker.build", PhaseStatus::Succeeded)
        .ran(7.2, 12.0)
        .needs(&["unit", "api-tests"])
        .output(
            "image_id",
            "sha256:4b1d3e7e0c6f0a1f5b2e9d8c7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
        )
        .output("tags", "127.0.0.1:5000/nexus/api:1.2.0")
        .output("cached", "false")
        .artifact(Artifact {
            digest: Some(
                "sha256:4b1d3e7e0c6f0a1f5b2e9d8c7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b".into(),
            ),
            size: Some(23_456_789),
            ..artifact("image", "127.0.0.1:5000/nexus/api:1.2.0")
        })
        .log("Step 1/4 : FROM scratch\nSuccessfully built 4b1d3e7e0c6f\n")
        .add();
    b.phase("package", "package", PhaseStatus::Succeeded)
        .ran(7.2, 2.0)
        .needs(&["unit"])
        .output("path", "dist/nexus-cos-1.2.0.tar.gz")
        .output(
            "sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .output("files", "42")
        .artifact(Artifact {
            path: Some("dist/nexus-cos-1.2.0.tar.gz".into()),
            digest: Some(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            ),
            size: Some(1_048_576),
            details: [("files".to_owned(), serde_json::json!(42))]
                .into_iter()
                .collect(),
            ..artifact("archive", "nexus-cos-1.2.0.tar.gz")
        })
        .add();
    b.phase("release-gate", "gate", PhaseStatus::Succeeded)
        .ran(19.2, 0.1)
        .needs(&["image", "package"])
        .description("parity at least 80% and no critical module missing")
        .output("passed", "true")
        .add();
    b.phase("tag", "git.tag", PhaseStatus::Succeeded)
        .ran(19.3, 0.3)
        .needs(&["release-gate"])
        .output("tag", "v1.2.0")
        .output("commit", "9f2c1e4b7a0d5c3e8f1a2b3c4d5e6f708192a3b4")
        .add();
    b.finish(19.8)
}

/// A failed run: a retried failure whose log tries to inject HTML and break out of
/// Markdown fences, a timeout, an allowed failure, and phases blocked by the failure.
pub fn failed() -> Fixture {
    let mut b = Builder::new("nexus-cos", RunStatus::Failed).var("version", "1.2.0");
    b.phase("lint", "command", PhaseStatus::Succeeded)
        .ran(0.0, 2.1)
        .exit(0)
        .log("cargo clippy: 0 warnings\n")
        .add();
    let mut noise = String::new();
    for i in 1..=40 {
        noise.push_str(&format!("test case_{i:02} ... ok\n"));
    }
    noise.push_str("```\n## not a heading: this line must stay inside the code block\n");
    noise.push_str("<script>document.title='pwned'</script>\n");
    noise.push_str("\u{1b}[31merror\u{1b}[0m: test failed, to rerun pass `--lib`\n");
    b.phase("unit", "command", PhaseStatus::Failed)
        .ran(2.1, 6.4)
        .needs(&["lint"])
        .attempts(3)
        .exit(101)
        .reason("exit status 101 <b>after 3 attempts</b>")
        .tags(&["test"])
        .log(&noise)
        .add();
    b.phase("integration", "command", PhaseStatus::TimedOut)
        .ran(2.1, 30.0)
        .needs(&["lint"])
        .reason("timed out after 30s")
        .log("waiting for the database...\nwaiting for the database...\n")
        .add();
    b.phase("docs", "command", PhaseStatus::Failed)
        .ran(2.1, 1.0)
        .allowed()
        .exit(1)
        .reason("exit status 1")
        .log("broken link: ./missing.md\n")
        .add();
    b.phase("image", "docker.build", PhaseStatus::Blocked)
        .needs(&["unit", "integration"])
        .reason("blocked by unit")
        .add();
    b.phase("release", "gate", PhaseStatus::Blocked)
        .needs(&["image"])
        .reason("blocked by image")
        .add();
    b.finish(32.1)
}

/// A run where a failure blocks a chain of phases.
pub fn blocked() -> Fixture {
    let mut b = Builder::new("chain", RunStatus::Failed);
    b.phase("setup", "command", PhaseStatus::Failed)
        .ran(0.0, 0.8)
        .exit(2)
        .reason("exit status 2")
        .log("setup: cannot reach 127.0.0.1:5432\n")
        .add();
    b.phase("build", "command", PhaseStatus::Blocked)
        .needs(&["setup"])
        .reason("blocked by setup")
        .add();
    b.phase("test", "command", PhaseStatus::Blocked)
        .needs(&["build"])
        .reason("blocked by build")
        .add();
    b.phase("independent", "command", PhaseStatus::Skipped)
        .reason("not selected")
        .add();
    b.finish(0.9)
}

/// A run that succeeded after retries.
pub fn retried() -> Fixture {
    let mut b = Builder::new("flaky", RunStatus::Succeeded);
    b.phase("fetch", "command", PhaseStatus::Succeeded)
        .ran(0.0, 9.5)
        .attempts(3)
        .exit(0)
        .log("attempt 1: connection reset\nattempt 2: connection reset\nattempt 3: ok\n")
        .add();
    b.phase("build", "command", PhaseStatus::Succeeded)
        .ran(9.5, 2.0)
        .needs(&["fetch"])
        .exit(0)
        .add();
    b.finish(11.5)
}

/// A run interrupted while a phase ran.
pub fn cancelled() -> Fixture {
    let mut b = Builder::new("interrupted", RunStatus::Cancelled);
    b.phase("prepare", "command", PhaseStatus::Succeeded)
        .ran(0.0, 1.0)
        .exit(0)
        .add();
    b.phase("long", "command", PhaseStatus::Cancelled)
        .ran(1.0, 4.0)
        .needs(&["prepare"])
        .reason("interrupted")
        .log("step 1 of 10\nstep 2 of 10\n")
        .add();
    b.phase("after", "command", PhaseStatus::Cancelled)
        .attempts(0)
        .needs(&["long"])
        .reason("interrupted before it started")
        .add();
    b.finish(5.0)
}

/// A log of about 4 KiB, like a short build's.
fn large_log(id: &str, failed: bool) -> String {
    let mut log = String::new();
    for i in 0..48 {
        log.push_str(&format!(
            "   Compiling {id}-dep-{i:02} v0.{i}.0 (registry+https://example.invalid/index) ...\n"
        ));
    }
    log.push_str(if failed {
        "error: assertion failed: left == right\n"
    } else {
        "    Finished `test` profile in 1.2s\n"
    });
    log
}

/// A run of `n` phases in layers of 40, each with a log of about 4 KiB; every 97th failed
/// (allowed to fail).
pub fn large(n: usize) -> Fixture {
    let mut b = Builder::new("large", RunStatus::Succeeded);
    let width = 40;
    for i in 0..n {
        let layer = i / width;
        let id = format!("phase-{i:04}");
        let failed = i % 97 == 96;
        let blocked_by =
            (layer > 0).then(|| format!("phase-{:04}", (layer - 1) * width + i % width));
        let mut p = b
            .phase(
                &id,
                "command",
                if failed {
                    PhaseStatus::Failed
                } else {
                    PhaseStatus::Succeeded
                },
            )
            .ran(
                layer as f64 * 2.0 + (i % 7) as f64 * 0.1,
                1.0 + (i % 5) as f64 * 0.2,
            )
            .exit(i32::from(failed))
            .log(&large_log(&id, failed));
        if let Some(need) = &blocked_by {
            p = p.needs(&[need.as_str()]);
        }
        if failed {
            p = p.reason("exit status 1").allowed();
        }
        p.add();
    }
    b.finish((n / width) as f64 * 2.0 + 3.0)
}
