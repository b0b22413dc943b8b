//! What diff's tests and benches share: where the corpus is, and the pieces
//! of the profiles they build in memory. Included with `mod common;` by a
//! test and with `#[path = "../tests/common/mod.rs"] mod common;` by a bench;
//! each includer uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use diff::ValueType;

/// The shared corpus: `$PROFDIFF_CORPUS`, else `../shared/corpus/pprof`
/// beside the repository (it may be absent; callers skip or fall back).
pub fn shared_corpus_dir() -> PathBuf {
    std::env::var_os("PROFDIFF_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/pprof")
        })
}

/// The in-repo corpus subset's copy of `rel` (`tests/data/corpus/REL`).
pub fn in_repo_corpus(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corpus")
        .join(rel)
}

/// The sample types of a Go CPU profile: `samples/count`, `cpu/nanoseconds`.
pub fn cpu_sample_types() -> Vec<ValueType> {
    vec![
        ValueType {
            kind: "samples".into(),
            unit: "count".into(),
        },
        ValueType {
            kind: "cpu".into(),
            unit: "nanoseconds".into(),
        },
    ]
}

/// A deterministic xorshift64 generator from `seed` (made odd, so never 0).
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
