//! Helpers shared by the end-to-end tests in `tests/tests/`: locating the
//! binaries, starting and ending the processes a test owns, reading pprof.
#![deny(missing_docs)]

pub mod agentrun;
pub mod apiload;
pub mod apisim;
pub mod gobuild;
pub mod http;
pub mod kubelet;
pub mod kubesim;
pub mod regress;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use profiler_pprof::proto;

/// Workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn env_or(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

/// The `profiler` binary (`PROFILER_BIN`, else target/debug/profiler).
pub fn profiler_bin() -> PathBuf {
    env_or("PROFILER_BIN", root().join("target/debug/profiler"))
}

/// The `profdiff` binary (`PROFDIFF_BIN`, else target/debug/profdiff).
pub fn profdiff_bin() -> PathBuf {
    env_or("PROFDIFF_BIN", root().join("target/debug/profdiff"))
}

/// A workload binary built by `cargo xtask build-workloads`.
pub fn workload(name: &str) -> PathBuf {
    let p = env_or("WORKLOADS_BIN", root().join("tests/workloads/bin")).join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo xtask build-workloads` (or `cargo xtask test`)",
        p.display()
    );
    p
}

/// The Go tool (for `go tool pprof`), from `GO` or the usual places.
pub fn go_bin() -> PathBuf {
    if let Some(g) = std::env::var_os("GO") {
        return g.into();
    }
    for c in ["/usr/lib/go-1.23/bin/go", "/usr/lib/go-1.19/bin/go"] {
        if Path::new(c).exists() {
            return c.into();
        }
    }
    "go".into()
}

/// True when eBPF tests can run. Without root they are skipped, except under
/// `CI=true`, where a skip is a failure.
pub fn can_run_ebpf(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: eBPF tests need root, and CI=true forbids skipping");
    }
    eprintln!("{test}: skipped (needs root)");
    false
}

/// A process the test started; killed by its PID and reaped on drop.
pub struct Owned(pub Child);

impl Owned {
    /// Start `cmd`.
    pub fn spawn(cmd: &mut Command) -> Owned {
        Owned(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}")),
        )
    }
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Read its piped stdout and stderr (each empty when not piped) to their
    /// ends, reap it, and panic naming `what` and its output unless it
    /// exited successfully. Returns `(stdout, stderr)`.
    pub fn finish(&mut self, what: &str) -> (String, String) {
        use std::io::Read;
        // stderr is read on a thread so that neither pipe can fill and
        // block the process while the other is read.
        let err = self.0.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        let mut stdout = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        let stderr = err
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let status = self
            .0
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        assert!(
            status.success(),
            "{what} failed ({status}): stdout: {stdout} stderr: {stderr}"
        );
        (stdout, stderr)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "profiler-test-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `profiler record ARGS`, returning its output.
pub fn record(args: &[&str]) -> Output {
    let out = Command::new(profiler_bin())
        .arg("record")
        .arg("--quiet")
        .args(args)
        .output()
        .expect("running profiler");
    eprintln!("profiler stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Read a gzip'd (or plain) pprof file into its wire form (the pprof
/// crate's bounded decoder).
pub fn read_pprof(path: &Path) -> proto::Profile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    profiler_pprof::decode(&bytes, &profiler_pprof::Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One sample flattened: its pid label, frames (leaf first, inlined lines
/// expanded, innermost first) with a kernel flag, and its sample count.
#[derive(Debug, Clone)]
pub struct FlatSample {
    /// `pid` label.
    pub pid: i64,
    /// `thread` label.
    pub thread: String,
    /// (function name, is kernel frame, is inlined line), leaf first.
    pub frames: Vec<(String, bool, bool)>,
    /// Value of sample type 0 (samples/count).
    pub count: i64,
}

/// Flatten a profile for assertions.
pub fn flatten(p: &proto::Profile) -> Vec<FlatSample> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let funcs: HashMap<u64, String> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let kernel_maps: Vec<u64> = p
        .mapping
        .iter()
        .filter(|m| s(m.filename).contains("kernel"))
        .map(|m| m.id)
        .collect();
    let locs: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    p.sample
        .iter()
        .map(|smp| {
            let mut frames = Vec::new();
            for id in &smp.location_id {
                let l = locs[id];
                let kernel = kernel_maps.contains(&l.mapping_id);
                if l.line.is_empty() {
                    frames.push((format!("0x{:x}", l.address), kernel, false));
                }
                for (i, line) in l.line.iter().enumerate() {
                    let inlined = i + 1 < l.line.len();
                    frames.push((funcs[&line.function_id].clone(), kernel, inlined));
                }
            }
            let mut pid = -1;
            let mut thread = String::new();
            for lab in &smp.label {
                match s(lab.key).as_str() {
                    "pid" => pid = lab.num,
                    "thread" => thread = s(lab.str),
                    _ => {}
                }
            }
            FlatSample {
                pid,
                thread,
                frames,
                count: smp.value[0],
            }
        })
        .collect()
}

/// Total of sample type 0.
pub fn total(samples: &[FlatSample]) -> i64 {
    samples.iter().map(|s| s.count).sum()
}

/// Samples whose stack contains a frame whose name contains `needle`.
pub fn cum(samples: &[FlatSample], needle: &str) -> i64 {
    samples
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.0.contains(needle)))
        .map(|s| s.count)
        .sum()
}

/// Sum of the sample type named `kind` over the samples whose stack has a
/// function named exactly `func` (a cumulative value, as `go tool pprof
/// -top -cum` shows it). Panics when the profile has no such type.
pub fn value_under(p: &proto::Profile, kind: &str, func: &str) -> i64 {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let v = p
        .sample_type
        .iter()
        .position(|t| s(t.r#type) == kind)
        .unwrap_or_else(|| panic!("no sample type {kind}"));
    let funcs: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    p.sample
        .iter()
        .filter(|smp| {
            smp.location_id.iter().any(|id| {
                locs[id]
                    .line
                    .iter()
                    .any(|l| funcs.get(&l.function_id) == Some(&func))
            })
        })
        .map(|smp| smp.value[v])
        .sum()
}

/// `go tool pprof -sample_index=0 -top` total ("... of N total").
pub fn go_pprof_total(path: &Path) -> Option<i64> {
    let out = Command::new(go_bin())
        .args(["tool", "pprof", "-sample_index=0", "-top"])
        .arg(path)
        .env("HOME", std::env::temp_dir())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().find(|l| l.contains(" total"))?;
    let n = line.split(" of ").nth(1)?.split_whitespace().next()?;
    n.parse().ok()
}

/// Wait until `f` holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
