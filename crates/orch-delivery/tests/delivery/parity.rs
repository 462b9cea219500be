//! `parity` on the fixture project and on small discoveries.

use std::path::Path;

use orch_delivery::discover::{ComposeFile, ComposeService, Discovery, Service};
use orch_delivery::parity::{ModuleStatus, ParityReport, ParitySpec, check};

use crate::common::{factory_error, fixtures, run_phase, with, write};
use crate::discover::project;

#[tokio::test]
async fn fixture_project_against_its_spec() {
    let dir = project();
    let run = tempfile::tempdir().unwrap();
    let found = run_phase("discover", with(""), dir.path(), run.path(), &[], &[])
        .await
        .ok();
    let spec = fixtures().join("parity/spec.toml");
    let out = run_phase(
        "parity",
        with(&format!("spec = {:?}", spec.display().to_string())),
        dir.path(),
        run.path(),
        &["discover"],
        &[("discover", "report", &found.outputs["report"])],
    )
    .await
    .ok();
    let path = run.path().join("discrepancy.json");
    assert_eq!(out.outputs["report"], path.display().to_string());
    let mut report: ParityReport = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let s = &report.summary;
    for (key, value) in [
        ("required", s.required.to_string()),
        ("present", s.present.to_string()),
        ("partial", s.partial.to_string()),
        ("ambiguous", s.ambiguous.to_string()),
        ("missing", s.missing.to_string()),
        ("critical_missing", s.critical_missing.to_string()),
        ("parity_percent", s.parity_percent.clone()),
    ] {
        assert_eq!(out.outputs[key], value, "{key}");
    }
    assert_eq!(out.outputs["missing_modules"], r#"["ai","analytics"]"#);
    assert_eq!(
        out.outputs["critical_missing_modules"],
        r#"["ai","analytics"]"#
    );
    let status = |name: &str| {
        report
            .modules
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .status
    };
    // The trap: `ai` is missing although `email-worker` contains "ai".
    assert_eq!(status("ai"), ModuleStatus::Missing);
    assert_eq!(status("inventory"), ModuleStatus::Ambiguous);
    assert_eq!(status("payments-*"), ModuleStatus::Partial);

    report.spec = "[spec]".to_owned();
    report.discovery = "[discovery]".to_owned();
    insta::assert_json_snapshot!("discrepancy_fixture_project", report);
}

fn service(path: &str, complete: bool) -> Service {
    let name = path.rsplit('/').next().unwrap().to_owned();
    Service {
        path: path.to_owned(),
        name,
        language: Some("python".to_owned()),
        manifests: if complete {
            vec!["Dockerfile".to_owned(), "requirements.txt".to_owned()]
        } else {
            vec!["requirements.txt".to_owned()]
        },
        dockerfile: complete.then(|| format!("{path}/Dockerfile")),
        tests: complete,
        test_files: usize::from(complete),
        ..Service::default()
    }
}

fn discovery(services: &[(&str, bool)], compose: &[&str]) -> Discovery {
    Discovery {
        services: services.iter().map(|(p, c)| service(p, *c)).collect(),
        compose_files: vec![ComposeFile {
            path: "compose.yaml".to_owned(),
            services: compose
                .iter()
                .map(|n| ComposeService {
                    name: (*n).to_owned(),
                    image: Some(format!("{n}:1")),
                    ..ComposeService::default()
                })
                .collect(),
            ..ComposeFile::default()
        }],
        ..Discovery::default()
    }
}

/// Runs `check` and compares `name=status[:by][@paths]` for every module.
fn check_case(spec: &str, d: &Discovery, expected: &[&str]) {
    let spec = ParitySpec::from_toml(spec, Path::new("spec.toml")).unwrap();
    let report = check(&spec, d);
    let got: Vec<String> = report
        .modules
        .iter()
        .map(|m| {
            let status = serde_json::to_value(m.status).unwrap();
            let mut s = format!("{}={}", m.name, status.as_str().unwrap());
            if let Some(by) = m.matched_by {
                s.push(':');
                s.push_str(serde_json::to_value(by).unwrap().as_str().unwrap());
            }
            let who: Vec<String> = m
                .matches
                .iter()
                .chain(&m.candidates)
                .map(|c| {
                    c.path
                        .clone()
                        .unwrap_or_else(|| format!("compose:{}", c.name))
                })
                .collect();
            if !who.is_empty() {
                s.push('@');
                s.push_str(&who.join(","));
            }
            s
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn never_a_substring_match() {
    check_case(
        "[[module]]\nname = \"ai\"\n[[module]]\nname = \"mail\"\n[[module]]\nname = \"work\"\n",
        &discovery(
            &[("svc/email-worker", true), ("svc/maintenance", true)],
            &["airflow"],
        ),
        &["ai=missing", "mail=missing", "work=missing"],
    );
}

#[test]
fn exact_names_win_over_aliases_and_each_service_counts_once() {
    check_case(
        "[[module]]\nname = \"gateway\"\naliases = [\"api\"]\n[[module]]\nname = \"api\"\n[[module]]\nname = \"edge\"\naliases = [\"api\"]\n",
        &discovery(&[("svc/api", true)], &[]),
        &[
            "gateway=missing",
            "api=present:exact@svc/api",
            "edge=missing",
        ],
    );
}

#[test]
fn aliases_then_normalised_names() {
    check_case(
        "[[module]]\nname = \"users\"\naliases = [\"accounts\"]\n[[module]]\nname = \"orders\"\n[[module]]\nname = \"Billing Service\"\n",
        &discovery(
            &[
                ("svc/accounts", false),
                ("svc/Orders_API", true),
                ("svc/billing-svc", true),
            ],
            &[],
        ),
        &[
            "users=partial:alias@svc/accounts",
            "orders=present:normalised@svc/Orders_API",
            "Billing Service=present:normalised@svc/billing-svc",
        ],
    );
}

#[test]
fn several_candidates_are_ambiguous_and_listed() {
    check_case(
        "[[module]]\nname = \"auth\"\n[[module]]\nname = \"auth-v2\"\naliases = [\"auth\"]\n",
        &discovery(&[("a/auth", true), ("b/auth", true)], &[]),
        &[
            "auth=ambiguous:exact@a/auth,b/auth",
            "auth-v2=ambiguous:alias@a/auth,b/auth",
        ],
    );
}

#[test]
fn wildcard_groups_take_what_exact_modules_leave() {
    check_case(
        "[[module]]\nname = \"payments-*\"\n[[module]]\nname = \"payments-gateway\"\n[[module]]\nname = \"ml-*\"\n",
        &discovery(
            &[
                ("p/payments-gateway", true),
                ("p/payments-ledger", true),
                ("p/payments_refunds", true),
                ("p/payments", true),
                ("p/paymentsx", true),
            ],
            &["payments-cron"],
        ),
        &[
            "payments-*=partial:exact@compose:payments-cron,p/payments-ledger,p/payments_refunds",
            "payments-gateway=present:exact@p/payments-gateway",
            "ml-*=missing",
        ],
    );
}

#[test]
fn compose_only_and_incomplete_services_are_partial_with_reasons() {
    let spec = ParitySpec::from_toml(
        "[[module]]\nname = \"redis\"\n[[module]]\nname = \"api\"\ncritical = true\n[[module]]\nname = \"gone\"\ncritical = true\n",
        Path::new("spec.toml"),
    )
    .unwrap();
    let report = check(&spec, &discovery(&[("svc/api", false)], &["redis"]));
    let reasons: Vec<Option<&str>> = report.modules.iter().map(|m| m.reason.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            Some("redis: only a Compose entry"),
            Some("api: no Dockerfile, no tests"),
            Some("no service or Compose entry matches"),
        ]
    );
    assert_eq!(report.summary.critical_missing, 1);
    assert_eq!(report.summary.parity_percent, "0.0");
}

#[test]
fn bad_specs_are_refused_with_the_file_named() {
    for (text, needle) in [
        (
            "[[module]]\nname = \"a\"\n[[module]]\nname = \"a\"\n",
            "listed twice",
        ),
        (
            "[[module]]\nname = \"pay*ments\"\n",
            "only allowed at the end",
        ),
        ("[[module]]\nname = \"a\"\ncritcal = true\n", "critcal"),
        ("[[module]]\nname = \"\"\n", "empty name"),
    ] {
        let e = ParitySpec::from_toml(text, Path::new("mods.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("mods.toml") && msg.contains(needle), "{msg}");
    }
}

#[tokio::test]
async fn discovery_comes_from_a_setting_or_a_needed_phase() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "spec.toml", "[[module]]\nname = \"api\"\n");
    write(dir.path(), "svc/api/requirements.txt", "x\n");
    let run = dir.path().join("run");
    let d = orch_delivery::discover::discover(&orch_delivery::discover::DiscoverOptions::new(
        dir.path(),
    ))
    .unwrap();
    write(
        dir.path(),
        "found.json",
        &serde_json::to_string(&d).unwrap(),
    );
    let out = run_phase(
        "parity",
        with("spec = \"spec.toml\"\ndiscovery = \"found.json\"\noutput = \"out/parity.json\""),
        dir.path(),
        &run,
        &[],
        &[],
    )
    .await
    .ok();
    assert_eq!(out.outputs["partial"], "1");
    assert!(dir.path().join("out/parity.json").is_file());

    // A needed phase without a `report` output.
    let e = run_phase(
        "parity",
        with("spec = \"spec.toml\""),
        dir.path(),
        &run,
        &["lint"],
        &[("lint", "ok", "1")],
    )
    .await
    .err();
    assert!(e.contains("lint") && e.contains("`report`"), "{e}");

    // Neither a setting nor needs: refused at load time.
    let e = factory_error("parity", with("spec = \"spec.toml\""), &[]);
    assert!(e.contains("discovery"), "{e}");
}
