//! Go runtime activity through uprobes: goroutines by creation site (with
//! a leak signal), allocations (unsampled the way Go does it) and exact
//! call counts, each written as a pprof profile.
//!
//! Per process, [`GoSession::add_process`] analyses the binary
//! ([`binary::GoBinary`]: buildinfo version, `runtime.g` offsets from
//! DWARF or a per-version table, functions from `.gopclntab`, so stripped
//! binaries work), decodes prologues ([`prologue`]) to put each probe on
//! an instruction the kernel emulates (the stack-check `JBE`), and attaches
//! pid-scoped uprobes. The kernel aggregates into bounded maps
//! (`profiler_common::go`); [`GoSession::tick`] samples live goroutine
//! counts per site for the leak slope and [`GoSession::finish`] reads
//! everything while the probes are still attached and builds the profiles.
//!
//! Profiles:
//! * `goroutines`: `goroutine/count` (live at the end, by creation stack;
//!   leaf = the function holding the `go` statement), `created/count`,
//!   `exited/count`. Goroutines that existed before attaching are counted
//!   by walking `runtime.allgs` through `/proc/PID/mem` at the end (by
//!   creation PC only, label `origin=before_attach`); when that is not
//!   possible the profile says so.
//! * `allocs`: `alloc_objects/count`, `alloc_space/bytes`. By default the
//!   probe is `runtime.profilealloc`, which fires only for allocations Go
//!   itself samples (`runtime.MemProfileRate`); each sample of size `s` is
//!   weighted by `1/(1-exp(-s/rate))` as Go does. When the rate is 0 (the
//!   linker disables profiling unless `runtime.MemProfile` is reachable)
//!   the profile is empty and says why. Two opt-ins: [`GoOptions::alloc_set_rate`]
//!   writes a rate into the target (Go then samples again; cheap; undone
//!   at the end) and [`GoOptions::alloc_exact`] probes `runtime.mallocgc`
//!   (every allocation, exact, but expensive).
//! * `calls`: `calls/count` by stack for each `--count` symbol, exact.
#![allow(clippy::type_complexity)]

pub mod binary;
mod profile;
pub mod prologue;

use std::{
    collections::{HashMap, HashSet},
    io::Read as _,
    num::NonZeroU32,
    os::unix::fs::FileExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap as AyaHashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        UProbe,
    },
};
use diff::pprof::proto::Profile;
use profiler_common::go::{
    reg, GoCounter, GoFpStack, GoProcConfig, GoStackKey, GoidKey, SiteCounts,
    CALLER_MODE_FIRST_STACKS, CALLER_MODE_STACK_EVERY, COOKIE_BENCH_NO_COUNT, COOKIE_BENCH_STACKID,
    COOKIE_BENCH_TRAP_ONLY, COOKIE_CALLER_MODE, COOKIE_CHECK_FLAGS, GO_PROC_ENTRIES,
};
use profiler_symbolize::{ProfileMeta, ProfileSample, ProfileShape, RawSample, Symbolizer};

use crate::{error::RecordError, sampler::Sampler};
use binary::GoBinary;

/// Errors of the Go binary analysis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GoError {
    /// The binary cannot be used for Go probes.
    #[error("{path}: {why}")]
    Binary {
        /// The binary's path.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// Which Go profile types to collect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoProfiles {
    /// Goroutines by creation site.
    pub goroutines: bool,
    /// Allocations.
    pub allocs: bool,
    /// Call counts of `--count` symbols.
    pub calls: bool,
}

impl GoProfiles {
    /// True if any Go profile is requested.
    pub fn any(&self) -> bool {
        self.goroutines || self.allocs || self.calls
    }
}

/// Options of the Go probes (from `profiler record` flags).
#[derive(Clone, Debug, Default)]
pub struct GoOptions {
    /// Profile types.
    pub profiles: GoProfiles,
    /// Symbols (globs allowed) whose calls are counted.
    pub count: Vec<String>,
    /// A named set of symbols to count ([`preset`]).
    pub preset: Option<String>,
    /// Probe `runtime.mallocgc` (every allocation, exact, slow) instead of
    /// `runtime.profilealloc` (Go's own sampling, free).
    pub alloc_exact: bool,
    /// When a target's `runtime.MemProfileRate` is 0, write this rate into
    /// it (through `/proc/PID/mem`) so Go samples allocations again, and
    /// write 0 back at the end. An explicit opt-in: it changes the target.
    pub alloc_set_rate: Option<u64>,
    /// How counted calls get their stacks (`--count-stacks`).
    pub count_stacks: CountStacks,
}

/// How the calls profile attributes counted calls to stacks. Counts per
/// counted function and per immediate caller are exact in both modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CountStacks {
    /// A full user stack (`bpf_get_stackid`) on every call.
    #[default]
    Full,
    /// Count by immediate caller (the return address at `[SP]`); take the
    /// full stack only for the first hits per caller and CPU, then one hit
    /// in 256, and spread each caller's exact count over its sampled
    /// stacks. Cheaper per call; stacks above the caller are sampled.
    Caller,
}

impl CountStacks {
    /// Parse `full` or `caller`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "caller" => Some(Self::Caller),
            _ => None,
        }
    }
}

/// Names of the `--count-preset` sets.
pub const PRESETS: &[&str] = &["go-controller"];

/// The symbol patterns of a `--count-preset`, or `None` for an unknown name.
pub fn preset(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "go-controller" => Some(&[
            "k8s.io/client-go/rest.(*Request).request",
            "net/http.(*Client).do",
            "sigs.k8s.io/controller-runtime/pkg/internal/controller.(*Controller).reconcileHandler",
            "*.Reconcile",
        ]),
        _ => None,
    }
}

/// Most live-count points kept per creation site (older points are
/// thinned out by halving when full).
const MAX_SERIES_POINTS: usize = 512;
/// Creation sites with a live-count series.
const MAX_SERIES_SITES: usize = 4096;
/// How often `tick` samples live counts.
const SERIES_INTERVAL: Duration = Duration::from_millis(500);
/// Processes remembered as already examined (cleared when full).
const MAX_SKIPPED: usize = 8192;
/// Most `runtime.allgs` entries walked per process.
const MAX_ALLGS: u64 = 1_000_000;

struct Proc {
    exe: PathBuf,
    version: String,
    offsets: binary::GOffsets,
    mem_rate_addr: Option<u64>,
    disable_addr: Option<u64>,
    allgs_addr: Option<u64>,
    /// runtime.MemProfileRate as last read (None: unknown).
    mem_rate: Option<i64>,
    alloc_probe: Option<&'static str>,
    /// We wrote `alloc_set_rate` into the target's MemProfileRate.
    rate_written: bool,
}

/// Frames already read, by (stack id, stack hash) of a [`GoStackKey`].
type StackCache = HashMap<(i32, u64), Vec<u64>>;

/// The Go probes of one recording.
pub struct GoSession {
    opts: GoOptions,
    patterns: Vec<String>,
    counters: PerCpuArray<MapData, u64>,
    procs_map: AyaHashMap<MapData, u32, GoProcConfig>,
    stacks: StackTraceMap<MapData>,
    fp_stacks: AyaHashMap<MapData, u64, GoFpStack>,
    calls: PerCpuHashMap<MapData, GoStackKey, u64>,
    allocs: PerCpuHashMap<MapData, GoStackKey, u64>,
    sites: PerCpuHashMap<MapData, GoStackKey, SiteCounts>,
    goroutines: AyaHashMap<MapData, GoidKey, GoStackKey>,
    symbols: Vec<String>,
    symbol_index: HashMap<String, u64>,
    procs: HashMap<u32, Proc>,
    series: HashMap<GoStackKey, Vec<(f64, f64)>>,
    series_overflow: u64,
    proc_overflow: u64,
    started: Instant,
    last_series: Option<Instant>,
    notes: Vec<String>,
    probes_attached: u64,
    single_stepped: Vec<String>,
    prog_fds: Vec<(&'static str, i32)>,
    skipped: HashSet<(u32, String)>,
    call_sites: PerCpuHashMap<MapData, GoStackKey, u64>,
    count_stacks: CountStacks,
    /// Benchmark-stage cookie bits of the counted-call probes.
    bench_bits: u64,
}

fn take<T>(sampler: &mut Sampler, name: &str) -> Result<T, RecordError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = sampler
        .ebpf_mut()
        .take_map(name)
        .ok_or_else(|| RecordError::Ebpf(format!("map {name} missing from the eBPF object")))?;
    T::try_from(m).map_err(|e| RecordError::Ebpf(format!("map {name}: {e}")))
}

fn sum_sites(v: &aya::maps::PerCpuValues<SiteCounts>) -> SiteCounts {
    let mut s = SiteCounts::default();
    for c in v.iter() {
        s.created += c.created;
        s.exited += c.exited;
    }
    s
}

/// The function `PROFILER_GO_ALLOCS_PROBE=refill` probes.
const REFILL: &str = "runtime.(*mcache).refill";

/// Object size and objects per span of a Go `spanClass` (size class << 1 |
/// noscan); Go 1.19 to 1.23 share these tables (`runtime/sizeclasses.go`).
fn span_class(spc: u64) -> (f64, f64) {
    const SIZE: [u16; 68] = [
        0, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288,
        320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536,
        1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192,
        9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576,
        27264, 28672, 32768,
    ];
    const PAGES: [u8; 68] = [
        0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 2, 1, 2, 1, 2, 1, 3, 2, 3, 1, 3, 2, 3, 4, 5, 6, 1, 7, 6, 5, 4, 3, 5, 7, 2,
        9, 7, 5, 8, 3, 10, 7, 4,
    ];
    let class = ((spc & 0xff) >> 1) as usize;
    match (SIZE.get(class), PAGES.get(class)) {
        (Some(&s), Some(&p)) if s > 0 => {
            let s = f64::from(s);
            (s, (f64::from(p) * 8192.0 / s).floor())
        }
        _ => (0.0, 0.0),
    }
}

/// Counted-call totals by stack. `stacks` are the stack-map counts (every
/// call in full mode; sampled calls in caller mode); `exact` the caller-mode
/// counts per (tgid, caller, tag) (key `stack_id` 0). Each exact count is
/// spread over the stacks sampled for its caller in proportion to their
/// samples (largest remainder, so the per-caller sums stay exact); stacks
/// of callers without an exact count are kept as they are; an exact count
/// without a sampled stack is kept with the caller frame only.
fn spread_over_stacks(
    stacks: Vec<(GoStackKey, u64)>,
    exact: Vec<(GoStackKey, u64)>,
) -> Vec<(GoStackKey, u64)> {
    let site = |k: &GoStackKey| (k.tgid, k.caller, k.tag);
    let exact: HashMap<(u32, u64, u64), u64> = exact.iter().map(|(k, n)| (site(k), *n)).collect();
    let mut groups: HashMap<(u32, u64, u64), Vec<(GoStackKey, u64)>> = HashMap::new();
    let mut out = Vec::new();
    for (k, n) in stacks {
        if exact.contains_key(&site(&k)) {
            groups.entry(site(&k)).or_default().push((k, n));
        } else {
            out.push((k, n));
        }
    }
    for (s, total) in exact {
        let Some(mut g) = groups.remove(&s) else {
            let key = GoStackKey {
                tgid: s.0,
                stack_id: -1,
                stack_hash: 0,
                caller: s.1,
                tag: s.2,
            };
            out.push((key, total));
            continue;
        };
        g.sort_by_key(|(k, _)| (k.stack_id, k.stack_hash));
        let sampled: u64 = g.iter().map(|(_, n)| n).sum::<u64>().max(1);
        let mut shares: Vec<(u64, u128, usize)> = g
            .iter()
            .enumerate()
            .map(|(i, (_, n))| {
                let x = u128::from(total) * u128::from(*n);
                ((x / u128::from(sampled)) as u64, x % u128::from(sampled), i)
            })
            .collect();
        let mut left = total - shares.iter().map(|s| s.0).sum::<u64>();
        shares.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        for sh in shares.iter_mut() {
            if left == 0 {
                break;
            }
            sh.0 += 1;
            left -= 1;
        }
        for (n, _, i) in shares {
            if n > 0 {
                out.push((g[i].0, n));
            }
        }
    }
    out
}

/// Load bias of `exe` in `pid` (0 for non-PIE binaries).
fn load_bias(pid: u32, bin: &GoBinary) -> u64 {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return 0;
    };
    let exe = exe.to_string_lossy().into_owned();
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return 0;
    };
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5..].join(" ") != exe {
            continue;
        }
        let Some((start, _)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(off)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(f[2], 16),
        ) else {
            continue;
        };
        if let Some(vaddr) = bin.vaddr_of_file_offset(off) {
            return start.wrapping_sub(vaddr);
        }
    }
    0
}

fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> bool {
    match std::fs::File::open(format!("/proc/{pid}/mem")) {
        Ok(f) => f.read_exact_at(buf, addr).is_ok(),
        Err(_) => false,
    }
}

fn read_u64(pid: u32, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    read_mem(pid, addr, &mut b).then(|| u64::from_le_bytes(b))
}

impl GoSession {
    /// Load the Go uprobe programs requested by `opts` into the sampler's
    /// eBPF object and take the Go maps. Fails on an unknown preset.
    pub fn start(sampler: &mut Sampler, opts: &GoOptions) -> Result<Self, RecordError> {
        let mut patterns = opts.count.clone();
        if let Some(p) = &opts.preset {
            let set = preset(p).ok_or_else(|| {
                RecordError::Ebpf(format!(
                    "--count-preset {p}: unknown preset (known: {})",
                    PRESETS.join(", ")
                ))
            })?;
            patterns.extend(set.iter().map(|s| s.to_string()));
        }
        let mut progs = Vec::new();
        let mut prog_fds = Vec::new();
        if opts.profiles.calls && !patterns.is_empty() {
            progs.push("go_call");
        }
        if opts.profiles.goroutines {
            progs.extend(["go_newproc", "go_newproc_done", "go_exit"]);
        }
        if opts.profiles.allocs {
            progs.push("go_alloc");
        }
        for name in progs {
            let p: &mut UProbe = sampler
                .ebpf_mut()
                .program_mut(name)
                .ok_or_else(|| RecordError::Ebpf(format!("program {name} missing")))?
                .try_into()
                .map_err(|e| RecordError::Ebpf(format!("{name}: {e}")))?;
            p.load().map_err(|e| RecordError::from_program(name, e))?;
            use std::os::fd::{AsFd as _, AsRawFd as _};
            if let Ok(fd) = p.fd() {
                prog_fds.push((name, fd.as_fd().as_raw_fd()));
            }
        }
        let mut notes = Vec::new();
        // `--count-stacks`; the environment overrides it (benchmarks).
        let count_stacks = match std::env::var("PROFILER_GO_COUNT_STACKS") {
            Ok(v) => CountStacks::parse(&v).ok_or_else(|| {
                RecordError::Ebpf(format!(
                    "PROFILER_GO_COUNT_STACKS={v}: expected full or caller"
                ))
            })?,
            Err(_) => opts.count_stacks,
        };
        // Measurement knob (cargo xtask bench go-probes): stop the
        // counted-call program early to see where its time goes, or take
        // stacks with the kernel's bpf_get_stackid instead of the
        // program's own frame-pointer walk.
        let bench_bits = match std::env::var("PROFILER_GO_CALL_STAGE").as_deref() {
            Ok("trap") => COOKIE_BENCH_TRAP_ONLY,
            Ok("unwind") => COOKIE_BENCH_NO_COUNT,
            Ok("stackid-unwind") => COOKIE_BENCH_NO_COUNT | COOKIE_BENCH_STACKID,
            Ok("stackid") => COOKIE_BENCH_STACKID,
            _ => 0,
        };
        if bench_bits & !COOKIE_BENCH_STACKID != 0 {
            notes.push(
                "calls: PROFILER_GO_CALL_STAGE set: benchmark stage, calls NOT counted".into(),
            );
        } else if bench_bits != 0 {
            notes.push(
                "calls: PROFILER_GO_CALL_STAGE=stackid: stacks from bpf_get_stackid (benchmark stage)"
                    .into(),
            );
        }
        if opts.profiles.calls && patterns.is_empty() {
            notes.push(
                "calls: no --count symbol or --count-preset given: nothing counted".to_string(),
            );
        }
        Ok(Self {
            opts: opts.clone(),
            patterns,
            counters: take(sampler, "GO_COUNTERS")?,
            procs_map: take(sampler, "GO_PROCS")?,
            stacks: take(sampler, "GO_STACKS")?,
            fp_stacks: take(sampler, "GO_FP_STACKS")?,
            calls: take(sampler, "GO_CALLS")?,
            allocs: take(sampler, "GO_ALLOCS")?,
            sites: take(sampler, "GO_SITES")?,
            goroutines: take(sampler, "GO_GOROUTINES")?,
            symbols: Vec::new(),
            symbol_index: HashMap::new(),
            procs: HashMap::new(),
            series: HashMap::new(),
            series_overflow: 0,
            proc_overflow: 0,
            started: Instant::now(),
            last_series: None,
            notes,
            probes_attached: 0,
            single_stepped: Vec::new(),
            prog_fds,
            skipped: HashSet::new(),
            call_sites: take(sampler, "GO_CALL_SITES")?,
            count_stacks,
            bench_bits,
        })
    }

    /// In-kernel cost of each loaded Go program: (name, `run_time_ns`,
    /// `run_cnt`) from its fdinfo; zeros unless `kernel.bpf_stats_enabled=1`.
    /// This is the program's own run time, not the uprobe trap around it.
    pub fn prog_stats(&self) -> Vec<(&'static str, u64, u64)> {
        self.prog_fds
            .iter()
            .map(|(name, fd)| {
                let text =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
                let field = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                (*name, field("run_time_ns"), field("run_cnt"))
            })
            .collect()
    }

    /// Choose how counted calls get their stacks (before
    /// [`Self::add_process`]; probes already attached keep their mode).
    pub fn set_count_stacks(&mut self, mode: CountStacks) {
        self.count_stacks = mode;
    }

    /// Notes gathered so far (binaries skipped, symbols not found, ...).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    fn attach(
        &mut self,
        sampler: &mut Sampler,
        prog: &str,
        exe: &std::path::Path,
        file_off: u64,
        pid: u32,
        cookie: u64,
    ) -> Result<(), RecordError> {
        let p: &mut UProbe = sampler
            .ebpf_mut()
            .program_mut(prog)
            .ok_or_else(|| RecordError::Ebpf(format!("program {prog} missing")))?
            .try_into()
            .map_err(|e| RecordError::Ebpf(format!("{prog}: {e}")))?;
        let pid = NonZeroU32::new(pid).ok_or_else(|| RecordError::Ebpf("pid 0".into()))?;
        p.attach(
            UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(file_off),
                cookie: Some(cookie),
            },
            exe,
            UProbeScope::OneProcess(pid),
        )
        .map_err(|e| {
            RecordError::Ebpf(format!(
                "attaching {prog} to {} at {file_off:#x}: {e}",
                exe.display()
            ))
        })?;
        self.probes_attached += 1;
        Ok(())
    }

    fn probe(
        &mut self,
        sampler: &mut Sampler,
        bin: &GoBinary,
        exe: &std::path::Path,
        pid: u32,
        prog: &str,
        func: &str,
        cookie: u64,
    ) -> Result<bool, RecordError> {
        let Some(f) = bin.func(func).cloned() else {
            return Ok(false);
        };
        let Some(code) = bin.code(&f) else {
            return Ok(false);
        };
        let mut pp = prologue::entry_probe(code, f.entry);
        if std::env::var_os("PROFILER_GO_PROBE_AT_ENTRY").is_some() {
            // Measurement knob (cargo xtask bench go-probes): the naive
            // placement on the first instruction, single-stepped.
            pp = prologue::ProbePoint {
                vaddr: f.entry,
                check_flags: false,
                emulated: false,
            };
        }
        let Some(off) = bin.file_offset(pp.vaddr) else {
            return Ok(false);
        };
        if !pp.emulated {
            self.single_stepped.push(func.to_string());
        }
        let cookie = if pp.check_flags {
            cookie | COOKIE_CHECK_FLAGS
        } else {
            cookie
        };
        self.attach(sampler, prog, exe, off, pid, cookie)?;
        Ok(true)
    }

    /// Analyse `tgid`'s binary and attach the requested probes, scoped to
    /// that process. A process that is not Go (or cannot be probed) is
    /// skipped with a note, not an error; errors are kernel failures.
    pub fn add_process(&mut self, sampler: &mut Sampler, tgid: u32) -> Result<(), RecordError> {
        let t = Instant::now();
        let before = self.probes_attached;
        let r = self.add_process_inner(sampler, tgid);
        if self.probes_attached > before {
            // Events before this point are not seen: say how long it took.
            self.notes.push(format!(
                "pid {tgid}: {} Go probes attached in {} ms (events before that are not counted)",
                self.probes_attached - before,
                t.elapsed().as_millis()
            ));
        }
        match r {
            // A process that exited while we attached is not an error.
            Err(e) if !std::path::Path::new(&format!("/proc/{tgid}")).exists() => {
                self.notes.push(format!(
                    "pid {tgid} exited while Go probes were attached: {e}"
                ));
                Ok(())
            }
            r => r,
        }
    }

    fn add_process_inner(&mut self, sampler: &mut Sampler, tgid: u32) -> Result<(), RecordError> {
        if self.procs.contains_key(&tgid) || !self.opts.profiles.any() {
            return Ok(());
        }
        if self.procs.len() >= GO_PROC_ENTRIES as usize {
            self.proc_overflow += 1;
            return Ok(());
        }
        let exe = PathBuf::from(format!("/proc/{tgid}/exe"));
        let shown = std::fs::read_link(&exe)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| exe.display().to_string());
        // A process seen before with the same executable was not Go (an
        // exec changes the executable, so it is looked at again).
        if self.skipped.contains(&(tgid, shown.clone())) {
            return Ok(());
        }
        if self.skipped.len() >= MAX_SKIPPED {
            self.skipped.clear();
        }
        self.skipped.insert((tgid, shown.clone()));
        // Cheap check before reading the whole file: Go binaries have a
        // `.go.buildinfo` or `.gopclntab`; a quick sniff of the ELF magic.
        let mut magic = [0u8; 4];
        if std::fs::File::open(&exe)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_err()
            || &magic != b"\x7fELF"
        {
            return Ok(());
        }
        let bin = match GoBinary::open(&exe) {
            Ok(b) => b,
            Err(e) => {
                let text = e.to_string().replace(&exe.display().to_string(), &shown);
                if !text.contains("not a Go binary") {
                    self.notes.push(format!("pid {tgid}: {text}"));
                }
                return Ok(());
            }
        };
        let version = bin
            .version
            .clone()
            .unwrap_or_else(|| "unknown Go version".into());
        self.procs_map
            .insert(
                tgid,
                GoProcConfig {
                    goid_offset: bin.offsets.goid as u32,
                    _pad: 0,
                },
                0,
            )
            .map_err(|e| RecordError::Ebpf(format!("GO_PROCS: {e}")))?;
        let bias = load_bias(tgid, &bin);
        let mut proc = Proc {
            exe: exe.clone(),
            version: version.clone(),
            offsets: bin.offsets,
            mem_rate_addr: bin
                .data_symbol("runtime.MemProfileRate")
                .map(|a| a.wrapping_add(bias)),
            disable_addr: bin
                .data_symbol("runtime.disableMemoryProfiling")
                .map(|a| a.wrapping_add(bias)),
            allgs_addr: bin
                .data_symbol("runtime.allgs")
                .map(|a| a.wrapping_add(bias)),
            mem_rate: None,
            alloc_probe: None,
            rate_written: false,
        };

        if self.opts.profiles.calls {
            let patterns = self.patterns.clone();
            for pat in &patterns {
                let found: Vec<String> = bin.matching(pat).iter().map(|f| f.name.clone()).collect();
                if found.is_empty() {
                    self.notes.push(format!(
                        "calls: pid {tgid} ({shown}): no function matches {pat:?}{}",
                        if bin.has_symtab {
                            ""
                        } else {
                            " (searched .gopclntab: binary is stripped)"
                        }
                    ));
                }
                for name in found.into_iter().take(256) {
                    let next = self.symbols.len() as u64;
                    let idx = *self.symbol_index.entry(name.clone()).or_insert(next);
                    if idx == next {
                        self.symbols.push(name.clone());
                    }
                    let mode = match self.count_stacks {
                        CountStacks::Full => 0,
                        CountStacks::Caller => COOKIE_CALLER_MODE,
                    };
                    let cookie = idx | mode | self.bench_bits;
                    self.probe(sampler, &bin, &exe, tgid, "go_call", &name, cookie)?;
                }
            }
        }
        if self.opts.profiles.goroutines {
            let newproc = self.probe(
                sampler,
                &bin,
                &exe,
                tgid,
                "go_newproc",
                "runtime.newproc",
                0,
            )?;
            let done = match (
                bin.func("runtime.newproc.func1"),
                bin.func("runtime.newproc1"),
            ) {
                (Some(f1), Some(np1)) => bin
                    .code(f1)
                    .and_then(|c| prologue::after_call_probe(c, f1.entry, np1.entry))
                    .and_then(|(pp, r)| Some((bin.file_offset(pp.vaddr)?, r, pp.emulated))),
                _ => None,
            };
            let exit = bin.func("runtime.goexit1").is_some();
            match (newproc, done) {
                (true, Some((off, r, emulated))) if exit => {
                    if !emulated {
                        self.single_stepped.push("runtime.newproc.func1 (after newproc1)".into());
                    }
                    self.attach(sampler, "go_newproc_done", &exe, off, tgid, r)?;
                    self.probe(sampler, &bin, &exe, tgid, "go_exit", "runtime.goexit1", 0)?;
                }
                _ => self.notes.push(format!(
                    "goroutines: pid {tgid} ({shown}, {version}): runtime.newproc/newproc.func1/goexit1 not found or not decodable: goroutines not tracked"
                )),
            }
        }
        if self.opts.profiles.allocs {
            let refill = std::env::var("PROFILER_GO_ALLOCS_PROBE").as_deref() == Ok("refill");
            let (func, r) = if self.opts.alloc_exact {
                ("runtime.mallocgc", reg::AX)
            } else if refill {
                // Measurement knob (cargo xtask bench go-probes, README):
                // one event per span handed to an mcache; BX = spanClass.
                (REFILL, reg::BX)
            } else {
                ("runtime.profilealloc", reg::CX)
            };
            if self.probe(sampler, &bin, &exe, tgid, "go_alloc", func, r)? {
                proc.alloc_probe = Some(func);
            } else {
                self.notes.push(format!(
                    "allocs: pid {tgid} ({shown}, {version}): {func} not found: allocations not recorded"
                ));
            }
            proc.mem_rate = self.read_mem_rate(tgid, &proc);
        }
        self.procs.insert(tgid, proc);
        self.enforce_rate(tgid);
        Ok(())
    }

    /// With `alloc_set_rate`, (re)write the rate while the target's is 0
    /// (schedinit zeroes it after we may have written it at exec).
    fn enforce_rate(&mut self, pid: u32) {
        let Some(rate) = self.opts.alloc_set_rate.filter(|r| *r > 0) else {
            return;
        };
        if !self.opts.profiles.allocs || self.opts.alloc_exact {
            return;
        }
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let Some(addr) = p.mem_rate_addr else {
            if !p.rate_written {
                self.notes.push(format!(
                    "allocs: pid {pid}: --allocs-set-rate impossible: runtime.MemProfileRate not found (no .symtab)"
                ));
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.rate_written = true;
                }
            }
            return;
        };
        if p.alloc_probe.is_none() || self.read_mem_rate(pid, p) != Some(0) {
            return;
        }
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .and_then(|f| f.write_all_at(&rate.to_le_bytes(), addr))
            .is_ok();
        let first = !p.rate_written;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.rate_written |= ok;
            p.mem_rate = Some(rate as i64).filter(|_| ok).or(p.mem_rate);
        }
        if first {
            self.notes.push(if ok {
                format!("allocs: pid {pid}: runtime.MemProfileRate was 0; set to {rate} (--allocs-set-rate), written back to 0 at the end")
            } else {
                format!("allocs: pid {pid}: --allocs-set-rate: writing /proc/{pid}/mem failed")
            });
        }
    }

    /// The effective `runtime.MemProfileRate` of a running process.
    fn read_mem_rate(&self, pid: u32, p: &Proc) -> Option<i64> {
        let addr = p.mem_rate_addr?;
        let rate = read_u64(pid, addr)? as i64;
        if p.rate_written {
            return Some(rate);
        }
        if let Some(d) = p.disable_addr {
            let mut b = [0u8; 1];
            // Before schedinit the linker's flag has not zeroed the rate yet.
            if read_mem(pid, d, &mut b) && b[0] != 0 && rate == 512 * 1024 {
                return Some(0);
            }
        }
        Some(rate)
    }

    fn read_sites(&self) -> Vec<(GoStackKey, SiteCounts)> {
        let keys: Vec<GoStackKey> = self.sites.keys().filter_map(Result::ok).collect();
        keys.into_iter()
            .filter_map(|k| self.sites.get(&k, 0).ok().map(|v| (k, sum_sites(&v))))
            .collect()
    }

    /// Periodic work: every 500 ms, sample the live goroutine count of
    /// each creation site (for the leak slope). Bounded by the site map.
    pub fn tick(&mut self, _sampler: &mut Sampler) {
        if self.procs.is_empty() {
            return;
        }
        let now = Instant::now();
        if self
            .last_series
            .is_some_and(|t| now.duration_since(t) < SERIES_INTERVAL)
        {
            return;
        }
        self.last_series = Some(now);
        if self.opts.alloc_set_rate.is_some() {
            let pids: Vec<u32> = self.procs.keys().copied().collect();
            for pid in pids {
                self.enforce_rate(pid);
            }
        }
        if !self.opts.profiles.goroutines {
            return;
        }
        let t = now.duration_since(self.started).as_secs_f64();
        for (k, c) in self.read_sites() {
            let live = c.created.saturating_sub(c.exited) as f64;
            let len = self.series.len();
            let entry = match self.series.get_mut(&k) {
                Some(e) => e,
                None if len < MAX_SERIES_SITES => self.series.entry(k).or_default(),
                None => {
                    self.series_overflow += 1;
                    continue;
                }
            };
            if entry.len() >= MAX_SERIES_POINTS {
                let kept: Vec<(f64, f64)> = entry.iter().copied().step_by(2).collect();
                *entry = kept;
            }
            entry.push((t, live));
        }
    }

    fn counters(&self) -> Vec<(GoCounter, u64)> {
        GoCounter::ALL
            .iter()
            .map(|c| {
                let v = self
                    .counters
                    .get(&(*c as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*c, v)
            })
            .collect()
    }

    /// User stack of a key: the stack map's frames with the caller at
    /// `[SP]` inserted after the leaf (frame-pointer unwinding skips it at
    /// an entry probe).
    fn frames(&self, key: &GoStackKey, cache: &mut StackCache) -> Vec<u64> {
        let mut v = if key.stack_hash != 0 {
            cache
                .entry((-1, key.stack_hash))
                .or_insert_with(|| {
                    self.fp_stacks
                        .get(&key.stack_hash, 0)
                        .map(|s| {
                            let n = (s.len as usize).min(s.frames.len());
                            s.frames[..n].to_vec()
                        })
                        .unwrap_or_default()
                })
                .clone()
        } else if key.stack_id >= 0 {
            cache
                .entry((key.stack_id, 0))
                .or_insert_with(|| {
                    self.stacks
                        .get(&(key.stack_id as u32), 0)
                        .map(|s| s.frames().iter().map(|f| f.ip).collect())
                        .unwrap_or_default()
                })
                .clone()
        } else {
            Vec::new()
        };
        if key.caller != 0 {
            let at = v.len().min(1);
            v.insert(at, key.caller);
        }
        v
    }

    /// Walk `runtime.allgs` of a live process: live goroutines as
    /// (goid, gopc). `None` when the walk is impossible.
    fn walk_allgs(&self, pid: u32, p: &Proc) -> Option<Vec<(u64, u64)>> {
        let addr = p.allgs_addr?;
        let mut hdr = [0u8; 16];
        if !read_mem(pid, addr, &mut hdr) {
            return None;
        }
        let base = u64::from_le_bytes(hdr[..8].try_into().ok()?);
        let len = u64::from_le_bytes(hdr[8..].try_into().ok()?).min(MAX_ALLGS);
        let mut ptrs = vec![0u8; (len * 8) as usize];
        if len > 0 && !read_mem(pid, base, &mut ptrs) {
            return None;
        }
        let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
        let o = p.offsets;
        let span = o.gopc.max(o.goid).max(o.atomicstatus) + 8;
        let mut g = vec![0u8; span as usize];
        let mut out = Vec::new();
        for c in ptrs.chunks_exact(8) {
            let gp = u64::from_le_bytes(c.try_into().ok()?);
            if gp == 0 || f.read_exact_at(&mut g, gp).is_err() {
                continue;
            }
            let at = |off: u64| {
                u64::from_le_bytes(g[off as usize..off as usize + 8].try_into().unwrap())
            };
            let status = (at(o.atomicstatus) as u32) & !0x1000;
            // _Gidle = 0, _Gdead = 6.
            if status == 0 || status == 6 {
                continue;
            }
            out.push((at(o.goid), at(o.gopc)));
        }
        Some(out)
    }

    /// Read everything (probes still attached), build the requested
    /// profiles and summary lines. Each returned profile is non-empty or
    /// says in its comments why it is empty.
    pub fn finish(
        mut self,
        _sampler: &mut Sampler,
        symbolizer: &mut Symbolizer,
        meta: &ProfileMeta,
    ) -> Vec<(String, Profile, Vec<String>)> {
        self.last_series = None;
        self.tick(_sampler);
        let counters = self.counters();
        let elapsed = self.started.elapsed().as_secs_f64();
        for &pid in self.procs.keys() {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = symbolizer.snapshot_process(pid);
            }
        }
        let counter_line = format!(
            "go probe counters: {} probes_attached={} processes_skipped_table_full={} series_sites_dropped={}",
            counters
                .iter()
                .map(|(c, v)| format!("{}={v}", c.name()))
                .collect::<Vec<_>>()
                .join(" "),
            self.probes_attached,
            self.proc_overflow,
            self.series_overflow,
        );
        let cost: Vec<String> = self
            .prog_stats()
            .into_iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(name, ns, n)| format!("{name} runs={n} ns_per_run={}", ns / n))
            .collect();
        let losses: u64 = counters
            .iter()
            .filter(|(c, _)| c.is_loss())
            .map(|(_, v)| v)
            .sum();
        let mut base_comments = meta.comments.clone();
        base_comments.push(counter_line.clone());
        if !cost.is_empty() {
            base_comments.push(format!(
                "go probe program cost (bpf_stats): {}",
                cost.join(" ")
            ));
        }
        if !self.single_stepped.is_empty() {
            base_comments.push(format!(
                "probes single-stepped (no emulated instruction found; ~10 us per hit): {}",
                self.single_stepped.join(", ")
            ));
        }
        for n in &self.notes {
            base_comments.push(n.clone());
        }
        let procs_line = self
            .procs
            .iter()
            .map(|(pid, p)| {
                format!(
                    "pid {pid} {} {} (g offsets: goid={} gopc={})",
                    p.exe.display(),
                    p.version,
                    p.offsets.goid,
                    p.offsets.gopc
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        base_comments.push(format!("go processes: {procs_line}"));
        let mut out = Vec::new();
        let mut cache = HashMap::new();
        let mut common_summary = Vec::new();
        if losses > 0 {
            common_summary.push(format!("go probes lost data: {counter_line}"));
        }
        if self.procs.is_empty() {
            let line = "no Go program (Go 1.18+ with .gopclntab) among the targets: the Go profiles are empty".to_string();
            base_comments.push(line.clone());
            common_summary.push(line);
        }
        if !cost.is_empty() {
            common_summary.push(format!(
                "go probe program cost (bpf_stats): {}",
                cost.join(" ")
            ));
        }

        if self.opts.profiles.calls {
            let mut stacks: Vec<(GoStackKey, u64)> = Vec::new();
            for k in self.calls.keys().filter_map(Result::ok) {
                if let Ok(v) = self.calls.get(&k, 0) {
                    stacks.push((k, v.iter().sum()));
                }
            }
            let mut exact: Vec<(GoStackKey, u64)> = Vec::new();
            for k in self.call_sites.keys().filter_map(Result::ok) {
                if let Ok(v) = self.call_sites.get(&k, 0) {
                    exact.push((k, v.iter().sum()));
                }
            }
            let sampled_sites = exact.len();
            let counted = spread_over_stacks(stacks, exact);
            let mut raws = Vec::new();
            let mut per_symbol: HashMap<u64, u64> = HashMap::new();
            for (k, n) in counted {
                *per_symbol.entry(k.tag).or_default() += n;
                raws.push((self.frames(&k, &mut cache), k.tgid, vec![n as i64], vec![]));
            }
            let mut summary = common_summary.clone();
            let mut comments = base_comments.clone();
            for (i, s) in self.symbols.iter().enumerate() {
                let n = per_symbol.get(&(i as u64)).copied().unwrap_or(0);
                let line = format!("calls: {s}: {n} ({:.1}/s)", n as f64 / elapsed.max(1e-9));
                comments.push(line.clone());
                summary.push(line);
            }
            if self.symbols.is_empty() {
                let line = format!(
                    "calls: no counted function found (patterns: {})",
                    if self.patterns.is_empty() {
                        "none".to_string()
                    } else {
                        self.patterns.join(", ")
                    }
                );
                comments.push(line.clone());
                summary.push(line);
            }
            if sampled_sites > 0 {
                let line = format!(
                    "calls: --count-stacks caller: counts exact per (function, immediate caller) at {sampled_sites} call sites; stacks above the caller sampled (first {CALLER_MODE_FIRST_STACKS} calls per caller and CPU, then 1 in {CALLER_MODE_STACK_EVERY}) and each caller's count spread over them"
                );
                comments.push(line.clone());
                summary.push(line);
            }
            summary.extend(
                self.notes
                    .iter()
                    .filter(|n| n.starts_with("calls:"))
                    .cloned(),
            );
            let shape =
                ProfileShape::new(&[("calls", "count")], ("calls", "count"), 1, Some("calls"));
            let p = self.render(symbolizer, raws, &shape, meta, comments);
            out.push(("calls".to_string(), p, summary));
        }

        if self.opts.profiles.goroutines {
            let sites = self.read_sites();
            let mut raws = Vec::new();
            let mut comments = base_comments.clone();
            let mut summary = common_summary.clone();
            for (k, c) in &sites {
                let live = c.created.saturating_sub(c.exited) as i64;
                let mut frames = self.frames(k, &mut cache);
                // Drop the runtime.newproc leaf: the creating function leads.
                if frames.len() > 1 {
                    frames.remove(0);
                }
                raws.push((
                    frames,
                    k.tgid,
                    vec![live, c.created as i64, c.exited as i64],
                    vec![],
                ));
            }
            // Goroutines that predate the probes: from runtime.allgs.
            let mut tracked: HashSet<(u32, u64)> = HashSet::new();
            let mut before_total = 0i64;
            let mut walked_any = false;
            for (&pid, p) in &self.procs {
                match self.walk_allgs(pid, p) {
                    Some(live) => {
                        walked_any = true;
                        if tracked.is_empty() {
                            tracked = self.tracked_goids();
                        }
                        let mut by_pc: HashMap<u64, i64> = HashMap::new();
                        for (goid, gopc) in live {
                            if !tracked.contains(&(pid, goid)) {
                                *by_pc.entry(gopc).or_default() += 1;
                            }
                        }
                        for (pc, n) in by_pc {
                            before_total += n;
                            // gopc is a return address: keep it a caller frame.
                            raws.push((vec![pc.saturating_sub(1)], pid, vec![n, 0, 0], vec![("origin".to_string(), "before_attach".to_string())]));
                        }
                    }
                    None => comments.push(format!(
                        "goroutines: pid {pid}: goroutines created before the probes were attached are NOT counted ({})",
                        if p.allgs_addr.is_none() { "runtime.allgs unknown: binary has no .symtab" } else { "process gone or /proc/PID/mem unreadable at the end" }
                    )),
                }
            }
            if walked_any {
                comments.push(format!(
                    "goroutines: {before_total} live goroutines created before attaching, counted from runtime.allgs by creation PC (label origin=before_attach)"
                ));
            }
            // Leak signal per site.
            let mut leak_lines = Vec::new();
            for (k, c) in &sites {
                let live = c.created.saturating_sub(c.exited) as i64;
                let (slope, r2) = self
                    .series
                    .get(k)
                    .and_then(|pts| profile::slope(pts))
                    .unwrap_or((0.0, 0.0));
                leak_lines.push((slope, r2, live, *c, *k));
            }
            leak_lines.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
            let names = self.site_names(
                symbolizer,
                leak_lines.iter().map(|l| l.4).collect(),
                &mut cache,
            );
            for ((slope, r2, live, c, _), name) in leak_lines.iter().zip(names).take(20) {
                let leaking = *slope > 0.0 && *r2 >= 0.8 && slope * elapsed >= 5.0;
                let line = format!(
                    "goroutines: site {name}: live={live} created={} exited={} slope={slope:+.2}/s r2={r2:.2}{}",
                    c.created,
                    c.exited,
                    if leaking { " LEAK SIGNAL" } else { "" }
                );
                comments.push(line.clone());
                summary.push(line);
            }
            let shape = ProfileShape::new(
                &[
                    ("goroutine", "count"),
                    ("created", "count"),
                    ("exited", "count"),
                ],
                ("goroutine", "count"),
                1,
                Some("goroutine"),
            );
            let p = self.render(symbolizer, raws, &shape, meta, comments);
            out.push(("goroutines".to_string(), p, summary));
        }

        if self.opts.profiles.allocs {
            let mut comments = base_comments.clone();
            let mut summary = common_summary.clone();
            // Rates as now (the program may have set it in main).
            let pids: Vec<u32> = self.procs.keys().copied().collect();
            for pid in pids {
                let fresh = self.read_mem_rate(pid, &self.procs[&pid]);
                let p = self.procs.get_mut(&pid).unwrap();
                if fresh.is_some() {
                    p.mem_rate = fresh;
                }
            }
            // Undo --allocs-set-rate.
            for (pid, p) in &self.procs {
                if let (true, Some(addr)) = (p.rate_written, p.mem_rate_addr) {
                    let _ = std::fs::OpenOptions::new()
                        .write(true)
                        .open(format!("/proc/{pid}/mem"))
                        .and_then(|f| f.write_all_at(&0u64.to_le_bytes(), addr));
                }
            }
            let mut rates: HashMap<u32, Option<i64>> = HashMap::new();
            for (pid, p) in &self.procs {
                rates.insert(*pid, p.mem_rate);
                let line = match (p.alloc_probe, p.mem_rate) {
                    (Some(REFILL), _) => format!(
                        "allocs: pid {pid}: spans handed to mcaches probed at {REFILL} (PROFILER_GO_ALLOCS_PROBE=refill, a measurement mode): each event weighted by the span's objects; small objects only (no allocation > 32 KiB)"
                    ),
                    (Some("runtime.mallocgc"), _) => format!(
                        "allocs: pid {pid}: every allocation probed at runtime.mallocgc (exact counts, unsampled; costly)"
                    ),
                    (Some(_), Some(0)) => format!(
                        "allocs: pid {pid}: runtime.MemProfileRate is 0 (the linker disables Go's allocation sampling unless runtime.MemProfile is reachable, e.g. by importing net/http/pprof): Go samples no allocations, so this profile has none. Use --allocs-set-rate 524288 (writes the target's MemProfileRate; cheap) or --allocs-exact (probes every allocation; costly), or make runtime.MemProfile reachable"
                    ),
                    (Some(_), Some(r)) => format!(
                        "allocs: pid {pid}: runtime.MemProfileRate={r}: Go's own samples (runtime.profilealloc), weighted 1/(1-exp(-size/rate)) like go tool pprof"
                    ),
                    (Some(_), None) => format!(
                        "allocs: pid {pid}: runtime.MemProfileRate unknown (stripped binary or process gone): samples assumed at the default rate 524288"
                    ),
                    (None, _) => format!("allocs: pid {pid}: no allocation probe attached"),
                };
                comments.push(line.clone());
                summary.push(line);
            }
            let keys: Vec<GoStackKey> = self.allocs.keys().filter_map(Result::ok).collect();
            let mut raws = Vec::new();
            let mut total_events = 0u64;
            let mut total_bytes = 0f64;
            for k in keys {
                let Ok(v) = self.allocs.get(&k, 0) else {
                    continue;
                };
                let n: u64 = v.iter().sum();
                total_events += n;
                let size = k.tag as f64;
                let probe = self.procs.get(&k.tgid).and_then(|p| p.alloc_probe);
                let exact = probe == Some("runtime.mallocgc");
                let (objects, bytes) = if probe == Some(REFILL) {
                    // A span of the class: weight by its objects.
                    let (size, per_span) = span_class(k.tag);
                    (n as f64 * per_span, n as f64 * per_span * size)
                } else if exact {
                    (n as f64, n as f64 * size)
                } else {
                    let rate = rates
                        .get(&k.tgid)
                        .copied()
                        .flatten()
                        .filter(|r| *r > 0)
                        .unwrap_or(512 * 1024) as f64;
                    let scale = if size > 0.0 {
                        1.0 / (1.0 - (-size / rate).exp())
                    } else {
                        1.0
                    };
                    (n as f64 * scale, n as f64 * scale * size)
                };
                total_bytes += bytes;
                raws.push((
                    self.frames(&k, &mut cache),
                    k.tgid,
                    vec![objects.round() as i64, bytes.round() as i64],
                    vec![],
                ));
            }
            let line = format!(
                "allocs: {total_events} allocation events, estimated {:.1} MiB allocated ({:.2} MiB/s)",
                total_bytes / 1048576.0,
                total_bytes / 1048576.0 / elapsed.max(1e-9)
            );
            comments.push(line.clone());
            summary.push(line);
            if total_events == 0 {
                let why = "allocs: the profile is EMPTY: no allocation was sampled (see the MemProfileRate line above)".to_string();
                comments.push(why.clone());
                summary.push(why);
            }
            summary.extend(
                self.notes
                    .iter()
                    .filter(|n| n.starts_with("allocs:"))
                    .cloned(),
            );
            let rate = self
                .procs
                .values()
                .find_map(|p| p.mem_rate)
                .filter(|r| *r > 0)
                .unwrap_or(0);
            let shape = ProfileShape::new(
                &[("alloc_objects", "count"), ("alloc_space", "bytes")],
                ("space", "bytes"),
                rate,
                Some("alloc_space"),
            );
            let p = self.render(symbolizer, raws, &shape, meta, comments);
            out.push(("allocs".to_string(), p, summary));
        }
        // Lines shared by every profile type are reported once.
        for (_, _, lines) in out.iter_mut().skip(1) {
            lines.retain(|l| !common_summary.contains(l));
        }
        out
    }

    /// Goids of goroutines created while attached and still live.
    fn tracked_goids(&self) -> HashSet<(u32, u64)> {
        self.goroutines
            .keys()
            .filter_map(Result::ok)
            .map(|k| (k.tgid, k.goid))
            .collect()
    }

    fn site_names(
        &self,
        symbolizer: &mut Symbolizer,
        keys: Vec<GoStackKey>,
        cache: &mut StackCache,
    ) -> Vec<String> {
        let raws: Vec<RawSample> = keys
            .iter()
            .map(|k| {
                let mut f = self.frames(k, cache);
                if f.len() > 1 {
                    f.remove(0);
                }
                f.truncate(1);
                RawSample {
                    tgid: k.tgid,
                    tid: k.tgid,
                    comm: String::new(),
                    user: f,
                    kernel: vec![],
                    count: 1,
                }
            })
            .collect();
        let (_, resolved) = symbolizer.resolve_samples(&raws);
        resolved
            .iter()
            .map(|r| {
                r.frames
                    .first()
                    .and_then(|f| {
                        f.lines.last().map(|l| {
                            format!(
                                "{} ({}:{})",
                                l.function,
                                l.file.rsplit('/').next().unwrap_or(""),
                                l.line
                            )
                        })
                    })
                    .unwrap_or_else(|| "?".to_string())
            })
            .collect()
    }

    fn render(
        &self,
        symbolizer: &mut Symbolizer,
        raws: Vec<(Vec<u64>, u32, Vec<i64>, Vec<(String, String)>)>,
        shape: &ProfileShape,
        meta: &ProfileMeta,
        comments: Vec<String>,
    ) -> Profile {
        let raw: Vec<RawSample> = raws
            .iter()
            .map(|(frames, tgid, _, _)| RawSample {
                tgid: *tgid,
                tid: *tgid,
                comm: String::new(),
                user: frames.clone(),
                kernel: vec![],
                count: 1,
            })
            .collect();
        let (mappings, resolved) = symbolizer.resolve_samples(&raw);
        let samples: Vec<ProfileSample> = resolved
            .into_iter()
            .zip(raws)
            .map(|(r, (_, pid, values, labels))| ProfileSample {
                frames: r.frames,
                pid,
                values,
                labels,
            })
            .collect();
        let meta = ProfileMeta {
            comments,
            ..meta.clone()
        };
        profiler_symbolize::build_profile(&mappings, &samples, shape, &meta)
    }
}
