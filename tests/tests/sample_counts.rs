//! The CPU sampler loses no sample it took: the profile's sample count is
//! checked against the kernel's own count of the sampling program's runs
//! (`bpf_stats` `run_cnt`), exactly.

use std::{os::fd::FromRawFd as _, process::Command, time::Duration};

use integration_tests::*;

/// Keeps `bpf_stats` (`run_cnt`, `run_time_ns` of every BPF program) on
/// while it lives: the `BPF_ENABLE_STATS` command returns a file descriptor
/// that holds a reference on the kernel's switch, so another process
/// writing `kernel.bpf_stats_enabled=0` meanwhile cannot turn it off, and
/// closing it restores whatever the sysctl says.
struct BpfStats(#[allow(dead_code)] std::os::fd::OwnedFd);

impl BpfStats {
    fn enable() -> BpfStats {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        // `union bpf_attr` for BPF_ENABLE_STATS is one u32 (the stats type);
        // the kernel checks that the rest of the size it is given is zero.
        let attr = [BPF_STATS_RUN_TIME, 0u32];
        // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from `attr`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        assert!(
            fd >= 0,
            "BPF_ENABLE_STATS failed: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor this process owns.
        BpfStats(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// `name=value` in `text` (the first one).
fn field(text: &str, name: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// One thread per CPU spins in the same function on the same stack, so
/// samples taken on two CPUs at once update the same in-kernel count (the
/// sampler once did that with a plain read-then-write, which loses one of
/// two concurrent increments, uncounted). The profile must hold exactly
/// one sample per run of `cpu_sample` that hit the target: `run_cnt`
/// (counted by the kernel) minus the runs the program counted as filtered
/// out; the program's own `samples` counter must agree too.
#[test]
fn every_sampled_run_is_in_the_profile() {
    if !can_run_ebpf("every_sampled_run_is_in_the_profile") {
        return;
    }
    let _stats = BpfStats::enable();
    let dir = TempDir::new("counts");
    let out = dir.join("cpu.pb.gz");
    let w = Owned::spawn(Command::new(workload("samestack")).args(["-duration", "30s"]));
    std::thread::sleep(Duration::from_millis(200));
    // A high rate: more samples, and more chances of two CPUs sampling at
    // the same moment.
    let r = record(&[
        "--pid",
        &w.pid().to_string(),
        "--frequency",
        "9999",
        "--duration",
        "4s",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "profiler failed: {stderr}");
    let pid = w.pid();
    drop(w);
    let runs_line = stderr
        .lines()
        .find(|l| l.contains("cpu_sample program:"))
        .unwrap_or_else(|| panic!("no cpu_sample run count (bpf_stats) in: {stderr}"));
    let runs = field(runs_line, "runs").expect("runs=N");

    let p = read_pprof(&out);
    let comments: Vec<&str> = p
        .comment
        .iter()
        .map(|&c| p.string_table[c as usize].as_str())
        .collect();
    let counters = comments
        .iter()
        .find(|c| c.starts_with("kernel counters:"))
        .unwrap_or_else(|| panic!("no kernel counters in the comments: {comments:?}"));
    let get = |name: &str| {
        field(counters, name).unwrap_or_else(|| panic!("{name} missing from {counters}"))
    };
    let (samples, filtered_out) = (get("samples"), get("filtered_out"));
    // A full count map drops samples (counted); nothing else does (a stack
    // lost to a collision keeps its sample).
    assert_eq!(get("count_map_full"), 0, "{counters}");
    assert_eq!(
        samples + filtered_out,
        runs,
        "the program's counters (samples {samples} + filtered_out {filtered_out}) do not add up to its run_cnt {runs}"
    );
    let hit = runs - filtered_out;
    assert!(hit > 1000, "only {hit} runs hit the target");

    let flat = flatten(&p);
    let t = total(&flat);
    let ours: i64 = flat
        .iter()
        .filter(|s| s.pid == i64::from(pid))
        .map(|s| s.count)
        .sum();
    assert_eq!(
        ours, t,
        "samples from processes other than the target {pid} (the filter must be on before the sampler is attached)"
    );
    assert_eq!(
        t as u64,
        hit,
        "the profile holds {t} samples for {hit} runs of cpu_sample that hit the target ({} lost)",
        hit as i64 - t
    );
}
