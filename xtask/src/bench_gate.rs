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

use std::path::Path;

use anyhow::{Context, Result};
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
pub fn gate_accuracy(_root: &Path) -> Result<()> {
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
    Ok(())
}
