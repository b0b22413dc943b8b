//! `profiler record --profile heap` against real Go programs on Go 1.19,
//! 1.21, 1.22 and 1.23, plain and stripped (`-s -w`): the workload
//! (`tests/workloads/heapsites`) holds a known number of bytes at two
//! sites, drops garbage at a third, runs two GCs, prints its ground truth
//! and writes its own `runtime/pprof` heap profile; the profiler then
//! reads the runtime's buckets from outside. Per site, the in-use bytes
//! must equal runtime/pprof's (the same counters, read at a moment when the
//! program no longer allocates) and be within 10% of what the program
//! holds. Run with `cargo test -p tests --test heap -- --test-threads=1`.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use integration_tests::{gobuild, *};

/// Sum of sample type `index` by leaf function (the innermost line of the
/// first location).
fn by_leaf(p: &diff::pprof::proto::Profile, type_name: &str) -> HashMap<String, i64> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let index = p
        .sample_type
        .iter()
        .position(|t| s(t.r#type) == type_name)
        .unwrap_or_else(|| panic!("no sample type {type_name}"));
    let funcs: HashMap<u64, String> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, &diff::pprof::proto::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let mut out = HashMap::new();
    for smp in &p.sample {
        let leaf = smp
            .location_id
            .first()
            .and_then(|id| locs[id].line.first())
            .map(|l| funcs[&l.function_id].clone())
            .unwrap_or_default();
        *out.entry(leaf).or_insert(0) += smp.value[index];
    }
    out
}

fn comments(p: &diff::pprof::proto::Profile) -> String {
    p.comment
        .iter()
        .map(|c| p.string_table[*c as usize].clone())
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(bin: &Path, label: &str, stripped: bool) {
    let dir = TempDir::new("heap");
    let go_heap = dir.join("go-heap.pb.gz");
    let ours = dir.join("heap.pb.gz");
    // Go draws each P's first sampling interval at the default rate (mean
    // 512 KiB) before main sets the 8 KiB one: the warm-up spends it, and
    // one P keeps the goroutine on the cache it warmed. Without them a hold
    // can lose a stale interval's worth of objects in Go's own profile as in
    // ours (seen: 6.4 of 8 MiB at main.holdB, both readings equal).
    let mut child = Owned::spawn(
        Command::new(bin)
            .args(["-memprofilerate", "8192", "-duration", "60s"])
            .args(["-warmup", "16777216", "-heap-out"])
            .arg(&go_heap)
            .env("GOMAXPROCS", "1")
            .stdout(Stdio::piped()),
    );
    let out = child.0.stdout.take().unwrap();
    let mut held: HashMap<String, i64> = HashMap::new();
    for l in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(rest) = l.strip_prefix("held ") {
            let (site, n) = rest.split_once('=').unwrap();
            held.insert(site.to_string(), n.parse().unwrap());
        }
        if l == "ready" {
            break;
        }
    }
    assert_eq!(held.len(), 2, "{label}: the workload's ground truth");
    let pid = child.pid().to_string();
    let r = record(&[
        "--profile",
        "heap",
        "--pid",
        &pid,
        "--duration",
        "1500ms",
        "-o",
        ours.to_str().unwrap(),
    ]);
    assert!(
        r.status.success(),
        "{label}: profiler failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let p = read_pprof(&ours);
    let g = read_pprof(&go_heap);
    let text = comments(&p);
    let source = if stripped {
        "addresses from code"
    } else {
        "addresses from symtab"
    };
    assert!(
        text.contains(source),
        "{label}: {source}; comments:\n{text}"
    );
    assert!(
        text.contains("runtime.MemProfileRate=8192"),
        "{label}: the rate read from the target; comments:\n{text}"
    );
    let ours_inuse = by_leaf(&p, "inuse_space");
    let go_inuse = by_leaf(&g, "inuse_space");
    for (site, bytes) in &held {
        let o = ours_inuse.get(site).copied().unwrap_or(0);
        let gv = go_inuse.get(site).copied().unwrap_or(0);
        eprintln!("{label}: {site}: held {bytes}, ours {o}, runtime/pprof {gv}");
        assert!(
            (o - gv).abs() as f64 <= 0.005 * gv as f64,
            "{label}: {site}: ours {o} vs runtime/pprof {gv}"
        );
        assert!(
            (o - bytes).abs() as f64 <= 0.10 * *bytes as f64,
            "{label}: {site}: in-use {o} vs {bytes} held"
        );
    }
    // Garbage: allocated (64 MiB) but not in use.
    let alloc = by_leaf(&p, "alloc_space");
    let churn_alloc = alloc.get("main.churn").copied().unwrap_or(0);
    let churn_inuse = ours_inuse.get("main.churn").copied().unwrap_or(0);
    assert!(
        churn_alloc > 48 << 20 && churn_inuse < 2 << 20,
        "{label}: main.churn allocated {churn_alloc}, in use {churn_inuse}"
    );
    // go tool pprof reads it, inuse_space by default.
    let out = Command::new(go_bin())
        .args(["tool", "pprof", "-top"])
        .arg(&ours)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && top.contains("Type: inuse_space") && top.contains("main.holdA"),
        "{label}: go tool pprof -top:\n{top}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn heap_inuse_matches_runtime_pprof_and_ground_truth() {
    if !can_run_ebpf("heap_inuse_matches_runtime_pprof_and_ground_truth") {
        return;
    }
    for &v in gobuild::GO_VERSIONS {
        for stripped in [false, true] {
            let Some(bin) = gobuild::build("heapsites", v, stripped) else {
                continue;
            };
            let label = format!("Go {v}{}", if stripped { " stripped" } else { "" });
            check(&bin, &label, stripped);
        }
    }
}

/// A program whose heap keeps growing (an unbounded cache) shows the
/// growth at its site, and its in-use trend is positive.
#[test]
fn heap_growth_is_named_at_its_site() {
    if !can_run_ebpf("heap_growth_is_named_at_its_site") {
        return;
    }
    let Some(bin) = gobuild::build("heapsites", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("heapgrow");
    let ours = dir.join("heap.pb.gz");
    let mut child = Owned::spawn(
        Command::new(&bin)
            .args([
                "-memprofilerate",
                "65536",
                "-site-a",
                "1048576",
                "-site-b",
                "1048576",
                "-grow",
                "8388608",
                "-duration",
                "60s",
            ])
            .stdout(Stdio::piped()),
    );
    let out = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines().map_while(Result::ok);
    assert!(lines.any(|l| l == "ready"), "workload did not start");
    let pid = child.pid().to_string();
    let r = record(&[
        "--profile",
        "heap",
        "--pid",
        &pid,
        "--duration",
        "3s",
        "-o",
        ours.to_str().unwrap(),
    ]);
    assert!(r.status.success());
    let stderr = String::from_utf8_lossy(&r.stderr);
    let p = read_pprof(&ours);
    let inuse = by_leaf(&p, "inuse_space");
    let cache = inuse.get("main.growCache").copied().unwrap_or(0);
    // ~8 MiB/s for >= 3 s before the last read (the reads start after
    // "ready"; the cache grows from then on).
    assert!(cache > 16 << 20, "main.growCache in use: {cache}");
    let growth_line = stderr
        .lines()
        .find(|l| l.contains("in-use growth") && l.contains("main.growCache"))
        .unwrap_or_else(|| panic!("no growth line naming main.growCache: {stderr}"));
    eprintln!("{growth_line}");
    let trend = stderr
        .lines()
        .find(|l| l.contains("trend"))
        .expect("trend line");
    assert!(trend.contains("trend +"), "positive trend: {trend}");
}
