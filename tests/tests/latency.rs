//! `profiler record --profile latency`: call durations from an entry probe
//! and probes on every `RET`, paired per goroutine. The workload
//! (`tests/workloads/exactcalls`) times its own calls of
//! `main.(*reconciler).Reconcile` (70% 2 ms, 25% 6 ms, 5% 20 ms, sleeping)
//! and prints p50/p90/p99; the profiler's quantiles must be within 5%, on
//! Go 1.19, 1.21, 1.22 and 1.23, plain and stripped. A function with no
//! `RET` (it leaves through a tail call) is reported as not measurable.

use integration_tests::{gobuild, *};

const FUNC: &str = "main.(*reconciler).Reconcile";

fn printed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in: {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// `key=value` from the profiler's latency summary line of `FUNC`.
fn summary_field(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("latency: {FUNC}: n=")))
        .unwrap_or_else(|| panic!("no latency summary line for {FUNC}: {stderr}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

fn within(got: u64, want: u64, what: &str) {
    let err = (got as f64 - want as f64).abs() / want as f64;
    assert!(
        err <= 0.05,
        "{what}: profiler {got} ns vs the program's own {want} ns ({:.1}% off)",
        err * 100.0
    );
}

fn check(version: &str, stripped: bool) {
    let Some(bin) = gobuild::build("exactcalls", version, stripped) else {
        return;
    };
    let dir = TempDir::new("latency");
    let out = dir.join("latency.pb.gz");
    let n = 400u64;
    // Quantiles of 400 calls on a shared machine: one retry absorbs a run
    // where the program's own timing was disturbed more than ours.
    let mut last_err = String::new();
    for attempt in 0..2 {
        let r = record(&[
            "--profile",
            "latency",
            "--latency",
            FUNC,
            "-o",
            out.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
            "-calls",
            "10",
            "-latency-calls",
            &n.to_string(),
        ]);
        let stdout = String::from_utf8_lossy(&r.stdout).to_string();
        let stderr = String::from_utf8_lossy(&r.stderr).to_string();
        assert!(r.status.success(), "profiler failed: {stderr}");
        assert_eq!(printed(&stdout, "latency_n="), n);
        // Every call is paired: exact n, in the summary and the profile.
        assert_eq!(summary_field(&stderr, "n"), n, "{stderr}");
        let p = read_pprof(&out);
        let types: Vec<&str> = p
            .sample_type
            .iter()
            .map(|t| p.string_table[t.r#type as usize].as_str())
            .collect();
        assert_eq!(types, ["calls", "latency"]);
        let flat = flatten(&p);
        let calls: i64 = flat
            .iter()
            .filter(|s| s.frames.first().is_some_and(|f| f.0 == FUNC))
            .map(|s| s.count)
            .sum();
        assert_eq!(calls as u64, n, "calls in the latency profile");
        assert!(
            p.sample.iter().all(|s| s
                .label
                .iter()
                .any(|l| p.string_table[l.key as usize] == "latency_bucket_ns")),
            "every sample carries its bucket label"
        );
        let total_ns: i64 = p.sample.iter().map(|s| s.value[1]).sum();
        let mean = total_ns as u64 / n;
        assert_eq!(summary_field(&stderr, "mean_ns"), mean);
        let result = std::panic::catch_unwind(|| {
            for q in ["p50", "p90", "p99"] {
                within(
                    summary_field(&stderr, &format!("{q}_ns")),
                    printed(&stdout, &format!("latency_{q}_ns=")),
                    &format!("Go {version} stripped={stripped} {q}"),
                );
            }
        });
        match result {
            Ok(()) => return,
            Err(e) => {
                last_err = e.downcast_ref::<String>().cloned().unwrap_or_default();
                eprintln!("attempt {attempt}: {last_err}");
            }
        }
    }
    panic!("{last_err}");
}

#[test]
fn latency_quantiles_match_the_programs_own_timing_all_go_versions() {
    if !can_run_ebpf("latency_quantiles_match_the_programs_own_timing_all_go_versions") {
        return;
    }
    for v in gobuild::GO_VERSIONS {
        for stripped in [false, true] {
            check(v, stripped);
        }
    }
}

#[test]
fn a_function_without_ret_is_not_measurable() {
    if !can_run_ebpf("a_function_without_ret_is_not_measurable") {
        return;
    }
    let Some(bin) = gobuild::build("exactcalls", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("latency-tail");
    let out = dir.join("latency.pb.gz");
    // runtime.morestack_noctxt (assembly) is `MOVL $0, DX; JMP
    // runtime.morestack`: a tail call, no RET.
    let r = record(&[
        "--profile",
        "latency",
        "--latency",
        "runtime.morestack_noctxt*",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-calls",
        "10",
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "profiler failed: {stderr}");
    assert!(
        stderr.contains("runtime.morestack_noctxt")
            && stderr.contains("not measurable: no RET instruction (it leaves through a tail call"),
        "{stderr}"
    );
    let p = read_pprof(&out);
    assert!(p.sample.is_empty(), "nothing measured");
}

#[test]
fn latency_flags_need_each_other() {
    let r = record(&["--profile", "latency", "--", "/bin/true"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--latency SYMBOL"));
    let r = record(&["--latency", "x", "--", "/bin/true"]);
    assert_eq!(r.status.code(), Some(2));
}

#[test]
fn a_function_matched_by_two_patterns_is_probed_once() {
    if !can_run_ebpf("a_function_matched_by_two_patterns_is_probed_once") {
        return;
    }
    let Some(bin) = gobuild::build("exactcalls", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("latency-twice");
    let out = dir.join("latency.pb.gz");
    let n = 50u64;
    // Both patterns match Reconcile: probed twice, each call would be
    // entered twice (one entry overwritten) and its RET seen twice (one
    // unpaired).
    let r = record(&[
        "--profile",
        "latency",
        "--latency",
        FUNC,
        "--latency",
        "main.(*reconciler).Reconcil*",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-calls",
        "10",
        "-latency-calls",
        &n.to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout).to_string();
    let stderr = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(r.status.success(), "profiler failed: {stderr}");
    assert_eq!(printed(&stdout, "latency_n="), n);
    assert_eq!(summary_field(&stderr, "n"), n, "{stderr}");
    let p = read_pprof(&out);
    let counters = p
        .comment
        .iter()
        .map(|c| p.string_table[*c as usize].as_str())
        .find(|c| c.starts_with("go probe counters:"))
        .unwrap_or_else(|| panic!("no go probe counters comment"))
        .to_string();
    for k in ["latency_overwritten=0", "latency_unpaired=0"] {
        assert!(counters.split_whitespace().any(|w| w == k), "{counters}");
    }
}
