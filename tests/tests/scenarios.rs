//! End-to-end gate scenarios for the controller workbench (issue 5).
//!
//! For the baseline and each `controller-sim -variant`, several short runs:
//! each run starts its own `apiserver-sim` (loopback, random port), runs
//! `controller-sim` (with `-memprofilerate 65536`) under `profiler record
//! --profile cpu,goroutines,allocs,calls,heap` (call counts of the typed
//! client's verbs and of `Reconcile`; the in-use heap), then reads the
//! server's request counters and writes them, with the controller's
//! reconcile count, as an API-load profile
//! (`integration_tests::apiload`). Then `profdiff gate --budgets
//! budgets/workbench.toml` once per signal (CPU, goroutines, allocations,
//! call counts, API requests, in-use heap, latency; contention profiles with
//! `budgets/workbench-contention.toml`):
//!
//! * baseline against baseline (two independent sets of runs) must pass on
//!   every signal (exit 0);
//! * baseline against each variant must fail (exit 1) on the signals listed
//!   in [`EXPECT`], and a failing finding must come from the named rule and
//!   name the named function or stack.
//!
//! `retry-no-backoff` only differs when there are errors to retry: it and
//! its own baseline run against `apiserver-sim -error-rate 0.2
//! -error-window 1s`.
//!
//! Knobs (environment): `SCENARIO_RUNS` (runs per side, default 3),
//! `SCENARIO_SECS` (seconds per run, default 4), `SCENARIO_VARIANTS`
//! (comma list), `SCENARIO_KEEP=DIR` (keep the profiles and reuse those
//! already there, for budget work), `SCENARIO_MATRIX=FILE` (write the matrix
//! as Markdown). `bench_scenarios` (ignored; run by `cargo xtask bench
//! scenarios`) repeats whole trials: `SCENARIO_TRIALS` (default 5),
//! `SCENARIO_BENCH_OUT=FILE` (TSV of every verdict).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    apiload, apisim, can_run_ebpf, flatten, profdiff_bin, profiler_bin, read_pprof, root, workload,
    Owned, TempDir,
};

#[path = "../scenarios/json.rs"]
#[allow(dead_code)]
mod json;

/// Server flags of the fault configuration (200 ms outage every second).
const FAULTS: &[&str] = &["-error-rate", "0.2", "-error-window", "1s"];

/// CPU sampling frequency: about 5x the default, for more samples per run.
const FREQUENCY: &str = "499";

/// Functions whose calls the calls profile counts: the typed API client's
/// verbs and the reconcile itself.
const COUNTED: &[&str] = &[
    "main.(*Client).List",
    "main.(*Client).Get",
    "main.(*Client).PatchStatus",
    "main.(*Client).Watch",
    "*.Reconcile",
];

/// Functions whose call durations the latency profile measures.
const TIMED: &[&str] = &["*.Reconcile"];

/// The signals a scenario can gate on; one profile directory each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Signal {
    /// `profiler record` CPU profile.
    Cpu,
    /// `profiler record --profile goroutines`: live goroutines by creation site.
    Goroutines,
    /// `profiler record --profile allocs`: Go's sampled allocations.
    Allocs,
    /// `profiler record --profile calls`: exact call counts of [`COUNTED`].
    Calls,
    /// apiserver-sim counters as a profile.
    Api,
    /// `profiler record --profile latency`: call durations of [`TIMED`].
    Latency,
    /// `profiler record --profile contention`: lock waits by waiter stack.
    Contention,
    /// `profiler record --profile heap`: in-use heap by allocation stack.
    Heap,
}

impl Signal {
    const ALL: [Signal; 8] = [
        Signal::Cpu,
        Signal::Goroutines,
        Signal::Allocs,
        Signal::Calls,
        Signal::Api,
        Signal::Latency,
        Signal::Contention,
        Signal::Heap,
    ];
    /// The profile directory, also `profiler record`'s profile type name.
    fn dir(self) -> &'static str {
        match self {
            Signal::Cpu => "cpu",
            Signal::Goroutines => "goroutines",
            Signal::Allocs => "allocs",
            Signal::Calls => "calls",
            Signal::Api => "api",
            Signal::Latency => "latency",
            Signal::Contention => "contention",
            Signal::Heap => "heap",
        }
    }
}

/// What is expected of a variant's gate: on `signal`, a failing finding of
/// `rule` whose function or message contains `names`. A `required` check
/// fails the test when missing; the others are reported in the matrix.
struct Check {
    signal: Signal,
    rule: &'static str,
    names: &'static str,
    required: bool,
}

/// A required check.
const fn c(signal: Signal, rule: &'static str, names: &'static str) -> Check {
    Check {
        signal,
        rule,
        names,
        required: true,
    }
}

/// A check that is reported but not required.
const fn o(signal: Signal, rule: &'static str, names: &'static str) -> Check {
    Check {
        signal,
        rule,
        names,
        required: false,
    }
}

/// Per variant: whether it runs against the fault configuration, and the
/// findings its gate must contain. An empty list means no available signal
/// catches it: the test then asserts only what is true (see MATRIX.md).
const EXPECT: &[(&str, bool, &[Check])] = &[
    (
        "list-in-reconcile",
        false,
        &[
            c(Signal::Api, "api-list-per-reconcile", "LIST widgets"),
            c(
                Signal::Cpu,
                "api-list-under-reconcile",
                "main.(*Client).List",
            ),
            c(Signal::Cpu, "controller-function-share", "groupSizeFromAPI"),
            c(
                Signal::Calls,
                "api-client-read-calls",
                "main.(*Client).List",
            ),
        ],
    ),
    (
        "redundant-get",
        false,
        &[
            c(Signal::Api, "api-get-per-reconcile", "GET widgets"),
            c(Signal::Cpu, "api-get-under-reconcile", "main.(*Client).Get"),
            c(Signal::Cpu, "controller-function-share", "refetch"),
            c(Signal::Calls, "api-client-read-calls", "main.(*Client).Get"),
        ],
    ),
    (
        "unpaginated-list",
        false,
        &[
            c(Signal::Api, "api-list-items-per-reconcile", "total"),
            c(Signal::Api, "api-list-per-reconcile", "LIST widgets"),
            c(
                Signal::Cpu,
                "api-list-under-reconcile",
                "main.(*Client).List",
            ),
            c(
                Signal::Cpu,
                "controller-function-share",
                "groupSizeFromFullList",
            ),
            c(
                Signal::Calls,
                "api-client-read-calls",
                "main.(*Client).List",
            ),
            o(
                Signal::Allocs,
                "controller-alloc-share",
                "groupSizeFromFullList",
            ),
        ],
    ),
    (
        "duplicate-watch",
        false,
        &[
            c(Signal::Api, "api-watch-per-run", "WATCH widgets"),
            // Counts are exact from the first instruction (the command is
            // held before exec until the probes are attached), so the
            // private watches opened at start-up are counted.
            c(Signal::Calls, "watch-calls-per-run", "Watch"),
            o(Signal::Cpu, "controller-function-share", "receive"),
        ],
    ),
    (
        "goroutine-leak",
        false,
        &[
            c(
                Signal::Cpu,
                "goroutine-spawn-under-reconcile",
                "runtime.newproc",
            ),
            c(
                Signal::Goroutines,
                "goroutines-started-by-reconcile",
                "Reconcile",
            ),
        ],
    ),
    (
        "unbounded-cache",
        false,
        &[
            c(Signal::Cpu, "json-indent-under-reconcile", "remember"),
            c(Signal::Allocs, "controller-alloc-share", "remember"),
            c(Signal::Heap, "inuse-heap-growth", "remember"),
        ],
    ),
    (
        // The wait is the contention profile's. CPU profiles, like Go's
        // own, put the scheduler's work after a goroutine parks under
        // `runtime.mcall`, not under the parked goroutine's frames, so the
        // mutex's CPU under Reconcile is only its slow path's own
        // (`lockSlow` 1.5% of the samples in one recording, against a 1%
        // budget: inconclusive at 3 runs per side; the CPU gate failed,
        // was inconclusive and passed in three recordings). Reported, not
        // required.
        "global-mutex",
        false,
        &[
            o(
                Signal::Cpu,
                "contended-lock-under-reconcile",
                "sync.(*Mutex).lockSlow",
            ),
            c(Signal::Contention, "lock-wait-under-reconcile", "Reconcile"),
        ],
    ),
    (
        "retry-no-backoff",
        true,
        &[
            c(
                Signal::Api,
                "api-patch-per-reconcile",
                "PATCH widgets/status",
            ),
            c(
                Signal::Cpu,
                "controller-function-share",
                "patchStatusUntilSuccess",
            ),
            c(Signal::Calls, "patch-calls-share", "PatchStatus"),
        ],
    ),
    (
        "hot-path-bloat",
        false,
        &[
            c(
                Signal::Cpu,
                "regexp-compile-under-reconcile",
                "validateName",
            ),
            c(Signal::Cpu, "controller-function-share", "debugSnapshot"),
            o(Signal::Allocs, "controller-alloc-share", "debugSnapshot"),
        ],
    ),
    (
        "fanout-unlimited",
        false,
        &[
            c(
                Signal::Api,
                "api-patch-per-reconcile",
                "PATCH widgets/status",
            ),
            c(Signal::Cpu, "controller-function-share", "fanOut"),
            c(Signal::Calls, "patch-calls-share", "PatchStatus"),
        ],
    ),
    (
        // A slow API call (GET of the approval subresource, answered after
        // 200 ms) made synchronous inside Reconcile: about the baseline's CPU
        // work per reconcile; the latency profile names Reconcile (the
        // API-load profile also shows the new GET, not required here).
        "slow-reconcile",
        false,
        &[c(
            Signal::Latency,
            "reconcile-p99",
            "main.(*WidgetReconciler).Reconcile",
        )],
    ),
];

/// Variants that do not change API load (the server sees one status PATCH
/// per reconcile and the shared informer's LIST and WATCH): their API-load
/// gate must pass, so an API finding is never a false attribution.
const API_UNCHANGED: &[&str] = &[
    "goroutine-leak",
    "unbounded-cache",
    "global-mutex",
    "hot-path-bloat",
];

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
        Err(_) => default,
    }
}

fn budgets() -> PathBuf {
    root().join("budgets/workbench.toml")
}

/// The budgets file of a signal: the contention profile has its own (no
/// share-growth rules: see the file).
fn budgets_for(signal: Signal) -> PathBuf {
    match signal {
        Signal::Contention => root().join("budgets/workbench-contention.toml"),
        _ => budgets(),
    }
}

/// One recorded run.
#[derive(Debug, Clone, Default)]
struct RunInfo {
    reconciles: u64,
    reconciles_per_sec: f64,
    requests: BTreeMap<String, u64>,
    injected_errors: u64,
    wall: Duration,
}

/// Start `apiserver-sim` on a random loopback port (with the fault flags
/// when `faults`); returns it, its address and its drained stdout.
fn start_server(faults: bool) -> (Owned, SocketAddr, std::thread::JoinHandle<String>) {
    apisim::start(if faults { FAULTS } else { &[] })
}

/// Share of samples whose user-space frames are all unsymbolized
/// addresses (a profile that lost the process's symbols).
fn unsymbolized_share(cpu: &Path) -> f64 {
    let samples = flatten(&read_pprof(cpu));
    let total: i64 = samples.iter().map(|s| s.count).sum();
    let bad: i64 = samples
        .iter()
        .filter(|s| {
            let user: Vec<_> = s.frames.iter().filter(|f| !f.1).collect();
            !user.is_empty() && user.iter().all(|f| f.0.starts_with("0x"))
        })
        .map(|s| s.count)
        .sum();
    bad as f64 / total.max(1) as f64
}

/// Record one run (see [`record_once`]); a run whose CPU profile lost its
/// symbols (more than a third of the samples unsymbolized, a profiler
/// failure rather than a property of the workload) is recorded again, once,
/// and counted in [`UNSYMBOLIZED_RETRIES`].
fn record_run(variant: &str, faults: bool, dir: &Path, idx: usize, secs: u64) -> RunInfo {
    let r = record_once(variant, faults, dir, idx, secs);
    let cpu = dir.join("cpu").join(format!("run-{idx}.pb.gz"));
    let bad = unsymbolized_share(&cpu);
    if bad <= 1.0 / 3.0 {
        return r;
    }
    UNSYMBOLIZED_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "WARNING: {variant} run {idx}: {:.0}% of CPU samples unsymbolized (profiler log: {}); recording it again",
        bad * 100.0,
        dir.join("logs").join(format!("run-{idx}.profiler.txt")).display()
    );
    let _ = std::fs::rename(
        dir.join("logs").join(format!("run-{idx}.profiler.txt")),
        dir.join("logs").join(format!("run-{idx}.unsymbolized.txt")),
    );
    let r = record_once(variant, faults, dir, idx, secs);
    let bad = unsymbolized_share(&cpu);
    assert!(
        bad <= 1.0 / 3.0,
        "{variant} run {idx}: {:.0}% of CPU samples unsymbolized twice in a row",
        bad * 100.0
    );
    r
}

/// Runs re-recorded because their CPU profile lost its symbols.
static UNSYMBOLIZED_RETRIES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Record one run of `variant` into `dir/<signal>/run-<idx>.pb.gz` (and
/// the profiler's stderr into `dir/logs/`).
fn record_once(variant: &str, faults: bool, dir: &Path, idx: usize, secs: u64) -> RunInfo {
    let start = Instant::now();
    for sig in Signal::ALL {
        std::fs::create_dir_all(dir.join(sig.dir())).unwrap();
    }
    let api = dir.join("api").join(format!("run-{idx}.pb.gz"));
    // `profiler record` writes <type>.pb.gz into this directory.
    let rec_dir = dir.join(format!("record-{idx}"));
    let _ = std::fs::remove_dir_all(&rec_dir);
    let types: Vec<&str> = Signal::ALL
        .iter()
        .filter(|s| **s != Signal::Api)
        .map(|s| s.dir())
        .collect();
    let (srv, addr, srv_out) = start_server(faults);
    let mut cmd = Command::new(profiler_bin());
    cmd.args(["record", "--quiet", "--frequency", FREQUENCY])
        .args(["--profile", &types.join(",")]);
    for f in COUNTED {
        cmd.args(["--count", f]);
    }
    for f in TIMED {
        cmd.args(["--latency", f]);
    }
    let mut prof = Owned::spawn(
        cmd.arg("-o")
            .arg(&rec_dir)
            .arg("--")
            .arg(workload("controller-sim"))
            .args(["-server", &format!("http://{addr}")])
            .args(["-duration", &format!("{secs}s"), "-variant", variant])
            .args(["-memprofilerate", "65536"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = apisim::drain(prof.0.stdout.take().unwrap());
    let err = apisim::drain(prof.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    let status = loop {
        if let Some(s) = prof.0.try_wait().expect("waiting for profiler") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{variant}: profiler record did not finish within {secs} s + 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join(format!("run-{idx}.profiler.txt")), &stderr).unwrap();
    assert!(
        status.success(),
        "{variant}: profiler record failed ({status}): {stderr}"
    );
    for t in &types {
        let from = rec_dir.join(format!("{t}.pb.gz"));
        let to = dir.join(t).join(format!("run-{idx}.pb.gz"));
        std::fs::rename(&from, &to).unwrap_or_else(|e| {
            panic!(
                "{variant}: moving {} to {}: {e}",
                from.display(),
                to.display()
            )
        });
    }
    let _ = std::fs::remove_dir(&rec_dir);
    let reconciles = apiload::reconciles(&stdout)
        .unwrap_or_else(|| panic!("{variant}: no reconciles= summary in {stdout:?}"));
    let counters = apiload::fetch(addr).unwrap_or_else(|e| panic!("{variant}: {e}"));
    drop(srv);
    let _ = srv_out.join();
    let p = apiload::profile(&counters, reconciles, Duration::from_secs(secs));
    apiload::write(&p, &api).unwrap_or_else(|e| panic!("{e}"));
    let rps = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("reconciles="))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("reconciles_per_sec="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let mut requests = BTreeMap::new();
    for ((verb, _), v) in &counters.by_verb {
        *requests.entry(verb.clone()).or_insert(0) += v.requests;
    }
    RunInfo {
        reconciles,
        reconciles_per_sec: rps,
        requests,
        injected_errors: counters.injected_errors(),
        wall: start.elapsed(),
    }
}

/// A finding from the JSON report.
#[derive(Debug, Clone)]
struct Finding {
    rule: String,
    function: String,
    verdict: String,
    message: String,
}

/// The result of one `profdiff gate`.
#[derive(Debug, Clone)]
struct GateResult {
    exit: i32,
    findings: Vec<Finding>,
    stdout: String,
}

impl GateResult {
    fn failing(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.verdict == "fail")
    }
    fn has(&self, rule: &str, names: &str) -> bool {
        self.failing()
            .any(|f| f.rule == rule && (f.function.contains(names) || f.message.contains(names)))
    }
    /// One-line summary of the first failing finding (or the verdict).
    fn headline(&self) -> String {
        match self.failing().next() {
            Some(f) => format!("{}: {}: {}", f.rule, f.function, f.message),
            None => match self.exit {
                0 => "pass".into(),
                3 => "inconclusive".into(),
                e => format!("exit {e}"),
            },
        }
    }
}

/// `profdiff gate` on one signal's directories.
fn gate(base: &Path, cand: &Path, signal: Signal, out: &Path) -> GateResult {
    let json_path = out.with_extension("json");
    let o = Command::new(profdiff_bin())
        .arg("gate")
        .arg("-b")
        .arg(base.join(signal.dir()))
        .arg("-c")
        .arg(cand.join(signal.dir()))
        .arg("--budgets")
        .arg(budgets_for(signal))
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("running profdiff");
    let exit = o.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        exit == 0 || exit == 1 || exit == 3,
        "profdiff gate {signal:?} {} vs {}: exit {exit}: {}",
        base.display(),
        cand.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&json_path).expect("gate JSON written");
    let doc = json::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    assert_eq!(doc.get("schema").str(), "profdiff.gate/v1");
    assert_eq!(doc.get("exit_code").num(), Some(exit as f64));
    let findings = doc
        .get("findings")
        .arr()
        .iter()
        .map(|f| Finding {
            rule: f.get("rule").str().to_string(),
            function: f.get("function").str().to_string(),
            verdict: f.get("verdict").str().to_string(),
            message: f.get("message").str().to_string(),
        })
        .collect();
    GateResult {
        exit,
        findings,
        stdout,
    }
}

/// A set of runs of one configuration.
struct Side {
    label: String,
    dir: PathBuf,
    runs: Vec<RunInfo>,
}

impl Side {
    fn rec_per_sec(&self) -> f64 {
        self.runs.iter().map(|r| r.reconciles_per_sec).sum::<f64>() / self.runs.len().max(1) as f64
    }
    fn per_rec(&self, verb: &str) -> f64 {
        let n: u64 = self
            .runs
            .iter()
            .map(|r| r.requests.get(verb).copied().unwrap_or(0))
            .sum();
        let d: u64 = self.runs.iter().map(|r| r.reconciles).sum();
        n as f64 / d.max(1) as f64
    }
}

/// One configuration to record: a side label, variant and fault flag.
struct Config {
    label: String,
    variant: String,
    faults: bool,
}

/// Record `runs` runs of every configuration, interleaved (round-robin) so
/// that drifting machine load hits every configuration alike. With `keep`,
/// profiles already there are reused.
fn record_all(configs: &[Config], runs: usize, secs: u64, dir: &Path, keep: bool) -> Vec<Side> {
    let mut sides: Vec<Side> = configs
        .iter()
        .map(|c| Side {
            label: c.label.clone(),
            dir: dir.join(&c.label),
            runs: Vec::new(),
        })
        .collect();
    for i in 0..runs {
        for (c, s) in configs.iter().zip(sides.iter_mut()) {
            let done = s.dir.join("api").join(format!("run-{i}.pb.gz"));
            if keep && done.exists() && s.dir.join("cpu").join(format!("run-{i}.pb.gz")).exists() {
                s.runs.push(RunInfo::default());
                continue;
            }
            let r = record_run(&c.variant, c.faults, &s.dir, i, secs);
            eprintln!(
                "recorded {} run {i}: {} reconciles ({:.0}/s), {:?}, injected errors {}, {:.1} s",
                c.label,
                r.reconciles,
                r.reconciles_per_sec,
                r.requests,
                r.injected_errors,
                r.wall.as_secs_f64()
            );
            s.runs.push(r);
        }
    }
    sides
}

fn selected_variants() -> Vec<&'static str> {
    let filter = std::env::var("SCENARIO_VARIANTS").ok();
    EXPECT
        .iter()
        .map(|e| e.0)
        .filter(|v| {
            filter
                .as_deref()
                .is_none_or(|f| f.split(',').any(|x| x.trim() == *v))
        })
        .collect()
}

fn expect_of(variant: &str) -> (bool, &'static [Check]) {
    let e = EXPECT
        .iter()
        .find(|e| e.0 == variant)
        .expect("known variant");
    (e.1, e.2)
}

/// The configurations one trial needs: two baseline sets (A/A), a fault
/// baseline when a selected variant needs faults, and the variants.
fn configs(variants: &[&str], suffix: &str) -> Vec<Config> {
    let mut v = vec![
        Config {
            label: format!("baseline-a{suffix}"),
            variant: "baseline".into(),
            faults: false,
        },
        Config {
            label: format!("baseline-b{suffix}"),
            variant: "baseline".into(),
            faults: false,
        },
    ];
    if variants.iter().any(|x| expect_of(x).0) {
        v.push(Config {
            label: format!("baseline-faults{suffix}"),
            variant: "baseline".into(),
            faults: true,
        });
    }
    for x in variants {
        v.push(Config {
            label: format!("{x}{suffix}"),
            variant: x.to_string(),
            faults: expect_of(x).0,
        });
    }
    v
}

/// Gate results of one trial: A/A and every variant, per signal.
struct Trial {
    aa: BTreeMap<Signal, GateResult>,
    variants: Vec<(String, BTreeMap<Signal, GateResult>)>,
}

fn run_trial(sides: &[Side], variants: &[&str], suffix: &str, out: &Path) -> Trial {
    let find = |label: String| {
        sides
            .iter()
            .find(|s| s.label == label)
            .unwrap_or_else(|| panic!("no side {label}"))
    };
    let a = find(format!("baseline-a{suffix}"));
    let b = find(format!("baseline-b{suffix}"));
    let mut aa = BTreeMap::new();
    for sig in Signal::ALL {
        aa.insert(
            sig,
            gate(
                &a.dir,
                &b.dir,
                sig,
                &out.join(format!("aa{suffix}-{}", sig.dir())),
            ),
        );
    }
    let mut vs = Vec::new();
    for v in variants {
        let (faults, _) = expect_of(v);
        let base = if faults {
            find(format!("baseline-faults{suffix}"))
        } else {
            a
        };
        let cand = find(format!("{v}{suffix}"));
        let mut m = BTreeMap::new();
        for sig in Signal::ALL {
            m.insert(
                sig,
                gate(
                    &base.dir,
                    &cand.dir,
                    sig,
                    &out.join(format!("{v}{suffix}-{}", sig.dir())),
                ),
            );
        }
        vs.push((v.to_string(), m));
    }
    Trial { aa, variants: vs }
}

/// Whether a variant's gate meets its expectation (and the messages of the
/// expected findings, or why not).
fn judge(variant: &str, res: &BTreeMap<Signal, GateResult>) -> (bool, Vec<String>) {
    let (_, checks) = expect_of(variant);
    let mut ok = !checks.is_empty();
    let mut notes = Vec::new();
    for ch in checks.iter().filter(|c| c.required) {
        let g = &res[&ch.signal];
        let hit = g.exit == 1 && g.has(ch.rule, ch.names);
        if !hit {
            ok = false;
            notes.push(format!(
                "{:?}: expected a failing {} finding naming {:?}; got exit {} with {}",
                ch.signal,
                ch.rule,
                ch.names,
                g.exit,
                g.failing()
                    .map(|f| format!("[{}: {}]", f.rule, f.function))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    (ok, notes)
}

fn matrix_markdown(trial: &Trial, sides: &[Side]) -> String {
    let mut md = String::from(
        "| variant | signal | exit | gate's first failing finding |\n|---|---|---|---|\n",
    );
    let mut row = |name: &str, res: &BTreeMap<Signal, GateResult>| {
        for (sig, g) in res {
            md.push_str(&format!(
                "| {name} | {:?} | {} | {} |\n",
                sig,
                g.exit,
                g.headline().replace('|', "\\|")
            ));
        }
    };
    row("A/A baseline", &trial.aa);
    for (v, res) in &trial.variants {
        row(v, res);
    }
    md.push_str(
        "\n| variant | signal | rule | naming | required | found |\n|---|---|---|---|---|---|\n",
    );
    for (v, res) in &trial.variants {
        for ch in expect_of(v).1 {
            let g = &res[&ch.signal];
            md.push_str(&format!(
                "| {v} | {:?} | {} | {} | {} | {} |\n",
                ch.signal,
                ch.rule,
                ch.names,
                if ch.required { "yes" } else { "no" },
                if g.exit == 1 && g.has(ch.rule, ch.names) {
                    "yes"
                } else {
                    "NO"
                }
            ));
        }
    }
    md.push_str("\n| side | reconciles/s | LIST/rec | GET/rec | PATCH/rec | WATCH/run |\n|---|---|---|---|---|---|\n");
    for s in sides {
        if s.runs.iter().all(|r| r.reconciles == 0) {
            continue;
        }
        let watch: u64 = s
            .runs
            .iter()
            .map(|r| r.requests.get("WATCH").copied().unwrap_or(0))
            .sum();
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |\n",
            s.label,
            s.rec_per_sec(),
            s.per_rec("LIST"),
            s.per_rec("GET"),
            s.per_rec("PATCH"),
            watch as f64 / s.runs.len().max(1) as f64
        ));
    }
    md
}

/// The scenarios: A/A passes on every signal, every variant fails with the
/// expected findings.
#[test]
fn gate_catches_each_workbench_variant_and_passes_baseline() {
    if !can_run_ebpf("gate_catches_each_workbench_variant_and_passes_baseline") {
        return;
    }
    let started = Instant::now();
    let runs = env_num("SCENARIO_RUNS", 3) as usize;
    let secs = env_num("SCENARIO_SECS", 4);
    let variants = selected_variants();
    let keep = std::env::var_os("SCENARIO_KEEP").map(PathBuf::from);
    let tmp = TempDir::new("scenarios");
    let dir = keep.clone().unwrap_or_else(|| tmp.0.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let cfgs = configs(&variants, "");
    let sides = record_all(&cfgs, runs, secs, &dir, keep.is_some());
    let recorded = started.elapsed();
    let gates = dir.join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let trial = run_trial(&sides, &variants, "", &gates);

    let md = matrix_markdown(&trial, &sides);
    eprintln!("\n{md}");
    if let Some(p) = std::env::var_os("SCENARIO_MATRIX") {
        std::fs::write(&p, &md).unwrap();
    }
    eprintln!(
        "recording {:.0} s, total {:.0} s, {runs} runs x {secs} s per side, {} run(s) re-recorded (unsymbolized)",
        recorded.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        UNSYMBOLIZED_RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );

    let mut problems = Vec::new();
    for (sig, g) in &trial.aa {
        if g.exit != 0 {
            problems.push(format!(
                "A/A {sig:?}: exit {} (must pass): {}\n{}",
                g.exit,
                g.headline(),
                g.stdout
            ));
        }
    }
    for (v, res) in &trial.variants {
        let (ok, notes) = judge(v, res);
        if !ok {
            problems.push(format!("{v}: {}", notes.join("; ")));
        }
        let api = &res[&Signal::Api];
        if API_UNCHANGED.contains(&v.as_str()) && api.exit != 0 {
            problems.push(format!(
                "{v}: API load is unchanged by this variant, yet the API gate exited {}: {}",
                api.exit,
                api.headline()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `cargo xtask bench scenarios`: whole trials (fresh runs per side each
/// time) and the detection and false-alarm rates over them.
#[test]
#[ignore = "long: run by `cargo xtask bench scenarios`"]
fn bench_scenarios() {
    if !can_run_ebpf("bench_scenarios") {
        return;
    }
    let trials = env_num("SCENARIO_TRIALS", 5) as usize;
    let runs = env_num("SCENARIO_RUNS", 3) as usize;
    let secs = env_num("SCENARIO_SECS", 4);
    let variants = selected_variants();
    let tmp = TempDir::new("scenario-bench");
    let mut tsv = String::from("trial\tcomparison\tsignal\texit\tdetected\theadline\n");
    let mut detected: BTreeMap<String, usize> = BTreeMap::new();
    let mut aa_alarms: BTreeMap<Signal, usize> = BTreeMap::new();
    let mut aa_any = 0;
    let started = Instant::now();
    for t in 0..trials {
        let suffix = format!("-t{t}");
        let cfgs = configs(&variants, &suffix);
        let sides = record_all(&cfgs, runs, secs, &tmp.0, false);
        let trial = run_trial(&sides, &variants, &suffix, &tmp.0);
        let mut any = false;
        for (sig, g) in &trial.aa {
            if g.exit != 0 {
                *aa_alarms.entry(*sig).or_default() += 1;
                any = true;
            }
            tsv.push_str(&format!(
                "{t}\tA/A\t{sig:?}\t{}\t{}\t{}\n",
                g.exit,
                g.exit != 0,
                g.headline()
            ));
        }
        aa_any += any as usize;
        for (v, res) in &trial.variants {
            let (ok, _) = judge(v, res);
            *detected.entry(v.clone()).or_default() += ok as usize;
            for (sig, g) in res {
                tsv.push_str(&format!(
                    "{t}\t{v}\t{sig:?}\t{}\t{ok}\t{}\n",
                    g.exit,
                    g.headline()
                ));
            }
        }
        // Each trial's profiles are only needed for its own gates.
        for s in &sides {
            let _ = std::fs::remove_dir_all(&s.dir);
        }
        eprintln!(
            "trial {}/{trials} done after {:.0} s",
            t + 1,
            started.elapsed().as_secs_f64()
        );
    }
    // Wall time from start to verdict for one variant: a fresh trial of
    // three baseline and three variant runs, then both gates.
    let one = variants.first().copied().unwrap_or("list-in-reconcile");
    let t0 = Instant::now();
    let (faults, _) = expect_of(one);
    let cfg = [
        Config {
            label: "ttv-base".into(),
            variant: "baseline".into(),
            faults,
        },
        Config {
            label: "ttv-cand".into(),
            variant: one.into(),
            faults,
        },
    ];
    let sides = record_all(&cfg, runs, secs, &tmp.0, false);
    let mut verdicts = Vec::new();
    for sig in Signal::ALL {
        let g = gate(
            &sides[0].dir,
            &sides[1].dir,
            sig,
            &tmp.join(&format!("ttv-{}", sig.dir())),
        );
        verdicts.push(format!("{sig:?} exit {}", g.exit));
    }
    let ttv = t0.elapsed();

    let mut report = format!(
        "scenario bench: {trials} trials, {runs} runs x {secs} s per side, {} s total\n\n| comparison | detected / trials | rate |\n|---|---|---|\n",
        started.elapsed().as_secs()
    );
    for v in &variants {
        let d = detected.get(*v).copied().unwrap_or(0);
        report.push_str(&format!(
            "| {v} | {d}/{trials} | {:.0}% |\n",
            100.0 * d as f64 / trials as f64
        ));
    }
    report.push_str(&format!(
        "\nA/A false alarms (any signal): {aa_any}/{trials} ({:.0}%)",
        100.0 * aa_any as f64 / trials as f64
    ));
    for sig in Signal::ALL {
        report.push_str(&format!(
            "; {sig:?} {}/{trials}",
            aa_alarms.get(&sig).copied().unwrap_or(0)
        ));
    }
    report.push_str(&format!(
        "\nruns re-recorded because their CPU profile lost its symbols: {}",
        UNSYMBOLIZED_RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    ));
    report.push_str(&format!(
        "\ntime to verdict for {one}: {:.1} s ({runs}+{runs} runs of {secs} s, gates: {})\n",
        ttv.as_secs_f64(),
        verdicts.join(", ")
    ));
    println!("{report}");
    if let Some(p) = std::env::var_os("SCENARIO_BENCH_OUT") {
        std::fs::write(&p, format!("{report}\n{tsv}")).unwrap();
    }
}
