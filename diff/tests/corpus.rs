//! Every profile of the shared pprof corpus, against `go tool pprof`.
//!
//! The corpus (`/work/shared/corpus/pprof`, or `$PROFDIFF_CORPUS`) has a
//! `MANIFEST.tsv` with, per file, whether `go tool pprof` (Go 1.23) parses
//! it and the per-sample-type totals it decodes. For every row:
//!
//! - `go_pprof_parses=yes`: we must load it and our totals, per sample type
//!   in order, must equal `decoded_totals` exactly, and our sample type
//!   names must equal the `sample_types` column;
//! - `go_pprof_parses=no`: we must return an error (no deliberate
//!   acceptances so far: the empty file, a Java heapz with a zero count, a
//!   jemalloc text profile, and a protobuf with a reserved function id 0 are
//!   all rejected, as pprof does).
//!
//! Failures are collected and reported together.

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PROFDIFF_CORPUS") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/pprof")
}

struct Row {
    path: String,
    parses: bool,
    sample_types: String,
    totals: String,
    notes: String,
}

fn manifest() -> Vec<Row> {
    let dir = corpus_dir();
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/MANIFEST.tsv: {e}", dir.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("manifest header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("manifest has no column {name}"))
    };
    let (c_path, c_parses, c_types, c_totals, c_notes) = (
        col("path"),
        col("go_pprof_parses"),
        col("sample_types"),
        col("decoded_totals"),
        col("notes"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("").to_owned();
            let parses = match get(c_parses).as_str() {
                "yes" => true,
                "no" => false,
                other => panic!("{}: go_pprof_parses is {other:?}", get(c_path)),
            };
            Row {
                path: get(c_path),
                parses,
                sample_types: get(c_types),
                totals: get(c_totals),
                notes: get(c_notes),
            }
        })
        .collect()
}

#[test]
fn corpus_totals_match_go_tool_pprof() {
    let rows = manifest();
    assert_eq!(rows.len(), 128, "the manifest should list 128 profiles");
    let dir = corpus_dir();
    let mut failures = Vec::new();
    let (mut ok_yes, mut ok_no) = (0, 0);
    for row in &rows {
        let path = dir.join(&row.path);
        match (row.parses, diff::input::load_profile(&path)) {
            (true, Ok(p)) => {
                let ours = p
                    .totals()
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let types = diff::input::sample_types_string(&p);
                // An empty sample type list is written as "" in the manifest.
                let want_types = if row.sample_types.is_empty() {
                    String::new()
                } else {
                    row.sample_types.clone()
                };
                if ours != row.totals || types != want_types {
                    failures.push(format!(
                        "{}: totals {ours} types {types}, go tool pprof: totals {} types {} ({})",
                        row.path, row.totals, want_types, row.notes
                    ));
                } else {
                    ok_yes += 1;
                }
            }
            (true, Err(e)) => failures.push(format!(
                "{}: go tool pprof parses it but we fail: {e} ({})",
                row.path, row.notes
            )),
            (false, Ok(p)) => failures.push(format!(
                "{}: go tool pprof rejects it but we accept it ({} samples) ({})",
                row.path,
                p.samples.len(),
                row.notes
            )),
            (false, Err(e)) => {
                let msg = e.to_string();
                if msg.contains('\n') || !msg.contains(row.path.rsplit('/').next().unwrap()) {
                    failures.push(format!(
                        "{}: error is not one line naming the file: {msg}",
                        row.path
                    ));
                } else {
                    ok_no += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files mismatch:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert_eq!(ok_yes + ok_no, 128);
}

#[test]
fn corpus_directory_load_skips_manifest_and_sorts() {
    // Loading a directory of the corpus: the MANIFEST is skipped, files come sorted.
    let dir = corpus_dir().join("jerrinot__ap-query");
    let loaded = diff::input::load_many(&[dir]).expect("load directory");
    let names: Vec<_> = loaded.iter().map(|(p, _)| p.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(loaded.len(), 5);
}

#[test]
fn corpus_round_trips_through_our_encoder() {
    // Every profile we accept re-encodes to pprof that decodes to the same totals and stacks.
    let dir = corpus_dir();
    let mut failures = Vec::new();
    for row in manifest().iter().filter(|r| r.parses) {
        let p = diff::input::load_profile(dir.join(&row.path)).expect("loads (checked above)");
        // Raw protobuf: gzip is covered elsewhere and slow in debug builds.
        let bytes = diff::pprof::encode_raw(&p);
        match diff::pprof::decode(&bytes, &Default::default()) {
            Ok(q) => {
                if q.totals() != p.totals() || q.samples.len() != p.samples.len() {
                    failures.push(format!("{}: totals or sample count changed", row.path));
                    continue;
                }
                let same_names = |i: usize| {
                    let (a, b) = (&p.samples[i].stack, &q.samples[i].stack);
                    a.len() == b.len()
                        && a.iter().zip(b).all(|(&x, &y)| {
                            p.frames[x as usize].function == q.frames[y as usize].function
                        })
                };
                if let Some(i) = (0..p.samples.len()).find(|&i| !same_names(i)) {
                    failures.push(format!("{}: stack of sample {i} changed", row.path));
                }
            }
            Err(e) => failures.push(format!(
                "{}: re-encoded profile fails to decode: {e}",
                row.path
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
