//! `profiler record --profile offcpu`: the `lockwait` workload in `sleep`
//! mode blocks its threads in the `nanosleep` system call for a known time
//! in `main.offcpuSleep` and prints the total asked for (`slept_ns=`). The
//! off-CPU time under `main.offcpuSleep` must come out at about that total.
//! Measuring every switch: at least 95% of it (a sleep lasts at least as
//! long as asked) and at most 25% more (timer slack, waiting for a CPU
//! after the wake-up on a shared machine). Sampling 1 in 8 (the default;
//! values scaled by 8): ~5,800 sleeps of 1 ms give ~725 sampled ones, a
//! relative standard deviation of ~3.5%, so the floor is 85%. GOMAXPROCS
//! is above the worker count, so a thread returning from the system call
//! gets a P at once.

use std::process::Command;

use integration_tests::{gobuild, *};

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
        .arg(&out)
        .arg("--")
        .arg(&bin)
        .args([
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
        ])
        .env("GOMAXPROCS", "8")
        .output()
        .expect("running profiler");
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "profiler failed: {stderr}");
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
