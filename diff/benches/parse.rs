//! Decoding speed: the largest corpus profiles and a generated
//! 1,000,000-sample profile (gzip'd pprof written by our encoder).
//!
//! Run: `cargo bench -p diff --bench parse -- --warm-up-time 1 --measurement-time 3`.
//! The corpus is found at `$PROFDIFF_CORPUS` or `../../shared/corpus/pprof`
//! relative to this crate; missing files are skipped with a note.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diff::input::{decode_bytes, Limits};
use diff::{Frame, Profile, Sample};

#[path = "../tests/common/mod.rs"]
mod common;

/// A CPU-like profile: `n` samples, stacks of depth 8..40 over 20,000
/// frames (5,000 functions, some inlined), deterministic.
fn generated(n: usize) -> Profile {
    let mut next = common::xorshift(0x2545_F491_4F6C_DD1D);
    let frames: Vec<Frame> = (0..20_000u32)
        .map(|i| Frame {
            function: format!("github.com/example/pkg{}.Func{}", i % 97, i % 5000),
            file: format!("pkg{}/file{}.go", i % 97, i % 300),
            line: i64::from(i % 700),
            inlined: i % 7 == 0 && i < 19_999,
            mapping: "/usr/local/bin/controller".into(),
            address: 0x40_0000 + u64::from(i) * 16,
            ..Default::default()
        })
        .collect();
    let samples = (0..n)
        .map(|_| {
            let depth = 8 + (next() % 33) as usize;
            let mut stack = Vec::with_capacity(depth + 8);
            for _ in 0..depth {
                // An inlined frame is always followed by the same caller, as
                // in real profiles (one pprof Location with two Lines).
                let f = (next() % 19_999) as u32;
                stack.push(f);
                if frames[f as usize].inlined {
                    stack.push(f + 1);
                }
            }
            let c = 1 + (next() % 3) as i64;
            Sample {
                stack,
                values: vec![c, c * 10_000_000],
                labels: Vec::new(),
            }
        })
        .collect();
    Profile {
        sample_types: common::cpu_sample_types(),
        period: 10_000_000,
        frames,
        samples,
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    g.sample_size(10);
    for name in [
        "google__pprof/internal__proftest__testdata__large.cpu",
        "grafana__pyroscope/distributors.pb.gz",
        "grafana__pyroscope/ingesters.pb.gz",
        "DataDog__dd-trace-go/profiler__internal__fastdelta__testdata__big-heap.pprof",
        "google__pprof/profile__testdata__cppbench.cpu",
    ] {
        let path = common::shared_corpus_dir().join(name);
        let Ok(data) = std::fs::read(&path) else {
            eprintln!("skipping {}: not found", path.display());
            continue;
        };
        g.throughput(Throughput::Bytes(data.len() as u64));
        let short = name.rsplit('/').next().unwrap_or(name);
        g.bench_function(short, |b| {
            b.iter(|| decode_bytes(black_box(&data), &limits).expect("corpus file decodes"))
        });
    }
    let big = diff::pprof::encode_gzip(&generated(1_000_000));
    eprintln!("generated 1M-sample profile: {} bytes gzip'd", big.len());
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("generated_1M_samples", |b| {
        b.iter(|| decode_bytes(black_box(&big), &limits).expect("generated profile decodes"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
