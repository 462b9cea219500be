//! `secrets.scan` and `quality` run by the binary: the gate fails naming its condition, the
//! dashboard and the compliance report show the numbers, and no found value is printed or
//! written anywhere.

use crate::support::Ws;

const PIPELINE: &str = r#"
[pipeline]
name = "gated"

[phases.secrets]
kind = "secrets.scan"
with = { root = "src" }

[phases.quality]
kind = "quality"
needs = ["secrets"]
with = { sarif = ["${{ phases.secrets.outputs.report }}"], coverage = ["cov/lcov.info"], conditions = ["findings.error == 0", "coverage >= 50"], threshold = 50 }
"#;

#[test]
fn a_quality_gate_fails_on_a_committed_token_and_reports_show_it() {
    let ws = Ws::new(PIPELINE);
    let mut rng = fastrand::Rng::with_seed(7);
    let token: String = format!(
        "ghp_{}",
        (0..36).map(|_| rng.alphanumeric()).collect::<String>()
    );
    std::fs::create_dir_all(ws.path().join("src")).unwrap();
    std::fs::write(
        ws.path().join("src/release.sh"),
        format!(
            "#!/bin/sh\n\ncurl -H 'Authorization: token {token}' https://api.github.com/user\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(ws.path().join("cov")).unwrap();
    std::fs::write(
        ws.path().join("cov/lcov.info"),
        "SF:src/a.js\nDA:1,1\nDA:2,1\nDA:3,0\nDA:4,1\nend_of_record\n",
    )
    .unwrap();

    let run = ws.orch(&["run"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let rec = ws.record();
    assert_eq!(rec["phases"]["secrets"]["outputs"]["findings"], "1");
    let reason = rec["phases"]["quality"]["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        "quality gate failed: `findings.error == 0` is false (findings.error = 1)"
    );

    let html = ws.read(".orch/runs/latest/report.html");
    for needle in [
        "<section id=\"quality\">",
        "Score <strong>82.5</strong> / 100 (threshold 50)",
        "<code class=\"wrap\">findings.error == 0</code>",
        "findings.error = 1",
        "release.sh:3",
        "github-token",
        "75 % of 4 lines (3 covered)",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }
    let compliance = ws.orch(&["report", "--format", "compliance"]);
    assert_eq!(compliance.code, 0, "{}", compliance.stderr);
    assert!(
        compliance
            .stdout
            .contains("Quality gates: measured by the tools")
    );
    assert!(compliance.stdout.contains("release.sh:3"));

    assert!(!run.stdout.contains(&token) && !run.stderr.contains(&token));
    assert!(!compliance.stdout.contains(&token));
    for path in orch_test_utils::files_under(&ws.path().join(".orch")) {
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(!text.contains(&token), "{} holds the token", path.display());
    }
}
