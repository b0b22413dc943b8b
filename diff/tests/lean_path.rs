//! `Comparison::from_pprof_files` (the lean path: files straight to
//! reduced runs) against `Comparison::new` on the loaded profiles: the
//! same function table, the same runs (stacks in the same iteration
//! order, bit-identical values and totals) and the same size factor, under
//! each normalizer setting; inputs it does not take give `None`.

use std::path::PathBuf;

use diff::compare::Comparison;
use diff::normalize::{NormalizeOptions, Normalizer, Rewrite, Rule};
use diff::Profile;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/corpus/");

fn path(rel: &str) -> String {
    format!("{DATA}{rel}")
}

fn general(base: &[String], cand: &[String], st: Option<&str>, norm: &Normalizer) -> Comparison {
    let load = |xs: &[String]| -> Vec<(String, Profile)> {
        let paths: Vec<PathBuf> = xs.iter().map(PathBuf::from).collect();
        diff::input::load_many(&paths)
            .expect("load")
            .into_iter()
            .map(|(p, prof)| (p.display().to_string(), prof))
            .collect()
    };
    let (b, c) = (load(base), load(cand));
    let br: Vec<(String, &Profile)> = b.iter().map(|(n, p)| (n.clone(), p)).collect();
    let cr: Vec<(String, &Profile)> = c.iter().map(|(n, p)| (n.clone(), p)).collect();
    Comparison::new(&br, &cr, st, norm).expect("comparison")
}

fn same(a: &Comparison, b: &Comparison, what: &str) {
    assert_eq!(a.table.funcs, b.table.funcs, "{what}: function table");
    assert_eq!(a.sample_type, b.sample_type, "{what}: sample type");
    assert_eq!(a.normalization, b.normalization, "{what}: normalization");
    assert_eq!(a.size, b.size, "{what}: size factor");
    for (ra, rb) in a
        .base
        .iter()
        .chain(&a.cand)
        .zip(b.base.iter().chain(&b.cand))
    {
        assert_eq!(ra.source, rb.source, "{what}");
        assert_eq!(ra.total.to_bits(), rb.total.to_bits(), "{what}: total");
        assert_eq!(ra.weight.to_bits(), rb.weight.to_bits(), "{what}: weight");
        assert_eq!(
            ra.duration_secs.to_bits(),
            rb.duration_secs.to_bits(),
            "{what}"
        );
        assert_eq!(ra.size_factor.to_bits(), rb.size_factor.to_bits(), "{what}");
        let tt = |r: &diff::normalize::RunData| -> Vec<(String, u64)> {
            r.type_totals
                .iter()
                .map(|(k, v)| (k.clone(), v.to_bits()))
                .collect()
        };
        assert_eq!(tt(ra), tt(rb), "{what}: type totals");
        let st = |r: &diff::normalize::RunData| -> Vec<(Vec<u32>, u64)> {
            r.stacks
                .iter()
                .map(|(s, v)| (s.to_vec(), v.to_bits()))
                .collect()
        };
        assert_eq!(st(ra), st(rb), "{what}: stacks in iteration order");
    }
    assert_eq!(a.base.len(), b.base.len());
    assert_eq!(a.cand.len(), b.cand.len());
}

fn options() -> Vec<(&'static str, NormalizeOptions)> {
    let re = |s: &str| Some(regex::Regex::new(s).expect("regex"));
    vec![
        ("default", NormalizeOptions::default()),
        (
            "no-kernel",
            NormalizeOptions {
                no_kernel: true,
                ..Default::default()
            },
        ),
        (
            "no rules",
            NormalizeOptions {
                disabled: Rule::parse_list(&["all"]).expect("all"),
                ..Default::default()
            },
        ),
        (
            "focus/ignore/prune/rewrite",
            NormalizeOptions {
                focus: re("runtime|main|std|java|0x"),
                ignore: re("gcBgMarkWorker"),
                prune: re("mallocgc"),
                rewrites: vec![Rewrite::parse("runtime\\.=>rt.").expect("rewrite")],
                ..Default::default()
            },
        ),
    ]
}

#[test]
fn lean_path_reduces_like_the_general_path() {
    let pairs: Vec<(Vec<&str>, Vec<&str>, Option<&str>)> = vec![
        (
            vec!["dundee__gdu/default.pgo"],
            vec!["concourse__concourse/default.pgo"],
            None,
        ),
        (
            vec!["golang__go/src__cmd__compile__default.pgo"],
            vec!["dundee__gdu/default.pgo"],
            None,
        ),
        (
            vec!["dpsoft__perf-agent/profile.pb.gz"],
            vec!["dpsoft__perf-agent/profile.pb.gz"],
            None,
        ),
        (
            vec!["parca-dev__parca/pkg__normalizer__node-profile.pb.gz"],
            vec!["parca-dev__parca/pkg__query__testdata__profile-with-labels.pb.gz"],
            None,
        ),
        (
            vec!["DataDog__libdatadog/libdd-profiling__tests__wordpress.pprof"],
            vec!["DataDog__libdatadog/libdd-profiling__tests__profile.pprof"],
            Some("wall-time"),
        ),
        (
            vec!["DataDog__dd-trace-go/profiler__internal__fastdelta__testdata__heap.pprof"],
            vec!["DataDog__dd-trace-go/profiler__internal__fastdelta__testdata__big-heap.pprof"],
            Some("inuse_space"),
        ),
        (
            vec![
                "parca-dev__parca/pkg__symbolizer__testdata__stripped-cpu.stripped.pprof",
                "parca-dev__parca/pkg__query__testdata__cpu_labels.pb.gz",
            ],
            vec![
                "parca-dev__parca/pkg__symbolizer__testdata__without-dwarf-cpu.stripped.pprof",
                "parca-dev__parca/pkg__query__testdata__fib.pb.gz",
            ],
            Some("samples"),
        ),
        (
            vec![
                "operator-framework__catalogd/pprof__kubeapiserver_alone_cpu_profile.pb",
                "operator-framework__catalogd/pprof__manager_cpu_profile.pb",
            ],
            vec![
                "operator-framework__catalogd/pprof__kubeapiserver_cpu_profile.pb",
                "operator-framework__catalogd/pprof__catalogd_apiserver_cpu_profile.pb",
                "concourse__concourse/default.pgo",
            ],
            Some("cpu"),
        ),
    ];
    for (base, cand, st) in &pairs {
        let b: Vec<String> = base.iter().map(|p| path(p)).collect();
        let c: Vec<String> = cand.iter().map(|p| path(p)).collect();
        for (name, opts) in options() {
            let norm = Normalizer::new(opts);
            let lean = Comparison::from_pprof_files(&b, &c, *st, &norm)
                .unwrap_or_else(|| panic!("lean path refused {base:?} vs {cand:?}"));
            same(
                &lean,
                &general(&b, &c, *st, &norm),
                &format!("{base:?} vs {cand:?}, {name}"),
            );
        }
    }
}

#[test]
fn lean_path_declines_what_it_does_not_take() {
    let norm = Normalizer::new(NormalizeOptions::default());
    let go = vec![path("dundee__gdu/default.pgo")];
    // Legacy formats, missing files, unknown sample types: the general path.
    let legacy = vec![path("google__pprof/profile__testdata__cppbench.cpu")];
    assert!(Comparison::from_pprof_files(&legacy, &go, None, &norm).is_none());
    let missing = vec![path("no/such/file.pb.gz")];
    assert!(Comparison::from_pprof_files(&go, &missing, None, &norm).is_none());
    assert!(Comparison::from_pprof_files(&go, &go, Some("nope"), &norm).is_none());
    assert!(Comparison::from_pprof_files(&[], &go, None, &norm).is_none());
}
