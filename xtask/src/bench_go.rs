//! `cargo xtask bench go-probes`: what the Go runtime uprobes of
//! `profiler record --profile goroutines,allocs,calls` cost.
//!
//! 1. Per event: the `goruntime` workload times a fixed amount of work
//!    (2,000,000 counted calls; 200,000 goroutines; 1,000,000 4 KiB
//!    allocations with `--allocs-exact`) alone and under the profiler;
//!    the extra wall time divided by the events is the full cost of one
//!    probe hit (trap + program). With `kernel.bpf_stats_enabled=1` the
//!    profiler also reports the programs' own `run_time_ns/run_cnt`. The
//!    counted-call case is repeated with the probe on the function's first
//!    instruction (`PROFILER_GO_PROBE_AT_ENTRY=1`, single-stepped) to show
//!    what the emulated `JBE` placement saves.
//! 2. CPU time of the controller-like background load alone (rusage, uprobe
//!    traps included), with and without each probe set.
//! 3. Throughput: the workload's controller-like load (1,000 goroutines/s,
//!    10 MiB/s allocation, 2,000 counted calls/s beside a CPU-bound loop),
//!    alone and under each probe set, alternated `RUNS` times; the median
//!    ratio of the loop's rate is the slowdown.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

const GO: &str = "/usr/lib/go-1.23/bin/go";
const RUNS: usize = 5;
const WORK_SECONDS: u64 = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

fn build(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "-p", "profiler-user"])
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("cargo build --release -p profiler-user failed");
    }
    let dir = root.join("target/go-bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = dir.join("goruntime");
    let st = Command::new(GO)
        .current_dir(root.join("tests/workloads"))
        .env("GOCACHE", root.join("target/gocache-go-bench"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("./goruntime")
        .status()
        .with_context(|| format!("running {GO} (is Go 1.23 installed?)"))?;
    if !st.success() {
        bail!("go build ./goruntime failed");
    }
    Ok((root.join("target/release/profiler"), bin))
}

fn start_workload(bin: &Path, args: &[&str]) -> Result<Child> {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// A fresh output path under `scratch` (a file for one profile type, a
/// directory for several: never reuse one for the other).
fn fresh_out(scratch: &Path) -> Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = scratch.join(format!("run-{n}"));
    let _ = std::fs::remove_dir_all(&p);
    let _ = std::fs::remove_file(&p);
    Ok(p)
}

/// Start `profiler record` on `pid` with the probe flags `probe`.
fn start_profiler(
    profiler: &Path,
    pid: u32,
    probe: &[&str],
    out: &Path,
    at_entry: bool,
) -> Result<Child> {
    let mut cmd = Command::new(profiler);
    cmd.args(["record", "--quiet", "--pid", &pid.to_string()])
        .args(probe)
        .arg("-o")
        .arg(fresh_out(out)?)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    if at_entry {
        cmd.env("PROFILER_GO_PROBE_AT_ENTRY", "1");
    }
    cmd.spawn().context("starting profiler record")
}

/// Stop the profiler with SIGINT, as a user would, and return its stderr.
fn stop_profiler(p: Child) -> Result<String> {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(p.id() as i32, libc::SIGINT) };
    let out = p.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("profiler record failed: {text}");
    }
    Ok(text)
}

fn cost_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("ns_per_run") || l.contains("lost data"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// One fixed-work run; `probe` None = alone. Returns (elapsed ns, stderr).
fn fixed_work(
    profiler: &Path,
    bin: &Path,
    flag: &str,
    n: usize,
    probe: Option<&[&str]>,
    at_entry: bool,
    scratch: &Path,
) -> Result<(f64, String)> {
    let n = n.to_string();
    let Some(probe) = probe else {
        let c = start_workload(bin, &[flag, &n, "-start-delay", "0s"])?;
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ns = field(&text, "elapsed_ns=").with_context(|| format!("no elapsed_ns in {text}"))?;
        return Ok((ns, String::new()));
    };
    let c = start_workload(bin, &[flag, &n, "-start-delay", "3s"])?;
    let p = start_profiler(profiler, c.id(), probe, scratch, at_entry)?;
    let out = c.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = stop_profiler(p)?;
    let ns = field(&text, "elapsed_ns=").with_context(|| format!("no elapsed_ns in {text}"))?;
    Ok((ns, stderr))
}

fn work_rate(profiler: &Path, bin: &Path, probe: Option<&[&str]>, scratch: &Path) -> Result<f64> {
    let secs = format!("{WORK_SECONDS}s");
    let c = start_workload(bin, &["-work", "-duration", &secs, "-start-delay", "1s"])?;
    let p = match probe {
        Some(probe) => Some(start_profiler(profiler, c.id(), probe, scratch, false)?),
        None => None,
    };
    let out = c.wait_with_output()?;
    if let Some(p) = p {
        stop_profiler(p)?;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    field(&text, "units_per_sec=").with_context(|| format!("no units_per_sec in {text}"))
}

/// CPU time (user+sys, ms per second of run) the workload's background
/// load alone costs, from its rusage; uprobe traps are charged to it.
fn load_cpu(profiler: &Path, bin: &Path, probe: Option<&[&str]>, scratch: &Path) -> Result<f64> {
    let secs = format!("{WORK_SECONDS}s");
    let c = start_workload(
        bin,
        &[
            "-work",
            "-spin=false",
            "-duration",
            &secs,
            "-start-delay",
            "1s",
        ],
    )?;
    let p = match probe {
        Some(probe) => Some(start_profiler(profiler, c.id(), probe, scratch, false)?),
        None => None,
    };
    let pid = c.id() as i32;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; waiting for our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    if let Some(p) = p {
        stop_profiler(p)?;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    Ok((ms(ru.ru_utime) + ms(ru.ru_stime)) / (WORK_SECONDS as f64 + 1.0))
}

/// Run the benchmark and print its figures.
pub fn run(root: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench go-probes loads eBPF programs: run as root");
    }
    let (profiler, bin) = build(root)?;
    let scratch = root.join("target/go-bench/runs");
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let old_stats = std::fs::read_to_string(stats).unwrap_or_else(|_| "0".into());
    let _ = std::fs::write(stats, "1");
    let result = (|| -> Result<()> {
        println!("== per event (extra wall time of a tight loop / events)");
        let calls: &[&str] = &["--profile", "calls", "--count", "main.countedTarget"];
        let gor: &[&str] = &["--profile", "goroutines"];
        let allocs: &[&str] = &["--profile", "allocs", "--allocs-exact"];
        let cases: [(&str, &str, usize, &[&str], bool); 4] = [
            (
                "counted call (probe on the stack-check JBE)",
                "-bench-calls",
                2_000_000,
                calls,
                false,
            ),
            (
                "counted call (probe on the first instruction)",
                "-bench-calls",
                500_000,
                calls,
                true,
            ),
            (
                "goroutine create+exit (3 probes)",
                "-bench-goroutines",
                200_000,
                gor,
                false,
            ),
            (
                "allocation (mallocgc, --allocs-exact)",
                "-bench-allocs",
                1_000_000,
                allocs,
                false,
            ),
        ];
        for (label, flag, n, probe, at_entry) in cases {
            let mut base = Vec::new();
            for _ in 0..3 {
                base.push(fixed_work(&profiler, &bin, flag, n, None, false, &scratch)?.0);
            }
            let base = base.into_iter().fold(f64::MAX, f64::min);
            let (with, stderr) =
                fixed_work(&profiler, &bin, flag, n, Some(probe), at_entry, &scratch)?;
            println!(
                "{label}: {n} events, alone {:.1} ms, probed {:.1} ms: {:.2} us per event",
                base / 1e6,
                with / 1e6,
                (with - base) / n as f64 / 1e3
            );
            for l in cost_lines(&stderr) {
                println!("    {l}");
            }
        }
        let all: &[&str] = &[
            "--profile",
            "goroutines,allocs,calls",
            "--count",
            "main.countedTarget",
        ];
        let sets: [(&str, &[&str]); 4] = [
            ("calls", calls),
            ("goroutines", gor),
            (
                "allocs (MemProfileRate 0: profilealloc never fires)",
                &["--profile", "allocs"],
            ),
            ("goroutines+allocs+calls", all),
        ];
        println!(
            "== controller-like load without the CPU-bound loop: its CPU time, median of {RUNS} alternated runs"
        );
        for (label, probe) in &sets {
            let (mut alone, mut with) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                alone.push(load_cpu(&profiler, &bin, None, &scratch)?);
                with.push(load_cpu(&profiler, &bin, Some(probe), &scratch)?);
            }
            let (a, w) = (median(&mut alone), median(&mut with));
            println!(
                "{label}: {a:.1} ms/s alone, {w:.1} ms/s probed: +{:.1} ms CPU per second ({:+.2}% of one core)",
                w - a,
                (w - a) / 10.0
            );
        }
        println!(
            "== controller-like load: work-loop rate probed/alone, median of {RUNS} alternated runs of {WORK_SECONDS}s"
        );
        for (label, probe) in sets {
            let mut ratios = Vec::new();
            for _ in 0..RUNS {
                let alone = work_rate(&profiler, &bin, None, &scratch)?;
                let with = work_rate(&profiler, &bin, Some(probe), &scratch)?;
                ratios.push(with / alone);
            }
            let spread = ratios.iter().cloned().fold(f64::MAX, f64::min)
                ..ratios.iter().cloned().fold(f64::MIN, f64::max);
            let m = median(&mut ratios);
            println!(
                "{label}: throughput ratio {m:.4} ({:+.2}% ; runs {:.4}..{:.4})",
                (m - 1.0) * 100.0,
                spread.start,
                spread.end
            );
        }
        Ok(())
    })();
    let _ = std::fs::write(stats, old_stats.trim());
    std::thread::sleep(Duration::from_millis(10));
    result
}
