//! A `--profile` list without `cpu` runs no CPU sampler: `profiler record
//! --profile calls` and `profiler agent --profile latency` load the eBPF
//! object (maps, lifecycle tracepoints, Go uprobes) but no `perf_event`
//! program, so the targets pay nothing for CPU samples nobody asked for,
//! while the requested profiles stay exact. Checked on the running
//! profiler's own descriptors (the type of every BPF program it holds,
//! from `/proc/PID/fdinfo`), with a `cpu,calls` run as the control that
//! the check sees the sampler when it is there. Run one at a time:
//! `cargo test -p integration-tests --test no_cpu -- --test-threads=1`.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    agentrun::RunningAgent,
    can_run_ebpf, flatten, gobuild,
    kubelet::{container_id, pod_uid, KubeletCgroups, Qos},
    profiler_bin, read_pprof, total, wait_until, Owned, TempDir,
};

/// `BPF_PROG_TYPE_KPROBE` (uprobes are of this type).
const PROG_KPROBE: u32 = 2;
/// `BPF_PROG_TYPE_PERF_EVENT` (the CPU sampler, `cpu_sample`).
const PROG_PERF_EVENT: u32 = 7;

/// The type of every BPF program process `pid` holds a descriptor of.
fn bpf_prog_types(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("prog_type:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// Wait until `pid` holds a uprobe program (the Go probes are attached:
/// everything is loaded), then the types of its programs.
fn loaded_prog_types(pid: u32) -> Vec<u32> {
    let mut types = Vec::new();
    let ready = wait_until(Duration::from_secs(30), || {
        types = bpf_prog_types(pid);
        types.contains(&PROG_KPROBE)
    });
    assert!(ready, "pid {pid} never held a uprobe program: {types:?}");
    types
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

const COUNTED: &str = "main.(*apiClient).list";

/// `profiler record --quiet ARGS -- exactcalls ...` while the caller
/// looks at the profiler's programs: (program types once loaded, the
/// workload's stdout, the profiler's stderr).
fn record_exactcalls(bin: &std::path::Path, args: &[&str]) -> (Vec<u32>, String, String) {
    let mut prof = Owned::spawn(
        Command::new(profiler_bin())
            .args(["record", "--quiet"])
            .args(args)
            .arg("--")
            .arg(bin)
            // Time to look at the profiler before the calls; then 20,000
            // counted calls and 100 Reconciles spinning on the CPU.
            .args(["-start-delay", "2s", "-calls", "20000"])
            .args(["-latency-calls", "100", "-spin"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let types = loaded_prog_types(prof.pid());
    let (stdout, stderr) = prof.finish("profiler record");
    (types, stdout, stderr)
}

/// `record --profile calls` holds no perf_event program (the `cpu,calls`
/// control does), writes only the calls profile, and counts every call.
#[test]
fn record_without_cpu_runs_no_cpu_sampler_and_counts_exactly() {
    if !can_run_ebpf("record_without_cpu_runs_no_cpu_sampler_and_counts_exactly") {
        return;
    }
    let Some(bin) = gobuild::build("exactcalls", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("nocpu-record");

    // Control: with cpu the sampler's program is there.
    let control = dir.join("control");
    let (types, _, _) = record_exactcalls(
        &bin,
        &[
            "--profile",
            "cpu,calls",
            "--count",
            COUNTED,
            "-o",
            control.to_str().unwrap(),
        ],
    );
    assert!(
        types.contains(&PROG_PERF_EVENT),
        "control: --profile cpu,calls holds the perf_event program: {types:?}"
    );
    assert!(control.join("cpu.pb.gz").exists() && control.join("calls.pb.gz").exists());

    let out = dir.join("calls.pb.gz");
    let (types, stdout, stderr) = record_exactcalls(
        &bin,
        &[
            "--profile",
            "calls",
            "--count",
            COUNTED,
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        !types.contains(&PROG_PERF_EVENT),
        "--profile calls loaded a perf_event program: {types:?}"
    );
    assert!(
        stderr.contains("no CPU sampling (--profile without cpu)"),
        "the summary says no CPU sampling ran: {stderr}"
    );
    assert!(
        !stderr.contains("cpu_sample program:"),
        "no cpu_sample runs reported: {stderr}"
    );
    assert!(
        !dir.join("cpu.pb.gz").exists(),
        "one type: -o is the calls profile"
    );
    let truth = printed(&stdout, "calls=");
    assert_eq!(truth, 20000);
    let flat = flatten(&read_pprof(&out));
    let counted: i64 = flat
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f.0 == COUNTED))
        .map(|s| s.count)
        .sum();
    assert_eq!(counted, truth, "every call counted; stderr: {stderr}");
    assert_eq!(total(&flat), truth, "profile total");
}

/// `--frequency` with a list lacking cpu is a usage error naming the flag.
#[test]
fn frequency_without_cpu_is_a_usage_error() {
    let out = Command::new(profiler_bin())
        .args(["record", "--profile", "offcpu", "--frequency", "49"])
        .args(["--duration", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--frequency needs --profile cpu"),
        "{stderr}"
    );
}

const RECONCILE: &str = "main.(*reconciler).Reconcile";

/// `agent --profile latency`: no perf_event program, no kernel samples and
/// no cpu window while a pod spins through its Reconciles, whose latency
/// windows hold every call.
#[test]
fn agent_latency_without_cpu_runs_no_cpu_sampler() {
    if !can_run_ebpf("agent_latency_without_cpu_runs_no_cpu_sampler") {
        return;
    }
    let Some(bin) = gobuild::build("exactcalls", "1.23", false) else {
        return;
    };
    let mut cg = KubeletCgroups::new("nocpu-agent");
    let uid = pod_uid(47);
    let path = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &container_id(47));
    let store = TempDir::new("nocpu-agent-store");
    let agent = RunningAgent::start(
        &store.0,
        &cg.root,
        &["--profile", "latency", "--latency", RECONCILE],
    );
    // The probes are attached once the agent has found the container
    // (rescan 500 ms), well within the workload's start delay.
    let mut child = Owned::spawn(
        Command::new(&bin)
            .args(["-start-delay", "3s", "-calls", "10"])
            .args(["-latency-calls", "300", "-spin"])
            .stdout(Stdio::piped()),
    );
    cg.add_process(&path, child.pid());
    let types = loaded_prog_types(agent.pid());
    assert!(
        !types.contains(&PROG_PERF_EVENT),
        "--profile latency loaded a perf_event program: {types:?}"
    );
    let (out, _) = child.finish("workload");
    assert_eq!(printed(&out, "latency_n="), 300);
    // The windows covering the calls are written (2 s windows).
    std::thread::sleep(Duration::from_secs(5));
    let (p, windows) = agent
        .profile(&uid, "latency")
        .unwrap_or_else(|| panic!("no latency windows; log:\n{}", agent.log()));
    let calls = integration_tests::value_under(&p, "calls", RECONCILE);
    assert_eq!(calls, 300, "every call over {windows} windows");
    assert_eq!(
        agent.metric("profiler_agent_kernel_samples_total"),
        Some(0.0),
        "no kernel samples; log:\n{}",
        agent.log()
    );
    assert!(
        agent.profile(&uid, "cpu").is_none(),
        "no cpu window is written"
    );
    assert!(
        agent.log().contains("(no CPU sampling)"),
        "the start line says so: {}",
        agent.log()
    );
}

/// Without CPU samples to find it by, a process moved into the target
/// cgroup after `record --cgroup --profile calls` started (no `exec` there,
/// so no lifecycle event) is still found (the per-drain look at the
/// cgroup) and gets its probes before its calls start: all are counted.
#[test]
fn record_cgroup_without_cpu_finds_a_process_moved_in() {
    if !can_run_ebpf("record_cgroup_without_cpu_finds_a_process_moved_in") {
        return;
    }
    let Some(bin) = gobuild::build("exactcalls", "1.23", false) else {
        return;
    };
    let mut cg = KubeletCgroups::new("nocpu-cgroup");
    let path = cg.systemd_container(
        Qos::Burstable,
        &pod_uid(48),
        "cri-containerd",
        &container_id(48),
    );
    let dir = TempDir::new("nocpu-cgroup");
    let out = dir.join("calls.pb.gz");
    let prof = Owned::spawn(
        Command::new(profiler_bin())
            .args([
                "record",
                "--quiet",
                "--profile",
                "calls",
                "--count",
                COUNTED,
            ])
            .arg("--cgroup")
            .arg(&path)
            .args(["--duration", "7s", "-o"])
            .arg(&out)
            .stderr(Stdio::piped()),
    );
    // The profiler has loaded its Go probe programs (the last step of
    // loading) and, a moment later, looked at the cgroup (empty then): the
    // process moved in below is found by nothing but the per-drain look.
    loaded_prog_types(prof.pid());
    std::thread::sleep(Duration::from_millis(500));
    let mut child = Owned::spawn(
        Command::new(&bin)
            .args(["-start-delay", "3s", "-calls", "5000"])
            .stdout(Stdio::piped()),
    );
    cg.add_process(&path, child.pid());
    let (stdout, _) = child.finish("workload");
    let mut prof = prof;
    let (_, stderr) = prof.finish("profiler record");
    let truth = printed(&stdout, "calls=");
    assert_eq!(truth, 5000);
    let flat = flatten(&read_pprof(&out));
    assert_eq!(total(&flat), truth, "every call counted; stderr: {stderr}");
}
