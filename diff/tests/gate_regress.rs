//! The gate on recordings of the regression suite's workload that an
//! earlier gate got wrong (`tests/data/gate/regress/`, see its README): a
//! changed function with almost no baseline samples is the culprit, not
//! the caller that began calling it, and a culprit whose growth the first
//! pass judged inconclusive still sets the compositional scale.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn data(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gate/regress")
        .join(set)
}

/// `profdiff gate -b <set>/base -c <set>/cand --json -`: (exit code, JSON).
fn gate(set: &str) -> (i32, Value) {
    let dir = data(set);
    let o = Command::new(env!("CARGO_BIN_EXE_profdiff"))
        .arg("gate")
        .arg("-b")
        .arg(dir.join("base"))
        .arg("-c")
        .arg(dir.join("cand"))
        .args(["--json", "-"])
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

/// Per-item functions of the workload other than `changed`: their work
/// per item is the same on both sides.
fn unchanged(changed: &str) -> Vec<&'static str> {
    [
        "main.refreshStatus",
        "main.computeHash",
        "main.classify",
        "main.buildEvents",
        "main.matchOwner",
        "main.dedupeRefs",
        "main.auditTrail",
        "main.patchStatus",
    ]
    .into_iter()
    .filter(|f| *f != changed)
    .collect()
}

/// No `main.*` function is reported improved (the candidate does more
/// work per item, nothing less), and no unchanged per-item function fails.
fn assert_no_false_verdicts(v: &Value, changed: &str) {
    let same = unchanged(changed);
    for f in v["findings"].as_array().unwrap() {
        let name = f["function"].as_str().unwrap_or("");
        let verdict = f["verdict"].as_str().unwrap_or("");
        assert!(
            !(name.starts_with("main.") && verdict == "improved"),
            "{name} reported improved: {f}"
        );
        assert!(
            !(same.contains(&name) && verdict == "fail"),
            "unchanged {name} reported fail: {f}"
        );
    }
}

fn assert_new_function_is_the_culprit(set: &str) {
    let (code, v) = gate(set);
    assert_eq!(code, 1, "{v:#}");
    let c = v["culprits"].as_array().unwrap();
    assert_eq!(c[0]["kind"], "frame", "{:#}", c[0]);
    assert_eq!(c[0]["function"], "main.buildEvents", "{:#}", c[0]);
    // The new call is still reported, right after its culprit.
    assert_eq!(c[1]["kind"], "new_edge", "{:#}", c[1]);
    assert_eq!(c[1]["caller"], "main.reconcile");
    assert_eq!(c[1]["callee"], "main.buildEvents");
    let path: Vec<&str> = c[0]["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["function"].as_str().unwrap())
        .collect();
    assert!(
        path.ends_with(&["main.reconcile", "main.buildEvents"]),
        "{path:?}"
    );
    assert_eq!(v["findings"][0]["function"], "main.buildEvents");
    assert_eq!(v["size_factor"]["method"], "reference");
    assert!(v["size_factor"]["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "main.buildEvents"));
    assert_no_false_verdicts(&v, "main.buildEvents");
}

#[test]
fn a_function_new_to_the_profile_is_the_culprit_not_its_caller_ebpf() {
    assert_new_function_is_the_culprit("alloc-ebpf");
}

#[test]
fn a_function_new_to_the_profile_is_the_culprit_not_its_caller_pprof() {
    assert_new_function_is_the_culprit("alloc-pprof");
}

#[test]
fn an_inconclusive_first_culprit_still_sets_the_scale() {
    let (code, v) = gate("quad-ebpf");
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["culprits"][0]["function"], "main.dedupeRefs", "{v:#}");
    let sf = &v["size_factor"];
    assert_eq!(sf["method"], "reference", "{sf}");
    // The candidate does more work per item: its total per unit of work
    // grew, so the factor is below 1.
    let factor = sf["factor"].as_f64().unwrap();
    assert!(factor < 1.0, "{sf}");
    assert_no_false_verdicts(&v, "main.dedupeRefs");
}
