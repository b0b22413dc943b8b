//! `cargo xtask bench diff-vs-pprof`: wall time and peak RSS of `profdiff
//! gate` and `profdiff diff` against `go tool pprof -top -diff_base=BASE
//! CAND` on the same pair of profiles.
//!
//! The pair is the shared corpus' two largest Pyroscope CPU profiles
//! (`grafana__pyroscope/ingesters.pb.gz` as the baseline,
//! `distributors.pb.gz` as the candidate; `$DIFF_BENCH_BASE` and
//! `$DIFF_BENCH_CAND` override them). Without the shared corpus (a user's
//! clone) the bench says so and skips. Runs alternate between the three
//! commands (≥5 each, `$DIFF_BENCH_RUNS`), output goes to /dev/null, and
//! the medians and the ratios pprof / profdiff are printed.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const GO: &str = "/usr/lib/go-1.23/bin/go";
const PAIR: [&str; 2] = [
    "shared/corpus/pprof/grafana__pyroscope/ingesters.pb.gz",
    "shared/corpus/pprof/grafana__pyroscope/distributors.pb.gz",
];

/// The pair, from the environment or the shared corpus beside the repository.
fn pair(root: &Path) -> Option<(PathBuf, PathBuf)> {
    if let (Some(b), Some(c)) = (
        std::env::var_os("DIFF_BENCH_BASE"),
        std::env::var_os("DIFF_BENCH_CAND"),
    ) {
        return Some((PathBuf::from(b), PathBuf::from(c)));
    }
    [root.join(".."), PathBuf::from("/work")]
        .into_iter()
        .map(|base| (base.join(PAIR[0]), base.join(PAIR[1])))
        .find(|(b, c)| b.is_file() && c.is_file())
}

/// Runs `cmd` (stdout to /dev/null); wall time and peak RSS of the child.
/// Exit codes in `ok` count as success.
fn measure(cmd: &mut Command, ok: &[i32]) -> Result<(Duration, u64)> {
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child with valid out-pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let d = t.elapsed();
    if r < 0 {
        bail!("wait4 for {cmd:?}: {}", std::io::Error::last_os_error());
    }
    let st = std::process::ExitStatus::from_raw(status);
    match st.code() {
        Some(c) if ok.contains(&c) => {}
        _ => bail!("{cmd:?} failed: {st}"),
    }
    Ok((d, ru.ru_maxrss as u64 * 1024))
}

fn median<T: Ord + Copy>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// Run the comparison and print medians and the ratios.
pub fn diff_vs_pprof(root: &Path) -> Result<()> {
    let runs: usize = std::env::var("DIFF_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(5);
    let Some((base, cand)) = pair(root) else {
        println!(
            "diff-vs-pprof: skipped: the shared corpus is absent ({} and {} not found beside the repository or under /work; set DIFF_BENCH_BASE and DIFF_BENCH_CAND to two pprof files to run it)",
            PAIR[0], PAIR[1]
        );
        return Ok(());
    };
    if !Path::new(GO).exists() {
        bail!("{GO} not found: run `cargo xtask setup` first");
    }
    println!("building profdiff (release)...");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "diff",
            "--bin",
            "profdiff",
        ])
        .current_dir(root)
        .status()
        .context("cargo build")?;
    if !st.success() {
        bail!("cargo build --release -p diff failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let profdiff = target.join("release/profdiff");
    println!(
        "baseline:  {}\ncandidate: {}",
        base.display(),
        cand.display()
    );

    let go_cmd = || {
        let mut c = Command::new(GO);
        c.args(["tool", "pprof", "-top"])
            .arg(format!("-diff_base={}", base.display()))
            .arg(&cand);
        c
    };
    let pd_cmd = |sub: &str| {
        let mut c = Command::new(&profdiff);
        c.args([sub, "-b"]).arg(&base).arg("-c").arg(&cand);
        c
    };
    // gate: 0 pass, 1 regression, 3 inconclusive are all answers.
    let gate_ok = [0, 1, 3];
    // Warm-up (page cache, Go build cache for `go tool pprof`).
    measure(&mut go_cmd(), &[0])?;
    measure(&mut pd_cmd("gate"), &gate_ok)?;
    measure(&mut pd_cmd("diff"), &[0])?;
    let (mut go_t, mut gate_t, mut diff_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut go_m, mut gate_m, mut diff_m) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let (t, m) = measure(&mut go_cmd(), &[0])?;
        go_t.push(t);
        go_m.push(m);
        let (t, m) = measure(&mut pd_cmd("gate"), &gate_ok)?;
        gate_t.push(t);
        gate_m.push(m);
        let (t, m) = measure(&mut pd_cmd("diff"), &[0])?;
        diff_t.push(t);
        diff_m.push(m);
        println!(
            "run {}: go tool pprof {:.0} ms, profdiff gate {:.0} ms, profdiff diff {:.0} ms",
            i + 1,
            go_t[i].as_secs_f64() * 1e3,
            gate_t[i].as_secs_f64() * 1e3,
            diff_t[i].as_secs_f64() * 1e3
        );
    }
    let (g, gt, dt) = (median(&go_t), median(&gate_t), median(&diff_t));
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "median of {runs}: go tool pprof -top -diff_base {:.0} ms ({:.0} MiB peak RSS), profdiff gate {:.0} ms ({:.0} MiB), profdiff diff {:.0} ms ({:.0} MiB)",
        g.as_secs_f64() * 1e3,
        mib(median(&go_m)),
        gt.as_secs_f64() * 1e3,
        mib(median(&gate_m)),
        dt.as_secs_f64() * 1e3,
        mib(median(&diff_m)),
    );
    println!(
        "ratio pprof/profdiff: gate {:.1}x, diff {:.1}x (goal: gate >= 20x)",
        g.as_secs_f64() / gt.as_secs_f64(),
        g.as_secs_f64() / dt.as_secs_f64()
    );
    Ok(())
}
