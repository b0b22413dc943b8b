//! Culprit attribution and the compositional scale on real Go CPU profiles
//! (`tests/data/gate/culprit/`, see its README): the gate fails a
//! regression any person sees in `go tool pprof -top -cum`, names the
//! function that changed first, does not call unchanged functions
//! `improved`, and passes A/A comparisons.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gate/culprit")
}

/// `profdiff gate -b <base> -c <cand> --json - [extra]`: (exit code, JSON).
fn gate(base: &str, cand: &str, extra: &[&str]) -> (i32, Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_profdiff"))
        .args(["gate", "-b", base, "-c", cand, "--json", "-"])
        .args(extra)
        .current_dir(data())
        .output()
        .expect("run profdiff");
    let code = o.status.code().expect("exit code");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (code, v)
}

fn text(base: &str, cand: &str, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_profdiff"))
        .args(["gate", "-b", base, "-c", cand])
        .args(extra)
        .current_dir(data())
        .env_remove("NO_COLOR")
        .output()
        .expect("run profdiff");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn culprits(v: &Value) -> &Vec<Value> {
    v["culprits"].as_array().expect("culprits array")
}

/// The `crypto/sha256.block` row of the report's top table.
fn sha256_in_top(v: &Value) -> &Value {
    v["top"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["function"] == "crypto/sha256.block")
        .expect("sha256 in the top table")
}

fn findings(v: &Value) -> &Vec<Value> {
    v["findings"].as_array().expect("findings array")
}

/// Functions whose work per item is the same in every mode.
const UNCHANGED: &[&str] = &[
    "main.hashItem",
    "crypto/sha256.block",
    "main.sortItems",
    "main.buildStatus",
];

fn assert_unchanged_not_judged(v: &Value, case: &str) {
    for f in findings(v) {
        let name = f["function"].as_str().unwrap();
        let verdict = f["verdict"].as_str().unwrap();
        if UNCHANGED.contains(&name) {
            assert!(
                verdict != "fail" && verdict != "improved",
                "{case}: unchanged {name} reported {verdict}: {f}"
            );
        }
    }
}

#[test]
fn culprit_names_the_function_that_changed_per_call_formatting() {
    let (code, v) = gate("base", "sprintf", &[]);
    assert_eq!(code, 1, "{v}");
    let c = culprits(&v);
    assert_eq!(c[0]["kind"], "frame", "{v:#}");
    assert_eq!(c[0]["function"], "main.auditTrail", "{:#}", c[0]);
    assert_eq!(c[0]["verdict"], "fail");
    // The new edge into the library follows its culprit.
    assert_eq!(c[1]["kind"], "new_edge", "{:#}", c[1]);
    assert_eq!(c[1]["caller"], "main.auditTrail");
    assert_eq!(c[1]["callee"], "fmt.Sprintf");
    // Root -> culprit path, culprit last, each frame's inclusive delta.
    let path = c[0]["path"].as_array().unwrap();
    assert_eq!(path.last().unwrap()["function"], "main.auditTrail");
    assert!(path.iter().any(|s| s["function"] == "main.reconcile"));
    assert!(path.iter().all(|s| s["delta"].as_f64().unwrap() > 0.0));
    assert_eq!(c[0]["explained_by"][0]["function"], "fmt.Sprintf");
    // The top finding is the culprit, not a library leaf.
    let top = &findings(&v)[0];
    assert_eq!(top["function"], "main.auditTrail", "{top:#}");
    assert_eq!(top["rule"], "default-cum-growth");
}

#[test]
fn culprit_names_the_caller_of_a_regexp_compiled_per_call() {
    let (code, v) = gate("base", "regexp", &[]);
    assert_eq!(code, 1, "{v}");
    let c = culprits(&v);
    assert_eq!(c[0]["function"], "main.matchOwner", "{:#}", c[0]);
    assert_eq!(c[1]["kind"], "new_edge");
    assert_eq!(c[1]["caller"], "main.matchOwner");
    assert_eq!(c[1]["callee"], "regexp.MustCompile");
    assert_eq!(findings(&v)[0]["function"], "main.matchOwner");
}

#[test]
fn culprit_names_the_function_made_quadratic() {
    let (code, v) = gate("base", "quad", &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(culprits(&v)[0]["function"], "main.dedupe", "{v:#}");
    assert_eq!(findings(&v)[0]["function"], "main.dedupe");
}

#[test]
fn ancestors_carrying_the_culprits_growth_are_not_separate_findings() {
    let (_, v) = gate("base", "sprintf", &[]);
    for f in findings(&v) {
        if f["rule"] == "default-cum-growth" {
            let name = f["function"].as_str().unwrap();
            assert!(
                name != "main.main" && name != "main.reconcile" && name != "fmt.Sprintf",
                "growth listed again along the culprit's path: {f}"
            );
        }
    }
}

#[test]
fn no_improved_or_fail_for_unchanged_functions() {
    for case in ["sprintf", "regexp", "quad"] {
        let (_, v) = gate("base", case, &[]);
        assert_eq!(v["size_factor"]["method"], "reference", "{case}");
        assert!(
            v["scale"].as_str().unwrap().starts_with("compositional"),
            "{case}: {}",
            v["scale"]
        );
        assert_unchanged_not_judged(&v, case);
        if case != "quad" {
            // Nothing was removed in these two: no improvement at all.
            assert!(
                findings(&v).iter().all(|f| f["verdict"] != "improved"),
                "{case}: {:#}",
                v["findings"]
            );
        }
    }
}

#[test]
fn share_scale_reports_unchanged_functions_as_shrinking() {
    // The reason for the compositional default: on plain shares the
    // regression dilutes everything else.
    let (_, v) = gate("base", "sprintf", &["--normalize", "share"]);
    assert_eq!(v["scale"], "share");
    let sha = sha256_in_top(&v);
    assert!(
        sha["flat"]["candidate"].as_f64().unwrap()
            < 0.5 * sha["flat"]["baseline"].as_f64().unwrap(),
        "{sha}"
    );
    let (_, v) = gate("base", "sprintf", &[]);
    let sha = sha256_in_top(&v);
    let (b, c) = (
        sha["flat"]["baseline"].as_f64().unwrap(),
        sha["flat"]["candidate"].as_f64().unwrap(),
    );
    assert!((c / b - 1.0).abs() < 0.3, "compositional: {b} -> {c}");
}

#[test]
fn a_a_comparisons_pass() {
    let (code, v) = gate("base", "base2", &[]);
    assert_eq!(code, 0, "{:#}", v["findings"]);
    assert!(culprits(&v).is_empty(), "{:#}", v["culprits"]);
    for (b, c) in [
        ("base/r1.pb.gz", "base2/r4.pb.gz"),
        ("base/r2.pb.gz", "base2/r5.pb.gz"),
        ("base/r3.pb.gz", "base2/r6.pb.gz"),
    ] {
        let (code, v) = gate(b, c, &[]);
        assert_eq!(code, 0, "{b} vs {c}: {:#}", v["findings"]);
    }
}

#[test]
fn every_report_shows_the_scale_and_the_culprit_path() {
    let out = text("base", "sprintf", &[]);
    assert!(out.contains("\nscale: compositional ("), "{out}");
    assert!(out.contains("culprits (inclusive values"), "{out}");
    assert!(out.contains("└ main.auditTrail   <- culprit"), "{out}");
    assert!(out.contains("of which fmt.Sprintf"), "{out}");
    let md = text("base", "sprintf", &["--markdown", "-"]);
    assert!(md.contains("**Culprits**"), "{md}");
    assert!(md.contains("└ main.auditTrail"), "{md}");
    assert!(md.contains("Scale: compositional ("), "{md}");
    let xml = text("base", "sprintf", &["--junit", "-"]);
    assert!(
        xml.contains("<property name=\"scale\" value=\"compositional ("),
        "{xml}"
    );
    assert!(
        xml.contains("<property name=\"culprit.1\" value=\"main.auditTrail"),
        "{xml}"
    );
    let share = text("base", "sprintf", &["--normalize", "share"]);
    assert!(share.contains("\nscale: share\n"), "{share}");
}

#[test]
fn gate_refuses_rate_scale_with_a_one_line_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_profdiff"))
        .args(["gate", "-b", "base", "-c", "sprintf", "--normalize", "rate"])
        .current_dir(data())
        .output()
        .expect("run profdiff");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--normalize rate"), "{err}");
}
