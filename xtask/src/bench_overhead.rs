//! `cargo xtask bench overhead`: how much `profiler record` at 99 Hz slows a
//! Go workload, and what the profiler itself costs.
//!
//! Runs the `cpusplit` workload alone and under `profiler record --pid`,
//! alternated back to back, and prints the median throughput ratio, the
//! profiler's CPU time (as % of one core) and peak RSS (from `wait4`
//! rusage of the profiler process only), and the in-kernel cost per sample
//! (`run_time_ns / run_cnt` with `kernel.bpf_stats_enabled=1`, as reported
//! by the profiler).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

fn units_per_sec(out: &str) -> Option<f64> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("units_per_sec="))
        .and_then(|v| v.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Usage {
    cpu: Duration,
    max_rss_kib: i64,
    stderr: String,
}

/// Wait for `child` and return its own rusage (not its children's).
fn wait_usage(child: std::process::Child) -> Result<Usage> {
    let pid = child.id() as i32;
    let mut stderr = child.stderr;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut text = String::new();
    if let Some(e) = stderr.as_mut() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut text);
    }
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss,
        stderr: text,
    })
}

fn run_workload(bin: &Path, seconds: u64) -> Result<std::process::Child> {
    Command::new(bin.join("cpusplit"))
        .args(["-duration", &format!("{seconds}s")])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cpusplit")
}

fn workload_result(child: std::process::Child) -> Result<f64> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    units_per_sec(&text).with_context(|| format!("cpusplit printed no units_per_sec: {text}"))
}

/// Run the benchmark.
pub fn run(root: &Path, runs: usize, seconds: u64) -> Result<()> {
    crate::setup::setup(root)?;
    let bins = crate::workloads::build_workloads(root)?;
    let release = crate::build_release(root)?;
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let out_dir = crate::target_dir(root).join("bench-overhead");
    std::fs::create_dir_all(&out_dir)?;

    let mut base = Vec::new();
    let mut prof = Vec::new();
    let mut cpu_pct = Vec::new();
    let mut rss = Vec::new();
    let mut per_sample_ns = Vec::new();
    println!("bench overhead: {runs} alternated pairs of {seconds}s cpusplit runs (alone / under profiler record at 99 Hz)");
    for i in 0..runs {
        let w = run_workload(&bins, seconds)?;
        let alone = workload_result(w)?;
        let w = run_workload(&bins, seconds)?;
        let p = Command::new(release.join("profiler"))
            .args([
                "record",
                "--quiet",
                "--frequency",
                "99",
                "--pid",
                &w.id().to_string(),
            ])
            .args(["--duration", &format!("{seconds}s")])
            .args(["-o", out_dir.join("cpu.pb.gz").to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .context("starting profiler")?;
        let under = workload_result(w)?;
        let usage = wait_usage(p)?;
        let pct = usage.cpu.as_secs_f64() / seconds as f64 * 100.0;
        if let Some(ns) = usage
            .stderr
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ns_per_run="))
            .and_then(|v| v.parse::<f64>().ok())
        {
            per_sample_ns.push(ns);
        }
        println!(
            "  pair {}: alone {:.0} units/s, profiled {:.0} units/s (ratio {:.4}); profiler cpu {:.2}% of a core, peak RSS {} KiB",
            i + 1,
            alone,
            under,
            under / alone,
            pct,
            usage.max_rss_kib
        );
        base.push(alone);
        prof.push(under);
        cpu_pct.push(pct);
        rss.push(usage.max_rss_kib as f64);
    }
    let mut ratios: Vec<f64> = base.iter().zip(&prof).map(|(a, b)| b / a).collect();
    let ratio = median(&mut ratios);
    println!(
        "median throughput ratio (profiled / alone): {ratio:.4} => slowdown {:.2}%",
        (1.0 - ratio) * 100.0
    );
    println!(
        "median profiler CPU: {:.2}% of one core",
        median(&mut cpu_pct)
    );
    println!(
        "max profiler peak RSS: {:.1} MiB",
        rss.iter().cloned().fold(0.0, f64::max) / 1024.0
    );
    if !per_sample_ns.is_empty() {
        println!(
            "median in-kernel cost of cpu_sample: {:.0} ns per run (run_time_ns/run_cnt)",
            median(&mut per_sample_ns)
        );
    }
    Ok(())
}
