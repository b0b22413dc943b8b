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
//!    Also per event: a contended `sync.Mutex` lock (`-bench-locks`: the
//!    waiter parks on the semaphore and is readied; `go_park` +
//!    `go_park_ready`, a warm loop) and a context switch of a target thread
//!    (`-bench-switches`: 20 µs `nanosleep`s under `--profile offcpu`; the
//!    target's extra CPU covers the switch-out, the program time is the
//!    mean over every switch of the machine).
//! 2. Lock probes at `lockwait`'s rate (cold caches): the rounds of
//!    `cargo xtask bench lock` (BPF time per contended lock and per target
//!    context switch); `GO_BENCH_LOCK_ROUNDS` (default 3, 0 skips).
//! 3. CPU time of the controller-like background load alone (rusage, uprobe
//!    traps included), with and without each probe set.
//! 4. Throughput: the workload's controller-like load (1,000 goroutines/s,
//!    10 MiB/s allocation, 2,000 counted calls/s beside a CPU-bound loop),
//!    alone and under each probe set, alternated `RUNS` times; the median
//!    ratio of the loop's rate is the slowdown (wall time: noisy on a
//!    shared machine), beside the ratio of the process's CPU time per unit
//!    of the loop's work (rusage: the same work's CPU cost, traps included;
//!    not inflated by waiting for a CPU); each pair's ratios and the
//!    profiler's own CPU are printed. The last sets add 1,000 contended
//!    locks/s and Go's default `MemProfileRate`: the heap reader alone,
//!    and all eight profile types together
//!    (`cpu,goroutines,allocs,calls,latency,contention,offcpu,heap`, with
//!    `main.countedTarget` counted and latency-measured); the rates the
//!    profiler saw are printed under the row. `GO_BENCH_SETS=TEXT` keeps the
//!    sets whose label contains it.

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
    prog.split('+')
        .map(|p| {
            let key = format!("{p} runs=");
            let l = stderr
                .lines()
                .find(|l| l.contains(&key) && l.contains("ns_per_run"))?;
            let at = l.find(&key)?;
            field(&l[at..], "ns_per_run=")
        })
        .sum()
}

/// CPU time (user + system, ms) of process `pid` so far, from
/// `/proc/PID/stat` (clock ticks: 10 ms resolution).
fn proc_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1e3 / hz)
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

/// A probed run's profiler: its CPU in ms per second (when readable) and
/// its stderr.
type Probed = (Option<f64>, String);

/// One run of the controller-like load beside the CPU-bound loop, with the
/// extra workload flags `extra`: the loop's rate (wall time), the whole
/// process's CPU time per unit of the loop's work (rusage: the load, the
/// loop and the uprobe traps; waiting for a CPU does not count) and, when
/// probed, the profiler's own CPU time in ms per second of its run (from
/// `/proc`, before it is stopped) and its stderr.
fn work_rate(
    profiler: &Path,
    bin: &Path,
    probe: Option<&[&str]>,
    extra: &[&str],
    scratch: &Path,
) -> Result<(f64, f64, Option<Probed>)> {
    let secs = format!("{WORK_SECONDS}s");
    let mut args = vec!["-work", "-duration", &secs, "-start-delay", "1s"];
    args.extend(extra);
    let c = start_workload(bin, &args)?;
    let started = std::time::Instant::now();
    let p = match probe {
        Some(probe) => Some(start_profiler(profiler, c.id(), probe, scratch, &[])?),
        None => None,
    };
    let out = c.wait_with_output()?;
    let mut prof = None;
    if let Some(p) = p {
        let cpu = proc_cpu_ms(p.id()).map(|ms| ms / started.elapsed().as_secs_f64());
        prof = Some((cpu, stop_profiler(p)?));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rate =
        field(&text, "units_per_sec=").with_context(|| format!("no units_per_sec in {text}"))?;
    let units = field(&text, "units=").with_context(|| format!("no units in {text}"))?;
    let cpu = field(&text, "cpu_ns=").with_context(|| format!("no cpu_ns in {text}"))?;
    Ok((rate, cpu / units.max(1.0), prof))
}

/// The profiler's summary lines that show the event rates it saw and its
/// programs' times (bpf_stats).
fn rate_lines(stderr: &str) -> Vec<String> {
    const KEYS: [&str; 8] = [
        "go probe program cost",
        "offcpu program cost",
        "calls: main.countedTarget",
        "latency: main.countedTarget",
        "contention: ",
        "allocs: ",
        "offcpu: 1 switch",
        "heap: pid",
    ];
    stderr
        .lines()
        .map(|l| l.trim_start_matches("profiler: "))
        .filter(|l| KEYS.iter().any(|k| l.starts_with(k)) && !l.contains("MemProfileRate is 0"))
        .map(str::to_string)
        .collect()
}

/// CPU time (user+sys, ms per second of run) the workload's background
/// load alone costs, from its rusage; uprobe traps are charged to it.
fn load_cpu(
    profiler: &Path,
    bin: &Path,
    probe: Option<&[&str]>,
    extra: &[&str],
    scratch: &Path,
) -> Result<f64> {
    let secs = format!("{WORK_SECONDS}s");
    let mut args = vec![
        "-work",
        "-spin=false",
        "-duration",
        &secs,
        "-start-delay",
        "1s",
    ];
    args.extend(extra);
    let c = start_workload(bin, &args)?;
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
    let contention: &[&str] = &["--profile", "contention"];
    let offcpu: &[&str] = &["--profile", "offcpu"];
    let cases: [Case; 17] = [
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
            "contended sync.Mutex lock (slow path; go_park + go_park_ready, warm loop)",
            "-bench-locks",
            100_000,
            contention,
            &[],
            "go_park+go_park_ready",
        ),
        (
            "context switch of a target thread (20us nanosleep), --offcpu-every 8 (program: mean over every switch of the machine)",
            "-bench-switches",
            50_000,
            offcpu,
            &[],
            "offcpu_switch",
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
        let rounds: usize = std::env::var("GO_BENCH_LOCK_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        if rounds > 0 {
            println!(
                "== lock probes at lockwait's rate (~1,000 waits/s, cold caches): BPF program time (cargo xtask bench lock), load average {}",
                load_avg()
            );
            let dir = root.join("target/go-bench");
            let lockwait = crate::bench_lock::build_lockwait(root, &dir)?;
            crate::bench_lock::measure(&profiler, &lockwait, &dir, rounds)?;
        }
        let all: &[&str] = &[
            "--profile",
            "goroutines,allocs,calls",
            "--count",
            "main.countedTarget",
        ];
        let every: &[&str] = &[
            "--profile",
            "cpu,goroutines,allocs,calls,latency,contention,offcpu,heap",
            "--count",
            "main.countedTarget",
            "--latency",
            "main.countedTarget",
        ];
        // 1,000 contended locks/s and Go's default MemProfileRate (what a
        // program that links runtime.MemProfile, e.g. via net/http/pprof,
        // runs with) beside 2,000 measured calls/s, 1,000 goroutines/s and
        // 10 MiB/s.
        let busy: &[&str] = &["-work-locks", "10", "-memprofilerate", "524288"];
        let sets: [(&str, &[&str], &[&str]); 6] = [
            ("calls", calls, &[]),
            ("goroutines", gor, &[]),
            (
                "allocs (MemProfileRate 0: profilealloc never fires)",
                &["--profile", "allocs"],
                &[],
            ),
            ("goroutines+allocs+calls", all, &[]),
            (
                "heap reader only (--profile heap, MemProfileRate 524288, + 1,000 contended locks/s)",
                &["--profile", "heap"],
                busy,
            ),
            (
                "all together: cpu,goroutines,allocs,calls,latency,contention,offcpu,heap (+ 1,000 contended locks/s, MemProfileRate 524288)",
                every,
                busy,
            ),
        ];
        let only = std::env::var("GO_BENCH_SETS").ok();
        let sets: Vec<_> = sets
            .into_iter()
            .filter(|s| only.as_deref().is_none_or(|o| s.0.contains(o)))
            .collect();
        println!(
            "== controller-like load without the CPU-bound loop: its CPU time, median of {RUNS} alternated runs; load average {}",
            load_avg()
        );
        for (label, probe, extra) in &sets {
            let (mut alone, mut with) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                alone.push(load_cpu(&profiler, &bin, None, extra, &scratch)?);
                with.push(load_cpu(&profiler, &bin, Some(probe), extra, &scratch)?);
            }
            let (a, w) = (median(&mut alone), median(&mut with));
            println!(
                "{label}: {a:.1} ms/s alone, {w:.1} ms/s probed: +{:.1} ms CPU per second ({:+.2}% of one core)",
                w - a,
                (w - a) / 10.0
            );
        }
        println!(
            "== controller-like load: work-loop rate probed/alone, median of {RUNS} alternated pairs of {WORK_SECONDS}s; load average {}",
            load_avg()
        );
        for (label, probe, extra) in sets {
            let (mut ratios, mut prof_cpu, mut seen) = (Vec::new(), Vec::new(), Vec::new());
            let mut cpu_ratios = Vec::new();
            for _ in 0..RUNS {
                let (alone, alone_cpu, _) = work_rate(&profiler, &bin, None, extra, &scratch)?;
                let (with, with_cpu, prof) =
                    work_rate(&profiler, &bin, Some(probe), extra, &scratch)?;
                ratios.push(with / alone);
                cpu_ratios.push(with_cpu / alone_cpu);
                if let Some((cpu, stderr)) = prof {
                    prof_cpu.extend(cpu);
                    if seen.is_empty() {
                        seen = rate_lines(&stderr);
                    }
                }
            }
            let pairs = ratios
                .iter()
                .map(|r| format!("{r:.4}"))
                .collect::<Vec<_>>()
                .join(" ");
            let cpu_pairs = cpu_ratios
                .iter()
                .map(|r| format!("{r:.4}"))
                .collect::<Vec<_>>()
                .join(" ");
            let m = median(&mut ratios);
            let mc = median(&mut cpu_ratios);
            println!(
                "{label}: throughput ratio {m:.4} ({:+.2}%; pairs {pairs}); CPU per unit of work probed/alone {mc:.4} ({:+.2}%; pairs {cpu_pairs}); profiler CPU {:.1} ms/s",
                (m - 1.0) * 100.0,
                (mc - 1.0) * 100.0,
                median(&mut prof_cpu)
            );
            for l in seen {
                println!("    first probed run: {l}");
            }
        }
        println!("   (load average after: {})", load_avg());
        Ok(())
    })();
    let _ = std::fs::write(stats, old_stats.trim());
    std::thread::sleep(Duration::from_millis(10));
    result
}
