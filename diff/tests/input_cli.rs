//! End-to-end runs of `profdiff top/convert/merge/flamegraph` on corpus files.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

/// A corpus file: from the in-repo subset (`tests/data/corpus`), else from
/// `$PROFDIFF_CORPUS` or the shared corpus beside the repository.
fn corpus(rel: &str) -> PathBuf {
    let in_repo = common::in_repo_corpus(rel);
    if in_repo.exists() {
        return in_repo;
    }
    common::shared_corpus_dir().join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("profdiff-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn profdiff(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_profdiff"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("run profdiff");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn load(p: &Path) -> diff::Profile {
    diff::input::load_profile(p).unwrap()
}

#[test]
fn top_prints_pprof_like_table() {
    let f = corpus("google__pprof/internal__report__testdata__sample.cpu");
    let (code, out, err) = profdiff(&[&"top", &f, &"-n", &"2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Showing nodes accounting for 1430ms, 81.25% of 1760ms total"),
        "{out}"
    );
    assert!(
        out.contains("    1280ms 72.73% 72.73%     1370ms 77.84%  runtime.mapiternext"),
        "{out}"
    );
}

#[test]
fn top_errors_name_the_file_and_exit_nonzero() {
    let f = corpus("google__pprof/fuzz__corpus__empty");
    let (code, out, err) = profdiff(&[&"top", &f]);
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("fuzz__corpus__empty: empty input"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let f = corpus("jerrinot__ap-query/testdata__cpu.pb.gz");
    let (code, _, err) = profdiff(&[&"top", &f, &"--sample-type", &"alloc_space"]);
    assert_ne!(code, 0);
    assert!(err.contains("no sample type \"alloc_space\""), "{err}");
}

#[test]
fn convert_pprof_to_folded_and_back_keeps_totals() {
    let src = corpus("jerrinot__ap-query/testdata__cpu.pb.gz");
    let folded = tmp("cpu.folded");
    let (code, _, err) = profdiff(&[&"convert", &src, &"-o", &folded]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&folded).unwrap();
    assert!(text
        .lines()
        .all(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().is_ok()));
    let back = tmp("cpu-again.pb.gz");
    let (code, _, err) = profdiff(&[&"convert", &folded, &"-o", &back]);
    assert_eq!(code, 0, "{err}");
    let orig = load(&src);
    let idx = diff::input::select_sample_type(&orig, None).unwrap();
    assert_eq!(load(&back).totals(), vec![orig.total(idx)]);
    assert!(
        std::fs::read(&back).unwrap().starts_with(&[0x1f, 0x8b]),
        "pprof output is gzip'd"
    );
    // Legacy input converts to pprof too.
    let legacy = corpus("google__pprof/profile__testdata__cppbench.cpu");
    let out = tmp("cppbench.pb.gz");
    let (code, _, err) = profdiff(&[&"convert", &legacy, &"--to", &"pprof", &"-o", &out]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(load(&out).totals(), load(&legacy).totals());
}

#[test]
fn merge_adds_totals_and_rejects_mixed_types() {
    let a = corpus("jerrinot__ap-query/testdata__cpu.pb.gz");
    let b = corpus("jerrinot__ap-query/testdata__cpu2.pb.gz");
    let out = tmp("merged.pb.gz");
    let (code, _, err) = profdiff(&[&"merge", &a, &b, &"-o", &out]);
    assert_eq!(code, 0, "{err}");
    let (ta, tb) = (load(&a).totals(), load(&b).totals());
    let want: Vec<i64> = ta.iter().zip(&tb).map(|(x, y)| x + y).collect();
    assert_eq!(load(&out).totals(), want);
    let heap = corpus("jerrinot__ap-query/testdata__alloc.pb.gz");
    let (code, _, err) = profdiff(&[&"merge", &a, &heap, &"-o", &tmp("bad.pb.gz")]);
    assert_ne!(code, 0);
    assert!(err.contains("testdata__alloc.pb.gz: sample types"), "{err}");
}

#[test]
fn flamegraph_writes_svg_with_function_names() {
    let f = corpus("google__pprof/internal__report__testdata__sample.cpu");
    let out = tmp("flame.svg");
    let (code, _, err) = profdiff(&[&"flamegraph", &f, &"-o", &out]);
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "not an SVG"
    );
    assert!(svg.contains("runtime.mapiternext"));
}
