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
//! the medians (wall time with its range, CPU time from rusage, peak RSS),
//! the load average and the ratios pprof / profdiff are printed.

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

/// One run of a command: wall time, CPU time (user + system, from
/// `wait4`'s rusage: less disturbed by other load than the wall time) and
/// peak RSS.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
    rss: u64,
}

/// The 1-minute load average, for the record.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Runs `cmd` (stdout to /dev/null); wall time, CPU time and peak RSS of
/// the child. Exit codes in `ok` count as success.
fn measure(cmd: &mut Command, ok: &[i32]) -> Result<Run> {
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
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Run {
        wall: d,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss: ru.ru_maxrss as u64 * 1024,
    })
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
    let load_before = loadavg();
    let (mut go, mut gate, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for i in 0..runs {
        go.push(measure(&mut go_cmd(), &[0])?);
        gate.push(measure(&mut pd_cmd("gate"), &gate_ok)?);
        diff.push(measure(&mut pd_cmd("diff"), &[0])?);
        println!(
            "run {}: go tool pprof {:.0} ms (CPU {:.0} ms), profdiff gate {:.0} ms (CPU {:.0} ms), profdiff diff {:.0} ms (CPU {:.0} ms)",
            i + 1,
            ms(go[i].wall),
            ms(go[i].cpu),
            ms(gate[i].wall),
            ms(gate[i].cpu),
            ms(diff[i].wall),
            ms(diff[i].cpu)
        );
    }
    let med = |v: &[Run], f: fn(&Run) -> Duration| median(&v.iter().map(f).collect::<Vec<_>>());
    let range = |v: &[Run]| {
        let w: Vec<Duration> = v.iter().map(|r| r.wall).collect();
        format!(
            "{:.0}-{:.0}",
            ms(*w.iter().min().unwrap_or(&Duration::ZERO)),
            ms(*w.iter().max().unwrap_or(&Duration::ZERO))
        )
    };
    let (g, gt, dt) = (
        med(&go, |r| r.wall),
        med(&gate, |r| r.wall),
        med(&diff, |r| r.wall),
    );
    let (gc, gtc, dtc) = (
        med(&go, |r| r.cpu),
        med(&gate, |r| r.cpu),
        med(&diff, |r| r.cpu),
    );
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let rss = |v: &[Run]| median(&v.iter().map(|r| r.rss).collect::<Vec<_>>());
    println!(
        "median of {runs}: go tool pprof -top -diff_base {:.0} ms (range {}, CPU {:.0} ms, {:.0} MiB peak RSS), profdiff gate {:.0} ms (range {}, CPU {:.0} ms, {:.0} MiB), profdiff diff {:.0} ms (range {}, CPU {:.0} ms, {:.0} MiB)",
        ms(g),
        range(&go),
        ms(gc),
        mib(rss(&go)),
        ms(gt),
        range(&gate),
        ms(gtc),
        mib(rss(&gate)),
        ms(dt),
        range(&diff),
        ms(dtc),
        mib(rss(&diff)),
    );
    println!(
        "load average (1 min): {load_before} before the runs, {} after",
        loadavg()
    );
    println!(
        "ratio pprof/profdiff, wall: gate {:.1}x, diff {:.1}x (goal: gate >= 20x); CPU: gate {:.1}x, diff {:.1}x",
        g.as_secs_f64() / gt.as_secs_f64(),
        g.as_secs_f64() / dt.as_secs_f64(),
        gc.as_secs_f64() / gtc.as_secs_f64().max(1e-9),
        gc.as_secs_f64() / dtc.as_secs_f64().max(1e-9),
    );
    // How sure the gate's ratio is: each run's own ratio (pprof and gate
    // run back to back, so they share the host's state at the time), and
    // a bootstrap interval of the ratio of medians over the runs.
    let walls = |v: &[Run]| v.iter().map(|r| r.wall.as_secs_f64()).collect::<Vec<f64>>();
    let (gw, tw) = (walls(&go), walls(&gate));
    let mut per_run: Vec<f64> = gw.iter().zip(&tw).map(|(a, b)| a / b).collect();
    per_run.sort_by(f64::total_cmp);
    let (lo, hi) = ratio_interval(&gw, &tw, 2000);
    println!(
        "gate ratio per run (pprof and gate back to back): median {:.1}x, range {:.1}-{:.1}x, {} of {runs} at or above 20x; 95% bootstrap interval of the ratio of medians {lo:.1}-{hi:.1}x",
        median_f64(&per_run),
        per_run.first().copied().unwrap_or(0.0),
        per_run.last().copied().unwrap_or(0.0),
        per_run.iter().filter(|&&r| r >= 20.0).count(),
    );
    Ok(())
}

fn median_f64(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The 2.5% and 97.5% quantiles of `median(a) / median(b)` over
/// `rounds` resamples of the run pairs (with replacement; deterministic).
fn ratio_interval(a: &[f64], b: &[f64], rounds: usize) -> (f64, f64) {
    let n = a.len().min(b.len());
    if n == 0 {
        return (0.0, 0.0);
    }
    // splitmix64: a fixed seed, so the same runs give the same interval.
    let mut z: u64 = 0x5eed_d1ff;
    let mut next = || {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut v = z;
        v = (v ^ (v >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v ^ (v >> 31)
    };
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| (next() % n as u64) as usize).collect();
            let ma = median_f64(&idx.iter().map(|&i| a[i]).collect::<Vec<_>>());
            let mb = median_f64(&idx.iter().map(|&i| b[i]).collect::<Vec<_>>());
            ma / mb.max(1e-12)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let q = |p: f64| ratios[((p * (rounds - 1) as f64).round() as usize).min(rounds - 1)];
    (q(0.025), q(0.975))
}
