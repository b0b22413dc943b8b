//! `Comparison::stacks` against a reference merge (one map over every
//! run, sorted whole) on generated multi-run profiles: the same stacks,
//! the same order and bit-identical values for every limit, on each scale.

mod common;

use std::collections::HashMap;

use diff::compare::Comparison;
use diff::normalize::{FuncId, NormalizeOptions, Normalizer, Scale};
use diff::Profile;

/// Folded profile text: `n` random stacks over a small function set, so
/// that runs share many stacks and some stacks appear on one side only.
fn folded(next: &mut impl FnMut() -> u64, n: usize, funcs: u64) -> Profile {
    let mut text = String::new();
    for _ in 0..n {
        let depth = 1 + next() % 6;
        let frames: Vec<String> = (0..depth)
            .map(|_| format!("pkg.f{}", next() % funcs))
            .collect();
        text.push_str(&format!("{} {}\n", frames.join(";"), 1 + next() % 50));
    }
    diff::folded::parse(text.as_bytes()).expect("folded profile")
}

/// The reference: every stack merged into one map (baseline runs, then
/// candidate runs, summed in run order), divided, sorted whole, cut.
fn reference(cmp: &Comparison, scale: &Scale, limit: usize) -> Vec<(String, u64, u64)> {
    let den = |runs: &[diff::normalize::RunData]| -> f64 {
        runs.iter()
            .map(|r| Comparison::denom(r, scale).expect("denominator"))
            .sum()
    };
    let (db, dc) = (den(&cmp.base), den(&cmp.cand));
    let mut acc: HashMap<&[FuncId], (f64, f64)> = HashMap::new();
    for r in &cmp.base {
        for (s, v) in &r.stacks {
            acc.entry(s).or_default().0 += v;
        }
    }
    for r in &cmp.cand {
        for (s, v) in &r.stacks {
            acc.entry(s).or_default().1 += v;
        }
    }
    let mut v: Vec<(&[FuncId], f64, f64)> = acc
        .into_iter()
        .map(|(s, (b, c))| (s, b / db.max(1e-300), c / dc.max(1e-300)))
        .collect();
    v.sort_by(|a, b| {
        (b.2 - b.1)
            .abs()
            .total_cmp(&(a.2 - a.1).abs())
            .then_with(|| a.0.cmp(b.0))
    });
    v.truncate(limit);
    v.into_iter()
        .map(|(s, b, c)| (cmp.folded(s), b.to_bits(), c.to_bits()))
        .collect()
}

/// Small runs (one thread) and runs with more than 8,192 stacks in all
/// (`Comparison::stacks` scans on two threads).
#[test]
fn stacks_match_a_full_merge_for_every_limit() {
    for lines in [300, 2_500] {
        check(lines);
    }
}

fn check(lines: usize) {
    let mut next = common::xorshift(0x5eed_57ac ^ lines as u64);
    let profiles: Vec<Profile> = (0..5)
        .map(|i| folded(&mut next, lines + 40 * i, 12))
        .collect();
    let named: Vec<(String, &Profile)> = profiles
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("run{i}"), p))
        .collect();
    let (base, cand) = named.split_at(2);
    let norm = Normalizer::new(NormalizeOptions::default());
    let cmp = Comparison::new(base, cand, None, &norm).expect("comparison");
    let distinct: usize = {
        let mut all: Vec<&[FuncId]> = cmp
            .base
            .iter()
            .chain(&cmp.cand)
            .flat_map(|r| r.stacks.keys())
            .collect();
        all.sort();
        all.dedup();
        all.len()
    };
    assert!(
        distinct > lines,
        "only {distinct} distinct stacks generated"
    );
    let entries: usize = cmp
        .base
        .iter()
        .chain(&cmp.cand)
        .map(|r| r.stacks.len())
        .sum();
    assert_eq!(lines > 1_000, entries > 8_192, "{entries} stacks in all");
    for scale in [Scale::Share, Scale::Compositional] {
        for limit in [
            0,
            1,
            2,
            7,
            20,
            64,
            65,
            100,
            distinct - 1,
            distinct,
            distinct + 5,
        ] {
            let got: Vec<(String, u64, u64)> = cmp
                .stacks(&scale, limit)
                .expect("stacks")
                .into_iter()
                .map(|s| (s.stack, s.baseline.to_bits(), s.candidate.to_bits()))
                .collect();
            let want = reference(&cmp, &scale, limit);
            assert_eq!(got.len(), limit.min(distinct), "limit {limit}");
            assert_eq!(got, want, "scale {scale:?}, limit {limit}");
        }
    }
}
