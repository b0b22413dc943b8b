//! `cargo xtask bench diff-vs-pprof`: wall time of `profdiff diff` against
//! `go tool pprof -top -diff_base=BASE CAND` on the same pair of profiles.
//!
//! The pair is the largest Go CPU profile of the shared corpus
//! (`google__pprof/internal__proftest__testdata__large.cpu`, or
//! `$DIFF_BENCH_PROFILE`) and a copy written by our encoder where every
//! sample whose stack contains `time.now` is scaled by 1.5 (a plausible
//! regression, so both tools have real differences to report). Runs
//! alternate between the tools (≥5 each, `$DIFF_BENCH_RUNS`), output goes to
//! /dev/null, and the medians and their ratio are printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const GO: &str = "/usr/lib/go-1.23/bin/go";

fn corpus_profile(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("DIFF_BENCH_PROFILE") {
        return PathBuf::from(p);
    }
    let rel = "shared/corpus/pprof/google__pprof/internal__proftest__testdata__large.cpu";
    for base in [root.join(".."), PathBuf::from("/work")] {
        let p = base.join(rel);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("/work").join(rel)
}

fn time(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let d = t.elapsed();
    if !st.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&st.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(d)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Run the comparison and print medians and the ratio.
pub fn diff_vs_pprof(root: &Path) -> Result<()> {
    let runs: usize = std::env::var("DIFF_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(5);
    let base = corpus_profile(root);
    let profile =
        diff::input::load_profile(&base).with_context(|| format!("loading {}", base.display()))?;
    // Candidate: scale samples through time.now by 1.5.
    let mut cand = profile.clone();
    let hot: Vec<bool> = cand
        .frames
        .iter()
        .map(|f| f.function.contains("time.now"))
        .collect();
    let mut scaled = 0usize;
    for s in &mut cand.samples {
        if s.stack.iter().any(|&f| hot[f as usize]) {
            for v in &mut s.values {
                *v = *v * 3 / 2;
            }
            scaled += 1;
        }
    }
    let dir = std::env::temp_dir().join(format!("profdiff-bench-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cand_path = dir.join("candidate.pb.gz");
    std::fs::write(&cand_path, diff::pprof::encode_gzip(&cand))
        .with_context(|| format!("writing {}", cand_path.display()))?;

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
        "base: {} ({} samples, {} frames); candidate: {} ({} samples scaled x1.5)",
        base.display(),
        profile.samples.len(),
        profile.frames.len(),
        cand_path.display(),
        scaled
    );
    let go_cmd = || {
        let mut c = Command::new(GO);
        c.args(["tool", "pprof", "-top"])
            .arg(format!("-diff_base={}", base.display()))
            .arg(&cand_path);
        c
    };
    let pd_cmd = || {
        let mut c = Command::new(&profdiff);
        c.args(["diff", "-b"]).arg(&base).arg("-c").arg(&cand_path);
        c
    };
    // Warm-up (page cache, Go build cache for `go tool pprof`).
    time(&mut go_cmd())?;
    time(&mut pd_cmd())?;
    let (mut go_t, mut pd_t) = (Vec::new(), Vec::new());
    for i in 0..runs {
        go_t.push(time(&mut go_cmd())?);
        pd_t.push(time(&mut pd_cmd())?);
        println!(
            "run {}: go tool pprof {:.1} ms, profdiff diff {:.1} ms",
            i + 1,
            go_t[i].as_secs_f64() * 1e3,
            pd_t[i].as_secs_f64() * 1e3
        );
    }
    let (g, p) = (median(&mut go_t), median(&mut pd_t));
    println!(
        "median: go tool pprof -top -diff_base {:.1} ms, profdiff diff {:.1} ms, ratio {:.1}x",
        g.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        g.as_secs_f64() / p.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
