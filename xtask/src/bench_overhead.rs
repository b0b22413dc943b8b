//! `cargo xtask bench overhead`: what `profiler record` costs a busy Go
//! program with a deep stack, at 99 Hz and at 999 Hz, and what the
//! in-kernel sampler costs per run, old user-stack path against new.
//!
//! The workload is `samestack -depth 40` (one thread per CPU, each 45 Go
//! frames deep, spinning). Each round runs, back to back:
//!
//! * the workload alone (throughput reference);
//! * at each frequency: under `profiler record --pid` with the sampler's
//!   own frame-pointer walk (the shipped path), with the old path
//!   (`bpf_get_stackid(BPF_F_USER_STACK)`, selected in a profiler built
//!   with the `bench-sampler` feature), and targeting an idle process while
//!   the workload runs (every run of the program returns at the filter);
//! * at 99 Hz, whole-system mode (no target filter), new and old;
//! * with `BENCH_OVERHEAD_BASELINE=PATH` (a `profiler` built from an
//!   earlier commit, e.g. `cargo build --release -p profiler-user --features
//!   bench-sampler` there), that binary too, alternated with the current one
//!   in every round: targeted and idle-target at each frequency, and
//!   whole-system at 99 Hz, so two commits' costs are compared under the
//!   same load;
//! * with `BENCH_OVERHEAD_PHASES=1`, after the rounds, a profiler built with
//!   the `bench-phases` feature (clock reads at `cpu_sample`'s phase
//!   boundaries, summed per phase in the PHASE map of the program, read
//!   with `bpftool` near the end of each run), alternating 99 and 999 Hz:
//!   where a sampled run's time goes. The clock reads cost time
//!   themselves, so these totals are not the figures above.
//!
//! Per profiled run the profiler reports `run_cnt` and `run_time_ns` of
//! `cpu_sample` (`bpf_stats`), and its counters `samples` (runs that hit a
//! target) and `filtered_out`. The idle-target runs give the cost of a
//! filtered-out run `b = run_time_ns / filtered_out`; a targeted run gives
//! the cost of a sampled run `(run_time_ns - b * filtered_out) / samples`.
//! Throughput ratios, the profiler's CPU time (% of one core) and peak RSS
//! (`wait4` rusage of the profiler process only) are medians over rounds.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

/// Extra frames of the workload's stack (a Kubernetes controller's stacks
/// are 30-60 frames deep).
const DEPTH: &str = "40";

fn field(text: &str, name: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
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
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("profiler failed: {text}");
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
    Command::new(bin.join("samestack"))
        .args(["-duration", &format!("{seconds}s"), "-depth", DEPTH])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting samestack")
}

fn workload_result(child: std::process::Child) -> Result<f64> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    field(&text, "units_per_sec")
        .with_context(|| format!("samestack printed no units_per_sec: {text}"))
}

/// Which user-stack path and which target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The shipped path (frame-pointer walk in the program), target = workload.
    New,
    /// `bpf_get_stackid(BPF_F_USER_STACK)`, target = workload.
    Old,
    /// The shipped path, target = an idle process (all runs filtered out).
    Idle,
    /// No target filter (whole system), shipped path.
    WholeNew,
    /// No target filter, old path.
    WholeOld,
    /// The baseline binary, target = workload.
    Base,
    /// The baseline binary, target = an idle process.
    BaseIdle,
    /// The baseline binary, no target filter.
    WholeBase,
}

impl Mode {
    fn baseline(self) -> bool {
        matches!(self, Mode::Base | Mode::BaseIdle | Mode::WholeBase)
    }
}

#[derive(Default)]
struct Run {
    ratio: f64,
    cpu_pct: f64,
    rss_kib: f64,
    run_time_ns: f64,
    samples: f64,
    filtered_out: f64,
}

fn profiled(
    profiler: &Path,
    bins: &Path,
    out_dir: &Path,
    seconds: u64,
    freq: u64,
    mode: Mode,
    alone: f64,
) -> Result<Run> {
    let w = run_workload(bins, seconds)?;
    let mut idle = None;
    let mut cmd = Command::new(profiler);
    cmd.args(["record", "--quiet", "--frequency", &freq.to_string()])
        .args(["--duration", &format!("{seconds}s")])
        .args(["-o", out_dir.join("cpu.pb.gz").to_str().unwrap()])
        .stderr(Stdio::piped());
    match mode {
        Mode::New | Mode::Old | Mode::Base => {
            cmd.args(["--pid", &w.id().to_string()]);
        }
        Mode::Idle | Mode::BaseIdle => {
            let s = Command::new("sleep")
                .arg(format!("{}", seconds + 5))
                .spawn()
                .context("starting sleep")?;
            cmd.args(["--pid", &s.id().to_string()]);
            idle = Some(s);
        }
        Mode::WholeNew | Mode::WholeOld | Mode::WholeBase => {}
    }
    if matches!(mode, Mode::Old | Mode::WholeOld) {
        cmd.env("PROFILER_BENCH_USER_STACKS", "stackid");
    }
    let p = cmd.spawn().context("starting profiler")?;
    let under = workload_result(w)?;
    let usage = wait_usage(p);
    if let Some(mut s) = idle {
        let _ = s.kill();
        let _ = s.wait();
    }
    let usage = usage?;
    let line = usage
        .stderr
        .lines()
        .find(|l| l.contains("cpu_sample program:"))
        .with_context(|| format!("no bpf_stats line from the profiler: {}", usage.stderr))?;
    let get = |name: &str| field(line, name).with_context(|| format!("{name} missing: {line}"));
    Ok(Run {
        ratio: under / alone,
        cpu_pct: usage.cpu.as_secs_f64() / seconds as f64 * 100.0,
        rss_kib: usage.max_rss_kib as f64,
        run_time_ns: get("run_time_ns")?,
        samples: get("samples")?,
        filtered_out: get("filtered_out")?,
    })
}

/// Run the benchmark.
pub fn run(root: &Path, runs: usize, seconds: u64) -> Result<()> {
    crate::setup::setup(root)?;
    let bins = crate::workloads::build_workloads(root)?;
    let out_dir = crate::target_dir(root).join("bench-overhead");
    std::fs::create_dir_all(&out_dir)?;
    // The old user-stack path is selectable only in this build.
    let profiler = out_dir.join("profiler-bench-sampler");
    crate::build_bench_profiler(root, "bench-sampler", &profiler)?;
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled (run as root)")?;
    let phases = std::env::var_os("BENCH_OVERHEAD_PHASES").is_some_and(|v| v == "1");
    let phase_profiler = out_dir.join("profiler-bench-phases");
    if phases {
        crate::build_bench_profiler(root, "bench-sampler,bench-phases", &phase_profiler)?;
        // build_bench_profiler left the phase build in target/release.
        crate::build_bench_profiler(root, "bench-sampler", &profiler)?;
    }
    let mut result = rounds(&profiler, &bins, &out_dir, runs, seconds);
    if result.is_ok() && phases {
        result = phase_rounds(&phase_profiler, &bins, &out_dir, runs, seconds);
    }
    if let Some(v) = stats_before {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", v.trim());
    }
    result
}

fn rounds(profiler: &Path, bins: &Path, out_dir: &Path, runs: usize, seconds: u64) -> Result<()> {
    let baseline = std::env::var_os("BENCH_OVERHEAD_BASELINE").map(std::path::PathBuf::from);
    if let Some(b) = &baseline {
        if !b.is_file() {
            bail!(
                "BENCH_OVERHEAD_BASELINE={}: no such file (give a profiler binary built from the commit to compare with)",
                b.display()
            );
        }
    }
    let freqs = [99u64, 999];
    let mut plan: Vec<(u64, Mode)> = Vec::new();
    for &f in &freqs {
        plan.extend([(f, Mode::New), (f, Mode::Old), (f, Mode::Idle)]);
        if baseline.is_some() {
            plan.extend([(f, Mode::Base), (f, Mode::BaseIdle)]);
        }
    }
    plan.extend([(99, Mode::WholeNew), (99, Mode::WholeOld)]);
    if baseline.is_some() {
        plan.push((99, Mode::WholeBase));
    }
    let mut results: Vec<Vec<Run>> = plan.iter().map(|_| Vec::new()).collect();
    println!(
        "bench overhead: {runs} rounds of {seconds}s runs of samestack -depth {DEPTH} (one thread per CPU): alone, then per frequency {freqs:?} under profiler record --pid with the new and the old user-stack path and with an idle target, and whole-system new/old at 99 Hz"
    );
    for round in 0..runs {
        let alone = workload_result(run_workload(bins, seconds)?)?;
        println!("  round {}: alone {alone:.0} units/s", round + 1);
        for (i, &(freq, mode)) in plan.iter().enumerate() {
            let bin = match (&baseline, mode.baseline()) {
                (Some(b), true) => b.as_path(),
                _ => profiler,
            };
            let r = profiled(bin, bins, out_dir, seconds, freq, mode, alone)?;
            println!(
                "    {freq:>3} Hz {:<10} ratio {:.4}  profiler cpu {:.2}%  rss {:.0} KiB  runs: {} sampled, {} filtered out, {:.0} ns per run",
                name(mode),
                r.ratio,
                r.cpu_pct,
                r.rss_kib,
                r.samples,
                r.filtered_out,
                r.run_time_ns / (r.samples + r.filtered_out).max(1.0)
            );
            results[i].push(r);
        }
    }
    let find = |freq: u64, mode: Mode| {
        plan.iter()
            .position(|&p| p == (freq, mode))
            .map(|i| &results[i])
            .expect("planned")
    };
    // Cost of a filtered-out run at each frequency, from the idle-target
    // runs (every run filtered out). It differs by frequency: at 99 Hz the
    // program's code and maps are colder at each run.
    let filtered_ns_of = |freq: u64, idle: Mode| {
        median(
            &find(freq, idle)
                .iter()
                .filter(|r| r.filtered_out > 0.0)
                .map(|r| r.run_time_ns / (r.filtered_out + r.samples))
                .collect::<Vec<_>>(),
        )
    };
    let filtered_ns = |freq: u64| filtered_ns_of(freq, Mode::Idle);
    let per_sampled = |rs: &[Run], b: f64| {
        median(
            &rs.iter()
                .filter(|r| r.samples > 0.0)
                .map(|r| (r.run_time_ns - b * r.filtered_out) / r.samples)
                .collect::<Vec<_>>(),
        )
    };
    let range = |rs: &[Run], b: f64| {
        let v: Vec<f64> = rs
            .iter()
            .filter(|r| r.samples > 0.0)
            .map(|r| (r.run_time_ns - b * r.filtered_out) / r.samples)
            .collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.0}-{hi:.0}")
    };
    for &freq in &freqs {
        let b = filtered_ns(freq);
        let new = find(freq, Mode::New);
        let old = find(freq, Mode::Old);
        let col = |rs: &[Run], f: fn(&Run) -> f64| median(&rs.iter().map(f).collect::<Vec<_>>());
        println!(
            "{freq} Hz: sampled run {:.0} ns new vs {:.0} ns old; filtered-out run {b:.0} ns; throughput ratio profiled/alone {:.4} new (slowdown {:.2}%), {:.4} old; profiler cpu {:.2}% of a core, peak RSS {:.1} MiB (new; medians of {runs} rounds)",
            per_sampled(new, b),
            per_sampled(old, b),
            col(new, |r| r.ratio),
            (1.0 - col(new, |r| r.ratio)) * 100.0,
            col(old, |r| r.ratio),
            col(new, |r| r.cpu_pct),
            new.iter().map(|r| r.rss_kib).fold(0.0, f64::max) / 1024.0,
        );
        println!(
            "  {freq} Hz ranges over rounds: sampled run new {} ns, old {} ns",
            range(new, b),
            range(old, b)
        );
        if baseline.is_some() {
            let bb = filtered_ns_of(freq, Mode::BaseIdle);
            let base = find(freq, Mode::Base);
            println!(
                "  {freq} Hz baseline binary: sampled run {:.0} ns (rounds {}) vs {:.0} ns current (rounds {}); filtered-out run {bb:.0} ns baseline vs {b:.0} ns current",
                per_sampled(base, bb),
                range(base, bb),
                per_sampled(new, b),
                range(new, b),
            );
        }
    }
    let whole = |rs: &[Run]| {
        median(
            &rs.iter()
                .map(|r| r.run_time_ns / (r.samples + r.filtered_out).max(1.0))
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "whole system, 99 Hz: {:.0} ns per run new vs {:.0} ns old (all runs); sampled run {:.0} ns new vs {:.0} ns old",
        whole(find(99, Mode::WholeNew)),
        whole(find(99, Mode::WholeOld)),
        per_sampled(find(99, Mode::WholeNew), filtered_ns(99)),
        per_sampled(find(99, Mode::WholeOld), filtered_ns(99)),
    );
    if baseline.is_some() {
        println!(
            "whole system, 99 Hz, baseline binary: {:.0} ns per run (all runs) vs {:.0} ns current",
            whole(find(99, Mode::WholeBase)),
            whole(find(99, Mode::WholeNew)),
        );
    }
    Ok(())
}

fn name(mode: Mode) -> &'static str {
    match mode {
        Mode::New => "new",
        Mode::Old => "old",
        Mode::Idle => "idle-tgt",
        Mode::WholeNew => "whole-new",
        Mode::WholeOld => "whole-old",
        Mode::Base => "base",
        Mode::BaseIdle => "base-idle",
        Mode::WholeBase => "whole-base",
    }
}

/// Phases of a sampled run of `cpu_sample` (slots of its PHASE map).
const PHASES: [&str; 6] = [
    "entry to past the target filter",
    "registers, generation, mode",
    "frameless check (index, binary search, [SP])",
    "frame-pointer walk",
    "comm and key",
    "count-map lookup and add",
];

/// Sum of each PHASE slot over CPUs, from `bpftool -j map dump name PHASE`.
fn read_phase_map() -> Result<[f64; 16]> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "name", "PHASE"])
        .output()
        .context("running bpftool (needed by BENCH_OVERHEAD_PHASES=1; install bpftool)")?;
    if !out.status.success() {
        bail!(
            "bpftool map dump name PHASE failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing bpftool's JSON")?;
    let bytes = |x: &serde_json::Value| -> Option<u64> {
        let a = x.as_array()?;
        let mut b = [0u8; 8];
        for (i, e) in a.iter().take(8).enumerate() {
            b[i] = u8::from_str_radix(e.as_str()?.trim_start_matches("0x"), 16).ok()?;
        }
        Some(u64::from_le_bytes(b))
    };
    let mut sums = [0f64; 16];
    for e in v.as_array().context("bpftool: not a list")? {
        let k = bytes(&e["key"]).context("bpftool: bad key")? as usize;
        for c in e["values"]
            .as_array()
            .context("bpftool: no per-CPU values")?
        {
            let val = bytes(&c["value"]).context("bpftool: bad value")?;
            if k < 16 {
                sums[k] += val as f64;
            }
        }
    }
    Ok(sums)
}

fn phase_rounds(
    profiler: &Path,
    bins: &Path,
    out_dir: &Path,
    runs: usize,
    seconds: u64,
) -> Result<()> {
    let freqs = [99u64, 999];
    // Per frequency, per run: ns per sampled run of each phase, then the
    // binary search's ns and steps.
    let mut per: Vec<Vec<[f64; 8]>> = vec![Vec::new(); freqs.len()];
    println!(
        "phases of a sampled run (bench-phases build, {runs} runs per frequency, alternated; ns per sampled run):"
    );
    for round in 0..runs {
        for (fi, &freq) in freqs.iter().enumerate() {
            let w = run_workload(bins, seconds)?;
            let p = Command::new(profiler)
                .args(["record", "--quiet", "--frequency", &freq.to_string()])
                .args(["--duration", &format!("{seconds}s")])
                .args(["--pid", &w.id().to_string()])
                .args(["-o", out_dir.join("cpu-phases.pb.gz").to_str().unwrap()])
                .stderr(Stdio::piped())
                .spawn()
                .context("starting profiler")?;
            std::thread::sleep(Duration::from_millis(
                seconds.saturating_sub(1) * 1000 + 500,
            ));
            let sums = read_phase_map();
            let usage = wait_usage(p);
            workload_result(w)?;
            usage?;
            let sums = sums?;
            let n = sums[15].max(1.0);
            let mut row = [0f64; 8];
            for i in 0..6 {
                row[i] = sums[i] / n;
            }
            row[6] = sums[13] / n;
            row[7] = sums[14] / n;
            println!(
                "  round {} {freq:>3} Hz: {} sampled runs, total {:.0} ns: {} (binary search {:.0} ns, {:.1} steps)",
                round + 1,
                sums[15],
                row[..6].iter().sum::<f64>(),
                row[..6]
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                row[6],
                row[7]
            );
            per[fi].push(row);
        }
    }
    let col = |rows: &[[f64; 8]], i: usize| median(&rows.iter().map(|r| r[i]).collect::<Vec<_>>());
    let total = |rows: &[[f64; 8]]| {
        median(
            &rows
                .iter()
                .map(|r| r[..6].iter().sum::<f64>())
                .collect::<Vec<_>>(),
        )
    };
    println!("phase medians (ns per sampled run): 99 Hz / 999 Hz");
    for (i, name) in PHASES.iter().enumerate() {
        println!("  {name}: {:.0} / {:.0}", col(&per[0], i), col(&per[1], i));
    }
    println!(
        "  of which the binary search: {:.0} / {:.0} ({:.1} steps)",
        col(&per[0], 6),
        col(&per[1], 6),
        col(&per[0], 7)
    );
    println!(
        "  total (from the first clock read): {:.0} / {:.0}",
        total(&per[0]),
        total(&per[1])
    );
    Ok(())
}
