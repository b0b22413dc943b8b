//! `profiler record --profile offcpu`: the `lockwait` workload in `sleep`
//! mode blocks its threads in the `nanosleep` system call for a known time
//! in `main.offcpuSleep` and prints the total time spent in those calls,
//! measured around each (`slept_ns=`). The off-CPU time under
//! `main.offcpuSleep` must come out at about that total. Measuring every
//! switch: at least 95% of it and at most 25% more (the call's own time on
//! the CPU is small; the margin is for the clock reads around it). Sampling 1 in 8 (the default;
//! values scaled by 8): ~5,800 sleeps of 1 ms give ~725 sampled ones, a
//! relative standard deviation of ~3.5%, so the floor is 85%. GOMAXPROCS
//! is above the worker count, so a thread returning from the system call
//! gets a P at once.
//!
//! A goroutine that parks (`time.Sleep`, a contended `sync.Mutex`) does
//! not block its thread: its thread's idle time is the Go scheduler's, not
//! the goroutine's function's (`lockwait -mode mutex`, below).

use std::{
    path::Path,
    process::{Command, Output},
};

use integration_tests::{gobuild, *};

/// `profiler record --quiet --profile offcpu --offcpu-every EVERY` of
/// `lockwait ARGS` (GOMAXPROCS=8) into `out`: the profiler's output,
/// after checking that it succeeded.
fn record_lockwait(every: &str, out: &Path, bin: &Path, args: &[&str]) -> Output {
    let r = Command::new(profiler_bin())
        .args([
            "record",
            "--quiet",
            "--profile",
            "offcpu",
            "--offcpu-every",
            every,
            "-o",
        ])
        .arg(out)
        .arg("--")
        .arg(bin)
        .args(args)
        .env("GOMAXPROCS", "8")
        .output()
        .expect("running profiler");
    assert!(
        r.status.success(),
        "profiler failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    r
}

fn offcpu_total_matches(every: &str, hold: &str, low: f64) {
    let test = format!("offcpu_every_{every}");
    if !can_run_ebpf(&test) {
        return;
    }
    let Some(bin) = gobuild::build("lockwait", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("offcpu");
    let out = dir.join("offcpu.pb.gz");
    let r = record_lockwait(
        every,
        &out,
        &bin,
        &[
            "-mode",
            "sleep",
            "-workers",
            "2",
            "-hold",
            hold,
            "-start-delay",
            "500ms",
            "-duration",
            "3s",
        ],
    );
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    let slept: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("slept_ns="))
        .expect("the workload printed slept_ns=")
        .trim()
        .parse()
        .unwrap();
    assert!(slept > 1_000_000_000, "the workload slept only {slept} ns");
    let p = read_pprof(&out);
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(s(p.sample_type[1].r#type), "offcpu");
    assert_eq!(s(p.sample_type[1].unit), "nanoseconds");
    let ours = value_under(&p, "offcpu", "main.offcpuSleep");
    let ratio = ours as f64 / slept as f64;
    eprintln!("{test}: off-CPU under main.offcpuSleep {ours} ns, slept {slept} ns: ratio {ratio:.3}; {stderr}");
    assert!(
        (low..=1.25).contains(&ratio),
        "{test}: off-CPU under main.offcpuSleep {ours} ns vs {slept} ns slept (ratio {ratio:.3})"
    );
    // A function that never blocks has no off-CPU time.
    assert_eq!(value_under(&p, "offcpu", "main.contend"), 0);
    assert!(go_pprof_total(&out).is_some_and(|t| t > 0));
}

#[test]
fn offcpu_total_matches_known_sleep_every_switch() {
    offcpu_total_matches("1", "5ms", 0.95);
}

#[test]
fn offcpu_total_matches_known_sleep_sampled_default() {
    offcpu_total_matches("8", "1ms", 0.85);
}

/// `lockwait -mode mutex`: 4 goroutines take turns in `main.contend`, each
/// parking in `time.Sleep` while it holds the mutex, the others parking on
/// the mutex; they never block their threads, so next to no off-CPU time
/// is under `main.contend` (what there is: a thread blocked on a runtime
/// lock or in `clone` on the goroutine's behalf, or preempted while it ran
/// the goroutine). The threads the goroutines left go idle in the
/// scheduler for most of the run, and their frame-pointer chains lead on
/// through `runtime.mcall` (or a thread's `runtime.mstart`) into the stacks
/// the goroutines had then: followed, that idle time was counted under
/// `main.contend` (4.4 s and 6.1 s in two runs). Fixed, 0.4 to 9.2 ms in
/// 10 runs beside 2 or 4 busy loops; the bound is 5% of the run.
#[test]
fn offcpu_of_parked_goroutines_is_not_their_threads_idle_time() {
    let test = "offcpu_of_parked_goroutines";
    if !can_run_ebpf(test) {
        return;
    }
    let Some(bin) = gobuild::build("lockwait", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("offcpu-park");
    let out = dir.join("offcpu.pb.gz");
    let r = record_lockwait(
        "1",
        &out,
        &bin,
        &[
            "-mode",
            "mutex",
            "-workers",
            "4",
            "-hold",
            "1ms",
            "-duration",
            "2s",
        ],
    );
    let stderr = String::from_utf8_lossy(&r.stderr);
    let p = read_pprof(&out);
    let total: i64 = {
        let i = p
            .sample_type
            .iter()
            .position(|t| p.string_table[t.r#type as usize] == "offcpu")
            .expect("an offcpu sample type");
        p.sample.iter().map(|s| s.value[i]).sum()
    };
    let contend = value_under(&p, "offcpu", "main.contend");
    let idle = value_under(&p, "offcpu", "runtime.mcall");
    eprintln!(
        "{test}: off-CPU {total} ns in all, {contend} ns under main.contend, {idle} ns under runtime.mcall; {stderr}"
    );
    // The threads were off the CPU for seconds, in the scheduler.
    assert!(idle > 1_000_000_000, "{idle} ns under runtime.mcall");
    assert!(
        contend < 100_000_000,
        "{test}: {contend} ns of off-CPU time under main.contend in a 2 s run (at most 100 ms)"
    );
}
