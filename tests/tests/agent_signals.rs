//! `profiler agent --profile latency|contention|offcpu|heap` end to end:
//! real eBPF (shared Go uprobes, the `sched_switch` program) in the real
//! kernel, Go workloads (built here with Go 1.23) in cgroups laid out like
//! kubelet's in a test-owned folder, the agent on loopback with 2 s
//! windows, and `profiler fetch`. Each test checks the merged range
//! against the workload's own ground truth, that the range merges the way
//! Go's tools would (histograms, waits and off-CPU time add up over
//! windows; the heap is the last window's snapshot), and that
//! `go tool pprof -top` reads the fetched file. Run one at a time:
//! `cargo test -p integration-tests --test agent_signals -- --test-threads=1`.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    agentrun::RunningAgent,
    can_run_ebpf, go_bin, go_pprof_total, gobuild,
    kubelet::{container_id, pod_ids, pod_uid, KubeletCgroups, Qos},
    read_pprof, wait_until, Owned, TempDir,
};
use profiler_pprof::proto::Profile;

/// The index of sample type `name`.
fn type_index(p: &Profile, name: &str) -> usize {
    p.sample_type
        .iter()
        .position(|t| p.string_table[t.r#type as usize] == name)
        .unwrap_or_else(|| panic!("no sample type {name}"))
}

/// The samples whose stack holds a function named exactly `func`.
fn samples_under<'a>(
    p: &'a Profile,
    func: &'a str,
) -> impl Iterator<Item = &'a profiler_pprof::proto::Sample> + 'a {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let funcs: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, &profiler_pprof::proto::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    p.sample.iter().filter(move |smp| {
        smp.location_id.iter().any(|id| {
            locs[id]
                .line
                .iter()
                .any(|l| funcs.get(&l.function_id) == Some(&func))
        })
    })
}

/// Sum of sample type `kind` over the samples under `func`.
fn under(p: &Profile, kind: &str, func: &str) -> i64 {
    let i = type_index(p, kind);
    samples_under(p, func).map(|s| s.value[i]).sum()
}

fn within(what: &str, ours: i64, truth: i64, tol: f64) {
    let rel = (ours - truth) as f64 / truth.max(1) as f64;
    eprintln!("{what}: agent {ours}, truth {truth} ({:+.1}%)", rel * 100.0);
    assert!(
        rel.abs() <= tol,
        "{what}: agent {ours} vs truth {truth}: {:+.1}% (limit ±{:.0}%)",
        rel * 100.0,
        tol * 100.0
    );
}

/// `key=value` lines a workload printed.
fn printed(text: &str, key: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in: {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// One container of a pod, in a test-owned kubelet-like cgroup tree.
struct Pod {
    cg: KubeletCgroups,
    uid: String,
    path: std::path::PathBuf,
}

impl Pod {
    fn new(tag: &str, seed: u64) -> Pod {
        let mut cg = KubeletCgroups::new(tag);
        let uid = pod_uid(seed);
        let path =
            cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &container_id(seed));
        Pod { cg, uid, path }
    }

    /// Run `cmd` to its end inside the container; its stdout.
    fn run(&mut self, cmd: &mut Command) -> String {
        let mut child = Owned::spawn(cmd.stdout(Stdio::piped()));
        self.cg.add_process(&self.path, child.pid());
        child.finish("workload").0
    }
}

/// `go tool pprof -top` of `path` (its stdout; panics when it fails).
fn pprof_top(path: &Path) -> String {
    let out = Command::new(go_bin())
        .args(["tool", "pprof", "-top"])
        .arg(path)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go tool pprof -top {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Wait until the windows covering a workload that just ended are all
/// written (two 2 s windows), then the merged profile of `kind`.
fn settled(agent: &RunningAgent, pod: &str, kind: &str) -> (Profile, u64) {
    std::thread::sleep(Duration::from_secs(5));
    agent
        .profile(pod, kind)
        .unwrap_or_else(|| panic!("no {kind} windows for {pod}; log:\n{}", agent.log()))
}

const RECONCILE: &str = "main.(*reconciler).Reconcile";

/// Lower bound of a latency bucket -> its midpoint (16 linear buckets per
/// power of two, as the profile's comments say).
fn bucket_mid(lo: u64) -> u64 {
    let width = if lo < 16 {
        1
    } else {
        1u64 << (63 - lo.leading_zeros() - 4)
    };
    lo + width / 2
}

/// Nearest-rank quantile of (bucket lower bound, calls), at the midpoint.
fn quantile(hist: &[(u64, i64)], q: f64) -> u64 {
    let n: i64 = hist.iter().map(|h| h.1).sum();
    let rank = ((q * n as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (lo, c) in hist {
        seen += c;
        if seen >= rank {
            return bucket_mid(*lo);
        }
    }
    0
}

/// Latency through the agent: the workload times its own 400 calls of
/// `Reconcile` (70% 2 ms, 25% 6 ms, 5% 20 ms); the range's histogram
/// (summed over the windows the calls span) holds exactly 400 calls and
/// its quantiles are within 5% of the program's own.
#[test]
fn agent_latency_histograms_add_up_to_the_programs_own_timing() {
    if !can_run_ebpf("agent_latency_histograms_add_up_to_the_programs_own_timing") {
        return;
    }
    let Some(bin) = gobuild::build("exactcalls", "1.23", false) else {
        return;
    };
    let mut pod = Pod::new("agent-sig-lat", 31);
    let store = TempDir::new("agent-sig-lat-store");
    let agent = RunningAgent::start(
        &store.0,
        &pod.cg.root,
        &["--profile", "cpu,latency", "--latency", RECONCILE],
    );
    // The same binary outside any pod hits the shared probes too: the
    // programs check the target filter, so it leaves no entry at all (the
    // agent's clean-up finds nothing) and its entries are counted as
    // not_target.
    let outsider = Owned::spawn(
        Command::new(&bin)
            .args([
                "-start-delay",
                "4s",
                "-calls",
                "10",
                "-latency-calls",
                "200",
            ])
            .stdout(Stdio::null()),
    );
    // The calls start after 4 s: the agent has found the container and
    // attached the probes by then (rescan 500 ms).
    let out = pod.run(Command::new(&bin).args([
        "-start-delay",
        "4s",
        "-calls",
        "10",
        "-latency-calls",
        "400",
    ]));
    assert_eq!(printed(&out, "latency_n="), 400);
    let (p, windows) = settled(&agent, &pod.uid, "latency");
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<&str> = p.sample_type.iter().map(|t| s(t.r#type)).collect();
    assert_eq!(types, ["calls", "latency"]);
    let mut hist: Vec<(u64, i64)> = samples_under(&p, RECONCILE)
        .map(|smp| {
            let lo = smp
                .label
                .iter()
                .find(|l| s(l.key) == "latency_bucket_ns")
                .map(|l| s(l.str).parse::<u64>().unwrap())
                .expect("every sample carries its bucket label");
            (lo, smp.value[0])
        })
        .collect();
    hist.sort_unstable();
    let calls: i64 = hist.iter().map(|h| h.1).sum();
    assert_eq!(
        calls,
        400,
        "every call, summed over {windows} windows; log:\n{}",
        agent.log()
    );
    assert!(windows >= 2, "the calls span several windows: {windows}");
    drop(outsider);
    assert_eq!(
        agent.metric("profiler_agent_dropped_samples_total{reason=\"go_not_target_entries\"}"),
        Some(0.0),
        "the outsider leaves no entry for the agent to remove"
    );
    let skipped = agent
        .metric("profiler_agent_go_probe_events_total{counter=\"not_target\"}")
        .unwrap_or(0.0);
    assert!(
        skipped >= 200.0,
        "the outsider's 200 timed calls are skipped in the kernel and counted: {skipped}"
    );
    for q in ["p50", "p90", "p99"] {
        let f: f64 = q[1..].parse::<f64>().unwrap() / 100.0;
        within(
            &format!("latency {q}"),
            quantile(&hist, f) as i64,
            printed(&out, &format!("latency_{q}_ns=")),
            0.05,
        );
    }
    let fetched = store.0.with_extension("latency.pb.gz");
    let f = agent.fetch(&pod.uid, "latency", &fetched);
    assert_eq!(under(&f, "calls", RECONCILE), 400);
    assert_eq!(
        go_pprof_total(&fetched),
        Some(400),
        "go tool pprof reads it"
    );
}

/// Lock contention through the agent against Go's own block profile
/// (`runtime.SetBlockProfileRate(1)`): waits and delay under
/// `main.contend`, summed over the windows, within 10%.
#[test]
fn agent_contention_matches_go_block_profile() {
    if !can_run_ebpf("agent_contention_matches_go_block_profile") {
        return;
    }
    let Some(bin) = gobuild::build("lockwait", "1.23", false) else {
        return;
    };
    let mut pod = Pod::new("agent-sig-lock", 32);
    let store = TempDir::new("agent-sig-lock-store");
    let truth = store.0.with_extension("block.pb.gz");
    let agent = RunningAgent::start(&store.0, &pod.cg.root, &["--profile", "contention"]);
    // The same binary outside any pod: its parks are skipped in the kernel.
    let outsider = Owned::spawn(
        Command::new(&bin)
            .args([
                "-mode",
                "mutex",
                "-workers",
                "4",
                "-hold",
                "1ms",
                "-start-delay",
                "4s",
                "-duration",
                "2s",
            ])
            .stdout(Stdio::null()),
    );
    pod.run(
        Command::new(&bin)
            .args([
                "-mode",
                "mutex",
                "-workers",
                "4",
                "-hold",
                "1ms",
                "-start-delay",
                "4s",
                "-duration",
                "3s",
                "-block-profile",
            ])
            .arg(&truth),
    );
    let (p, windows) = settled(&agent, &pod.uid, "contention");
    drop(outsider);
    assert_eq!(
        agent.metric("profiler_agent_dropped_samples_total{reason=\"go_not_target_entries\"}"),
        Some(0.0),
        "the outsider leaves no contention entry for the agent to remove"
    );
    assert!(
        agent
            .metric("profiler_agent_go_probe_events_total{counter=\"not_target\"}")
            .is_some_and(|v| v > 0.0),
        "the outsider's parks are skipped in the kernel and counted"
    );
    let g = read_pprof(&truth);
    let (go_delay, go_count) = (
        under(&g, "delay", "main.contend"),
        under(&g, "contentions", "main.contend"),
    );
    assert!(go_count > 100, "too few waits in Go's profile: {go_count}");
    assert!(windows >= 2, "the waits span several windows: {windows}");
    within(
        "contention delay under main.contend",
        under(&p, "delay", "main.contend"),
        go_delay,
        0.10,
    );
    within(
        "contention waits under main.contend",
        under(&p, "contentions", "main.contend"),
        go_count,
        0.10,
    );
    let fetched = store.0.with_extension("contention.pb.gz");
    let f = agent.fetch(&pod.uid, "contention", &fetched);
    assert_eq!(
        under(&f, "contentions", "main.contend"),
        under(&p, "contentions", "main.contend")
    );
    assert!(go_pprof_total(&fetched).is_some_and(|t| t > 0));
    assert_eq!(
        agent.metric("profiler_agent_map_capacity{map=\"contention\"}"),
        Some(16384.0),
        "/metrics shows the contention map's bound"
    );
}

/// Off-CPU time through the agent: the workload sleeps a known total in
/// `main.offcpuSleep`; measuring every switch (`--offcpu-every 1`), the
/// range's off-CPU time under it is 95% to 125% of what it slept (as in
/// `record`'s test), and the parked main goroutine's `main.main` has
/// almost none.
#[test]
fn agent_offcpu_adds_up_to_the_known_sleep() {
    if !can_run_ebpf("agent_offcpu_adds_up_to_the_known_sleep") {
        return;
    }
    let Some(bin) = gobuild::build("lockwait", "1.23", false) else {
        return;
    };
    let mut pod = Pod::new("agent-sig-off", 33);
    let store = TempDir::new("agent-sig-off-store");
    let agent = RunningAgent::start(
        &store.0,
        &pod.cg.root,
        &["--profile", "offcpu", "--offcpu-every", "1"],
    );
    let out = pod.run(
        Command::new(&bin)
            .args([
                "-mode",
                "sleep",
                "-workers",
                "2",
                "-hold",
                "5ms",
                "-start-delay",
                "3s",
                "-duration",
                "3s",
            ])
            .env("GOMAXPROCS", "8"),
    );
    let slept = printed(&out, "slept_ns=");
    assert!(slept > 1_000_000_000, "the workload slept only {slept} ns");
    let (p, windows) = settled(&agent, &pod.uid, "offcpu");
    assert!(windows >= 2, "the sleeps span several windows: {windows}");
    let ours = under(&p, "offcpu", "main.offcpuSleep");
    let ratio = ours as f64 / slept as f64;
    eprintln!("offcpu under main.offcpuSleep {ours} ns, slept {slept} ns: ratio {ratio:.3}");
    let fetched = store.0.with_extension("offcpu.pb.gz");
    agent.fetch(&pod.uid, "offcpu", &fetched);
    let top = pprof_top(&fetched);
    assert!(
        (0.95..=1.25).contains(&ratio),
        "off-CPU under main.offcpuSleep {ours} ns vs {slept} ns slept (ratio {ratio:.3}); go tool pprof -top:\n{top}"
    );
    // The main goroutine is parked (`time.Sleep`, then `select`) the whole
    // run: a parked goroutine is no thread's sleep (its stacks end at
    // `runtime.mcall`), so `main.main` holds almost no off-CPU time. The
    // stack walk that went on past `runtime.mcall` put the idle threads'
    // seconds under it.
    let main_off = under(&p, "offcpu", "main.main");
    eprintln!("offcpu under main.main {main_off} ns");
    assert!(
        (main_off as f64) < 0.05 * slept as f64,
        "off-CPU under main.main {main_off} ns (slept {slept} ns); go tool pprof -top:\n{top}"
    );
    assert!(top.contains("main.offcpuSleep"), "{top}");
    assert!(
        agent
            .metric("profiler_agent_offcpu_events_total{counter=\"offcpu_measured\"}")
            .is_some_and(|v| v > 0.0),
        "/metrics counts the measured intervals"
    );
    // The workload exited windows ago: its entries left the kernel map.
    assert!(
        agent
            .metric("profiler_agent_offcpu_released_total{what=\"keys\"}")
            .is_some_and(|v| v > 0.0),
        "the exited process's off-CPU entries are released"
    );
}

/// Live heap through the agent: the workload holds a known number of
/// bytes at two sites; the range over several windows is the last
/// window's snapshot (within 10% of what is held, not a sum over the
/// windows), `go tool pprof -top` shows `inuse_space`, the reads are
/// counted in /metrics, and a pod without Go says why it has no heap.
#[test]
fn agent_heap_is_the_last_snapshot_of_the_held_bytes() {
    if !can_run_ebpf("agent_heap_is_the_last_snapshot_of_the_held_bytes") {
        return;
    }
    let Some(bin) = gobuild::build("heapsites", "1.23", false) else {
        return;
    };
    let mut pod = Pod::new("agent-sig-heap", 34);
    let (uid_c, cid_c) = pod_ids(35);
    let c_path = pod
        .cg
        .systemd_container(Qos::BestEffort, &uid_c, "crio", &cid_c);
    let store = TempDir::new("agent-sig-heap-store");
    let agent = RunningAgent::start(&store.0, &pod.cg.root, &["--profile", "heap"]);
    // Warm-up and one P: Go's first sampling interval per P is drawn at
    // the default rate before main sets 8 KiB (see the test below).
    let mut child = Owned::spawn(
        Command::new(&bin)
            .args(["-memprofilerate", "8192", "-duration", "120s"])
            .args(["-warmup", "16777216"])
            .env("GOMAXPROCS", "1")
            .stdout(Stdio::piped()),
    );
    pod.cg.add_process(&pod.path, child.pid());
    let sleeper = Owned::spawn(Command::new("sleep").arg("600"));
    pod.cg.add_process(&c_path, sleeper.pid());
    let mut held: HashMap<String, i64> = HashMap::new();
    for l in BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some(rest) = l.strip_prefix("held ") {
            let (site, n) = rest.split_once('=').unwrap();
            held.insert(site.to_string(), n.parse().unwrap());
        }
        if l == "ready" {
            break;
        }
    }
    assert_eq!(held.len(), 2, "the workload's ground truth");
    let mut seen = None;
    let ok = wait_until(Duration::from_secs(40), || {
        let Some((p, windows)) = agent.profile(&pod.uid, "heap") else {
            return false;
        };
        let a = under(&p, "inuse_space", "main.holdA");
        seen = Some((a, windows));
        windows >= 3 && (a - held["main.holdA"]).abs() as f64 <= 0.10 * held["main.holdA"] as f64
    });
    assert!(
        ok,
        "main.holdA in use (agent, windows) {seen:?} vs {} held; log:\n{}",
        held["main.holdA"],
        agent.log()
    );
    let (p, windows) = agent.profile(&pod.uid, "heap").unwrap();
    for (site, bytes) in &held {
        within(
            &format!("heap in use at {site} over {windows} windows"),
            under(&p, "inuse_space", site),
            *bytes,
            0.10,
        );
    }
    let fetched = store.0.with_extension("heap.pb.gz");
    agent.fetch(&pod.uid, "heap", &fetched);
    let top = pprof_top(&fetched);
    assert!(
        top.contains("Type: inuse_space") && top.contains("main.holdA"),
        "go tool pprof -top:\n{top}"
    );
    assert!(
        agent
            .metric("profiler_agent_heap_reads_total")
            .is_some_and(|v| v >= 3.0),
        "/metrics counts the heap reads"
    );
    // The pod without Go: no heap windows, and /targets says why.
    assert!(agent.profile(&uid_c, "heap").is_none());
    let targets: serde_json::Value = serde_json::from_slice(&agent.get("/targets").body).unwrap();
    let tc = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pod_uid"] == uid_c.as_str())
        .cloned()
        .expect("the non-Go pod in /targets");
    let why = tc["absent"].to_string();
    assert!(
        why.contains("no Go program") && why.contains("heap"),
        "/targets says why the non-Go pod has no heap profile: {tc}"
    );
}

/// The agent's per-window heap limit: a pod with more Go processes than
/// the agent reads per window (64). Each window reads at most 64 and counts
/// the rest as skipped in /metrics; the least-read go first, so within two
/// windows every process has a snapshot and the pod's heap holds all of
/// their bytes (a skipped process keeps its last snapshot).
#[test]
fn agent_heap_reads_are_capped_per_window_and_rotate() {
    if !can_run_ebpf("agent_heap_reads_are_capped_per_window_and_rotate") {
        return;
    }
    let Some(bin) = gobuild::build("heapsites", "1.23", false) else {
        return;
    };
    const PROCS: usize = 70;
    const CAP: f64 = 64.0;
    let mut pod = Pod::new("agent-sig-heapcap", 36);
    let store = TempDir::new("agent-sig-heapcap-store");
    let agent = RunningAgent::start(&store.0, &pod.cg.root, &["--profile", "heap"]);
    // Small, idle workloads: 1 MiB held at main.holdA each, every object
    // recorded (rate 8 KiB < 64 KiB objects), no churn after the holds.
    // The warm-up spends Go's first sampling interval, drawn at the
    // default rate (mean 512 KiB) before main sets the 8 KiB one. One P: each
    // P's cache draws its own first interval at the default rate, so a
    // goroutine moved to another P would leave part of a hold unsampled.
    // A 1 MiB hold shows 0.2–1.0 MiB in Go's own profile without these.
    let mut children: Vec<Owned> = (0..PROCS)
        .map(|_| {
            let c = Owned::spawn(
                Command::new(&bin)
                    .args(["-memprofilerate", "8192", "-duration", "180s"])
                    .args(["-site-a", "1048576", "-site-b", "262144", "-churn", "0"])
                    .args(["-warmup", "16777216"])
                    .env("GOMAXPROCS", "1")
                    .stdout(Stdio::piped()),
            );
            pod.cg.add_process(&pod.path, c.pid());
            c
        })
        .collect();
    let mut held_a = 0i64;
    for c in &mut children {
        for l in BufReader::new(c.0.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(n) = l.strip_prefix("held main.holdA=") {
                held_a += n.parse::<i64>().unwrap();
            }
            if l == "ready" {
                break;
            }
        }
    }
    assert_eq!(
        held_a,
        PROCS as i64 * (1 << 20),
        "the workloads' ground truth"
    );
    let skipped = r#"profiler_agent_dropped_samples_total{reason="heap_reads_skipped"}"#;
    let mut seen = None;
    let ok = wait_until(Duration::from_secs(60), || {
        let Some((p, windows)) = agent.profile(&pod.uid, "heap") else {
            return false;
        };
        let a = under(&p, "inuse_space", "main.holdA");
        let s = agent.metric(skipped).unwrap_or(0.0);
        seen = Some((a, windows, s));
        // Within half a process's hold: a process without a snapshot
        // (1 MiB) fails it; Go's sampled 64 KiB objects are all but exact.
        s >= (PROCS as f64 - CAP) && (a - held_a).abs() < 512 << 10
    });
    assert!(
        ok,
        "(main.holdA in use, windows, skipped reads) {seen:?}: want {held_a} held by \
         {PROCS} processes and ≥ {} skipped; log:\n{}",
        PROCS as f64 - CAP,
        agent.log()
    );
    // Never more than 64 reads per window written (one pod, one type:
    // every window that read heaps wrote one; the counters are read in
    // that order, so `written` can only be larger).
    let reads = agent.metric("profiler_agent_heap_reads_total").unwrap();
    let written = agent
        .metric("profiler_agent_windows_written_total")
        .unwrap();
    eprintln!("heap reads {reads}, windows written {written}, {seen:?}");
    assert!(
        reads <= CAP * written,
        "{reads} heap reads in {written} windows: more than {CAP} per window"
    );
    drop(children);
}
