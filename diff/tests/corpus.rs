//! Every profile of the pprof corpus, against `go tool pprof`.
//!
//! Two corpora, each a directory with a `MANIFEST.tsv` holding, per file,
//! whether `go tool pprof` (Go 1.23) parses it and the per-sample-type
//! totals it decodes:
//!
//! - the in-repo subset, `tests/data/corpus/` (76 permissively licensed
//!   files covering every format and producer the reader handles; sources
//!   and licences in its `NOTICE.md`), always;
//! - the full shared corpus (128 files, `../shared/corpus/pprof` beside the
//!   repository, or `$PROFDIFF_CORPUS`), in addition when it is present.
//!
//! Each test says on stderr which corpora it ran. For every row:
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

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A corpus directory and the number of rows its manifest must list.
struct Corpus {
    name: &'static str,
    dir: PathBuf,
    rows: usize,
}

/// The in-repo subset always, the shared corpus when present. An explicit
/// `$PROFDIFF_CORPUS` that does not exist is an error, not a skip.
fn corpora() -> Vec<Corpus> {
    let mut out = vec![Corpus {
        name: "in-repo subset (tests/data/corpus)",
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus"),
        rows: 76,
    }];
    let shared = match std::env::var("PROFDIFF_CORPUS") {
        Ok(d) => {
            let d = PathBuf::from(d);
            assert!(
                d.join("MANIFEST.tsv").is_file(),
                "PROFDIFF_CORPUS={} has no MANIFEST.tsv",
                d.display()
            );
            Some(d)
        }
        Err(_) => Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/pprof"))
            .filter(|d| d.join("MANIFEST.tsv").is_file()),
    };
    if let Some(dir) = shared {
        out.push(Corpus {
            name: "full shared corpus",
            dir,
            rows: 128,
        });
    }
    out
}

/// Tells which corpora ran, on stderr even when the harness captures output.
fn say(test: &str, ran: &[Corpus]) {
    let names: Vec<String> = ran
        .iter()
        .map(|c| format!("{} ({} files, {})", c.name, c.rows, c.dir.display()))
        .collect();
    let mut line = format!("{test}: ran {}", names.join(" and "));
    if ran.len() == 1 {
        line.push_str(
            "; the full shared corpus is absent (../shared/corpus/pprof or $PROFDIFF_CORPUS)",
        );
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

struct Row {
    path: String,
    parses: bool,
    sample_types: String,
    totals: String,
    notes: String,
}

fn manifest(dir: &Path) -> Vec<Row> {
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
    let corpora = corpora();
    for c in &corpora {
        check_totals(c);
    }
    say("corpus_totals_match_go_tool_pprof", &corpora);
}

fn check_totals(c: &Corpus) {
    let rows = manifest(&c.dir);
    assert_eq!(
        rows.len(),
        c.rows,
        "the manifest of the {} should list {} profiles",
        c.name,
        c.rows
    );
    let dir = &c.dir;
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
        "{}: {} of {} corpus files mismatch:\n{}",
        c.name,
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert_eq!(ok_yes + ok_no, c.rows);
}

#[test]
fn corpus_directory_load_skips_manifest_and_sorts() {
    // Loading a directory of the corpus: the MANIFEST is skipped, files come sorted.
    let corpora = corpora();
    for c in &corpora {
        let dir = c.dir.join("jerrinot__ap-query");
        let loaded = diff::input::load_many(&[dir]).expect("load directory");
        let names: Vec<_> = loaded.iter().map(|(p, _)| p.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(loaded.len(), 5);
    }
    say("corpus_directory_load_skips_manifest_and_sorts", &corpora);
}

#[test]
fn corpus_round_trips_through_our_encoder() {
    // Every profile we accept re-encodes to pprof that decodes to the same totals and stacks.
    let corpora = corpora();
    let mut failures = Vec::new();
    for (dir, row) in corpora
        .iter()
        .flat_map(|c| manifest(&c.dir).into_iter().map(|r| (&c.dir, r)))
        .filter(|(_, r)| r.parses)
    {
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
    say("corpus_round_trips_through_our_encoder", &corpora);
}

#[test]
fn in_repo_corpus_lists_every_file_and_stays_small() {
    // Every file carried in the repository has a manifest row and a NOTICE
    // entry (source and licence), and the subset stays under 3 MB.
    let c = &corpora()[0];
    let notice = std::fs::read_to_string(c.dir.join("NOTICE.md")).expect("NOTICE.md");
    let rows = manifest(&c.dir);
    let mut total = 0u64;
    let mut files = Vec::new();
    for repo in std::fs::read_dir(&c.dir).expect("corpus dir").flatten() {
        if !repo.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(repo.path()).expect("repo dir").flatten() {
            total += f.metadata().expect("metadata").len();
            files.push(format!(
                "{}/{}",
                repo.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    files.sort();
    let mut listed: Vec<String> = rows.iter().map(|r| r.path.clone()).collect();
    listed.sort();
    assert_eq!(files, listed, "files and MANIFEST.tsv rows differ");
    for f in &files {
        assert!(
            notice.contains(&format!("`{f}`")),
            "{f} is not in NOTICE.md"
        );
    }
    assert!(
        total <= 3 << 20,
        "in-repo corpus is {total} bytes, over 3 MiB"
    );
}
