//! Exact counts from the first instruction: `profiler record` holds the
//! command it launches before `exec` until the CPU sampler and every uprobe
//! are attached, so a program that calls `main.(*apiClient).list` 1,600
//! times in its first milliseconds is counted 1,600 times, on Go 1.19,
//! 1.21, 1.22 and 1.23, plain and stripped (`-ldflags=-s -w`).

use integration_tests::{gobuild, *};

fn printed(stdout: &str, key: &str) -> i64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("the workload printed no {key}: {stdout}"))
        .trim()
        .parse()
        .unwrap()
}

fn check(version: &str, stripped: bool) {
    let Some(bin) = gobuild::build("exactcalls", version, stripped) else {
        return;
    };
    assert_eq!(gobuild::is_stripped(&bin), stripped, "{}", bin.display());
    let dir = TempDir::new("exact");
    let out = dir.join("calls.pb.gz");
    let r = record(&[
        "--profile",
        "calls",
        "--count",
        "main.(*apiClient).list",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-calls",
        "1600",
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "profiler failed: {stderr}");
    let truth = printed(&stdout, "calls=");
    assert_eq!(truth, 1600);
    let p = read_pprof(&out);
    let flat = flatten(&p);
    let counted: i64 = flat
        .iter()
        .filter(|s| {
            s.frames
                .first()
                .is_some_and(|f| f.0 == "main.(*apiClient).list")
        })
        .map(|s| s.count)
        .sum();
    assert_eq!(
        counted,
        truth,
        "Go {version}{}: counted {counted} of {truth} calls; stderr: {stderr}",
        if stripped { " stripped" } else { "" }
    );
    assert_eq!(total(&flat), truth, "profile total");
    let comments: Vec<&str> = p
        .comment
        .iter()
        .map(|&i| p.string_table[i as usize].as_str())
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("before the command started")),
        "the profile says the probes were attached before the start: {comments:?}"
    );
    assert!(
        !comments.iter().any(|c| c.contains("are not counted")),
        "no 'events before attach were not counted' comment for a launched command: {comments:?}"
    );
}

#[test]
fn exact_counts_from_the_first_instruction_all_go_versions() {
    if !can_run_ebpf("exact_counts_from_the_first_instruction_all_go_versions") {
        return;
    }
    for v in gobuild::GO_VERSIONS {
        for stripped in [false, true] {
            check(v, stripped);
        }
    }
}
