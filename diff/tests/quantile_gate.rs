//! `kind = "quantile"` budget rules on latency profiles (the shape
//! `profiler record --profile latency` writes: samples `calls/count` and
//! `latency/nanoseconds` per stack and bucket, label `latency_bucket_ns`),
//! through the `profdiff gate` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use diff::{Frame, FrameKind, LabelValue, Profile, Sample, ValueType};

const FUNC: &str = "main.(*reconciler).Reconcile";

/// A latency profile: for each (lower bound, calls) one sample whose leaf
/// is `FUNC` (called from main.main).
fn latency_profile(buckets: &[(u64, i64)]) -> Profile {
    let mut p = Profile {
        sample_types: vec![
            ValueType {
                kind: "calls".into(),
                unit: "count".into(),
            },
            ValueType {
                kind: "latency".into(),
                unit: "nanoseconds".into(),
            },
        ],
        default_sample_type: Some("latency".into()),
        ..Default::default()
    };
    let frame = |name: &str| Frame {
        function: name.into(),
        file: "main.go".into(),
        line: 1,
        inlined: false,
        kind: FrameKind::User,
        mapping: String::new(),
        address: 0,
    };
    let leaf = p.intern_frame(frame(FUNC));
    let root = p.intern_frame(frame("main.main"));
    for &(lo, n) in buckets {
        p.samples.push(Sample {
            stack: vec![leaf, root],
            values: vec![n, n * lo as i64],
            labels: vec![("latency_bucket_ns".into(), LabelValue::Str(lo.to_string()))],
        });
    }
    p
}

fn write(dir: &Path, name: &str, p: &Profile) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, diff::pprof::encode_gzip(p)).unwrap();
    f
}

fn gate(base: &[Profile], cand: &[Profile], budgets: &str, tag: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("profdiff-quantile-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (i, p) in base.iter().enumerate() {
        write(&dir.join("base"), &format!("run{i}.pb.gz"), p);
    }
    for (i, p) in cand.iter().enumerate() {
        write(&dir.join("cand"), &format!("run{i}.pb.gz"), p);
    }
    std::fs::write(dir.join("budgets.toml"), budgets).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_profdiff"))
        .args(["gate", "-b"])
        .arg(dir.join("base"))
        .arg("-c")
        .arg(dir.join("cand"))
        .arg("--budgets")
        .arg(dir.join("budgets.toml"))
        .arg("--json")
        .arg(dir.join("gate.json"))
        .output()
        .expect("run profdiff");
    let json = std::fs::read_to_string(dir.join("gate.json")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}\n{}\n{json}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

const BUDGETS: &str = r#"
[settings]
default_rule = false

[[rule]]
name = "reconcile-p99"
kind = "quantile"
function = '\.Reconcile$'
quantile = "p99"
max = "10s"
max_growth_percent = 20.0
"#;

// 2 ms, 6 ms and 20 ms buckets (lower bounds of the producer's buckets).
const MS2: u64 = 1_966_080;
const MS6: u64 = 5_898_240;
const MS20: u64 = 19_922_944;
const MS60: u64 = 58_720_256;

#[test]
fn p99_growth_fails_the_gate_and_names_the_function() {
    let base: Vec<Profile> = (0..3)
        .map(|_| latency_profile(&[(MS2, 700), (MS6, 280), (MS20, 20)]))
        .collect();
    // Same median, but 5% of calls now wait for a synchronous API call.
    let cand: Vec<Profile> = (0..3)
        .map(|_| latency_profile(&[(MS2, 700), (MS6, 250), (MS60, 50)]))
        .collect();
    let (code, out) = gate(&base, &cand, BUDGETS, "grow");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("reconcile-p99") && out.contains(FUNC), "{out}");
    assert!(out.contains("\"kind\": \"quantile\""), "{out}");
}

#[test]
fn unchanged_latency_passes() {
    let base: Vec<Profile> = (0..3)
        .map(|_| latency_profile(&[(MS2, 700), (MS6, 280), (MS20, 20)]))
        .collect();
    let cand: Vec<Profile> = (0..3)
        .map(|_| latency_profile(&[(MS2, 690), (MS6, 290), (MS20, 20)]))
        .collect();
    let (code, out) = gate(&base, &cand, BUDGETS, "same");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_ceiling_breach_fails_even_without_growth() {
    let prof = latency_profile(&[(MS2, 50), (MS20, 50)]);
    let budgets = r#"
[settings]
default_rule = false
[[rule]]
name = "p50-ceiling"
kind = "quantile"
function = 'Reconcile$'
quantile = 0.5
max = "1ms"
"#;
    let (code, out) = gate(
        std::slice::from_ref(&prof),
        std::slice::from_ref(&prof),
        budgets,
        "ceiling",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("above the ceiling"), "{out}");
}

#[test]
fn too_few_calls_is_inconclusive() {
    let base = latency_profile(&[(MS2, 5)]);
    let cand = latency_profile(&[(MS60, 5)]);
    let (code, out) = gate(&[base], &[cand], BUDGETS, "few");
    assert_eq!(code, 3, "{out}");
}

#[test]
fn bad_quantile_rules_name_the_line() {
    let prof = latency_profile(&[(MS2, 50)]);
    for (bad, why) in [
        (
            "[[rule]]\nkind = \"quantile\"\nfunction = 'x'\nmax = \"1s\"\n",
            "needs `quantile`",
        ),
        (
            "[[rule]]\nkind = \"quantile\"\nfunction = 'x'\nquantile = \"p150\"\nmax = \"1s\"\n",
            "quantile must be",
        ),
        (
            "[[rule]]\nkind = \"quantile\"\nfunction = 'x'\nquantile = \"p99\"\n",
            "needs max and/or max_growth_percent",
        ),
    ] {
        let (code, out) = gate(
            std::slice::from_ref(&prof),
            std::slice::from_ref(&prof),
            bad,
            "bad",
        );
        assert_eq!(code, 2, "{out}");
        assert!(out.contains(why) && out.contains("budgets.toml:"), "{out}");
    }
}
