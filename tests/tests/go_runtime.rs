//! `profiler record --profile cpu,goroutines,allocs,calls` end to end: the
//! CLI launches a Go program (built here with Go 1.23, `GOCACHE` under
//! target/), writes one pprof per type into the `-o` directory, and
//! `go tool pprof` reads them. The detailed accuracy tests (both Go
//! versions, stripped binaries, allocation shares, probe cost) are in
//! `profiler-user/tests/go_runtime.rs`.

use integration_tests::{gobuild, *};

fn string(p: &diff::pprof::proto::Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

#[test]
fn record_cli_writes_go_runtime_profiles() {
    if !can_run_ebpf("record_cli_writes_go_runtime_profiles") {
        return;
    }
    let Some(bin) = gobuild::build("goruntime", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("goprofiles");
    let out = dir.join("out");
    let r = record(&[
        "--profile",
        "cpu,goroutines,allocs,calls",
        "--count",
        "main.counted*",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-calls",
        "20000",
        "-calls-delay",
        "1500ms",
        "-leak-rate",
        "20",
        "-leak-count",
        "40",
        "-start-delay",
        "1s",
        "-memprofilerate",
        "65536",
        "-alloc-a",
        "4194304",
        "-duration",
        "3s",
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "profiler failed: {stderr}");
    for kind in ["cpu", "goroutines", "allocs", "calls"] {
        let f = out.join(format!("{kind}.pb.gz"));
        assert!(f.exists(), "{} missing; stderr: {stderr}", f.display());
    }
    // calls: exact, and go tool pprof agrees.
    let printed: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("calls="))
        .expect("the workload printed calls=")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(printed, 20000);
    let calls = out.join("calls.pb.gz");
    let p = read_pprof(&calls);
    assert_eq!(string(&p, p.sample_type[0].r#type), "calls");
    let flat = flatten(&p);
    assert_eq!(total(&flat), printed, "calls profile total");
    assert_eq!(
        go_pprof_total(&calls),
        Some(printed),
        "go tool pprof total of calls"
    );
    // goroutines: the leak site holds the 40 leaked goroutines.
    let g = read_pprof(&out.join("goroutines.pb.gz"));
    let gflat = flatten(&g);
    let leak: i64 = gflat
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f.0 == "main.leakSite"))
        .map(|s| s.count)
        .sum();
    assert_eq!(leak, 40, "live goroutines created at main.leakSite");
    assert!(
        stderr.contains("main.leakSite"),
        "leak summary line: {stderr}"
    );
    // allocs: allocA's bytes are there, and the profile opens in pprof.
    let allocs = out.join("allocs.pb.gz");
    let a = read_pprof(&allocs);
    assert!(
        cum(&flatten(&a), "main.allocA") > 0,
        "allocA in the allocs profile"
    );
    assert!(go_pprof_total(&allocs).is_some_and(|t| t > 0));
}
