//! `profiler record --profile contention` against Go's own block profile:
//! the `lockwait` workload (built here with Go 1.19, 1.21, 1.22, 1.23 and a
//! stripped `-s -w` 1.23 binary) turns on `runtime.SetBlockProfileRate(1)`
//! and writes its block profile at the end, the ground truth. The waits
//! under the waiting function must agree within 10% in total delay and in
//! count, for `sync.Mutex` (`main.contend`) and for `sync.RWMutex` readers
//! (`main.reader`).

use std::process::Command;

use integration_tests::{apisim, gobuild, *};

/// Sum of `kind` and of `contentions` over the samples under `func`.
fn under(p: &diff::pprof::proto::Profile, kind: &str, func: &str) -> (i64, i64) {
    (
        value_under(p, kind, func),
        value_under(p, "contentions", func),
    )
}

fn within(what: &str, ours: i64, truth: i64, tol: f64) {
    let rel = (ours - truth) as f64 / truth.max(1) as f64;
    eprintln!("{what}: ours {ours}, Go's {truth} ({:+.1}%)", rel * 100.0);
    assert!(
        rel.abs() <= tol,
        "{what}: ours {ours} vs Go's {truth}: {:+.1}% (limit ±{:.0}%)",
        rel * 100.0,
        tol * 100.0
    );
}

fn matches_block_profile(version: &str, stripped: bool, mode: &str, func: &str) {
    let test = format!("contention_{version}_{mode}");
    if !can_run_ebpf(&test) {
        return;
    }
    let Some(bin) = gobuild::build("lockwait", version, stripped) else {
        return;
    };
    let dir = TempDir::new("contention");
    let ours = dir.join("contention.pb.gz");
    let truth = dir.join("block.pb.gz");
    let r = record(&[
        "--profile",
        "contention",
        "-o",
        ours.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-mode",
        mode,
        "-workers",
        "4",
        "-hold",
        "1ms",
        // Probes attach while the workload waits, so no wait is missed.
        "-start-delay",
        "1s",
        "-duration",
        "3s",
        "-block-profile",
        truth.to_str().unwrap(),
    ]);
    assert!(
        r.status.success(),
        "profiler failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let p = read_pprof(&ours);
    let g = read_pprof(&truth);
    let (our_delay, our_count) = under(&p, "delay", func);
    let (go_delay, go_count) = under(&g, "delay", func);
    assert!(go_count > 100, "too few waits in Go's profile: {go_count}");
    within(
        &format!("{test}: delay under {func}"),
        our_delay,
        go_delay,
        0.10,
    );
    within(
        &format!("{test}: waits under {func}"),
        our_count,
        go_count,
        0.10,
    );
    // The waiter's stack runs through the runtime's semaphore to the lock.
    let s = |i: i64| p.string_table[i as usize].as_str();
    let names: Vec<&str> = p.function.iter().map(|f| s(f.name)).collect();
    assert!(names.contains(&"runtime.semacquire1"), "{names:?}");
    assert_eq!(s(p.sample_type[1].r#type), "delay");
    assert_eq!(s(p.sample_type[1].unit), "nanoseconds");
    assert_eq!(go_pprof_total(&ours).map(|t| t > 0), Some(true));
}

#[test]
fn contention_matches_go_block_profile_go119() {
    matches_block_profile("1.19", false, "mutex", "main.contend");
}

#[test]
fn contention_matches_go_block_profile_go121() {
    matches_block_profile("1.21", false, "mutex", "main.contend");
}

#[test]
fn contention_matches_go_block_profile_go122() {
    matches_block_profile("1.22", false, "mutex", "main.contend");
}

#[test]
fn contention_matches_go_block_profile_go123() {
    matches_block_profile("1.23", false, "mutex", "main.contend");
}

#[test]
fn contention_matches_go_block_profile_stripped_go123() {
    matches_block_profile("1.23", true, "mutex", "main.contend");
}

#[test]
fn contention_rwmutex_readers_match_go_block_profile() {
    matches_block_profile("1.23", false, "rwmutex", "main.reader");
}

/// `record --profile contention,latency --latency '*.Reconcile'`: the
/// contention profile carries the timed Reconcile calls as sample type
/// `reconciles/count` (equal to the latency profile's calls of Reconcile),
/// so `lock-wait-per-reconcile` in budgets/go-controller.toml applies; on
/// the workbench's `global-mutex` variant (every Reconcile behind one lock,
/// across its API round trip) it fails.
#[test]
fn contention_carries_reconciles_and_the_per_reconcile_budget_fails_global_mutex() {
    let test = "contention_carries_reconciles";
    if !can_run_ebpf(test) {
        return;
    }
    let (_srv, addr, _out) = apisim::start(&[]);
    let dir = TempDir::new("contention-reconciles");
    let out_dir = dir.join("profiles");
    let server = format!("http://{addr}");
    let r = record(&[
        "--profile",
        "contention,latency",
        "--latency",
        "*.Reconcile",
        "-o",
        out_dir.to_str().unwrap(),
        "--",
        workload("controller-sim").to_str().unwrap(),
        "-server",
        &server,
        "-duration",
        "4s",
        "-variant",
        "global-mutex",
    ]);
    assert!(
        r.status.success(),
        "profiler failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let contention = out_dir.join("contention.pb.gz");
    let p = read_pprof(&contention);
    let l = read_pprof(&out_dir.join("latency.pb.gz"));
    let reconcile = "main.(*WidgetReconciler).Reconcile";
    let timed = value_under(&l, "calls", reconcile);
    let s = |i: i64| p.string_table[i as usize].as_str();
    let k = p
        .sample_type
        .iter()
        .position(|t| s(t.r#type) == "reconciles" && s(t.unit) == "count")
        .expect("sample type reconciles/count");
    let counted: i64 = p.sample.iter().map(|smp| smp.value[k]).sum();
    eprintln!("{test}: {counted} reconciles in the contention profile, {timed} timed");
    assert!(timed > 100, "too few reconciles timed: {timed}");
    assert_eq!(counted, timed);
    let delay = value_under(&p, "delay", reconcile);
    assert!(delay > 0, "no lock wait under {reconcile}");

    let json_path = dir.join("gate.json");
    let o = Command::new(profdiff_bin())
        .arg("gate")
        .arg("-b")
        .arg(&contention)
        .arg("-c")
        .arg(&contention)
        .arg("--budgets")
        .arg(root().join("budgets/go-controller.toml"))
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("running profdiff");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("gate JSON")).unwrap();
    let rule = doc["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == "lock-wait-per-reconcile")
        .expect("rule lock-wait-per-reconcile in the report");
    assert_eq!(rule["applicable"], true, "{rule}");
    assert_eq!(rule["verdict"], "fail", "{rule}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "gate: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(go_pprof_total(&contention).map(|t| t > 0), Some(true));
}
