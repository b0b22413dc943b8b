//! `profdiff top`'s table against `go tool pprof -top` (Go 1.23).
//!
//! `tests/data/input/top/*.txt` hold go tool pprof's output from the
//! `Showing nodes` line on, for corpus files. Names: `[PREFIX@]REPO@FILE.txt`
//! where `REPO@FILE` is the corpus path with `/` as `@`; prefix `cum` means
//! `-cum`, any other prefix is a `-sample_index`. They were produced with
//!
//! ```text
//! go tool pprof -top -nodecount=40 FILE | sed -n '/^Showing nodes/,$p'
//! go tool pprof -top -cum -nodecount=20 FILE | ...          (cum@...)
//! go tool pprof -top -sample_index=T -nodecount=20 FILE | ... (T@...)
//! ```
//!
//! and are never rewritten by the tests (they are the reference, not our
//! output). Known gap: pprof keys nodes by name *and* file/start line, so on
//! some profiles (not these) its row count and `(inline)` marks differ
//! slightly from ours, which keys rows by function name.
//!
//! Corpus files come from the in-repo subset (`tests/data/corpus`) or, for
//! the references whose file is not carried in the repository, from the
//! shared corpus (`$PROFDIFF_CORPUS` or `../shared/corpus/pprof`) when it is
//! present; the test says on stderr which references it skipped.

use std::io::Write as _;
use std::path::PathBuf;

mod common;

/// The corpus file `rel`, in-repo first, then shared; `None` when neither has it.
fn corpus_file(rel: &str) -> Option<PathBuf> {
    let in_repo = common::in_repo_corpus(rel);
    let shared = common::shared_corpus_dir().join(rel);
    [in_repo, shared].into_iter().find(|p| p.is_file())
}

#[test]
fn top_tables_match_go_tool_pprof() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/input/top");
    let mut entries: Vec<_> = std::fs::read_dir(&data)
        .expect("tests/data/input/top")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 10,
        "expected reference tables in {}",
        data.display()
    );
    let mut failures = Vec::new();
    let (mut ran, mut skipped) = (0, Vec::new());
    for want_path in &entries {
        let name = want_path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parts: Vec<&str> = name.split('@').collect();
        let (prefix, rel) = match parts.as_slice() {
            [repo, file] => (None, format!("{repo}/{file}")),
            [prefix, repo, file] => (Some(*prefix), format!("{repo}/{file}")),
            _ => panic!("bad reference name {name}"),
        };
        let (by_cum, sample_type, n) = match prefix {
            None => (false, None, 40),
            Some("cum") => (true, None, 20),
            Some(t) => (false, Some(t), 20),
        };
        let Some(file) = corpus_file(&rel) else {
            skipped.push(name.clone());
            continue;
        };
        ran += 1;
        let p = diff::input::load_profile(file).expect("corpus file loads");
        let idx = diff::input::select_sample_type(&p, sample_type).expect("sample type");
        let table = diff::top::top_with(&p, idx, by_cum, diff::top::DEFAULT_NODE_FRACTION);
        let ours = diff::top::render(&table, Some(n));
        let ours: String = ours
            .lines()
            .skip_while(|l| !l.starts_with("Showing nodes"))
            .map(|l| format!("{l}\n"))
            .collect();
        let want = std::fs::read_to_string(want_path).unwrap();
        if ours != want {
            let first = ours
                .lines()
                .zip(want.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("\n  ours: {a}\n  pprof: {b}"))
                .unwrap_or_else(|| " (line count differs)".into());
            failures.push(format!("{name}:{first}"));
        }
    }
    assert!(
        failures.is_empty(),
        "tables differ from go tool pprof:\n{}",
        failures.join("\n")
    );
    // The in-repo subset alone covers 7 of the references.
    assert!(
        ran >= 7,
        "only {ran} reference tables had their corpus file"
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "top_tables_match_go_tool_pprof: compared {ran} tables; skipped {} whose file is only in the shared corpus (absent): {}",
        skipped.len(),
        skipped.join(", ")
    );
}
