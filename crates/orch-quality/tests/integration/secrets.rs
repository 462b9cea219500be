//! `secrets.scan` on a tree with one planted credential per rule and as many near misses,
//! run through the engine with a `quality` gate on its SARIF.

use std::path::Path;
use std::sync::Arc;

use orch_core::{LoadOptions, PhaseStatus, Pipeline, Registry, RunControl, RunOptions, Runner};
use orch_quality::secrets::{RULES, scan};

use crate::support::write;

struct Planted {
    rule: &'static str,
    file: String,
    line: u64,
    value: String,
}

struct Rng(fastrand::Rng);

impl Rng {
    fn pick(&mut self, alphabet: &str, n: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        (0..n).map(|_| chars[self.0.usize(..chars.len())]).collect()
    }
}

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwyz0123456789";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwyz0123456789+/";
const HEX: &str = "0123456789abcdef";

/// Writes the tree and returns what was planted. Values are generated, so no credential-like
/// literal lives in the repository.
fn plant(root: &Path) -> Vec<Planted> {
    let mut r = Rng(fastrand::Rng::with_seed(19));
    let mut planted = Vec::new();
    let mut add = |rule, file: &str, lines: &[String], at: usize, value: String| {
        write(root, file, &(lines.join("\n") + "\n"));
        planted.push(Planted {
            rule,
            file: file.to_owned(),
            line: at as u64 + 1,
            value,
        });
    };
    let body: Vec<String> = (0..3).map(|_| r.pick(B64, 64)).collect();
    add(
        "private-key",
        "deploy/id_rsa",
        &[
            "-----BEGIN RSA PRIVATE KEY-----".to_owned(),
            body[0].clone(),
            body[1].clone(),
            body[2].clone(),
            "-----END RSA PRIVATE KEY-----".to_owned(),
        ],
        0,
        body[0].clone(),
    );
    let v = format!("AKIA{}", r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    add(
        "aws-access-key-id",
        "config/aws.ini",
        &["[default]".into(), format!("aws_access_key_id = {v}")],
        1,
        v,
    );
    let v = r.pick(B64, 40);
    add(
        "aws-secret-access-key",
        "config/credentials",
        &["[prod]".into(), format!("aws_secret_access_key = {v}")],
        1,
        v,
    );
    let v = format!("AIza{}", r.pick(&format!("{ALNUM}_-"), 35));
    add(
        "gcp-api-key",
        "web/maps.js",
        &[format!("const MAPS_KEY = '{v}';")],
        0,
        v,
    );
    let v = r.pick(HEX, 40);
    add(
        "gcp-service-account-key",
        "config/sa.json",
        &[
            "{".into(),
            "  \"type\": \"service_account\",".into(),
            format!("  \"private_key_id\": \"{v}\","),
            "  \"project_id\": \"shop\"".into(),
            "}".into(),
        ],
        2,
        v,
    );
    let v = format!("{}==", r.pick(B64, 86));
    add(
        "azure-storage-key",
        "config/azure.txt",
        &[format!(
            "DefaultEndpointsProtocol=https;AccountName=shop;AccountKey={v};EndpointSuffix=core.windows.net"
        )],
        0,
        v,
    );
    let v = format!("ghp_{}", r.pick(ALNUM, 36));
    add(
        "github-token",
        "ci/release.sh",
        &[
            "#!/bin/sh".into(),
            format!("curl -H 'Authorization: token {v}' https://api.github.com/user"),
        ],
        1,
        v,
    );
    let v = format!("glpat-{}", r.pick(ALNUM, 20));
    add(
        "gitlab-token",
        "ci/gitlab.yml",
        &["variables:".into(), format!("  PUSH_WITH: {v}")],
        1,
        v,
    );
    let v = format!(
        "xoxb-{}-{}-{}",
        r.pick("0123456789", 11),
        r.pick("0123456789", 12),
        r.pick(ALNUM, 24)
    );
    add(
        "slack-token",
        "bot/slack.py",
        &[format!("client = WebClient(\"{v}\")")],
        0,
        v,
    );
    let v = format!(
        "T{}/B{}/{}",
        r.pick(UPPER, 8),
        r.pick(UPPER, 8),
        r.pick(ALNUM, 24)
    );
    add(
        "slack-webhook",
        "bot/notify.go",
        &[format!(
            "var hook = \"https://hooks.slack.com/services/{v}\""
        )],
        0,
        v,
    );
    let v = r.pick(ALNUM, 16);
    add(
        "url-credentials",
        "orders/settings.py",
        &[format!(
            "DATABASE = \"postgres://shop:{v}@db.internal:5432/shop\""
        )],
        0,
        v,
    );
    let v = r.pick(ALNUM, 32);
    add(
        "secret-assignment",
        "identity/config.py",
        &["DEBUG = False".into(), format!("CLIENT_SECRET = \"{v}\"")],
        1,
        v,
    );
    let v = r.pick(ALNUM, 14);
    add(
        "dotenv-value",
        "payments/.env",
        &["PORT=8080".into(), format!("DB_PASSWORD={v}")],
        1,
        v,
    );
    assert_eq!(
        planted.len(),
        RULES.len(),
        "one planted credential per rule"
    );

    // As many near misses: placeholders, documented examples, hashes, UUIDs, templates.
    let near = [
        ("keys/pub.pem", format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----", r.pick(B64, 64))),
        ("docs/aws.md", "Use `AKIAIOSFODNN7EXAMPLE` as the access key id.".to_owned()),
        ("docs/aws-secret.md", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned()),
        ("web/integrity.js", format!("const checksum = \"{}\";", r.pick(HEX, 64))),
        ("orders/ids.py", "request_id = \"123e4567-e89b-12d3-a456-426614174000\"\napi_key_id = \"9b2f6c1e-4d3a-4f5b-8c7d-2e1f0a9b8c7d\"".to_owned()),
        ("docs/azure.md", "AccountKey=<your-storage-account-key>".to_owned()),
        ("docs/github.md", format!("export GITHUB_TOKEN=ghp_{}", "x".repeat(36))),
        ("docs/gitlab.md", "PUSH_WITH=glpat-xxxxxxxxxxxxxxxxxxxx".to_owned()),
        ("bot/.env.example", "SLACK_TOKEN=xoxb-your-token-here\nDB_PASSWORD=changeme".to_owned()),
        ("docs/slack.md", "https://hooks.slack.com/services/TXXXXXXXX/BXXXXXXXX/XXXXXXXXXXXXXXXXXXXXXXXX".to_owned()),
        ("orders/db.py", "DATABASE = \"postgres://shop:${DB_PASSWORD}@db/shop\"\npassword = os.environ[\"DB_PASSWORD\"]".to_owned()),
        ("identity/hash.py", format!("password_hash = \"{}\"\ncommit = \"{}\"", r.pick(ALNUM, 32), r.pick(HEX, 40))),
        ("payments/.env.sample", format!("STRIPE_API_KEY=sk_test_{}", "your_key_here")),
    ];
    assert_eq!(near.len(), RULES.len(), "as many near misses");
    for (file, text) in near {
        write(root, file, &(text + "\n"));
    }

    // Real-format credentials that must not be reported: ignored by .gitignore, by the
    // `ignore` list, or allowed inline.
    write(root, ".gitignore", "local/\n");
    write(
        root,
        "local/.env",
        &format!("API_TOKEN={}\n", r.pick(ALNUM, 20)),
    );
    write(
        root,
        "fixtures/token.txt",
        &format!("ghp_{}\n", r.pick(ALNUM, 36)),
    );
    write(
        root,
        "tests/allowed.py",
        &format!(
            "TOKEN = \"ghp_{}\"  # orch:allow-secret\n",
            r.pick(ALNUM, 36)
        ),
    );
    planted
}

#[test]
fn every_rule_finds_its_plant_and_no_near_miss() {
    let dir = tempfile::tempdir().unwrap();
    let planted = plant(dir.path());
    let result = scan(dir.path(), &["fixtures/".to_owned()], &[]).unwrap();
    let tp = result
        .findings
        .iter()
        .filter(|f| {
            planted
                .iter()
                .any(|p| p.rule == f.rule && p.file == f.file && p.line == f.line)
        })
        .count();
    let reported = result.findings.len();
    let precision = tp as f64 / reported.max(1) as f64;
    let recall = tp as f64 / planted.len() as f64;
    eprintln!(
        "secrets.scan: {} planted, {} near misses, {reported} reported, {tp} true: precision {precision:.2}, recall {recall:.2}",
        planted.len(),
        RULES.len()
    );
    let missed: Vec<_> = planted
        .iter()
        .filter(|p| {
            !result
                .findings
                .iter()
                .any(|f| f.rule == p.rule && f.file == p.file)
        })
        .map(|p| p.rule)
        .collect();
    let false_positives: Vec<_> = result
        .findings
        .iter()
        .filter(|f| !planted.iter().any(|p| p.rule == f.rule && p.file == f.file))
        .map(|f| format!("{} {}:{}", f.rule, f.file, f.line))
        .collect();
    assert!(missed.is_empty(), "missed: {missed:?}");
    assert!(
        false_positives.is_empty(),
        "false positives: {false_positives:?}"
    );
    assert_eq!((precision, recall), (1.0, 1.0));
    for f in &result.findings {
        assert_eq!(f.fingerprint.len(), 16);
    }
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    orch_quality::register(&mut r).expect("the kinds register once");
    r
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quality_gate_on_the_scan_fails_and_no_found_value_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let planted = plant(&dir.path().join("tree"));
    let toml = r#"
[pipeline]
name = "secrets"
jobs = 2

[phases.secrets]
kind = "secrets.scan"
with = { root = "tree", ignore = ["fixtures/"] }

[phases.quality]
kind = "quality"
needs = ["secrets"]
with = { sarif = ["${{ phases.secrets.outputs.report }}"], conditions = ["findings.error == 0"], threshold = 50 }
"#;
    let file = dir.path().join("orch.toml");
    std::fs::write(&file, toml).unwrap();
    let pipeline = Pipeline::load(&file, &registry(), &LoadOptions::default()).unwrap();
    let state_dir = pipeline.state_dir();
    let record = Runner::new(Arc::new(pipeline), RunOptions::default())
        .run(RunControl::new())
        .await
        .unwrap();
    let secrets = &record.phases["secrets"];
    assert_eq!(
        secrets.status,
        PhaseStatus::Succeeded,
        "{:?}",
        secrets.reason
    );
    assert_eq!(secrets.outputs["findings"], planted.len().to_string());
    let quality = &record.phases["quality"];
    assert_eq!(quality.status, PhaseStatus::Failed);
    let reason = quality.reason.as_deref().unwrap();
    assert!(
        reason.starts_with(
            "quality gate failed: `findings.error == 0` is false (findings.error = 13)"
        ),
        "{reason}"
    );
    // The score is 60 (findings cost the most, 40), above the threshold: not named.
    assert!(!reason.contains("threshold"), "{reason}");

    // The failed gate's record is where reports look for it.
    let run_dir = state_dir.join("runs").join(record.run_id.as_str());
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("quality/quality/quality.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["format_version"], 1);
    assert_eq!(report["passed"], false);
    assert_eq!(report["score"]["value"], 60.0);
    assert_eq!(report["measures"]["findings"]["error"], 13);
    let merged: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("quality/quality/quality.sarif")).unwrap(),
    )
    .unwrap();
    assert_eq!(merged["version"], "2.1.0");
    assert_eq!(merged["runs"][0]["results"].as_array().unwrap().len(), 13);

    // No found value in any file orch wrote (SARIF, quality.json, logs, run.json, journal).
    let mut written = Vec::new();
    files_under(&state_dir, &mut written);
    assert!(written.len() >= 5, "{written:?}");
    for path in &written {
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for p in &planted {
            assert!(
                !text.contains(&p.value),
                "{} holds the {} value planted in {}",
                path.display(),
                p.rule,
                p.file
            );
        }
    }
}
