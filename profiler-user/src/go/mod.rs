//! Go runtime activity through uprobes: goroutines by creation site (with
//! a leak signal), allocations (unsampled the way Go does it) and exact
//! call counts, each written as a pprof profile.
//!
//! Per process, [`GoSession::add_process`] (module `attach`) analyses the binary
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
//!
//! * `latency`: call durations of `--latency` functions: an entry probe
//!   and a probe on every `RET` (found by decoding the function), paired
//!   per goroutine; a histogram per (stack, function) in log-spaced
//!   buckets, written as samples `calls/count` and `latency/nanoseconds`
//!   labelled `latency_bucket_ns` (the bucket's lower bound), and a
//!   summary line per function (n, p50, p90, p99, max).
//!
//! Modules: `attach` (per-process analysis and probe placement), `memory`
//! (reading and writing the target's memory: `MemProfileRate`,
//! `runtime.allgs`), `session` (the maps, the periodic tick and the shared
//! part of `finish`), one module per profile type (`calls`, `goroutines`,
//! `allocs`, each with its attach, collect and build-profile steps),
//! `shared` (the agent's mode: probes once per binary for every process
//! running it, filtered by `GO_PROCS` in the kernel, and per-window
//! profiles per container), and
//! `knobs` (measurement switches, compiled in only with the `bench-knobs`
//! feature).
#![allow(clippy::type_complexity)]

mod allocs;
mod attach;
pub mod binary;
mod calls;
mod contention;
mod goroutines;
pub mod heap;
mod knobs;
mod latency;
mod memory;
mod profile;
pub mod prologue;
mod session;
mod shared;

use std::{collections::HashMap, path::PathBuf, time::Duration};

pub use knobs::BenchKnobs;
pub(crate) use profile::{symbolize_rows, Row};
pub use session::GoSession;
pub(crate) use session::{counter_sum, take as take_map};
pub use shared::{
    GroupProfiles, SharedStats, MAX_BINARIES, MAX_HEAP_BYTES_PER_WINDOW, MAX_HEAP_READS_PER_WINDOW,
    MAX_PROBES,
};

/// Errors of the Go binary analysis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GoError {
    /// The binary cannot be used for Go probes.
    #[error("{path}: {problem}")]
    Binary {
        /// The binary's path.
        path: String,
        /// What is wrong (with the error that caused it as its source).
        problem: BinaryProblem,
    },
    /// The binary has no `.gopclntab`: it is not a Go program.
    #[error("{path}: no .gopclntab section: not a Go binary")]
    NotGo {
        /// The binary's path.
        path: String,
    },
}
/// Why a Go binary cannot be used for the Go probes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BinaryProblem {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The file is larger than the 2 GiB read whole.
    #[error("{0} bytes: larger than 2 GiB")]
    TooLarge(u64),
    /// The file is not ELF.
    #[error("not ELF: {0}")]
    NotElf(#[source] object::Error),
    /// The ELF file is not for x86-64.
    #[error("not an x86-64 binary")]
    NotX86_64,
    /// The function table (`.gopclntab`) could not be read.
    #[error("{0}")]
    Pclntab(#[source] profiler_symbolize::SymbolizeError),
    /// No DWARF and no Go version: the `runtime.g` offsets are unknown.
    #[error("no DWARF and no Go version in the buildinfo: runtime.g offsets unknown")]
    NoGoVersion,
    /// No DWARF and no built-in `runtime.g` offsets for this Go version.
    #[error("no DWARF (built with -w?) and no built-in runtime.g offsets for {version} (known: go1.19, go1.21, go1.22, go1.23); rebuild without -w")]
    NoOffsets {
        /// The Go version from the buildinfo.
        version: String,
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
    /// Call durations of `--latency` symbols.
    pub latency: bool,
    /// Time goroutines wait on Go's semaphores (lock contention).
    pub contention: bool,
    /// Live (in-use) heap by allocation stack, read from the runtime's
    /// memory-profile buckets (no probes).
    pub heap: bool,
}

impl GoProfiles {
    /// True if any Go profile is requested.
    pub fn any(&self) -> bool {
        self.goroutines || self.allocs || self.calls || self.latency || self.contention || self.heap
    }

    /// The names of the requested types, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.goroutines, "goroutines"),
            (self.allocs, "allocs"),
            (self.calls, "calls"),
            (self.latency, "latency"),
            (self.contention, "contention"),
            (self.heap, "heap"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
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
    /// Measurement knobs of the go-probes benchmark (all off unless set).
    pub knobs: BenchKnobs,
    /// Symbols (globs allowed) whose call durations are measured.
    pub latency: Vec<String>,
    /// A named set of symbols to time ([`latency_preset`]).
    pub latency_preset: Option<String>,
}

/// How the calls profile attributes counted calls to stacks. Counts per
/// counted function and per immediate caller are exact in both modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum CountStacks {
    /// A full user stack on every call (the probe walks the frame pointers).
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

/// Names of the `--latency-preset` sets.
pub const LATENCY_PRESETS: &[&str] = &["go-controller"];

/// The symbol patterns of a `--latency-preset`, or `None` for an unknown
/// name: `go-controller` times `Reconcile` methods and client-go REST calls.
pub fn latency_preset(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "go-controller" => Some(&[
            "*.Reconcile",
            "k8s.io/client-go/rest.(*Request).request",
            "k8s.io/client-go/rest.(*Request).Do",
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

pub(super) struct Proc {
    exe: PathBuf,
    version: String,
    offsets: binary::GOffsets,
    mem_rate_addr: Option<u64>,
    disable_addr: Option<u64>,
    allgs_addr: Option<u64>,
    /// Attached before `exec`: the addresses above are not known yet.
    held: bool,
    /// runtime.MemProfileRate as last read (None: unknown).
    mem_rate: Option<i64>,
    alloc_probe: Option<&'static str>,
    /// We wrote `alloc_set_rate` into the target's MemProfileRate.
    rate_written: bool,
    /// Load bias of the executable in the process (0 unless PIE).
    bias: u64,
    /// Where the heap profile's globals are (load bias applied).
    heap: Option<heap::HeapAddrs>,
}

/// Frames already read, by (stack id, stack hash) of a
/// [`profiler_common::go::GoStackKey`].
type StackCache = HashMap<(i32, u64), Vec<u64>>;
