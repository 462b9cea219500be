//! The score on fixed inputs, and conditions that name themselves.

use std::collections::BTreeMap;

use orch_quality::coverage::{CoverageTotals, Ratio};
use orch_quality::junit::TestCounts;
use orch_quality::measure::{FindingCounts, Measures, conditions, score};

fn measures() -> Measures {
    Measures {
        findings: Some(FindingCounts {
            error: 2,
            warning: 5,
            note: 3,
            none: 1,
            total: 10,
            suppressed: 1,
        }),
        rules: BTreeMap::from([("F401".to_owned(), 4), ("B602".to_owned(), 2)]),
        coverage: Some(CoverageTotals {
            lines: Ratio::new(170, 200),
            branches: Some(Ratio::new(30, 50)),
            files: 4,
        }),
        tests: Some(TestCounts {
            total: 40,
            passed: 36,
            failed: 2,
            errors: 1,
            skipped: 2,
        }),
    }
}

#[test]
fn score_arithmetic_on_fixed_inputs() {
    let full = score(&measures());
    // findings 2×10 + 5×2 + 3×0.5 = 31.5; coverage 0.2×15 + 0.1×40 = 7;
    // tests 30 × 2/38 = 1.58: 100 - 40.08 = 59.9.
    assert_eq!(full.value, 59.9);
    insta::assert_json_snapshot!("score_all_dimensions", full);

    let mut capped = Measures {
        findings: Some(FindingCounts {
            error: 5,
            total: 5,
            ..FindingCounts::default()
        }),
        ..Measures::default()
    };
    capped.coverage = Some(CoverageTotals {
        lines: Ratio::new(80, 100),
        branches: None,
        files: 1,
    });
    let s = score(&capped);
    assert_eq!(s.value, 54.0); // 100 - 40 (capped from 50) - 0.3 × 20
    insta::assert_json_snapshot!("score_capped_no_tests", s);
}

#[test]
fn a_failing_condition_names_itself_and_its_values() {
    let m = measures();
    let s = score(&m).value;
    let results = conditions(
        &[
            "findings.error == 0 && coverage >= 80".into(),
            "tests.failed <= 2".into(),
            "rules[\"B602\"] == 0".into(),
            "score >= 85".into(),
            "findings.eror == 0".into(),
        ],
        &m,
        s,
    );
    let described: Vec<String> = results.iter().map(|r| r.describe()).collect();
    insta::assert_json_snapshot!("conditions_described", described);
    assert_eq!(
        described[0],
        "`findings.error == 0 && coverage >= 80` is false (findings.error = 2, coverage = 85.0)"
    );
    assert!(results[1].passed);

    // A condition on a dimension without input says so instead of reading a zero.
    let only_tests = Measures {
        tests: m.tests,
        ..Measures::default()
    };
    let r = conditions(&["coverage >= 80".into()], &only_tests, 100.0);
    assert!(!r[0].passed);
    assert!(
        r[0].describe()
            .ends_with("(not measured: no `coverage` input)"),
        "{}",
        r[0].describe()
    );
}
