//! `cargo xtask bench lock`: the in-kernel cost of the contention and
//! off-CPU programs, from `bpf_stats` (`run_time_ns / run_cnt` in each
//! program's fdinfo; the bench turns `kernel.bpf_stats_enabled` on and
//! restores it).
//!
//! * Contention: `lockwait -mode mutex` (4 goroutines on one
//!   `sync.Mutex`, held 200 µs) under `profiler record --profile
//!   contention`; the cost per slow-path lock is the summed run time of
//!   `go_park` and `go_park_ready` divided by the waits measured (the
//!   uprobe traps around the programs are not included).
//! * Off-CPU: `lockwait -mode sleep` (2 threads in `nanosleep` 1 ms at a
//!   time) under `profiler record --profile offcpu` at the default 1 in 8,
//!   and an idle target (`sleep`) to measure a switch of a thread that is
//!   not a target (the program runs on every context switch of the
//!   machine). The cost per context switch of a target is
//!   `(run_time - non-target runs x idle cost per run) / target switches`.
//!
//! `--runs N` rounds (default 3); medians and ranges are printed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

const GO: &str = "/usr/lib/go-1.23/bin/go";

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

/// `name runs=R ns_per_run=N` in `text`: (R, R x N).
fn prog(text: &str, name: &str) -> Option<(f64, f64)> {
    let at = text.find(&format!("{name} runs="))?;
    let rest = &text[at + name.len() + 1..];
    let runs: f64 = rest
        .strip_prefix("runs=")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let per: f64 = rest
        .split_whitespace()
        .nth(1)?
        .strip_prefix("ns_per_run=")?
        .parse()
        .ok()?;
    Some((runs, runs * per))
}

/// The number after `key` (e.g. `offcpu_switches=`) in `text`.
fn num(text: &str, key: &str) -> Option<f64> {
    let at = text.find(key)?;
    text[at + key.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn record(profiler: &Path, out: &Path, args: &[&str], cmd: &[&str]) -> Result<String> {
    let o = Command::new(profiler)
        .args(["record", "--quiet"])
        .args(args)
        .arg("-o")
        .arg(out)
        .arg("--")
        .args(cmd)
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {}", profiler.display()))?;
    let text = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        bail!("profiler record failed: {text}");
    }
    Ok(text)
}

/// Run the benchmark.
pub fn run(root: &Path, runs: usize) -> Result<()> {
    let release = crate::build_release(root)?;
    let dir = root.join("target/lock-bench");
    std::fs::create_dir_all(&dir)?;
    let profiler = dir.join("profiler");
    std::fs::copy(release.join("profiler"), &profiler)?;
    let bin = build_lockwait(root, &dir)?;
    let stats = Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let before = std::fs::read_to_string(stats).context("reading kernel.bpf_stats_enabled")?;
    std::fs::write(stats, "1").context("enabling kernel.bpf_stats_enabled (needs root)")?;
    let result = measure(&profiler, &bin, &dir, runs);
    let _ = std::fs::write(stats, before.trim());
    result
}

/// Build the `lockwait` workload into `dir` (Go 1.23).
pub fn build_lockwait(root: &Path, dir: &Path) -> Result<PathBuf> {
    let bin: PathBuf = dir.join("lockwait");
    let st = Command::new(GO)
        .current_dir(root.join("tests/workloads"))
        .env("GOCACHE", root.join("target/gocache-lock-bench"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("./lockwait")
        .status()
        .with_context(|| format!("running {GO} (is Go 1.23 installed?)"))?;
    if !st.success() {
        bail!("go build ./lockwait failed");
    }
    Ok(bin)
}

/// The rounds of the benchmark with `profiler` and the `lockwait` binary
/// `bin` (bpf_stats must be on): per round and as medians, the BPF time
/// per contended lock and per context switch of a target.
pub fn measure(profiler: &Path, bin: &Path, dir: &Path, runs: usize) -> Result<()> {
    let bin = bin.to_str().context("workload path")?;
    let out = dir.join("out.pb.gz");
    let (mut per_wait, mut park, mut ready) = (vec![], vec![], vec![]);
    let (mut per_target, mut idle, mut per_run) = (vec![], vec![], vec![]);
    for round in 1..=runs.max(1) {
        let t = record(
            profiler,
            &out,
            &["--profile", "contention"],
            &[
                bin,
                "-mode",
                "mutex",
                "-workers",
                "4",
                "-hold",
                "200us",
                "-duration",
                "4s",
                "-start-delay",
                "1s",
            ],
        )?;
        let waits = num(&t, "contention: ").context("no contention summary")?;
        let p = prog(&t, "go_park").context("no go_park cost (bpf_stats)")?;
        let r = prog(&t, "go_park_ready").context("no go_park_ready cost")?;
        let w = (p.1 + r.1) / waits.max(1.0);
        println!(
            "round {round}: contention: {waits:.0} waits, {w:.0} ns of BPF program time per wait (go_park {:.0} ns x {:.0}, go_park_ready {:.0} ns x {:.0})",
            p.1 / p.0.max(1.0), p.0, r.1 / r.0.max(1.0), r.0
        );
        per_wait.push(w);
        park.push(p.1 / p.0.max(1.0));
        ready.push(r.1 / r.0.max(1.0));

        // A target that never runs: every run of offcpu_switch is a switch
        // of some other thread.
        let t = record(
            profiler,
            &out,
            &["--profile", "offcpu", "--duration", "4s"],
            &["sleep", "5"],
        )?;
        let (ir, it) = prog(&t, "offcpu_switch").context("no offcpu_switch cost")?;
        let c0 = it / ir.max(1.0);
        let t = record(
            profiler,
            &out,
            &["--profile", "offcpu"],
            &[
                bin,
                "-mode",
                "sleep",
                "-workers",
                "2",
                "-hold",
                "1ms",
                "-duration",
                "4s",
            ],
        )?;
        let (runs_all, total) = prog(&t, "offcpu_switch").context("no offcpu_switch cost")?;
        let switches = num(&t, "offcpu_switches=").context("no offcpu counters")?;
        let per = (total - (runs_all - switches).max(0.0) * c0) / switches.max(1.0);
        println!(
            "round {round}: offcpu (1 in 8): {switches:.0} target switches of {runs_all:.0} runs, {:.0} ns per run overall, {c0:.0} ns per run of a non-target switch (idle target), {per:.0} ns per target switch",
            total / runs_all.max(1.0)
        );
        per_target.push(per);
        idle.push(c0);
        per_run.push(total / runs_all.max(1.0));
    }
    println!("\nmedians over {} rounds (range):", runs.max(1));
    println!(
        "contention: {:.0} ns BPF time per slow-path lock ({}); go_park {:.0} ns, go_park_ready {:.0} ns per run",
        median(&mut per_wait.clone()),
        range(&per_wait),
        median(&mut park),
        median(&mut ready)
    );
    println!(
        "offcpu at 1 in 8: {:.0} ns per target context switch ({}); {:.0} ns per run overall; {:.0} ns per non-target switch",
        median(&mut per_target.clone()),
        range(&per_target),
        median(&mut per_run),
        median(&mut idle)
    );
    Ok(())
}
