//! `cargo xtask bench go-probes`: what the Go runtime uprobes of
//! `profiler record --profile goroutines,allocs,calls` cost.
//!
//! 1. Per event: the `goruntime` workload times a fixed amount of work
//!    (counted calls, goroutines, 4 KiB allocations) alone and under the
//!    profiler, alternated 3 times; the extra CPU time of the process
//!    (rusage around the loop: uprobe traps are charged to it, and unlike
//!    wall time it does not grow while waiting for a CPU on a busy machine)
//!    divided by the events is the full cost of one event (trap +
//!    program); the wall-time figure is printed beside it. The programs'
//!    own `run_time_ns/run_cnt` come from `kernel.bpf_stats_enabled=1`.
//!    Counted calls are measured side by side in stages (measurement knobs
//!    `PROFILER_GO_CALL_STAGE=trap|unwind|stackid-unwind|stackid`: the
//!    trap alone, + the frame-pointer walk or the kernel's stack id without
//!    a map update, the old kernel-stack-id path in full),
//!    in both stack modes (`PROFILER_GO_COUNT_STACKS=full|caller`), 32
//!    frames deeper, and with the probe on the first instruction
//!    (`PROFILER_GO_PROBE_AT_ENTRY=1`, single-stepped); allocations with
//!    `--allocs-exact`, `(*mcache).refill` (`PROFILER_GO_ALLOCS_PROBE=refill`)
//!    and `--allocs-set-rate`; latency-measured calls (`--profile latency`:
//!    the entry probe plus the probe on the `RET`, whose program times are
//!    summed). The knobs are read only by a profiler built
//!    with the `bench-knobs` feature, which this bench builds (copied to
//!    `target/go-bench/profiler`). `GO_BENCH_PER_EVENT_ONLY=1` stops after this
//!    part; `GO_BENCH_CASES=TEXT` keeps the cases whose label contains it.
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
    let dir = root.join("target/go-bench");
    let profiler = dir.join("profiler");
    crate::build_bench_profiler(root, "bench-knobs", &profiler)?;
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
    Ok((profiler, bin))
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

/// Start `profiler record` on `pid` with the probe flags `probe` and the
/// environment `env` (measurement knobs).
fn start_profiler(
    profiler: &Path,
    pid: u32,
    probe: &[&str],
    out: &Path,
    env: &[(&str, &str)],
) -> Result<Child> {
    let mut cmd = Command::new(profiler);
    cmd.args(["record", "--quiet", "--pid", &pid.to_string()])
        .args(probe)
        .arg("-o")
        .arg(fresh_out(out)?)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
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

/// `ns_per_run` of program `prog` in the profiler's cost line; for
/// `a+b`, the sum of both programs' (one latency-measured call runs the
/// entry and the return program once each).
fn prog_ns(stderr: &str, prog: &str) -> Option<f64> {
    let l = stderr.lines().find(|l| l.contains("ns_per_run"))?;
    prog.split('+')
        .map(|p| {
            let at = l.find(&format!("{p} runs="))?;
            field(&l[at..], "ns_per_run=")
        })
        .sum()
}

fn loss_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("lost data"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Profiler flags and environment of a probed run.
type Probe<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// One fixed-work run; `probe` None = alone. Returns (elapsed ns, CPU ns
/// of the process during the work, profiler stderr).
fn fixed_work(
    profiler: &Path,
    bin: &Path,
    flag: &str,
    n: usize,
    probe: Option<Probe>,
    scratch: &Path,
) -> Result<(f64, f64, String)> {
    let n = n.to_string();
    let parse = |text: &str| -> Result<(f64, f64)> {
        let ns = field(text, "elapsed_ns=").with_context(|| format!("no elapsed_ns in {text}"))?;
        let cpu = field(text, "cpu_ns=").with_context(|| format!("no cpu_ns in {text}"))?;
        Ok((ns, cpu))
    };
    // `flag` is the workload's counting flag, then optional extra flags.
    let mut words = flag.split_whitespace();
    let first = words.next().unwrap_or_default();
    let args = |delay: &'static str| -> Vec<String> {
        let mut a = vec![first.to_string(), n.clone()];
        a.extend(words.clone().map(str::to_string));
        a.extend(["-start-delay".to_string(), delay.to_string()]);
        a
    };
    // Alone and probed runs wait the same 3 s before the work (the
    // profiler attaches meanwhile), so both loops start from the same
    // runtime state.
    let Some((probe, env)) = probe else {
        let a = args("3s");
        let c = start_workload(bin, &a.iter().map(String::as_str).collect::<Vec<_>>())?;
        let out = c.wait_with_output()?;
        let (ns, cpu) = parse(&String::from_utf8_lossy(&out.stdout))?;
        return Ok((ns, cpu, String::new()));
    };
    let a = args("3s");
    let c = start_workload(bin, &a.iter().map(String::as_str).collect::<Vec<_>>())?;
    let p = start_profiler(profiler, c.id(), probe, scratch, env)?;
    let out = c.wait_with_output()?;
    let stderr = stop_profiler(p)?;
    let (ns, cpu) = parse(&String::from_utf8_lossy(&out.stdout))?;
    Ok((ns, cpu, stderr))
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn work_rate(profiler: &Path, bin: &Path, probe: Option<&[&str]>, scratch: &Path) -> Result<f64> {
    let secs = format!("{WORK_SECONDS}s");
    let c = start_workload(bin, &["-work", "-duration", &secs, "-start-delay", "1s"])?;
    let p = match probe {
        Some(probe) => Some(start_profiler(profiler, c.id(), probe, scratch, &[])?),
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
        Some(probe) => Some(start_profiler(profiler, c.id(), probe, scratch, &[])?),
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

type Case<'a> = (
    &'a str,
    &'a str,
    usize,
    &'a [&'a str],
    &'a [(&'a str, &'a str)],
    &'a str,
);

/// Per-event cost, side by side: each case alternates `EVENT_RUNS` runs
/// alone and probed; the extra CPU time (and wall time) of the probed runs
/// over the median alone run, divided by the events, plus the program's
/// own time from bpf_stats.
fn per_event(
    profiler: &Path,
    bin: &Path,
    scratch: &Path,
    calls: &[&str],
    gor: &[&str],
    allocs: &[&str],
) -> Result<()> {
    const EVENT_RUNS: usize = 3;
    println!(
        "== per event: extra CPU time (wall time) of a tight loop / events, median of {EVENT_RUNS} alternated runs; load average {}",
        load_avg()
    );
    let refill: &[&str] = &["--profile", "allocs"];
    let set_rate: &[&str] = &["--profile", "allocs", "--allocs-set-rate", "524288"];
    let latency: &[&str] = &["--profile", "latency", "--latency", "main.countedTarget"];
    let cases: [Case; 15] = [
        (
            "counted call: trap only (program returns at once)",
            "-bench-calls",
            2_000_000,
            calls,
            &[("PROFILER_GO_CALL_STAGE", "trap")],
            "go_call",
        ),
        (
            "counted call: + frame-pointer walk and [SP], no map update",
            "-bench-calls",
            2_000_000,
            calls,
            &[("PROFILER_GO_CALL_STAGE", "unwind")],
            "go_call",
        ),
        (
            "counted call: + kernel stack id and [SP], no map update (old)",
            "-bench-calls",
            2_000_000,
            calls,
            &[("PROFILER_GO_CALL_STAGE", "stackid-unwind")],
            "go_call",
        ),
        (
            "counted call: full stack per call (default, frame-pointer walk)",
            "-bench-calls",
            2_000_000,
            calls,
            &[],
            "go_call",
        ),
        (
            "counted call: full stack per call, kernel stack id (old)",
            "-bench-calls",
            2_000_000,
            calls,
            &[("PROFILER_GO_CALL_STAGE", "stackid")],
            "go_call",
        ),
        (
            "counted call: --count-stacks caller",
            "-bench-calls",
            2_000_000,
            calls,
            &[("PROFILER_GO_COUNT_STACKS", "caller")],
            "go_call",
        ),
        (
            "counted call: full stack per call, 32 frames deeper",
            "-bench-calls -bench-depth=32",
            1_000_000,
            calls,
            &[],
            "go_call",
        ),
        (
            "counted call: full stack per call, kernel stack id (old), 32 frames deeper",
            "-bench-calls -bench-depth=32",
            1_000_000,
            calls,
            &[("PROFILER_GO_CALL_STAGE", "stackid")],
            "go_call",
        ),
        (
            "counted call: --count-stacks caller, 32 frames deeper",
            "-bench-calls -bench-depth=32",
            1_000_000,
            calls,
            &[("PROFILER_GO_COUNT_STACKS", "caller")],
            "go_call",
        ),
        (
            "counted call: probe on the first instruction (single-stepped)",
            "-bench-calls",
            500_000,
            calls,
            &[("PROFILER_GO_PROBE_AT_ENTRY", "1")],
            "go_call",
        ),
        (
            "latency-measured call: entry probe + probe on each RET (RET single-stepped)",
            "-bench-calls",
            500_000,
            latency,
            &[],
            "go_lat_entry+go_lat_ret",
        ),
        (
            "goroutine create+exit (3 probes)",
            "-bench-goroutines",
            200_000,
            gor,
            &[],
            "go_newproc",
        ),
        (
            "4 KiB allocation: --allocs-exact (mallocgc)",
            "-bench-allocs",
            1_000_000,
            allocs,
            &[],
            "go_alloc",
        ),
        (
            "4 KiB allocation: (*mcache).refill (PROFILER_GO_ALLOCS_PROBE=refill)",
            "-bench-allocs",
            1_000_000,
            refill,
            &[("PROFILER_GO_ALLOCS_PROBE", "refill")],
            "go_alloc",
        ),
        (
            "4 KiB allocation: --allocs-set-rate 524288 (profilealloc)",
            "-bench-allocs",
            1_000_000,
            set_rate,
            &[],
            "go_alloc",
        ),
    ];
    let only = std::env::var("GO_BENCH_CASES").ok();
    for (label, flag, n, probe, env, prog) in cases {
        if only.as_deref().is_some_and(|o| !label.contains(o)) {
            continue;
        }
        let (mut alone_cpu, mut alone_wall) = (Vec::new(), Vec::new());
        let (mut with_cpu, mut with_wall, mut prog_cost) = (Vec::new(), Vec::new(), Vec::new());
        let mut losses = Vec::new();
        for _ in 0..EVENT_RUNS {
            let (w, c, _) = fixed_work(profiler, bin, flag, n, None, scratch)?;
            alone_wall.push(w);
            alone_cpu.push(c);
            let (w, c, stderr) = fixed_work(profiler, bin, flag, n, Some((probe, env)), scratch)?;
            with_wall.push(w);
            with_cpu.push(c);
            if let Some(ns) = prog_ns(&stderr, prog) {
                prog_cost.push(ns);
            }
            losses.extend(loss_lines(&stderr));
        }
        let (ac, aw) = (median(&mut alone_cpu), median(&mut alone_wall));
        let per_cpu: Vec<f64> = with_cpu.iter().map(|c| (c - ac) / n as f64 / 1e3).collect();
        let mut per = per_cpu.clone();
        let m = median(&mut per);
        let mw = (median(&mut with_wall) - aw) / n as f64 / 1e3;
        let pc = median(&mut prog_cost);
        let ratio = median(&mut with_cpu) / ac;
        println!(
            "{label}: {n} events: {m:.2} us/event CPU (runs {}), {mw:.2} us wall, loop CPU x{ratio:.2}; {prog} program {:.0} ns/run",
            per_cpu
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join("/"),
            pc
        );
        losses.dedup();
        for l in losses {
            println!("    {l}");
        }
    }
    println!("   (load average after: {})", load_avg());
    Ok(())
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
        let calls: &[&str] = &["--profile", "calls", "--count", "main.countedTarget"];
        let gor: &[&str] = &["--profile", "goroutines"];
        let allocs: &[&str] = &["--profile", "allocs", "--allocs-exact"];
        per_event(&profiler, &bin, &scratch, calls, gor, allocs)?;
        if std::env::var_os("GO_BENCH_PER_EVENT_ONLY").is_some() {
            return Ok(());
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
