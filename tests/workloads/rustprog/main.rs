//! Native Rust workload for the profiler's inline-frame tests.
//!
//! `rust_hot_outer` is never inlined and calls `rust_inlined_leaf`, which is
//! always inlined; nearly all cycles are spent in the leaf's loop, so a
//! symbolizer that reads DWARF inline info reports
//! `main -> rust_hot_outer -> rust_inlined_leaf (inlined)`.
//!
//! Build: `rustc -O -g -C force-frame-pointers=yes -o rustprog main.rs`
//! Run:   `./rustprog SECONDS` (default 5).

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The inlined leaf: an xorshift loop kept alive with `black_box`.
#[inline(always)]
fn rust_inlined_leaf(mut x: u64, rounds: u32) -> u64 {
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    x
}

/// The named outer frame that owns the inlined leaf.
#[inline(never)]
fn rust_hot_outer(seed: u64) -> u64 {
    let mut acc = seed;
    for j in 0..64u64 {
        acc = rust_inlined_leaf(acc.wrapping_add(j), 4096);
    }
    acc
}

fn main() {
    let seconds: f64 = match std::env::args().nth(1) {
        None => 5.0,
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v >= 0.0 && v.is_finite() => v,
            _ => {
                eprintln!("rustprog: argument 1 (seconds) must be a non-negative number, got '{s}'");
                std::process::exit(2);
            }
        },
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut acc = 88172645463325252u64;
    let mut calls = 0u64;
    while Instant::now() < deadline {
        acc = rust_hot_outer(acc);
        calls += 1;
    }
    println!("calls={calls} acc={}", acc % 1000);
}
