//! `cargo xtask bench gate-accuracy`: measure the gate's A/A false-fail
//! rate and its detection rate for a planted regression.
//!
//! Profiles are generated in memory: a fixed distribution over stacks
//! (a synthetic controller-like tree of 40 functions, one of which holds 5%
//! of samples), with realistic run-to-run variation (each stack's weight is
//! jittered by a log-normal factor, sd 5%, per run, and the run length by
//! 2%), then multinomial sampling of ≈990 samples per run (10 s at 99 Hz
//! on one core); scenarios marked "no jitter" have pure sampling noise.
//! Each trial gates 5 baseline runs against 5 candidate runs
//! with the default rule; A/A trials draw both sides from the same
//! distribution, regression trials multiply the 5% function's CPU by 1.10.
//!
//! "targeted rule" scenarios gate with a single budgets rule naming the
//! 5% function (no multiple-testing correction across functions).
//!
//! Environment: `GATE_ACCURACY_TRIALS` (default 500), `GATE_ACCURACY_DIR`
//! (optional directory of real pprof profiles: each one's stack distribution
//! is used in place of the synthetic one).
//!
//! Then real recordings (issue 10's acceptance): the `regress` workload
//! (tests/workloads/regress), one case per regression class (a)–(g), a
//! baseline and a candidate in which one known function does more work per
//! item. Per producer (Go's runtime/pprof, 2 s per run; `profiler record`,
//! 3 s per run, when root), each case records `GATE_ACCURACY_POOL` runs per
//! side (default 10; baseline and candidate run side by side, one per core),
//! then `GATE_ACCURACY_REAL_TRIALS` trials (default 20) each gate 3 runs per
//! side drawn without replacement from that pool with the real `profdiff
//! gate --json -`. A trial "caught" the regression when the gate exits 1 and
//! its top finding (the first culprit, else the first finding) names the
//! changed function or a new edge from it. With a pool of at least 3 runs
//! per trial (60 for 20 trials) the trials use disjoint runs: fresh
//! recordings per trial. A/A: `GATE_ACCURACY_AA_RUNS` (default 12) runs of
//! one baseline, `GATE_ACCURACY_AA_GATES` (default 100) gates each of 3 v 3
//! and 1 v 1 runs drawn without replacement.
//!
//! Recordings are kept in `target/gate-accuracy/`; `GATE_ACCURACY_REUSE=1`
//! gates the runs already there (recording only missing ones), e.g. to
//! compare two builds of the gate on the same recordings.
//!
//! Binaries: `PROFDIFF_BIN` and `PROFILER_BIN` when both are set, else a
//! release build. `GATE_ACCURACY_ONLY=synthetic|real` runs one part;
//! `GATE_ACCURACY_EBPF=0` skips the eBPF producer.

use integration_tests::regress::{CASES, PER_ITEM};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use diff::budgets::Budgets;
use diff::gate::{Gate, Verdict};
use diff::normalize::{NormalizeOptions, Normalizer};
use diff::{Frame, Profile, Sample, ValueType};

/// splitmix64 + xoshiro256** generator (deterministic, seeded).
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut s = [0u64; 4];
        for x in &mut s {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut v = z;
            v = (v ^ (v >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *x = v ^ (v >> 31);
        }
        Rng(s)
    }
    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Poisson via inversion (small mean) or a sum of smaller Poissons.
    fn poisson(&mut self, mu: f64) -> u64 {
        if mu > 30.0 {
            let half = mu / 2.0;
            return self.poisson(half) + self.poisson(mu - half);
        }
        let l = (-mu).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.uniform();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

/// A fixed distribution over stacks.
struct Dist {
    frames: Vec<Frame>,
    /// (leaf-first frame ids, weight)
    stacks: Vec<(Vec<u32>, f64)>,
    /// Index into `stacks` of the stacks whose leaf is the target function.
    target: Vec<usize>,
    target_name: String,
    target_share: f64,
}

fn frame(name: &str) -> Frame {
    Frame {
        function: name.to_string(),
        file: format!("{}.go", name.split('.').next().unwrap_or("x")),
        ..Default::default()
    }
}

/// Synthetic controller-like distribution: 40 leaf functions under a few
/// callers; shares follow a Zipf-like law with `target` set to 5%.
fn synthetic() -> Dist {
    let mut frames = vec![
        frame("runtime.goexit"),
        frame("controller.(*Controller).processNextWorkItem"),
        frame("controller.(*Reconciler).Reconcile"),
        frame("client.(*Client).List"),
        frame("json.Unmarshal"),
        frame("runtime.mallocgc"),
    ];
    let callers = [1u32, 2, 3, 4, 5];
    let mut stacks = Vec::new();
    let n = 40;
    let raw: Vec<f64> = (1..=n).map(|i| 1.0 / (i as f64).powf(0.9)).collect();
    let sum: f64 = raw.iter().sum();
    for (i, w) in raw.iter().enumerate() {
        let id = frames.len() as u32;
        frames.push(frame(&format!("pkg{}.leaf{i}", i % 7)));
        let caller = callers[i % callers.len()];
        let mut st = vec![id];
        // Walk up: caller chain ends at goexit.
        let mut c = caller;
        loop {
            st.push(c);
            if c <= 1 {
                break;
            }
            c = if c == 2 { 1 } else { 2 };
        }
        st.push(0);
        stacks.push((st, w / sum));
    }
    // Make leaf 3 hold exactly 5%: rescale the others.
    let t = 3;
    let rest: f64 = stacks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != t)
        .map(|(_, s)| s.1)
        .sum();
    for (i, s) in stacks.iter_mut().enumerate() {
        s.1 = if i == t { 0.05 } else { s.1 / rest * 0.95 };
    }
    let target_name = frames[stacks[t].0[0] as usize].function.clone();
    Dist {
        frames,
        stacks,
        target: vec![t],
        target_name,
        target_share: 0.05,
    }
}

/// A distribution from a real profile's stacks; the target is the leaf
/// function whose flat share is closest to 5%.
fn from_profile(p: &Profile) -> Option<Dist> {
    let st = p.sample_types.len().checked_sub(1)?;
    let mut stacks: Vec<(Vec<u32>, f64)> = p
        .samples
        .iter()
        .filter_map(|s| {
            let v = *s.values.get(st)? as f64;
            (v > 0.0 && !s.stack.is_empty()).then(|| (s.stack.clone(), v))
        })
        .collect();
    let total: f64 = stacks.iter().map(|s| s.1).sum();
    if total <= 0.0 {
        return None;
    }
    for s in &mut stacks {
        s.1 /= total;
    }
    let mut by_leaf: std::collections::HashMap<&str, f64> = Default::default();
    for s in &stacks {
        *by_leaf
            .entry(p.frames[s.0[0] as usize].function.as_str())
            .or_default() += s.1;
    }
    let (name, share) = by_leaf.iter().min_by(|a, b| {
        (a.1 - 0.05)
            .abs()
            .total_cmp(&(b.1 - 0.05).abs())
            .then(a.0.cmp(b.0))
    })?;
    let name = name.to_string();
    let share = *share;
    let target = stacks
        .iter()
        .enumerate()
        .filter(|(_, s)| p.frames[s.0[0] as usize].function == name)
        .map(|(i, _)| i)
        .collect();
    Some(Dist {
        frames: p.frames.clone(),
        stacks,
        target,
        target_name: name,
        target_share: share,
    })
}

/// Scenario parameters.
#[derive(Clone, Copy)]
struct Scenario {
    samples_per_run: f64,
    /// Multiplier on the target's CPU (1.0 = A/A).
    factor: f64,
    /// Extra CPU added to the target as a fraction of the whole profile (0 = none).
    added_total: f64,
    /// Run-to-run log-normal jitter of each stack's weight (sd).
    jitter: f64,
    /// Gate with one budgets rule naming the target (no default rule)
    /// instead of the default rule over every function.
    targeted: bool,
    /// Runs per side (0: the report's default).
    runs: usize,
}

fn gen_run(d: &Dist, sc: Scenario, candidate: bool, rng: &mut Rng) -> Profile {
    let jitter = sc.jitter;
    let mut w: Vec<f64> = d
        .stacks
        .iter()
        .map(|s| s.1 * (jitter * rng.normal() - jitter * jitter / 2.0).exp())
        .collect();
    let mut total_factor = 1.0;
    if candidate {
        let tw: f64 = d.target.iter().map(|&i| w[i]).sum();
        for &i in &d.target {
            w[i] *= sc.factor;
        }
        if sc.added_total > 0.0 && tw > 0.0 {
            for &i in &d.target {
                w[i] += sc.added_total * w[i] / tw;
            }
        }
        total_factor = w.iter().sum::<f64>() / d.stacks.iter().map(|s| s.1).sum::<f64>();
    }
    // The run lasts 10 s ± 2%; more CPU means proportionally more samples.
    let n_mean = sc.samples_per_run * total_factor * (1.0 + 0.02 * rng.normal());
    let sum: f64 = w.iter().sum();
    let period = 10_101_010i64;
    let samples = d
        .stacks
        .iter()
        .zip(&w)
        .filter_map(|((st, _), wi)| {
            let c = rng.poisson(n_mean * wi / sum) as i64;
            (c > 0).then(|| Sample {
                stack: st.clone(),
                values: vec![c, c * period],
                labels: Vec::new(),
            })
        })
        .collect();
    Profile {
        sample_types: vec![
            ValueType {
                kind: "samples".into(),
                unit: "count".into(),
            },
            ValueType {
                kind: "cpu".into(),
                unit: "nanoseconds".into(),
            },
        ],
        period_type: Some(ValueType {
            kind: "cpu".into(),
            unit: "nanoseconds".into(),
        }),
        period,
        duration_nanos: 10_000_000_000,
        frames: d.frames.clone(),
        samples,
        ..Default::default()
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    fail: u32,
    inconclusive: u32,
    pass: u32,
    target_failed: u32,
    other_failed: u32,
}

fn trials(d: &Dist, sc: Scenario, runs: usize, n: u32, seed: u64) -> Result<Tally> {
    let runs = if sc.runs > 0 { sc.runs } else { runs };
    let mut rng = Rng::new(seed);
    let norm = Normalizer::new(NormalizeOptions::default());
    let budgets = if sc.targeted {
        Budgets::parse(
            &format!(
                "[settings]\ndefault_rule = false\n[[rule]]\nname = \"target\"\nkind = \"relative\"\nfunction = '^{}$'\nmax_growth_percent = 5.0\n",
                regex_escape(&d.target_name)
            ),
            "targeted",
        )?
    } else {
        Budgets::default()
    };
    let mut t = Tally::default();
    for _ in 0..n {
        let base: Vec<Profile> = (0..runs).map(|_| gen_run(d, sc, false, &mut rng)).collect();
        let cand: Vec<Profile> = (0..runs).map(|_| gen_run(d, sc, true, &mut rng)).collect();
        let b = base
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("b{i}"), p))
            .collect();
        let c = cand
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("c{i}"), p))
            .collect();
        let mut g = Gate::new(b, c, &norm, Some("cpu".into()));
        let r = g.run(&budgets).context("gate")?;
        match r.verdict {
            Verdict::Fail => t.fail += 1,
            Verdict::Inconclusive => t.inconclusive += 1,
            _ => t.pass += 1,
        }
        let failed = |name: &str| {
            r.findings
                .iter()
                .any(|f| f.verdict == Verdict::Fail && f.function == name)
        };
        if failed(&d.target_name) {
            t.target_failed += 1;
        }
        if r.findings
            .iter()
            .any(|f| f.verdict == Verdict::Fail && f.function != d.target_name)
        {
            t.other_failed += 1;
        }
    }
    Ok(t)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn pct(x: u32, n: u32) -> f64 {
    100.0 * x as f64 / n as f64
}

/// Power of a one-sided pooled Poisson z-test at level `alpha` for a share
/// `p` growing by `rel`, with `n` samples per side (the best any test on
/// these counts can do, before multiple-testing correction).
fn poisson_limit_power(p: f64, rel: f64, n: f64, alpha: f64) -> f64 {
    let d = p * rel * n;
    let sd = (p * n + p * (1.0 + rel) * n).sqrt();
    diff::stats::normal_sf(diff::stats::normal_quantile(1.0 - alpha) - d / sd)
}

fn report(label: &str, d: &Dist, runs: usize, n: u32, seed: u64) -> Result<()> {
    println!(
        "\n== {label}: target {:?} at {:.2}% share, {runs} runs/side, {n} trials ==",
        d.target_name,
        d.target_share * 100.0
    );
    println!(
        "{:<44} {:>9} {:>13} {:>8} {:>14} {:>12}",
        "scenario", "fail", "inconclusive", "pass", "target failed", "other failed"
    );
    let sc = |samples_per_run: f64, factor: f64, added_total: f64, jitter: f64| Scenario {
        samples_per_run,
        factor,
        added_total,
        jitter,
        targeted: false,
        runs: 0,
    };
    let one = |s: Scenario| Scenario { runs: 1, ..s };
    let tg = |s: Scenario| Scenario {
        targeted: true,
        ..s
    };
    let scenarios = [
        ("A/A, 990 samples/run", sc(990.0, 1.0, 0.0, 0.05)),
        ("A/A, 15840 samples/run", sc(15840.0, 1.0, 0.0, 0.05)),
        (
            "A/A, 15840 samples/run, no jitter",
            sc(15840.0, 1.0, 0.0, 0.0),
        ),
        (
            "+10% target CPU, 990 samples/run",
            sc(990.0, 1.1, 0.0, 0.05),
        ),
        (
            "+10% target CPU, 3960 samples/run",
            sc(3960.0, 1.1, 0.0, 0.05),
        ),
        (
            "+10% target CPU, 15840 samples/run",
            sc(15840.0, 1.1, 0.0, 0.05),
        ),
        (
            "+10% target CPU, 990/run, no jitter",
            sc(990.0, 1.1, 0.0, 0.0),
        ),
        (
            "+10% target CPU, 15840/run, no jitter",
            sc(15840.0, 1.1, 0.0, 0.0),
        ),
        (
            "+10% of total CPU in target, 990/run",
            sc(990.0, 1.0, 0.10, 0.05),
        ),
        (
            "1 run/side: A/A, 990 samples",
            one(sc(990.0, 1.0, 0.0, 0.05)),
        ),
        (
            "1 run/side: A/A, 15840 samples",
            one(sc(15840.0, 1.0, 0.0, 0.05)),
        ),
        (
            "1 run/side: A/A, 15840 samples, no jitter",
            one(sc(15840.0, 1.0, 0.0, 0.0)),
        ),
        (
            "1 run/side: +10%, 15840 samples, no jitter",
            one(sc(15840.0, 1.1, 0.0, 0.0)),
        ),
        ("targeted rule: A/A, 990/run", tg(sc(990.0, 1.0, 0.0, 0.05))),
        (
            "targeted rule: +10%, 990/run",
            tg(sc(990.0, 1.1, 0.0, 0.05)),
        ),
        (
            "targeted rule: A/A, 15840/run",
            tg(sc(15840.0, 1.0, 0.0, 0.05)),
        ),
        (
            "targeted rule: +10%, 15840/run",
            tg(sc(15840.0, 1.1, 0.0, 0.05)),
        ),
        (
            "targeted rule: +10%, 15840/run, no jitter",
            tg(sc(15840.0, 1.1, 0.0, 0.0)),
        ),
    ];
    for (i, (name, sc)) in scenarios.iter().enumerate() {
        let t = trials(d, *sc, runs, n, seed + i as u64)?;
        println!(
            "{:<44} {:>8.1}% {:>12.1}% {:>7.1}% {:>13.1}% {:>11.1}%",
            name,
            pct(t.fail, n),
            pct(t.inconclusive, n),
            pct(t.pass, n),
            pct(t.target_failed, n),
            pct(t.other_failed, n)
        );
    }
    for spr in [990.0, 3960.0, 15840.0] {
        println!(
            "Poisson limit: +10% on a {:.1}% function, {} samples/side: power {:.1}% at one-sided alpha 0.01",
            d.target_share * 100.0,
            spr * runs as f64,
            100.0 * poisson_limit_power(d.target_share, 0.10, spr * runs as f64, 0.01)
        );
    }
    Ok(())
}

/// Run the gate-accuracy benchmark and print the rates.
pub fn gate_accuracy(root: &Path) -> Result<()> {
    let only = std::env::var("GATE_ACCURACY_ONLY").unwrap_or_default();
    if only != "real" {
        let n: u32 = std::env::var("GATE_ACCURACY_TRIALS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(500);
        report("synthetic controller profile", &synthetic(), 5, n, 1)?;
        if let Ok(dir) = std::env::var("GATE_ACCURACY_DIR") {
            let profiles = diff::input::load_many(&[dir.clone().into()])
                .with_context(|| format!("GATE_ACCURACY_DIR={dir}"))?;
            for (path, p) in profiles.iter().take(5) {
                match from_profile(p) {
                    Some(d) => report(&path.display().to_string(), &d, 5, n, 7)?,
                    None => println!("{}: no usable samples, skipped", path.display()),
                }
            }
        }
    }
    if only != "synthetic" {
        real_workloads(root)?;
    }
    Ok(())
}

/// Who records the profiles.
#[derive(Clone, Copy, PartialEq)]
enum Producer {
    /// The workload's own `-cpuprofile` (Go's runtime/pprof, 100 Hz), 2 s per run.
    GoPprof,
    /// `profiler record -- regress ...` (eBPF, 99 Hz), 3 s per run.
    Ebpf,
}

impl Producer {
    fn label(self) -> &'static str {
        match self {
            Producer::GoPprof => "runtime/pprof, 2 s/run",
            Producer::Ebpf => "profiler record, 3 s/run",
        }
    }
    fn dir(self) -> &'static str {
        match self {
            Producer::GoPprof => "pprof",
            Producer::Ebpf => "ebpf",
        }
    }
}

/// Binaries the real-workload part runs.
struct Bins {
    profdiff: PathBuf,
    profiler: PathBuf,
    regress: PathBuf,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Records `runs` runs of `case` for each `(variant, dir)` of `sides` into
/// `dir/run<N>.pb.gz`, the sides of run N at the same time (one process per
/// core; shares are within one process), and returns the paths per side.
fn record_pool(
    bins: &Bins,
    producer: Producer,
    case: &str,
    sides: &[(&str, PathBuf)],
    runs: usize,
) -> Result<Vec<Vec<PathBuf>>> {
    let mut out: Vec<Vec<PathBuf>> = vec![Vec::new(); sides.len()];
    let reuse = std::env::var("GATE_ACCURACY_REUSE").is_ok_and(|v| v == "1");
    for n in 1..=runs {
        let existing: Vec<PathBuf> = sides
            .iter()
            .map(|(_, dir)| dir.join(format!("run{n}.pb.gz")))
            .collect();
        if reuse && existing.iter().all(|p| p.is_file()) {
            for (i, p) in existing.into_iter().enumerate() {
                out[i].push(p);
            }
            continue;
        }
        let mut children = Vec::new();
        for (variant, dir) in sides {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let path = dir.join(format!("run{n}.pb.gz"));
            let mut cmd = match producer {
                Producer::GoPprof => {
                    let mut c = Command::new(&bins.regress);
                    c.args(["-case", case, "-variant", variant, "-duration", "2s"])
                        .arg("-cpuprofile")
                        .arg(&path);
                    c
                }
                Producer::Ebpf => {
                    let mut c = Command::new(&bins.profiler);
                    c.args(["record", "--quiet", "--duration", "20s", "-o"])
                        .arg(&path)
                        .arg("--")
                        .arg(&bins.regress)
                        .args(["-case", case, "-variant", variant, "-duration", "3s"]);
                    c
                }
            };
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {:?}", cmd.get_program()))?;
            children.push((path, child));
        }
        // Wait for every side before checking any, so none outlives an error.
        let waited: Vec<_> = children
            .into_iter()
            .map(|(path, child)| (path, child.wait_with_output()))
            .collect();
        for (i, (path, o)) in waited.into_iter().enumerate() {
            let o = o.context("waiting for a recording")?;
            if !o.status.success() || !path.is_file() {
                bail!(
                    "recording {} failed ({}): {}",
                    path.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            let stdout = String::from_utf8_lossy(&o.stdout);
            if !stdout.contains(&format!("case={case} ")) {
                bail!(
                    "{}: the workload printed no ground truth: {stdout}",
                    path.display()
                );
            }
            out[i].push(path);
        }
    }
    Ok(out)
}

/// Mean samples per run (the `samples/count` value, else the first value)
/// over `paths`.
fn mean_samples(paths: &[PathBuf]) -> Result<f64> {
    let mut sum = 0i64;
    for p in paths {
        let prof =
            diff::input::load_profile(p).with_context(|| format!("reading {}", p.display()))?;
        let col = prof
            .sample_types
            .iter()
            .position(|t| t.kind == "samples")
            .unwrap_or(0);
        sum += prof
            .samples
            .iter()
            .map(|s| s.values.get(col).copied().unwrap_or(0))
            .sum::<i64>();
    }
    Ok(sum as f64 / paths.len().max(1) as f64)
}

/// `k` distinct indices out of `n` (partial Fisher–Yates).
fn draw(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + (rng.next() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// One gate run's outcome.
struct Outcome {
    code: i32,
    /// The top finding (first culprit, else first finding) names the changed
    /// function or is a new edge from it.
    top_names_changed: bool,
    /// Some other per-item function is reported `fail` or `improved`.
    other_flagged: bool,
}

fn run_gate(
    profdiff: &Path,
    base: &[&PathBuf],
    cand: &[&PathBuf],
    changed: &str,
) -> Result<Outcome> {
    let o = Command::new(profdiff)
        .arg("gate")
        .arg("-b")
        .args(base)
        .arg("-c")
        .args(cand)
        .args(["--json", "-"])
        .output()
        .with_context(|| format!("running {}", profdiff.display()))?;
    let code = o.status.code().unwrap_or(-1);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).with_context(|| {
        format!(
            "profdiff gate printed no JSON (exit {code}): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )
    })?;
    let top = report["culprits"]
        .as_array()
        .and_then(|c| c.first())
        .or_else(|| report["findings"].as_array().and_then(|f| f.first()));
    let top_names_changed = top.is_some_and(|t| {
        t["function"].as_str() == Some(changed) || t["caller"].as_str() == Some(changed)
    });
    let other_flagged = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(report["culprits"].as_array().into_iter().flatten())
        .any(|f| {
            let v = f["verdict"].as_str().unwrap_or("");
            let name = f["function"].as_str().unwrap_or("");
            (v == "fail" || v == "improved") && name != changed && PER_ITEM.contains(&name)
        });
    Ok(Outcome {
        code,
        top_names_changed,
        other_flagged,
    })
}

/// Gate-accuracy figures on real recordings of the `regress` workload.
fn real_workloads(root: &Path) -> Result<()> {
    let trials = env_usize("GATE_ACCURACY_REAL_TRIALS", 20);
    let pool = env_usize("GATE_ACCURACY_POOL", 10).max(3);
    let aa_pool = env_usize("GATE_ACCURACY_AA_RUNS", 12).max(6);
    let aa_gates = env_usize("GATE_ACCURACY_AA_GATES", 100);
    let workloads = crate::workloads::build_workloads(root)?;
    let (profdiff, profiler) = match (
        std::env::var_os("PROFDIFF_BIN"),
        std::env::var_os("PROFILER_BIN"),
    ) {
        (Some(d), Some(p)) => (PathBuf::from(d), PathBuf::from(p)),
        _ => {
            let release = crate::build_release(root)?;
            (release.join("profdiff"), release.join("profiler"))
        }
    };
    let bins = Bins {
        profdiff,
        profiler,
        regress: workloads.join("regress"),
    };
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut producers = vec![Producer::GoPprof];
    if std::env::var("GATE_ACCURACY_EBPF").map_or(true, |v| v != "0") {
        if is_root {
            producers.push(Producer::Ebpf);
        } else {
            println!("\n(eBPF producer skipped: needs root)");
        }
    }
    let work = crate::target_dir(root).join("gate-accuracy");
    if std::env::var("GATE_ACCURACY_REUSE").map_or(true, |v| v != "1") {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!(
        "\nprofdiff: {}\nprofiler: {}\nrecordings: {}",
        bins.profdiff.display(),
        bins.profiler.display(),
        work.display()
    );
    // With at least 3 runs per side per trial, trials use disjoint runs.
    let fresh = pool >= 3 * trials;
    let mut rng = Rng::new(0x5eed);
    for producer in producers {
        let draw_text = if fresh {
            format!("fresh recordings per trial ({pool} runs recorded per side)")
        } else {
            format!("each gating 3 v 3 runs drawn without replacement from {pool} recorded runs per side")
        };
        println!(
            "\n== regress workload, {}: {trials} trials per case, {draw_text} ==",
            producer.label()
        );
        println!(
            "{:<34} {:<20} {:>7} {:>8} {:>7} {:>8} {:>22} {:>16}",
            "case",
            "changed function",
            "fail",
            "inconcl",
            "pass",
            "caught",
            "other per-item flagged",
            "samples/run b|c"
        );
        for case in CASES {
            let dir = work.join(producer.dir()).join(case.name);
            let sides = [("base", dir.join("base")), ("cand", dir.join("cand"))];
            let runs = record_pool(&bins, producer, case.name, &sides, pool)?;
            let (mut fail, mut inc, mut pass, mut caught, mut other) = (0, 0, 0, 0, 0);
            for t in 0..trials {
                let (b, c): (Vec<&PathBuf>, Vec<&PathBuf>) = if fresh {
                    // Disjoint runs per trial: every trial gates fresh recordings.
                    (
                        runs[0][3 * t..3 * t + 3].iter().collect(),
                        runs[1][3 * t..3 * t + 3].iter().collect(),
                    )
                } else {
                    (
                        draw(&mut rng, pool, 3)
                            .into_iter()
                            .map(|i| &runs[0][i])
                            .collect(),
                        draw(&mut rng, pool, 3)
                            .into_iter()
                            .map(|i| &runs[1][i])
                            .collect(),
                    )
                };
                let o = run_gate(&bins.profdiff, &b, &c, case.changed)?;
                match o.code {
                    1 => fail += 1,
                    3 => inc += 1,
                    0 => pass += 1,
                    code => bail!("profdiff gate exited {code} on {b:?} vs {c:?}"),
                }
                if o.code == 1 && o.top_names_changed {
                    caught += 1;
                }
                if o.other_flagged {
                    other += 1;
                }
            }
            let n = trials as u32;
            println!(
                "{:<34} {:<20} {:>6.0}% {:>7.0}% {:>6.0}% {:>7.0}% {:>21.0}% {:>16}",
                case.class,
                case.changed,
                pct(fail, n),
                pct(inc, n),
                pct(pass, n),
                pct(caught, n),
                pct(other, n),
                format!(
                    "{:.0}|{:.0}",
                    mean_samples(&runs[0])?,
                    mean_samples(&runs[1])?
                )
            );
        }
        // A/A: the same program (case "format", baseline) on both sides.
        let dir = work.join(producer.dir()).join("aa");
        let half = aa_pool.div_ceil(2);
        let pair = [("base", dir.join("a")), ("base", dir.join("b"))];
        let runs: Vec<PathBuf> = record_pool(&bins, producer, "format", &pair, half)?
            .into_iter()
            .flatten()
            .collect();
        println!(
            "A/A pool: {} runs, {:.0} samples/run",
            runs.len(),
            mean_samples(&runs)?
        );
        for per_side in [3usize, 1] {
            let (mut fail, mut inc, mut pass) = (0, 0, 0);
            for _ in 0..aa_gates {
                let idx = draw(&mut rng, runs.len(), 2 * per_side);
                let b: Vec<&PathBuf> = idx[..per_side].iter().map(|&i| &runs[i]).collect();
                let c: Vec<&PathBuf> = idx[per_side..].iter().map(|&i| &runs[i]).collect();
                let o = run_gate(&bins.profdiff, &b, &c, "")?;
                match o.code {
                    1 => fail += 1,
                    3 => inc += 1,
                    _ => pass += 1,
                }
            }
            let n = aa_gates as u32;
            println!(
                "A/A {per_side} v {per_side} ({aa_gates} gates, runs drawn without replacement from {} runs of the same baseline): fail {:.1}%, inconclusive {:.1}%, pass {:.1}%",
                runs.len(),
                pct(fail, n),
                pct(inc, n),
                pct(pass, n)
            );
        }
    }
    println!(
        "\n\"caught\": the gate failed (exit 1) and its top finding (first culprit, else first finding) names the changed function or a new edge from it.\n\"other per-item flagged\": another main.* per-item function (same work per item on both sides) was reported fail or improved."
    );
    Ok(())
}
