//! `profiler record --profile contention` against Go's own block profile:
//! the `lockwait` workload (built here with Go 1.19, 1.21, 1.22, 1.23 and a
//! stripped `-s -w` 1.23 binary) turns on `runtime.SetBlockProfileRate(1)`
//! and writes its block profile at the end, the ground truth. The waits
//! under the waiting function must agree within 10% in total delay and in
//! count, for `sync.Mutex` (`main.contend`) and for `sync.RWMutex` readers
//! (`main.reader`).

use std::{collections::HashMap, path::PathBuf, process::Command};

use integration_tests::*;

fn go_tool(version: &str) -> Option<PathBuf> {
    let p = PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
    if p.exists() {
        return Some(p);
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "Go {version} missing at {}",
        p.display()
    );
    eprintln!("Go {version} missing: skipped");
    None
}

/// Build `tests/workloads/lockwait` with Go `version` (stripped with
/// `-s -w` if asked) under target/ and return the binary.
fn build(version: &str, stripped: bool) -> Option<PathBuf> {
    let go = go_tool(version)?;
    let out_dir = root().join("target/lock-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!(
        "lockwait-{version}{}",
        if stripped { "-stripped" } else { "" }
    ));
    let mut cmd = Command::new(&go);
    cmd.current_dir(root().join("tests/workloads"))
        .env("GOCACHE", root().join("target/gocache-lock-tests"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .arg("build")
        .arg("-o")
        .arg(&out);
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg("./lockwait");
    let st = cmd.status().expect("running go build");
    assert!(st.success(), "go build ./lockwait with Go {version} failed");
    Some(out)
}

/// Sum of sample type `kind` (by name) and of `contentions` over samples
/// whose stack has a function named exactly `func`.
fn under(p: &diff::pprof::proto::Profile, kind: &str, func: &str) -> (i64, i64) {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let idx = |name: &str| {
        p.sample_type
            .iter()
            .position(|t| s(t.r#type) == name)
            .unwrap_or_else(|| panic!("no sample type {name}"))
    };
    let (v, c) = (idx(kind), idx("contentions"));
    let funcs: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, &diff::pprof::proto::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let mut total = (0, 0);
    for smp in &p.sample {
        let hit = smp.location_id.iter().any(|id| {
            locs[id]
                .line
                .iter()
                .any(|l| funcs.get(&l.function_id) == Some(&func))
        });
        if hit {
            total.0 += smp.value[v];
            total.1 += smp.value[c];
        }
    }
    total
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
    let Some(bin) = build(version, stripped) else {
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
