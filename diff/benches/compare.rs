//! Normalize + compare speed: the largest corpus CPU profile against a
//! scaled copy, and a generated 1,000,000-sample profile against a
//! perturbed copy (reduction of both sides, per-function statistics and
//! the gate with the default rule).
//!
//! Run: `cargo bench -p diff --bench compare -- --warm-up-time 1 --measurement-time 5`.
//! The corpus is found at `$PROFDIFF_CORPUS` or `../../shared/corpus/pprof`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diff::budgets::Budgets;
use diff::compare::{CompareOptions, Comparison};
use diff::gate::Gate;
use diff::normalize::{NormalizeOptions, Normalizer};
use diff::{Frame, Profile, Sample, ValueType};

#[path = "../tests/common/mod.rs"]
mod common;

/// `n` samples over stacks of depth 8..40 drawn from 5,000 Go-like
/// functions (closures, generics, vendored paths so normalization works).
fn generated(n: usize, seed: u64) -> Profile {
    let mut next = common::xorshift(seed);
    let frames: Vec<Frame> = (0..5000)
        .map(|i| Frame {
            function: match i % 4 {
                0 => format!("example.com/app/vendor/k8s.io/pkg{}.F{i}", i % 97),
                1 => format!("example.com/app/pkg{}.(*T).M{i}.func{}", i % 97, i % 5 + 1),
                2 => format!("example.com/app/pkg{}.G{i}[go.shape.int]", i % 97),
                _ => format!("example.com/app/pkg{}.H{i}", i % 97),
            },
            file: format!("/root/go/pkg/mod/k8s.io/pkg{}@v0.29.{}/f.go", i % 97, i % 3),
            line: (i % 400) as i64,
            ..Default::default()
        })
        .collect();
    let samples = (0..n)
        .map(|_| {
            let depth = 8 + (next() % 33) as usize;
            // Skewed choice so some functions are hot.
            let stack = (0..depth)
                .map(|d| {
                    let r = next() % 5000;
                    ((r * r / 5000 + d as u64 * 37) % 5000) as u32
                })
                .collect();
            Sample {
                stack,
                values: vec![1, 10_000_000],
                labels: Vec::new(),
            }
        })
        .collect();
    Profile {
        sample_types: common::cpu_sample_types(),
        period_type: Some(ValueType {
            kind: "cpu".into(),
            unit: "nanoseconds".into(),
        }),
        period: 10_000_000,
        duration_nanos: 10_000_000_000,
        frames,
        samples,
        ..Default::default()
    }
}

fn corpus_large() -> Option<Profile> {
    let p =
        common::shared_corpus_dir().join("google__pprof/internal__proftest__testdata__large.cpu");
    match diff::input::load_profile(&p) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("skipping corpus benchmark: {e}");
            None
        }
    }
}

fn bench_pair(c: &mut Criterion, name: &str, base: &Profile, cand: &Profile) {
    let norm = Normalizer::new(NormalizeOptions::default());
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.throughput(Throughput::Elements(
        (base.samples.len() + cand.samples.len()) as u64,
    ));
    let b = vec![("base".to_string(), base)];
    let k = vec![("cand".to_string(), cand)];
    g.bench_function("normalize", |bench| {
        bench.iter(|| black_box(Comparison::new(&b, &k, Some("cpu"), &norm).unwrap()))
    });
    let cmp = Comparison::new(&b, &k, Some("cpu"), &norm).unwrap();
    g.bench_function("functions", |bench| {
        bench.iter(|| black_box(cmp.functions(&CompareOptions::default()).unwrap()))
    });
    g.bench_function("gate", |bench| {
        bench.iter(|| {
            let mut gate = Gate::new(b.clone(), k.clone(), &norm, Some("cpu".into()));
            black_box(gate.run(&Budgets::default()).unwrap())
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    if let Some(base) = corpus_large() {
        let mut cand = base.clone();
        for (i, s) in cand.samples.iter_mut().enumerate() {
            if i % 7 == 0 {
                for v in &mut s.values {
                    *v = *v * 3 / 2;
                }
            }
        }
        bench_pair(c, "large.cpu", &base, &cand);
    }
    let base = generated(1_000_000, 0x2545_F491_4F6C_DD1D);
    let cand = generated(1_000_000, 0x9E37_79B9_7F4A_7C15);
    bench_pair(c, "generated-1M", &base, &cand);
}

criterion_group!(compare, benches);
criterion_main!(compare);
